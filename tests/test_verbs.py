"""The six verbs, their errors, sets, deleted records and selective harvesting."""

from __future__ import annotations

import gzip

import pytest
from conftest import NS, Clock, OAIClient, error_codes, identifiers, make_config, make_record, validate

from oaiserver import create_app
from oaiserver.records import format_datestamp
from oaiserver.store import Store

T0 = 1_700_000_000  # the clock fixture's start: 2023-11-14T22:13:20Z


def ids(*locals_: str) -> list[str]:
    return [f"oai:test.example.org:{x}" for x in locals_]


# ---- Identify -------------------------------------------------------------------------------


def test_identify_has_every_required_element_in_order(oai: OAIClient, store: Store, clock: Clock) -> None:
    store.write([make_record("1")])
    doc = oai(verb="Identify")
    ident = doc.find("oai:Identify", NS)
    names = [el.tag.split("}")[1] for el in ident]
    assert names[:8] == [
        "repositoryName",
        "baseURL",
        "protocolVersion",
        "adminEmail",
        "earliestDatestamp",
        "deletedRecord",
        "granularity",
        "compression",
    ]
    assert ident.findtext("oai:baseURL", namespaces=NS) == "http://127.0.0.1:5000/oai"
    assert ident.findtext("oai:protocolVersion", namespaces=NS) == "2.0"
    assert ident.findtext("oai:deletedRecord", namespaces=NS) == "persistent"
    assert ident.findtext("oai:granularity", namespaces=NS) == "YYYY-MM-DDThh:mm:ssZ"
    assert ident.findtext("oai:compression", namespaces=NS) == "gzip"
    oai_id = ident.find("oai:description/id:oai-identifier", NS)
    assert oai_id.findtext("id:repositoryIdentifier", namespaces=NS) == "test.example.org"
    assert oai_id.findtext("id:sampleIdentifier", namespaces=NS) == "oai:test.example.org:1"


def test_earliest_datestamp_counts_deleted_records(oai: OAIClient, store: Store, clock: Clock) -> None:
    store.write([make_record("old")])
    clock.tick(100)
    store.write([make_record("new")])
    clock.tick(100)
    store.delete(["old"])  # unknown local name: nothing happens
    store.delete(["oai:test.example.org:old"])
    doc = oai(verb="Identify")
    # "old" was deleted at T0+200, "new" written at T0+100: the earliest is now T0+100.
    assert doc.findtext(".//oai:earliestDatestamp", namespaces=NS) == format_datestamp(T0 + 100)
    clock.tick()
    deleted = oai(verb="ListIdentifiers", metadataPrefix="oai_dc")
    assert identifiers(deleted) == ids("new", "old")


def test_identify_base_url_comes_from_configuration(store_url: str, store: Store) -> None:
    cfg = make_config(store_url, repository__base_url="https://oai.example.org/behind/proxy/oai")
    client = create_app(cfg, store=store).test_client()
    doc = validate(client.get("/oai?verb=Identify").data)
    assert doc.findtext(".//oai:baseURL", namespaces=NS) == "https://oai.example.org/behind/proxy/oai"
    assert doc.findtext("oai:request", namespaces=NS) == "https://oai.example.org/behind/proxy/oai"


def test_gzip_only_when_asked(oai: OAIClient, store: Store, clock: Clock) -> None:
    store.write([make_record(str(i)) for i in range(5)])
    clock.tick()
    plain = oai.http.get("/oai?verb=ListRecords&metadataPrefix=oai_dc")
    assert "Content-Encoding" not in plain.headers
    packed = oai.http.get("/oai?verb=ListRecords&metadataPrefix=oai_dc", headers={"Accept-Encoding": "gzip"})
    assert packed.headers["Content-Encoding"] == "gzip"
    assert identifiers(validate(gzip.decompress(packed.data))) == identifiers(validate(plain.data))
    refused = oai.http.get("/oai?verb=Identify", headers={"Accept-Encoding": "gzip;q=0, identity"})
    assert "Content-Encoding" not in refused.headers


def test_content_type_is_xml(oai: OAIClient) -> None:
    assert oai.http.get("/oai?verb=Identify").headers["Content-Type"] == "text/xml; charset=utf-8"


# ---- ListMetadataFormats ------------------------------------------------------------------


def test_list_metadata_formats(oai: OAIClient, store: Store) -> None:
    store.write([make_record("1")])
    for doc in (oai(verb="ListMetadataFormats"), oai(verb="ListMetadataFormats", identifier=ids("1")[0])):
        fmt = doc.find(".//oai:metadataFormat", NS)
        assert fmt.findtext("oai:metadataPrefix", namespaces=NS) == "oai_dc"
        assert fmt.findtext("oai:schema", namespaces=NS) == "http://www.openarchives.org/OAI/2.0/oai_dc.xsd"
        assert fmt.findtext("oai:metadataNamespace", namespaces=NS) == "http://www.openarchives.org/OAI/2.0/oai_dc/"


def test_list_metadata_formats_of_unknown_item(oai: OAIClient) -> None:
    assert error_codes(oai(verb="ListMetadataFormats", identifier="oai:test.example.org:nope")) == ["idDoesNotExist"]


def test_list_metadata_formats_of_item_with_no_format(oai: OAIClient, store: Store) -> None:
    bare = make_record("bare")
    bare.metadata = {}
    store.write([bare])
    assert error_codes(oai(verb="ListMetadataFormats", identifier=ids("bare")[0])) == ["noMetadataFormats"]


# ---- GetRecord ------------------------------------------------------------------------------


def test_get_record(oai: OAIClient, store: Store) -> None:
    store.write([make_record("1", "Trade & <Tariffs>", sets=("a:b",), creator="Zürich, É.")])
    doc = oai(verb="GetRecord", identifier=ids("1")[0], metadataPrefix="oai_dc")
    record = doc.find("oai:GetRecord/oai:record", NS)
    assert record.findtext("oai:header/oai:identifier", namespaces=NS) == ids("1")[0]
    assert [s.text for s in record.iterfind("oai:header/oai:setSpec", NS)] == ["a:b"]
    assert record.findtext(".//dc:title", namespaces=NS) == "Trade & <Tariffs>"
    assert record.findtext(".//dc:creator", namespaces=NS) == "Zürich, É."


@pytest.mark.parametrize(
    ("identifier", "prefix", "codes"),
    [
        ("oai:test.example.org:nope", "oai_dc", ["idDoesNotExist"]),
        ("oai:test.example.org:1", "marc21", ["cannotDisseminateFormat"]),
        ("oai:test.example.org:nope", "marc21", ["idDoesNotExist", "cannotDisseminateFormat"]),
    ],
)
def test_get_record_errors(oai: OAIClient, store: Store, identifier: str, prefix: str, codes: list[str]) -> None:
    store.write([make_record("1")])
    doc = oai(verb="GetRecord", identifier=identifier, metadataPrefix=prefix)
    assert error_codes(doc) == codes
    assert doc.find("oai:request", NS).attrib == {
        "verb": "GetRecord",
        "identifier": identifier,
        "metadataPrefix": prefix,
    }


def test_errors_speak_the_one_list_of_codes(oai: OAIClient) -> None:
    """Every code of OAI-PMH 2.0 has one error class; one raised without words says what the spec
    says the code means, from the list the validator and the harvester read too."""
    from oaiserver.errors import ALL_ERRORS
    from oaiserver.records import ERROR_CODES

    assert sorted(cls.code for cls in ALL_ERRORS) == sorted(ERROR_CODES)
    assert all(cls().message == ERROR_CODES[cls.code] for cls in ALL_ERRORS)
    doc = oai(verb="GetRecord", identifier="oai:test.example.org:nope", metadataPrefix="oai_dc")
    assert doc.findtext("oai:error", namespaces=NS) == ERROR_CODES["idDoesNotExist"]


def test_deleted_record_has_status_and_no_metadata(oai: OAIClient, store: Store, clock: Clock) -> None:
    store.write([make_record("1"), make_record("2")])
    clock.tick()
    store.delete([ids("1")[0]])
    clock.tick()
    got = oai(verb="GetRecord", identifier=ids("1")[0], metadataPrefix="oai_dc")
    header = got.find(".//oai:header", NS)
    assert header.get("status") == "deleted"
    assert got.find(".//oai:metadata", NS) is None
    listed = oai(verb="ListRecords", metadataPrefix="oai_dc")
    by_id = {r.findtext("oai:header/oai:identifier", namespaces=NS): r for r in listed.iterfind(".//oai:record", NS)}
    assert by_id[ids("1")[0]].find("oai:metadata", NS) is None
    assert by_id[ids("1")[0]].find("oai:header", NS).get("status") == "deleted"
    assert by_id[ids("2")[0]].find("oai:metadata", NS) is not None
    headers = oai(verb="ListIdentifiers", metadataPrefix="oai_dc").findall(".//oai:header", NS)
    assert [h.get("status") for h in headers] == [None, "deleted"]


# ---- ListSets and set hierarchy -------------------------------------------------------------


def test_list_sets(oai: OAIClient) -> None:
    doc = oai(verb="ListSets")
    assert [s.text for s in doc.iterfind(".//oai:setSpec", NS)] == ["a", "a:b", "c"]
    assert doc.findtext(".//oai:setDescription//dc:description", namespaces=NS) == "Records whose title has an a"


def test_no_set_hierarchy(store_url: str, store: Store) -> None:
    client = create_app(make_config(store_url, sets=[]), store=store).test_client()
    for query in (
        "verb=ListSets",
        "verb=ListRecords&metadataPrefix=oai_dc&set=a",
        "verb=ListIdentifiers&metadataPrefix=oai_dc&set=a",
    ):
        assert error_codes(validate(client.get(f"/oai?{query}").data)) == ["noSetHierarchy"], query


def test_set_includes_its_descendants(oai: OAIClient, store: Store, clock: Clock) -> None:
    store.write(
        [
            make_record("in-a", sets=("a",)),
            make_record("in-ab", sets=("a:b",)),
            make_record("in-c", sets=("c",)),
            make_record("in-none"),
        ]
    )
    clock.tick()
    assert identifiers(oai(verb="ListIdentifiers", metadataPrefix="oai_dc", set="a")) == ids("in-a", "in-ab")
    assert identifiers(oai(verb="ListIdentifiers", metadataPrefix="oai_dc", set="a:b")) == ids("in-ab")
    assert identifiers(oai(verb="ListRecords", metadataPrefix="oai_dc", set="c")) == ids("in-c")
    assert error_codes(oai(verb="ListRecords", metadataPrefix="oai_dc", set="zzz")) == ["noRecordsMatch"]


# ---- selective harvesting by date -----------------------------------------------------------


@pytest.fixture
def dated(store: Store, clock: Clock) -> Store:
    """Records 0..4 written one day apart, starting at T0 (2023-11-14T22:13:20Z)."""
    for i in range(5):
        store.write([make_record(str(i))])
        clock.tick(86400)
    return store


DATE_CASES = [
    ({"from": format_datestamp(T0)}, ["0", "1", "2", "3", "4"], "from is inclusive"),
    ({"from": format_datestamp(T0 + 1)}, ["1", "2", "3", "4"], "one second later"),
    ({"until": format_datestamp(T0 + 86400)}, ["0", "1"], "until is inclusive"),
    ({"until": format_datestamp(T0 + 86399)}, ["0"], "one second earlier"),
    ({"from": "2023-11-15", "until": "2023-11-16"}, ["1", "2"], "a day-granular until covers the whole day"),
    ({"from": "2023-11-14", "until": "2023-11-14"}, ["0"], "from and until on the same day"),
    ({"until": "2023-11-13"}, None, "until before earliestDatestamp: noRecordsMatch"),
    ({"from": "2030-01-01"}, None, "from in the future: noRecordsMatch"),
]


@pytest.mark.parametrize(("args", "expected", "why"), DATE_CASES, ids=[w for *_, w in DATE_CASES])
def test_selective_harvesting_by_date(
    oai: OAIClient, dated: Store, args: dict[str, str], expected: list[str] | None, why: str
) -> None:
    for verb in ("ListIdentifiers", "ListRecords"):
        doc = oai(verb=verb, metadataPrefix="oai_dc", **args)
        if expected is None:
            assert error_codes(doc) == ["noRecordsMatch"], why
        else:
            assert identifiers(doc) == ids(*expected), why


def test_lists_with_unknown_prefix(oai: OAIClient, store: Store, clock: Clock) -> None:
    store.write([make_record("1")])
    clock.tick()
    for verb in ("ListIdentifiers", "ListRecords"):
        assert error_codes(oai(verb=verb, metadataPrefix="marc21")) == ["cannotDisseminateFormat"]


def test_empty_repository_lists_no_records(oai: OAIClient) -> None:
    assert error_codes(oai(verb="ListRecords", metadataPrefix="oai_dc")) == ["noRecordsMatch"]
    assert oai(verb="Identify").findtext(".//oai:earliestDatestamp", namespaces=NS)


def test_other_paths_and_methods(oai: OAIClient) -> None:
    assert oai.http.get("/nothing-here").status_code == 404
    assert oai.http.put("/oai?verb=Identify").status_code == 405
