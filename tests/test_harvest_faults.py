"""A partner whose connection breaks mid-page, or that labels its XML wrongly, on both backends:
a cut page is fetched again and the harvest completes with nothing lost or duplicated; the
Content-Type header never decides what a body is. And one log line per harvested page."""

from __future__ import annotations

import logging
import re
import subprocess
import sys
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import BASE_CONFIG
from harvestkit import FAST, FAST_HARVEST, PagedPartner, Raw, RawPartner, list_records, oai, record

from harvester import harvest
from oaiserver.config import Partner
from oaiserver.store import Store, harvest_history, harvest_state_of

ROOT = Path(__file__).parent.parent
PAGES, PER_PAGE = 4, 25
DC_TITLE = "{http://purl.org/dc/elements/1.1/}title"


def pages() -> list[list[str]]:
    """PAGES pages of PER_PAGE records; every seventh one deleted, titles with non-ASCII text."""
    out = []
    for p in range(PAGES):
        page = []
        for i in range(p * PER_PAGE, (p + 1) * PER_PAGE):
            page.append(record(f"oai:partner.example.org:{i}", f"Zürich № {i}", deleted=i % 7 == 3))
        out.append(page)
    return out


EXPECTED = {f"oai:partner.example.org:{i}" for i in range(PAGES * PER_PAGE)}
DELETED = {f"oai:partner.example.org:{i}" for i in range(PAGES * PER_PAGE) if i % 7 == 3}


class Paged:
    """PagedPartner's answers, sent over a raw socket: `raw(n)` gives the Raw options of request n
    (a cut, a stall, a Content-Type); the answer itself is always the right page."""

    def __init__(self, raw: Callable[[int], dict[str, Any]] | None = None, **paged: Any) -> None:
        self.paged = PagedPartner(pages(), **paged)
        self.raw: Callable[[int], dict[str, Any]] = raw or (lambda n: {})

    def __call__(self, params: dict[str, str], n: int) -> Raw:
        answer = self.paged(params, n)
        options = {"content_type": answer.headers.get("Content-Type"), **self.raw(n)}
        return Raw(answer.get_data(), status=answer.status_code, **options)


def assert_complete(store: Store, report: harvest.RunReport) -> None:
    """Every record once: all pages counted once, every record added once, none rewritten."""
    assert report.outcome == "success", report.reason
    c = report.window
    assert (c.pages, c.received, c.added, c.unchanged, c.changed, c.failed) == (
        PAGES,
        PAGES * PER_PAGE,
        PAGES * PER_PAGE,
        0,
        0,
        0,
    ), c
    assert c.deleted == len(DELETED)
    assert store.identifiers(source="p") == EXPECTED
    assert store.identifiers(source="p", live_only=True) == EXPECTED - DELETED
    for i in (0, 26, 99):
        copy = store.get(f"oai:partner.example.org:{i}")
        assert copy is not None and copy.dc_values("title") == [f"Zürich № {i}"]
    assert harvest_state_of(store, "p").checkpoint is None


def tokens(partner: RawPartner) -> list[str | None]:
    return [r.get("resumptionToken") for r in partner.requests]


# ---- the connection cut mid-page ------------------------------------------------------------

# Where the body is cut: right after the headers, in the middle, or 3 bytes before its end
# (inside the closing </OAI-PMH>, the one case a close-delimited body shows only by its content).
CUTS = {"after-headers": 0, "mid-body": 2000, "last-bytes": -3}


@pytest.mark.parametrize("cut", list(CUTS.values()), ids=list(CUTS))
@pytest.mark.parametrize("framing", ["length", "chunked", "close"])
def test_a_page_cut_mid_body_is_fetched_again_and_nothing_is_lost_or_duplicated(
    store: Store, framing: str, cut: int
) -> None:
    cut_requests = {1, 3, 4}  # page 2 once, page 3 twice in a row (FAST allows two retries)
    handler = Paged(lambda n: {"framing": framing, "cut_at": cut if n in cut_requests else None})
    with RawPartner(handler) as partner:
        report = harvest.run(store, Partner("p", partner.url), settings=FAST_HARVEST)
    assert_complete(store, report)
    assert report.counts == report.window and not report.resumed
    assert tokens(partner) == [None, "t1", "t1", "t2", "t2", "t2", "t3"], "the cut page, and only it, again"


def test_a_cut_page_is_not_repaired_by_the_lenient_parser(store: Store) -> None:
    """lxml's recover mode turns a truncated page into a shorter one without its resumption
    token: the list would end early, records silently lost. A cut is a cut, quirk or not."""
    handler = Paged(lambda n: {"framing": "close", "cut_at": 3000 if n == 1 else None})
    with RawPartner(handler) as partner:
        report = harvest.run(store, Partner("p", partner.url, quirks={"lenient_xml": True}), settings=FAST_HARVEST)
    assert_complete(store, report)
    assert report.window.repaired == 0
    assert tokens(partner) == [None, "t1", "t1", "t2", "t3"]


def test_a_page_that_stalls_mid_body_times_out_and_is_fetched_again(store: Store) -> None:
    handler = Paged(lambda n: {"cut_at": 1500, "stall": 1.0} if n == 2 else {})
    settings = replace(FAST_HARVEST, client=replace(FAST, timeout=0.3))
    with RawPartner(handler) as partner:
        report = harvest.run(store, Partner("p", partner.url), settings=settings)
    assert_complete(store, report)
    assert tokens(partner) == [None, "t1", "t2", "t2", "t3"]


def test_a_partner_that_always_cuts_fails_the_run_and_the_next_run_resumes(store: Store) -> None:
    broken = {"on": True}
    handler = Paged(lambda n: {"framing": "close", "cut_at": 2000} if n >= 2 and broken["on"] else {})
    with RawPartner(handler) as partner:
        first = harvest.run(store, Partner("p", partner.url), settings=FAST_HARVEST)
        assert first.outcome == "failed" and first.exit_code == 1
        assert re.search(r"cut short.*after 2 retries", first.reason or ""), first.reason
        assert first.counts.pages == 2 and len(store.identifiers(source="p")) == 2 * PER_PAGE
        checkpoint = harvest_state_of(store, "p").checkpoint
        assert checkpoint is not None and checkpoint["token"] == "t2"
        broken["on"] = False
        partner.requests.clear()
        second = harvest.run(store, Partner("p", partner.url), settings=FAST_HARVEST)
    assert second.resumed and tokens(partner) == ["t2", "t3"]
    assert_complete(store, second)
    assert [r.outcome for r in harvest_history(store, "p")] == ["success", "failed"]


# ---- the Content-Type does not decide ----------------------------------------------------------

WRONG_TYPES = [
    "text/html",
    "text/html; charset=iso-8859-1",  # and the charset it claims is not the one the XML declares
    "application/octet-stream",
    "text/plain",
    None,
]


@pytest.mark.parametrize("content_type", WRONG_TYPES, ids=[str(t) for t in WRONG_TYPES])
def test_oai_pmh_xml_under_a_wrong_content_type_is_harvested_and_the_label_logged_once(
    store: Store, content_type: str | None, caplog: pytest.LogCaptureFixture
) -> None:
    handler = Paged(lambda n: {"content_type": content_type})
    with caplog.at_level(logging.WARNING, "harvester"), RawPartner(handler) as partner:
        report = harvest.run(store, Partner("p", partner.url), settings=FAST_HARVEST)
    assert_complete(store, report)
    warnings = [r.getMessage() for r in caplog.records if "labels its OAI-PMH XML" in r.getMessage()]
    shown = f"Content-Type {content_type!r}" if content_type else "nothing (no Content-Type)"
    assert warnings == [f"{partner.url}: the partner labels its OAI-PMH XML as {shown}; read as XML by its content"]


@pytest.mark.parametrize("content_type", ["text/xml; charset=utf-8", "application/xml", "application/oai+xml"])
def test_an_xml_content_type_is_not_logged(store: Store, content_type: str, caplog: pytest.LogCaptureFixture) -> None:
    with (
        caplog.at_level(logging.WARNING, "harvester"),
        RawPartner(Paged(lambda n: {"content_type": content_type})) as p,
    ):
        assert_complete(store, harvest.run(store, Partner("p", p.url), settings=FAST_HARVEST))
    assert not [r for r in caplog.records if "labels" in r.getMessage()]


def test_an_html_page_labelled_xml_is_still_refused(store: Store) -> None:
    page = "<!DOCTYPE html><html><head><title>Maintenance</title></head><body>Back soon</body></html>"
    with RawPartner(lambda params, n: Raw(page, content_type="text/xml")) as partner:
        report = harvest.run(store, Partner("p", partner.url, mode="list_records"), settings=FAST_HARVEST)
    assert report.outcome == "failed" and "HTML page titled 'Maintenance'" in (report.reason or "")
    assert len(partner.requests) == 1, "an HTML page is an answer, not a fault to retry"


def test_a_truncated_looking_body_that_is_not_oai_pmh_is_not_retried(store: Store) -> None:
    """Only an OAI-PMH document without its end is taken for a cut; other garbage fails at once."""
    with RawPartner(lambda params, n: Raw("<response><status>down", framing="close")) as partner:
        report = harvest.run(store, Partner("p", partner.url, mode="list_records"), settings=FAST_HARVEST)
    assert report.outcome == "failed" and "not well-formed" in (report.reason or "")
    assert len(partner.requests) == 1


def test_a_complete_page_with_trailing_garbage_is_not_taken_for_a_cut(store: Store) -> None:
    body = list_records([record("oai:p:1")]) + "\n<!-- generated in 0.1 s -->\n"
    with RawPartner(lambda params, n: Raw(body, framing="close")) as partner:
        report = harvest.run(store, Partner("p", partner.url, mode="list_records"), settings=FAST_HARVEST)
    assert report.outcome == "success" and len(partner.requests) == 1
    garbage = oai("<ListRecords>" + record("oai:p:1") + "</ListRecords>") + "<br/>Notice: undefined index"
    with RawPartner(lambda params, n: Raw(garbage, framing="close")) as partner:
        report = harvest.run(store, Partner("p", partner.url, mode="list_records"), settings=FAST_HARVEST, full=True)
    assert report.outcome == "failed" and "not well-formed" in (report.reason or "")
    assert len(partner.requests) == 1, "garbage after </OAI-PMH> is the parser's business, not a cut"


# ---- one log line per page ------------------------------------------------------------------------

PAGE_LINE = re.compile(
    r"INFO harvester\.harvest\.pages: page partner=(?P<partner>\S+) page=(?P<page>\d+) window_page=\d+ "
    r"records=(?P<records>\d+) deleted=(?P<deleted>\d+) failed=(?P<failed>\d+) quarantined=(?P<quarantined>\d+) "
    r"added=\d+ changed=\d+ "
    r"unchanged=\d+ token=(?P<token>yes|no) fetch=\d+\.\d{3}s duration=(?P<duration>\d+\.\d{3})s$"
)


def test_harvester_run_logs_one_plain_structured_line_per_page(store_url: str, tmp_path: Path) -> None:
    broken = "<record><header><identifier>oai:p:bad</identifier><datestamp>never</datestamp></header></record>"
    extra_page = [record("oai:partner.example.org:100"), broken]
    handler = Paged()
    handler.paged.pages = [*handler.paged.pages, extra_page]
    with RawPartner(handler) as partner:
        config = {**BASE_CONFIG, "storage": {"url": store_url}, "partners": [{"name": "p", "base_url": partner.url}]}
        path = tmp_path / "config.yaml"
        path.write_text(yaml.safe_dump(config))
        done = subprocess.run(
            [sys.executable, "-m", "harvester.cli", "-c", str(path), "run", "p", "--retries", "0"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert done.returncode == 0, done.stderr  # the broken record is quarantined
    lines = [m for line in done.stderr.splitlines() if (m := PAGE_LINE.search(line))]
    assert "\x1b[" not in done.stderr, "no terminal codes when stderr is not a terminal"
    got = [
        (m["partner"], int(m["page"]), int(m["records"]), int(m["deleted"]), int(m["quarantined"]), m["token"])
        for m in lines
    ]
    per_page_deleted = [sum(1 for i in range(p * PER_PAGE, (p + 1) * PER_PAGE) if i % 7 == 3) for p in range(PAGES)]
    assert got == [
        *(("p", p + 1, PER_PAGE, per_page_deleted[p], 0, "yes") for p in range(PAGES)),
        ("p", PAGES + 1, 2, 0, 1, "no"),
    ], done.stderr


# ---- the lenient parser's trees: what it lets through is a failed record, never a crash --------------


def test_an_undeclared_prefix_under_the_lenient_parser_fails_the_record_not_the_run(store: Store) -> None:
    undeclared = (
        "<record><header><identifier>oai:p:2</identifier><datestamp>2024-01-01</datestamp></header>"
        "<metadata><oai_dc:dc><dc:title>Undeclared</dc:title></oai_dc:dc></metadata></record>"
    )
    page = list_records([record("oai:p:1"), undeclared, record("oai:p:3")])
    with RawPartner(lambda params, n: Raw(page)) as partner:
        report = harvest.run(store, Partner("p", partner.url, quirks={"lenient_xml": True}), settings=FAST_HARVEST)
    assert report.outcome == "success" and report.counts.added == 2 and report.counts.quarantined == 1
    assert report.failures == [("oai:p:2", "the metadata element <oai_dc:dc> has an undeclared namespace prefix")]
    assert store.identifiers(source="p") == {"oai:p:1", "oai:p:3"}


def test_an_undeclared_root_prefix_under_the_lenient_parser_is_refused_clearly(store: Store) -> None:
    body = '<?xml version="1.0"?><oai:OAI-PMH><oai:responseDate>2024-01-01</oai:responseDate></oai:OAI-PMH>'
    with RawPartner(lambda params, n: Raw(body)) as partner:
        report = harvest.run(store, Partner("p", partner.url, quirks={"lenient_xml": True}), settings=FAST_HARVEST)
    assert report.outcome == "failed"
    assert "the root element <OAI-PMH> is not in the OAI-PMH 2.0 namespace" in (report.reason or "")
