"""The pages for people, read as HTML through Flask's test client (tests/test_browser.py drives
the same pages in Chromium): what they count, how the query form maps to /oai's arguments,
the site's own 404 and 410, and what a browser that opens /oai itself is given."""

from __future__ import annotations

import re
import socket
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import pytest
from conftest import NS, Clock, OAIClient, make_config, make_record, until, validate
from fleet import Fleet, Spec, with_specs
from harvestkit import FAST_HARVEST, FakePartner
from lxml import etree
from lxml import html as lhtml
from test_harvest_formats import TwoFormats

from harvester import harvest
from harvester.completeness import COMPLETE, SHORT, UNKNOWN, Completeness
from oaiserver import create_app, formats, partners
from oaiserver.config import Partner
from oaiserver.records import Record
from oaiserver.store import Store

PARTNER_DATESTAMP = "2019-05-06T07:08:09Z"


@pytest.fixture
def http(oai: OAIClient, store: Store, clock: Clock) -> Any:
    """Fifteen records: twelve in set a (one of them deleted), two in a:b, one in c; and a
    withdrawal harvested from a partner."""
    records = [make_record(f"{i:02d}", f"Cable number {i}", sets=("a",)) for i in range(12)]
    records += [make_record("b1", "Below a", sets=("a:b",)), make_record("b2", "Also in a", sets=("a", "a:b"))]
    records.append(make_record("c1", "In c", sets=("c",)))
    store.write(records)
    clock.tick()
    store.delete(["oai:test.example.org:03"])
    gone = Record(
        identifier="oai:partner.example.org:gone",
        deleted=True,
        source="partner",
        provenance={"baseURL": "https://partner.example.org/oai", "datestamp": PARTNER_DATESTAMP},
        metadata=formats.rendered([], deleted=True),
    )
    clock.tick(3600)
    store.write([gone])
    clock.tick()
    return oai.http


def page(http: Any, path: str, status: int = 200) -> Any:
    response = http.get(path)
    assert response.status_code == status, response.data[:300]
    assert response.mimetype == "text/html"
    return lhtml.fromstring(response.data)


def words(doc: Any) -> str:
    return " ".join(doc.text_content().split())


def list_size(oai: OAIClient, query: str) -> int:
    doc = oai.get(query)
    token = doc.find(".//oai:resumptionToken", NS)
    if token is not None:
        return int(token.get("completeListSize"))
    return len(doc.findall(".//oai:header", NS))


# ---- small faults ------------------------------------------------------------------------------


def test_no_word_runs_into_a_separator(http: Any) -> None:
    """'set a· set a:b' was the set line of every record: a separator stands between spaces."""
    for path in ("/oai/view?verb=ListRecords&metadataPrefix=oai_dc", "/records/oai:test.example.org:b2"):
        text = words(page(http, path))
        assert not re.search(r"\S·|·\S", text), path
    row = page(http, "/oai/view?verb=ListIdentifiers&metadataPrefix=oai_dc&set=a:b")
    assert "sets a, a:b" in words(row)


def test_the_counts_on_the_home_page_are_those_of_listrecords(http: Any, oai: OAIClient) -> None:
    """The records card and each set's count are what ListRecords counts (completeListSize),
    deleted records included, so the figures on the home page add up with each other and
    with what a harvester is told."""
    doc = page(http, "/")
    cards = {
        " ".join(d.text_content().split()[1:]): int(d.findtext("b")) for d in doc.xpath("//div[@class='stats']/div")
    }
    assert cards["records listed"] == list_size(oai, "verb=ListRecords&metadataPrefix=oai_dc") == 16
    assert cards["live"] + cards["deleted"] == cards["records listed"] and cards["deleted"] == 2
    counted = {
        row.xpath("td")[0].text_content(): int(row.xpath("td[@class='num']")[0].text_content())
        for row in doc.xpath("//table[@class='columns']/tbody/tr")
    }
    for spec in ("a:b", "c", "a"):
        assert counted[spec] == list_size(oai, f"verb=ListRecords&metadataPrefix=oai_dc&set={spec}"), spec


def test_a_harvested_withdrawal_shows_the_partners_datestamp(http: Any) -> None:
    doc = page(http, "/records/oai:partner.example.org:gone", 410)
    alert = words(doc.xpath("//*[@role='alert']")[0])
    assert PARTNER_DATESTAMP in alert and "partner" in alert


def test_an_unknown_record_gets_the_sites_404_page(http: Any) -> None:
    for path, says in (
        ("/records/oai:test.example.org:nothing", "oai:test.example.org:nothing"),
        ("/no/such/page", "no page at this address"),
    ):
        doc = page(http, path, 404)
        assert doc.findtext(".//h1") == "Not found"
        assert doc.xpath("//header[@class='site']/nav/a") and says in words(doc)


def test_a_withdrawn_record_gets_the_sites_410_page(http: Any) -> None:
    doc = page(http, "/records/oai:test.example.org:03", 410)
    assert doc.xpath("//header[@class='site']/nav/a") and "This record was withdrawn on" in words(doc)


def _transform(oai: OAIClient, query: str) -> tuple[str, Any]:
    xsl = etree.XSLT(etree.parse(str(oai.http.application.static_folder) + "/oai2.xsl"))
    result = xsl(etree.fromstring(oai.http.get(f"/oai?{query}").data))
    return str(result), lhtml.fromstring(str(result))


@pytest.mark.parametrize("query", ["verb=Nonsense", "verb=Identify", "verb=ListRecords&metadataPrefix=oai_dc"])
def test_the_stylesheets_page_is_in_standards_mode_and_titled(http: Any, oai: OAIClient, query: str) -> None:
    """For browsers that still apply XSLT: a doctype (no quirks mode), and a title and a
    heading even for a badVerb answer, which echoes no verb."""
    text, doc = _transform(oai, query)
    assert text.lstrip().lower().startswith("<!doctype html")
    assert doc.findtext(".//title").strip() and doc.findtext(".//h1").strip()
    if query == "verb=Nonsense":
        assert "badVerb" in doc.findtext(".//title")


# ---- the query form ----------------------------------------------------------------------------


def raw_link(doc: Any) -> str:
    (link,) = doc.xpath("//a[text()='raw XML']/@href")
    return str(link)


def listed(doc: Any) -> list[str]:
    return [str(i) for i in doc.xpath("//ol[@class='records']/li/@data-identifier")]


def test_the_form_offers_the_formats_served_and_the_sets_in_their_hierarchy(http: Any) -> None:
    doc = page(http, "/oai/view?verb=ListRecords&metadataPrefix=oai_dc")
    (form,) = doc.xpath("//form[@action='/oai/view']")
    assert form.xpath(".//select[@name='metadataPrefix']/option/text()") == list(formats.REGISTRY)
    assert form.xpath(".//select[@name='verb']/option/text()") == [
        "Identify",
        "ListMetadataFormats",
        "ListSets",
        "GetRecord",
        "ListIdentifiers",
        "ListRecords",
    ]
    sets = [(o.get("value"), o.text_content()) for o in form.xpath(".//select[@name='set']/option")]
    assert [value for value, _ in sets] == ["", "a", "a:b", "c"]
    assert sets[2][1].startswith("\u00a0") and not sets[1][1].startswith("\u00a0")  # a:b shown under a
    assert {i.get("name") for i in form.xpath(".//input | .//select")} >= {
        "verb",
        "metadataPrefix",
        "set",
        "from",
        "until",
        "deleted",
        "identifier",
    }
    assert "YYYY-MM-DDThh:mm:ssZ" in words(form)


def test_the_form_asks_what_oai_is_asked_and_links_its_xml(http: Any, oai: OAIClient) -> None:
    """A form sends every field; the view leaves out the empty ones and those the verb does not
    take, answers those arguments, and its raw-XML link asks /oai the same."""
    doc = page(
        http,
        "/oai/view?form=1&verb=ListIdentifiers&metadataPrefix=oai_dc&set=a:b&from=&until=2030-01-01"
        "&deleted=&identifier=oai:test.example.org:01",
    )
    link = urlsplit(raw_link(doc))
    assert (link.path, link.query) == ("/oai", "verb=ListIdentifiers&metadataPrefix=oai_dc&set=a:b&until=2030-01-01")
    xml = oai.get(link.query)
    assert listed(doc) == [e.text for e in xml.iterfind(".//oai:header/oai:identifier", NS)]
    assert listed(doc) == ["oai:test.example.org:b1", "oai:test.example.org:b2"]
    identify = page(http, "/oai/view?form=1&verb=Identify&metadataPrefix=oai_dc&set=a&from=&deleted=hide")
    assert urlsplit(raw_link(identify)).query == "verb=Identify" and not identify.xpath("//*[@role='alert']")


def test_arguments_typed_by_hand_are_answered_as_oai_answers_them(http: Any) -> None:
    doc = page(http, "/oai/view?verb=Identify&metadataPrefix=oai_dc")
    assert "badArgument" in words(doc.xpath("//*[@role='alert']")[0])


def test_the_filters_and_the_deleted_switch_hold_across_pages(http: Any) -> None:
    """Page two (a resumption token) still says which set it lists, fills the form with it,
    and keeps hiding deleted records; the count and the pager are at the top and the bottom."""
    first = page(http, "/oai/view?verb=ListRecords&metadataPrefix=oai_dc&set=a&deleted=hide")
    assert "oai:test.example.org:03" not in listed(first)
    pagers = first.xpath("//nav[@class='pager']")
    assert len(pagers) == 2
    for pager in pagers:
        assert "records 1–10 of 14 (deleted included)" in words(pager) and "set a" in words(pager)
        assert "deleted records hidden" in words(pager)
    (following,) = {str(h) for h in first.xpath("//nav[@class='pager']//a[@rel='next']/@href")}
    assert "resumptionToken=" in following and "deleted=hide" in following
    second = page(http, following)
    pager = words(second.xpath("//nav[@class='pager']")[0])
    assert "records 11–14 of 14" in pager and "set a" in pager and "format oai_dc" in pager
    assert "1 deleted on this page not shown" in pager and "oai:test.example.org:03" not in listed(second)
    assert second.xpath("//select[@name='set']/option[@selected]/@value") == ["a"]
    assert second.xpath("//select[@name='deleted']/option[@selected]/@value") == ["hide"]
    assert "resumptionToken=" in raw_link(second) and "deleted" not in raw_link(second)
    assert len(listed(first) + listed(second)) == 13
    (restart,) = {str(h) for h in second.xpath("//a[text()='First page']/@href")}
    assert "set=a" in restart and "deleted=hide" in restart
    only = page(http, "/oai/view?verb=ListIdentifiers&metadataPrefix=oai_dc&set=a&deleted=only")
    assert not listed(only) and "10 live on this page not shown" in words(only)
    (following,) = {str(h) for h in only.xpath("//nav[@class='pager']//a[@rel='next']/@href")}
    assert listed(page(http, following)) == ["oai:test.example.org:03"]


def test_each_record_is_one_row_that_opens_to_the_whole_record(http: Any) -> None:
    doc = page(http, "/oai/view?verb=ListRecords&metadataPrefix=oai_dc&set=c")
    (row,) = doc.xpath("//ol[@class='records']/li")
    summary = words(row.xpath("details/summary")[0])
    assert summary.startswith("In c") and "oai:test.example.org:c1" in summary and "sets c" in summary
    assert re.search(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", summary)
    assert not row.xpath("details/summary//a")  # a summary is a control: no links inside
    assert row.xpath("details//table[@class='dc']//td[text()='In c']")
    deleted = page(http, "/oai/view?verb=ListRecords&metadataPrefix=oai_dc&from=2023-11-14T22:13:21Z")
    marks = [words(s) for s in deleted.xpath("//li/details/summary")]
    assert len(marks) == 2 and all("deleted" in m for m in marks)


# ---- /oai in a browser -------------------------------------------------------------------------

XSLT_LINE = b'<?xml-stylesheet type="text/xsl" href="http://127.0.0.1:5000/static/oai2.xsl"?>\n'
CSS_LINE = b'<?xml-stylesheet type="text/css" href="http://127.0.0.1:5000/static/oai-xml.css"?>\n'
HARVESTERS = [
    {},
    {"Accept": "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"},
    {"Accept": "*/*", "User-Agent": "python-requests/2.32"},
    {"Accept": "text/xml", "Sec-Fetch-Dest": "empty", "Sec-Fetch-Mode": "cors"},  # a script's fetch()
]
QUERIES = ["verb=Identify", "verb=ListRecords&metadataPrefix=oai_dc", "verb=ListSets", "verb=Nonsense"]


def without_the_moment(data: bytes) -> bytes:
    """The response without what depends on the second it was made: the responseDate, and a
    resumption token's expiry (in its attribute, and in the token: `state.expiry.signature`,
    of which the state, the list and where it stands, is kept)."""
    data = re.sub(rb"<responseDate>[^<]*", b"", data)
    return re.sub(rb'(<resumptionToken[^>]*?expirationDate=")[^"]*("[^>]*>[^<.]+)\.[0-9]+\.[^<]*', rb"\1\2", data)


@pytest.mark.parametrize("query", QUERIES)
def test_harvesters_get_the_same_bytes_whatever_they_accept(http: Any, query: str) -> None:
    bodies = {http.get(f"/oai?{query}", headers=h).data for h in HARVESTERS}
    (body,) = {without_the_moment(b) for b in bodies}
    assert body.split(b"\n", 2)[1] + b"\n" == XSLT_LINE


@pytest.mark.parametrize("query", QUERIES)
def test_a_person_opening_oai_gets_the_same_xml_styled_by_css(http: Any, query: str) -> None:
    """Chromium's banner comes with XSLT: a navigation gets the CSS instruction instead,
    and the document is otherwise the very same."""
    harvester = http.get(f"/oai?{query}")
    person = http.get(f"/oai?{query}", headers={"Sec-Fetch-Dest": "document", "Sec-Fetch-Mode": "navigate"})
    assert person.headers["Content-Type"] == harvester.headers["Content-Type"] == "text/xml; charset=utf-8"
    assert "Sec-Fetch-Dest" in person.headers["Vary"] and "Sec-Fetch-Dest" in harvester.headers["Vary"]
    theirs, ours = without_the_moment(harvester.data), without_the_moment(person.data)
    assert ours.replace(CSS_LINE, XSLT_LINE) == theirs and CSS_LINE in ours
    validate(person.data)
    css = http.get("/static/oai-xml.css")
    assert css.status_code == 200 and css.mimetype == "text/css" and b"/oai/view" in css.data
    css.close()


# ---- what changed ------------------------------------------------------------------------------


def test_the_changes_page_counts_what_the_next_incremental_harvest_brings(http: Any, oai: OAIClient) -> None:
    """Since a date: in all, per set, each as ListRecords with that `from` counts it, the records
    added or changed apart from the deleted ones."""
    since = "2023-11-14T22:13:21Z"  # after the first write: the deletion and the harvested withdrawal
    doc = page(http, f"/changes?since={since}")
    total = list_size(oai, f"verb=ListRecords&metadataPrefix=oai_dc&from={since}")
    assert doc.xpath("//div[@class='stats']/div/b/text()") == [str(total), "0", "2"] == ["2", "0", "2"]
    counted = {
        row.xpath("td")[0].text_content(): [td.text_content() for td in row.xpath("td[@class='num']")]
        for row in doc.xpath("//h2[text()='Per set']/following-sibling::table[1]/tbody/tr")
    }
    assert counted == {"a": ["0", "1"], "a:b": ["0", "0"], "c": ["0", "0"]}
    (link,) = doc.xpath("//td[@class='num']/a/@href")
    listed_there = page(http, str(link))
    assert [str(i) for i in listed_there.xpath("//ol[@class='records']/li/@data-identifier")] == [
        "oai:test.example.org:03"
    ]
    everything = page(http, "/changes?since=2000-01-01")
    assert everything.xpath("//div[@class='stats']/div/b/text()") == ["16", "14", "2"]
    (one_set,) = everything.xpath("//tr[@id='set-a']/td[@data-label='Set']/a/@href")
    narrowed = page(http, str(one_set))
    assert narrowed.findtext(".//h1") == "What changed since 2000-01-01 in set a"
    assert narrowed.xpath("//tbody/tr/@id") == ["set-a"]
    in_a = list_size(oai, "verb=ListRecords&metadataPrefix=oai_dc&from=2000-01-01&set=a")
    assert narrowed.xpath("//div[@class='stats']/div/b/text()") == [str(in_a), str(in_a - 1), "1"] == ["14", "13", "1"]


def test_the_changes_page_says_when_its_date_is_not_one(http: Any) -> None:
    doc = page(http, "/changes?since=yesterday", 400)
    assert "is not a date" in words(doc.xpath("//*[@role='alert']")[0])


# ---- a partner's page ----------------------------------------------------------------------------

PARTNERS = [
    Spec("honest", records=12, page_size=5, deleted=frozenset({3})),
    Spec("short", records=12, page_size=5, announce=500),
]


def closed_port() -> int:
    """A port on 127.0.0.1 that nothing listens on: a partner there refuses every connection."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def partnered(fleet: Fleet, store_url: str) -> Iterator[Any]:
    """Real harvests: `honest` (12 records, one a tombstone, complete) twice, `short` (announces 500,
    serves 12), `gone` (refuses connections: failed), and `waiting`, never harvested, every 6 hours."""
    config = make_config(
        store_url,
        partners=[
            {"name": "honest", "base_url": fleet.url("honest"), "schedule": {"interval": {"hours": 6}}},
            {"name": "short", "base_url": fleet.url("short")},
            {"name": "gone", "base_url": f"http://127.0.0.1:{closed_port()}/oai"},
            {"name": "waiting", "base_url": "https://waiting.example.org/oai", "schedule": {"interval": {"hours": 6}}},
        ],
    )
    store = Store(store_url)  # the system's clock: the runs' times and the page's now agree
    try:
        for partner in config.partners[:3] + config.partners[:1]:
            next_second()  # each run starts in a second after what the one before wrote
            harvest.run(store, partner, settings=FAST_HARVEST)
        next_second()  # lists hold what was written before the second they are asked in
        yield create_app(config, store=store).test_client()
    finally:
        store.close()


def next_second() -> None:
    """Wait for the system clock's next second: datestamps have seconds."""
    now = int(time.time())
    until(lambda: int(time.time()) > now, "the next second")


def runs_table(doc: Any) -> list[dict[str, str]]:
    """The partner page's runs, each row's cells by their label."""
    return [
        {str(td.get("data-label")): words(td) for td in row.xpath("td")}
        for row in doc.xpath("//h2[text()='Recent runs']/following-sibling::table[1]/tbody/tr")
    ]


def facts(doc: Any) -> dict[str, str]:
    return {words(row.xpath("th")[0]): words(row.xpath("td")[0]) for row in doc.xpath("//table[@class='facts']/tr")}


@with_specs(*PARTNERS)
def test_the_partner_page_lists_its_runs_with_outcome_and_completeness(partnered: Any) -> None:
    doc = page(partnered, "/partners/honest")
    assert doc.findtext(".//h1") == "Partner honest"
    runs = runs_table(doc)
    assert [r["Outcome"] for r in runs] == ["success", "success"]
    assert runs[1]["Records"] == "12 received (1 deleted): 12 added"
    assert runs[1]["Completeness"] == "complete (12 announced, 12 stored)"
    assert runs[0]["Records"] == "none" and runs[0]["Completeness"] == "complete (0 announced, 0 stored)"
    assert all(re.fullmatch(r"#\d+", r["Run"]) and re.fullmatch(r"\d+ s", r["Duration"]) for r in runs)
    shown = facts(doc)
    assert shown["Format"] == "oai_dc" and shown["Schedule"] == "every 6 hours"
    assert re.fullmatch(r"\d+ s ago \(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ\)", shown["Last complete harvest"])
    assert shown["Last successful harvest"] == shown["Last complete harvest"]
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", shown["Next run"])  # six hours after the last run
    assert doc.xpath("//div[@class='stats']/div/b/text()") == ["11", "1"]  # live, deleted
    assert "None." in words(doc.xpath("//h2[text()='Last error']/following-sibling::p[1]")[0])
    short = runs_table(page(partnered, "/partners/short"))
    assert short[0]["Completeness"] == "short by 488 (500 announced, 12 stored)" and short[0]["Outcome"] == "success"
    assert facts(page(partnered, "/partners/short"))["Last complete harvest"] == "none yet"


@with_specs(*PARTNERS)
def test_the_home_page_shows_the_partners_before_the_long_list_of_sets(partnered: Any) -> None:
    """Staff look at the partners' last harvests first; the sets can run to hundreds of rows."""
    doc = page(partnered, "/")
    assert doc.xpath("//main//h2/text()") == ["OAI-PMH", "Partners", "Sets"]
    partner_rows = doc.xpath("//h2[text()='Partners']/following-sibling::table[1]/tbody/tr/td[1]/a/text()")
    assert partner_rows == ["honest", "short", "gone", "waiting"]


@with_specs(*PARTNERS)
def test_a_failed_run_shows_its_reason_as_the_last_error(partnered: Any) -> None:
    doc = page(partnered, "/partners/gone")
    (run,) = runs_table(doc)
    assert run["Outcome"] == "failed" and run["Records"] == "none" and run["Completeness"] == "not judged"
    assert "refused" in run["Reason"].lower() or "connect" in run["Reason"].lower(), run["Reason"]
    error = words(doc.xpath("//div[@class='error']")[0])
    assert error.startswith(f"Run {run['Run']}, failed,") and run["Reason"] in error
    shown = facts(doc)
    assert shown["Last complete harvest"] == shown["Last successful harvest"] == "none yet"
    assert shown["Schedule"] == "not scheduled" and shown["Next run"] == "none scheduled"


@with_specs(*PARTNERS)
def test_a_partner_never_harvested_has_no_runs_and_a_next_run(partnered: Any) -> None:
    doc = page(partnered, "/partners/waiting")
    assert "No run yet." in words(doc) and doc.xpath("//div[@class='stats']/div/b/text()") == ["0", "0"]
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", facts(doc)["Next run"])


@with_specs(*PARTNERS)
def test_the_partner_page_links_its_records_and_their_changes(partnered: Any) -> None:
    doc = page(partnered, "/partners/honest")
    (to_set,) = doc.xpath("//a[text()='the set partners:honest']/@href")
    listed_there = page(partnered, str(to_set))
    assert len(listed_there.xpath("//ol[@class='records']/li")) == 10  # the first page of 12
    changed = {words(a): str(a.get("href")) for a in doc.xpath("//a[contains(@href, '/changes?')]")}
    assert set(changed) == {"changed in the last 7 days", "changed since the last run began"}
    week = page(partnered, changed["changed in the last 7 days"])
    assert week.xpath("//div[@class='stats']/div/b/text()") == ["12", "11", "1"]  # in all, changed, deleted
    since_last = page(partnered, changed["changed since the last run began"])
    assert since_last.xpath("//div[@class='stats']/div/b/text()") == ["0", "0", "0"]  # the last run brought none


@with_specs(*PARTNERS)
def test_the_quarantine_section_says_none(partnered: Any) -> None:
    doc = page(partnered, "/partners/honest")
    (section,) = doc.xpath("//section[@class='quarantine']")
    assert words(section) == "None."


@with_specs(*PARTNERS)
def test_an_unknown_partner_gets_the_sites_404_page(partnered: Any) -> None:
    doc = page(partnered, "/partners/nobody", 404)
    assert doc.findtext(".//h1") == "Not found" and doc.xpath("//header[@class='site']/nav/a")
    assert page(partnered, "/changes?partner=nobody", 404).findtext(".//h1") == "Not found"
    assert page(partnered, "/changes?set=nothing", 404).findtext(".//h1") == "Not found"


@with_specs(*PARTNERS)
def test_the_home_page_links_each_partner_to_its_page(partnered: Any) -> None:
    doc = page(partnered, "/")
    links = doc.xpath("//h2[text()='Partners']/following-sibling::table[1]//td[@data-label='Partner']/a")
    assert [(a.text, a.get("href")) for a in links] == [
        (name, f"/partners/{name}") for name in ("honest", "short", "gone", "waiting")
    ]
    for _, href in [(a.text, a.get("href")) for a in links]:
        page(partnered, str(href))


@with_specs(*PARTNERS)
def test_the_changes_page_counts_changed_and_deleted_apart_per_partner(partnered: Any) -> None:
    doc = page(partnered, "/changes?since=2000-01-01")
    rows = {
        row.get("id"): [words(td) for td in row.xpath("td[@class='num']")]
        for row in doc.xpath("//h2[text()='Per partner']/following-sibling::table[1]/tbody/tr")
    }
    assert rows == {
        "partner-honest": ["11", "1"],
        "partner-short": ["12", "0"],
        "partner-gone": ["0", "0"],
        "partner-waiting": ["0", "0"],
    }
    (deleted,) = doc.xpath("//tr[@id='partner-honest']/td[@data-label='Deleted']/a/@href")
    assert "deleted=only" in deleted and "set=partners%3Ahonest" in deleted
    (tombstone,) = page(partnered, str(deleted)).xpath("//ol[@class='records']/li/@class")
    assert tombstone == "rec is-deleted"
    alone = page(partnered, "/changes?since=2000-01-01&partner=honest")
    assert alone.findtext(".//h1") == "What changed since 2000-01-01 at partner honest"
    assert alone.xpath("//tbody/tr/@id") == ["partner-honest"] and not alone.xpath("//h2[text()='Per set']")
    assert alone.xpath("//div[@class='stats']/div/b/text()") == ["12", "11", "1"]


@pytest.mark.parametrize(
    ("seconds", "said"),
    [(0, "0 s"), (59, "59 s"), (61, "1 min 1 s"), (3600, "1 h"), (3 * 86400 + 4 * 3600 + 5, "3 days 4 h"), (-5, "0 s")],
)
def test_a_time_span_is_said_in_its_two_largest_units(seconds: int, said: str) -> None:
    assert partners.age_text(seconds) == said


@pytest.mark.parametrize(
    ("judged", "said"),
    [
        (Completeness(COMPLETE, 12, 12, 12), "complete (12 announced, 12 stored)"),
        (Completeness(SHORT, 500, 12, 12, shortfall=488), "short by 488 (500 announced, 12 stored)"),
        (Completeness(UNKNOWN, None, 40, 40), "unknown (no completeListSize announced; 40 stored)"),
        (None, ""),
    ],
)
def test_a_runs_completeness_is_said_as_the_harvester_judged_it(judged: Completeness | None, said: str) -> None:
    """The page reads the verdict the harvester stored in the run's counts (it never imports the harvester)."""
    counts = {"completeness": judged.as_dict()} if judged else {}
    assert partners.completeness_text(counts) == said
    if judged is not None and judged.verdict != UNKNOWN:
        assert judged.text() == said  # as `harvester history` says it


def test_the_form_offers_the_formats_harvested_natively_too(oai: OAIClient, store: Store, clock: Clock) -> None:
    """A format served because a partner's records were harvested in it (ListMetadataFormats
    lists it) is offered by the form too, and chosen when the view shows a list in it."""
    with FakePartner(TwoFormats({"oai:p:1": "Kalevala"})) as fake:
        harvest.run(store, Partner("p", fake.url, formats=("oai_dc", "marcxml")), settings=FAST_HARVEST)
    clock.tick()  # a list holds what was written before the second it was asked in
    doc = page(oai.http, "/oai/view?verb=ListRecords&metadataPrefix=marcxml")
    (form,) = doc.xpath("//form[@action='/oai/view']")
    assert form.xpath(".//select[@name='metadataPrefix']/option/text()") == [*formats.REGISTRY, "marcxml"]
    assert form.xpath(".//select[@name='metadataPrefix']/option[@selected]/text()") == ["marcxml"]
    assert listed(doc) == ["oai:p:1"]
