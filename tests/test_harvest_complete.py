"""A run proves itself: what the partner announced (completeListSize) against what arrived and
was stored, in the run line, `history`, `status` (and their --json) and the metrics."""

from __future__ import annotations

import json
import logging
import math
import threading
from pathlib import Path
from typing import Any

import pytest
from conftest import make_config
from fleet import Fleet, Spec, with_specs
from harvestkit import (
    FAST_HARVEST,
    FakePartner,
    PagedPartner,
    by_partner,
    harvester_cli,
    oai,
    partners_config,
    record,
    xml,
)
from prometheus_client import CollectorRegistry, generate_latest
from werkzeug.wrappers import Response

from harvester import harvest
from harvester.completeness import COMPLETE, SHORT, UNKNOWN, Completeness, judge, see_page
from oaiserver.metrics import HarvestCollector
from oaiserver.store import Store, finish_run, harvest_summary, start_run

FAST = ["--timeout", "5", "--retries", "0", "--backoff", "0.01"]


# ---- the verdict, page by page -----------------------------------------------------------------


def test_a_list_is_judged_against_its_first_announcement() -> None:
    tally = see_page(None, "0", first=True, announced=12, more=True, received=5, stored=5)
    tally = see_page(tally, "0", first=False, announced=12, more=True, received=5, stored=4)
    tally = see_page(tally, "0", first=False, announced=12, more=False, received=2, stored=2)
    assert judge(tally) == Completeness(SHORT, 12, 12, 11, shortfall=1)


def test_a_list_on_one_page_announces_what_it_holds_and_an_empty_one_nothing() -> None:
    one = see_page(None, "0", first=True, announced=None, more=False, received=3, stored=3)
    assert judge(one).verdict == COMPLETE and judge(one).announced == 3
    empty = see_page(None, "0", first=True, announced=None, more=False, received=0, stored=0)
    assert judge(empty) == Completeness(COMPLETE, 0, 0, 0)


def test_several_pages_without_completelistsize_are_unknown() -> None:
    tally = see_page(None, "0", first=True, announced=None, more=True, received=5, stored=5)
    tally = see_page(tally, "0", first=False, announced=None, more=False, received=1, stored=1)
    assert judge(tally) == Completeness(UNKNOWN, None, 6, 6)
    assert judge(tally).text() == "completeness unknown (no completeListSize announced; 6 stored)"


def test_a_list_restarted_from_its_first_page_is_tallied_afresh() -> None:
    tally = see_page(None, "0", first=True, announced=10, more=True, received=5, stored=5)
    tally = see_page(tally, "0", first=True, announced=10, more=True, received=5, stored=5)
    tally = see_page(tally, "0", first=False, announced=10, more=False, received=5, stored=5)
    assert judge(tally) == Completeness(COMPLETE, 10, 10, 10)


def test_each_set_is_a_list_of_its_own() -> None:
    tally = see_page(None, "0", first=True, announced=4, more=False, received=4, stored=4)
    tally = see_page(tally, "1", first=True, announced=9, more=True, received=5, stored=5)
    tally = see_page(tally, "1", first=False, announced=9, more=False, received=2, stored=2)
    judged = judge(tally)
    assert (judged.verdict, judged.announced, judged.stored, judged.shortfall) == (SHORT, 13, 11, 2)


def test_a_checkpoint_without_a_tally_cannot_prove_the_list() -> None:
    tally = see_page({}, "0", first=False, announced=12, more=False, received=2, stored=2)
    assert judge(tally).verdict == UNKNOWN


# ---- against the fleet ---------------------------------------------------------------------------


@with_specs(
    Spec("honest", records=12, page_size=5, deleted=frozenset({3})),
    Spec("short", records=12, page_size=5, announce=500),
    Spec("small", records=3, page_size=5),
)
def test_run_lines_say_whether_each_run_is_complete(fleet: Fleet, tmp_path: Path, store_url: str) -> None:
    config = partners_config(tmp_path, store_url, fleet)
    result = harvester_cli(config, "run", *FAST)
    assert result.exit_code == 0, result.output  # a shortfall is a warning, not a failure
    got = by_partner(result)
    # tombstones are stored records: 12 received, 12 stored, one of them deleted
    assert (
        "honest: success: 3 page(s), 12 record(s) (1 deleted): 12 added; complete (12 announced, 12 stored)"
        in (got["honest"])
    )
    assert "; short by 488 (500 announced, 12 stored);" in got["short"]
    assert "; complete (3 announced, 3 stored);" in got["small"]

    history = json.loads(harvester_cli(config, "history", "short", "--json").stdout)
    assert history["runs"][0]["completeness"] == {
        "verdict": "short",
        "announced": 500,
        "received": 12,
        "stored": 12,
        "shortfall": 488,
        "changes": [],
    }
    text = harvester_cli(config, "history", "short").stdout
    assert "12 added; short by 488 (500 announced, 12 stored)" in text

    status = json.loads(harvester_cli(config, "status", "--json").stdout)
    by_name = {p["name"]: p for p in status["partners"]}
    assert by_name["honest"]["last_complete"] == by_name["honest"]["last_run"]["finished"]
    assert by_name["short"]["last_complete"] is None
    assert by_name["short"]["last_run"]["completeness"]["shortfall"] == 488
    printed = harvester_cli(config, "status").stdout
    assert "  shortfall: #" in printed and "short by 488 (500 announced, 12 stored)" in printed
    assert printed.count("last complete harvest: none yet") == 1


@with_specs(Spec("honest", records=12, page_size=5))
def test_an_incremental_run_is_judged_against_the_announcement_for_its_from(
    fleet: Fleet, tmp_path: Path, store_url: str
) -> None:
    # Two records every five hours from 2024-01-01T00:00Z: from 2024-01-02 the list holds the last two.
    config = partners_config(tmp_path, store_url, fleet, {"honest": {"from": "2024-01-02"}})
    result = harvester_cli(config, "run", *FAST)
    assert result.exit_code == 0, result.output
    assert "2 record(s): 2 added; complete (2 announced, 2 stored)" in by_partner(result)["honest"]
    again = harvester_cli(config, "run", *FAST)  # from the partner's responseDate: nothing new
    assert "no records; complete (0 announced, 0 stored)" in by_partner(again)["honest"], again.output


@with_specs(Spec("honest", records=12, page_size=5))
def test_a_resumed_run_judges_the_whole_window(fleet: Fleet, store_url: str) -> None:
    partner = make_config(store_url, partners=[{"name": "honest", "base_url": fleet.url("honest")}]).partners[0]
    store = Store(store_url)
    try:
        stop = threading.Event()
        first = harvest.run(store, partner, settings=FAST_HARVEST, stop=stop, on_page=lambda *_: stop.set())
        assert first.outcome == harvest.FAILED and first.completeness is None
        second = harvest.run(store, partner, settings=FAST_HARVEST)
    finally:
        store.close()
    assert second.resumed and second.counts.received == 7
    assert second.completeness == Completeness(COMPLETE, 12, 12, 12)


def test_a_partner_that_announces_nothing_is_unknown(tmp_path: Path, store_url: str) -> None:
    with FakePartner(PagedPartner([[record("oai:n:1"), record("oai:n:2")], [record("oai:n:3")]])) as fake:
        config = partners_config(tmp_path, store_url, {"nosize": fake.url})
        result = harvester_cli(config, "run", *FAST)
    assert result.exit_code == 0, result.output
    assert "3 added; completeness unknown (no completeListSize announced; 3 stored);" in by_partner(result)["nosize"]
    status = harvester_cli(config, "status").stdout
    assert "completeness: #1 completeness unknown" in status and "last complete harvest: none yet" in status


def sized(size: int, token: str | None, records: list[str]) -> str:
    resumption = "" if token is None else f'<resumptionToken completeListSize="{size}">{token}</resumptionToken>'
    return oai(f"<ListRecords>{''.join(records)}{resumption}</ListRecords>")


def test_an_announcement_that_changes_mid_list_is_noted(tmp_path: Path, store_url: str) -> None:
    def handler(params: dict[str, str], n: int) -> Response:
        if params.get("resumptionToken") == "t1":
            return xml(sized(3, "", [record("oai:m:3")]))
        return xml(sized(4, "t1", [record("oai:m:1"), record("oai:m:2")]))

    with FakePartner(handler) as fake:
        result = harvester_cli(partners_config(tmp_path, store_url, {"moving": fake.url}), "run", *FAST)
    assert (
        "short by 1 (4 announced, 3 stored); the announced size changed while the list was read: 3"
        in (by_partner(result)["moving"])
    ), result.output


def test_a_run_is_short_by_the_records_it_could_not_store(tmp_path: Path, store_url: str) -> None:
    broken = "<record><header><identifier>oai:bad:1</identifier><datestamp>never</datestamp></header></record>"
    nameless = "<record><header><datestamp>2024-01-01</datestamp></header></record>"
    pages = {"quarantining": [record("oai:b:2"), broken], "partial": [record("oai:c:2"), nameless]}
    with (
        FakePartner(lambda params, n: xml(sized(2, "", pages["quarantining"]))) as one,
        FakePartner(lambda params, n: xml(sized(2, "", pages["partial"]))) as other,
    ):
        config = partners_config(tmp_path, store_url, {"quarantining": one.url, "partial": other.url})
        result = harvester_cli(config, "run", *FAST)
    assert result.exit_code == 2
    short = "short by 1 (2 announced, 2 received, 1 stored)"
    assert by_partner(result)["quarantining"].startswith("quarantining: success: ")
    assert f"1 added, 1 quarantined; {short}" in by_partner(result)["quarantining"]
    assert by_partner(result)["partial"].endswith(f"1 added, 1 failed; {short}")


# ---- metrics ----------------------------------------------------------------------------------------


def scrape(store: Store, now: float) -> str:
    registry = CollectorRegistry()
    registry.register(HarvestCollector(harvest_summary(store), now=now))
    return generate_latest(registry).decode()


def run_with(store: Store, partner: str, started: int, outcome: str, completeness: dict[str, Any] | None) -> None:
    run_id = start_run(store, partner, "me", started=started, from_date=None, resumed=False)
    counts: dict[str, Any] = {"received": 12} | ({"completeness": completeness} if completeness else {})
    finish_run(store, run_id, partner, finished=started + 10, outcome=outcome, reason=None, counts=counts)


def test_metrics_give_the_shortfall_and_the_time_since_the_last_complete_run(store: Store) -> None:
    complete = Completeness(COMPLETE, 12, 12, 12).as_dict()
    short = Completeness(SHORT, 500, 12, 12, 488).as_dict()
    run_with(store, "alpha", 1_000, "success", complete)
    run_with(store, "alpha", 2_000, "success", short)
    run_with(store, "alpha", 3_000, "failed", None)  # not judged: the figures stay the last judged run's
    run_with(store, "beta", 1_000, "success", Completeness(UNKNOWN, None, 12, 12).as_dict())
    run_with(store, "gamma", 1_000, "success", complete)
    text = scrape(store, now=5_010)
    assert 'harvest_shortfall_records{partner="alpha"} 488.0' in text
    assert 'harvest_seconds_since_complete{partner="alpha"} 4000.0' in text
    assert 'harvest_shortfall_records{partner="beta"}' not in text  # unknown: no figure
    assert 'harvest_seconds_since_complete{partner="beta"} +Inf' in text
    assert 'harvest_shortfall_records{partner="gamma"} 0.0' in text
    assert math.isclose(4000.0, float(text.split('since_complete{partner="gamma"} ')[1].split()[0]))


@with_specs(Spec("short", records=12, page_size=5, announce=500))
def test_a_shortfall_is_logged_as_a_warning(fleet: Fleet, store_url: str, caplog: pytest.LogCaptureFixture) -> None:
    partner = make_config(store_url, partners=[{"name": "short", "base_url": fleet.url("short")}]).partners[0]
    store = Store(store_url)
    try:
        with caplog.at_level(logging.INFO, logger=harvest.report_log.name):
            report = harvest.run(store, partner, settings=FAST_HARVEST)
    finally:
        store.close()
    assert report.outcome == harvest.SUCCESS and report.exit_code == 0
    logged = [r for r in caplog.records if r.name == harvest.report_log.name]
    assert [r.levelno for r in logged] == [logging.WARNING] and "short by 488" in logged[0].getMessage()
