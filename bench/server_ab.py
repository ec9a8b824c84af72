#!/usr/bin/env python3
"""The server's CPU over a full ListRecords harvest, two versions of its code side by side.

    .venv/bin/python bench/server_ab.py --records 100000 --repeat 7 \\
        --code before=/tmp/old-checkout --code after=.

One synthetic data set is loaded (or `--db`, an SQLite store made by an earlier run, is reused) and
each `--code` directory (a checkout holding `oaiserver/`) serves it with `oaiserver serve`
(gunicorn, 2 workers, 500 records a page), all at once on ports of their own. Each round walks the
whole list once on every server, the versions taking turns in alternating order, and then takes
the floor (bench/floor.py: the same rows read and gzipped, no HTTP) with each version's store
code, in a process of its own. Prints one line per round and the medians: the server's CPU per
1,000 records (its gunicorn master and workers, from /proc), the floor's, their ratio, and the
median of the differences round by round to the first version (the steadier figure on a machine
others use too). Only figures measured side by side in one run compare.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from harness import log
from loading import load
from oai_client import full_harvest, warm_up
from servers import Server, start_ours

BENCH = Path(__file__).resolve().parent

# Runs in a child process whose sys.path starts with bench/ and the code under test.
FLOOR = """
import sys
sys.path[:0] = [sys.argv[1], sys.argv[2]]
from pathlib import Path
from floor import floor_walk
print(floor_walk(Path(sys.argv[3]), int(sys.argv[4])).ms_per_1k)
"""


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--records", "-n", type=int, default=100_000)
    p.add_argument("--db", type=Path, help="an SQLite store to serve, instead of loading --records afresh")
    p.add_argument("--repeat", type=int, default=7, help="rounds: a walk on each server, then the floors")
    p.add_argument("--page-size", type=int, default=500)
    p.add_argument("--code", action="append", required=True, help="NAME=DIR: a checkout to measure")
    args = p.parse_args()
    codes = [(name, Path(code).resolve()) for name, code in (c.split("=", 1) for c in args.code)]
    with tempfile.TemporaryDirectory(prefix="server-ab-") as tmp:
        work = Path(tmp)
        db = args.db
        if db is None:
            db = work / "source.sqlite3"
            log(f"loading {args.records:,} records")
            load(db, args.records, 1000)
        servers: dict[str, Server] = {}
        server_ms: dict[str, list[float]] = {name: [] for name, _ in codes}
        floor_ms: dict[str, list[float]] = {name: [] for name, _ in codes}
        try:
            for name, code in codes:
                (work / name).mkdir()
                servers[name] = start_ours(work / name, db, 2, args.page_size, code=code)
                warm_up(servers[name])
                full_harvest(servers[name])  # the store's pages read once: every version then finds them cached
            for rnd in range(args.repeat):
                for name, _ in codes if rnd % 2 == 0 else codes[::-1]:
                    walk = full_harvest(servers[name])
                    server_ms[name].append(walk.server_cpu * 1e6 / walk.records)
                for name, code in codes:
                    floor_ms[name].append(_floor(code, db, args.page_size))
                shown = "; ".join(f"{n} {server_ms[n][-1]:.2f} (floor {floor_ms[n][-1]:.2f})" for n, _ in codes)
                print(f"round {rnd + 1}: ms CPU per 1,000 records: {shown}", flush=True)
        finally:
            for server in servers.values():
                server.stop()
    first = codes[0][0]
    for name, _ in codes:
        served, floor = statistics.median(server_ms[name]), statistics.median(floor_ms[name])
        line = f"{name}: server {served:.2f} ms per 1,000 records, floor {floor:.2f}, ratio {served / floor:.2f}"
        if name != first:
            change = statistics.median(b - a for a, b in zip(server_ms[first], server_ms[name], strict=True))
            line += f"; {change:+.2f} ms per 1,000 against {first} (median of the rounds' differences)"
        print(line)


def _floor(code: Path, db: Path, page_size: int) -> float:
    """The floor's CPU per 1,000 records with the store code of `code`, in a process of its own."""
    out = subprocess.run(
        [sys.executable, "-c", FLOOR, str(BENCH), str(code), str(db), str(page_size)],
        capture_output=True,
        text=True,
        check=True,
    )
    return float(out.stdout)


if __name__ == "__main__":
    main()
