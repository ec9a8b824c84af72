"""The reference for the bulk load: the same rows, inserted by a plain `executemany` into bare tables.

What a person would write to put the same bytes into SQLite: `sqlite3.connect`, one table per
table our load fills (records, formats, set_members, and the search words as a plain text
column), each with an integer primary key and no other index, SQLite's default settings, one
`executemany` per table and a commit per batch of the load's size. The rows are the ones our load
stored (read back from its store, so the columns and bytes per record are the same); only the
inserts and commits are timed, the reading is not.

`make bench` prints the ratio in its load section. Alone, side by side, medians of a few runs:
    .venv/bin/python bench/load_reference.py --records 100000 --repeat 3
"""

from __future__ import annotations

import argparse
import sqlite3
import sys
import tempfile
import time
from contextlib import suppress
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import log, median
from loading import load

TABLES = {
    "records": "SELECT id, identifier, datestamp, deleted, source, setspecs, content_hash, dc, fulltext, raw_xml,"
    " provenance, about, header_xml FROM records WHERE id BETWEEN ? AND ? ORDER BY id",
    "formats": "SELECT record_id, prefix, record, datestamp FROM formats WHERE record_id BETWEEN ? AND ?",
    "set_members": "SELECT spec, datestamp, identifier, record_id FROM set_members WHERE record_id BETWEEN ? AND ?",
    "search_words": "SELECT rowid, words FROM records_search WHERE rowid BETWEEN ? AND ?",
}
BARE = {
    "records": "id INTEGER PRIMARY KEY, identifier, datestamp, deleted, source, setspecs, content_hash, dc,"
    " fulltext, raw_xml, provenance, about, header_xml",
    "formats": "id INTEGER PRIMARY KEY, record_id, prefix, record, datestamp",
    "set_members": "id INTEGER PRIMARY KEY, spec, datestamp, identifier, record_id",
    "search_words": "id INTEGER PRIMARY KEY, words",
}
INSERTS = {
    "records": "INSERT INTO records VALUES (" + ", ".join(["?"] * 13) + ")",
    "formats": "INSERT INTO formats (record_id, prefix, record, datestamp) VALUES (?, ?, ?, ?)",
    "set_members": "INSERT INTO set_members (spec, datestamp, identifier, record_id) VALUES (?, ?, ?, ?)",
    "search_words": "INSERT INTO search_words VALUES (?, ?)",
}


def executemany_reference(store_db: Path, out: Path, batch: int) -> dict[str, Any]:
    """The rows of the store at `store_db` inserted into a fresh `out` as described above, timed."""
    for suffix in ("", "-journal", "-wal", "-shm"):
        with suppress(FileNotFoundError):
            Path(f"{out}{suffix}").unlink()
    source = sqlite3.connect(f"file:{store_db}?mode=ro", uri=True)
    target = sqlite3.connect(out)
    try:
        for name, columns in BARE.items():
            target.execute(f"CREATE TABLE {name} ({columns})")
        target.commit()
        low, high = source.execute("SELECT min(id), max(id) FROM records").fetchone()
        insert_s = insert_cpu = 0.0
        records = 0
        for first in range(low, high + 1, batch):
            span = (first, first + batch - 1)
            rows = {name: source.execute(sql, span).fetchall() for name, sql in TABLES.items()}
            t, c = time.perf_counter(), time.process_time()
            for name, sql in INSERTS.items():
                target.executemany(sql, rows[name])
            target.commit()
            insert_s += time.perf_counter() - t
            insert_cpu += time.process_time() - c
            records += len(rows["records"])
    finally:
        source.close()
        target.close()
    return {
        "records": records,
        "batch": batch,
        "insert_seconds": round(insert_s, 2),
        "records_per_s": round(records / insert_s, 1),
        "cpu_us_per_record": round(insert_cpu * 1e6 / records, 1),
        "db_mb": round(out.stat().st_size / 2**20),
    }


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description="The bulk load against a plain executemany of the same rows.")
    p.add_argument("--records", "-n", type=int, default=100_000)
    p.add_argument("--batch", type=int, default=1000, help="Store.write batch size, and rows per commit")
    p.add_argument("--repeat", type=int, default=3)
    a = p.parse_args(argv)
    ours, plain, ours_cpu, plain_cpu = [], [], [], []
    with tempfile.TemporaryDirectory(prefix="load-reference-") as tmp:
        for run in range(1, a.repeat + 1):
            db = Path(tmp) / "store.sqlite3"
            mine = load(db, a.records, a.batch)
            ref = executemany_reference(db, Path(tmp) / "executemany.sqlite3", a.batch)
            ours.append(mine["records_per_s"])
            plain.append(ref["records_per_s"])
            ours_cpu.append(mine["write_cpu_us_per_record"])
            plain_cpu.append(ref["cpu_us_per_record"])
            log(f"run {run}: bulk load {ours[-1]:,.0f}, executemany {plain[-1]:,.0f} records/s")
    o, r = median(ours), median(plain)
    oc, rc = median(ours_cpu), median(plain_cpu)
    print(f"{a.records:,} records, batch {a.batch}, medians of {a.repeat}:")
    print(f"  bulk load (Store.write)        {o:>10,.0f} records/s  {oc:>6.1f} us CPU a record")
    print(f"  plain executemany, bare tables {r:>10,.0f} records/s  {rc:>6.1f} us CPU a record")
    print(f"  ratio                          {o / r:>10.2f}x (target >= 2x)")


if __name__ == "__main__":
    main()
