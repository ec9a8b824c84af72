"""`harvester run | status | history`: exit codes 0 success, 2 partial, 1 failure, and output
a person can act on."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner, Result
from conftest import BASE_CONFIG
from harvestkit import FakePartner, PagedPartner, list_records, record, xml

from harvester.cli import main
from oaiserver.store import Store, acquire_lease

FAST = ["--timeout", "2", "--retries", "0", "--backoff", "0.01"]
BROKEN = "<record><header><identifier>oai:bad:1</identifier><datestamp>never</datestamp></header></record>"


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


def harvester(config_file: Path, *args: str) -> Result:
    return CliRunner().invoke(main, ["-c", str(config_file), *args], catch_exceptions=False)


def test_help_lists_the_commands() -> None:
    result = CliRunner().invoke(main, ["--help"])
    assert result.exit_code == 0
    for command in ("run", "status", "history", "schedule"):
        assert command in result.output


@pytest.mark.parametrize(("names", "code"), [(["good"], 0), (["broken"], 2), (["down"], 1), ([], 1)])
def test_run_exit_codes(config_file: Path, names: list[str], code: int) -> None:
    result = harvester(config_file, "run", *FAST, *names)
    assert result.exit_code == code, result.output


def test_run_reports_each_partner(config_file: Path) -> None:
    result = harvester(config_file, "run", *FAST, "good", "broken")
    assert result.exit_code == 2
    assert "good: success: 2 page(s), 3 record(s), 0 deleted; 3 added" in result.output
    assert "broken: partial (1 record(s) could not be harvested" in result.output
    assert "not harvested: oai:bad:1: the datestamp 'never' is not a date" in result.output


def test_an_unknown_partner_is_named(config_file: Path) -> None:
    result = harvester(config_file, "run", "nope")
    assert result.exit_code == 1 and "unknown partner(s): nope (configured: good, broken, down)" in result.output


def test_a_busy_partner_fails_the_run(config_file: Path, store_url: str) -> None:
    store = Store(store_url)
    try:
        acquire_lease(store, "good", "elsewhere:42", 3600, int(time.time()))
    finally:
        store.close()
    result = harvester(config_file, "run", *FAST, "good")
    assert result.exit_code == 1 and "another harvester (elsewhere:42) holds the lease" in result.output


def test_status_and_history(config_file: Path) -> None:
    harvester(config_file, "run", *FAST)
    status = harvester(config_file, "status")
    assert status.exit_code == 0
    assert "good  http" in status.output and "next from: 2024-05-01T12:00:00Z" in status.output
    assert "last run: #" in status.output and "success" in status.output
    assert "failed at" in status.output and "HTTP 503" in status.output
    history = harvester(config_file, "history", "broken")
    assert history.exit_code == 0
    assert "partial" in history.output and "1 failed" in history.output
    assert harvester(config_file, "history", "nobody").exit_code == 1


def test_clock_skew_sets_how_far_ahead_a_partners_response_date_may_be(tmp_path: Path, store_url: str) -> None:
    ahead = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + 600))  # ten minutes ahead of ours
    with FakePartner(PagedPartner([[record("oai:fast:1")]], response_date=ahead)) as fake:
        data: dict[str, Any] = {**BASE_CONFIG, "storage": {"url": store_url}}
        data["partners"] = [{"name": "fast", "base_url": fake.url}]
        path = tmp_path / "config.yaml"
        path.write_text(yaml.safe_dump(data))
        default = harvester(path, "run", *FAST)
        assert default.exit_code == 0 and "the partner's clock is ahead" in default.output, default.output
        assert "next from" not in default.output
        allowed = harvester(path, "run", *FAST, "--clock-skew", "900")
        assert allowed.exit_code == 0 and f"next from {ahead}" in allowed.output, allowed.output
    assert harvester(path, "run", "--clock-skew", "-1").exit_code == 2
