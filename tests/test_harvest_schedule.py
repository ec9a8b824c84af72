"""Scheduling: triggers from config.yaml, one job per partner that never overlaps itself,
leases that keep two harvesters off one partner, and SIGTERM that ends the current page
cleanly."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import BASE_CONFIG, make_config
from harvestkit import FakePartner, list_records, record, xml
from werkzeug.wrappers import Response

from harvester import errors as err
from harvester.schedule import HarvestScheduler, trigger_for
from oaiserver.config import ConfigError, Partner
from oaiserver.store import Store, acquire_lease, harvest_history, harvest_state_of, leases, release_lease

ROOT = Path(__file__).parent.parent


def partner(**schedule: Any) -> Partner:
    return Partner("p", "http://127.0.0.1:9/oai", schedule=schedule)


def test_an_interval_schedule() -> None:
    trigger = trigger_for(partner(interval={"minutes": 60}))
    assert trigger.interval.total_seconds() == 3600  # type: ignore[attr-defined]


def test_a_cron_schedule_in_utc() -> None:
    trigger = trigger_for(partner(cron="0 3 * * *"))
    fields = {f.name: str(f) for f in trigger.fields}  # type: ignore[attr-defined]
    assert (fields["hour"], fields["minute"]) == ("3", "0") and str(trigger.timezone) == "UTC"  # type: ignore[attr-defined]


BAD_SCHEDULES = [
    ({"every": "hour"}, "expected exactly one of interval or cron"),
    ({"interval": {"minutes": 5}, "cron": "* * * * *"}, "expected exactly one of interval or cron"),
    ({"interval": {"fortnights": 1}}, "interval: expected a mapping of weeks"),
    ({"interval": {"minutes": "ten"}}, "expected non-negative numbers"),
    ({"interval": {"minutes": 0}}, "the interval is zero"),
    ({"cron": "61 * * * *"}, "cron: '61 \\* \\* \\* \\*' is not a crontab line"),
    ({"cron": 5}, "expected a crontab line"),
]


@pytest.mark.parametrize(("schedule", "message"), BAD_SCHEDULES, ids=[m for _, m in BAD_SCHEDULES])
def test_a_bad_schedule_is_named(schedule: dict[str, Any], message: str) -> None:
    with pytest.raises(err.ConfigurationError, match=f"partners.p.schedule.*{message}"):
        trigger_for(partner(**schedule))


def test_one_job_per_scheduled_partner_never_overlapping(tmp_path: Path) -> None:
    config = make_config(
        f"sqlite:///{tmp_path / 's.sqlite3'}",
        partners=[
            {"name": "hourly", "base_url": "http://127.0.0.1:9/oai", "schedule": {"interval": {"hours": 1}}},
            {"name": "nightly", "base_url": "http://127.0.0.1:9/oai", "schedule": {"cron": "0 3 * * *"}},
            {"name": "manual", "base_url": "http://127.0.0.1:9/oai"},
        ],
    )
    store = Store(config.storage_url)
    try:
        jobs = {job.id: job for job in HarvestScheduler(config, store).jobs}
    finally:
        store.close()
    assert sorted(jobs) == ["hourly", "nightly"]
    for job in jobs.values():
        assert (job.max_instances, job.coalesce, job.misfire_grace_time) == (1, True, None)


def test_a_bad_partner_is_refused_when_the_configuration_loads(tmp_path: Path) -> None:
    """Before any scheduler starts; a Partner made in code is still checked when it starts."""
    with pytest.raises(ConfigError, match=r"^partners\.odd\.quirks: unknown quirk"):
        make_config(
            f"sqlite:///{tmp_path / 's.sqlite3'}",
            partners=[{"name": "odd", "base_url": "http://127.0.0.1:9/oai", "quirks": {"lenient_xlm": True}}],
        )
    config = replace(
        make_config(f"sqlite:///{tmp_path / 's.sqlite3'}"),
        partners=(Partner("odd", "http://127.0.0.1:9/oai", quirks={"lenient_xlm": True}),),
    )
    store = Store(config.storage_url)
    try:
        with pytest.raises(err.ConfigurationError, match=r"odd\.quirks: unknown quirk"):
            HarvestScheduler(config, store)
    finally:
        store.close()


# ---- leases ----------------------------------------------------------------------------------


def test_a_lease_is_exclusive_until_it_expires(store: Store) -> None:
    assert acquire_lease(store, "p", "a", 100, 1_000) == (True, "a", 1_100)
    assert acquire_lease(store, "p", "b", 100, 1_050) == (False, "a", 1_100)
    assert acquire_lease(store, "p", "a", 100, 1_050) == (True, "a", 1_150), "the holder renews"
    assert acquire_lease(store, "p", "b", 100, 1_151) == (True, "b", 1_251), "an expired lease is free"
    release_lease(store, "p", "a")
    assert leases(store) == {"p": ("b", 1_251)}, "only the holder releases"
    release_lease(store, "p", "b")
    assert leases(store) == {}


def test_racing_harvesters_get_one_lease(store: Store) -> None:
    def contend(name: str, partner: str, barrier: threading.Barrier, won: list[str]) -> None:
        barrier.wait()
        if acquire_lease(store, partner, name, 100, 1_000)[0]:
            won.append(name)

    for attempt in range(3):
        barrier, won = threading.Barrier(6), []
        threads = [threading.Thread(target=contend, args=(f"h{i}", f"race{attempt}", barrier, won)) for i in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        assert len(won) == 1, won


# ---- the process: SIGTERM ends the current page --------------------------------------------


def test_sigterm_ends_the_current_page_and_exits_cleanly(store_url: str, tmp_path: Path) -> None:
    page_started = threading.Event()

    def slow(params: dict[str, str], n: int) -> Response:
        page_started.set()
        time.sleep(0.3)
        return xml(list_records([record(f"oai:p:{n}-{i}") for i in range(5)], f"t{n + 1}"))

    with FakePartner(slow) as fake:
        config = {k: v for k, v in BASE_CONFIG.items()}
        config["storage"] = {"url": store_url}
        config["partners"] = [{"name": "slow", "base_url": fake.url, "schedule": {"interval": {"hours": 1}}}]
        path = tmp_path / "config.yaml"
        path.write_text(yaml.safe_dump(config))
        command = [sys.executable, "-m", "harvester.cli", "-c", str(path), "schedule", "--now"]
        process = subprocess.Popen(
            [*command, "--timeout", "5", "--retries", "0"], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
        )
        try:
            deadline = time.monotonic() + 20
            while len(fake.requests) < 3 and time.monotonic() < deadline:
                time.sleep(0.02)
            assert len(fake.requests) >= 3, process.stdout.read() if process.poll() is not None else "no requests"  # type: ignore[union-attr]
            process.send_signal(signal.SIGTERM)
            output, _ = process.communicate(timeout=20)
        finally:
            if process.poll() is None:
                process.kill()
        asked = len(fake.requests)
    assert process.returncode == 0, output.decode()
    store = Store(store_url)
    try:
        runs = harvest_history(store, "slow")
        assert [r.outcome for r in runs] == ["failed"] and "stopped" in (runs[0].reason or ""), output.decode()
        # Every page written was written whole and checkpointed; the pages asked for ahead of the
        # one in hand (up to two, with the worker process converting) when the signal came are
        # dropped, and asked again by the next run.
        state = harvest_state_of(store, "slow")
        assert state.checkpoint is not None
        pages = state.checkpoint["counts"]["pages"]
        assert asked - 2 <= pages <= asked
        assert len(store.identifiers(source="slow")) == 5 * pages
        assert state.checkpoint["token"] == f"t{pages}"
        assert leases(store) == {}, "the lease is released"
    finally:
        store.close()
