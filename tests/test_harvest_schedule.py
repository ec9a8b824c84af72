"""Scheduling: triggers from config.yaml, one job per partner that never overlaps itself,
leases that keep two harvesters off one partner, and SIGTERM that ends the current page
cleanly."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import BASE_CONFIG, engine_of, make_config
from harvestkit import FakePartner, Lines, list_records, record, xml
from werkzeug.wrappers import Response

from harvester.pipeline import WORKER_FROM
from harvester.schedule import HarvestScheduler, trigger_for
from oaiserver.config import ConfigError, Partner
from oaiserver.store import Store, acquire_lease, harvest_history, harvest_state_of, leases, release_lease

ROOT = Path(__file__).parent.parent


def partner(**schedule: Any) -> Partner:
    return Partner("p", "http://127.0.0.1:9/oai", schedule=schedule)


def test_an_interval_schedule() -> None:
    trigger = trigger_for(partner(interval={"minutes": 60}))
    assert trigger.interval.total_seconds() == 3600


def test_a_cron_schedule_in_utc() -> None:
    trigger = trigger_for(partner(cron="0 3 * * *"))
    fields = {f.name: str(f) for f in trigger.fields}
    assert (fields["hour"], fields["minute"]) == ("3", "0") and str(trigger.timezone) == "UTC"


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
    """When the configuration loads: the scheduler trusts a loaded Partner."""
    with pytest.raises(ConfigError, match=f"^partners.p.schedule.*{message}"):
        make_config("sqlite://", partners=[{"name": "p", "base_url": "http://127.0.0.1:9/oai", "schedule": schedule}])


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
    """Before any scheduler starts: the one place partner settings are checked."""
    with pytest.raises(ConfigError, match=r"^partners\.odd\.quirks: unknown quirk"):
        make_config(
            f"sqlite:///{tmp_path / 's.sqlite3'}",
            partners=[{"name": "odd", "base_url": "http://127.0.0.1:9/oai", "quirks": {"lenient_xlm": True}}],
        )


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
        barrier = threading.Barrier(6)
        won: list[str] = []
        threads = [threading.Thread(target=contend, args=(f"h{i}", f"race{attempt}", barrier, won)) for i in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        assert len(won) == 1, won


# ---- the process: SIGTERM ends the current page --------------------------------------------


@contextmanager
def store_write_lock(store_url: str) -> Iterator[None]:
    """Hold off the harvest's next page transaction (it renews the partner's lease first): a
    write lock on SQLite, the lease row's lock on PostgreSQL."""
    with engine_of(store_url) as engine, engine.connect() as conn:
        if store_url.startswith("sqlite"):
            conn.exec_driver_sql("BEGIN IMMEDIATE")
        else:
            conn.begin()
            conn.exec_driver_sql("SELECT owner FROM harvest_leases FOR UPDATE").all()
        yield
        conn.rollback()


def test_sigterm_ends_the_current_page_and_exits_cleanly(store_url: str, tmp_path: Path) -> None:
    """SIGTERM while page 1 is in the worker's hands (the worker held stopped, the store's write
    lock held, so the signal surely comes before the page is written): page 1 is converted,
    written and checkpointed, then the process exits 0. No step waits on a clock."""
    first_asked, answer_first, later = threading.Event(), threading.Event(), threading.Event()

    def partner(params: dict[str, str], n: int) -> Response:
        if n == 0:
            first_asked.set()
            answer_first.wait(60)
        else:
            later.wait(60)  # the pages asked for ahead are never answered before the process ends
        # announced big: its pages go to the worker process
        return xml(list_records([record(f"oai:p:{n}-{i}") for i in range(5)], f"t{n + 1}", announce=WORKER_FROM))

    Store(store_url).close()  # the tables, made before the harvester starts
    worker_pid = None
    with FakePartner(partner) as fake:
        config = {k: v for k, v in BASE_CONFIG.items()}
        config["storage"] = {"url": store_url}
        config["partners"] = [{"name": "slow", "base_url": fake.url, "schedule": {"interval": {"hours": 1}}}]
        path = tmp_path / "config.yaml"
        path.write_text(yaml.safe_dump(config))
        command = [sys.executable, "-m", "harvester.cli", "-c", str(path), "schedule", "--now"]
        process = subprocess.Popen(
            [*command, "--timeout", "60", "--retries", "0"], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
        )
        output = Lines(process.stdout)
        try:
            assert first_asked.wait(60), output.rest()
            with store_write_lock(store_url):
                answer_first.set()
                worker_pid = int(output.wait_for(r"started the harvest worker process \(pid (\d+)\)").group(1))
                os.kill(worker_pid, signal.SIGSTOP)  # page 1 is in its hands (or already back)
                process.send_signal(signal.SIGTERM)
                output.wait_for("SIGTERM: finishing the current page")
                os.kill(worker_pid, signal.SIGCONT)
            process.wait(60)
        finally:
            later.set()
            if worker_pid is not None:
                with suppress(ProcessLookupError):
                    os.kill(worker_pid, signal.SIGCONT)
            if process.poll() is None:
                process.kill()
                process.wait()
    text = output.rest()
    assert process.returncode == 0, text
    assert "Traceback" not in text
    store = Store(store_url)
    try:
        runs = harvest_history(store, "slow")
        assert [r.outcome for r in runs] == ["failed"] and "stopped after a page" in (runs[0].reason or ""), text
        state = harvest_state_of(store, "slow")
        assert state.checkpoint is not None, text
        assert state.checkpoint["counts"]["pages"] == 1 and state.checkpoint["token"] == "t1"
        assert store.identifiers(source="slow") == {f"oai:p:0-{i}" for i in range(5)}
        assert leases(store) == {}, "the lease is released"
    finally:
        store.close()
