"""Helpers for the production-shape tests (test_load.py): a PostgreSQL schema per store,
gunicorn as a subprocess with its log in a file, a private PostgreSQL server to stop and start, plain
OAI-PMH list clients that honour 503 + Retry-After, and latency figures."""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import requests
import sqlalchemy as sa
import yaml
from conftest import NS, PG_URL, validate
from conftest import pg_schema as conftest_pg_schema
from lxml import etree

OAI = "{http://www.openarchives.org/OAI/2.0/}"
BIN = Path(sys.executable).parent


# ---- PostgreSQL ------------------------------------------------------------------------------


@contextmanager
def pg_schema(prefix: str = "l") -> Iterator[str]:
    """conftest's `pg_schema`, which waits for PostgreSQL to answer again before the drop (a load
    test may leave it busy)."""
    with conftest_pg_schema(prefix) as url:
        try:
            yield url
        finally:
            wait_for_postgres()


class PrivatePostgres:
    """A PostgreSQL server of the test's own, for tests that stop and start a database: made
    by initdb in a fresh temporary folder, listening on 127.0.0.1 at a free port with its
    socket in that folder. `stop`/`start` act on it alone (pg_ctl -D its folder), never on a
    server someone else runs. initdb refuses to run as root: as root, every command runs as
    an unprivileged user (`runuser`, else `setpriv`) who owns the folder."""

    def __init__(self, bindir: Path, run_as: list[str], owner: tuple[int, int] | None) -> None:
        self.bindir, self.run_as = bindir, run_as
        self.root = Path(tempfile.mkdtemp(prefix="oai-pg-"))  # not under pytest's 0700 root
        if owner is not None:
            os.chown(self.root, *owner)
        self.data, self.log_path = self.root / "data", self.root / "server.log"
        self.port = 0
        self.url = ""

    def _run(self, tool: str, *args: str, timeout: float = 120) -> None:
        cmd = [*self.run_as, str(self.bindir / tool), *args]
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
        if done.returncode != 0:
            raise AssertionError(f"{' '.join(cmd)} exited with {done.returncode}:\n{done.stdout}{done.stderr}")

    def init(self) -> None:
        self._run("initdb", "-D", str(self.data), "-U", "postgres", "-A", "trust", "-E", "UTF8", "--locale=C", "-N")

    def start(self) -> None:
        """Start it (on the port it had, once it has one) and wait until it takes connections."""
        self.port = self.port or free_port()
        options = f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=off"
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.log_path), "-o", options, "-w", "-t", "90", "start")
        self.url = f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"

    def stop(self) -> None:
        """Stop it at once (fast: sessions are cut off), and wait until it is down."""
        self._run("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "-t", "90", "stop")

    def running(self) -> bool:
        return (self.data / "postmaster.pid").exists()

    def close(self) -> None:
        """Stopped (killed, if it will not stop) and its folder removed: the fixture's finalizer."""
        try:
            if self.running():
                try:
                    self.stop()
                except (AssertionError, subprocess.SubprocessError):
                    with suppress(OSError, ValueError):  # its postmaster: the pid file's first line
                        os.kill(int((self.data / "postmaster.pid").read_text().split()[0]), signal.SIGKILL)
        finally:
            shutil.rmtree(self.root, ignore_errors=True)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


def postgres_bindir() -> Path | None:
    """Where initdb and pg_ctl are: on PATH, else the newest /usr/lib/postgresql/*/bin."""
    on_path = shutil.which("initdb")
    if on_path and shutil.which("pg_ctl"):
        return Path(on_path).resolve().parent
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"), key=lambda p: int(p.parts[-3]))
    return found[-1].parent if found else None


def unprivileged() -> tuple[list[str], tuple[int, int] | None] | str:
    """How to run PostgreSQL's tools here: (command prefix, folder owner), or why it cannot be
    done. Not root: as we are. Root: as `postgres` (or `nobody`) through runuser or setpriv."""
    if os.geteuid() != 0:
        return [], None
    import pwd

    for name in ("postgres", "nobody"):
        try:
            user = pwd.getpwnam(name)
        except KeyError:
            continue
        if shutil.which("runuser"):
            return ["runuser", "-u", name, "--"], (user.pw_uid, user.pw_gid)
        if shutil.which("setpriv"):
            ids = [f"--reuid={user.pw_uid}", f"--regid={user.pw_gid}", "--clear-groups"]
            return ["setpriv", *ids], (user.pw_uid, user.pw_gid)
        return "running as root, and neither runuser nor setpriv is there to run initdb as another user"
    return "running as root, and there is no postgres or nobody user to run initdb as"


def postgres_tools() -> tuple[Path, list[str], tuple[int, int] | None] | str:
    """(bin folder, command prefix, folder owner) for a PrivatePostgres, or why there can be none."""
    bindir = postgres_bindir()
    if bindir is None:
        return "initdb and pg_ctl are neither on PATH nor in /usr/lib/postgresql/*/bin"
    how = unprivileged()
    return how if isinstance(how, str) else (bindir, *how)


def require_postgres_tools() -> tuple[Path, list[str], tuple[int, int] | None]:
    """postgres_tools(), or the test skipped with the reason (failed with CI set: there it must run)."""
    tools = postgres_tools()
    if isinstance(tools, str):
        if os.environ.get("CI"):
            pytest.fail(f"CI: a private PostgreSQL server must be possible: {tools}")
        pytest.skip(f"needs a private PostgreSQL server: {tools}")
    return tools


@contextmanager
def private_postgres(tools: tuple[Path, list[str], tuple[int, int] | None]) -> Iterator[PrivatePostgres]:
    """A running PrivatePostgres, stopped and its folder removed afterwards, whatever happens."""
    server = PrivatePostgres(*tools)
    try:
        try:
            server.init()
            server.start()
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{server.log()[-3000:]}") from None
        yield server
    finally:
        server.close()


def postgres_answers(url: str | None = None) -> bool:
    engine = sa.create_engine(url or PG_URL or "", connect_args={"connect_timeout": 2})
    try:
        with engine.connect() as conn:
            conn.exec_driver_sql("SELECT 1")
        return True
    except sa.exc.DBAPIError:
        return False
    finally:
        engine.dispose()


def wait_for_postgres(url: str | None = None, timeout: float = 90.0) -> None:
    """Until PostgreSQL (PG_URL's, or `url`'s) accepts connections. It is only waited for:
    a test never starts or stops a server it did not start itself (see PrivatePostgres)."""
    first = time.monotonic()
    while not postgres_answers(url):
        if time.monotonic() - first > timeout:
            raise AssertionError(f"PostgreSQL does not accept connections after {timeout} s")
        time.sleep(0.2)


# ---- gunicorn --------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def write_config(path: Path, url: str, port: int, **server: Any) -> Path:
    data: dict[str, Any] = {
        "repository": {
            "name": "Load Test Repository",
            "identifier": "test.example.org",
            "base_url": f"http://127.0.0.1:{port}/oai",
            "admin_emails": ["admin@test.example.org"],
        },
        "storage": {"url": url},
        "server": server,
    }
    from oaiserver.synthetic import synthetic_sets

    data["sets"] = synthetic_sets()
    path.write_text(yaml.safe_dump(data))
    return path


def stop_group(proc: subprocess.Popen[Any]) -> None:
    """Stop a process started in a session of its own, and the processes of its group (a
    server's workers): SIGTERM, then SIGKILL if they are not all gone within 30 s."""
    if proc.poll() is not None:
        return
    with suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)


class Gunicorn:
    """gunicorn in its own session, its output (access log included) in a file, so a busy
    server never blocks on a full pipe. By default it is `oaiserver serve`; `gthread` runs plain
    gunicorn with its own gthread worker and that many threads, as a deployment that starts
    gunicorn itself would."""

    def __init__(
        self, tmp: Path, url: str, *, workers: int = 2, timeout: int = 30, gthread: int = 0, **server: Any
    ) -> None:
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}/oai"
        self.expected_workers = workers
        # Its connections are named, so a test can tell them from other tests' in pg_stat_activity.
        self.application = f"oai-test-{self.port}"
        if url.startswith("postgresql"):
            url += f"{'&' if '?' in url else '?'}application_name={self.application}"
        self.config = write_config(tmp / f"config-{self.port}.yaml", url, self.port, **server)
        self.log_path = tmp / f"gunicorn-{self.port}.log"
        bind = f"127.0.0.1:{self.port}"
        if gthread:
            cmd = [
                str(BIN / "gunicorn"),
                "-k",
                "gthread",
                "--threads",
                str(gthread),
                "-w",
                str(workers),
                "-b",
                bind,
                "--timeout",
                str(timeout),
                "--access-logfile",
                "-",
                "oaiserver:create_app()",
            ]
        else:
            cmd = [
                str(BIN / "oaiserver"),
                "--config",
                str(self.config),
                "serve",
                "--workers",
                str(workers),
                "--bind",
                bind,
                "--timeout",
                str(timeout),
                "--access-log",  # statuses() reads gunicorn's access log
            ]
        env = {**os.environ, "OAI_CONFIG": str(self.config)}
        env.pop("OAI_STORAGE_URL", None)
        self._log = self.log_path.open("wb")
        self.proc = subprocess.Popen(cmd, stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True, env=env)

    def __enter__(self) -> Gunicorn:
        try:
            self.wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def wait_ready(self, timeout: float = 120.0) -> None:
        """Until it answers with every worker booted. Polled: the generous timeout costs nothing
        when it starts at once, and spares a test whose workers boot slowly on a busy machine
        (the suite runs on every core, other processes may too)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"gunicorn exited with {self.proc.returncode}:\n{self.log()[-3000:]}")
            try:
                # Answering, and every worker booted: a test that notes the workers at the start
                # must not see one that was still booting as a restart.
                answered = requests.get(self.base + "?verb=Identify", timeout=2).status_code == 200
                if answered and len(self.workers()) == self.expected_workers:
                    return
            except requests.RequestException:
                pass
            time.sleep(0.1)
        raise AssertionError(f"gunicorn did not answer with all its workers within {timeout} s:\n{self.log()[-3000:]}")

    def stop(self) -> None:
        stop_group(self.proc)
        self._log.close()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def workers(self) -> list[int]:
        """The arbiter's live child processes (its workers)."""
        pids = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            # pid (comm) state ppid ...: comm may hold spaces, so split after the last ')'.
            fields = stat.rsplit(")", 1)[1].split()
            if int(fields[1]) == self.proc.pid and fields[0] != "Z":
                pids.append(int(entry.name))
        return sorted(pids)

    def statuses(self) -> dict[int, int]:
        """HTTP status -> count, from the access log."""
        counts: dict[int, int] = {}
        for m in re.finditer(r'"(?:GET|POST) [^"]*" (\d{3}) ', self.log()):
            counts[int(m.group(1))] = counts.get(int(m.group(1)), 0) + 1
        return counts


# ---- list clients ----------------------------------------------------------------------------


class ListError(AssertionError):
    pass


@dataclass
class Stats:
    """What a group of clients saw: thread-safe counters and every request's latency."""

    latencies: list[float] = field(default_factory=list)
    records: int = 0
    pages: int = 0
    lists: int = 0
    refused: int = 0  # 503s honoured and retried
    errors: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add_page(self, seconds: float, records: int) -> None:
        with self.lock:
            self.latencies.append(seconds)
            self.records += records
            self.pages += 1

    def add_refusal(self) -> None:
        with self.lock:
            self.refused += 1

    def add_error(self, message: str) -> None:
        with self.lock:
            self.errors.append(message)


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    k = max(0, min(len(ordered) - 1, round(p / 100 * len(ordered) + 0.5) - 1))
    return ordered[k]


@dataclass
class Header:
    identifier: str
    datestamp: str
    deleted: bool


@dataclass
class Listing:
    headers: list[Header]
    response_date: str  # of the first page
    pages: int
    sizes: set[int]  # every completeListSize announced


def fetch(
    session: requests.Session,
    url: str,
    params: dict[str, str],
    stats: Stats | None,
    deadline: float,
    timeout: float = 30.0,
) -> tuple[requests.Response, float]:
    """One OAI request and its latency; a 503 is honoured (sleep Retry-After, send again) and
    counted."""
    while True:
        started = time.perf_counter()
        response = session.get(url, params=params, timeout=timeout)
        elapsed = time.perf_counter() - started
        if response.status_code != 503:
            return response, elapsed
        after = response.headers.get("Retry-After", "")
        if not after.isdigit():
            raise ListError(f"503 without an integer Retry-After: {after!r}")
        if stats is not None:
            stats.add_refusal()
        if time.monotonic() + int(after) > deadline:
            raise ListError("503s until the deadline")
        time.sleep(int(after))


def list_all(
    session: requests.Session,
    url: str,
    verb: str,
    args: dict[str, str],
    *,
    stats: Stats | None = None,
    deadline: float,
    validate_first: bool = True,
    stop: threading.Event | None = None,
) -> Listing | None:
    """Follow a whole list. Every page must be HTTP 200 XML without <error> (noRecordsMatch
    is an empty list). None if `stop` is set before the list is done."""
    params = {"verb": verb, **args}
    headers: list[Header] = []
    sizes: set[int] = set()
    response_date = ""
    pages = 0
    while True:
        if stop is not None and stop.is_set():
            return None
        if time.monotonic() > deadline:
            raise ListError(f"{verb} {args}: not finished by the deadline after {pages} page(s)")
        response, elapsed = fetch(session, url, params, stats, deadline)
        doc = _page_document(response, f"{verb} {params}", validate_first and pages == 0)
        pages += 1
        response_date = response_date or doc.findtext("oai:responseDate", namespaces=NS) or ""
        codes = [e.get("code") for e in doc.iter(f"{OAI}error")]
        if codes == ["noRecordsMatch"] and pages == 1:
            return Listing([], response_date, pages, sizes)
        if codes:
            raise ListError(f"{verb} {params}: OAI errors {codes}")
        page = _page_headers(doc)
        headers += page
        if stats is not None:
            stats.add_page(elapsed, len(page))
        token = _page_token(doc, sizes)
        if not token:
            if stats is not None:
                with stats.lock:
                    stats.lists += 1
            return Listing(headers, response_date, pages, sizes)
        params = {"verb": verb, "resumptionToken": token}


def _page_document(response: requests.Response, request: str, validating: bool) -> Any:
    """A page's parsed XML (validated against the schemas if `validating`), if it is HTTP 200."""
    if response.status_code != 200:
        raise ListError(f"{request}: HTTP {response.status_code}: {response.text[:300]}")
    return validate(response.content) if validating else etree.fromstring(response.content)


def _page_headers(doc: Any) -> list[Header]:
    return [
        Header(h.findtext(f"{OAI}identifier") or "", h.findtext(f"{OAI}datestamp") or "", h.get("status") == "deleted")
        for h in doc.iter(f"{OAI}header")
    ]


def _page_token(doc: Any, sizes: set[int]) -> str:
    """A page's resumption token, "" on the last page; adds the completeListSize it announces to `sizes`."""
    token = doc.find(f".//{OAI}resumptionToken")
    if token is None:
        return ""
    if token.get("completeListSize"):
        sizes.add(int(token.get("completeListSize") or 0))
    return (token.text or "").strip()


def duplicates(values: list[str]) -> list[str]:
    return sorted(value for value, count in Counter(values).items() if count > 1)


class Threads:
    """Run callables in threads; an exception in one is kept (never a pytest thread warning)."""

    def __init__(self) -> None:
        self.threads: list[threading.Thread] = []
        self.failures: list[str] = []
        self._lock = threading.Lock()

    def start(self, fn: Any, *args: Any, name: str = "") -> None:
        def body() -> None:
            try:
                fn(*args)
            except BaseException as exc:  # reported by join()
                with self._lock:
                    self.failures.append(f"{name or fn.__name__}: {type(exc).__name__}: {exc}")

        thread = threading.Thread(target=body, name=name or None, daemon=True)
        thread.start()
        self.threads.append(thread)

    def join(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        for thread in self.threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        alive = [t.name for t in self.threads if t.is_alive()]
        assert not alive, f"threads still running after {timeout} s: {alive}"
