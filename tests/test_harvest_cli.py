"""`harvester run | status | history`: exit codes 0 success, 2 partial, 1 failure, and output
a person can act on."""

from __future__ import annotations

import os
import pty
import re
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner
from conftest import BASE_CONFIG
from harvestkit import FakePartner, PagedPartner, harvester_cli, list_records, record, xml
from werkzeug.wrappers import Response

from harvester.cli import main
from oaiserver.store import Store, acquire_lease

FAST = ["--timeout", "2", "--retries", "0", "--backoff", "0.01"]
# A record without an identifier: it cannot be quarantined (asked for again), so its run is partial.
BROKEN = "<record><header><datestamp>2024-01-01</datestamp></header></record>"


@pytest.fixture
def partners() -> Iterator[dict[str, FakePartner]]:
    fakes = {
        "good": FakePartner(PagedPartner([[record("oai:good:1"), record("oai:good:2")], [record("oai:good:3")]])),
        "broken": FakePartner(lambda params, n: xml(list_records([record("oai:bad:2"), BROKEN]))),
        "down": FakePartner(lambda params, n: xml("maintenance", 503)),
    }
    for fake in fakes.values():
        fake.__enter__()
    yield fakes
    for fake in fakes.values():
        fake.__exit__()


@pytest.fixture
def config_file(tmp_path: Path, store_url: str, partners: dict[str, FakePartner]) -> Path:
    data: dict[str, Any] = dict(BASE_CONFIG)
    data["storage"] = {"url": store_url}
    data["partners"] = [{"name": name, "base_url": fake.url} for name, fake in partners.items()]
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_help_lists_the_commands() -> None:
    result = CliRunner().invoke(main, ["--help"])
    assert result.exit_code == 0
    for command in ("run", "status", "history", "schedule"):
        assert command in result.output


@pytest.mark.parametrize(("names", "code"), [(["good"], 0), (["broken"], 2), (["down"], 1), ([], 1)])
def test_run_exit_codes(config_file: Path, names: list[str], code: int) -> None:
    result = harvester_cli(config_file, "run", *FAST, *names)
    assert result.exit_code == code, result.output


def test_run_reports_each_partner(config_file: Path) -> None:
    result = harvester_cli(config_file, "run", *FAST, "good", "broken")
    assert result.exit_code == 2
    assert sorted(result.stdout.splitlines()) == [  # harvested at once (harvester.jobs): as each finishes
        "broken: partial: 1 page(s), 2 record(s): 1 added, 1 failed; short by 1 (2 announced, 2 received, 1 stored)",
        "good: success: 2 page(s), 3 record(s): 3 added; completeness unknown (no completeListSize announced; "
        "3 stored); next from 2024-05-01T12:00:00Z",
    ]
    assert result.stderr.splitlines() == ["  not harvested: record 2 of the page: the header has no identifier"]


def test_an_unknown_partner_is_named(config_file: Path) -> None:
    result = harvester_cli(config_file, "run", "nope")
    assert result.exit_code == 1 and "unknown partner(s): nope (configured: good, broken, down)" in result.output


def test_a_busy_partner_fails_the_run(config_file: Path, store_url: str) -> None:
    store = Store(store_url)
    try:
        acquire_lease(store, "good", "elsewhere:42", 3600, int(time.time()))
    finally:
        store.close()
    result = harvester_cli(config_file, "run", *FAST, "good")
    assert result.exit_code == 1 and "another harvester (elsewhere:42) holds the lease" in result.output


def test_status_and_history(config_file: Path) -> None:
    harvester_cli(config_file, "run", *FAST)
    status = harvester_cli(config_file, "status")
    assert status.exit_code == 0
    assert "good  http" in status.output and "next from: 2024-05-01T12:00:00Z" in status.output
    assert "last run: #" in status.output and "success" in status.output
    assert "failed at" in status.output and "HTTP 503" in status.output
    history = harvester_cli(config_file, "history", "broken")
    assert history.exit_code == 0
    assert "partial" in history.output and "1 failed" in history.output
    assert harvester_cli(config_file, "history", "nobody").exit_code == 1


def test_clock_skew_sets_how_far_ahead_a_partners_response_date_may_be(tmp_path: Path, store_url: str) -> None:
    ahead = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + 600))  # ten minutes ahead of ours
    with FakePartner(PagedPartner([[record("oai:fast:1")]], response_date=ahead)) as fake:
        data: dict[str, Any] = {**BASE_CONFIG, "storage": {"url": store_url}}
        data["partners"] = [{"name": "fast", "base_url": fake.url}]
        path = tmp_path / "config.yaml"
        path.write_text(yaml.safe_dump(data))
        default = harvester_cli(path, "run", *FAST)
        assert default.exit_code == 0 and "the partner's clock is ahead" in default.output, default.output
        assert "next from" not in default.output
        allowed = harvester_cli(path, "run", *FAST, "--clock-skew", "900")
        assert allowed.exit_code == 0 and f"next from {ahead}" in allowed.output, allowed.output
    assert harvester_cli(path, "run", "--clock-skew", "-1").exit_code == 2


# ---- what an operator sees of `harvester run` ---------------------------------------------------

DELETED = record("oai:good:3", deleted=True)
URLLIB3_WORDS = ("Max retries", "NewConnectionError", "HTTPConnectionPool", "_WatchedHTTP", "urllib3")


def closed_port() -> int:
    """A port on 127.0.0.1 that nothing listens on: connecting is refused at once."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def operator_partners(tmp_path: Path, store_url: str) -> Iterator[tuple[Path, dict[str, str]]]:
    """A partner that works (one record deleted), one that answers JSON, one that is not there."""
    good = FakePartner(PagedPartner([[record("oai:good:1"), record("oai:good:2")], [DELETED]]))
    json_ = FakePartner(lambda params, n: Response('{"error": "no such page"}', mimetype="application/json"))
    with good, json_:
        urls = {"good": good.url, "json": json_.url, "gone": f"http://127.0.0.1:{closed_port()}/oai"}
        data: dict[str, Any] = {**BASE_CONFIG, "storage": {"url": store_url}}
        data["partners"] = [{"name": name, "base_url": url} for name, url in urls.items()]
        path = tmp_path / "config.yaml"
        path.write_text(yaml.safe_dump(data))
        yield path, urls


def expected_outcomes(urls: dict[str, str]) -> list[str]:
    return [
        "good: success: 2 page(s), 3 record(s) (1 deleted): 3 added; completeness unknown (no completeListSize "
        "announced; 3 stored); next from 2024-05-01T12:00:00Z",
        f"json: failed: {urls['json']} (ListRecords, HTTP 200) sent JSON, not OAI-PMH XML: is the base_url right?",
        f"gone: failed: {urls['gone']}: cannot connect (connection refused); the next run tries again",
    ]


def test_run_prints_each_outcome_once_on_one_line(tmp_path: Path, store_url: str) -> None:
    """The real command, as cron runs it (stdout and stderr to one file, default retries): each
    outcome once, counts that are zero left out, no urllib3 text, no lenient_xml hint for JSON."""
    with operator_partners(tmp_path, store_url) as (path, urls):
        done = subprocess.run(
            [sys.executable, "-m", "harvester.cli", "-c", str(path), "run"],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            timeout=300,
            check=False,
        )
    output = done.stdout.decode()
    assert done.returncode == 1, output
    for line in expected_outcomes(urls):
        assert output.count(line.split(": ", 2)[2]) == 1, output  # not said again in a log line
        assert output.splitlines().count(line) == 1, output
    assert "0 page(s)" not in output and " 0 " not in output, output
    assert not [word for word in URLLIB3_WORDS if word in output], output
    assert "lenient_xml" not in output, output


def test_an_unreachable_partner_is_tried_once_per_run(tmp_path: Path, store_url: str) -> None:
    """Connection refused: one attempt with the default retries (a 503 or a read timeout is
    still retried: test_harvest_client), and the next run tries again."""
    port = closed_port()
    attempts: list[object] = []
    _CONNECTS[("127.0.0.1", port)] = attempts
    data: dict[str, Any] = {**BASE_CONFIG, "storage": {"url": store_url}}
    data["partners"] = [{"name": "gone", "base_url": f"http://127.0.0.1:{port}/oai"}]
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(data))
    try:
        first = harvester_cli(path, "run", "gone")
        assert first.exit_code == 1 and len(attempts) == 1, (first.output, attempts)
        second = harvester_cli(path, "run", "gone")
        assert second.exit_code == 1 and len(attempts) == 2, (second.output, attempts)
    finally:
        del _CONNECTS[("127.0.0.1", port)]
    assert (
        second.stdout == f"gone: failed: http://127.0.0.1:{port}/oai: cannot connect (connection refused); "
        "the next run tries again\n"
    )


# Connection attempts, counted where Python makes them (the "socket.connect" audit event): per
# address watched, the list of attempts. An audit hook cannot be removed; it does nothing for
# addresses no test watches.
_CONNECTS: dict[tuple[str, int], list[object]] = {}


def _count_connects(event: str, args: tuple[Any, ...]) -> None:
    if event == "socket.connect" and _CONNECTS:
        address = args[1]
        if isinstance(address, tuple) and tuple(address[:2]) in _CONNECTS:
            _CONNECTS[tuple(address[:2])].append(address)


sys.addaudithook(_count_connects)

_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def test_outcomes_are_printed_above_the_progress_bar(tmp_path: Path, store_url: str) -> None:
    """On a terminal (a pseudo-terminal here, stdout and stderr on it): each outcome is a line of
    its own, never written into the live progress bar's line."""
    with operator_partners(tmp_path, store_url) as (path, urls):
        leader, follower = pty.openpty()
        env = {**os.environ, "COLUMNS": "300", "LINES": "50", "TERM": "xterm"}
        process = subprocess.Popen(
            [sys.executable, "-m", "harvester.cli", "-c", str(path), "run", "--retries", "0"],
            stdin=subprocess.DEVNULL,
            stdout=follower,
            stderr=follower,
            env=env,
        )
        os.close(follower)
        chunks = []
        while True:
            try:
                chunk = os.read(leader, 65536)
            except OSError:  # EIO: the other end is closed
                break
            if not chunk:
                break
            chunks.append(chunk)
        process.wait(timeout=120)
        os.close(leader)
    screen = _ANSI.sub("", b"".join(chunks).decode("utf-8", "replace"))
    lines = [line.strip() for line in re.split(r"[\r\n]+", screen)]
    for line in expected_outcomes(urls):
        assert lines.count(line) == 1, screen
        assert screen.count(line.split(": ", 2)[2]) == 1, screen
