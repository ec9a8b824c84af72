"""The data set: N synthetic records (oaiserver.synthetic) loaded into a fresh SQLite store, timed."""

from __future__ import annotations

import itertools
import time
from contextlib import suppress
from pathlib import Path
from typing import Any

from harness import log
from procfs import self_cpu

REPO_ID = "synthetic.example.org"


def load(db: Path, n: int, batch: int) -> dict[str, Any]:
    for suffix in ("", "-wal", "-shm"):
        with suppress(FileNotFoundError):
            Path(f"{db}{suffix}").unlink()
    out = load_url(f"sqlite:///{db}", n, batch)
    out["db_mb"] = round(
        sum(Path(f"{db}{s}").stat().st_size for s in ("", "-wal") if Path(f"{db}{s}").exists()) / 2**20
    )
    return out


def load_url(url: str, n: int, batch: int) -> dict[str, Any]:
    """The data set written into the (empty) store at `url`, SQLite or PostgreSQL."""
    from oaiserver.store import Store
    from oaiserver.synthetic import synthetic_records

    store = Store(url)
    records = synthetic_records(n, REPO_ID)
    write_s = gen_s = write_cpu = 0.0
    added = 0
    cpu0 = self_cpu()
    chunk_size = max(batch, 10_000 // batch * batch)
    while True:
        t = time.perf_counter()
        chunk = list(itertools.islice(records, chunk_size))
        gen_s += time.perf_counter() - t
        if not chunk:
            break
        t, c = time.perf_counter(), time.process_time()
        added += store.write(chunk, keep_datestamps=True, batch=batch).added
        write_s += time.perf_counter() - t
        write_cpu += time.process_time() - c
        if (added // chunk_size) % 10 == 0:
            log(f"  loaded {added:,} of {n:,} ({added / write_s:,.0f} records/s in write)")
    counts = store.counts()
    store.close()
    return {
        "records": added,
        "live": counts["live"],
        "deleted": counts["deleted"],
        "batch": batch,
        "write_seconds": round(write_s, 2),
        "records_per_s": round(added / write_s, 1),
        "write_cpu_us_per_record": round(write_cpu * 1e6 / added, 1),
        "generate_seconds": round(gen_s, 2),
        "generate_records_per_s": round(added / gen_s, 1) if gen_s else None,
        "end_to_end_records_per_s": round(added / (write_s + gen_s), 1),
        "process_cpu_s": round(self_cpu() - cpu0, 2),
    }


def identifier(i: int) -> str:
    return f"oai:{REPO_ID}:rec-{i:07d}"
