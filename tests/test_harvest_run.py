"""One harvest run against a fake partner, on both backends: incremental `from`, checkpoints,
outcomes and their reasons, tombstones, idempotence, leases and stopping."""

from __future__ import annotations

import re
import threading
from dataclasses import replace
from typing import Any

import pytest
from conftest import OAI_SCHEMA, make_config, make_record
from harvestkit import FAST, FAST_HARVEST, FakePartner, PagedPartner, error, list_records, record, xml
from lxml import etree
from werkzeug.wrappers import Response

from harvester import errors as err
from harvester import harvest
from oaiserver.config import ConfigError, Partner, partner_set
from oaiserver.store import Store, acquire_lease, harvest_history, harvest_state_of, quarantined, shadowed_counts

DAY = "YYYY-MM-DD"


def pages_of(*sizes: int, prefix: str = "oai:partner.example.org:") -> list[list[str]]:
    out, n = [], 0
    for size in sizes:
        out.append([record(f"{prefix}{n + i}", f"Title {n + i}") for i in range(size)])
        n += size
    return out


def run(store: Store, partner: Partner, **kwargs: Any) -> harvest.RunReport:
    return harvest.run(store, partner, settings=kwargs.pop("settings", FAST_HARVEST), **kwargs)


def test_records_are_stored_with_provenance_and_a_valid_about(store: Store) -> None:
    extra = '<dc:creator xml:lang="en_GB">Smith &amp; Sons</dc:creator><dc:subject><![CDATA[a <b>]]></dc:subject>'
    pages = [[record("oai:p:1", "Zürich", extra=extra), record("oai:p:2", deleted=True)]]
    with FakePartner(PagedPartner(pages)) as fake:
        report = run(store, Partner("p", fake.url))
    assert report.outcome == "success" and report.counts.deleted == 1
    live = store.get("oai:p:1")
    assert live is not None and live.source == "p" and live.sets == [partner_set("p")]
    assert [(v.element, v.value, v.lang) for v in live.dc] == [
        ("title", "Zürich", None),
        ("creator", "Smith & Sons", "en-GB"),
        ("subject", "a <b>", None),
    ]
    assert live.provenance == {
        "baseURL": fake.url,
        "identifier": "oai:p:1",
        "datestamp": "2024-04-01T10:00:00Z",
        "metadataNamespace": "http://www.openarchives.org/OAI/2.0/oai_dc/",
        "harvestDate": "2024-05-01T12:00:00Z",
        "metadataPrefix": "oai_dc",
        "setSpecs": "",
    }
    assert live.raw_xml is not None and live.raw_xml.startswith("<record") and "Zürich" in live.raw_xml
    assert live.about is not None
    about = etree.fromstring(live.about)
    assert OAI_SCHEMA.validate(about), OAI_SCHEMA.error_log
    tomb = store.get("oai:p:2")
    assert tomb is not None and tomb.deleted and tomb.metadata == {"oai_dc": ""} and tomb.about is None


def test_a_first_run_takes_everything_and_the_next_starts_at_the_partners_response_date(store: Store) -> None:
    partner_pages = PagedPartner(pages_of(3, 2), response_date="2024-05-01T12:00:00Z")
    with FakePartner(partner_pages) as fake:
        partner = Partner("p", fake.url)
        first = run(store, partner)
        assert first.outcome == "success" and first.counts.received == 5 and first.counts.pages == 2
        assert fake.requests[0] == {"verb": "ListRecords", "metadataPrefix": "oai_dc"}
        assert harvest_state_of(store, "p").next_from == "2024-05-01T12:00:00Z"
        partner_pages.response_date = "2024-06-01T08:30:00Z"
        fake.requests.clear()
        second = run(store, partner)
    assert second.outcome == "success" and second.from_date == "2024-05-01T12:00:00Z"
    assert fake.requests[:2] == [
        {"verb": "Identify"},
        {"verb": "ListRecords", "metadataPrefix": "oai_dc", "from": "2024-05-01T12:00:00Z"},
    ]
    assert second.counts.unchanged == 5 and second.counts.added == 0
    assert harvest_state_of(store, "p").next_from == "2024-06-01T08:30:00Z"


def test_from_is_sent_in_the_granularity_the_partner_declares(store: Store) -> None:
    with FakePartner(PagedPartner(pages_of(1), granularity=DAY)) as fake:
        partner = Partner("p", fake.url, from_date="2020-02-03T04:05:06Z")
        assert run(store, partner).outcome == "success"
        assert fake.requests[1] == {"verb": "ListRecords", "metadataPrefix": "oai_dc", "from": "2020-02-03"}
    with FakePartner(PagedPartner(pages_of(1, prefix="oai:q:"))) as fake:
        partner = Partner("q", fake.url, from_date="2020-02-03")
        assert run(store, partner, full=True).outcome == "success"
        assert fake.requests[1]["from"] == "2020-02-03T00:00:00Z"


def test_a_bad_configured_from_fails_clearly(store: Store) -> None:
    with FakePartner(PagedPartner(pages_of(1))) as fake:
        report = run(store, Partner("p", fake.url, from_date="last tuesday"))
    assert report.outcome == "failed" and "'last tuesday' is not a date" in (report.reason or "")
    assert fake.requests == []


def test_sets_are_listed_one_after_the_other(store: Store) -> None:
    def handler(params: dict[str, str], n: int) -> Response:
        spec = params.get("set", "")
        return xml(list_records([record(f"oai:p:{spec}-1")]))

    with FakePartner(handler) as fake:
        report = run(store, Partner("p", fake.url, sets=("math", "physics")))
    assert report.outcome == "success"
    assert [r.get("set") for r in fake.requests] == ["math", "physics"]
    assert store.identifiers(source="p") == {"oai:p:math-1", "oai:p:physics-1"}


def test_records_that_cannot_be_read_make_a_partial_run(store: Store) -> None:
    """Those with an identifier are quarantined; one without (it cannot be asked for again) makes
    the run partial, and a partial run leaves `from` where it was."""
    bad = [
        "<record><header><identifier>oai:p:nodate</identifier><datestamp>yesterday</datestamp></header></record>",
        "<record><header><identifier>oai:p:nometa</identifier><datestamp>2024-01-01</datestamp></header></record>",
        "<record><metadata/></record>",
    ]
    with FakePartner(PagedPartner([[record("oai:p:1"), *bad, record("oai:p:2")]])) as fake:
        report = run(store, Partner("p", fake.url))
    assert report.outcome == "partial" and report.exit_code == 2
    assert (report.counts.failed, report.counts.quarantined, report.counts.added) == (1, 2, 2)
    assert report.failures == [
        ("oai:p:nodate", "the datestamp 'yesterday' is not a date"),
        ("oai:p:nometa", "the record is not deleted but has no metadata"),
        ("record 4 of the page", "the record has no <header>"),
    ]
    assert "1 record(s) could not be harvested" in (report.reason or "")
    assert {q.identifier for q in quarantined(store, "p")} == {"oai:p:nodate", "oai:p:nometa"}
    assert harvest_state_of(store, "p").next_from is None, "the from moves only on success"
    history = harvest_history(store, "p")
    assert history[0].outcome == "partial" and history[0].counts["failures"][0][0] == "oai:p:nodate"


def test_a_partners_copy_of_a_local_record_is_kept_and_not_served(store: Store) -> None:
    """Local records are served first: the partner's record under the same identifier is kept
    beside it, counted and reported, and the run is a success, not a partial one."""
    store.write([make_record("taken", "Ours")])
    with FakePartner(PagedPartner([[record("oai:test.example.org:taken", "Theirs"), record("oai:p:1")]])) as fake:
        report = run(store, Partner("p", fake.url))
        again = run(store, Partner("p", fake.url))
    assert report.outcome == "success" and report.failures == [] and quarantined(store, "p") == []
    assert (report.counts.added, report.counts.shadowed) == (2, 1)
    assert "2 added, 1 not served (another source first)" in harvest.describe(report)
    assert (again.counts.added, again.counts.changed, again.counts.unchanged, again.counts.shadowed) == (0, 0, 2, 1)
    local = store.get("oai:test.example.org:taken")
    assert local is not None and local.source == "local" and local.dc_values("title") == ["Ours"]
    assert shadowed_counts(store) == {"p": 1}


def test_an_identifier_that_is_not_a_uri_is_refused_and_reported(store: Store) -> None:
    with FakePartner(PagedPartner([[record("oai:p:1"), record("oai:p:with space")]])) as fake:
        report = run(store, Partner("p", fake.url))
    assert report.outcome == "success" and report.counts.added == 1 and report.counts.quarantined == 1
    assert report.failures == [("oai:p:with space", "the identifier is not a URI (xs:anyURI)")]
    assert store.identifiers(source="p") == {"oai:p:1"}


def test_broken_xml_fails_the_run_and_the_next_run_resumes_at_the_checkpoint(store: Store) -> None:
    broken = xml(list_records([record("oai:p:x", "Fish & Chips")]))
    with FakePartner(PagedPartner(pages_of(2, 2, 2), faults={1: broken})) as fake:
        partner = Partner("p", fake.url)
        failed = run(store, partner)
        assert failed.outcome == "failed" and "not well-formed" in (failed.reason or "")
        assert store.identifiers(source="p") == {"oai:partner.example.org:0", "oai:partner.example.org:1"}
        state = harvest_state_of(store, "p")
        assert state.next_from is None and state.checkpoint is not None and state.checkpoint["token"] == "t1"
        fake.requests.clear()
        resumed = run(store, partner)
    assert resumed.outcome == "success" and resumed.resumed
    assert fake.requests[0] == {"verb": "ListRecords", "resumptionToken": "t1"}
    assert resumed.window.received == 6 and len(store.identifiers(source="p")) == 6
    assert harvest_state_of(store, "p").next_from == "2024-05-01T12:00:00Z"


def test_the_lenient_quirk_repairs_broken_xml_and_counts_it(store: Store) -> None:
    page = list_records([record("oai:p:1"), "\n" + record("oai:p:2", "Fish & Chips") + "\n", record("oai:p:3")])
    with FakePartner(lambda params, n: xml(page)) as fake:
        report = run(store, Partner("p", fake.url, quirks={"lenient_xml": True}))
    assert report.outcome == "success" and report.counts.repaired == 1 and report.counts.added == 3
    assert "1 record(s) repaired" in (report.reason or "")
    assert store.identifiers(source="p") == {"oai:p:1", "oai:p:2", "oai:p:3"}


def test_a_repeated_token_of_a_partner_ignoring_from_fails_the_run_and_drops_the_checkpoint(store: Store) -> None:
    """Its records share one datestamp, so the list is walked by date windows (harvester.takeup; the
    Identify of this partner is unusable: days, and no earliestDatestamp: from the epoch); the first
    window gives records of 2024: the partner ignores `from` and `until`, and the run fails."""
    loop = lambda params, n: xml(list_records([record(f"oai:p:{n}")], "loop" if n < 20 else None))  # noqa: E731
    with FakePartner(loop) as fake:
        report = run(store, Partner("p", fake.url))
    assert report.outcome == "failed" and "came back a second time" in (report.reason or "")
    assert (
        "the list repeated its token after page 2; the partner ignores `from` and `until` (a list from "
        "1970-01-01T00:00:00Z until 1997-03-02T05:59:59Z gave a record of 2024-04-01T10:00:00Z)"
    ) in (report.reason or "")
    assert [(r["verb"], r.get("from"), r.get("until")) for r in fake.requests] == [
        ("ListRecords", None, None),
        ("ListRecords", None, None),
        ("Identify", None, None),
        ("ListRecords", "1970-01-01", "1997-03-02"),
        ("ListRecords", None, None),
    ]
    assert report.counts.received == 4
    assert harvest_state_of(store, "p").checkpoint is None


def test_a_rejected_token_restarts_the_list_from_the_runs_from(store: Store) -> None:
    """Its datestamps rise, so the list is taken up from the latest it gave (this partner ignores
    `from`: it lists all over again, and ends)."""
    pages = [[record(f"oai:p:{i}", datestamp=f"2024-04-01T10:00:0{i}Z") for i in range(n, n + 2)] for n in (0, 2, 4)]
    faults = {2: xml(error("badResumptionToken", "The token has expired."))}
    with FakePartner(PagedPartner(pages, faults=faults)) as fake:
        report = run(store, Partner("p", fake.url))
    assert report.outcome == "success" and report.counts.restarts == 1
    assert [r.get("resumptionToken") or r.get("from") or r["verb"] for r in fake.requests] == [
        "ListRecords",
        "t1",
        "t2",
        "Identify",
        "2024-04-01T10:00:03Z",
        "t1",
        "t2",
    ]
    assert len(store.identifiers(source="p")) == 6 and report.counts.unchanged == 4


def test_a_partner_that_rejects_every_token_fails_after_a_few_restarts(store: Store) -> None:
    def handler(params: dict[str, str], n: int) -> Response:
        if "resumptionToken" in params:
            return xml(error("badResumptionToken"))
        return xml(list_records([record("oai:p:1")], "next"))

    with FakePartner(handler) as fake:
        report = run(store, Partner("p", fake.url))
    assert report.outcome == "failed" and "the partner ignores `from` and `until`" in (report.reason or "")
    # The list, an Identify, and its first date window (its one datestamp has not been seen to rise).
    assert [(r["verb"], r.get("resumptionToken"), r.get("until")) for r in fake.requests] == [
        ("ListRecords", None, None),
        ("ListRecords", "next", None),
        ("Identify", None, None),
        ("ListRecords", None, "1997-03-02"),
        ("ListRecords", "next", None),
    ]


@pytest.mark.parametrize(
    ("fault", "reason"),
    [
        (xml("<html><head><title>Login</title></head></html>", mimetype="text/html"), "HTML page titled 'Login'"),
        (xml(error("cannotDisseminateFormat", "no such format"), 422), "HTTP 422.*cannotDisseminateFormat"),
        (xml("oops", 500), "HTTP 500.*after 2 retries"),
    ],
    ids=["html", "oai-error-422", "500s"],
)
def test_a_failed_run_keeps_its_reason_and_does_not_move_from(store: Store, fault: Response, reason: str) -> None:
    with FakePartner(lambda params, n: fault) as fake:
        report = run(store, Partner("p", fake.url))
    assert report.outcome == "failed" and report.exit_code == 1
    history = harvest_history(store, "p")
    assert history[0].outcome == "failed"
    assert re.search(reason, history[0].reason or "")
    assert harvest_state_of(store, "p").next_from is None


def test_503_with_retry_after_then_success(store: Store) -> None:
    faults = {0: xml("busy", 503, {"Retry-After": "0"}), 2: xml("busy", 503, {"Retry-After": "0"})}
    with FakePartner(PagedPartner(pages_of(2, 2), faults=faults)) as fake:
        report = run(store, Partner("p", fake.url))
    assert report.outcome == "success" and report.counts.received == 4 and len(fake.requests) == 4


def test_no_records_match_is_a_successful_empty_harvest(store: Store) -> None:
    with FakePartner(lambda params, n: xml(error("noRecordsMatch"), 422)) as fake:
        report = run(store, Partner("p", fake.url))
    assert report.outcome == "success" and report.counts.received == 0
    assert harvest_state_of(store, "p").next_from == "2024-05-01T12:00:00Z"


def test_harvesting_the_same_records_again_changes_nothing(store: Store) -> None:
    paged = PagedPartner(pages_of(3, 3), response_date="2024-05-01T12:00:00Z")
    with FakePartner(paged) as fake:
        partner = Partner("p", fake.url)
        run(store, partner)
        before = {i: store.get(i) for i in store.identifiers()}
        paged.response_date = "2024-06-01T00:00:00Z"  # a later harvest of the same records
        again = run(store, partner, full=True)
    assert again.outcome == "success" and again.counts.unchanged == 6 and again.counts.changed == 0
    after = {i: store.get(i) for i in store.identifiers()}
    for identifier, old in before.items():
        new = after[identifier]
        assert old is not None and new is not None
        assert (new.datestamp, new.about, new.metadata) == (old.datestamp, old.about, old.metadata)
        assert new.provenance and new.provenance["harvestDate"] == "2024-06-01T00:00:00Z", "kept, not served"


def test_a_changed_list_configuration_starts_afresh(store: Store) -> None:
    with FakePartner(PagedPartner(pages_of(1))) as fake:
        run(store, Partner("p", fake.url))
        fake.requests.clear()
        report = run(store, Partner("p", fake.url, republish=False))
    assert report.from_date is None and fake.requests[0] == {"verb": "ListRecords", "metadataPrefix": "oai_dc"}


def test_an_unknown_quirk_is_refused_before_any_run(store: Store) -> None:
    """Partner settings are checked once, when the configuration loads; a run trusts them."""
    with FakePartner(PagedPartner(pages_of(1))) as fake:
        with pytest.raises(ConfigError, match=r"unknown quirk\(s\) lenient \(known: lenient_xml\)"):
            make_config(store.url, partners=[{"name": "p", "base_url": fake.url, "quirks": {"lenient": True}}])
        assert fake.requests == []


# ---- leases and stopping ---------------------------------------------------------------------


def test_a_partner_leased_by_another_harvester_is_skipped(store: Store) -> None:
    assert acquire_lease(store, "p", "other-host:1", 600, 1_000)[0]
    with FakePartner(PagedPartner(pages_of(1))) as fake:
        with pytest.raises(err.PartnerBusy, match="other-host:1"):
            run(store, Partner("p", fake.url), clock=lambda: 1_100)
        assert fake.requests == [] and harvest_history(store, "p") == []
        report = run(store, Partner("p", fake.url), clock=lambda: 1_700)  # the lease expired at 1_600
    assert report.outcome == "success"


def test_a_lease_taken_over_mid_run_stops_the_run_before_it_writes(store: Store) -> None:
    now = [1_000]

    def take_over(partner: str, counts: harvest.Counts, page: Any) -> None:
        now[0] += 700  # our lease (ttl 600) expires, and another harvester takes it
        assert acquire_lease(store, "p", "thief", 600, now[0])[0]

    with FakePartner(PagedPartner(pages_of(1, 1, 1))) as fake:
        report = run(
            store,
            Partner("p", fake.url),
            on_page=take_over,
            clock=lambda: now[0],
            settings=replace(FAST_HARVEST, lease_ttl=600),
        )
    assert report.outcome == "failed" and "another harvester took over the lease" in (report.reason or "")
    assert store.identifiers(source="p") == {"oai:partner.example.org:0"}, "page 2 was not written"


def test_only_one_of_two_concurrent_harvesters_runs_a_partner(store: Store) -> None:
    gate = threading.Event()

    def slow(params: dict[str, str], n: int) -> Response:
        gate.wait(5)
        return xml(list_records([record("oai:p:1")]))

    outcomes: list[str] = []

    def harvester() -> None:
        try:
            outcomes.append(run(store, Partner("p", fake.url)).outcome)
        except err.PartnerBusy:
            outcomes.append("busy")

    with FakePartner(slow) as fake:
        threads = [threading.Thread(target=harvester) for _ in range(2)]
        for t in threads:
            t.start()
        while len(fake.requests) + len(outcomes) < 2:
            threading.Event().wait(0.01)
        gate.set()
        for t in threads:
            t.join(10)
    assert sorted(outcomes) == ["busy", "success"] and len(fake.requests) == 1


def test_stop_ends_the_run_after_the_current_page(store: Store) -> None:
    stop = threading.Event()

    def stop_after_second(partner: str, counts: harvest.Counts, page: Any) -> None:
        if counts.pages == 2:
            stop.set()

    with FakePartner(PagedPartner(pages_of(2, 2, 2, 2))) as fake:
        partner = Partner("p", fake.url)
        report = run(store, partner, stop=stop, on_page=stop_after_second)
        assert report.outcome == "failed" and "stopped after a page" in (report.reason or "")
        # The next pages may have been requested ahead (up to two); they are neither written nor checkpointed.
        assert 2 <= len(fake.requests) <= 4 and len(store.identifiers(source="p")) == 4
        checkpoint = harvest_state_of(store, "p").checkpoint
        assert checkpoint is not None and checkpoint["token"] == "t2"
        resumed = run(store, partner)
    assert resumed.outcome == "success" and resumed.window.received == 8


def test_client_settings_reach_the_client(store: Store) -> None:
    with FakePartner(lambda params, n: xml("oops", 503)) as fake:
        settings = replace(FAST_HARVEST, client=replace(FAST, retries=4))
        report = run(store, Partner("p", fake.url, mode="list_records"), settings=settings)
    assert report.outcome == "failed" and len(fake.requests) == 5


def test_a_record_whose_identifier_is_too_long_is_a_named_refusal_not_a_failed_page(store: Store) -> None:
    """On PostgreSQL such a record used to fail its page on every run, forever; on SQLite it was
    stored, listed, and could not be fetched. Now it is refused by the store's one limit, named
    (shortened) with the reason, and quarantined whole; the page's other records go in."""
    long = "oai:p:" + "x" * 1100
    with FakePartner(PagedPartner([[record("oai:p:1"), record(long), record("oai:p:2")]])) as fake:
        report = run(store, Partner("p", fake.url))
    assert report.outcome == "success" and report.counts.quarantined == 1 and report.counts.added == 2
    assert store.identifiers(source="p") == {"oai:p:1", "oai:p:2"}
    [(where, why)] = report.failures
    assert where.startswith("oai:p:xxxx") and where.endswith("(1106 characters)") and len(where) < 120
    assert why == "the identifier is longer than 1024 bytes in UTF-8 (1106)"
    [history] = harvest_history(store, "p")
    assert history.outcome == "success" and history.counts["quarantined"] == 1
    assert [q.identifier for q in quarantined(store, "p")] == [long]


# ---- lists that never end ------------------------------------------------------------------


GIVE_UP = 300  # the endless partners end their list here, so that a harvester without a limit fails instead of hanging


def endless(page_of: Any, *, announce: int | None = None) -> Any:
    """A partner whose list does not end (before GIVE_UP requests): every page carries a new
    token; `page_of(n)` gives the records of the n-th page (n from 0)."""

    def handler(params: dict[str, str], n: int) -> Response:
        if n >= GIVE_UP:
            return xml(list_records([]))
        size = f' completeListSize="{announce}"' if announce else ""
        token = f"<resumptionToken{size}>new{n}</resumptionToken>"
        return xml(list_records(page_of(n)).replace("</ListRecords>", f"{token}</ListRecords>"))

    return handler


def assert_list_ended(store: Store, report: harvest.RunReport, fake: FakePartner, reason: str, bound: int) -> None:
    """`bound`: the requests of one list. Its records share one datestamp, so it is walked by date
    windows (harvester.takeup), once: these partners ignore `from` and `until`, or give nothing."""
    assert report.outcome == "failed" and re.search(reason, report.reason or ""), report.reason
    assert re.search("the partner ignores `from` and `until`|before it gave any record", report.reason or "")
    assert len(fake.requests) <= 2 * bound + 3, f"{len(fake.requests)} requests"  # and an Identify, pages asked ahead
    history = harvest_history(store, "p")
    assert history[0].outcome == "failed" and history[0].reason == report.reason
    state = harvest_state_of(store, "p")
    assert state.checkpoint is None, "resuming at a token of a list that goes round would go round again"
    assert state.next_from is None, "from does not move past records never seen"


def test_new_tokens_over_the_same_records_end_the_list_and_keep_what_was_harvested(store: Store) -> None:
    same = [record(f"oai:p:{i}") for i in range(5)]
    with FakePartner(endless(lambda n: same)) as fake:
        report = run(store, Partner("p", fake.url))
    assert_list_ended(
        store, report, fake, "goes round: 3 pages in a row held only records this list already gave", 1 + 3 + 2
    )
    assert store.identifiers(source="p") == {f"oai:p:{i}" for i in range(5)}


def test_a_list_that_goes_round_over_many_pages_is_ended(store: Store) -> None:
    cycle = 7  # the partner goes back to its first page after seven pages of new records
    with FakePartner(endless(lambda n: [record(f"oai:p:{n % cycle}-{i}") for i in range(4)])) as fake:
        report = run(store, Partner("p", fake.url))
    assert_list_ended(store, report, fake, "goes round", cycle + 3 + 2)
    assert len(store.identifiers(source="p")) == cycle * 4


def test_empty_pages_in_a_row_end_the_list(store: Store) -> None:
    first = [record(f"oai:p:{i}") for i in range(3)]
    with FakePartner(endless(lambda n: first if n == 0 else [])) as fake:
        report = run(store, Partner("p", fake.url))
    assert_list_ended(store, report, fake, "10 empty pages in a row", 1 + 10 + 2)
    assert "the list went round at page 10, before it gave any record" in (report.reason or "")
    assert store.identifiers(source="p") == {f"oai:p:{i}" for i in range(3)}


def test_a_list_far_past_its_complete_list_size_is_ended(store: Store) -> None:
    with FakePartner(endless(lambda n: [record(f"oai:p:{n}-{i}") for i in range(10)], announce=20)) as fake:
        report = run(store, Partner("p", fake.url))
    # 20 records at 10 a page make 2 pages; the list is ended at twice that and 10 more.
    assert_list_ended(store, report, fake, "completeListSize 20 .* after 14 pages", 14 + 2)
    assert len(store.identifiers(source="p")) == report.counts.received == 2 * 140


def test_a_few_empty_pages_and_a_record_listed_twice_are_not_a_loop(store: Store) -> None:
    pages = pages_of(3, 3, 3)
    pages[1][0] = pages[0][0]  # a record that moved while the list was paged comes again
    pages = [pages[0], [], [], pages[1], [], pages[2]]
    with FakePartner(PagedPartner(pages)) as fake:
        report = run(store, Partner("p", fake.url))
    assert report.outcome == "success", report.reason
    assert len(store.identifiers(source="p")) == 8


# ---- a partner's clock ---------------------------------------------------------------------

NOON = 1_714_564_800  # 2024-05-01T12:00:00Z, the PagedPartner's responseDate by default


def test_a_response_date_far_in_the_future_is_not_the_next_from(store: Store) -> None:
    paged = PagedPartner(pages_of(2, 2))
    with FakePartner(paged) as fake:
        partner = Partner("p", fake.url)
        assert run(store, partner, clock=lambda: NOON).next_from == "2024-05-01T12:00:00Z"
        paged.response_date = "9999-12-31T23:59:59Z"
        ahead = run(store, partner, clock=lambda: NOON + 3600)
        assert ahead.outcome == "success" and ahead.counts.received == 4 and ahead.next_from is None
        assert ahead.reason is not None and re.search(
            r"the partner's clock is ahead: its responseDate 9999-12-31T23:59:59Z is .* past ours "
            r"\(2024-05-01T13:00:00Z\); the next run starts from 2024-05-01T12:00:00Z again",
            ahead.reason,
        ), ahead.reason
        assert harvest_history(store, "p")[0].reason == ahead.reason
        assert harvest_state_of(store, "p").next_from == "2024-05-01T12:00:00Z", "from kept"
        paged.response_date = "2024-05-02T08:00:00Z"
        fake.requests.clear()
        sane = run(store, partner, clock=lambda: NOON + 86_400)
    assert fake.requests[1]["from"] == "2024-05-01T12:00:00Z", "the run after takes the kept from"
    assert sane.next_from == "2024-05-02T08:00:00Z" and sane.reason is None


def test_a_first_run_from_a_partner_whose_clock_is_ahead_leaves_from_at_the_beginning(store: Store) -> None:
    with FakePartner(PagedPartner(pages_of(1), response_date="2024-05-01T12:10:00Z")) as fake:
        report = run(store, Partner("p", fake.url), clock=lambda: NOON)
    assert report.outcome == "success" and report.next_from is None
    assert "10 minutes past ours" in (report.reason or "") and "from the beginning again" in (report.reason or "")
    assert harvest_state_of(store, "p").next_from is None


def test_a_response_date_within_the_allowed_skew_is_the_next_from(store: Store) -> None:
    with FakePartner(PagedPartner(pages_of(1), response_date="2024-05-01T12:04:59Z")) as fake:
        report = run(store, Partner("p", fake.url), clock=lambda: NOON)
    assert report.outcome == "success" and report.reason is None
    assert harvest_state_of(store, "p").next_from == "2024-05-01T12:04:59Z"
