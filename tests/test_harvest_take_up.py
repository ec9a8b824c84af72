"""Never looping, never stuck on a token (harvester.takeup): a list ended by a repeated token,
by going round, or by a token refused mid-list is taken up from the latest datestamp it gave,
or, when its records did not come in datestamp order, finished by halving date windows listed
with from/until; bounded in requests, and reported; the run is complete and moves `from`. A partner that refuses
a time in `from` though its Identify says seconds is listed with days, and that is remembered.
Exact record sets and request counts, against the fleet, on both backends."""

from __future__ import annotations

import threading
from dataclasses import replace
from pathlib import Path

from fleet import RESPONSE_DATE, Fleet, Spec, verbs, with_specs
from harvestkit import FAST_HARVEST, harvester_cli, partners_config, titles

from harvester import harvest
from oaiserver.config import Partner
from oaiserver.store import Store, harvest_history, harvest_state_of, quarantined


def run(store: Store, fleet: Fleet, name: str) -> harvest.RunReport:
    return harvest.run(store, Partner(name, fleet.url(name)), settings=FAST_HARVEST)


def assert_complete(store: Store, fleet: Fleet, name: str, report: harvest.RunReport, note: str) -> None:
    """Every record of the partner stored, nothing else; the run a success that says how its list
    was taken up, judged complete, moving `from` on."""
    want = fleet.expected(name)
    assert titles(store, name) == want.live and len(want.live) == fleet.specs[name].records
    assert store.identifiers(source=name) == set(want.live) and not quarantined(store, name)
    assert report.outcome == "success" and report.reason == note
    assert report.completeness is not None and report.completeness.verdict == "complete"
    state = harvest_state_of(store, name)
    assert state.next_from == RESPONSE_DATE and state.checkpoint is None
    assert harvest_history(store, name)[0].reason == note


def assert_second_run_changes_nothing(store: Store, fleet: Fleet, name: str, requests: dict[str, int]) -> None:
    before = {i: store.get(i) for i in store.identifiers(source=name)}
    asked = len(fleet.requests(name))
    again = run(store, fleet, name)
    assert again.outcome == "success" and again.reason is None and again.counts.received == 0
    assert verbs(fleet, name, asked) == requests
    assert {i: store.get(i) for i in store.identifiers(source=name)} == before


@with_specs(Spec("repeat", records=12, page_size=5, repeat_last_token=True))
def test_a_partner_repeating_its_last_token(store: Store, fleet: Fleet) -> None:
    """Its last page (records 10 and 11, one datestamp) carries the token that asked for it: the list
    (3 requests) is taken up from that datestamp (its one page, then again by its token: 2 requests),
    then from the second after it, which ends the list (noRecordsMatch: 1 request)."""
    report = run(store, fleet, "repeat")
    assert verbs(fleet, "repeat") == {"ListRecords": 6, "Identify": 1}
    assert_complete(
        store,
        fleet,
        "repeat",
        report,
        "the list repeated its token after page 3: taken up from 2024-01-02T01:00:00Z, then "
        "2024-01-02T01:00:01Z; 2 list(s), 5 request(s)",
    )
    assert report.counts.restarts == 2 and report.counts.added == 12
    assert_second_run_changes_nothing(store, fleet, "repeat", {"Identify": 1, "ListRecords": 1})


@with_specs(Spec("round", records=30, page_size=5, loop_at=2, loop_to=0))
def test_a_list_going_round_in_its_middle(store: Store, fleet: Fleet) -> None:
    """Page 2's token leads back to page 0, so records 15 to 29 are never reached by the chain: the
    list (pages 0, 1, 2, 0: 4 requests) is taken up from record 14's datestamp (records 14 to 29,
    going round again after its page 2: 4 requests), then from record 28's (1 page)."""
    report = run(store, fleet, "round")
    assert verbs(fleet, "round") == {"ListRecords": 9, "Identify": 1}
    assert_complete(
        store,
        fleet,
        "round",
        report,
        "the list repeated its token after page 4: taken up from 2024-01-02T11:00:00Z, then "
        "2024-01-03T22:00:00Z; 2 list(s), 7 request(s)",
    )
    assert_second_run_changes_nothing(store, fleet, "round", {"Identify": 1, "ListRecords": 1})


@with_specs(Spec("expiring", records=30, page_size=5, expire_after=2))
def test_a_token_expiring_at_page_3(store: Store, fleet: Fleet) -> None:
    """Every list gets two pages before its token is refused (badResumptionToken): each take-up
    starts at the latest datestamp the list before gave, until one ends (2 + 3 + 3 + 3 requests)."""
    report = run(store, fleet, "expiring")
    assert verbs(fleet, "expiring") == {"ListRecords": 11, "Identify": 1}
    assert_complete(
        store,
        fleet,
        "expiring",
        report,
        "the partner refused the token for page 3 (badResumptionToken): taken up from 2024-01-01T20:00:00Z, "
        "then 2024-01-02T16:00:00Z, then 2024-01-03T12:00:00Z; 3 list(s), 9 request(s)",
    )
    assert report.counts.added == 30 and report.counts.unchanged == 6  # records 8, 9, 16, 17, 24, 25 twice
    assert_second_run_changes_nothing(store, fleet, "expiring", {"Identify": 1, "ListRecords": 1})


DAYS_NOTE = (
    "it refused a time in `from` (badArgument) though its Identify says seconds: listed with days, and remembered"
)


@with_specs(Spec("days", records=30, page_size=5, expire_after=2, refuse_times=True))
def test_a_partner_refusing_times_is_harvested_with_days_and_that_is_remembered(
    store: Store, fleet: Fleet, store_url: str, tmp_path: Path
) -> None:
    """Its token expires at page 3; the take-up's `from` with a time is refused (1 request), so the
    lists are taken up by days: from 2024-01-01 (3 requests), 2024-01-02 (3: its records stop
    short of that day's end), 2024-01-03 (2). A later run sends a day at once, without Identify."""
    report = run(store, fleet, "days")
    assert verbs(fleet, "days") == {"ListRecords": 12, "Identify": 1}
    refused = [r.args for r in fleet.requests("days") if r.status == 200 and "T" in r.args.get("from", "")]
    assert refused == [{"verb": "ListRecords", "metadataPrefix": "oai_dc", "from": "2024-01-01T20:00:00Z"}]
    assert_complete(
        store,
        fleet,
        "days",
        report,
        "the partner refused the token for page 3 (badResumptionToken): taken up from 2024-01-01T20:00:00Z, "
        f"then 2024-01-02, then 2024-01-03; 3 list(s), 9 request(s); {DAYS_NOTE}",
    )
    learned = harvest_state_of(store, "days").learned or {}
    assert learned["granularity"] == "days" and "refused a time in `from`" in learned["why"]

    asked = len(fleet.requests("days"))
    assert_second_run_changes_nothing(store, fleet, "days", {"ListRecords": 1})
    assert fleet.requests("days")[asked].args["from"] == RESPONSE_DATE[:10]

    config = partners_config(tmp_path, store_url, fleet)
    status = harvester_cli(config, "status")
    assert "  from in days: it refused a time in `from` (badArgument) though its Identify says seconds" in status.stdout
    history = harvester_cli(config, "history", "days")
    assert DAYS_NOTE in history.stdout


@with_specs(Spec("byid", records=30, page_size=5, expire_after=2))
def test_a_token_expiring_in_a_list_of_identifiers(store: Store, fleet: Fleet) -> None:
    """The same take-ups by ListIdentifiers (mode identifiers), from the datestamps its headers give:
    a record listed again that we hold at its datestamp is not asked for again."""
    report = harvest.run(store, Partner("byid", fleet.url("byid"), mode="identifiers"), settings=FAST_HARVEST)
    assert verbs(fleet, "byid") == {"ListIdentifiers": 11, "Identify": 1, "GetRecord": 30}
    assert_complete(
        store,
        fleet,
        "byid",
        report,
        "the partner refused the token for page 3 (badResumptionToken): taken up from 2024-01-01T20:00:00Z, "
        "then 2024-01-02T16:00:00Z, then 2024-01-03T12:00:00Z; 3 list(s), 9 request(s)",
    )


WALKED = "the partner refused the token for page 3 (badResumptionToken): finished by 11 date window(s) (from/until), "


def windows_listed(fleet: Fleet, name: str) -> list[tuple[str, str]]:
    """The (from, until) of each list the partner was asked for without a token, in order."""
    return [(r.args["from"], r.args["until"]) for r in fleet.requests(name) if "until" in r.args]


@with_specs(Spec("unordered", records=30, page_size=5, expire_after=2, newest_first=True))
def test_a_list_not_in_datestamp_order_is_finished_by_halving_date_windows(store: Store, fleet: Fleet) -> None:
    """Taken up from its latest datestamp, a list giving its newest records first would skip the
    older ones: the run's window (Identify's earliestDatestamp to the first responseDate) is halved
    instead, each half listed with from/until from its start, a half failing again halved again:
    the first list and 9 windows fail (3 requests each: 2 pages and the refused token), 11 windows
    end, 6 of them empty (noRecordsMatch). 43 requests, within the budget of 1,000; the run is
    complete and moves `from`."""
    report = run(store, fleet, "unordered")
    assert verbs(fleet, "unordered") == {"ListRecords": 45, "Identify": 1}
    assert_complete(store, fleet, "unordered", report, WALKED + "43 request(s)")
    assert report.counts.restarts == 10 and report.counts.added == 30 and report.counts.unchanged == 100
    listed = windows_listed(fleet, "unordered")
    assert listed[:2] == [
        ("2024-01-01T00:00:00Z", "2024-07-01T23:59:59Z"),
        ("2024-01-01T00:00:00Z", "2024-04-01T11:59:59Z"),
    ]
    assert listed[-1] == ("2024-07-02T00:00:00Z", "2025-01-01T00:00:00Z") and len(listed) == 20
    assert_second_run_changes_nothing(store, fleet, "unordered", {"Identify": 1, "ListRecords": 1})


@with_specs(Spec("unordered_days", records=60, page_size=5, expire_after=2, newest_first=True, refuse_times=True))
def test_a_list_not_in_datestamp_order_from_a_partner_listed_in_days(store: Store, fleet: Fleet) -> None:
    """Every list longer than 2 pages (8 records) fails; the first window with times is refused, so
    the partner is listed with days: its windows are halved in whole days until each holds at
    most 2 pages (a day holds 9 or 10 records: halving goes down to single days, then stops
    at the 2-day windows that fit)."""
    report = run(store, fleet, "unordered_days")
    assert verbs(fleet, "unordered_days") == {"ListRecords": 56, "Identify": 1}
    halved = ["07-01", "03-31", "02-14", "01-22", "01-11", "01-05", "01-02"]  # each failing, then halved
    assert windows_listed(fleet, "unordered_days") == [
        ("2024-01-01T00:00:00Z", "2024-07-01T23:59:59Z"),  # refused (badArgument): listed again in days
        *[("2024-01-01", f"2024-{end}") for end in halved],
        ("2024-01-01", "2024-01-01"),
        ("2024-01-02", "2024-01-02"),
        ("2024-01-03", "2024-01-05"),  # fails: halved
        ("2024-01-03", "2024-01-03"),
        ("2024-01-04", "2024-01-05"),  # fails: halved
        ("2024-01-04", "2024-01-04"),
        ("2024-01-05", "2024-01-05"),
        ("2024-01-06", "2024-01-11"),  # fails: halved
        ("2024-01-06", "2024-01-08"),  # fails: halved
        ("2024-01-06", "2024-01-06"),
        ("2024-01-07", "2024-01-08"),
        ("2024-01-09", "2024-01-11"),  # and the later halves, empty (noRecordsMatch)
        ("2024-01-12", "2024-01-22"),
        ("2024-01-23", "2024-02-14"),
        ("2024-02-15", "2024-03-31"),
        ("2024-04-01", "2024-07-01"),
        ("2024-07-02", "2025-01-01"),
    ]
    assert_complete(
        store,
        fleet,
        "unordered_days",
        report,
        "the partner refused the token for page 3 (badResumptionToken): finished by 13 date window(s) "
        f"(from/until), 53 request(s); {DAYS_NOTE}",
    )
    assert_second_run_changes_nothing(store, fleet, "unordered_days", {"ListRecords": 1})


@with_specs(Spec("one_stamp_first", records=12, page_size=2, same_stamp=4, expire_after=2, newest_first=True))
def test_a_list_whose_first_pages_share_one_datestamp_is_not_taken_up_from_it(store: Store, fleet: Fleet) -> None:
    """Newest first, four records to a datestamp: the two pages before the refused token hold one
    datestamp, so the list looks in order. Taken up from that datestamp it would give only those
    four and lose the eight older records: a list not seen to rise is walked by date windows."""
    report = run(store, fleet, "one_stamp_first")
    want = fleet.expected("one_stamp_first")
    assert titles(store, "one_stamp_first") == want.live and len(want.live) == 12
    assert report.outcome == "success" and report.reason is not None and "date window(s)" in report.reason
    assert report.completeness is not None and report.completeness.verdict == "complete"
    assert_second_run_changes_nothing(store, fleet, "one_stamp_first", {"Identify": 1, "ListRecords": 1})


@with_specs(Spec("crowded", records=14, page_size=2, same_stamp=6, expire_after=2, newest_first=True))
def test_a_date_window_of_one_second_that_still_fails_fails_the_run(store: Store, fleet: Fleet) -> None:
    """Six records share each datestamp, and every list longer than 2 pages (4 records) fails: the
    window halved down to the one second of the first six records still fails (the first list
    and 24 windows, each half the one before, fail: 3 requests each), so the run fails with the
    reason, keeps what it stored, and `from` stays where it was."""
    report = run(store, fleet, "crowded")
    assert report.outcome == "failed"
    assert report.reason == (
        "crowded: the partner refused the token for page 3 (badResumptionToken); its records do not come in "
        "datestamp order, and a date window of one second (2024-01-01T00:00:00Z) fails too, so it cannot be "
        "finished: the partner answered with an OAI-PMH error: badResumptionToken: unknown or expired token "
        "(the records harvested are kept; the next run lists the window again)"
    )
    assert windows_listed(fleet, "crowded")[-1] == ("2024-01-01T00:00:00Z", "2024-01-01T00:00:00Z")
    assert verbs(fleet, "crowded") == {"ListRecords": 75, "Identify": 1}
    held = {f"oai:crowded.example.org:rec-{n:05d}" for n in (2, 3, 4, 5, 8, 9, 10, 11, 12, 13)}
    assert set(titles(store, "crowded")) == held  # 0, 1, 6 and 7 come on page 3 of their second
    state = harvest_state_of(store, "crowded")
    assert state.next_from is None and state.checkpoint is None


@with_specs(Spec("killed", records=30, page_size=5, expire_after=2, newest_first=True))
def test_a_run_stopped_while_walking_date_windows_resumes_inside_the_walk(store: Store, fleet: Fleet) -> None:
    """The walk is in the checkpoint (the windows still to list, and the token within the first):
    a run stopped after its 12th page leaves it there, and the next run goes on from that page's
    token. That token is the one the partner refuses: the window it was in is listed again from
    its start, then halved, and the walk goes on with the windows kept (51 requests in all, 46
    without the stop)."""
    stop = threading.Event()
    pages = iter(range(1, 100))
    first = harvest.run(
        store,
        Partner("killed", fleet.url("killed")),
        settings=FAST_HARVEST,
        stop=stop,
        on_page=lambda *_: stop.set() if next(pages) == 12 else None,
    )
    assert (
        first.outcome == "failed"
        and first.reason == "stopped after a page, as asked; the next run resumes from the checkpoint"
    )
    checkpoint = harvest_state_of(store, "killed").checkpoint or {}
    assert checkpoint["token"] == "2~2024-01-01T00:00:00Z~2024-01-12T10:29:59Z"  # page 3's: to be refused
    assert [tuple(w) for w in checkpoint["windows"]][-1] == (1719878400, 1735689600) and len(checkpoint["windows"]) == 6
    asked = len(fleet.requests("killed"))
    assert asked == 19
    second = run(store, fleet, "killed")
    assert second.resumed and second.outcome == "success"
    assert second.reason == (
        "the partner refused the token for page 1 (badResumptionToken): finished by 11 date window(s) (from/until), "
        "31 request(s)"
    )
    again = fleet.requests("killed")[asked + 2].args
    assert again == {
        "verb": "ListRecords",
        "metadataPrefix": "oai_dc",
        "from": "2024-01-01T00:00:00Z",
        "until": "2024-01-12T10:29:59Z",
    }
    assert verbs(fleet, "killed", asked) == {"Identify": 1, "ListRecords": 31}
    assert titles(store, "killed") == fleet.expected("killed").live
    assert harvest_state_of(store, "killed").next_from == RESPONSE_DATE


@with_specs(Spec("costly", records=30, page_size=5, expire_after=2, newest_first=True))
def test_a_walk_of_date_windows_is_bounded_in_requests(store: Store, fleet: Fleet) -> None:
    """With a budget of 20 requests, the walk stops once it has spent them: the run fails with the
    reason and `from` stays."""
    settings = replace(FAST_HARVEST, take_up_budget=20)
    report = harvest.run(store, Partner("costly", fleet.url("costly")), settings=settings)
    assert report.outcome == "failed" and "taking the list up stopped after 21 requests (at most 20)" in (
        report.reason or ""
    )
    assert verbs(fleet, "costly") == {"ListRecords": 24, "Identify": 1}
    assert harvest_state_of(store, "costly").next_from is None


@with_specs(Spec("byid_unordered", records=30, page_size=5, expire_after=2, newest_first=True))
def test_a_list_of_identifiers_not_in_datestamp_order_is_finished_by_date_windows(store: Store, fleet: Fleet) -> None:
    """The same walk by ListIdentifiers (mode identifiers): a record listed again that we hold at its
    datestamp is not asked for again, so each record costs one GetRecord."""
    partner = Partner("byid_unordered", fleet.url("byid_unordered"), mode="identifiers")
    report = harvest.run(store, partner, settings=FAST_HARVEST)
    assert verbs(fleet, "byid_unordered") == {"ListIdentifiers": 45, "Identify": 1, "GetRecord": 30}
    assert_complete(store, fleet, "byid_unordered", report, WALKED + "43 request(s)")
