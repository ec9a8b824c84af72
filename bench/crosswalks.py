#!/usr/bin/env python3
"""How long a crosswalk takes per record, for each format: the sample records of
tests/data/crosswalks and the 100 real Alma MARC records, parsed once, crosswalked many times.

    .venv/bin/python bench/crosswalks.py [--number 2000]

Parsing is left out (the harvester has the page's tree already); the figure is the best of five
runs of `--number` calls, in microseconds of this process's CPU time per record (CPU time, not
wall-clock time, so that other processes on a busy machine do not inflate it).
"""

from __future__ import annotations

import argparse
import time
import timeit
from pathlib import Path

from lxml import etree

from oaiserver.crosswalks import crosswalk

TESTS = Path(__file__).resolve().parent.parent / "tests" / "data"
OAI_METADATA = "{http://www.openarchives.org/OAI/2.0/}metadata"
SAMPLES = {
    "MARC 21 (LoC example)": ("marc21", "crosswalks/marc-arithmetic.xml"),
    "MARC 21 (e-thesis, collection)": ("marc21", "crosswalks/marc-thesis.xml"),
    "MODS 3.7": ("mods", "crosswalks/mods-sound-and-fury.xml"),
    "DataCite kernel-4": ("datacite", "crosswalks/datacite-example-GeoLocation-v4.xml"),
    "DataCite kernel-3": ("datacite", "crosswalks/datacite-example-HasMetadata-v3.0.xml"),
}


def per_record(hint: str, records: list[etree._Element], number: int) -> float:
    """Microseconds per record: the best of five runs over all `records`, `number` records each."""
    rounds = max(1, number // len(records))
    best = min(
        timeit.repeat(lambda: [crosswalk(hint, r) for r in records], number=rounds, repeat=5, timer=time.process_time)
    )
    return best / (rounds * len(records)) * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--number", type=int, default=2000, help="records crosswalked per run")
    args = parser.parse_args()
    rows = []
    for label, (hint, name) in SAMPLES.items():
        root = etree.parse(str(TESTS / name)).getroot()
        rows.append((label, len(crosswalk(hint, root) or []), per_record(hint, [root], args.number)))
    alma = etree.parse(str(TESTS / "realworld" / "vufindharvest" / "marc.xml")).iter(OAI_METADATA)
    records = list(alma)
    values = sum(len(crosswalk("marc21", r) or []) for r in records) / len(records)
    rows.append(
        (f"MARC 21 (Alma, {len(records)} real records)", round(values), per_record("marc21", records, args.number))
    )
    print(f"{'format':<36} {'DC values':>9} {'µs/record':>10}")
    for label, count, micros in rows:
        print(f"{label:<36} {count:>9} {micros:>10.1f}")


if __name__ == "__main__":
    main()
