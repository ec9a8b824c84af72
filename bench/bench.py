#!/usr/bin/env python3
"""Benchmarks for oaiserver and the harvester: one table on stdout, JSON on disk.

    .venv/bin/python bench/bench.py --records 100000        # what `make bench` runs
    .venv/bin/python bench/bench.py --quick                 # a smoke run (5,000 records)
    make bench N=1000000                                    # the 1M figures (disk: ~3 GB, ~1 h)

What it does, in one run, so that every comparison is made side by side on the same noisy
machine (medians over --repeat repetitions, the servers measured alternately):

1. load N synthetic records (oaiserver.synthetic) into a fresh SQLite store through
   `Store.write(..., keep_datestamps=True, batch=...)`; only the time spent in `write` counts;
2. serve that file with oaiserver as in production (`oaiserver serve`: gunicorn, its request-buffering workers)
   and with a reference peer, pyoai (`oaipmh` from PyPI, bench/peer_app.py) behind the same
   gunicorn, from its own venv (bench/.peer-venv, made here);
3. full ListRecords harvests with a plain `requests` loop (token found by a regex), server CPU
   from /proc/<pid>/stat of the gunicorn master and its workers; page latency at 0/10/50/90 %
   of the list; GetRecord p50/p95; 8 and 32 concurrent harvesters; peak RSS per worker;
4. the project's harvester (`harvester.harvest.run`) harvesting our server into a second store
   (SQLite, and PostgreSQL unless --skip-pg or unreachable) against a plain Sickle loop.

See bench/README.md for the figures' definitions and the targets.
"""

from __future__ import annotations

import argparse
import datetime as dt
import html
import importlib.metadata
import inspect
import itertools
import json
import logging
import os
import platform
import random
import re
import shutil
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests
import yaml

from oaiserver.config import Config

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
sys.path.insert(0, str(BENCH))  # bench/profiling.py
VENV_BIN = Path(sys.executable).parent
PEER_VENV = BENCH / ".peer-venv"
PEER_PACKAGE = "oaipmh==4.0.0"
REPO_ID = "synthetic.example.org"
DEFAULT_PG = "postgresql+psycopg://postgres@127.0.0.1:5432/test"

TOKEN_RE = re.compile(rb"<resumptionToken[^>]*>([^<]*)</resumptionToken>")
ERROR_RE = re.compile(rb'<error code="([^"]+)"')
# An OAI-PMH <error> stands in for the verb's element, right after <request>: it is within the
# first few KB. The client reads only there (and the token from the end), so that the harness
# spends its CPU, which it shares with the server under test, on HTTP rather than on scans.
ERROR_WINDOW = 16_384
RECORD = b"<record>"
CLK_TCK = os.sysconf("SC_CLK_TCK")

# Targets, for a 2-core machine.
T_LOAD = 20_000  # records/s into SQLite
T_CPU = 15.0  # server CPU ms per 1,000 records, full ListRecords harvest
T_LATE_PAGE = 1.2  # the page at 90 % of the list within this factor of the first page
T_RSS_MB = 150.0  # peak RSS per worker at N = 1,000,000
T_HARVESTER = 10_000  # records/s, harvester into SQLite
T_HARVESTER_VS_SICKLE = 3.0
T_VS_PEER_32 = 3.0  # our 32-harvester aggregate over the peer's


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def median(values: list[float]) -> float:
    return float(statistics.median(values)) if values else float("nan")


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100)."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(1, min(len(ordered), int(-(-q * len(ordered) // 100))))
    return ordered[rank - 1]


# ---- processes: CPU and memory from /proc ------------------------------------------------------


def _stat(pid: int) -> tuple[int, int] | None:
    """(ppid, utime + stime in ticks) of a live process, None if it has gone."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    rest = raw.rsplit(")", 1)[1].split()
    return int(rest[1]), int(rest[11]) + int(rest[12])


def children(pid: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            st = _stat(int(entry))
            if st is not None and st[0] == pid:
                found.append(int(entry))
    return sorted(found)


def status_kb(pid: int, key: str) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except FileNotFoundError:
        return None
    return None


def machine_busy() -> float:
    """Busy CPU seconds of the whole machine (all cores) since boot, from /proc/stat."""
    v = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    return (sum(v) - v[3] - v[4]) / CLK_TCK


def others_pct(busy: float, ours: float, seconds: float) -> float:
    """Share of the machine's CPUs (in %) used by processes other than the ones measured."""
    return round(max(0.0, busy - ours) * 100 / (seconds * (os.cpu_count() or 1)), 1) if seconds else 0.0


def self_cpu() -> float:
    """CPU seconds of this process and of its harvest worker process (harvester.worker), which
    converts a harvest's pages: a harvester's CPU is both. The worker lives as long as this
    process once started, so the difference of two readings holds all of its work between them."""
    t = os.times()
    return t.user + t.system + sum(ticks for _, ticks in _workers()) / CLK_TCK


def _workers() -> list[tuple[int, int]]:
    """(pid, CPU ticks) of this process's live harvest worker children (harvester.worker)."""
    found = []
    for pid in children(os.getpid()):
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except (FileNotFoundError, ProcessLookupError):
            continue
        st = _stat(pid)
        if any(b"harvester.worker" in part for part in cmdline) and st is not None:
            found.append((pid, st[1]))
    return found


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Server:
    """A gunicorn master we started, its workers, and their CPU time."""

    def __init__(self, name: str, cmd: list[str], env: dict[str, str], port: int, logdir: Path) -> None:
        self.name, self.port = name, port
        self.url = f"http://127.0.0.1:{port}/oai"
        self.out = open(logdir / f"{name}.out.log", "wb")  # noqa: SIM115 - closed in stop()
        self.err = open(logdir / f"{name}.err.log", "wb")  # noqa: SIM115
        self.proc = subprocess.Popen(cmd, env=env, stdout=self.out, stderr=self.err, start_new_session=True)
        self.seen_workers: set[int] = set()

    def wait_ready(self, timeout: float = 90) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.proc.returncode}; see {self.err.name}")
            with suppress(requests.RequestException):
                if requests.get(self.url, params={"verb": "Identify"}, timeout=5).status_code == 200:
                    workers = self.workers()
                    if len(workers) >= 1:
                        return
            time.sleep(0.2)
        raise RuntimeError(f"{self.name} did not answer within {timeout} s; see {self.err.name}")

    def workers(self) -> list[int]:
        found = children(self.proc.pid)
        self.seen_workers.update(found)
        return found

    def cpu(self) -> float:
        """CPU seconds (user + system) of the master and its live workers."""
        ticks = 0
        for pid in [self.proc.pid, *self.workers()]:
            st = _stat(pid)
            if st is not None:
                ticks += st[1]
        return ticks / CLK_TCK

    def memory(self) -> dict[str, Any]:
        workers = self.workers()
        return {
            "master_hwm_mb": (status_kb(self.proc.pid, "VmHWM") or 0) / 1024,
            "worker_hwm_mb": [(status_kb(p, "VmHWM") or 0) / 1024 for p in workers],
            "worker_rss_mb": [(status_kb(p, "VmRSS") or 0) / 1024 for p in workers],
            "workers_ever": len(self.seen_workers),
        }

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)  # gunicorn: graceful shutdown of the workers
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                with suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)
        self.out.close()
        self.err.close()


# ---- the client: a plain requests loop --------------------------------------------------------


class ProtocolFailure(Exception):
    pass


def fetch(session: requests.Session, url: str, params: dict[str, str], *, gzip: bool = True) -> tuple[bytes, float]:
    headers = None if gzip else {"Accept-Encoding": "identity"}
    started = time.perf_counter()
    response = session.get(url, params=params, headers=headers, timeout=300)
    body = response.content
    elapsed = time.perf_counter() - started
    if response.status_code != 200:
        raise ProtocolFailure(f"HTTP {response.status_code}")
    error = ERROR_RE.search(body, 0, ERROR_WINDOW)
    if error:
        raise ProtocolFailure(f"OAI error {error.group(1).decode()}")
    return body, elapsed


def next_token(body: bytes) -> str | None:
    """The resumption token: the list's last element, so looked for from the end."""
    at = body.rfind(b"<resumptionToken")
    m = TOKEN_RE.match(body, at) if at >= 0 else None
    token = html.unescape(m.group(1).decode()).strip() if m else ""
    return token or None


def first_page(extra: dict[str, str] | None = None) -> dict[str, str]:
    return {"verb": "ListRecords", "metadataPrefix": "oai_dc", **(extra or {})}


@dataclass
class Walk:
    records: int = 0
    pages: int = 0
    seconds: float = 0.0
    server_cpu: float = 0.0
    client_cpu: float = 0.0
    busy: float = 0.0  # the machine's busy CPU seconds meanwhile (everyone's)
    tokens: list[str] = field(default_factory=list)  # tokens[i] asks for page i + 1
    latencies: list[float] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        per_k = 1000 / self.records if self.records else float("nan")
        return {
            "records": self.records,
            "pages": self.pages,
            "seconds": round(self.seconds, 3),
            "records_per_s": round(self.records / self.seconds, 1) if self.seconds else None,
            "server_cpu_ms_per_1k": round(self.server_cpu * 1000 * per_k, 2),
            "client_cpu_ms_per_1k": round(self.client_cpu * 1000 * per_k, 2),
            "page_ms_p50": round(median(self.latencies) * 1000, 2),
            "others_cpu_pct": others_pct(self.busy, self.server_cpu + self.client_cpu, self.seconds),
        }


def full_harvest(server: Server, *, gzip: bool = True, max_pages: int | None = None) -> Walk:
    """Every page of ListRecords, one after the other; tokens kept for the latency probes."""
    walk = Walk()
    session = requests.Session()
    params = first_page()
    cpu0, me0, busy0, t0 = server.cpu(), self_cpu(), machine_busy(), time.perf_counter()
    while max_pages is None or walk.pages < max_pages:
        body, elapsed = fetch(session, server.url, params, gzip=gzip)
        walk.latencies.append(elapsed)
        walk.pages += 1
        walk.records += body.count(RECORD)
        token = next_token(body)
        if token is None:
            break
        walk.tokens.append(token)
        params = {"verb": "ListRecords", "resumptionToken": token}
    walk.seconds = time.perf_counter() - t0
    walk.server_cpu, walk.client_cpu = server.cpu() - cpu0, self_cpu() - me0
    walk.busy = machine_busy() - busy0
    session.close()
    return walk


# ---- concurrent harvesters -------------------------------------------------------------------


@dataclass
class Crowd:
    harvesters: int
    seconds: float = 0.0
    records: int = 0
    requests: int = 0
    errors: int = 0
    error_kinds: dict[str, int] = field(default_factory=dict)
    latencies: list[float] = field(default_factory=list)
    server_cpu: float = 0.0
    client_cpu: float = 0.0
    busy: float = 0.0

    def summary(self) -> dict[str, Any]:
        return {
            "harvesters": self.harvesters,
            "seconds": round(self.seconds, 2),
            "records": self.records,
            "requests": self.requests,
            "records_per_s": round(self.records / self.seconds, 1) if self.seconds else None,
            "p50_ms": round(median(self.latencies) * 1000, 1),
            "p95_ms": round(percentile(self.latencies, 95) * 1000, 1),
            "errors": self.errors,
            "error_kinds": self.error_kinds,
            "server_cpu_ms_per_1k": round(self.server_cpu * 1e6 / self.records, 2) if self.records else None,
            "client_cpu_ms_per_1k": round(self.client_cpu * 1e6 / self.records, 2) if self.records else None,
            "others_cpu_pct": others_pct(self.busy, self.server_cpu + self.client_cpu, self.seconds),
        }


def crowd(server: Server, harvesters: int, seconds: float, max_pages: int) -> Crowd:
    """`harvesters` threads, each paging ListRecords from its own list start (a `from` spread
    over the 20 years of datestamps) for `seconds` or `max_pages` pages, restarting its list
    when it ends. Every non-200 answer, OAI error or exception is an error."""
    result = Crowd(harvesters)
    lock = threading.Lock()
    barrier = threading.Barrier(harvesters + 1)
    deadline = [0.0]

    def one(k: int) -> None:
        start = first_page({"from": f"{2000 + (20 * k) // harvesters:04d}-01-01"})
        session = requests.Session()
        params, records, errors, count = start, 0, 0, 0
        latencies: list[float] = []
        kinds: dict[str, int] = {}  # error kind -> how many times
        barrier.wait()
        while time.perf_counter() < deadline[0] and count < max_pages:
            count += 1
            try:
                body, elapsed = fetch(session, server.url, params)
            except (ProtocolFailure, requests.RequestException) as exc:
                errors += 1
                kind = str(exc) if isinstance(exc, ProtocolFailure) else type(exc).__name__
                kinds[kind] = kinds.get(kind, 0) + 1
                params = start
                continue
            latencies.append(elapsed)
            records += body.count(RECORD)
            token = next_token(body)
            params = start if token is None else {"verb": "ListRecords", "resumptionToken": token}
        session.close()
        with lock:
            result.records += records
            result.requests += count
            result.errors += errors
            result.latencies += latencies
            for kind, n in kinds.items():
                result.error_kinds[kind] = result.error_kinds.get(kind, 0) + n

    threads = [threading.Thread(target=one, args=(k,), daemon=True) for k in range(harvesters)]
    for t in threads:
        t.start()
    cpu0, me0, busy0 = server.cpu(), self_cpu(), machine_busy()
    t0 = time.perf_counter()
    deadline[0] = t0 + seconds
    barrier.wait()
    for t in threads:
        t.join()
    result.seconds = time.perf_counter() - t0
    result.server_cpu, result.client_cpu = server.cpu() - cpu0, self_cpu() - me0
    result.busy = machine_busy() - busy0
    return result


# ---- data set --------------------------------------------------------------------------------


def load(db: Path, n: int, batch: int) -> dict[str, Any]:
    from oaiserver.store import Store
    from oaiserver.synthetic import synthetic_records

    for suffix in ("", "-wal", "-shm"):
        with suppress(FileNotFoundError):
            Path(f"{db}{suffix}").unlink()
    store = Store(f"sqlite:///{db}")
    records = synthetic_records(n, REPO_ID)
    write_s = gen_s = 0.0
    added = 0
    cpu0 = self_cpu()
    chunk_size = max(batch, 10_000 // batch * batch)
    while True:
        t = time.perf_counter()
        chunk = list(itertools.islice(records, chunk_size))
        gen_s += time.perf_counter() - t
        if not chunk:
            break
        t = time.perf_counter()
        added += store.write(chunk, keep_datestamps=True, batch=batch).added
        write_s += time.perf_counter() - t
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
        "generate_seconds": round(gen_s, 2),
        "generate_records_per_s": round(added / gen_s, 1) if gen_s else None,
        "end_to_end_records_per_s": round(added / (write_s + gen_s), 1),
        "process_cpu_s": round(self_cpu() - cpu0, 2),
        "db_mb": round(sum(Path(f"{db}{s}").stat().st_size for s in ("", "-wal") if Path(f"{db}{s}").exists()) / 2**20),
    }


# ---- servers -------------------------------------------------------------------------------


def start_ours(workdir: Path, db: Path, workers: int, page_size: int) -> Server:
    from oaiserver.synthetic import synthetic_sets

    port = free_port()
    cfg = {
        "repository": {"name": "Benchmark", "base_url": f"http://127.0.0.1:{port}/oai", "identifier": REPO_ID},
        "storage": {"url": f"sqlite:///{db}"},
        "server": {"page_size": page_size},
        "sets": synthetic_sets(),
    }
    path = workdir / "config.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    env = {k: v for k, v in os.environ.items() if k not in ("OAI_STORAGE_URL", "OAI_SECRET")}
    env["OAI_CONFIG"] = str(path)
    cmd = [str(VENV_BIN / "oaiserver"), "--config", str(path), "serve"]
    cmd += ["--bind", f"127.0.0.1:{port}", "--workers", str(workers)]
    server = Server("oaiserver", cmd, env, port, workdir)
    server.wait_ready()
    return server


def ensure_peer_venv() -> Path:
    python = PEER_VENV / "bin" / "python"
    gunicorn_version = importlib.metadata.version("gunicorn")
    wanted = {"oaipmh": PEER_PACKAGE.split("==")[1], "gunicorn": gunicorn_version}
    if python.exists():
        probe = subprocess.run(
            [str(python), "-c", "import importlib.metadata as m; print(m.version('oaipmh'), m.version('gunicorn'))"],
            capture_output=True,
            text=True,
        )
        if probe.returncode == 0 and probe.stdout.split() == [wanted["oaipmh"], wanted["gunicorn"]]:
            return PEER_VENV
    log(f"making {PEER_VENV.relative_to(ROOT)} with {PEER_PACKAGE} and gunicorn=={gunicorn_version}")
    shutil.rmtree(PEER_VENV, ignore_errors=True)
    subprocess.run(["python3", "-m", "venv", str(PEER_VENV)], check=True)
    subprocess.run(
        [str(python), "-m", "pip", "install", "--quiet", PEER_PACKAGE, f"gunicorn=={gunicorn_version}"], check=True
    )
    return PEER_VENV


def start_peer(workdir: Path, db: Path, workers: int, page_size: int) -> Server:
    venv = ensure_peer_venv()
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    env.update(PEER_DB=str(db), PEER_BASE_URL=f"http://127.0.0.1:{port}/oai", PEER_PAGE_SIZE=str(page_size))
    cmd = [str(venv / "bin" / "gunicorn"), "--workers", str(workers), "--worker-class", "sync"]
    cmd += ["--bind", f"127.0.0.1:{port}", "--chdir", str(BENCH), "peer_app:app"]
    server = Server("peer", cmd, env, port, workdir)
    server.wait_ready()
    return server


def warm_up(server: Server, pages: int = 20) -> None:
    """Every worker imports, connects and compiles its statements before we measure."""
    session = requests.Session()
    params = first_page()
    for _ in range(pages):
        body, _ = fetch(session, server.url, params)
        token = next_token(body)
        params = first_page() if token is None else {"verb": "ListRecords", "resumptionToken": token}
    fetch(session, server.url, {"verb": "GetRecord", "metadataPrefix": "oai_dc", "identifier": identifier(0)})
    session.close()


def identifier(i: int) -> str:
    return f"oai:{REPO_ID}:rec-{i:07d}"


# ---- harvester and Sickle --------------------------------------------------------------------


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


# ---- profiles (bench/profiling.py: CPU-time sampling, standard library only) --------------------


@contextmanager
def sampling(out: Path) -> Iterator[None]:
    """Sample this process's CPU time into collapsed stacks at `out`."""
    from profiling import Sampler

    sampler = Sampler().start()
    try:
        yield
    finally:
        sampler.stop()
        sampler.dump(out)


def start_profiled_server(workdir: Path, workers: int, profdir: Path) -> Server:
    """Our app under gunicorn with bench/profiling.py as its configuration: every worker is
    sampled and writes its stacks when it exits. Same app, config and worker model as
    `oaiserver serve`, on another port."""
    profdir.mkdir(parents=True, exist_ok=True)
    for old in profdir.glob("worker-*.txt"):
        old.unlink()
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k not in ("OAI_STORAGE_URL", "OAI_SECRET")}
    env.update(OAI_CONFIG=str(workdir / "config.yaml"), BENCH_PROFILE_DIR=str(profdir))
    cmd = [str(VENV_BIN / "gunicorn"), "-c", str(BENCH / "profiling.py"), "--workers", str(workers)]
    cmd += ["--bind", f"127.0.0.1:{port}", "oaiserver:create_app()"]
    server = Server(f"oaiserver-profiled-{profdir.name}", cmd, env, port, workdir)
    server.wait_ready()
    return server


def merge_stacks(files: list[Path], out: Path) -> None:
    counts: dict[str, int] = {}
    for f in files:
        for line in f.read_text().splitlines():
            stack, _, n = line.rpartition(" ")
            if stack and n.isdigit():
                counts[stack] = counts.get(stack, 0) + int(n)
    out.write_text("".join(f"{k} {v}\n" for k, v in sorted(counts.items(), key=lambda kv: -kv[1])))


def summarize_profile(path: Path, top: int = 25) -> dict[str, Any]:
    """Inclusive and self shares of the sampled functions, from collapsed stacks."""
    inclusive: dict[str, int] = {}
    own: dict[str, int] = {}
    total = 0
    if not path.exists():
        return {"samples": 0, "inclusive": [], "self": []}
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        frames = [f for f in stack.split(";") if not f.startswith("process ")]
        if not frames:
            continue
        n = int(count)
        total += n
        own[frames[-1]] = own.get(frames[-1], 0) + n
        for f in set(frames):
            inclusive[f] = inclusive.get(f, 0) + n

    def ranked(d: dict[str, int], skip_wrappers: bool) -> list[list[Any]]:
        rows = sorted(d.items(), key=lambda kv: -kv[1])
        if skip_wrappers:  # the outer frames every sample goes through say nothing
            rows = [r for r in rows if r[1] < 0.97 * total]
        return [[round(100 * n / total, 1), f] for f, n in rows[:top]]

    return {"samples": total, "inclusive": ranked(inclusive, True), "self": ranked(own, False)}


# ---- the run -------------------------------------------------------------------------------


def machine() -> dict[str, Any]:
    model = "unknown"
    with suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    mem_kb = 0
    with suppress(OSError):
        mem_kb = int(Path("/proc/meminfo").read_text().split()[1])
    versions = {}
    for dist in ("flask", "gunicorn", "sqlalchemy", "lxml", "requests", "sickle"):
        with suppress(importlib.metadata.PackageNotFoundError):
            versions[dist] = importlib.metadata.version(dist)
    commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    dirty = subprocess.run(["git", "status", "--porcelain"], cwd=ROOT, capture_output=True, text=True).stdout
    return {
        "nproc": os.cpu_count(),
        "cpu_model": model,
        "memory_gib": round(mem_kb / 2**20, 1),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "sqlite": sqlite3.sqlite_version,
        "packages": versions,
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "git_commit": commit,
        "git_dirty": bool(dirty.strip()),
        "loadavg_start": list(os.getloadavg()),
    }


@dataclass
class Check:
    group: str
    figure: str
    value: str
    target: str = ""
    passed: bool | None = None  # None: no target (information)
    note: str = ""


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.results: dict[str, Any] = {}
        self.checks: list[Check] = []
        self.skipped: dict[str, str] = {}

    def check(self, *a: Any, **kw: Any) -> None:
        self.checks.append(Check(*a, **kw))

    def run(self) -> None:
        a = self.args
        workdir = Path(a.workdir) if a.workdir else Path(tempfile.mkdtemp(prefix="oai-bench-"))
        workdir.mkdir(parents=True, exist_ok=True)
        db = workdir / "oai.sqlite3"
        log(f"working in {workdir}")
        servers: list[Server] = []
        try:
            self.section_load(db)
            log(f"starting oaiserver (gunicorn, {a.workers} workers, page size {a.page_size})")
            ours = start_ours(workdir, db, a.workers, a.page_size)
            servers.append(ours)
            peer = None
            if a.skip_peer:
                self.skipped["peer"] = "--skip-peer"
            else:
                log("starting the pyoai peer (gunicorn, same workers)")
                try:
                    peer = start_peer(workdir, db, a.workers, a.page_size)
                    servers.append(peer)
                except (RuntimeError, subprocess.CalledProcessError) as exc:
                    self.skipped["peer"] = f"the peer could not be started: {exc}"
                    log(self.skipped["peer"])
            for s in servers:
                warm_up(s)
            walks = self.section_full_harvest(ours, peer)
            self.section_page_latency(ours, peer, walks)
            self.section_get_record(ours, peer)
            self.section_crowds(ours, peer)
            self.section_harvester(ours, workdir)
            self.section_memory(ours, peer)
            if a.other_page_size:
                self.section_other_page_size(ours, workdir, db)
            if a.profile:
                self.section_profiles(ours, workdir)
        finally:
            for s in servers:
                s.stop()
            if not a.keep and not a.workdir:
                shutil.rmtree(workdir, ignore_errors=True)
            elif a.keep:
                log(f"kept {workdir}")

    # ---- sections ------------------------------------------------------------------------

    def section_load(self, db: Path) -> None:
        a = self.args
        log(f"loading {a.records:,} synthetic records into SQLite (Store.write, batch={a.load_batch})")
        r = load(db, a.records, a.load_batch)
        self.results["load"] = r
        self.check(
            "load",
            "bulk load into SQLite (Store.write)",
            f"{r['records_per_s']:,.0f} records/s",
            f">= {T_LOAD:,} records/s",
            r["records_per_s"] >= T_LOAD,
            f"{r['records']:,} records in {r['write_seconds']} s; generating them took {r['generate_seconds']} s more",
        )

    def section_other_page_size(self, ours: Server, workdir: Path, db: Path) -> None:
        """The same full harvest from a second server configured with another page size,
        alternating with the first: how much of the CPU per record is the per-request cost
        (gunicorn's HTTP handling alone is about 0.5 ms a request)."""
        a = self.args
        size = a.other_page_size
        log(f"full ListRecords harvest with {size} records per page (a second server)")
        other_dir = workdir / f"pages-{size}"
        other_dir.mkdir(exist_ok=True)
        other = start_ours(other_dir, db, a.workers, size)
        try:
            warm_up(other, pages=5)
            main_walks, other_walks = [], []
            for _ in range(a.repeat):
                main_walks.append(full_harvest(ours))
                other_walks.append(full_harvest(other))
        finally:
            other.stop()
        cpu = {
            name: median([w.server_cpu * 1e6 / w.records for w in walks])
            for name, walks in (("main", main_walks), ("other", other_walks))
        }
        rate = median([w.records / w.seconds for w in other_walks])
        self.results["other_page_size"] = {
            "page_size": size,
            "records_per_s": round(rate, 1),
            "server_cpu_ms_per_1k": round(cpu["other"], 2),
            "same_run_main_cpu_ms_per_1k": round(cpu["main"], 2),
            "page_ms_p50": round(median([median(w.latencies) for w in other_walks]) * 1000, 2),
            "runs": [w.summary() for w in other_walks],
        }
        self.check(
            "full harvest",
            f"ours, {size} records per page: server CPU per 1,000 (gzip)",
            f"{cpu['other']:.1f} ms",
            note=f"{rate:,.0f} records/s, {self.results['other_page_size']['page_ms_p50']:.1f} ms a page; "
            f"alternating with page size {a.page_size} ({cpu['main']:.1f} ms), medians of {a.repeat}",
        )

    def section_full_harvest(self, ours: Server, peer: Server | None) -> dict[str, Walk]:
        a = self.args
        runs: dict[str, list[Walk]] = {"ours": [], "ours_identity": [], "peer": []}
        for rep in range(a.repeat):
            log(f"full ListRecords harvest, repetition {rep + 1} of {a.repeat}")
            runs["ours"].append(full_harvest(ours))
            if peer is not None:
                runs["peer"].append(full_harvest(peer))
            if rep == 0:  # information only: what gzip costs; one run is enough
                runs["ours_identity"].append(full_harvest(ours, gzip=False))
            for name, walks in runs.items():
                if walks:
                    w = walks[-1]
                    log(f"  {name}: {w.records:,} records, {w.records / w.seconds:,.0f} records/s")
        out: dict[str, Any] = {}
        for name, walks in runs.items():
            if not walks:
                continue
            out[name] = {
                "records_per_s": round(median([w.records / w.seconds for w in walks]), 1),
                "server_cpu_ms_per_1k": round(median([w.server_cpu * 1e6 / w.records for w in walks]), 2),
                "client_cpu_ms_per_1k": round(median([w.client_cpu * 1e6 / w.records for w in walks]), 2),
                "others_cpu_pct": median([w.summary()["others_cpu_pct"] for w in walks]),
                "runs": [w.summary() for w in walks],
            }
        self.results["full_harvest"] = out
        o = out["ours"]
        expected = a.records
        complete = all(w.records == expected for w in runs["ours"] + runs["ours_identity"] + runs["peer"])
        self.check(
            "full harvest",
            "ours: records/s (1 client, gzip)",
            f"{o['records_per_s']:,.0f}",
            note=f"median of {a.repeat}; every run saw {expected:,} records: {'yes' if complete else 'NO'}; "
            f"others used {o['others_cpu_pct']:.0f} % of the CPUs meanwhile",
        )
        self.check(
            "full harvest",
            "ours: server CPU per 1,000 records (gzip)",
            f"{o['server_cpu_ms_per_1k']:.1f} ms",
            f"<= {T_CPU:g} ms",
            o["server_cpu_ms_per_1k"] <= T_CPU,
            "gunicorn master + workers, utime + stime from /proc",
        )
        oi = out["ours_identity"]
        self.check(
            "full harvest",
            "ours: records/s and CPU, identity encoding",
            f"{oi['records_per_s']:,.0f}/s, {oi['server_cpu_ms_per_1k']:.1f} ms",
            note="same loop, Accept-Encoding: identity (what gzip costs the server); one run",
        )
        if "peer" in out:
            p = out["peer"]
            self.check(
                "full harvest",
                "peer (pyoai): records/s, server CPU per 1,000",
                f"{p['records_per_s']:,.0f}/s, {p['server_cpu_ms_per_1k']:.1f} ms",
                note=f"ours/peer: {o['records_per_s'] / p['records_per_s']:.2f}x records/s, "
                f"{p['server_cpu_ms_per_1k'] / o['server_cpu_ms_per_1k']:.2f}x less CPU (peer sends no gzip)",
            )
        return {name: walks[0] for name, walks in runs.items() if walks}

    def section_page_latency(self, ours: Server, peer: Server | None, walks: dict[str, Walk]) -> None:
        """The first page (a new list), the second (the first token), and the pages at 10, 50 and
        90 % of the list, re-requested with the tokens of the first walk."""
        a = self.args
        positions: tuple[int | str, ...] = (0, "p2", 10, 50, 90)
        targets = [("ours", ours, walks["ours"])]
        if peer is not None and "peer" in walks:
            targets.append(("peer", peer, walks["peer"]))
        samples: dict[str, dict[int | str, list[float]]] = {name: {p: [] for p in positions} for name, _, _ in targets}
        session = requests.Session()
        log(f"page latency: first and second page, 10, 50, 90 % of the list, {a.latency_reps} times each")
        for _ in range(a.latency_reps):
            for p in positions:
                for name, server, walk in targets:
                    page = 1 if p == "p2" else (int(p) * walk.pages) // 100
                    params = (
                        first_page() if page == 0 else {"verb": "ListRecords", "resumptionToken": walk.tokens[page - 1]}
                    )
                    _, elapsed = fetch(session, server.url, params)
                    samples[name][p].append(elapsed)
        label = {0: "first", "p2": "second", 10: "10%", 50: "50%", 90: "90%"}
        self.results["page_latency"] = {
            name: {
                label[p]: {"median_ms": round(median(v) * 1000, 2), "samples_ms": [round(x * 1000, 2) for x in v]}
                for p, v in per.items()
            }
            for name, per in samples.items()
        }
        for name, _, _ in targets:
            m = {p: median(samples[name][p]) * 1000 for p in positions}
            ratio = m[90] / m[0]
            self.check(
                "page latency",
                f"{name}: first, 2nd, 10/50/90 % page (ms)",
                " / ".join(f"{m[p]:.1f}" for p in positions),
                f"90 % <= {T_LATE_PAGE}x first" if name == "ours" else "",
                ratio <= T_LATE_PAGE if name == "ours" else None,
                f"90 %/first = {ratio:.2f}, 90 %/2nd = {m[90] / m['p2']:.2f}; median of {a.latency_reps}"
                + ("; the first page starts a list: freeze + count of the whole list" if name == "ours" else ""),
            )

    def section_get_record(self, ours: Server, peer: Server | None) -> None:
        a = self.args
        rng = random.Random(6)
        ids = [identifier(rng.randrange(a.records)) for _ in range(a.get_records)]
        targets = [("ours", ours)] + ([("peer", peer)] if peer is not None else [])
        samples: dict[str, list[float]] = {name: [] for name, _ in targets}
        log(f"GetRecord of {len(ids)} random identifiers")
        session = requests.Session()
        for ident in ids:
            for name, server in targets:
                params = {"verb": "GetRecord", "metadataPrefix": "oai_dc", "identifier": ident}
                _, elapsed = fetch(session, server.url, params)
                samples[name].append(elapsed)
        out = {}
        for name, v in samples.items():
            out[name] = {
                "requests": len(v),
                "p50_ms": round(median(v) * 1000, 2),
                "p95_ms": round(percentile(v, 95) * 1000, 2),
            }
            self.check(
                "GetRecord",
                f"{name}: p50 / p95",
                f"{out[name]['p50_ms']:.1f} / {out[name]['p95_ms']:.1f} ms",
                note=f"{len(v)} random identifiers",
            )
        self.results["get_record"] = out

    def section_crowds(self, ours: Server, peer: Server | None) -> None:
        a = self.args
        out: dict[str, Any] = {}
        for level in (8, 32):
            runs: dict[str, list[Crowd]] = {"ours": [], "peer": []}
            for rep in range(a.repeat):
                for name, server in (("ours", ours), ("peer", peer)):
                    if server is None:
                        continue
                    log(f"{level} concurrent harvesters on {name}, {a.crowd_seconds:g} s (repetition {rep + 1})")
                    c = crowd(server, level, a.crowd_seconds, a.crowd_max_pages)
                    runs[name].append(c)
                    log(
                        f"  {c.records / c.seconds:,.0f} records/s, p95 {percentile(c.latencies, 95) * 1000:.0f} ms, "
                        f"{c.errors} errors"
                    )
            for name, crowds in runs.items():
                if not crowds:
                    continue
                out[f"{name}_{level}"] = {
                    "records_per_s": round(median([c.records / c.seconds for c in crowds]), 1),
                    "p95_ms": round(median([percentile(c.latencies, 95) * 1000 for c in crowds]), 1),
                    "errors": sum(c.errors for c in crowds),
                    "server_cpu_ms_per_1k": round(
                        median([c.server_cpu * 1e6 / c.records for c in crowds if c.records]), 2
                    ),
                    "others_cpu_pct": median([c.summary()["others_cpu_pct"] for c in crowds]),
                    "runs": [c.summary() for c in crowds],
                }
        self.results["concurrent"] = out
        for level in (8, 32):
            o = out[f"ours_{level}"]
            self.check(
                "concurrent",
                f"ours: {level} harvesters, aggregate / p95 / errors",
                f"{o['records_per_s']:,.0f}/s, {o['p95_ms']:.0f} ms, {o['errors']}",
                "0 errors",
                o["errors"] == 0,
                f"median of {a.repeat} x {a.crowd_seconds:g} s; server CPU {o['server_cpu_ms_per_1k']:.1f} ms/1k; "
                f"others used {o['others_cpu_pct']:.0f} % of the CPUs",
            )
            p = out.get(f"peer_{level}")
            if p is not None:
                ratio = o["records_per_s"] / p["records_per_s"] if p["records_per_s"] else float("inf")
                self.check(
                    "concurrent",
                    f"peer: {level} harvesters, aggregate / p95 / errors",
                    f"{p['records_per_s']:,.0f}/s, {p['p95_ms']:.0f} ms, {p['errors']}",
                    f"ours >= {T_VS_PEER_32:g}x peer" if level == 32 else "",
                    ratio >= T_VS_PEER_32 if level == 32 else None,
                    f"ours/peer = {ratio:.2f}x; peer CPU {p['server_cpu_ms_per_1k']:.1f} ms/1k; "
                    f"others used {p['others_cpu_pct']:.0f} % of the CPUs",
                )

    def section_harvester(self, ours: Server, workdir: Path) -> None:
        a = self.args
        out: dict[str, Any] = {}
        if a.skip_harvester:
            self.skipped["harvester"] = "--skip-harvester"
            return
        api = harvester_api()
        if isinstance(api, str):
            self.skipped["harvester"] = api
            log(f"harvester: SKIPPED: {api}")
        sickle_runs: list[dict[str, Any]] = []
        sqlite_runs: list[dict[str, Any]] = []
        for rep in range(a.harvest_repeat):
            if not isinstance(api, str):
                log(f"harvester into SQLite (repetition {rep + 1} of {a.harvest_repeat})")
                target = workdir / f"harvested-{rep}.sqlite3"
                try:
                    r = run_harvester(api, ours, f"sqlite:///{target}")
                except Exception as exc:
                    r = {
                        "outcome": "error",
                        "reason": f"{type(exc).__name__}: {exc}",
                        "records_per_s": 0.0,
                        "records": 0,
                    }
                    traceback.print_exc()
                sqlite_runs.append(r)
                log(f"  {r['outcome']}: {r['records']:,} records, {r['records_per_s']:,.0f} records/s")
                for suffix in ("", "-wal", "-shm"):
                    with suppress(FileNotFoundError):
                        Path(f"{target}{suffix}").unlink()
            log(f"plain Sickle loop into SQLite (repetition {rep + 1} of {a.harvest_repeat})")
            target = workdir / f"sickle-{rep}.sqlite3"
            s = sickle_loop(ours, target)
            sickle_runs.append(s)
            log(f"  {s['records']:,} records, {s['records_per_s']:,.0f} records/s")
            for suffix in ("", "-wal", "-shm"):
                with suppress(FileNotFoundError):
                    Path(f"{target}{suffix}").unlink()
        sickle_rate = median([s["records_per_s"] for s in sickle_runs])
        out["sickle"] = {"records_per_s": sickle_rate, "runs": sickle_runs}
        self.check(
            "harvester",
            "plain Sickle loop into SQLite",
            f"{sickle_rate:,.0f} records/s",
            note=f"raw XML, executemany in batches of 500; median of {len(sickle_runs)}; "
            f"client CPU {median([r['client_cpu_ms_per_1k'] or 0 for r in sickle_runs]):.0f} ms/1k; "
            f"others used {median([r['others_cpu_pct'] for r in sickle_runs]):.0f} % of the CPUs",
        )
        if sqlite_runs and not isinstance(api, str):  # runs only with the harvester's API at hand
            rate = median([r["records_per_s"] for r in sqlite_runs])
            ok = all(r["outcome"] == "success" and r["records"] == a.records for r in sqlite_runs)
            out["sqlite"] = {"records_per_s": rate, "runs": sqlite_runs}
            self.check(
                "harvester",
                "harvester into SQLite",
                f"{rate:,.0f} records/s",
                f">= {T_HARVESTER:,} records/s",
                rate >= T_HARVESTER and ok,
                f"harvest.run, default settings; outcome {'success, every record' if ok else 'NOT COMPLETE'}; "
                f"harvester CPU (with its worker process) "
                f"{median([r.get('harvester_cpu_ms_per_1k') or 0 for r in sqlite_runs]):.0f} ms/1k, "
                f"server CPU {median([r.get('server_cpu_ms_per_1k') or 0 for r in sqlite_runs]):.0f} ms/1k; "
                f"others used {median([r.get('others_cpu_pct') or 0 for r in sqlite_runs]):.0f} % of the CPUs",
            )
            ratio = rate / sickle_rate if sickle_rate else float("inf")
            h_cpu = median([r.get("harvester_cpu_ms_per_1k") or 0 for r in sqlite_runs])
            s_cpu = median([r["client_cpu_ms_per_1k"] or 0 for r in sickle_runs]) or float("nan")
            self.check(
                "harvester",
                "harvester / plain Sickle loop",
                f"{ratio:.2f}x",
                f">= {T_HARVESTER_VS_SICKLE:g}x",
                ratio >= T_HARVESTER_VS_SICKLE,
                f"records/s, same run; client CPU per record: harvester {h_cpu:.0f} ms/1k, Sickle loop "
                f"{s_cpu:.0f} ms/1k ({h_cpu / s_cpu:.1f}x)",
            )
            if a.skip_pg or not a.pg_url:
                self.skipped["harvester_pg"] = "--skip-pg"
            else:
                log("harvester into PostgreSQL (a fresh schema)")
                pg_run: dict[str, Any] | None = None
                for attempt in (1, 2):  # the shared server may be restarted under us: then once more
                    try:
                        with pg_target(a.pg_url) as url:
                            pg_run = run_harvester(api, ours, url)
                        break
                    except Exception as exc:
                        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
                        why = f"PostgreSQL at {a.pg_url}: {type(exc).__name__}: {first}"
                        log(f"harvester into PostgreSQL failed (attempt {attempt}): {why}")
                        if attempt == 2 or not wait_for_pg(a.pg_url, 90):
                            self.skipped["harvester_pg"] = why
                            break
                if pg_run is not None:
                    out["postgresql"] = pg_run
                    self.check(
                        "harvester",
                        "harvester into PostgreSQL",
                        f"{pg_run['records_per_s']:,.0f} records/s",
                        note=f"outcome {pg_run['outcome']}, {pg_run['records']:,} records; {a.pg_url.split('@')[-1]}; "
                        f"harvester CPU {pg_run.get('harvester_cpu_ms_per_1k') or 0:.0f} ms/1k; "
                        f"others used {pg_run.get('others_cpu_pct') or 0:.0f} % of the CPUs",
                    )
                    log(
                        f"  {pg_run['outcome']}: {pg_run['records']:,} records, "
                        f"{pg_run['records_per_s']:,.0f} records/s"
                    )
        self.results["harvester"] = out

    def section_memory(self, ours: Server, peer: Server | None) -> None:
        out = {"ours": ours.memory()}
        if peer is not None:
            out["peer"] = peer.memory()
        self.results["memory"] = out
        hwm = max(out["ours"]["worker_hwm_mb"] or [0])
        at = self.args.records
        self.check(
            "memory",
            "ours: peak RSS per worker (VmHWM)",
            f"{hwm:.0f} MB",
            f"<= {T_RSS_MB:g} MB at 1M",
            hwm <= T_RSS_MB,
            f"at N={at:,}"
            + ("" if at >= 1_000_000 else " (run `make bench N=1000000` for the target's N)")
            + f"; workers: {', '.join(f'{x:.0f}' for x in out['ours']['worker_hwm_mb'])} MB",
        )
        if peer is not None:
            self.check(
                "memory", "peer: peak RSS per worker (VmHWM)", f"{max(out['peer']['worker_hwm_mb'] or [0]):.0f} MB"
            )

    def section_profiles(self, ours: Server, workdir: Path) -> None:
        """Where the CPU time goes, sampled outside the measured runs (bench/profiling.py)."""
        a = self.args
        outdir = Path(a.json).parent
        outdir.mkdir(parents=True, exist_ok=True)
        profiles: dict[str, Any] = {}

        def keep(name: str, path: Path, what: str) -> None:
            profiles[name] = {"what": what, "file": str(path), **summarize_profile(path)}

        def server_profile(name: str, what: str, drive: Callable[[Server], None]) -> None:
            profdir = workdir / f"profile-{name}"
            server = start_profiled_server(workdir, a.workers, profdir)
            try:
                warm_up(server)
                drive(server)
            finally:
                server.stop()
            path = outdir / f"profile-{name}.txt"
            merge_stacks(sorted(profdir.glob("worker-*.txt")), path)
            keep(name, path, what)

        pages = min(300, a.records // a.page_size)

        def list_records(s: Server) -> None:
            full_harvest(s, max_pages=pages)

        log(f"profile: server, ListRecords ({pages} pages)")
        server_profile("server-listrecords", f"gunicorn workers, {pages} ListRecords pages (gzip)", list_records)

        def get_records(s: Server) -> None:
            rng = random.Random(7)
            session = requests.Session()
            for _ in range(500):
                params = {"verb": "GetRecord", "metadataPrefix": "oai_dc"}
                fetch(session, s.url, {**params, "identifier": identifier(rng.randrange(a.records))})

        log("profile: server, GetRecord (500 requests)")
        server_profile("server-getrecord", "gunicorn workers, 500 GetRecord requests + warm-up", get_records)

        api = harvester_api() if not a.skip_harvester else "--skip-harvester"
        if not isinstance(api, str):
            log("profile: harvester into SQLite (stopped after 20 s)")
            path = outdir / "profile-harvester.txt"
            stop = threading.Event()
            timer = threading.Timer(20.0, stop.set)
            kwargs: dict[str, Any] = {"stop": stop} if "stop" in inspect.signature(api).parameters else {}
            timer.start()
            quiet = logging.getLogger("harvester")
            level = quiet.level
            quiet.setLevel(logging.ERROR)  # the run ends "failed: stopped", as asked
            try:
                with sampling(path):
                    run_harvester(api, ours, f"sqlite:///{workdir / 'profile-harvest.sqlite3'}", **kwargs)
            finally:
                timer.cancel()
                quiet.setLevel(level)
            keep("harvester", path, "the benchmark process running harvest.run into SQLite")

        from oaiserver.store import Store
        from oaiserver.synthetic import synthetic_records

        n = min(a.records, 20_000)
        log(f"profile: loading {n:,} records (Store.write, batch={a.load_batch}; generated beforehand)")
        records = list(synthetic_records(n, REPO_ID))
        store = Store(f"sqlite:///{workdir / 'profile-load.sqlite3'}")
        path = outdir / "profile-load.txt"
        with sampling(path):
            store.write(records, keep_datestamps=True, batch=a.load_batch)
        store.close()
        keep("load", path, f"the benchmark process in Store.write of {n:,} records")
        self.results["profiles"] = profiles

    # ---- output --------------------------------------------------------------------------

    def report(self) -> dict[str, Any]:
        from rich.console import Console
        from rich.table import Table

        a = self.args
        table = Table(
            title=f"oaiserver benchmarks: N={a.records:,}, {a.workers} workers, page size {a.page_size}, "
            f"{os.cpu_count()} CPUs"
        )
        for col in ("group", "figure", "value", "target", "result", "notes"):
            table.add_column(col, overflow="fold")
        for c in self.checks:
            result = "" if c.passed is None else ("[green]PASS[/]" if c.passed else "[red]FAIL[/]")
            table.add_row(c.group, c.figure, c.value, c.target, result, c.note)
        for what, why in self.skipped.items():
            table.add_row(what, "SKIPPED", "", "", "[yellow]SKIP[/]", why)
        console = Console(width=max(shutil.get_terminal_size((200, 40)).columns, 200))
        console.print(table)
        for name, prof in self.results.get("profiles", {}).items():
            console.print(f"\n[bold]profile {name}[/]: {prof['what']}; {prof['samples']} samples; {prof['file']}")
            console.print("  inclusive %: " + "".join(f"\n    {pct:5.1f}  {f}" for pct, f in prof["inclusive"][:14]))
            console.print("  self %:      " + "".join(f"\n    {pct:5.1f}  {f}" for pct, f in prof["self"][:10]))
        return {
            "checks": [c.__dict__ for c in self.checks],
            "skipped": self.skipped,
            "results": self.results,
        }


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--records", "-n", type=int, help="records in the data set (default 100000; 5000 with --quick)")
    p.add_argument("--quick", action="store_true", help="a smoke run: small N, one repetition, short crowd runs")
    p.add_argument("--skip-peer", action="store_true", help="do not build or measure the pyoai peer")
    p.add_argument(
        "--pg-url", default=DEFAULT_PG, help=f"PostgreSQL for the harvester's second store (default {DEFAULT_PG})"
    )
    p.add_argument("--skip-pg", action="store_true", help="do not harvest into PostgreSQL")
    p.add_argument("--skip-harvester", action="store_true", help="skip the harvester and Sickle runs")
    p.add_argument("--json", default=str(BENCH / "results" / "latest.json"), help="where to write the JSON results")
    p.add_argument("--workers", type=int, default=2, help="gunicorn workers, both servers (default 2)")
    p.add_argument(
        "--page-size",
        type=int,
        default=Config.page_size,
        help=f"records per list page, both servers (default {Config.page_size}, the server's default)",
    )
    p.add_argument(
        "--other-page-size",
        type=int,
        default=100,
        help="also harvest a second server with this page size (default 100; 0 to skip)",
    )
    p.add_argument("--load-batch", type=int, default=1000, help="Store.write batch size (default 1000)")
    p.add_argument("--repeat", type=int, help="full harvest and crowd runs (default 3; 1 if quick or N >= 500000)")
    p.add_argument(
        "--harvest-repeat", type=int, help="harvester and Sickle runs, alternating (default 3; 1 quick or N >= 500000)"
    )
    p.add_argument("--latency-reps", type=int, help="requests per page position (default 7; 3 quick)")
    p.add_argument("--get-records", type=int, help="GetRecord requests (default 300; 50 quick)")
    p.add_argument("--crowd-seconds", type=float, help="seconds per concurrent-harvesters run (default 10; 4 quick)")
    p.add_argument("--crowd-max-pages", type=int, default=100_000, help="page cap per concurrent harvester")
    p.add_argument("--profile", action="store_true", help="also profile server, harvester, load (CPU time)")
    p.add_argument("--workdir", help="keep the data set and server logs here (default: a temporary folder, removed)")
    p.add_argument("--keep", action="store_true", help="keep the temporary folder")
    a = p.parse_args(argv)
    quick = a.quick
    a.records = a.records or (5_000 if quick else 100_000)
    a.repeat = a.repeat or (1 if quick or a.records >= 500_000 else 3)
    a.harvest_repeat = a.harvest_repeat or (1 if quick or a.records >= 500_000 else 3)
    a.latency_reps = a.latency_reps or (3 if quick else 7)
    a.get_records = a.get_records or (50 if quick else 300)
    a.crowd_seconds = a.crowd_seconds or (4.0 if quick else 10.0)
    if a.records < 1000:
        p.error("--records must be at least 1000")
    return a


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    info = machine()
    log(f"{info['cpu_model']}, {info['nproc']} CPUs, Python {info['python']}; N={args.records:,}")
    bench = Bench(args)
    started = time.time()
    failed: BaseException | None = None
    try:
        bench.run()
    except BaseException as exc:  # still print and save what was measured
        failed = exc
        traceback.print_exc()
    info["loadavg_end"] = list(os.getloadavg())
    out = bench.report()
    out = {
        "machine": info,
        "params": {k: v for k, v in vars(args).items() if k != "pg_url"} | {"pg_url": args.pg_url.split("@")[-1]},
        "seconds": round(time.time() - started, 1),
        "complete": failed is None,
        **out,
    }
    path = Path(args.json)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=2, ensure_ascii=False) + "\n")
    misses = [c.figure for c in bench.checks if c.passed is False]
    print(
        f"\nJSON: {path}   ({out['seconds']:.0f} s; {len(misses)} target(s) missed"
        f"{': ' + '; '.join(misses) if misses else ''})"
    )
    return 1 if failed is not None else 0


if __name__ == "__main__":
    sys.exit(main())
