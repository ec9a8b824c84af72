"""End to end: 2,500 synthetic records, a real WSGI server on 127.0.0.1, the real Sickle client.

Expected answers are computed here from the synthetic records themselves (their datestamps,
sets and Dublin Core), not from the store's queries; every page Sickle fetches is also
validated against the official schemas.
"""

from __future__ import annotations

import calendar
import time
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from typing import Any

import pytest
from conftest import NS, LiveServer, backend_store_url, error_codes, make_config, token_of, validate
from lxml import etree
from sickle import Sickle, oaiexceptions
from sickle.models import Header
from sickle.models import Record as SickleRecord

from oaiserver import create_app
from oaiserver.records import Record
from oaiserver.store import Store
from oaiserver.synthetic import synthetic_records, synthetic_sets

pytestmark = pytest.mark.slow  # every test here needs the 2,500-record live server

N = 2500
PAGE = 50


# ---- the live repository ---------------------------------------------------------------------------


@dataclass
class Live:
    url: str
    store: Store
    records: dict[str, Record]  # by identifier, as generated
    ordered: list[Record]  # by datestamp (synthetic records come sorted)
    stamps: dict[str, int]  # identifier -> datestamp


def _unavailable(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    start_response("503 Service Unavailable", [("Content-Type", "text/plain")])
    return [b"not ready\n"]


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def live(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    stack = ExitStack()
    url = stack.enter_context(backend_store_url(request.param, tmp_path_factory.mktemp("e2e")))
    store = Store(url)
    try:
        records = list(synthetic_records(N, "test.example.org"))
        result = store.write(records, keep_datestamps=True)
        assert result.added == N
        # The server comes first: the configured baseURL must be the URL it listens on.
        server = LiveServer(_unavailable)
        config = make_config(url, sets=synthetic_sets(), server__page_size=PAGE, repository__base_url=server.url)
        server.server.app = create_app(config, store=store)
        try:
            with server:
                stamps = {r.identifier: r.datestamp for r in records if r.datestamp is not None}
                assert len(stamps) == N
                yield Live(server.url, store, {r.identifier: r for r in records}, records, stamps)
        finally:
            server.server.server_close()
    finally:
        store.close()
        stack.close()


class RecordingSickle(Sickle):
    """Sickle, keeping every HTTP response it got (to validate each page as sent)."""

    def __init__(self, endpoint: str, **kwargs: Any) -> None:
        super().__init__(endpoint, timeout=30, **kwargs)
        self.pages: list[tuple[dict[str, str], Any]] = []

    def harvest(self, **kwargs: Any) -> Any:
        response = super().harvest(**kwargs)
        self.pages.append((dict(kwargs), response.http_response))
        return response


# ---- what the answers must be, from the records themselves -----------------------------------------


def utc(epoch: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(epoch))


def bound(text: str, *, until: bool) -> int:
    """An OAI-PMH `from`/`until` value as epoch seconds; a day as `until` covers the whole day."""
    if "T" in text:
        return calendar.timegm(time.strptime(text, "%Y-%m-%dT%H:%M:%SZ"))
    return calendar.timegm(time.strptime(text, "%Y-%m-%d")) + (86399 if until else 0)


def in_set(record: Record, spec: str) -> bool:
    """A record in `x:sub` is in `x` too."""
    return any(s == spec or s.startswith(spec + ":") for s in record.sets)


def expected(live: Live, args: dict[str, str]) -> set[str]:
    start = bound(args["from"], until=False) if "from" in args else None
    end = bound(args["until"], until=True) if "until" in args else None
    return {
        r.identifier
        for r in live.ordered
        if (start is None or live.stamps[r.identifier] >= start)
        and (end is None or live.stamps[r.identifier] <= end)
        and ("set" not in args or in_set(r, args["set"]))
    }


def expected_dc(record: Record) -> dict[str, list[str]]:
    """Sickle's view of an oai_dc record: element name to its values, in order."""
    values: dict[str, list[str]] = {}
    for v in record.dc:
        if v.value.strip():
            values.setdefault(v.element, []).append(v.value.strip())
    return values


def check_pages(sickle: RecordingSickle, live: Live, verb: str, total: int) -> None:
    """Every page: 200, schema-valid, no errors, `<request>` echoing what was sent, full pages
    but the last, and resumption tokens whose cursor and completeListSize add up."""
    item = "oai:record" if verb == "ListRecords" else "oai:header"
    pages = [(params, response) for params, response in sickle.pages if params["verb"] == verb]
    assert pages
    seen = 0
    for i, (params, response) in enumerate(pages):
        assert response.status_code == 200
        doc = validate(response.content)
        assert error_codes(doc) == []
        request = doc.find("oai:request", NS)
        assert request is not None and request.text == live.url
        assert dict(request.attrib) == params
        count = len(doc.findall(f"oai:{verb}/{item}", NS))
        last = i == len(pages) - 1
        assert count == PAGE or (last and 0 < count <= PAGE), (i, count)
        token = token_of(doc)
        if len(pages) == 1:
            assert token is None
        else:
            assert token is not None
            assert int(token.get("cursor", "-1")) == seen
            assert int(token.get("completeListSize", "-1")) == total
            assert bool(token.text) == (not last)
        seen += count
    assert seen == total


def c14n(element: etree._Element) -> bytes:
    return etree.tostring(element, method="c14n", exclusive=True)


# ---- complete lists ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def harvest(live: Live) -> tuple[RecordingSickle, list[SickleRecord]]:
    """One full ListRecords harvest, deleted records included."""
    sickle = RecordingSickle(live.url)
    records = list(sickle.ListRecords(metadataPrefix="oai_dc", ignore_deleted=False))
    return sickle, records


def test_list_records_gives_every_record_once(live: Live, harvest: tuple[RecordingSickle, list[Any]]) -> None:
    sickle, records = harvest
    ids = [r.header.identifier for r in records]
    assert len(ids) == len(set(ids)), "an identifier came twice"
    assert set(ids) == live.store.identifiers()
    assert set(ids) == set(live.records)
    check_pages(sickle, live, "ListRecords", N)
    assert all(response.headers.get("Content-Encoding") == "gzip" for _, response in sickle.pages)


def test_list_records_headers_and_metadata_match_the_records(
    live: Live, harvest: tuple[RecordingSickle, list[Any]]
) -> None:
    _, records = harvest
    deleted = {i for i, r in live.records.items() if r.deleted}
    assert 10 < len(deleted) < N // 10  # the data set has about 2% deleted records
    assert {r.header.identifier for r in records if r.deleted} == deleted
    for got in records:
        source = live.records[got.header.identifier]
        assert got.header.datestamp == utc(live.stamps[source.identifier])
        assert got.header.setSpecs == source.sets
        metadata = got.xml.find("oai:metadata", NS)
        if source.deleted:
            assert got.deleted and got.header.deleted
            assert got.xml.find("oai:header", NS).get("status") == "deleted"
            assert metadata is None and not hasattr(got, "metadata")
        else:
            assert not got.deleted and got.xml.find("oai:header", NS).get("status") is None
            assert metadata is not None and got.metadata == expected_dc(source)


def test_list_identifiers_gives_every_header_once(live: Live) -> None:
    sickle = RecordingSickle(live.url)
    headers: list[Header] = list(sickle.ListIdentifiers(metadataPrefix="oai_dc", ignore_deleted=False))
    ids = [h.identifier for h in headers]
    assert len(ids) == len(set(ids)), "an identifier came twice"
    assert set(ids) == live.store.identifiers()
    check_pages(sickle, live, "ListIdentifiers", N)
    for h in headers:
        source = live.records[h.identifier]
        assert h.deleted == source.deleted
        assert h.datestamp == utc(live.stamps[h.identifier])
        assert h.setSpecs == source.sets


# ---- selective harvesting ------------------------------------------------------------------------------

# `@n` stands for the datestamp of the n-th record (in datestamp order): exact bounds, inclusive.
SELECTIONS: list[tuple[str, str, dict[str, str]]] = [
    ("ListIdentifiers", "GET", {"set": "history"}),
    ("ListIdentifiers", "POST", {"set": "history"}),
    ("ListIdentifiers", "GET", {"set": "history:sub"}),
    ("ListRecords", "GET", {"set": "diplomacy:sub", "from": "2010-01-01"}),
    ("ListIdentifiers", "GET", {"from": "2019-01-01"}),
    ("ListIdentifiers", "GET", {"until": "2001-06-30"}),
    ("ListIdentifiers", "POST", {"from": "@1000", "until": "@1100"}),
    ("ListRecords", "GET", {"set": "law", "from": "2005-03-01", "until": "2012-10-31"}),
    ("ListIdentifiers", "GET", {"set": "science", "until": "@600"}),
    ("ListIdentifiers", "GET", {"from": "@2499"}),
]


def resolve(live: Live, args: dict[str, str]) -> dict[str, str]:
    return {k: utc(live.stamps[live.ordered[int(v[1:])].identifier]) if v[0] == "@" else v for k, v in args.items()}


@pytest.mark.parametrize(
    ("verb", "method", "args"),
    SELECTIONS,
    ids=[f"{v}-{m}-{'&'.join(f'{k}={x}' for k, x in a.items())}" for v, m, a in SELECTIONS],
)
def test_selective_harvest_matches_the_records(live: Live, verb: str, method: str, args: dict[str, str]) -> None:
    args = resolve(live, args)
    want = expected(live, args)
    assert want, "a selection that should not be empty"
    sickle = RecordingSickle(live.url, http_method=method)
    items = list(getattr(sickle, verb)(metadataPrefix="oai_dc", ignore_deleted=False, **args))
    ids = [(i.header if verb == "ListRecords" else i).identifier for i in items]
    assert len(ids) == len(set(ids)), "an identifier came twice"
    assert set(ids) == want
    check_pages(sickle, live, verb, len(want))


@pytest.mark.parametrize(
    "args",
    [{"from": "2030-01-01"}, {"set": "history", "until": "1999-12-31"}, {"set": "law:sub", "from": "@2499"}],
    ids=["future", "before-the-first", "set-and-window"],
)
def test_empty_selection_is_no_records_match(live: Live, args: dict[str, str]) -> None:
    args = resolve(live, args)
    if expected(live, args):
        pytest.fail(f"the data set changed: {args} is not empty any more")
    sickle = RecordingSickle(live.url)
    with pytest.raises(oaiexceptions.NoRecordsMatch):
        list(sickle.ListIdentifiers(metadataPrefix="oai_dc", **args))
    doc = validate(sickle.pages[0][1].content)
    assert error_codes(doc) == ["noRecordsMatch"]


# ---- single records, sets, Identify -------------------------------------------------------------------


def test_get_record_matches_list_records(live: Live, harvest: tuple[RecordingSickle, list[Any]]) -> None:
    _, records = harvest
    listed = {r.header.identifier: r for r in records}
    sample = sorted(live.records)[::97] + sorted(i for i, r in live.records.items() if r.deleted)[:8]
    assert any(live.records[i].deleted for i in sample) and not all(live.records[i].deleted for i in sample)
    sickle = RecordingSickle(live.url)
    for identifier in sample:
        got = sickle.GetRecord(identifier=identifier, metadataPrefix="oai_dc")
        assert got.header.identifier == identifier
        assert c14n(got.xml) == c14n(listed[identifier].xml)
    assert len(sickle.pages) == len(sample)
    for params, response in sickle.pages:
        doc = validate(response.content)
        assert error_codes(doc) == []
        assert dict(doc.find("oai:request", NS).attrib) == params


def test_list_sets_and_identify(live: Live) -> None:
    sickle = RecordingSickle(live.url)
    sets = list(sickle.ListSets())
    assert [(s.setSpec, s.setName) for s in sets] == [(s["spec"], s["name"]) for s in synthetic_sets()]
    identify = sickle.Identify()
    assert identify.baseURL == live.url
    assert identify.earliestDatestamp == utc(min(live.stamps.values()))
    assert identify.deletedRecord == "persistent"
    assert identify.granularity == "YYYY-MM-DDThh:mm:ssZ"
    for _, response in sickle.pages:
        assert error_codes(validate(response.content)) == []
