"""The project's harvester (`harvester.harvest.run`) against a plain Sickle loop, harvesting our server
into SQLite or a fresh PostgreSQL schema."""

from __future__ import annotations

import sqlite3
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from harness import log
from procfs import machine_busy, others_pct, self_cpu
from servers import Server


@contextmanager
def pg_target(pg_url: str) -> Iterator[str]:
    """A fresh schema on `pg_url`, dropped afterwards; yields the URL that selects it."""
    import sqlalchemy as sa

    schema = f"bench_{uuid.uuid4().hex[:10]}"
    admin = sa.create_engine(pg_url, connect_args={"connect_timeout": 5}, pool_pre_ping=True)
    with admin.begin() as conn:
        conn.exec_driver_sql(f"CREATE SCHEMA {schema}")
    sep = "&" if "?" in pg_url else "?"
    try:
        yield f"{pg_url}{sep}options=-csearch_path%3D{schema}"
    finally:
        for attempt in range(5):  # the server may be restarting (other people's tests share it)
            try:
                with admin.begin() as conn:
                    conn.exec_driver_sql(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
                break
            except sa.exc.DBAPIError as exc:
                log(f"could not drop schema {schema} yet ({type(exc.orig).__name__}); retrying")
                admin.dispose()
                time.sleep(2 * (attempt + 1))
        else:
            log(f"schema {schema} was NOT dropped: drop it by hand")
        admin.dispose()


def wait_for_pg(pg_url: str, seconds: float) -> bool:
    """Whether PostgreSQL answers again within `seconds`."""
    import sqlalchemy as sa

    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        engine = sa.create_engine(pg_url, connect_args={"connect_timeout": 5})
        try:
            with engine.connect() as conn:
                conn.exec_driver_sql("SELECT 1")
            return True
        except sa.exc.DBAPIError:
            time.sleep(3)
        finally:
            engine.dispose()
    return False


def harvester_api() -> Callable[..., Any] | str:
    """`harvester.harvest.run`, or why it cannot be used."""
    try:
        from harvester import harvest
    except Exception as exc:  # the package is being written: say so, do not crash
        return f"harvester.harvest cannot be imported ({type(exc).__name__}: {exc})"
    run = getattr(harvest, "run", None)
    if not callable(run):
        return "harvester.harvest has no run(store, partner, ...) yet"
    return run


def run_harvester(run: Callable[..., Any], server: Server, target_url: str, **kwargs: Any) -> dict[str, Any]:
    from oaiserver.config import Partner
    from oaiserver.store import Store

    store = Store(target_url)
    try:
        cpu0, me0, busy0, t0 = server.cpu(), self_cpu(), machine_busy(), time.perf_counter()
        report = run(store, Partner("bench", server.url), **kwargs)
        seconds = time.perf_counter() - t0
        server_cpu, client_cpu = server.cpu() - cpu0, self_cpu() - me0
        busy = machine_busy() - busy0
        stored = store.counts()
    finally:
        store.close()
    received = report.counts.received
    return {
        "outcome": report.outcome,
        "reason": report.reason,
        "records": received,
        "added": report.counts.added,
        "pages": report.counts.pages,
        "stored": stored,
        **rates(received, seconds, client_cpu, server_cpu, busy, client="harvester"),
    }


def rates(
    records: int, seconds: float, client_cpu: float, server_cpu: float, busy: float, *, client: str = "client"
) -> dict[str, Any]:
    """The figures every harvest run reports: wall rate, CPU per 1,000 records, others' share."""
    return {
        "seconds": round(seconds, 2),
        "records_per_s": round(records / seconds, 1),
        f"{client}_cpu_ms_per_1k": round(client_cpu * 1e6 / records, 2) if records else None,
        "server_cpu_ms_per_1k": round(server_cpu * 1e6 / records, 2) if records else None,
        "others_cpu_pct": others_pct(busy, server_cpu + client_cpu, seconds),
    }


def sickle_loop(server: Server, db: Path, batch: int = 500) -> dict[str, Any]:
    """The baseline: Sickle's ListRecords iterator, each record's raw XML into SQLite."""
    from sickle import Sickle

    conn = sqlite3.connect(db)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute("CREATE TABLE IF NOT EXISTS raw (identifier TEXT PRIMARY KEY, datestamp TEXT, xml TEXT NOT NULL)")
    insert = "INSERT OR REPLACE INTO raw (identifier, datestamp, xml) VALUES (?, ?, ?)"
    cpu0, me0, busy0, t0 = server.cpu(), self_cpu(), machine_busy(), time.perf_counter()
    rows: list[tuple[str, str, str]] = []
    count = 0
    for record in Sickle(server.url, timeout=300).ListRecords(metadataPrefix="oai_dc", ignore_deleted=False):
        rows.append((record.header.identifier, record.header.datestamp, record.raw))
        if len(rows) >= batch:
            with conn:
                conn.executemany(insert, rows)
            count += len(rows)
            rows = []
    if rows:
        with conn:
            conn.executemany(insert, rows)
        count += len(rows)
    seconds = time.perf_counter() - t0
    server_cpu, client_cpu = server.cpu() - cpu0, self_cpu() - me0
    busy = machine_busy() - busy0
    stored = conn.execute("SELECT count(*) FROM raw").fetchone()[0]
    conn.close()
    return {
        "records": count,
        "stored": stored,
        **rates(count, seconds, client_cpu, server_cpu, busy),
    }
