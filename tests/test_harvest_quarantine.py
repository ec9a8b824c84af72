"""Never stalled by one record: a ListRecords page that cannot be read is harvested again by
ListIdentifiers and GetRecord, everything else is stored, only the truly broken records are
quarantined (by identifier, with the reason), `from` moves on, and each later run retries the
quarantine by GetRecord, until the partner mends the record. On both backends, against the
partner fleet (tests/fleet.py)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from click.testing import CliRunner
from fleet import LONG, NO_DATESTAMP, RESPONSE_DATE, UNPARSABLE, Fleet, Spec, items, verbs, with_specs
from harvestkit import FAST_HARVEST, partners_config, titles
from prometheus_client import CollectorRegistry, generate_latest

from harvester import harvest
from harvester.cli import main
from oaiserver.config import Partner
from oaiserver.metrics import HarvestCollector
from oaiserver.store import Store, harvest_state_of, harvest_summary, quarantined

# What each fleet reason looks like in the quarantine's own words.
REASONS = {
    UNPARSABLE: "not well-formed XML",
    LONG: "longer than 1024 bytes",
    NO_DATESTAMP: "the datestamp '' is not a date",
}

# The note of a run that `auto` switched to ListIdentifiers and GetRecord.
FELL_BACK = "harvested by ListIdentifiers and GetRecord, ListRecords failing ("


def run(store: Store, fleet: Fleet, name: str, **partner: Any) -> harvest.RunReport:
    return harvest.run(store, Partner(name, fleet.url(name), **partner), settings=FAST_HARVEST)


def assert_holds_what_it_should(store: Store, fleet: Fleet, name: str) -> None:
    """Exactly the expected records, each once with its title; exactly the truly broken ones in
    quarantine, each with its reason."""
    want = fleet.expected(name)
    assert titles(store, name) == want.live
    assert store.identifiers(source=name) - set(want.live) == set(want.deleted)
    held = {q.identifier: q.reason for q in quarantined(store, name)}
    assert set(held) == set(want.quarantined)
    for identifier, why in want.quarantined.items():
        assert REASONS[why] in held[identifier], held[identifier]


# ---- one run isolates what is broken -------------------------------------------------------------


@with_specs(Spec("poison", records=12, page_size=5, unparsable=frozenset({7}), deleted=frozenset({9})))
def test_a_truly_broken_record_is_quarantined_and_the_rest_of_its_page_stored(store: Store, fleet: Fleet) -> None:
    report = run(store, fleet, "poison")
    assert report.outcome == "success" and report.exit_code == 0, report.reason
    assert_holds_what_it_should(store, fleet, "poison")
    broken = items(fleet.specs["poison"])[7].identifier
    assert (report.counts.quarantined, report.counts.failed) == (1, 0)
    assert (report.reason or "").startswith(f"1 record(s) quarantined ({broken}: GetRecord: ")
    # ListRecords' first page, its broken second; the list by ListIdentifiers; a GetRecord for
    # each live record of the broken page on (5..11, less the tombstone 9): nothing asked twice.
    assert verbs(fleet, "poison") == {"ListRecords": 2, "ListIdentifiers": 3, "GetRecord": 6}
    asked = [e.args["identifier"] for e in fleet.requests("poison") if e.args.get("verb") == "GetRecord"]
    assert asked == [i.identifier for i in items(fleet.specs["poison"])[5:] if not i.deleted]
    assert harvest_state_of(store, "poison").next_from == RESPONSE_DATE, "the partner moves on"


@with_specs(Spec("listonly", records=12, page_size=5, broken_in_list=frozenset({2, 8})))
def test_records_broken_in_listrecords_only_are_all_had_by_getrecord(store: Store, fleet: Fleet) -> None:
    report = run(store, fleet, "listonly")
    assert report.outcome == "success" and (report.reason or "").startswith(FELL_BACK)
    assert_holds_what_it_should(store, fleet, "listonly")
    assert not quarantined(store, "listonly")
    assert verbs(fleet, "listonly") == {"ListRecords": 1, "ListIdentifiers": 3, "GetRecord": 12}


@with_specs(Spec("garbled", records=15, page_size=5, garbled_page=1))
def test_a_page_that_is_not_xml_is_had_record_by_record(store: Store, fleet: Fleet) -> None:
    report = run(store, fleet, "garbled")
    assert report.outcome == "success" and (report.reason or "").startswith(FELL_BACK)
    assert_holds_what_it_should(store, fleet, "garbled")
    assert verbs(fleet, "garbled") == {"ListRecords": 2, "ListIdentifiers": 3, "GetRecord": 10}
    assert report.counts.added == 15


@with_specs(Spec("html", records=15, page_size=5, html_page=2))
def test_an_html_page_with_status_500_is_had_record_by_record(store: Store, fleet: Fleet) -> None:
    report = run(store, fleet, "html")
    assert report.outcome == "success" and (report.reason or "").startswith(FELL_BACK)
    assert_holds_what_it_should(store, fleet, "html")
    # The HTML 500 is asked for three times (FAST retries twice): then the page is given up.
    assert verbs(fleet, "html") == {"ListRecords": 2 + 3, "ListIdentifiers": 3, "GetRecord": 5}


@with_specs(Spec("unstorable", records=6, long_identifier=frozenset({1}), no_datestamp=frozenset({4})))
def test_records_refused_or_not_storable_are_quarantined_by_identifier(store: Store, fleet: Fleet) -> None:
    report = run(store, fleet, "unstorable")
    assert report.outcome == "success", report.reason
    assert_holds_what_it_should(store, fleet, "unstorable")
    assert verbs(fleet, "unstorable") == {"ListRecords": 2}, "a page that parses needs no GetRecord"
    assert harvest_state_of(store, "unstorable").next_from == RESPONSE_DATE


@with_specs(Spec("strictlist", records=15, page_size=5, garbled_page=1))
def test_mode_list_records_never_switches(store: Store, fleet: Fleet) -> None:
    report = run(store, fleet, "strictlist", mode="list_records")
    assert report.outcome == "failed" and "not well-formed XML" in (report.reason or "")
    assert verbs(fleet, "strictlist") == {"ListRecords": 2}
    assert len(titles(store, "strictlist")) == 5 and not quarantined(store, "strictlist")
    assert harvest_state_of(store, "strictlist").next_from is None


# ---- later runs retry the quarantine -------------------------------------------------------------


@with_specs(Spec("mend", records=12, page_size=5, unparsable=frozenset({3, 7}), no_datestamp=frozenset({10})))
def test_later_runs_retry_the_quarantine_and_converge_once_the_partner_mends(store: Store, fleet: Fleet) -> None:
    spec = fleet.specs["mend"]
    first = run(store, fleet, "mend")
    assert first.outcome == "success" and first.counts.quarantined == 3
    assert_holds_what_it_should(store, fleet, "mend")
    broken = {items(spec)[n].identifier for n in (3, 7, 10)}

    asked = len(fleet.requests("mend"))
    second = run(store, fleet, "mend")  # nothing mended: the quarantine is tried, and stays
    assert second.outcome == "success" and second.counts.recovered == 0
    assert verbs(fleet, "mend", asked) == {"GetRecord": 3, "Identify": 1, "ListRecords": 1}
    assert {q.identifier: q.tries for q in quarantined(store, "mend")} == dict.fromkeys(broken, 2)
    assert_holds_what_it_should(store, fleet, "mend")

    fleet.repair("mend")
    asked = len(fleet.requests("mend"))
    third = run(store, fleet, "mend")
    assert third.outcome == "success" and third.reason is None
    assert third.counts.recovered == 3
    assert verbs(fleet, "mend", asked) == {"GetRecord": 3, "Identify": 1, "ListRecords": 1}
    assert not quarantined(store, "mend")
    assert_holds_what_it_should(store, fleet, "mend")  # all twelve, each once
    assert len(titles(store, "mend")) == 12

    asked = len(fleet.requests("mend"))
    fourth = run(store, fleet, "mend")
    assert fourth.outcome == "success" and verbs(fleet, "mend", asked) == {"Identify": 1, "ListRecords": 1}


@with_specs(Spec("cured", records=12, page_size=5, unparsable=frozenset({6})))
def test_a_quarantined_record_listed_well_later_leaves_the_quarantine(store: Store, fleet: Fleet) -> None:
    """Stored from a ListRecords page (a full harvest, the partner mended): it leaves quarantine
    in the same transaction."""
    assert run(store, fleet, "cured").counts.quarantined == 1
    fleet.repair("cured")
    report = harvest.run(store, Partner("cured", fleet.url("cured")), settings=FAST_HARVEST, full=True)
    assert report.outcome == "success" and not quarantined(store, "cured")
    assert len(titles(store, "cured")) == 12


# ---- status, history, metrics -----------------------------------------------------------------------


@with_specs(Spec("shown", records=12, page_size=5, unparsable=frozenset({7}), no_datestamp=frozenset({2})))
def test_status_history_and_metrics_show_the_quarantine(
    store: Store, store_url: str, fleet: Fleet, tmp_path: Path
) -> None:
    run(store, fleet, "shown")
    spec = fleet.specs["shown"]
    seven, two = items(spec)[7].identifier, items(spec)[2].identifier
    config = partners_config(tmp_path, store_url, fleet)
    cli = CliRunner()

    text = cli.invoke(main, ["-c", str(config), "status"], catch_exceptions=False).stdout
    assert "  quarantine: 2 record(s), retried by GetRecord at each run" in text
    # Refused on ListRecords' first page, and again by GetRecord once the second page broke.
    assert f"    {two}: the datestamp '' is not a date (tried 2 time(s) since " in text
    assert f"    {seven}: GetRecord: " in text

    shown = json.loads(cli.invoke(main, ["-c", str(config), "status", "--json"]).stdout)["partners"][0]
    assert shown["quarantine"]["count"] == 2
    assert {q["identifier"] for q in shown["quarantine"]["records"]} == {seven, two}
    assert {q["identifier"]: q["tries"] for q in shown["quarantine"]["records"]} == {seven: 1, two: 2}
    assert all(q["first_seen"].endswith("Z") for q in shown["quarantine"]["records"])

    text = cli.invoke(main, ["-c", str(config), "history", "shown"], catch_exceptions=False).stdout
    assert "shown: 2 record(s) in quarantine now" in text
    assert "2 quarantined" in text and f"    not harvested: {seven}: GetRecord: " in text
    history = json.loads(cli.invoke(main, ["-c", str(config), "history", "shown", "--json"]).stdout)
    assert history["runs"][0]["counts"]["quarantined"] == 2 and history["quarantine"]["count"] == 2
    assert {f["identifier"] for f in history["runs"][0]["failures"]} == {seven, two}

    registry = CollectorRegistry()
    registry.register(HarvestCollector(harvest_summary(store)))
    assert 'harvest_quarantined_records{partner="shown"} 2.0' in generate_latest(registry).decode()
