"""The server as the README runs it (gunicorn, `oaiserver serve`, `--dev`): its log lines, its
metrics across workers, a store that is down when it starts, and partners added while it runs."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

import pytest
import requests
import sqlalchemy as sa
import yaml
from conftest import PG_URL, until, validate
from loadkit import BIN, free_port, stop_group

from oaiserver import create_app
from oaiserver.config import from_mapping, load
from oaiserver.live import RETRY
from oaiserver.store import Store

README_WORKER = ["-k", "oaiserver.serving.RequestBufferingWorker", "--threads", "4", "--limit-request-line", "8190"]
PARTNER_SETS = re.compile(r"<setSpec>(partners(?::[^<]*)?)</setSpec>")


def write_config(path: Path, url: str, port: int, partners: list[dict[str, Any]] | None = None) -> Path:
    data: dict[str, Any] = {
        "repository": {
            "name": "Served",
            "base_url": f"http://127.0.0.1:{port}/oai",
            "identifier": "served.example.org",
        },
        "storage": {"url": url},
        "server": {"retry_after": 7},
    }
    if partners:
        data["partners"] = partners
    path.write_text(yaml.safe_dump(data))
    return path


class Served:
    """One way of serving the app, in its own session, stdout and stderr each in a file."""

    def __init__(self, tmp: Path, url: str, how: str, *, workers: int = 2) -> None:
        self.port = free_port()
        self.root = f"http://127.0.0.1:{self.port}"
        self.config = write_config(tmp / f"config-{self.port}.yaml", url, self.port)
        bind = f"127.0.0.1:{self.port}"
        self.how = how
        self.workers = 1 if how == "dev" else workers
        commands = {
            "readme": [str(BIN / "gunicorn"), *README_WORKER, "-w", str(workers), "-b", bind, "oaiserver:create_app()"],
            "plain": [str(BIN / "gunicorn"), "-w", str(workers), "-b", bind, "oaiserver:create_app()"],
            "serve": [str(BIN / "oaiserver"), "serve", "--workers", str(workers), "--bind", bind],
            "dev": [str(BIN / "oaiserver"), "serve", "--dev", "--bind", bind],
        }
        env = {**os.environ, "OAI_CONFIG": str(self.config)}
        for name in ("OAI_STORAGE_URL", "PROMETHEUS_MULTIPROC_DIR", "prometheus_multiproc_dir"):
            env.pop(name, None)
        self.stderr_path = tmp / f"stderr-{self.port}.log"
        self._out = (tmp / f"stdout-{self.port}.log").open("wb")
        self._err = self.stderr_path.open("wb")
        self.proc = subprocess.Popen(
            commands[how], stdout=self._out, stderr=self._err, start_new_session=True, env=env, cwd=tmp
        )

    def get(self, path: str, **kwargs: Any) -> requests.Response:
        return requests.get(self.root + path, timeout=10, headers={"Connection": "close"}, **kwargs)

    def wait(self, path: str, status: int, timeout: float = 60.0) -> requests.Response:
        """The answer to `path` once it has `status` (polled: a server starting, a store coming back)."""
        deadline = time.monotonic() + timeout
        last: object = None
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"the server exited with {self.proc.returncode}:\n{self.stderr()[-3000:]}")
            try:
                response = self.get(path)
                if response.status_code == status and len(self.children()) >= self.workers:
                    return response
                last = response.status_code
            except requests.RequestException as exc:
                last = exc
            time.sleep(0.1)
        raise AssertionError(f"{path} did not answer {status} (last: {last}):\n{self.stderr()[-3000:]}")

    def children(self) -> list[int]:
        """The server's worker processes (gunicorn's children; the process itself under --dev)."""
        if self.how == "dev":
            return [self.proc.pid]
        pids = []
        for entry in Path("/proc").iterdir():
            with suppress(OSError, IndexError):
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
                if entry.name.isdigit() and int(fields[1]) == self.proc.pid and fields[0] != "Z":
                    pids.append(int(entry.name))
        return sorted(pids)

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    def stop(self) -> None:
        stop_group(self.proc)
        self._out.close()
        self._err.close()
        for folder in Path(tempfile.gettempdir()).glob(f"oaiserver-metrics-{self.proc.pid}-*"):
            shutil.rmtree(folder)  # plain gunicorn's metrics folder (oaiserver.metrics)


@contextmanager
def served(tmp: Path, url: str, how: str = "readme", *, workers: int = 2, health: int = 200) -> Iterator[Served]:
    """A server answering /healthz with `health` (503: its store is down) on all its workers."""
    server = Served(tmp, url, how, workers=workers)
    try:
        server.wait("/healthz", health)
        yield server
    finally:
        server.stop()


def metric(text: str, name: str) -> float | None:
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[-1])
    return None


# ---- one log line per request, however the app is served ------------------------------------


@pytest.mark.parametrize("how", ["readme", "plain", "serve", "dev"])
def test_every_request_is_logged_on_one_line(tmp_path: Path, how: str) -> None:
    """The README's promise holds under its own gunicorn command line, plain gunicorn,
    `oaiserver serve` and `--dev`: one line per OAI-PMH request, one per page."""
    oai_line = r"oai client=127\.0\.0\.1 verb=Identify args=- status=200 errors=- records=0 ms="
    http_line = r"http client=127\.0\.0\.1 GET / status=200"
    with served(tmp_path, f"sqlite:///{tmp_path / 'store.sqlite3'}", how) as server:
        assert server.get("/oai?verb=Identify").status_code == 200
        assert server.get("/").status_code == 200
        # A line is written once its answer is sent: polled until both are in the file. The log is
        # counted after the server has stopped, so a second line for either request would be there.
        until(lambda: re.search(oai_line, server.stderr()) and re.search(http_line, server.stderr()), "the log lines")
    log = server.stderr()
    assert len(re.findall(oai_line, log)) == 1
    assert len(re.findall(http_line, log)) == 1


def test_requests_are_logged_under_any_wsgi_server(tmp_path: Path) -> None:
    """A WSGI server that configures no logging at all (here, none: the app called directly)
    still gets the lines, on standard error."""
    config = write_config(tmp_path / "config.yaml", f"sqlite:///{tmp_path / 'store.sqlite3'}", 5000)
    code = "from oaiserver import create_app; create_app().test_client().get('/oai?verb=Identify')"
    env = {**os.environ, "OAI_CONFIG": str(config)}
    done = subprocess.run([str(BIN / "python"), "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert len(re.findall(r"INFO oaiserver\.web: oai client=127\.0\.0\.1 verb=Identify args=- ", done.stderr)) == 1


# ---- /metrics: the server's counts, whichever worker answers ----------------------------------


@pytest.mark.parametrize("how", ["readme", "plain", "serve"])
def test_metrics_count_every_worker_and_survive_worker_restarts(tmp_path: Path, how: str) -> None:
    """2 workers, 20 Identify (every worker replaced half-way): every scrape says 20."""
    with served(tmp_path, f"sqlite:///{tmp_path / 'store.sqlite3'}", how) as server:
        for _ in range(10):
            assert server.get("/oai?verb=Identify").status_code == 200
        for pid in server.children():  # each replaced in turn; their counts must stay counted
            os.kill(pid, signal.SIGTERM)
            deadline = time.monotonic() + 60
            while pid in server.children() or len(server.children()) < 2:
                assert time.monotonic() < deadline, server.stderr()[-3000:]
                time.sleep(0.1)
        server.wait("/healthz", 200)
        for _ in range(10):
            assert server.get("/oai?verb=Identify").status_code == 200
        scrapes = [metric(server.get("/metrics").text, 'oai_requests_total{verb="Identify"}') for _ in range(6)]
    assert scrapes == [20.0] * 6


# ---- a store that is down when the server starts ---------------------------------------------


def test_app_starts_without_its_store_and_serves_once_it_opens(tmp_path: Path) -> None:
    """create_app does not raise: 503 with Retry-After until the store opens, then 200s."""
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the store's folder should be")
    app = create_app(from_mapping({"storage": {"url": f"sqlite:///{blocker / 'oai.sqlite3'}"}}))
    live = app.extensions["oai_live"]
    now = [time.monotonic()]  # the app's clock, which tries the store again RETRY seconds after it failed
    live.clock = lambda: now[0]
    client = app.test_client()
    for path in ("/healthz", "/oai?verb=Identify", "/", "/oai/view?verb=Identify"):
        response = client.get(path)
        assert response.status_code == 503 and response.headers["Retry-After"] == "5", path
        assert b"Traceback" not in response.data
    metrics = client.get("/metrics")
    assert metrics.status_code == 200 and metric(metrics.text, "oai_store_up") == 0.0
    blocker.unlink()
    assert client.get("/healthz").status_code == 503, "tried again before RETRY seconds"
    now[0] += RETRY
    assert client.get("/healthz").status_code == 200
    validate(client.get("/oai?verb=Identify").data)
    assert client.get("/").status_code == 200
    assert metric(client.get("/metrics").text, "oai_store_up") == 1.0


def test_metrics_answer_when_the_store_fails_after_the_start(tmp_path: Path) -> None:
    """The store breaks while serving (here its file is overwritten): /metrics still answers,
    with the server's counts and oai_store_up 0, while the OAI-PMH interface answers 503."""
    path = tmp_path / "store.sqlite3"
    store = Store(f"sqlite:///{path}")
    client = create_app(from_mapping({"storage": {"url": f"sqlite:///{path}"}}), store=store).test_client()
    assert client.get("/oai?verb=Identify").status_code == 200
    store.engine.dispose()
    path.write_bytes(b"not a database" * 1000)
    for name in ("store.sqlite3-wal", "store.sqlite3-shm"):
        (tmp_path / name).unlink(missing_ok=True)
    assert client.get("/oai?verb=Identify").status_code == 503
    metrics = client.get("/metrics")
    assert metrics.status_code == 200 and metric(metrics.text, "oai_store_up") == 0.0
    assert (metric(metrics.text, 'oai_requests_total{verb="Identify"}') or 0) >= 1
    assert "harvest_runs_total" not in metrics.text


@pytest.mark.skipif(PG_URL is None, reason="needs PostgreSQL (OAI_TEST_PG_URL)")
@pytest.mark.parametrize("how", ["readme", "serve"])
def test_server_started_on_a_missing_database_serves_once_it_exists(tmp_path: Path, how: str) -> None:
    """The README's gunicorn or `oaiserver serve`, on a PostgreSQL database that does not exist
    yet: one log line a worker (and one from `serve` itself) naming storage.url and the cause,
    503 + Retry-After meanwhile, /metrics still 200; then the database is created and the same
    workers serve."""
    assert PG_URL is not None
    name = f"nosuchdb_{uuid.uuid4().hex[:10]}"
    admin = sa.create_engine(PG_URL, isolation_level="AUTOCOMMIT")
    url = sa.make_url(PG_URL).set(drivername="postgresql", database=name, password="s3cret")
    try:
        with served(tmp_path, url.render_as_string(hide_password=False), how, health=503) as server:
            for path in ("/healthz", "/oai?verb=Identify", "/"):
                response = server.get(path)
                assert response.status_code == 503 and response.headers["Retry-After"] == "7", path
            metrics = server.get("/metrics")
            assert metrics.status_code == 200 and metric(metrics.text, "oai_store_up") == 0.0
            workers = server.children()
            deadline = time.monotonic() + 60
            while server.stderr().count("storage.url: cannot open") < 2:  # both workers have booted
                assert time.monotonic() < deadline, server.stderr()
                time.sleep(0.1)
            with admin.connect() as conn:
                conn.exec_driver_sql(f"CREATE DATABASE {name}")
            server.wait("/healthz", 200)
            validate(server.wait("/oai?verb=Identify", 200).content)
            assert server.get("/").status_code == 200
            assert metric(server.get("/metrics").text, "oai_store_up") == 1.0
            assert server.children() == workers, "served without a restart"
        log = server.stderr()
        lines = [line for line in log.splitlines() if "storage.url: cannot open" in line]
        assert len(lines) == 2 + (how == "serve"), log  # one a worker, and serve's own
        assert all(name in line and "does not exist" in line and "s3cret" not in line for line in lines), lines
        assert "Traceback" not in log
    finally:
        with admin.connect() as conn:
            conn.exec_driver_sql(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        admin.dispose()


# ---- partners added and removed while the server runs -----------------------------------------


def test_partners_added_and_removed_show_without_a_restart(tmp_path: Path) -> None:
    """Editing `partners:` in config.yaml changes ListSets and the home page of every worker."""
    with served(tmp_path, f"sqlite:///{tmp_path / 'store.sqlite3'}") as server:

        def seen() -> tuple[set[str], bool]:
            sets = set(PARTNER_SETS.findall(server.get("/oai?verb=ListSets").text))
            return sets, "alpha-repo" in server.get("/").text

        def settle(expected: Callable[[tuple[set[str], bool]], bool]) -> None:
            for _ in range(10):  # every worker, whichever answers
                assert expected(seen()), seen()

        settle(lambda s: s == (set(), False))
        alpha = {"name": "alpha-repo", "base_url": "http://127.0.0.1:9/oai"}
        write_config(server.config, f"sqlite:///{tmp_path / 'store.sqlite3'}", server.port, [alpha])
        settle(lambda s: s == ({"partners", "partners:alpha-repo"}, True))
        write_config(server.config, f"sqlite:///{tmp_path / 'store.sqlite3'}", server.port)
        settle(lambda s: s == (set(), False))


def test_a_configuration_that_cannot_be_read_keeps_the_last_partners(tmp_path: Path) -> None:
    """A half-written or invalid config.yaml changes nothing (a warning says why); the next good
    one is read."""
    url = f"sqlite:///{tmp_path / 'store.sqlite3'}"
    path = write_config(tmp_path / "config.yaml", url, 5000, [{"name": "alpha", "base_url": "http://127.0.0.1:9/oai"}])
    client = create_app(load(path)).test_client()

    def partner_sets() -> set[str]:
        return set(PARTNER_SETS.findall(client.get("/oai?verb=ListSets").get_data(as_text=True)))

    assert partner_sets() == {"partners", "partners:alpha"}
    path.write_text("partners: [")
    assert partner_sets() == {"partners", "partners:alpha"}
    write_config(path, url, 5000, [{"name": "beta", "base_url": "http://127.0.0.1:9/oai"}])
    assert partner_sets() == {"partners", "partners:beta"}
    assert "beta" in client.get("/").get_data(as_text=True)
