#!/usr/bin/env python3
"""Export and import rates: `oaiserver export` / `import` of N synthetic records.

    .venv/bin/python bench/dump_bench.py --records 100000
    .venv/bin/python bench/dump_bench.py --records 100000 --pg-url postgresql://postgres@127.0.0.1:5432/test

Loads N records of `oaiserver.synthetic` into a fresh SQLite store, exports them (plain and
gzip), then imports the export into a fresh SQLite store and, with --pg-url, into a fresh
PostgreSQL schema (created and dropped here). Each import runs in a child process, so its
peak RSS and CPU time are its own. Prints records/s of each step, the importer's CPU time
a record (the figure to compare on a busy machine) and its peak RSS as JSON; writes nothing
outside a temporary folder (--keep leaves it).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import resource
import shutil
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from oaiserver.dump import export, load
from oaiserver.store import Store
from oaiserver.synthetic import synthetic_records


def _import_child(url: str, path: str, queue: Any) -> None:
    store = Store(url)
    started, cpu = time.perf_counter(), time.process_time()
    report = load(store, Path(path))
    elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu
    store.close()
    queue.put((report.records, elapsed, cpu, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss))


def timed_import(url: str, path: Path) -> dict[str, Any]:
    ctx = multiprocessing.get_context("spawn")  # a fresh interpreter: its peak RSS is the import's
    queue = ctx.Queue()
    child = ctx.Process(target=_import_child, args=(url, str(path), queue))
    child.start()
    records, elapsed, cpu, rss_kb = queue.get(timeout=3600)
    child.join(60)
    # CPU time of the importing process (the database server's excluded): comparable on a busy machine.
    return {"records": records, "seconds": round(elapsed, 2), "records_per_s": round(records / elapsed),
            "cpu_us_per_record": round(cpu / records * 1e6, 1), "peak_rss_mb": round(rss_kb / 1024)}  # fmt: skip


def pg_schema(pg_url: str) -> tuple[str, Any, str]:
    import sqlalchemy as sa

    schema = f"bench_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(pg_url)
    with admin.begin() as conn:
        conn.exec_driver_sql(f"CREATE SCHEMA {schema}")
    sep = "&" if "?" in pg_url else "?"
    return f"{pg_url}{sep}options=-csearch_path%3D{schema}", admin, schema


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--records", type=int, default=100_000)
    parser.add_argument("--pg-url", help="also import into a fresh schema of this PostgreSQL")
    parser.add_argument("--no-gzip", action="store_true", help="plain files only")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="dump-bench-"))
    results: dict[str, Any] = {"records": args.records}
    try:
        source = Store(f"sqlite:///{work / 'source.sqlite3'}")
        source.write(synthetic_records(args.records, "synthetic.example.org"), keep_datestamps=True, batch=1000)
        suffixes = (".jsonl",) if args.no_gzip else (".jsonl", ".jsonl.gz")
        for suffix in suffixes:
            path = work / f"all{suffix}"
            started = time.perf_counter()
            export(source, path)
            elapsed = time.perf_counter() - started
            results[f"export{suffix}"] = {"seconds": round(elapsed, 2), "records_per_s": round(args.records / elapsed),
                                          "bytes": path.stat().st_size}  # fmt: skip
        source.close()
        for suffix in suffixes:
            results[f"import{suffix} sqlite"] = timed_import(f"sqlite:///{work / f'copy{suffix}.sqlite3'}",
                                                             work / f"all{suffix}")  # fmt: skip
        if args.pg_url:
            url, admin, schema = pg_schema(args.pg_url)
            try:
                results[f"import{suffixes[-1]} postgresql"] = timed_import(url, work / f"all{suffixes[-1]}")
            finally:
                with admin.begin() as conn:
                    conn.exec_driver_sql(f"DROP SCHEMA {schema} CASCADE")
                admin.dispose()
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
