"""The store fails under a running harvest, or the harvest is killed: the run ends as failed
with one line saying why (never a traceback), and once the store is back `harvester status`
and `history` show it failed, with the pages it committed.

The outages are real and touch nobody else: on SQLite the harvester process may no longer
write any file (its RLIMIT_FSIZE set to 0 from outside: the disk is "full" for it alone); on
PostgreSQL it reaches the server through a relay that drops its connections and refuses new
ones. Each step waits for a line the harvester logs, never for a time."""

from __future__ import annotations

import re
import resource
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
import yaml
from click.testing import CliRunner, Result
from conftest import BASE_CONFIG
from harvestkit import FAST_HARVEST, FakePartner, Lines, PagedPartner, Relay, list_records, record, xml
from werkzeug.wrappers import Response

from harvester import harvest
from harvester.cli import main
from oaiserver.config import Partner
from oaiserver.store import Store, harvest_history, harvest_state_of

ROOT = Path(__file__).parent.parent
PER_PAGE = 20


class Gated:
    """A partner whose list never ends; pages from the third on are answered once `go` is set."""

    def __init__(self) -> None:
        self.go = threading.Event()

    def __call__(self, params: dict[str, str], n: int) -> Response:
        if n >= 2:
            self.go.wait(120)
        return xml(list_records([record(f"oai:p:{n}-{i}") for i in range(PER_PAGE)], f"t{n + 1}"))


@contextmanager
def harvester_url(store_url: str) -> Iterator[tuple[str, Relay | None]]:
    """The URL the harvester process uses: the store's own on SQLite, through a Relay on
    PostgreSQL."""
    if store_url.startswith("sqlite"):
        yield store_url, None
        return
    url = sa.make_url(store_url)
    relay = Relay((url.host or "127.0.0.1", url.port or 5432))
    try:
        yield url.set(host="127.0.0.1", port=relay.port).render_as_string(hide_password=False), relay
    finally:
        relay.close()


def write_config(path: Path, url: str, base_url: str) -> Path:
    path.write_text(
        yaml.safe_dump({**BASE_CONFIG, "storage": {"url": url}, "partners": [{"name": "p", "base_url": base_url}]})
    )
    return path


def cli(config: Path, *args: str) -> Result:
    return CliRunner().invoke(main, ["-c", str(config), *args], catch_exceptions=False)


def start(config: Path) -> subprocess.Popen[bytes]:
    command = [sys.executable, "-m", "harvester.cli", "-c", str(config), "run", "--timeout", "60", "--retries", "0"]
    return subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def assert_failed_with_two_pages(config: Path, store_url: str) -> Any:
    """`status` and `history` (the store back) show run #1 failed, not running, with the two
    pages it committed; the store holds those pages, and the checkpoint resumes after them."""
    status = cli(config, "status")
    assert status.exit_code == 0 and "last run: #1 failed" in status.output, status.output
    history = cli(config, "history", "p")
    assert history.exit_code == 0, history.output
    assert "#1 " in history.output and " failed " in history.output and "running" not in history.output
    assert f"2 page(s), {2 * PER_PAGE:,} record(s)" in history.output, history.output
    store = Store(store_url)
    try:
        [run] = harvest_history(store, "p")
        assert run.outcome == "failed" and run.counts["pages"] == 2
        assert store.identifiers(source="p") == {f"oai:p:{n}-{i}" for n in range(2) for i in range(PER_PAGE)}
        checkpoint = harvest_state_of(store, "p").checkpoint
        assert checkpoint is not None and checkpoint["token"] == "t2"
        return run
    finally:
        store.close()


def test_a_killed_run_is_shown_failed_with_the_pages_it_committed(store_url: str, tmp_path: Path) -> None:
    Store(store_url).close()
    gated = Gated()
    with FakePartner(gated) as fake:
        config = write_config(tmp_path / "config.yaml", store_url, fake.url)
        process = start(config)
        err = Lines(process.stderr)
        try:
            err.wait_for(r"page partner=p page=2 ")  # logged once page 2 is committed
            process.send_signal(signal.SIGKILL)
            process.wait(60)
        finally:
            gated.go.set()
            if process.poll() is None:
                process.kill()
                process.wait()
            assert process.stdout is not None
            process.stdout.close()
        err.rest()
    run = assert_failed_with_two_pages(config, store_url)
    assert "interrupted" in (run.reason or "")


def test_a_store_that_fails_mid_run_ends_the_run_with_one_line(store_url: str, tmp_path: Path) -> None:
    Store(store_url).close()
    gated = Gated()
    with FakePartner(gated) as fake, harvester_url(store_url) as (url, relay):
        config = write_config(tmp_path / "config.yaml", url, fake.url)
        process = start(config)
        err, out = Lines(process.stderr), Lines(process.stdout)
        try:
            err.wait_for(r"page partner=p page=2 ")
            if relay is not None:
                relay.down()
            else:
                hard = resource.getrlimit(resource.RLIMIT_FSIZE)[1]
                resource.prlimit(process.pid, resource.RLIMIT_FSIZE, (0, hard))
            gated.go.set()  # page 3 comes, and cannot be written
            process.wait(120)
        finally:
            gated.go.set()
            if process.poll() is None:
                process.kill()
                process.wait()
        text = err.rest()
        if relay is not None:
            relay.up()  # the store is back
        assert process.returncode == 1, text
        assert "Traceback" not in text + out.rest(), text
        last = text.splitlines()[-1]
        cause = r"disk I/O error|database or disk is full" if relay is None else r"connection|server closed"
        assert re.fullmatch(rf"p: the record store failed: \w+: .*({cause}).*", last), text
        assert sum("the record store failed" in line for line in text.splitlines()) == 1, text
        run = assert_failed_with_two_pages(config, store_url)
    assert "interrupted" in (run.reason or "") or "the record store failed" in (run.reason or "")


def test_a_store_error_on_a_page_fails_the_run_with_its_reason(store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    """The store fails on a page and is back at once: the run is marked failed on the way out,
    with the cause on one line, and the pages before stay committed."""
    real, calls = harvest.write_harvested_in, []

    def fails_on_the_second_page(*args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        if len(calls) == 2:
            raise sa.exc.OperationalError("INSERT INTO records …", {}, Exception("disk I/O error\nmore detail"))
        return real(*args, **kwargs)

    monkeypatch.setattr(harvest, "write_harvested_in", fails_on_the_second_page)
    with FakePartner(PagedPartner([[record("oai:p:1")], [record("oai:p:2")], [record("oai:p:3")]])) as fake:
        report = harvest.run(store, Partner("p", fake.url), settings=FAST_HARVEST)
    assert report.outcome == "failed"
    assert (
        report.reason
        == "p: the record store failed: Exception: disk I/O error; the next run resumes from the checkpoint"
    )
    [run] = harvest_history(store, "p")
    assert run.outcome == "failed" and run.reason == report.reason and run.counts["pages"] == 1
    assert store.identifiers(source="p") == {"oai:p:1"}


@pytest.mark.parametrize("command", [["status"], ["history", "p"], ["run"]])
def test_a_store_that_cannot_be_reached_is_said_on_one_line(tmp_path: Path, command: list[str]) -> None:
    with Relay(("127.0.0.1", 5432)) as relay:
        relay.down()  # nothing answers there: connections are dropped as soon as they are made
        config = write_config(
            tmp_path / "config.yaml", f"postgresql://postgres@127.0.0.1:{relay.port}/test", "http://127.0.0.1:9/oai"
        )
        result = CliRunner().invoke(main, ["-c", str(config), *command])
    assert result.exit_code == 1 and not isinstance(result.exception, Exception), result.exc_info
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: configuration: storage.url: cannot open "), result.output
    assert "connection" in lines[0] and "Traceback" not in result.output
