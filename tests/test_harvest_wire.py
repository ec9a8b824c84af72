"""The harvester applies the configuration's connection settings, against the partner fleet
(tests/fleet.py): the `harvester:` section's User-Agent, partners at once (`jobs`) and requests
at once per host (`per_host`, and a host's Retry-After for every partner on it), and each
partner's `timeout`, `retries`, `headers`, basic `auth` and `request_interval`."""

from __future__ import annotations

import time
from itertools import pairwise
from pathlib import Path
from typing import Any

import pytest
from click.testing import Result
from conftest import BASE_CONFIG, make_config
from fleet import Fleet, Logged, Spec, crowd, with_specs
from harvestkit import FAST_HARVEST, harvester_cli, partners_config

from harvester.schedule import HarvestScheduler
from oaiserver.config import from_mapping
from oaiserver.store import Store, harvest_history

FAST = ["--timeout", "5", "--retries", "0", "--backoff", "0.01"]
AGENT = "Aggregator/2 (+mailto:ops@aggregator.example.org)"


def outcomes(result: Result) -> dict[str, str]:
    """Each partner's outcome line, by partner."""
    return {line.split(":", 1)[0]: line for line in result.stdout.splitlines() + result.stderr.splitlines()}


def histories(store: Store, fleet: Fleet) -> list[bool]:
    """For each partner of the fleet, whether it has no finished run yet."""
    return [not [r for r in harvest_history(store, name, limit=1) if r.finished is not None] for name in fleet.specs]


def most_at_once(entries: list[Logged], took: float) -> int:
    """The most partners with a request in progress at once, from the fleet's log (an entry is
    logged when its answer is made, `took` seconds after it arrived)."""
    spans = [(e.at - took, e.at, e.partner) for e in entries]
    return max(len({p for start, end, p in spans if start < (s + e) / 2 < end}) for s, e, _ in spans)


# ---- one partner's connection settings -----------------------------------------------------------


@with_specs(Spec("a", records=12, page_size=5), Spec("b", records=3))
def test_every_request_has_the_configured_user_agent_and_the_partners_headers(
    fleet: Fleet, tmp_path: Path, store_url: str
) -> None:
    config = partners_config(tmp_path, store_url, fleet, {"a": {"headers": {"X-Api-Key": "k1"}}}, user_agent=AGENT)
    result = harvester_cli(config, "run", *FAST)
    assert result.exit_code == 0, result.output
    sent = fleet.requests("a") + fleet.requests("b")
    assert len(fleet.requests("a")) == 3 and len(fleet.requests("b")) == 1
    assert {entry.headers["User-Agent"] for entry in sent} == {AGENT}
    assert {entry.headers.get("X-Api-Key") for entry in fleet.requests("a")} == {"k1"}
    assert {entry.headers.get("X-Api-Key") for entry in fleet.requests("b")} == {None}


def test_the_default_user_agent_names_the_software_and_the_admin(tmp_path: Path) -> None:
    from harvester.cli import _settings

    data = {**BASE_CONFIG, "storage": {"url": f"sqlite:///{tmp_path / 's.sqlite3'}"}}
    section = from_mapping(data).harvester
    agent = _settings(5, 0, 0.01, section).client.user_agent
    assert agent.startswith("oai-repository-harvester/") and agent.endswith("mailto:admin@test.example.org)")


@with_specs(
    Spec("patient", records=3, busy=frozenset({0, 1}), retry_after=0),
    Spec("hasty", records=3, busy=frozenset({0, 1}), retry_after=0),
    Spec("slow", records=3, delay=1.0),
)
def test_a_partners_timeout_and_retries_win_over_the_commands(fleet: Fleet, tmp_path: Path, store_url: str) -> None:
    own: dict[str, dict[str, Any]] = {
        "patient": {"retries": 2},
        "hasty": {"mode": "list_records"},  # under auto, the 503 would then be asked of ListIdentifiers
        "slow": {"timeout": 0.3, "retries": 0},
    }
    result = harvester_cli(partners_config(tmp_path, store_url, fleet, own), "run", *FAST)
    lines = outcomes(result)
    assert result.exit_code == 1
    assert lines["patient"].startswith("patient: success")
    assert [e.status for e in fleet.requests("patient")] == [503, 503, 200]
    assert "HTTP 503" in lines["hasty"] and [e.status for e in fleet.requests("hasty")] == [503]  # --retries 0
    assert "timed out" in lines["slow"]  # 0.3 s, not the command's 5


@with_specs(Spec("private", records=3, basic_auth=("harvest", "s3cret-pw")), Spec("open", records=3))
def test_basic_auth_with_the_password_from_the_environment(
    fleet: Fleet, tmp_path: Path, store_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    auth = {"private": {"auth": {"username": "harvest", "password_env": "FLEET_PRIVATE_PASSWORD"}}}
    config = partners_config(tmp_path, store_url, fleet, auth)
    monkeypatch.setenv("FLEET_PRIVATE_PASSWORD", "s3cret-pw")
    result = harvester_cli(config, "run", *FAST)
    assert result.exit_code == 0, result.output
    assert [e.status for e in fleet.requests("private")] == [200]
    assert fleet.requests("private")[0].headers["Authorization"].startswith("Basic ")
    assert "Authorization" not in fleet.requests("open")[0].headers
    status = harvester_cli(config, "status")
    history = harvester_cli(config, "history", "private", "--json")
    assert all("s3cret" not in text for text in (result.output, status.output, history.output))


@with_specs(Spec("private", records=3, basic_auth=("harvest", "s3cret-pw")), Spec("open", records=3))
def test_a_missing_password_variable_fails_that_partner_only(
    fleet: Fleet, tmp_path: Path, store_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    auth = {"private": {"auth": {"username": "harvest", "password_env": "FLEET_PRIVATE_PASSWORD"}}}
    config = partners_config(tmp_path, store_url, fleet, auth)
    monkeypatch.delenv("FLEET_PRIVATE_PASSWORD", raising=False)
    result = harvester_cli(config, "run", *FAST)
    lines = outcomes(result)
    assert result.exit_code == 1
    assert lines["open"].startswith("open: success")
    assert "private: failed" in lines["private"]
    assert "the environment variable FLEET_PRIVATE_PASSWORD is not set" in lines["private"]
    assert fleet.requests("private") == []  # nothing sent without the password
    store = Store(store_url)
    try:
        (last,) = harvest_history(store, "private", limit=1)
        assert last.outcome == "failed" and "FLEET_PRIVATE_PASSWORD" in (last.reason or "")
    finally:
        store.close()


@with_specs(Spec("gentle", records=15, page_size=5))
def test_request_interval_spaces_a_partners_requests(fleet: Fleet, tmp_path: Path, store_url: str) -> None:
    config = partners_config(tmp_path, store_url, fleet, {"gentle": {"request_interval": 0.4}})
    result = harvester_cli(config, "run", *FAST)
    assert result.exit_code == 0, result.output
    times = [entry.at for entry in fleet.requests("gentle")]
    assert len(times) == 3
    assert all(later - earlier >= 0.4 for earlier, later in pairwise(times))


# ---- partners at once, requests at once per host --------------------------------------------------


@with_specs(*crowd(6, hosts=[1] * 6, delay=0.5, records=10, page_size=5))
def test_jobs_partners_are_harvested_at_once(fleet: Fleet, tmp_path: Path, store_url: str) -> None:
    result = harvester_cli(partners_config(tmp_path, store_url, fleet, jobs=3), "run", *FAST)
    assert result.exit_code == 0, result.output
    assert len(result.stdout.splitlines()) == 6  # one line per partner, as each finishes
    assert all(": success: 2 page(s), 10 record(s)" in line for line in result.stdout.splitlines())
    assert most_at_once(fleet.log, 0.5) == 3


@with_specs(*crowd(6, hosts=[6], delay=0.3, records=10, page_size=5))
def test_per_host_caps_the_requests_at_once_to_a_host_across_partners(
    fleet: Fleet, tmp_path: Path, store_url: str
) -> None:
    result = harvester_cli(partners_config(tmp_path, store_url, fleet, jobs=6, per_host=2), "run", *FAST)
    assert result.exit_code == 0, result.output
    assert fleet.peak(host=0) == 2
    assert len(fleet.log) == 12


@with_specs(*crowd(3, hosts=[3], records=5, page_size=5))
def test_a_hosts_retry_after_holds_back_every_partner_on_it(fleet: Fleet, tmp_path: Path, store_url: str) -> None:
    fleet.refuse(0, 1, retry_after=2)
    config = partners_config(tmp_path, store_url, fleet, jobs=3, per_host=1)
    result = harvester_cli(config, "run", "--timeout", "5", "--retries", "1", "--backoff", "0.01")
    assert result.exit_code == 0, result.output
    (refused,) = [e for e in fleet.log if e.status == 503]
    after = [e for e in fleet.log if e.status == 200]
    assert len(after) == 3 and all(e.at - refused.at >= 1.8 for e in after)


@with_specs(*crowd(4, hosts=[1] * 4, delay=0.5, records=10, page_size=5))
def test_the_scheduler_harvests_jobs_partners_at_once(fleet: Fleet, store: Store, store_url: str) -> None:
    hourly = {"interval": {"hours": 1}}
    partners = [{"name": name, "base_url": fleet.url(name), "schedule": hourly} for name in sorted(fleet.specs)]
    config = make_config(store_url, harvester={"jobs": 2}, partners=partners)
    scheduler = HarvestScheduler(config, store, settings=FAST_HARVEST, run_now=True)
    scheduler.scheduler.start()  # what run_forever starts, without its signal handlers (main thread only)
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and sum(not h for h in histories(store, fleet)) < 4:
            time.sleep(0.1)
    finally:
        scheduler.request_stop()
        scheduler.scheduler.shutdown(wait=True)
    assert all(harvest_history(store, name, limit=1)[0].outcome == "success" for name in fleet.specs)
    assert most_at_once(fleet.log, 0.5) == 2


@with_specs(*crowd(6, hosts=[4, 1, 1], delay=1.0, records=5, page_size=5))
def test_a_job_takes_a_partner_of_a_host_with_room_first(fleet: Fleet, tmp_path: Path, store_url: str) -> None:
    """p000 to p003 share host 0 (one request at a time), listed first: three jobs take p000,
    p004 and p005, not three partners of host 0 of which two would only wait."""
    result = harvester_cli(partners_config(tmp_path, store_url, fleet, jobs=3, per_host=1), "run", *FAST)
    assert result.exit_code == 0, result.output
    first = {name: fleet.requests(name)[0].at for name in fleet.specs}
    assert abs(first["p004"] - first["p000"]) < 0.6 and abs(first["p005"] - first["p000"]) < 0.6
    assert fleet.peak(host=0) == 1


@with_specs(*crowd(8, hosts=[2, 2, 4], delay=1.0, records=5, page_size=5))
def test_a_job_takes_a_partner_of_the_host_with_the_most_partners_left(
    fleet: Fleet, tmp_path: Path, store_url: str
) -> None:
    """p004 to p007 share host 2, listed last. Taken in list order they would be left to the end
    and harvested one at a time (per_host 1) while the other job stands idle: 6 s. The host with
    the most partners left goes first, and the two jobs finish together: 4 s, the host's own bound."""
    result = harvester_cli(partners_config(tmp_path, store_url, fleet, jobs=2, per_host=1), "run", *FAST)
    assert result.exit_code == 0, result.output
    done = {name: fleet.requests(name)[0].at for name in fleet.specs}
    start = min(done.values()) - 1.0
    assert [round(done[name] - start) for name in ("p004", "p005", "p006", "p007")] == [1, 2, 3, 4]
    assert round(max(done.values()) - start) == 4
    assert fleet.peak(host=2) == 1
