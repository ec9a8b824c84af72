"""`harvester status [--json]` and `harvester history PARTNER --json`: per partner, the records
it holds, the next scheduled run, the last error, for people and for scripts, read from a store
that real harvests filled."""

from __future__ import annotations

import json
import re
import socket
import time
from calendar import timegm
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import BASE_CONFIG
from harvestkit import FakePartner, PagedPartner, harvester_cli, list_records, record, xml

from oaiserver.store import Store, acquire_lease, finish_run, start_run

FAST = ["--timeout", "2", "--retries", "0", "--backoff", "0.01"]
ISO = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")
BROKEN = "<record><header><identifier>oai:bad:1</identifier><datestamp>never</datestamp></header></record>"

PARTNER_KEYS = {
    "name",
    "base_url",
    "metadata_prefix",
    "formats",
    "sets",
    "records",
    "next_from",
    "learned",
    "checkpoint",
    "schedule",
    "next_run",
    "last_run",
    "last_error",
    "lease",
    "last_complete",
    "shadowed",
    "quarantine",
    "sweep",
}
RUN_KEYS = {
    "id",
    "partner",
    "format",
    "outcome",
    "reason",
    "started",
    "finished",
    "seconds",
    "from",
    "resumed",
    "counts",
    "failures",
    "completeness",
    "sweep",
}
COUNT_KEYS = {
    "pages",
    "received",
    "added",
    "changed",
    "unchanged",
    "deleted",
    "failed",
    "quarantined",
    "recovered",
    "repaired",
    "without_dc",
    "restarts",
    "recoded",
    "undoubled",
    "doubled",
    "swept",
    "shadowed",
}


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def config_file(tmp_path: Path, store_url: str) -> Iterator[Path]:
    """good: harvested whole (one record deleted), every 6 hours; broken: one record it cannot
    read (quarantined), at 03:00 UTC; flaky: 503 on its second page, then fine; gone: nothing listens."""
    flaky_pages = PagedPartner([[record("oai:flaky:1"), record("oai:flaky:2")], [record("oai:flaky:3")]])
    fakes = {
        "good": FakePartner(
            PagedPartner([[record("oai:good:1"), record("oai:good:2")], [record("oai:good:3", deleted=True)]])
        ),
        "broken": FakePartner(lambda params, n: xml(list_records([record("oai:bad:2"), BROKEN]))),
        "flaky": FakePartner(lambda params, n: xml("busy", 503) if n == 1 else flaky_pages(params, n)),
    }
    for fake in fakes.values():
        fake.__enter__()
    data: dict[str, Any] = {**BASE_CONFIG, "storage": {"url": store_url}}
    data["partners"] = [
        {"name": "good", "base_url": fakes["good"].url, "schedule": {"interval": {"hours": 6}}},
        {"name": "broken", "base_url": fakes["broken"].url, "schedule": {"cron": "0 3 * * *"}},
        {"name": "flaky", "base_url": fakes["flaky"].url},
        {"name": "gone", "base_url": f"http://127.0.0.1:{closed_port()}/oai"},
    ]
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(data))
    yield path
    for fake in fakes.values():
        fake.__exit__()


def as_json(config_file: Path, *args: str) -> Any:
    result = harvester_cli(config_file, *args, "--json")
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def epoch(iso: str) -> int:
    return timegm(time.strptime(iso, "%Y-%m-%dT%H:%M:%SZ"))


def next_three_am(now: int) -> int:
    """The first 03:00 UTC at or after `now`, counted without APScheduler."""
    today = now - now % 86400 + 3 * 3600
    return today if today >= now else today + 86400


def check_run(run: dict[str, Any]) -> None:
    assert set(run) == RUN_KEYS and set(run["counts"]) == COUNT_KEYS
    assert ISO.match(run["started"]) and (run["finished"] is None or ISO.match(run["finished"]))
    if run["finished"] is not None:
        assert run["seconds"] == epoch(run["finished"]) - epoch(run["started"])


def test_status_json_after_real_harvests(config_file: Path) -> None:
    assert harvester_cli(config_file, "run", *FAST).exit_code == 1
    flaky_first = as_json(config_file, "status")["partners"][2]
    assert flaky_first["checkpoint"] == {"from": None, "pages": 1, "records": 2}
    assert harvester_cli(config_file, "run", *FAST, "flaky").exit_code == 0

    status = as_json(config_file, "status")
    assert set(status) == {"now", "partners"} and ISO.match(status["now"])
    now = epoch(status["now"])
    good, broken, flaky, gone = status["partners"]
    assert [p["name"] for p in status["partners"]] == ["good", "broken", "flaky", "gone"]
    for partner in status["partners"]:
        assert set(partner) == PARTNER_KEYS, partner
        check_run(partner["last_run"])

    assert good["records"] == {"live": 2, "deleted": 1}
    assert good["next_from"] == "2024-05-01T12:00:00Z" and good["checkpoint"] is None and good["lease"] is None
    assert good["schedule"] == {"interval": {"hours": 6}}
    assert good["next_run"] == time.strftime(
        "%Y-%m-%dT%H:%M:%SZ", time.gmtime(epoch(good["last_run"]["started"]) + 6 * 3600)
    )
    assert good["last_run"]["outcome"] == "success" and good["last_error"] is None
    assert good["last_run"]["counts"] == {
        **dict.fromkeys(COUNT_KEYS, 0),
        "pages": 2,
        "received": 3,
        "added": 3,
        "deleted": 1,
    }

    assert broken["records"] == {"live": 1, "deleted": 0}
    assert broken["schedule"] == {"cron": "0 3 * * *"} and epoch(broken["next_run"]) == next_three_am(now)
    # Its broken record is quarantined: the run succeeds, and the quarantine names the record.
    assert broken["last_error"] is None and broken["last_run"]["outcome"] == "success"
    assert broken["last_run"]["failures"] == [
        {"identifier": "oai:bad:1", "reason": "the datestamp 'never' is not a date"}
    ]
    assert broken["quarantine"]["count"] == 1
    [held] = broken["quarantine"]["records"]
    assert (held["identifier"], held["reason"], held["tries"]) == (
        "oai:bad:1",
        "the datestamp 'never' is not a date",
        1,
    )
    assert ISO.match(held["first_seen"]) and held["last_tried"] == held["first_seen"]
    assert broken["last_run"]["completeness"]["verdict"] == "short" and broken["last_complete"] is None
    assert good["last_run"]["completeness"]["verdict"] == "unknown"  # two pages, no completeListSize

    # The last error stays once a later run succeeds: the run that resumed at the checkpoint.
    assert flaky["records"] == {"live": 3, "deleted": 0} and flaky["checkpoint"] is None
    assert flaky["last_run"]["outcome"] == "success" and flaky["last_run"]["resumed"] is True
    assert flaky["last_error"]["outcome"] == "failed" and flaky["last_error"]["id"] < flaky["last_run"]["id"]
    assert "HTTP 503" in flaky["last_error"]["reason"]
    assert flaky["schedule"] is None and flaky["next_run"] is None

    assert gone["records"] == {"live": 0, "deleted": 0} and gone["next_from"] is None
    assert gone["last_error"] == gone["last_run"] and gone["last_run"]["counts"] == dict.fromkeys(COUNT_KEYS, 0)
    assert gone["last_run"]["completeness"] is None  # a failed run is not judged
    assert gone["last_error"]["reason"].endswith(": cannot connect (connection refused); the next run tries again")

    for name, entry in zip(("good", "broken", "flaky", "gone"), status["partners"], strict=True):
        history = as_json(config_file, "history", name)
        assert set(history) == {"partner", "runs", "quarantine"} and history["partner"] == name
        assert history["quarantine"] == entry["quarantine"]
        assert history["runs"][0] == entry["last_run"]
        for run in history["runs"]:
            check_run(run)
    assert len(as_json(config_file, "history", "flaky")["runs"]) == 2


def test_status_text_says_the_same(config_file: Path) -> None:
    harvester_cli(config_file, "run", *FAST)
    status = as_json(config_file, "status")
    good, broken, _, gone = status["partners"]
    text = harvester_cli(config_file, "status")
    assert text.exit_code == 0
    lines = text.stdout.splitlines()
    assert "  records: 2 live, 1 deleted" in lines
    assert f"  next run: {good['next_run']} (every 6 hours)" in lines
    assert f"  next run: {broken['next_run']} (cron '0 3 * * *' in UTC)" in lines
    assert "  next run: not scheduled (harvested by `harvester run` only)" in lines
    assert "  last error: none" in lines
    error = gone["last_error"]
    assert f"  last error: #{error['id']} failed at {error['finished']}: {error['reason']}" in lines


def test_a_lease_and_an_overdue_schedule_are_shown(config_file: Path, store_url: str) -> None:
    store = Store(store_url)
    try:
        acquire_lease(store, "good", "elsewhere:42", 3600, int(time.time()))
    finally:
        store.close()
    status = as_json(config_file, "status")
    entry = status["partners"][0]
    assert entry["lease"]["holder"] == "elsewhere:42" and entry["lease"]["holder_gone"] is False
    assert ISO.match(entry["lease"]["expires"])
    assert entry["last_run"] is None and entry["last_error"] is None
    assert epoch(entry["next_run"]) == epoch(status["now"]) + 6 * 3600  # never harvested: one interval from now
    assert "  being harvested by elsewhere:42 (lease until " in harvester_cli(config_file, "status").stdout

    # A run that started 7 hours ago, every 6 hours: no scheduler harvested it for too long.
    store = Store(store_url)
    try:
        started = int(time.time()) - 7 * 3600
        run_id = start_run(store, "broken", "elsewhere:43", started=started, from_date=None, resumed=False)
        finish_run(store, run_id, "broken", finished=started + 60, outcome="success", reason=None, counts={})
        run_id = start_run(store, "good", "elsewhere:42", started=started, from_date=None, resumed=False)
        finish_run(store, run_id, "good", finished=started + 60, outcome="success", reason=None, counts={})
    finally:
        store.close()
    due = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started + 6 * 3600))
    assert as_json(config_file, "status")["partners"][0]["next_run"] == due
    lines = harvester_cli(config_file, "status").stdout.splitlines()
    assert f"  next run: due since {due} (every 6 hours): is `harvester schedule` running?" in lines


def test_history_json_of_a_partner_never_harvested_and_of_an_unknown_one(config_file: Path, store_url: str) -> None:
    Store(store_url).close()  # a store that exists (on a missing one, reading commands say so)
    assert as_json(config_file, "history", "good") == {
        "partner": "good",
        "runs": [],
        "quarantine": {"count": 0, "records": []},
    }
    unknown = harvester_cli(config_file, "history", "nobody", "--json")
    assert unknown.exit_code == 1 and "unknown partner 'nobody'" in unknown.output
