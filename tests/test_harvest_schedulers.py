"""Several schedulers, one store: every `harvester schedule` fires its own timer for every
partner, and the first to find a partner due claims its due harvest in the store, so each due
harvest runs once; a scheduler that is killed hands its partners to the others within the
lease time."""

from __future__ import annotations

import itertools
import json
import logging
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any, NamedTuple

import pytest
import sqlalchemy as sa
import yaml
from click.testing import CliRunner
from conftest import BASE_CONFIG, make_config, pg_schema, until
from fleet import Fleet, crowd
from harvestkit import FakePartner, list_records, record, xml
from werkzeug.wrappers import Response

from harvester import harvest, schedule
from harvester.cli import main
from harvester.schedule import HarvestScheduler, next_due, sooner_by_schedule, why_skipped
from oaiserver.config import Config, Partner, load
from oaiserver.records import format_datestamp
from oaiserver.store import (
    DueSlot,
    Store,
    claim_due,
    due_slot,
    due_slots,
    finish_due,
    finish_run,
    harvest_runs,
    ran_unsettled,
    release_claim,
    renew_claim,
    start_run,
)

ROOT = Path(__file__).parent.parent


def partner(**schedule: Any) -> Partner:
    return Partner("p", "http://127.0.0.1:9/oai", schedule=schedule)


# ---- when a partner is next due -------------------------------------------------------------

TEN_MINUTES = partner(interval={"minutes": 10})


def test_a_harvest_on_time_keeps_the_rhythm() -> None:
    """Due at 1000, started then or up to half an interval late: next due one interval after 1000."""
    assert next_due(TEN_MINUTES, 1_000, 1_000) == 1_600
    assert next_due(TEN_MINUTES, 1_000, 1_300) == 1_600


def test_a_harvest_started_late_starts_a_new_rhythm() -> None:
    """More than half an interval late: one interval after its start, never half an interval later."""
    assert next_due(TEN_MINUTES, 1_000, 1_301) == 1_901


def test_a_cron_harvest_is_next_due_at_its_next_time_after_the_start() -> None:
    nightly = partner(cron="0 3 * * *")
    three = 1_704_078_000  # 2024-01-01T03:00:00Z
    assert next_due(nightly, three, three) == three + 86_400, "started on the second: not due again at once"
    assert next_due(nightly, three, three + 3_600) == three + 86_400


def test_a_shortened_schedule_counts_from_the_last_harvest() -> None:
    """Daily before, every ten minutes now: due ten minutes after the last harvest, not next day."""
    assert sooner_by_schedule(TEN_MINUTES, DueSlot("p", 1_000 + 86_400, ran_at=1_000)) == 1_600
    assert sooner_by_schedule(TEN_MINUTES, DueSlot("p", 1_600, ran_at=1_000)) is None
    assert sooner_by_schedule(TEN_MINUTES, DueSlot("p", 1_000)) is None, "never harvested: due already"


# ---- the claim rule, in the store -------------------------------------------------------------


def test_a_partner_no_scheduler_has_seen_is_due_and_claimed_once(store: Store) -> None:
    assert claim_due(store, "p", "a", now=1_000, ttl=60) == 1_000
    assert claim_due(store, "p", "b", now=1_000, ttl=60) is None
    assert due_slot(store, "p") == DueSlot("p", 1_000, "a", 1_060)


def test_a_due_harvest_that_ran_is_not_due_for_another_scheduler(store: Store) -> None:
    assert claim_due(store, "p", "a", now=1_000, ttl=60) == 1_000
    assert finish_due(store, "p", "a", ran_at=1_000, next_due=1_600)
    assert claim_due(store, "p", "b", now=1_001, ttl=60) is None
    assert why_skipped("p", due_slot(store, "p"), 1_001) == (
        "p: not due: ran at 1970-01-01T00:16:40Z by a; next due at 1970-01-01T00:26:40Z"
    )
    assert claim_due(store, "p", "b", now=1_600, ttl=60) == 1_600, "due again at its next time"


def test_a_claim_holds_through_its_last_second_then_lapses(store: Store) -> None:
    """The claim of a scheduler that died: free after `ttl`, with the harvest still due; the
    dead one's late finish changes nothing."""
    assert claim_due(store, "p", "a", now=1_000, ttl=60) == 1_000
    assert claim_due(store, "p", "b", now=1_060, ttl=60) is None
    assert why_skipped("p", due_slot(store, "p"), 1_060) == "p: due harvest claimed by a (until 1970-01-01T00:17:40Z)"
    assert claim_due(store, "p", "b", now=1_061, ttl=60) == 1_000, "the same due harvest, now b's"
    assert not finish_due(store, "p", "a", ran_at=1_000, next_due=1_600)
    assert not renew_claim(store, "p", "a", now=1_062, ttl=60)
    assert due_slot(store, "p") == DueSlot("p", 1_000, "b", 1_121)


def test_a_renewed_claim_lasts_as_long_as_the_harvest(store: Store) -> None:
    assert claim_due(store, "p", "a", now=1_000, ttl=60) == 1_000
    assert renew_claim(store, "p", "a", now=1_050, ttl=60)
    assert claim_due(store, "p", "b", now=1_061, ttl=60) is None
    assert claim_due(store, "p", "b", now=1_111, ttl=60) == 1_000


def test_a_claim_given_back_leaves_the_partner_due(store: Store) -> None:
    """A harvest that did not run (the partner busy, a stop) is left to the next scheduler."""
    assert claim_due(store, "p", "a", now=1_000, ttl=60) == 1_000
    assert not release_claim(store, "p", "b"), "only the holder gives a claim back"
    assert release_claim(store, "p", "a")
    assert why_skipped("p", due_slot(store, "p"), 1_001) == (
        "p: due harvest given back by another scheduler just now; the next timer takes it"
    )
    assert claim_due(store, "p", "b", now=1_001, ttl=60) == 1_000


def test_a_harvest_ended_unsettled_only_when_each_format_ran_to_its_end_in_order(store: Store) -> None:
    """Formats f1, f2, hourly. The harvest due at 1000 ran f1 at 1000 and f2 at 4700, past the
    next due time (4600). The harvest due at 4600 ran f1 at 8200, then its scheduler died: not
    ended, for the f2 at 4700 was the earlier harvest's. Once f2 has run too, it ended at 8200."""

    def ran(fmt: str, started: int, outcome: str = harvest.SUCCESS) -> None:
        run_id = start_run(store, "p", "a", started=started, from_date=None, resumed=False, fmt=fmt)
        finish_run(store, run_id, "p", fmt=fmt, finished=started, outcome=outcome, reason=None, counts={})

    formats = ("f1", "f2")
    ran("f1", 1_000)
    ran("f2", 4_700)
    assert ran_unsettled(store, "p", "a", since=4_600, formats=formats) is None, "f1 ran before the due time"
    ran("f1", 8_200)
    assert ran_unsettled(store, "p", "a", since=4_600, formats=formats) is None, "f2 not run for it"
    ran("f2", 8_300, harvest.PARTIAL)
    assert ran_unsettled(store, "p", "a", since=4_600, formats=formats) == 8_200
    assert ran_unsettled(store, "p", "b", since=4_600, formats=formats) is None, "b ran none"
    ran("f1", 12_000)
    ran("f2", 12_100, harvest.FAILED)
    assert ran_unsettled(store, "p", "a", since=11_800, formats=formats) is None, "a failed run runs again"


def test_a_harvest_whose_claim_was_given_back_meanwhile_still_sets_the_next_due_time(store: Store) -> None:
    """a's claim lapsed mid-harvest; b took it over, found the partner busy (a's harvest still
    held its lease) and gave it back. a's harvest then ends: it sets the next due time, unless
    the partner is claimed again or due at another time."""
    assert claim_due(store, "p", "a", now=1_000, ttl=60) == 1_000
    assert claim_due(store, "p", "b", now=1_061, ttl=60) == 1_000
    assert release_claim(store, "p", "b")
    assert not finish_due(store, "p", "a", ran_at=1_000, next_due=4_600), "without its due time: not a's"
    assert not finish_due(store, "p", "a", ran_at=1_000, next_due=4_600, due_at=999), "another due time"
    assert finish_due(store, "p", "a", ran_at=1_000, next_due=4_600, due_at=1_000)
    assert due_slot(store, "p") == DueSlot("p", 4_600, None, None, 1_000, "a")
    assert claim_due(store, "p", "c", now=4_600, ttl=60) == 4_600
    assert not finish_due(store, "p", "a", ran_at=1_000, next_due=4_600, due_at=4_600), "c holds it"


def test_racing_schedulers_claim_a_due_harvest_once(store: Store) -> None:
    """Six schedulers fire at once, for a partner never seen (its row is inserted) and for one
    that is due again (its row is updated): one claim each time."""

    def contend(owner: str, now: int, barrier: threading.Barrier, won: list[str]) -> None:
        barrier.wait()
        if claim_due(store, "race", owner, now=now, ttl=60) is not None:
            won.append(owner)

    for now in (1_000, 2_000, 3_000):
        barrier, won = threading.Barrier(6), list[str]()
        threads = [threading.Thread(target=contend, args=(f"s{i}", now, barrier, won)) for i in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        assert len(won) == 1, won
        assert finish_due(store, "race", won[0], ran_at=now, next_due=now + 1_000)


# ---- schedulers in one process ------------------------------------------------------------------


def config_file(path: Path, store_url: str, base_url: str, schedule: dict[str, Any]) -> Path:
    data = {**BASE_CONFIG, "storage": {"url": store_url}}
    data["partners"] = [{"name": "p", "base_url": base_url, "schedule": schedule}]
    path.write_text(yaml.safe_dump(data))
    return path


class Hourly(NamedTuple):
    """Partner p, due every hour, on a SQLite store: its configuration and what it was asked."""

    path: Path
    config: Config
    partner: Partner
    store: Store
    asked: list[dict[str, str]]


@contextmanager
def hourly_partner(tmp_path: Path) -> Iterator[Hourly]:
    """Partner p answering every request with one record, while the block runs."""
    asked: list[dict[str, str]] = []

    def answer(params: dict[str, str], n: int) -> Response:
        asked.append(params)
        return xml(list_records([record("oai:p:1")]))

    with FakePartner(answer) as fake:
        path = config_file(
            tmp_path / "c.yaml", f"sqlite:///{tmp_path / 's.sqlite3'}", fake.url, {"interval": {"hours": 1}}
        )
        config = load(str(path))
        (p,) = config.partners
        store = Store(config.storage_url)
        try:
            yield Hourly(path, config, p, store, asked)
        finally:
            store.close()


def test_a_second_scheduler_finds_the_due_harvest_done(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Two schedulers on one store fire for the same partner: the first harvests it, the second
    skips it (`not due: ran at … by …`), the partner is asked for its list once, and `harvester
    status` gives the due time they share as the next run."""
    with hourly_partner(tmp_path) as (path, config, p, store, asked):
        first, second = (HarvestScheduler(config, store, owner=o, clock=lambda: 1_000.0) for o in ("s1", "s2"))
        first._job(p)
        with caplog.at_level(logging.INFO, logger="harvester.schedule"):
            second._job(p)
        slot = due_slot(store, "p")
    assert [a.get("verb") for a in asked] == ["ListRecords"]
    assert slot == DueSlot("p", 1_000 + 3_600, None, None, 1_000, "s1")
    assert "p: not due: ran at 1970-01-01T00:16:40Z by s1; next due at 1970-01-01T01:16:40Z" in caplog.text
    status = CliRunner().invoke(main, ["-c", str(path), "status", "--json"], catch_exceptions=False)
    assert json.loads(status.stdout)["partners"][0]["next_run"] == "1970-01-01T01:16:40Z"


@pytest.mark.parametrize("died", ["after its harvest", "mid-harvest"])
def test_a_claim_taken_over_from_a_dead_scheduler_runs_the_harvest_only_if_it_did_not_end(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, died: str
) -> None:
    """Scheduler a claims the due harvest at 1000 and dies: after its harvest had ended, but
    before it set the next due time, or in the middle of it. When its claim has lapsed, b takes
    it over: it runs the harvest again only in the second case; in the first it sets the next
    due time as that of a's harvest, and says so."""
    with hourly_partner(tmp_path) as (_, config, p, store, asked):
        if died == "after its harvest":
            a = HarvestScheduler(config, store, owner="a", clock=lambda: 1_000.0)
            a._settle = lambda *_args: None  # type: ignore[method-assign]  # it dies before this
            a._job(p)
        else:
            assert claim_due(store, "p", "a", now=1_000, ttl=60) == 1_000
            start_run(store, "p", "a", started=1_000, from_date=None, resumed=False)
        b = HarvestScheduler(config, store, owner="b", clock=lambda: 1_901.0)  # after a's claim (900 s)
        with caplog.at_level(logging.INFO, logger="harvester.schedule"):
            b._job(p)
        slot = due_slot(store, "p")
        runs = runs_by_partner(store)["p"]
    if died == "after its harvest":
        assert [a.get("verb") for a in asked] == ["ListRecords"], "not harvested again"
        assert [(r["owner"], r["outcome"]) for r in runs] == [("a", harvest.SUCCESS)], "a's run carries its claim"
        started = runs[0]["started"]  # the run's own clock: long past the due time, so a new rhythm
        assert slot == DueSlot("p", started + 3_600, None, None, started, "a")
        assert (
            f"p: not due: ran at {format_datestamp(started)} by a, which ended before setting the next due time; "
            f"next due at {format_datestamp(started + 3_600)}"
        ) in caplog.text
    else:
        assert [a.get("verb") for a in asked] == ["ListRecords"], "harvested by b"
        assert slot == DueSlot("p", 1_000 + 3_600, None, None, 1_901, "b")
        assert [(r["owner"], r["outcome"]) for r in runs] == [("a", harvest.FAILED), ("b", harvest.SUCCESS)]


def test_a_claim_given_back_as_another_scheduler_fires_is_run_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """a's harvest ran, then a gave its claim back to have it run again (its deletion sweep found
    the store failing): b, whose timer fired while a still held the claim, claims it just after
    and runs it, although a's run ended."""
    with hourly_partner(tmp_path) as (_, config, p, store, asked):
        assert claim_due(store, "p", "a", now=1_000, ttl=900) == 1_000
        harvest.run(store, p, owner="a")

        def given_back_first(*args: Any, **kwargs: Any) -> int | None:
            release_claim(store, "p", "a")
            return claim_due(*args, **kwargs)

        monkeypatch.setattr(schedule, "claim_due", given_back_first)
        HarvestScheduler(config, store, owner="b", clock=lambda: 1_061.0)._job(p)
        runs = runs_by_partner(store)["p"]
    assert [a.get("verb") for a in asked].count("ListRecords") == 2, "listed by a, then by b"
    assert [(r["owner"], r["outcome"]) for r in runs] == [("a", harvest.SUCCESS), ("b", harvest.SUCCESS)]


@pytest.mark.parametrize(("hours", "due_at"), [(1, 1_000 + 3_600), (48, 1_000 + 86_400)], ids=["shorter", "longer"])
def test_a_scheduler_starting_with_a_shorter_schedule_brings_the_partner_forward(
    store: Store, hours: int, due_at: int
) -> None:
    """Harvested at 1000 when the schedule was daily: a scheduler starting with an hourly one
    makes it due at 1000 + 1 h; with a schedule of two days it stays due at 1000 + 1 day (the
    longer interval counts from that harvest)."""
    assert claim_due(store, "p", "old", now=1_000, ttl=60) == 1_000
    assert finish_due(store, "p", "old", ran_at=1_000, next_due=1_000 + 86_400)
    schedule = {"interval": {"hours": hours}}
    config = make_config(
        store.url, partners=[{"name": "p", "base_url": "http://127.0.0.1:9/oai", "schedule": schedule}]
    )
    HarvestScheduler(config, store).follow_schedules()
    slot = due_slot(store, "p")
    assert slot is not None and slot.due_at == due_at


# ---- three `harvester schedule` processes on one PostgreSQL ----------------------------------------

PARTNERS = 30
INTERVAL = 6  # seconds between two harvests of a partner
LEASE = 4  # --lease-seconds: a killed scheduler's claims lapse after this
# How a run cut short by a stop ends (after its page, while a page was arriving, before a request, …).
STOPPED = re.compile(r"(^|: )stopped (after|while|before|during) ")


# `harvester schedule`, but taking intervals of seconds: the configuration refuses less than a
# minute (partners are not to be asked more often), which would make the test last minutes.
SECONDS_APART = (
    "import sys; from oaiserver import config; config.INTERVAL_RANGE = (1, config.INTERVAL_RANGE[1]); "
    "from harvester.cli import main; sys.exit(main())"
)


@contextmanager
def schedulers(config: Path, logs: Path, count: int) -> Iterator[list[subprocess.Popen[bytes]]]:
    """`count` `harvester schedule --now` processes on one configuration, each logging to a file;
    any still running at the end is stopped with SIGTERM (SIGKILL if it does not exit)."""
    command = [sys.executable, "-c", SECONDS_APART, "-c", str(config), "schedule", "--now"]
    command += ["--lease-seconds", str(LEASE), "--timeout", "10", "--retries", "0"]
    files: list[IO[bytes]] = []
    processes: list[subprocess.Popen[bytes]] = []
    try:
        for n in range(count):
            files.append((logs / f"scheduler{n}.log").open("wb"))
            processes.append(subprocess.Popen(command, cwd=ROOT, stdout=files[-1], stderr=subprocess.STDOUT))
        yield processes
    finally:
        for process in processes:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in processes:
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        for file in files:
            file.close()


class Run(dict[str, Any]):
    """A row of harvest_runs, with the process that ran it (its owner is host:pid:…)."""

    @property
    def pid(self) -> int:
        return int(self["owner"].split(":")[1])


def runs_by_partner(store: Store) -> dict[str, list[Run]]:
    with store.engine.connect() as conn:
        rows = conn.execute(sa.select(harvest_runs).order_by(harvest_runs.c.id)).mappings().all()
    runs: dict[str, list[Run]] = defaultdict(list)
    for row in rows:
        runs[row["partner"]].append(Run(row))
    return runs


def succeeded(runs: list[Run]) -> list[Run]:
    return [r for r in runs if r["outcome"] == harvest.SUCCESS]


def test_three_schedulers_run_each_due_harvest_once_and_take_over_from_a_killed_one(tmp_path: Path) -> None:
    """30 partners due every 6 s, three schedulers on one PostgreSQL store. Each due harvest runs
    once: in the store's run history a partner's harvests are never closer than half an interval
    (one due harvest run twice would be), and the partners were asked for one list per run. Then
    the scheduler that ran the latest harvests is killed with SIGKILL while it holds claims: each
    of its partners is harvested by the others, within the lease time and one timer interval."""
    specs = crowd(PARTNERS, hosts=[10, 10, 10], records=4, page_size=5, delay=0.2)
    with pg_schema() as url, Fleet(specs) as fleet:
        Store(url).close()  # the tables, made before the schedulers start
        config = {
            **BASE_CONFIG,
            "storage": {"url": url},
            "harvester": {"jobs": PARTNERS, "per_host": 10},
            "partners": [
                {"name": s.name, "base_url": fleet.url(s.name), "schedule": {"interval": {"seconds": INTERVAL}}}
                for s in specs
            ],
        }
        path = tmp_path / "config.yaml"
        path.write_text(yaml.safe_dump(config))
        store = Store(url)
        try:
            with schedulers(path, tmp_path, 3) as processes:
                until(
                    lambda: (
                        all(len(succeeded(rs)) >= 3 for rs in runs_by_partner(store).values())
                        and len(runs_by_partner(store)) == PARTNERS
                    ),
                    "three harvests of every partner",
                    timeout=60,
                )
                pids = {p.pid for p in processes}
                victim = kill_while_it_holds_claims(store, pids)
                killed_at = time.time()
                before = {name: rs[-1] for name, rs in runs_by_partner(store).items()}
                theirs = sorted(name for name, last in before.items() if last.pid == victim)
                assert theirs, "the killed scheduler ran the latest harvest of some partners"

                def taken_over() -> bool:
                    runs = runs_by_partner(store)
                    return all(
                        any(r.pid != victim for r in succeeded(runs[n]) if r["id"] > before[n]["id"]) for n in theirs
                    )

                until(
                    taken_over, "the killed scheduler's partners harvested by the others", timeout=LEASE + 3 * INTERVAL
                )
            runs = runs_by_partner(store)
            slots = due_slots(store)
        finally:
            store.close()
        logs = "\n".join(f.read_text() for f in sorted(tmp_path.glob("scheduler*.log")))
        listed = defaultdict(list)
        for entry in fleet.log:
            if entry.args.get("verb") == "ListRecords" and "resumptionToken" not in entry.args:
                listed[entry.partner].append(entry.at)
    assert "Traceback" not in logs, logs
    for name in theirs:
        after = [r for r in succeeded(runs[name]) if r["id"] > before[name]["id"] and r.pid != victim]
        assert after[0]["started"] <= killed_at + LEASE + INTERVAL + 1, (name, after[0], killed_at)
    for name, rs in runs.items():
        cut_short = [r for r in rs if r["outcome"] != harvest.SUCCESS]
        assert all(
            (r.pid == victim and "interrupted" in r["reason"]) or STOPPED.search(r["reason"]) for r in cut_short
        ), f"{name}: runs cut short only by the SIGKILL and the final SIGTERM: {cut_short}"
        done = succeeded(rs)
        gaps = [b["started"] - a["started"] for a, b in itertools.pairwise(done)]
        assert min(gaps) >= INTERVAL // 2 - 1, f"{name}: a due harvest ran twice: starts {[r['started'] for r in rs]}"
        assert len(done) <= len(listed[name]) <= len(rs), f"{name}: one list per run"
        ran_by = slots[name].ran_by
        assert ran_by is not None and int(ran_by.split(":")[1]) != victim, f"{name}: last run by a survivor"
    # a scheduler whose timer fires for a harvest another one ran, or is running, says so
    assert "not due: ran at" in logs or "due harvest claimed by" in logs, "the schedulers that skipped said why"


def kill_while_it_holds_claims(store: Store, pids: set[int]) -> int:
    """SIGKILL the scheduler that ran the latest harvest, at a moment it holds a claim on a due
    harvest (it is mid-run); its pid."""
    victim = max(pids, key=lambda pid: sum(r.pid == pid for rs in runs_by_partner(store).values() for r in rs[-2:]))

    def holds_a_claim() -> bool:
        return any(s.claimed_by and int(s.claimed_by.split(":")[1]) == victim for s in due_slots(store).values())

    until(holds_a_claim, f"scheduler {victim} holding a claim", timeout=3 * INTERVAL)
    os.kill(victim, signal.SIGKILL)
    return victim
