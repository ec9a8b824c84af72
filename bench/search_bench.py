"""Search at scale: N synthetic records (oaiserver.synthetic) loaded into a fresh SQLite store,
then the first result page (50 hits) and the bounded count of common, rare and prefix queries,
each timed `--repeat` times (p50, p95), and the index's size on disk.

    .venv/bin/python bench/search_bench.py --records 1000000 --db /tmp/search.sqlite3
    .venv/bin/python bench/search_bench.py --records 100000 --url postgresql://postgres@127.0.0.1:5432/test

Prints one JSON object; progress goes to stderr. `--keep` reuses a store loaded before. With
`--url` (PostgreSQL) the records are loaded into that database, which must have no store yet.
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from harness import log, percentile

# (what it shows, the query): words of synthetic records' titles, creators and identifiers
QUERIES = (
    ("common word (a title word, ~20 % of records)", "treaty"),
    ("every record (a creator word)", "author"),
    ("two common words", "treaty cable"),
    ("two words (~0.2 % of records: Author 517 or Writer 517)", "Writer 517"),
    ("one identifier (one record)", "oai:synthetic.example.org:rec-0123456"),
    ("prefix as typed", "telegr"),
    ("no match", "zzzzqx"),
)
# What `make bench` measures at its N (bench/server_sections.py): a rare word, a common one, a prefix.
RUN_QUERIES = (
    ("rare word (~0.2 % of records: Author 517 or Writer 517)", "517"),
    ("common word (a title word, ~20 % of records)", "treaty"),
    ("prefix as typed", "telegr"),
)


def timed(fn: Any, repeat: int) -> tuple[dict[str, float], Any]:
    seconds = []
    result = None
    for _ in range(repeat):
        t = time.perf_counter()
        result = fn()
        seconds.append(time.perf_counter() - t)
    ms = {"p50_ms": round(percentile(seconds, 50) * 1000, 2), "p95_ms": round(percentile(seconds, 95) * 1000, 2)}
    return ms, result


def load_into(url: str, n: int) -> dict[str, Any]:
    """N synthetic records written as bench/loading.py writes them (batches of 500)."""
    from loading import REPO_ID
    from procfs import self_cpu

    from oaiserver.store import Store
    from oaiserver.synthetic import synthetic_records

    store = Store(url)
    cpu, t = self_cpu(), time.perf_counter()
    records = synthetic_records(n, REPO_ID)
    added = 0
    while chunk := list(itertools.islice(records, 10_000)):
        added += store.write(chunk, keep_datestamps=True, batch=500).added
        if added % 100_000 == 0:
            log(f"  loaded {added:,} of {n:,}")
    if not store.is_sqlite:  # as autovacuum would soon: the planner needs the index's statistics
        with store.engine.begin() as conn:
            conn.exec_driver_sql("ANALYZE")
    store.close()
    return {"records": added, "seconds": round(time.perf_counter() - t, 1), "process_cpu_s": round(self_cpu() - cpu, 1)}


def pg_index_bytes(url: str) -> dict[str, int]:
    import sqlalchemy as sa

    engine = sa.create_engine(url.replace("postgresql://", "postgresql+psycopg://", 1))
    try:
        with engine.connect() as conn:
            index = conn.exec_driver_sql("SELECT pg_total_relation_size('records_search')").scalar_one()
            total = conn.exec_driver_sql("SELECT pg_database_size(current_database())").scalar_one()
    finally:
        engine.dispose()
    return {"index_bytes": int(index), "database_bytes": int(total)}


def index_bytes(db: Path) -> dict[str, int]:
    """Bytes on disk of the search index's tables, and of the whole database (dbstat)."""
    import sqlite3

    conn = sqlite3.connect(db)
    try:
        rows = conn.execute("SELECT name, sum(pgsize) FROM dbstat GROUP BY name").fetchall()
    finally:
        conn.close()
    search = sum(size for name, size in rows if name.startswith("records_search"))
    return {"index_bytes": int(search), "database_bytes": int(sum(size for _, size in rows))}


def measure(store: Any, queries: Sequence[tuple[str, str]], repeat: int) -> list[dict[str, Any]]:
    """Per query: the first result page (50 hits), the bounded count (what the /search view asks
    of the store for its first page) and, with 50 hits, the second page; each `repeat` times."""
    store.search("warm up")
    results = []
    for what, text in queries:
        page, hits = timed(lambda text=text: store.search(text), repeat)
        count, n = timed(lambda text=text: store.search_count(text), repeat)
        row: dict[str, Any] = {"query": text, "what": what, "hits_counted": n, "first_page": page, "count": count}
        if len(hits) == 50:
            later, _ = timed(lambda text=text, key=hits[-1].row_id: store.search(text, before=key), repeat)
            row["second_page"] = later
        log(f"{text!r}: {row}")
        results.append(row)
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--records", type=int, default=100_000)
    parser.add_argument("--db", type=Path, default=Path("/tmp/oai-search-bench.sqlite3"))
    parser.add_argument("--repeat", type=int, default=40)
    parser.add_argument("--url", help="a PostgreSQL store's URL instead of the SQLite file --db")
    parser.add_argument("--keep", action="store_true", help="search the store already loaded")
    args = parser.parse_args(argv)
    url = args.url or f"sqlite:///{args.db}"
    out: dict[str, Any] = {"records": args.records, "backend": url.split(":", 1)[0]}
    if not args.keep:
        if not args.url:
            for suffix in ("", "-wal", "-shm"):
                Path(f"{args.db}{suffix}").unlink(missing_ok=True)
        out["load"] = load_into(url, args.records)
    out.update(pg_index_bytes(url) if args.url else index_bytes(args.db))
    from oaiserver.store import Store

    store = Store(url)
    try:
        out["queries"] = measure(store, QUERIES, args.repeat)
    finally:
        store.close()
    json.dump(out, sys.stdout, indent=1)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
