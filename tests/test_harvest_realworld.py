"""Responses real repositories sent (tests/data/realworld, see its INDEX.md), replayed by a
fake partner on 127.0.0.1: every one is read, harvested, or refused with a clear error."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from conftest import NS, OAI_SCHEMA, Clock, OAIClient, make_config
from harvestkit import FAST, FAST_HARVEST, FakePartner, second_store
from lxml import etree
from werkzeug.wrappers import Response

from harvester import errors as err
from harvester import harvest
from harvester.client import SECONDS, Client
from harvester.convert import convert_record
from oaiserver import create_app
from oaiserver.config import Partner
from oaiserver.store import Store

ROOT = Path(__file__).parent / "data" / "realworld"
MAPPINGS = {p.stem: json.loads(p.read_text()) for p in sorted((ROOT / "mappings").glob("*.json"))}
INDEX = (ROOT / "INDEX.md").read_text(encoding="utf-8")
EXPIRED = ROOT / "sickle" / "badResumptionToken.xml"  # what a partner says of a token it no longer knows


class Replay:
    """An endpoint's captured responses, chosen by the request's arguments: the verb, the
    token, and metadataPrefix, set, identifier and from where both sides have them."""

    def __init__(self, endpoint: dict[str, Any]) -> None:
        self.responses = endpoint["responses"]

    def __call__(self, params: dict[str, str], n: int) -> Response:
        for r in self.responses:
            if _matches(r["params"], params):
                headers = {"Content-Type": r.get("content_type") or "text/xml; charset=UTF-8"}
                return Response((ROOT / r["file"]).read_bytes(), status=r.get("status", 200), headers=headers)
        if "resumptionToken" in params:
            return Response(EXPIRED.read_bytes(), mimetype="text/xml")
        return Response("not captured", status=404, mimetype="text/plain")


def _matches(captured: dict[str, str], sent: dict[str, str]) -> bool:
    if captured.get("verb") != sent.get("verb"):
        return False
    if "resumptionToken" in sent or "resumptionToken" in captured:
        return captured.get("resumptionToken") == sent.get("resumptionToken")
    keys = ("metadataPrefix", "set", "identifier", "from")
    return all(captured[k] == sent[k] for k in keys if k in captured and k in sent)


@dataclass(frozen=True)
class Capture:
    endpoint: dict[str, Any]
    params: dict[str, str]
    file: str

    @property
    def body(self) -> bytes:
        return (ROOT / self.file).read_bytes()


CAPTURES = [
    Capture(endpoint, r["params"], r["file"])
    for mapping in MAPPINGS.values()
    for endpoint in mapping["endpoints"].values()
    for r in endpoint["responses"]
]

# Refused, and why (the rest are read, or answer with the OAI error they carry).
REFUSED = {
    "ruby-oai/test.xml": (err.NotOAIResponseError, "not in the OAI-PMH 2.0 namespace"),
}


def index_count(path: str) -> int | None:
    """How many items INDEX.md says the file holds: '16 records', '200 headers', '131 sets'…"""
    line = next(line for line in INDEX.splitlines() if line.startswith(f"- `{path}`"))
    found = re.search(r"— (\d+) (?:records?|headers?|sets?|formats?)[;\s]", line)
    return int(found.group(1)) if found else None


@pytest.mark.parametrize("capture", CAPTURES, ids=[c.file for c in CAPTURES])
def test_every_capture_is_read_or_refused_clearly(capture: Capture) -> None:
    verb = capture.params["verb"]
    args = {k: v for k, v in capture.params.items() if k != "verb"}
    code = re.search(rb'<error code="([A-Za-z]+)"', capture.body)
    with FakePartner(Replay(capture.endpoint)) as fake, Client(fake.url, FAST) as client:
        if capture.file in REFUSED:
            kind, message = REFUSED[capture.file]
            with pytest.raises(kind, match=message):
                client.request(verb, **args)
        elif code is not None:
            with pytest.raises(err.PartnerOAIError) as info:
                client.request(verb, **args)
            assert info.value.code == code.group(1).decode()
        else:
            page = client.request(verb, **args)
            expected = 1 if verb == "Identify" else index_count(capture.file)
            assert expected is not None, f"INDEX.md gives no count for {capture.file}"
            assert len(page.items) == expected


SEQUENCES = [
    (endpoint, seq)
    for mapping in MAPPINGS.values()
    for endpoint in mapping["endpoints"].values()
    for seq in endpoint["sequences"]
    if seq["complete"]
]


@pytest.mark.parametrize(("endpoint", "sequence"), SEQUENCES, ids=[s["pages"][0] for _, s in SEQUENCES])
def test_complete_sequences_are_followed_to_their_end(endpoint: dict[str, Any], sequence: dict[str, Any]) -> None:
    first = dict(sequence["first_request"])
    verb = first.pop("verb")
    with FakePartner(Replay(endpoint)) as fake, Client(fake.url, FAST) as client:
        pages = list(client.pages(verb, **first))
    assert len(pages) == sequence["page_count"]
    assert sum(len(p.items) for p in pages) == sequence["items"]
    if verb in ("ListIdentifiers", "ListRecords"):
        tag = "{http://www.openarchives.org/OAI/2.0/}header" if verb == "ListRecords" else None
        headers = [i.find(tag) if tag else i for p in pages for i in p.items]
        assert sum(1 for h in headers if h is not None and h.get("status") == "deleted") == sequence["deleted"]


def test_identify_captures_give_the_granularity() -> None:
    for capture in CAPTURES:
        if capture.params["verb"] != "Identify" or capture.file in REFUSED:
            continue
        with FakePartner(Replay(capture.endpoint)) as fake, Client(fake.url, FAST) as client:
            assert client.identify().granularity == SECONDS, capture.file


# ---- GetRecord captures: each record converts, and what we would serve is valid -------------


GET_RECORDS = [c for c in CAPTURES if c.params["verb"] == "GetRecord" and b"<error" not in c.body]


@pytest.mark.parametrize("capture", GET_RECORDS, ids=[c.file for c in GET_RECORDS])
def test_captured_records_convert_to_valid_republished_records(capture: Capture) -> None:
    partner = Partner("partner", "http://partner.example.org/oai", metadata_prefix=capture.params["metadataPrefix"])
    with FakePartner(Replay(capture.endpoint)) as fake, Client(fake.url, FAST) as client:
        page = client.request(
            "GetRecord", identifier=capture.params["identifier"], metadataPrefix=partner.metadata_prefix
        )
    record = convert_record(page.items[0], partner, harvest_date=page.response_date)
    assert record.identifier == capture.params["identifier"]
    assert record.raw_xml and record.provenance and record.provenance["identifier"] == record.identifier
    if record.dc:
        fragment = etree.fromstring(record.metadata["oai_dc"])
        assert OAI_SCHEMA.validate(fragment), OAI_SCHEMA.error_log
        assert record.about is not None
        assert OAI_SCHEMA.validate(etree.fromstring(record.about)), OAI_SCHEMA.error_log
    else:
        assert record.deleted or record.metadata == {}, "no Dublin Core: stored, not republished"


def test_adjacent_cdata_sections_and_pretty_printed_values() -> None:
    by_file = {c.file: c for c in GET_RECORDS}
    partner = Partner("partner", "http://partner.example.org/oai")
    values = {}
    for name in ("xoai/oai_dc-CDATA.xml", "metis/sampleOaiRecord.xml", "pyoai/fake2/00000.xml"):
        root = etree.fromstring(by_file[name].body)
        element = root.find(".//oai:GetRecord/oai:record", NS)
        values[name] = convert_record(element, partner, harvest_date="2024-01-01T00:00:00Z")
    assert values["xoai/oai_dc-CDATA.xml"].dc_values("title") == ["Article Title-additional CDATA"]
    assert values["metis/sampleOaiRecord.xml"].dc_values("identifier")[0].endswith("show_image=19")
    deleted = values["pyoai/fake2/00000.xml"]
    assert deleted.deleted and deleted.metadata == {"oai_dc": ""}


# ---- ListRecords captures, harvested into a store -------------------------------------------


@dataclass(frozen=True)
class Expect:
    endpoint: str
    file: str
    outcome: str
    stored: int
    deleted: int = 0
    without_dc: int = 0
    reason: str = ""


HARVESTS = [
    Expect("pyoai--dspace.ubib.eur.nl", "pyoai/fake1/00005.xml", "success", 16),
    Expect("pyoai--dspace.ubib.eur.nl", "pyoai/fake2/00002.xml", "success", 81, deleted=2),
    Expect("phpoaipmh--nsdl.org", "phpoaipmh/GoodResponseSinglePage.xml", "success", 162),
    Expect("vufindharvest--subjectsplus", "vufindharvest/subjectsplus.xml", "success", 1),
    Expect(
        "clarin-ohm--metalb.csc.fi",
        "clarin-ohm/ListRecords/endpoint0000/RecordLists/resp0000.xml",
        "success",
        8,
        without_dc=8,
    ),
    Expect(
        "clarin-ohm--metalb.csc.fi",
        "clarin-ohm/ListRecords/endpoint0000/RecordLists/resp0002.xml",
        "success",
        8,
        without_dc=8,
    ),
    Expect(
        "hepcrawl--export.arxiv.org",
        "hepcrawl/functional/arxiv/fixtures/http_server/records/arxiv-physics-hep-ex.xml",
        "success",
        3,
        without_dc=3,
    ),
    Expect(
        "hepcrawl--cds.cern.ch",
        "hepcrawl/functional/cds/fixtures/http_server/records/cds-cerncds-hep-ex.xml",
        "success",
        2,  # MARC21 slim: Dublin Core by the crosswalk
    ),
    # Its identifier has a space: not a URI, so the store refuses it, says so, and quarantines it.
    Expect(
        "hepcrawl--pos.sissa.it", "hepcrawl/unit/responses/pos/sample_pos_record.xml", "success", 0, reason="not a URI"
    ),
    # First pages whose follow-up was not captured: the partner rejects the token it gave; its
    # records share one datestamp, so the list is walked by date windows (harvester.takeup), and the
    # first window (from the epoch, until 1997) is answered with the same records of 2024.
    Expect(
        "phpoaipmh--oai.bnf.fr",
        "phpoaipmh/NamespacedSample.xml",
        "failed",
        1,
        reason="badResumptionToken); the partner ignores `from` and `until`",
    ),
    Expect(
        "vufindharvest--doaj.org",
        "vufindharvest/oai_doaj.xml",
        "failed",
        100,
        without_dc=100,
        reason="badResumptionToken",
    ),
    Expect(
        "vufindharvest--thisisallfake.example.com",
        "vufindharvest/marc.xml",
        "failed",
        100,  # MARC21 slim: Dublin Core by the crosswalk
        reason="badResumptionToken",
    ),
]


@pytest.fixture
def target(store_url: str, tmp_path: Path, clock: Clock) -> Iterator[Store]:
    with second_store(store_url, tmp_path, clock) as s:
        yield s


def _endpoint(name: str) -> dict[str, Any]:
    for mapping in MAPPINGS.values():
        if name in mapping["endpoints"]:
            return dict(mapping["endpoints"][name])
    raise KeyError(name)


@pytest.mark.parametrize("expect", HARVESTS, ids=[e.file.rsplit("/", 1)[-1] for e in HARVESTS])
def test_captured_lists_are_harvested_or_fail_clearly(expect: Expect, target: Store, clock: Clock) -> None:
    endpoint = _endpoint(expect.endpoint)
    captured = next(r for r in endpoint["responses"] if r["file"] == expect.file)
    endpoint["responses"] = [captured]  # this list only, even where an endpoint has several
    params = captured["params"]
    partner = Partner(
        "partner",
        "http://partner.example.org/oai",
        metadata_prefix=params.get("metadataPrefix", "oai_dc"),
        sets=(params["set"],) if "set" in params else (),
    )
    with FakePartner(Replay(endpoint)) as fake:
        partner = Partner(partner.name, fake.url, partner.metadata_prefix, partner.sets)
        report = harvest.run(target, partner, settings=FAST_HARVEST)
    assert report.outcome == expect.outcome, report.reason
    assert expect.reason in (report.reason or "")
    stored = [target.get(i) for i in target.identifiers(source="partner")]
    assert len(stored) == expect.stored
    assert sum(1 for r in stored if r and r.deleted) == expect.deleted
    assert sum(1 for r in stored if r and not r.deleted and not r.metadata) == expect.without_dc
    assert all(r and r.raw_xml and r.provenance for r in stored)
    clock.tick()
    if expect.stored - expect.without_dc:
        # What we republish is valid OAI-PMH, provenance included, page after page.
        config = make_config(target.url, partners=[{"name": "partner", "base_url": fake.url}])
        served = OAIClient(create_app(config, store=target).test_client())
        doc = served(verb="ListRecords", metadataPrefix="oai_dc", set="partners:partner")
        shown = len(doc.findall(".//oai:record", NS))
        while token := doc.findtext(".//oai:resumptionToken", namespaces=NS):
            doc = served(verb="ListRecords", resumptionToken=token)
            shown += len(doc.findall(".//oai:record", NS))
        assert shown == expect.stored - expect.without_dc
