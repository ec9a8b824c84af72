"""A partner's `mode`: `identifiers` harvests with ListIdentifiers and a GetRecord per record;
`auto` (the default) falls back to that for the rest of a run when ListRecords fails (HTTP 5xx
after retries, an HTML page, pages that do not parse) while ListIdentifiers works;
`list_records` never switches. Exact record sets and request counts, on both backends."""

from __future__ import annotations

import threading
from typing import Any

import pytest
from fleet import RESPONSE_DATE, Fleet, Spec, items, verbs, with_specs
from harvestkit import FAST_HARVEST, FakePartner, titles, xml
from werkzeug.wrappers import Response

from harvester import harvest
from harvester.client import Client
from harvester.identifiers import get_record
from oaiserver.config import Partner
from oaiserver.store import Store, harvest_state_of, quarantined

# The note of a run that `auto` switched to ListIdentifiers and GetRecord.
FELL_BACK = "harvested by ListIdentifiers and GetRecord, ListRecords failing ("


def run(store: Store, fleet: Fleet, name: str, *, full: bool = False, **partner: Any) -> harvest.RunReport:
    return harvest.run(store, Partner(name, fleet.url(name), **partner), settings=FAST_HARVEST, full=full)


def assert_exact(store: Store, fleet: Fleet, name: str) -> None:
    want = fleet.expected(name)
    assert titles(store, name) == want.live
    assert store.identifiers(source=name) - set(want.live) == set(want.deleted)
    assert not quarantined(store, name)


# ---- mode: identifiers --------------------------------------------------------------------------


@with_specs(Spec("byid", records=13, page_size=5, deleted=frozenset({4, 11})))
def test_mode_identifiers_lists_headers_and_asks_for_each_live_record(store: Store, fleet: Fleet) -> None:
    report = run(store, fleet, "byid", mode="identifiers")
    assert report.outcome == "success" and report.reason is None
    assert_exact(store, fleet, "byid")
    # Three pages of headers; a GetRecord for each live one (a deleted header is a tombstone as it stands).
    assert verbs(fleet, "byid") == {"ListIdentifiers": 3, "GetRecord": 11}
    assert report.counts.received == 13 and report.counts.added == 13 and report.counts.deleted == 2
    assert report.completeness is not None and report.completeness.verdict == "complete"
    assert harvest_state_of(store, "byid").next_from == RESPONSE_DATE

    asked = len(fleet.requests("byid"))
    again = run(store, fleet, "byid", mode="identifiers")  # incremental: nothing new
    assert again.outcome == "success" and verbs(fleet, "byid", asked) == {"Identify": 1, "ListIdentifiers": 1}
    asked = len(fleet.requests("byid"))
    whole = run(store, fleet, "byid", mode="identifiers", full=True)  # `full` asks for every record again
    assert whole.outcome == "success" and whole.counts.unchanged == 13 and whole.counts.added == 0
    assert verbs(fleet, "byid", asked) == {"ListIdentifiers": 3, "GetRecord": 11}
    assert_exact(store, fleet, "byid")


@with_specs(Spec("same", records=10, page_size=4))
def test_identifiers_and_list_records_store_the_same_records(store: Store, fleet: Fleet) -> None:
    """The per-record path converts and stores as a ListRecords page does: the same records
    harvested the other way change nothing."""
    assert run(store, fleet, "same", mode="identifiers").counts.added == 10
    before = {i: store.get(i) for i in store.identifiers(source="same")}
    report = run(store, fleet, "same", mode="list_records", full=True)
    assert report.counts.unchanged == 10 and report.counts.changed == 0
    assert {i: store.get(i) for i in store.identifiers(source="same")} == before


# ---- mode: auto -------------------------------------------------------------------------------------


@pytest.mark.parametrize(("how", "list_requests"), [("500", 3), ("html", 1)])
def test_auto_falls_back_when_list_records_fails_while_identifiers_works(
    store: Store, how: Any, list_requests: int
) -> None:
    """HTTP 500 is retried (FAST: twice) before ListRecords is given up; an HTML page is not."""
    with Fleet([Spec("nolist", records=12, page_size=5, list_records_fails=how)]) as fleet:
        report = run(store, fleet, "nolist")
        assert report.outcome == "success" and (report.reason or "").startswith(FELL_BACK)
        assert_exact(store, fleet, "nolist")
        assert verbs(fleet, "nolist") == {"ListRecords": list_requests, "ListIdentifiers": 3, "GetRecord": 12}
        assert harvest_state_of(store, "nolist").next_from == RESPONSE_DATE

        # Not remembered: the next run tries ListRecords first, and falls back again.
        asked = len(fleet.requests("nolist"))
        again = run(store, fleet, "nolist")
        assert again.outcome == "success"
        assert verbs(fleet, "nolist", asked) == {"Identify": 1, "ListRecords": list_requests, "ListIdentifiers": 1}

        fleet.repair("nolist")
        asked = len(fleet.requests("nolist"))
        mended = run(store, fleet, "nolist")
        assert mended.outcome == "success" and verbs(fleet, "nolist", asked) == {"Identify": 1, "ListRecords": 1}
        assert_exact(store, fleet, "nolist")


@pytest.mark.parametrize("how", ["500", "html"])
def test_list_records_mode_fails_and_stores_nothing(store: Store, how: Any) -> None:
    with Fleet([Spec("nolist", records=12, page_size=5, list_records_fails=how)]) as fleet:
        report = run(store, fleet, "nolist", mode="list_records")
        assert report.outcome == "failed"
        assert set(verbs(fleet, "nolist")) == {"ListRecords"}
    assert not store.identifiers(source="nolist") and harvest_state_of(store, "nolist").next_from is None


def test_auto_fails_when_list_identifiers_fails_too(store: Store) -> None:
    def broken(params: dict[str, str], n: int) -> Response:
        return xml("<html><body>maintenance</body></html>", mimetype="text/html")

    with FakePartner(broken) as partner:
        report = harvest.run(store, Partner("down", partner.url), settings=FAST_HARVEST)
    assert report.outcome == "failed" and "HTML page" in (report.reason or "")
    assert [r["verb"] for r in partner.requests] == ["ListRecords", "ListIdentifiers"]
    assert harvest_state_of(store, "down").next_from is None


@with_specs(Spec("late", records=20, page_size=5, garbled_page=2))
def test_auto_after_a_broken_page_asks_only_for_the_records_not_yet_stored(store: Store, fleet: Fleet) -> None:
    report = run(store, fleet, "late")
    assert report.outcome == "success"
    assert_exact(store, fleet, "late")
    asked = [e.args["identifier"] for e in fleet.requests("late") if e.args.get("verb") == "GetRecord"]
    assert asked == [i.identifier for i in items(fleet.specs["late"])[10:]]
    assert verbs(fleet, "late") == {"ListRecords": 3, "ListIdentifiers": 4, "GetRecord": 10}


@with_specs(Spec("stopped", records=15, page_size=5, list_records_fails="html"))
def test_a_run_stopped_on_the_per_record_path_resumes_on_it(store: Store, fleet: Fleet) -> None:
    """The checkpoint says how its list is read: the next run resumes at its ListIdentifiers
    token, and does not try ListRecords again for that list."""
    stop = threading.Event()

    def on_page(name: str, counts: harvest.Counts, page: Any) -> None:
        stop.set()  # after the first page of headers and its records are committed

    first = harvest.run(
        store, Partner("stopped", fleet.url("stopped")), settings=FAST_HARVEST, stop=stop, on_page=on_page
    )
    assert first.outcome == "failed" and len(titles(store, "stopped")) == 5
    asked = len(fleet.requests("stopped"))
    second = run(store, fleet, "stopped")
    assert second.outcome == "success" and second.resumed
    assert verbs(fleet, "stopped", asked) == {"ListIdentifiers": 2, "GetRecord": 10}
    assert_exact(store, fleet, "stopped")


# ---- GetRecord, one record --------------------------------------------------------------------------


@with_specs(Spec("one", records=3, unparsable=frozenset({1})))
def test_get_record_names_each_failure_by_identifier(fleet: Fleet) -> None:
    spec = fleet.specs["one"]
    partner = Partner("one", fleet.url("one"))
    with Client(partner.base_url, FAST_HARVEST.client) as client:
        good = get_record(client, partner, items(spec)[0].identifier)
        bad = get_record(client, partner, items(spec)[1].identifier)
        gone = get_record(client, partner, "oai:one.example.org:nothing")
    assert good is not None and [r.identifier for r in good.records] == [items(spec)[0].identifier]
    assert bad is not None and not bad.records
    assert [where for where, _ in bad.failures] == [items(spec)[1].identifier]
    assert "not well-formed XML" in bad.failures[0][1]
    assert gone is None
