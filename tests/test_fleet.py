"""The partner fleet (tests/fleet.py) does what its specs say: each fault is seen by a plain client,
the concurrency gauges count requests really in progress, and the expected sets are what a clean
list gives."""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import requests
from conftest import NS, error_codes, identifiers, token_of, validate
from fleet import (
    LONG,
    MIXED_TAIL,
    NO_DATESTAMP,
    NOT_TEXT,
    UNPARSABLE,
    Fleet,
    Spec,
    crowd,
    expected,
    items,
    twice,
    with_specs,
)
from lxml import etree
from sickle import Sickle


def get(fleet: Fleet, name: str, **args: str) -> requests.Response:
    return requests.get(fleet.url(name), params=args, timeout=10)


def listing(fleet: Fleet, name: str, verb: str = "ListRecords", **args: str) -> Iterator[etree._Element]:
    """The pages of one list, each schema-valid, following tokens (at most 50 pages)."""
    response = get(fleet, name, verb=verb, metadataPrefix="oai_dc", **args)
    for _ in range(50):
        doc = validate(response.content)
        yield doc
        token = token_of(doc)
        if token is None or not token.text:
            return
        response = get(fleet, name, verb=verb, resumptionToken=token.text)
    raise AssertionError("more than 50 pages")


def ids(fleet: Fleet, name: str, verb: str = "ListRecords", **args: str) -> list[str]:
    """The identifiers of one whole list, in order."""
    return [identifier for doc in listing(fleet, name, verb, **args) for identifier in identifiers(doc)]


# ---- a fault-free partner ------------------------------------------------------------------------


@with_specs(Spec("clean", records=23, page_size=5, deleted=frozenset({4, 9})))
def test_a_clean_partners_full_list_is_exactly_its_expected_set(fleet: Fleet) -> None:
    harvested = {r.header.identifier: r for r in Sickle(fleet.url("clean")).ListRecords(metadataPrefix="oai_dc")}
    want = fleet.expected("clean")
    assert {i for i, r in harvested.items() if not r.deleted} == set(want.live)
    assert {i for i, r in harvested.items() if r.deleted} == want.deleted and len(want.deleted) == 2
    assert {i: r.metadata["title"][0] for i, r in harvested.items() if not r.deleted} == want.live
    assert not want.quarantined and not want.vanished
    pages = [entry for entry in fleet.requests("clean") if entry.args["verb"] == "ListRecords"]
    assert [entry.status for entry in pages] == [200] * 5  # 23 records, 5 a page


@with_specs(Spec("clean", records=23, page_size=5))
def test_every_answer_of_a_clean_partner_is_schema_valid(fleet: Fleet) -> None:
    first = items(fleet.specs["clean"])[0].identifier
    for args in (
        {"verb": "Identify"},
        {"verb": "ListMetadataFormats"},
        {"verb": "ListMetadataFormats", "identifier": first},
        {"verb": "ListSets"},
        {"verb": "GetRecord", "identifier": first, "metadataPrefix": "oai_dc"},
        {"verb": "GetRecord", "identifier": "oai:nowhere:1", "metadataPrefix": "oai_dc"},
        {"verb": "ListIdentifiers", "metadataPrefix": "oai_dc", "from": "2024-01-02", "until": "2024-01-03"},
        {"verb": "ListRecords", "metadataPrefix": "oai_dc", "from": "2030-01-01T00:00:00Z"},
        {"verb": "ListRecords", "metadataPrefix": "marc21"},
        {"verb": "ListRecords", "resumptionToken": "nonsense"},
        {"verb": "Bogus"},
    ):
        response = get(fleet, "clean", **args)
        assert response.status_code == 200, args
        validate(response.content)
    assert ids(fleet, "clean", "ListIdentifiers", **{"from": "2024-01-02"}) == [
        i.identifier for i in items(fleet.specs["clean"]) if i.datestamp >= 1_704_153_600
    ]


def test_the_record_sets_are_deterministic() -> None:
    spec = Spec("same", records=40, seed=7)
    assert items(spec) == items(Spec("same", records=40, seed=7))
    assert items(spec) != items(Spec("same", records=40, seed=8))  # titles change with the seed
    assert [i.datestamp for i in items(spec)][:4] == [1_704_067_200, 1_704_067_200, 1_704_085_200, 1_704_085_200]


# ---- faults in records ------------------------------------------------------------------------------


@with_specs(Spec("poison", records=12, page_size=5, unparsable=frozenset({7})))
def test_an_unparsable_record_spoils_its_page_and_its_getrecord_only(fleet: Fleet) -> None:
    pages = [get(fleet, "poison", verb="ListRecords", metadataPrefix="oai_dc")]
    pages += [get(fleet, "poison", verb="ListRecords", resumptionToken=f"{n}~~") for n in (1, 2)]
    validate(pages[0].content), validate(pages[2].content)
    with pytest.raises(etree.XMLSyntaxError):
        etree.fromstring(pages[1].content)
    heads = ids(fleet, "poison", "ListIdentifiers")
    assert len(heads) == 12
    broken = items(fleet.specs["poison"])[7].identifier
    with pytest.raises(etree.XMLSyntaxError):
        etree.fromstring(get(fleet, "poison", verb="GetRecord", identifier=broken, metadataPrefix="oai_dc").content)
    assert fleet.expected("poison").quarantined == {broken: UNPARSABLE} and len(fleet.expected("poison").live) == 11


@with_specs(Spec("listonly", records=12, page_size=5, broken_in_list=frozenset({7})))
def test_a_record_broken_in_listrecords_only_reads_by_getrecord(fleet: Fleet) -> None:
    with pytest.raises(etree.XMLSyntaxError):
        etree.fromstring(get(fleet, "listonly", verb="ListRecords", resumptionToken="1~~").content)
    item = items(fleet.specs["listonly"])[7]
    doc = validate(
        get(fleet, "listonly", verb="GetRecord", identifier=item.identifier, metadataPrefix="oai_dc").content
    )
    assert doc.findtext(".//dc:title", namespaces=NS) == item.title
    assert not fleet.expected("listonly").quarantined and len(fleet.expected("listonly").live) == 12


@with_specs(Spec("garbled", records=15, page_size=5, garbled_page=1))
def test_a_garbled_page_is_not_xml_yet_complete_and_its_records_read_one_by_one(fleet: Fleet) -> None:
    first = validate(get(fleet, "garbled", verb="ListRecords", metadataPrefix="oai_dc").content)
    second = get(fleet, "garbled", verb="ListRecords", resumptionToken=token_of(first).text or "")  # type: ignore[union-attr]
    assert second.status_code == 200 and second.content.rstrip().endswith(b"</OAI-PMH>")
    with pytest.raises(etree.XMLSyntaxError):
        etree.fromstring(second.content)
    for item in items(fleet.specs["garbled"])[5:10]:
        validate(get(fleet, "garbled", verb="GetRecord", identifier=item.identifier, metadataPrefix="oai_dc").content)


@with_specs(Spec("mended", records=12, page_size=5, unparsable=frozenset({7}), list_records_fails="500"))
def test_repair_takes_the_faults_away_and_keeps_the_records(fleet: Fleet) -> None:
    before = items(fleet.specs["mended"])
    assert get(fleet, "mended", verb="ListRecords", metadataPrefix="oai_dc").status_code == 500
    fleet.repair("mended")
    assert len(ids(fleet, "mended")) == 12 and items(fleet.specs["mended"]) == before
    assert not fleet.expected("mended").quarantined and len(fleet.expected("mended").live) == 12


@with_specs(Spec("unstorable", records=6, long_identifier=frozenset({1}), no_datestamp=frozenset({4})))
def test_records_that_cannot_be_stored(fleet: Fleet) -> None:
    doc = etree.fromstring(get(fleet, "unstorable", verb="ListRecords", metadataPrefix="oai_dc").content)
    headers = doc.findall(".//oai:header", NS)
    long = headers[1].findtext("oai:identifier", namespaces=NS)
    assert long is not None and len(long.encode()) > 1024
    assert headers[4].find("oai:datestamp", NS) is None and headers[3].find("oai:datestamp", NS) is not None
    quarantined = fleet.expected("unstorable").quarantined
    assert quarantined == {long: LONG, items(fleet.specs["unstorable"])[4].identifier: NO_DATESTAMP}


@with_specs(Spec("html", records=15, page_size=5, html_page=1))
def test_a_page_that_is_not_xml_at_its_position(fleet: Fleet) -> None:
    first = validate(get(fleet, "html", verb="ListRecords", metadataPrefix="oai_dc").content)
    second = get(fleet, "html", verb="ListRecords", resumptionToken=token_of(first).text or "")  # type: ignore[union-attr]
    assert second.status_code == 500 and second.headers["Content-Type"].startswith("text/html")
    assert len(ids(fleet, "html", "ListIdentifiers")) == 15
    assert len(fleet.expected("html").live) == 15


@with_specs(Spec("noids", records=15, page_size=5, identifiers_page_fails=2))
def test_a_page_of_identifiers_that_is_not_xml_at_its_position(fleet: Fleet) -> None:
    docs = list(itertools.islice(listing(fleet, "noids", "ListIdentifiers"), 2))
    last = get(fleet, "noids", verb="ListIdentifiers", resumptionToken=token_of(docs[-1]).text or "")  # type: ignore[union-attr]
    assert last.status_code == 500 and last.headers["Content-Type"].startswith("text/html")
    assert len(ids(fleet, "noids")) == 15, "ListRecords is whole"


# ---- faults in the list -------------------------------------------------------------------------------


def tokens_and_ids(fleet: Fleet, name: str, pages: int) -> list[tuple[list[str], str | None]]:
    """The first `pages` pages of ListIdentifiers (following tokens blindly): ids and the token each carries."""
    seen: list[tuple[list[str], str | None]] = []
    response = get(fleet, name, verb="ListIdentifiers", metadataPrefix="oai_dc")
    for _ in range(pages):
        doc = validate(response.content)
        token = token_of(doc)
        seen.append((identifiers(doc), None if token is None else token.text))
        if token is None or not token.text:
            break
        response = get(fleet, name, verb="ListIdentifiers", resumptionToken=token.text)
    return seen


@with_specs(Spec("repeat", records=12, page_size=5, repeat_last_token=True))
def test_a_repeated_token_really_repeats(fleet: Fleet) -> None:
    seen = tokens_and_ids(fleet, "repeat", 5)
    assert len(seen) == 5  # never ends
    assert seen[2] == seen[3] == seen[4] and seen[1][1] == seen[2][1]  # the last token served again
    assert len(seen[2][0]) == 2


@with_specs(Spec("round", records=12, page_size=5, loop_to=0))
def test_a_list_going_round(fleet: Fleet) -> None:
    seen = tokens_and_ids(fleet, "round", 4)
    assert len(seen) == 4 and seen[3][0] == seen[0][0] and seen[3][0] != seen[2][0]


@with_specs(Spec("expiring", records=30, page_size=5, expire_after=2))
def test_a_token_expiring_mid_list(fleet: Fleet) -> None:
    seen = tokens_and_ids(fleet, "expiring", 3)
    assert len(seen) == 3 and seen[1][1] == "2~~" and seen[2] == ([], None)
    doc = validate(get(fleet, "expiring", verb="ListIdentifiers", resumptionToken="2~~").content)
    assert error_codes(doc) == ["badResumptionToken"]
    later = tokens_and_ids_from(fleet, "expiring", "2024-01-03T00:00:00Z")  # a fresh list from a later date works
    assert later and later[0] == items(fleet.specs["expiring"])[20].identifier


def tokens_and_ids_from(fleet: Fleet, name: str, start: str) -> list[str]:
    doc = validate(get(fleet, name, verb="ListIdentifiers", metadataPrefix="oai_dc", **{"from": start}).content)
    return identifiers(doc)


@with_specs(Spec("days", records=12, refuse_times=True))
def test_a_partner_refusing_times_though_identify_says_seconds(fleet: Fleet) -> None:
    identify = validate(get(fleet, "days", verb="Identify").content)
    assert identify.findtext(".//oai:granularity", namespaces=NS) == "YYYY-MM-DDThh:mm:ssZ"
    timed = get(fleet, "days", verb="ListRecords", metadataPrefix="oai_dc", **{"from": "2024-01-02T00:00:00Z"})
    assert error_codes(validate(timed.content)) == ["badArgument"]
    daily = validate(get(fleet, "days", verb="ListRecords", metadataPrefix="oai_dc", **{"from": "2024-01-02"}).content)
    assert error_codes(daily) == [] and identifiers(daily)


@pytest.mark.parametrize(("how", "status"), [("500", 500), ("html", 200)])
def test_list_records_failing_while_identifiers_and_getrecord_work(how: Any, status: int) -> None:
    with Fleet([Spec("nolist", records=8, list_records_fails=how)]) as fleet:
        response = get(fleet, "nolist", verb="ListRecords", metadataPrefix="oai_dc")
        assert response.status_code == status and response.headers["Content-Type"].startswith("text/html")
        titles = {}
        for identifier in ids(fleet, "nolist", "ListIdentifiers"):
            got = get(fleet, "nolist", verb="GetRecord", identifier=identifier, metadataPrefix="oai_dc")
            titles[identifier] = validate(got.content).findtext(".//dc:title", namespaces=NS)
        assert titles == fleet.expected("nolist").live


@with_specs(Spec("silent", records=10, vanish=frozenset({2, 8})))
def test_records_vanishing_between_runs_without_a_tombstone(fleet: Fleet) -> None:
    identify = validate(get(fleet, "silent", verb="Identify").content)
    assert identify.findtext(".//oai:deletedRecord", namespaces=NS) == "no"
    before = set(ids(fleet, "silent"))
    assert not fleet.expected("silent").vanished
    fleet.next_run()
    after = ids(fleet, "silent")
    gone = fleet.expected("silent").vanished
    assert len(gone) == 2 and before - set(after) == gone and len(after) == 8
    assert not [doc for doc in listing(fleet, "silent") if doc.find(".//oai:header[@status]", NS) is not None]


@with_specs(Spec("short", records=12, page_size=5, announce=500))
def test_fewer_records_than_announced(fleet: Fleet) -> None:
    docs = list(listing(fleet, "short"))
    assert {token_of(doc).get("completeListSize") for doc in docs} == {"500"}  # type: ignore[union-attr]
    assert len([i for doc in docs for i in identifiers(doc)]) == 12


@with_specs(Spec("latin", records=6, page_size=10, cp1252=True))
def test_pages_declared_utf8_whose_bytes_are_windows_1252(fleet: Fleet) -> None:
    response = get(fleet, "latin", verb="ListRecords", metadataPrefix="oai_dc")
    assert response.headers["Content-Type"] == "text/xml; charset=utf-8"
    assert response.content.startswith(b'<?xml version="1.0" encoding="UTF-8"?>')
    with pytest.raises(UnicodeDecodeError):
        response.content.decode("utf-8")
    doc = validate(response.content.decode("cp1252").encode("utf-8"))
    titles = dict(zip(identifiers(doc), [t.text for t in doc.iterfind(".//dc:title", NS)], strict=True))
    assert titles == fleet.expected("latin").live and any(not t.isascii() for t in titles.values())


@with_specs(Spec("twice", records=6, page_size=10, doubled=frozenset({0, 1}), doubled_mixed=frozenset({2})))
def test_titles_sent_utf8_encoded_twice(fleet: Fleet) -> None:
    doc = validate(get(fleet, "twice", verb="ListRecords", metadataPrefix="oai_dc").content)
    sent = [t.text or "" for t in doc.iterfind(".//dc:title", NS)]
    real = [i.title for i in items(fleet.specs["twice"])]
    assert sent[:2] == [twice(t) for t in real[:2]] and all("Ã" in t or "Å" in t for t in sent[:2])
    assert sent[2] == twice(real[2]) + MIXED_TAIL and sent[3:] == real[3:]
    want = fleet.expected("twice").live  # undone where exact; the mixed one as sent
    assert list(want.values()) == [*real[:2], sent[2], *real[3:]]


@with_specs(Spec("neither", records=6, page_size=10, not_text=frozenset({1})))
def test_a_title_in_windows_1251_under_a_utf8_label(fleet: Fleet) -> None:
    body = get(fleet, "neither", verb="ListRecords", metadataPrefix="oai_dc").content
    assert body.startswith(b'<?xml version="1.0" encoding="UTF-8"?>')
    assert "Привет".encode("cp1251") in body
    with pytest.raises(UnicodeDecodeError):
        body.decode("utf-8")
    assert fleet.expected("neither").quarantined == {items(fleet.specs["neither"])[1].identifier: NOT_TEXT}


# ---- time, flow control and concurrency ----------------------------------------------------------------


@with_specs(Spec("slow", records=10, page_size=5, delay=0.3))
def test_a_slow_partners_pages_take_their_delay(fleet: Fleet) -> None:
    started = time.monotonic()
    assert len(list(listing(fleet, "slow"))) == 2
    assert 0.6 <= time.monotonic() - started < 2


@with_specs(Spec("busy", records=3, busy=frozenset({0, 1}), retry_after=2))
def test_retry_after_503s(fleet: Fleet) -> None:
    answers = [get(fleet, "busy", verb="Identify") for _ in range(3)]
    assert [r.status_code for r in answers] == [503, 503, 200]
    assert answers[0].headers["Retry-After"] == "2"
    assert [entry.status for entry in fleet.requests("busy")] == [503, 503, 200]


@with_specs(*crowd(3, hosts=[2, 1]))
def test_a_host_refusing_every_partner_on_it(fleet: Fleet) -> None:
    fleet.refuse(0, 2, retry_after=3)
    answers = [get(fleet, name, verb="Identify") for name in ("p000", "p002", "p001", "p000")]
    assert [r.status_code for r in answers] == [503, 200, 503, 200]  # p002 is on host 1
    assert answers[0].headers["Retry-After"] == answers[2].headers["Retry-After"] == "3"


@with_specs(*crowd(6, hosts=[4, 2], delay=0.3, records=2))
def test_the_per_host_gauges_count_requests_in_progress_at_once(fleet: Fleet) -> None:
    names = sorted(fleet.specs)
    threads = [threading.Thread(target=get, args=(fleet, name), kwargs={"verb": "Identify"}) for name in names[:4]]
    threads += [threading.Thread(target=get, args=(fleet, names[0]), kwargs={"verb": "Identify"})]
    threads += [threading.Thread(target=get, args=(fleet, names[4]), kwargs={"verb": "Identify"})]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert fleet.peak(host=0) == 5 and fleet.peak(host=1) == 1
    assert fleet.peak(partner=names[0]) == 2 and fleet.peak(partner=names[5]) == 0
    assert fleet.in_progress(host=0) == 0
    get(fleet, names[1], verb="Identify")  # one at a time afterwards
    fleet.reset_peaks()
    get(fleet, names[1], verb="Identify")
    assert fleet.peak(host=0) == 1


def test_a_crowd_of_sixty_on_five_hosts() -> None:
    specs = crowd(60, hosts=[40, 5, 5, 5, 5], delay=0.5, records=20, page_size=5)
    with Fleet(specs) as fleet:
        origins = {fleet.url(s.name).rsplit("/p/", 1)[0] for s in specs}
        assert len(origins) == 5 and sum(1 for s in specs if s.host == 0) == 40
        assert get(fleet, "p059", verb="Identify").status_code == 200
        other = fleet.origin(0) + "/p/p059/oai"  # a partner is served on its own host only
        assert requests.get(other, params={"verb": "Identify"}, timeout=10).status_code == 404
    with pytest.raises(ValueError, match=r"hold 59 partners, not 60"):
        crowd(60, hosts=[40, 19])


def test_mixed_faults_and_their_expected_set() -> None:
    spec = Spec("mixed", records=20, deleted=frozenset({3}), unparsable=frozenset({5}), vanish=frozenset({9}))
    want = expected(spec, run=1)
    assert set(want.quarantined) == {items(spec)[5].identifier} and want.vanished == {items(spec)[9].identifier}
    assert len(want.live) == 18 and len(want.deleted) == 1


@with_specs(Spec("private", records=3, basic_auth=("harvest", "s3cret")))
def test_a_partner_behind_basic_auth_and_the_headers_it_was_sent(fleet: Fleet) -> None:
    assert get(fleet, "private", verb="Identify").status_code == 401
    sent = requests.get(
        fleet.url("private"),
        params={"verb": "Identify"},
        auth=("harvest", "s3cret"),
        headers={"User-Agent": "Tester/1", "X-Api-Key": "k1"},
        timeout=10,
    )
    validate(sent.content)
    first, second = fleet.requests("private")
    assert (first.status, second.status) == (401, 200)
    assert second.headers["User-Agent"] == "Tester/1" and second.headers["X-Api-Key"] == "k1"
    assert second.headers["Authorization"].startswith("Basic ")
