"""Deletions a partner does not report: a deletion sweep lists every identifier the partner still
has and turns our records it no longer lists into tombstones, served as deleted by our /oai; a
drop larger than `max_drop` is held back (nothing changes, a metric and `status` say so) until a
person accepts it; an incomplete listing applies nothing; a sweep that is not due sends nothing."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner
from conftest import BASE_CONFIG, NS, OAIClient, make_config
from fleet import Fleet, Spec, items
from harvestkit import FAST_HARVEST, harvester_cli, partners_config

from harvester import harvest, sweep
from harvester.cli import main
from harvester.schedule import HarvestScheduler
from oaiserver import create_app
from oaiserver.config import DeletionSweep, Partner
from oaiserver.records import parse_datestamp
from oaiserver.store import Store, SweepState, bring_forward, harvest_history, records_held, save_sweep_in, sweep_states

FAST = ["--timeout", "5", "--retries", "0", "--backoff", "0.01"]
WEEKLY = {"deletion_sweep": {"interval": {"days": 7}}}
DAY = 86_400


@pytest.fixture
def fleet(request: pytest.FixtureRequest) -> Iterator[Fleet]:
    with Fleet(request.param) as running:
        yield running


def with_specs(*specs: Spec) -> Any:
    return pytest.mark.parametrize("fleet", [list(specs)], indirect=True)


@pytest.fixture
def store(store_url: str) -> Iterator[Store]:
    """The store on the real clock: tombstones are stamped now, as `harvester run` stamps them."""
    s = Store(store_url)
    yield s
    s.close()


def partner_of(fleet: Fleet, store_url: str, name: str, **own: Any) -> Partner:
    return make_config(store_url, partners=[{"name": name, "base_url": fleet.url(name), **own}]).partners[0]


def harvest_then_sweep(
    store: Store, partner: Partner, *, at: float | None = None, forced: bool = False
) -> sweep.SweepReport | None:
    """A run of `partner`, then its sweep if due at `at` (default: now) or `forced`."""
    report = harvest.run(store, partner, settings=FAST_HARVEST)
    assert report.outcome == harvest.SUCCESS, report.reason
    now = time.time() if at is None else at
    return sweep.after_run(store, partner, report, settings=FAST_HARVEST, forced=forced, clock=lambda: now)


def identifiers_of(spec: Spec, numbers: set[int]) -> set[str]:
    return {i.identifier for i in items(spec) if i.number in numbers}


def list_requests(fleet: Fleet, name: str) -> int:
    return sum(1 for r in fleet.requests(name) if r.args.get("verb") == "ListIdentifiers")


def our_oai(store: Store, store_url: str, names: list[str]) -> OAIClient:
    """Our own OAI-PMH interface over the store, with the partners configured. A list shows the
    writes of seconds that have ended: the second of the last write is waited out."""
    written = int(time.time())
    while int(time.time()) == written:
        time.sleep(0.05)
    partners = [{"name": n, "base_url": f"http://127.0.0.1:9/{n}"} for n in names]
    config = make_config(store_url, partners=partners)
    return OAIClient(create_app(config, store=store).test_client())


def deleted_headers(client: OAIClient, **args: str) -> dict[str, int]:
    """identifier -> datestamp of every deleted header of a whole ListIdentifiers list."""
    found: dict[str, int] = {}
    doc = client(verb="ListIdentifiers", metadataPrefix="oai_dc", **args)
    while True:
        for header in doc.iterfind(".//oai:header[@status='deleted']", NS):
            stamp = header.findtext("oai:datestamp", namespaces=NS) or ""
            found[header.findtext("oai:identifier", namespaces=NS) or ""] = parse_datestamp(stamp)[0]
        token = doc.findtext(".//oai:resumptionToken", namespaces=NS)
        if not token:
            return found
        doc = client(verb="ListIdentifiers", resumptionToken=token)


# ---- the rules ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("gone", "live", "max_drop", "accepted", "applies"),
    [
        (0, 0, 0.15, None, True),  # nothing of ours: nothing to delete
        (3, 20, 0.15, None, True),  # exactly max_drop
        (4, 20, 0.15, None, False),  # more than max_drop waits for a person
        (29, 100, 0.29, None, True),  # 0.29 * 100 is 28.999999999999996 in floating point
        (1, 1, 0.0, None, False),  # max_drop 0: every drop waits
        (12, 12, 1.0, None, True),  # max_drop 1: nothing waits
        (6, 12, 0.15, 6, True),  # a person accepted the drop held back
        (5, 12, 0.15, 6, True),  # ... or a smaller one
        (7, 12, 0.15, 6, False),  # a larger one is held back again
    ],
)
def test_a_sweep_applies_up_to_max_drop_or_the_drop_accepted(
    gone: int, live: int, max_drop: float, accepted: int | None, applies: bool
) -> None:
    assert sweep.may_apply(gone, live, max_drop, accepted) is applies


WEEK = 7 * DAY


@pytest.mark.parametrize(
    ("interval", "state", "now", "forced", "is_due"),
    [
        (WEEK, SweepState(), 1_000, False, True),  # never swept
        (WEEK, SweepState(last_swept=1_000), 1_000 + WEEK - 1, False, False),
        (WEEK, SweepState(last_swept=1_000), 1_000 + WEEK, False, True),
        (WEEK, SweepState(last_swept=1_000, held=6, held_live=12, held_since=5_000), 1_000 + WEEK, False, False),
        (WEEK, SweepState(last_swept=1_000, held=6, held_live=12, held_since=5_000), 5_000 + WEEK, False, True),
        (None, SweepState(), 1_000, False, False),  # no interval: only when asked
        (None, SweepState(), 1_000, True, True),
        (WEEK, SweepState(last_swept=1_000), 1_001, True, True),
    ],
)
def test_a_sweep_is_due_an_interval_after_the_last_one_applied_or_held_back(
    interval: float | None, state: SweepState, now: int, forced: bool, is_due: bool
) -> None:
    partner = Partner("p", "http://127.0.0.1:9/oai", deletion_sweep=DeletionSweep(interval))
    assert sweep.due(partner, state, now, forced=forced) is is_due


def test_vanished_are_our_live_records_the_listing_lacks() -> None:
    assert sweep.vanished({"c", "a", "b"}, {"b", "z"}) == ["a", "c"]


# ---- against the fleet ---------------------------------------------------------------------------


QUIET = Spec("quiet", records=20, page_size=5, deleted=frozenset({5}), vanish=frozenset({3, 11}))


@with_specs(QUIET)
def test_exactly_the_vanished_records_become_tombstones_served_as_deleted(
    fleet: Fleet, store_url: str, store: Store
) -> None:
    partner = partner_of(fleet, store_url, "quiet")
    first = harvest_then_sweep(store, partner, forced=True)
    assert first is not None and (first.outcome, first.listed, first.live, first.swept) == (sweep.APPLIED, 20, 19, 0)
    fleet.next_run()  # records 3 and 11 are gone, without a tombstone
    started = int(time.time())
    second = harvest_then_sweep(store, partner, forced=True)
    assert second is not None
    # Record 5's deleted header is listed: present (a tombstone already), never swept.
    assert (second.outcome, second.listed, second.live, second.vanished, second.swept) == (sweep.APPLIED, 18, 19, 2, 2)
    assert (
        sweep.describe(second) == "sweep: 18 listed, 2 of 19 live record(s) no longer listed: 2 turned into tombstones"
    )
    assert records_held(store, ["quiet"])["quiet"] == (17, 3)
    assert harvest_history(store, "quiet", limit=1)[0].counts["swept"] == 2

    served = deleted_headers(our_oai(store, store_url, ["quiet"]))
    gone = identifiers_of(QUIET, {3, 11})
    assert set(served) == gone | identifiers_of(QUIET, {5})
    assert all(served[i] >= started for i in gone), "stamped when swept"
    # An incremental harvester of ours, from the moment of the sweep, sees exactly the tombstones.
    since = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(min(served[i] for i in gone)))
    assert gone <= set(deleted_headers(our_oai(store, store_url, ["quiet"]), **{"from": since}))
    one = our_oai(store, store_url, ["quiet"])(verb="GetRecord", metadataPrefix="oai_dc", identifier=sorted(gone)[0])
    assert one.find(".//oai:header", NS).get("status") == "deleted"  # type: ignore[union-attr]
    assert one.find(".//oai:metadata", NS) is None


@with_specs(QUIET)
def test_a_second_sweep_changes_nothing(fleet: Fleet, store_url: str, store: Store) -> None:
    partner = partner_of(fleet, store_url, "quiet")
    harvest_then_sweep(store, partner, forced=True)
    fleet.next_run()
    harvest_then_sweep(store, partner, forced=True)
    before = deleted_headers(our_oai(store, store_url, ["quiet"]))
    again = harvest_then_sweep(store, partner, forced=True)
    assert again is not None and (again.outcome, again.vanished, again.swept) == (sweep.APPLIED, 0, 0)
    assert deleted_headers(our_oai(store, store_url, ["quiet"])) == before, "no datestamp moves"
    assert records_held(store, ["quiet"])["quiet"] == (17, 3)


@with_specs(Spec("weekly", records=12, page_size=5, vanish=frozenset({4})), Spec("asked", records=12, page_size=5))
def test_a_sweep_runs_when_due_and_sends_nothing_otherwise(fleet: Fleet, store_url: str, store: Store) -> None:
    weekly = partner_of(fleet, store_url, "weekly", **WEEKLY)
    t0 = 1_900_000_000
    made = harvest_then_sweep(store, weekly, at=t0)
    assert made is not None and made.outcome == sweep.APPLIED, "a partner never swept is due"
    listed = list_requests(fleet, "weekly")
    assert listed == 3  # 12 identifiers, 5 a page
    fleet.next_run()
    assert harvest_then_sweep(store, weekly, at=t0 + 7 * DAY - 1) is None
    assert list_requests(fleet, "weekly") == listed, "not due: no ListIdentifiers"
    assert records_held(store, ["weekly"])["weekly"] == (12, 0)
    due = harvest_then_sweep(store, weekly, at=t0 + 7 * DAY)
    assert due is not None and due.swept == 1 and list_requests(fleet, "weekly") == 2 * listed
    assert sweep_states(store)["weekly"] == SweepState(last_swept=t0 + 7 * DAY)

    asked = partner_of(fleet, store_url, "asked")  # no interval: only when asked
    assert harvest_then_sweep(store, asked, at=t0) is None and list_requests(fleet, "asked") == 0
    assert harvest_then_sweep(store, asked, at=t0, forced=True) is not None and list_requests(fleet, "asked") == 3


@with_specs(Spec("broken", records=15, page_size=5, vanish=frozenset({1, 2}), identifiers_page_fails=2))
def test_an_incomplete_listing_applies_nothing(fleet: Fleet, store_url: str, store: Store) -> None:
    partner = partner_of(fleet, store_url, "broken", **WEEKLY)
    harvest_then_sweep(store, partner)
    fleet.next_run()
    made = harvest_then_sweep(store, partner, forced=True)
    assert made is not None and made.outcome == sweep.INCOMPLETE and made.swept == 0
    assert made.reason is not None and "500" in made.reason
    assert sweep.describe(made).startswith("sweep incomplete, nothing applied: ")
    assert records_held(store, ["broken"])["broken"] == (15, 0)
    assert harvest_history(store, "broken", limit=1)[0].counts["sweep"]["outcome"] == sweep.INCOMPLETE
    assert "broken" not in sweep_states(store), "still never swept: due again at the next run"


# ---- a drop held back, through the command line ---------------------------------------------------


def write_config(tmp_path: Path, store_url: str, fleet: Fleet) -> Path:
    """Every partner of the fleet, each swept weekly."""
    return partners_config(tmp_path, store_url, fleet, dict.fromkeys(fleet.specs, WEEKLY))


def held_metric(store: Store, store_url: str) -> str:
    app = create_app(make_config(store_url), store=store)
    text = app.test_client().get("/metrics").get_data(as_text=True)
    return next(line for line in text.splitlines() if line.startswith('harvest_sweep_held_records{partner="halved"}'))


@with_specs(Spec("halved", records=12, page_size=5, vanish=frozenset(range(6))))
def test_a_drop_over_max_drop_is_held_back_until_accepted(
    fleet: Fleet, tmp_path: Path, store_url: str, store: Store
) -> None:
    config = write_config(tmp_path, store_url, fleet)
    first = harvester_cli(config, "run", *FAST)
    assert first.exit_code == 0, first.output
    assert "  sweep: 12 listed, 0 of 12 live record(s) no longer listed: 0 turned into tombstones" in first.stdout
    fleet.next_run()  # half the records vanish

    held = harvester_cli(config, "run", "--sweep", *FAST)
    assert held.exit_code == 0, held.output
    assert (
        "  sweep held back: 6 listed, 6 of 12 live record(s) no longer listed (50%), more than max_drop 15%; "
        "nothing applied (harvester run halved --sweep --accept-drop halved applies it)"
    ) in held.stderr
    assert records_held(store, ["halved"])["halved"] == (12, 0), "nothing changed"
    assert held_metric(store, store_url) == 'harvest_sweep_held_records{partner="halved"} 6.0'
    status = harvester_cli(config, "status")
    assert "  sweep held back since " in status.stdout and ": 6 of 12 live record(s) (50%) no longer listed" in (
        status.stdout
    )
    shown = json.loads(harvester_cli(config, "status", "--json").stdout)["partners"][0]["sweep"]
    assert shown["held"]["records"] == 6 and shown["held"]["share"] == 0.5 and shown["last_swept"] is not None
    again = harvester_cli(config, "run", *FAST)  # swept within the interval: not due, still held
    assert "sweep" not in again.output and held_metric(store, store_url).endswith(" 6.0")

    accepted = harvester_cli(config, "run", "halved", "--sweep", "--accept-drop", "halved", *FAST)
    assert accepted.exit_code == 0, accepted.output
    assert "  sweep: 6 listed, 6 of 12 live record(s) no longer listed: 6 turned into tombstones" in accepted.stdout
    assert records_held(store, ["halved"])["halved"] == (6, 6)
    assert held_metric(store, store_url) == 'harvest_sweep_held_records{partner="halved"} 0.0'
    assert "held back" not in harvester_cli(config, "status").stdout
    history = harvester_cli(config, "history", "halved").stdout
    assert "    sweep held back: 6 listed, 6 of 12 live record(s) no longer listed (50%)" in history
    assert "    sweep: 6 listed, 6 of 12 live record(s) no longer listed: 6 turned into tombstones" in history


@with_specs(Spec("halved", records=12, page_size=5, vanish=frozenset(range(6))))
def test_an_accepted_drop_does_not_cover_a_larger_one(fleet: Fleet, store_url: str, store: Store) -> None:
    partner = partner_of(fleet, store_url, "halved")
    harvest_then_sweep(store, partner, forced=True)
    fleet.next_run()
    assert harvest_then_sweep(store, partner, forced=True).outcome == sweep.HELD  # type: ignore[union-attr]
    with store.writing() as (conn, _):  # as if the person had seen a smaller drop
        save_sweep_in(conn, "halved", SweepState(held=5, held_live=12, held_since=1))
    report = harvest.run(store, partner, settings=FAST_HARVEST)
    larger = sweep.after_run(store, partner, report, settings=FAST_HARVEST, accepted=True)
    assert larger is not None and larger.outcome == sweep.HELD and larger.vanished == 6
    assert records_held(store, ["halved"])["halved"] == (12, 0)
    assert sweep_states(store)["halved"].held == 6


def test_accept_drop_names_a_partner_of_the_run(tmp_path: Path, store_url: str) -> None:
    data = {**BASE_CONFIG, "storage": {"url": store_url}}
    data["partners"] = [{"name": n, "base_url": f"http://127.0.0.1:9/{n}"} for n in ("a", "b")]
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump(data))
    result = CliRunner().invoke(main, ["-c", str(config), "run", "a", "--accept-drop", "b"])
    assert (
        result.exit_code == 2 and "--accept-drop" in result.output and "b: not a partner of this run" in result.output
    )


def test_a_sweep_asked_for_after_a_failed_run_is_not_made(tmp_path: Path, store_url: str) -> None:
    data = {**BASE_CONFIG, "storage": {"url": store_url}}
    data["partners"] = [{"name": "down", "base_url": "http://127.0.0.1:9/oai"}]  # nothing listens on port 9
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump(data))
    result = harvester_cli(config, "run", "--sweep", *FAST)
    assert result.exit_code == 1
    assert "  sweep not made: the run failed (a sweep follows a run that read its lists to the end)" in result.stderr


@with_specs(Spec("nightly", records=12, page_size=5, vanish=frozenset({7})))
def test_a_scheduled_run_sweeps_when_due(
    fleet: Fleet, store_url: str, store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    own = {"schedule": {"interval": {"hours": 24}}, **WEEKLY}
    config = make_config(store_url, partners=[{"name": "nightly", "base_url": fleet.url("nightly"), **own}])
    scheduler = HarvestScheduler(config, store, settings=FAST_HARVEST)
    nightly = config.partners[0]
    with caplog.at_level(logging.INFO, logger=sweep.report_log.name):
        scheduler._job(nightly)  # the job APScheduler runs: never swept, so due
        fleet.next_run()
        scheduler._job(nightly)  # swept a moment ago: not due
        assert records_held(store, ["nightly"])["nightly"] == (12, 0) and list_requests(fleet, "nightly") == 3
        with store.writing() as (conn, _):  # a week later
            save_sweep_in(conn, "nightly", SweepState(last_swept=int(time.time()) - WEEK))
        assert bring_forward(store, "nightly", int(time.time()))  # and the nightly harvest due again
        scheduler._job(nightly)
    assert records_held(store, ["nightly"])["nightly"] == (11, 1)
    logged = [r.getMessage() for r in caplog.records if r.name == sweep.report_log.name]
    assert logged == [
        "nightly: sweep: 12 listed, 0 of 12 live record(s) no longer listed: 0 turned into tombstones",
        "nightly: sweep: 11 listed, 1 of 12 live record(s) no longer listed: 1 turned into tombstones",
    ]
