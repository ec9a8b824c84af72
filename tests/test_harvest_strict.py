"""Strict records: a record the schema does not allow (a status other than "deleted", two
<metadata>) and an identifier twice in one page are each a named refusal of that record, put in
quarantine, whether the page is converted here or in the worker process. And a DOCTYPE is refused
unread wherever it stands in the prolog, lenient_xml or not."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest
from harvestkit import FAST, FAST_HARVEST, FakePartner, PagedPartner, list_records, record, xml

from harvester import client as client_module
from harvester import errors as err
from harvester import harvest
from harvester.client import Client
from harvester.pipeline import Worker
from oaiserver.config import Partner
from oaiserver.store import Store, harvest_history, quarantined

HEADER = "<header{status}><identifier>{id}</identifier><datestamp>2024-04-01T10:00:00Z</datestamp></header>"
DC = (
    '<oai_dc:dc xmlns:oai_dc="http://www.openarchives.org/OAI/2.0/oai_dc/" '
    'xmlns:dc="http://purl.org/dc/elements/1.1/"><dc:title>{title}</dc:title></oai_dc:dc>'
)


def bogus_status(identifier: str) -> str:
    header = HEADER.format(status=' status="bogus"', id=identifier)
    return f"<record>{header}<metadata>{DC.format(title='Bogus')}</metadata></record>"


def two_metadata(identifier: str) -> str:
    header = HEADER.format(status="", id=identifier)
    metadata = f"<metadata>{DC.format(title='One')}</metadata><metadata>{DC.format(title='Two')}</metadata>"
    return f"<record>{header}{metadata}</record>"


EXPECTED_FAILURES = [
    ("oai:p:bogus", "the header's status is 'bogus'; OAI-PMH allows only status=\"deleted\""),
    ("oai:p:twice-meta", "the record has 2 <metadata> elements; OAI-PMH allows one"),
    ("oai:p:dup", "the identifier is listed 2 times in one page; none of them is stored"),
    ("oai:p:dup", "the identifier is listed 2 times in one page; none of them is stored"),
]


def strict_page(n: int = 0) -> list[str]:
    """Two good records, and the four refusals of EXPECTED_FAILURES (page `n` of a list)."""
    return [
        record(f"oai:p:good-{n}-1"),
        bogus_status("oai:p:bogus" if n == 0 else f"oai:p:bogus-{n}"),
        two_metadata("oai:p:twice-meta" if n == 0 else f"oai:p:twice-meta-{n}"),
        record("oai:p:dup" if n == 0 else f"oai:p:dup-{n}", "First"),
        record(f"oai:p:good-{n}-2"),
        record("oai:p:dup" if n == 0 else f"oai:p:dup-{n}", "Second"),
    ]


@pytest.mark.parametrize("in_worker", [False, True], ids=["here", "worker"])
def test_records_the_schema_forbids_and_repeated_identifiers_are_named_refusals(
    workers: list[Worker], store: Store, in_worker: bool
) -> None:
    pages = [[record("oai:p:first")], strict_page(0)]  # two pages: the second goes to the worker if asked
    settings = replace(FAST_HARVEST, worker_process=in_worker)
    with FakePartner(PagedPartner(pages)) as partner:
        report = harvest.run(store, Partner("p", partner.url), settings=settings)
    assert in_worker is bool(workers)
    assert report.outcome == "success" and report.exit_code == 0, report.reason
    assert report.failures == EXPECTED_FAILURES
    assert (report.counts.quarantined, report.counts.failed) == (3, 0)
    assert report.counts.received == 7 and report.counts.added == 3
    assert store.identifiers(source="p") == {"oai:p:first", "oai:p:good-0-1", "oai:p:good-0-2"}
    assert (report.reason or "").startswith("3 record(s) quarantined (oai:p:bogus: ")
    assert {q.identifier: q.reason for q in quarantined(store, "p")} == dict(EXPECTED_FAILURES)
    history = harvest_history(store, "p")[0]
    assert history.counts["quarantined"] == 3
    assert [tuple(f) for f in history.counts["failures"]] == EXPECTED_FAILURES


def test_a_repeated_identifier_does_not_overwrite_what_is_stored(store: Store) -> None:
    with FakePartner(PagedPartner([[record("oai:p:dup", "Original")]])) as partner:
        assert harvest.run(store, Partner("p", partner.url), settings=FAST_HARVEST).outcome == "success"
    with FakePartner(PagedPartner([[record("oai:p:dup", "A"), record("oai:p:dup", "B")]])) as partner:
        report = harvest.run(store, Partner("p", partner.url), settings=FAST_HARVEST, full=True)
    assert report.outcome == "success" and report.counts.quarantined == 1
    kept = store.get("oai:p:dup")
    assert kept is not None and kept.dc_values("title") == ["Original"]


def test_a_deleted_status_is_still_a_tombstone(store: Store) -> None:
    with FakePartner(PagedPartner([[record("oai:p:gone", deleted=True)]])) as partner:
        report = harvest.run(store, Partner("p", partner.url), settings=FAST_HARVEST)
    assert report.outcome == "success" and report.counts.deleted == 1
    gone = store.get("oai:p:gone")
    assert gone is not None and gone.deleted


# ---- DOCTYPE anywhere in the prolog -------------------------------------------------------------

DOCTYPE = '<!DOCTYPE OAI-PMH [<!ENTITY x "expanded">]>'


def with_prolog(prolog: str, *, entity: str = "&x;") -> str:
    body = list_records([record("oai:p:1", entity)]).split("\n", 1)[1]
    return f'<?xml version="1.0" encoding="UTF-8"?>\n{prolog}{body}'


LONG_COMMENT = "<!-- " + "a comment that goes on " * 4000 + "-->\n"  # about 90 KB
PROLOGS = {
    "short": DOCTYPE,
    "after-90kb-of-comment": LONG_COMMENT + DOCTYPE,
    "after-many-comments-and-pis": "<!-- c -->\n<?pi data?>\n" * 20000 + DOCTYPE,
    "between-comments": LONG_COMMENT + DOCTYPE + LONG_COMMENT,
}


def refusal(client: Client) -> str:
    """The message of the NotOAIResponseError a ListRecords request gets."""
    with pytest.raises(err.NotOAIResponseError) as refused:
        client.request("ListRecords", metadataPrefix="oai_dc")
    return str(refused.value)


def never_parsed(monkeypatch: pytest.MonkeyPatch) -> None:
    def parse(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("the page was parsed")

    monkeypatch.setattr(client_module, "xml_parser", parse)


@pytest.mark.parametrize("lenient", [False, True], ids=["strict", "lenient_xml"])
@pytest.mark.parametrize("where", list(PROLOGS))
def test_a_doctype_anywhere_in_the_prolog_is_refused_unread(
    monkeypatch: pytest.MonkeyPatch, where: str, lenient: bool
) -> None:
    never_parsed(monkeypatch)
    body = with_prolog(PROLOGS[where])
    with FakePartner(lambda params, n: xml(body)) as partner, Client(partner.url, FAST) as client:
        client.settings = replace(client.settings, lenient_xml=lenient)
        with pytest.raises(err.NotOAIResponseError, match="declares a DOCTYPE") as refused:
            client.request("ListRecords", metadataPrefix="oai_dc")
    assert "lenient_xml" not in str(refused.value)


@pytest.mark.parametrize("encoding", ["utf-16-le", "utf-16-be"])
def test_a_doctype_after_a_long_prolog_in_utf16_is_refused_unread(
    monkeypatch: pytest.MonkeyPatch, encoding: str
) -> None:
    never_parsed(monkeypatch)
    text = with_prolog(LONG_COMMENT + DOCTYPE).replace('encoding="UTF-8"', 'encoding="UTF-16"')
    body = "\ufeff".encode(encoding) + text.encode(encoding)
    with FakePartner(lambda params, n: xml(body)) as partner, Client(partner.url, FAST) as client:
        refused = refusal(client)
    assert "declares a DOCTYPE" in refused and "lenient_xml" not in refused


def test_a_broken_doctype_after_a_long_prolog_does_not_suggest_lenient_xml() -> None:
    """A DOCTYPE that is itself broken: the page is refused for its DOCTYPE, not called broken
    XML that lenient_xml could repair (it would then be parsed, DOCTYPE and all)."""
    body = with_prolog(LONG_COMMENT + "<!DOCTYPE OAI-PMH [<!ENTITY broken>]>", entity="fine")
    with FakePartner(lambda params, n: xml(body)) as partner, Client(partner.url, FAST) as client:
        refused = refusal(client)
    assert "declares a DOCTYPE" in refused and "lenient_xml" not in refused


def test_a_long_prolog_without_doctype_is_fine() -> None:
    body = with_prolog(LONG_COMMENT + "<?pi data?>\n", entity="fine")
    with FakePartner(lambda params, n: xml(body)) as partner, Client(partner.url, FAST) as client:
        page = client.request("ListRecords", metadataPrefix="oai_dc")
    assert len(page.items) == 1


def test_an_unclosed_comment_in_the_prolog_is_broken_xml_not_a_doctype() -> None:
    body = '<?xml version="1.0"?>\n<!-- never closed ' + "x" * 100_000 + list_records([]).split("\n", 1)[1]
    with (
        FakePartner(lambda params, n: xml(body)) as partner,
        Client(partner.url, FAST) as client,
        pytest.raises(err.XMLSyntaxError, match="not well-formed"),
    ):
        client.request("ListRecords", metadataPrefix="oai_dc")
