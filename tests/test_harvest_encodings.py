"""Encodings as they are: a page declared UTF-8 whose bytes are Windows-1252 is read so and
counted (`recoded`), one whose bytes are neither is refused with the reason, and Dublin Core
text UTF-8 encoded twice is undone where that is exact (`undoubled`) or kept and counted
(`doubled`). A stored title never holds `Ã©`. Against the partner fleet, on SQLite and PostgreSQL."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
import requests
from conftest import make_config
from fleet import CYRILLIC_1251, MIXED_TAIL, NOT_TEXT, Fleet, Spec, items, sent_title, with_specs
from harvestkit import FAST_HARVEST, by_partner, harvester_cli, partners_config

from harvester import encodings, harvest
from harvester import errors as err
from harvester.client import Client, ClientSettings
from harvester.transport import Answer
from oaiserver.store import Store

FAST = ["--timeout", "5", "--retries", "0", "--backoff", "0.01"]


def last_counts(config: Path, partner: str) -> dict[str, int]:
    """The counts of the partner's last run, as `history --json` gives them."""
    history = json.loads(harvester_cli(config, "history", partner, "--json").stdout)
    counts: dict[str, int] = history["runs"][0]["counts"]
    return counts


def titles(store_url: str, source: str) -> dict[str, str]:
    """identifier -> stored title, of the partner's live records."""
    store = Store(store_url)
    try:
        held = {i: store.get(i) for i in store.identifiers(source, live_only=True)}
    finally:
        store.close()
    return {i: r.dc_values("title")[0] for i, r in held.items() if r is not None}


def served(store_url: str, source: str) -> dict[str, tuple[int | None, str]]:
    """identifier -> (datestamp, oai_dc as served), of the partner's records."""
    store = Store(store_url)
    try:
        held = {i: store.get(i) for i in store.identifiers(source)}
    finally:
        store.close()
    return {i: (r.datestamp, r.metadata["oai_dc"]) for i, r in held.items() if r is not None}


# ---- Windows-1252 under a UTF-8 declaration -----------------------------------------------------------


@with_specs(
    Spec("latin", records=12, page_size=5, cp1252=True),
    Spec("lenient", records=4, page_size=5, cp1252=True),
)
def test_windows_1252_pages_are_read_as_windows_1252_and_counted(fleet: Fleet, tmp_path: Path, store_url: str) -> None:
    config = partners_config(tmp_path, store_url, fleet, {"lenient": {"quirks": {"lenient_xml": True}}})
    result = harvester_cli(config, "run", *FAST)
    assert result.exit_code == 0, result.output
    for name, pages in (("latin", 3), ("lenient", 1)):
        stored = titles(store_url, name)
        assert stored == fleet.expected(name).live and any(not t.isascii() for t in stored.values())
        assert not [i for i, (_, xml) in served(store_url, name).items() if "Ã" in xml or "\ufffd" in xml]
        counts = last_counts(config, name)
        assert (counts["recoded"], counts["undoubled"], counts["doubled"], counts["failed"]) == (pages, 0, 0, 0)
        assert counts["repaired"] == 0, "read as the bytes show, not repaired by the lenient parser"
    assert "12 added; 3 page(s) recoded;" in by_partner(result)["latin"]
    assert "4 added; 1 page(s) recoded;" in by_partner(result)["lenient"]
    status = json.loads(harvester_cli(config, "status", "--json").stdout)
    assert {p["name"]: p["last_run"]["counts"]["recoded"] for p in status["partners"]} == {"latin": 3, "lenient": 1}
    assert "3 page(s) recoded" in harvester_cli(config, "history", "latin").stdout

    before = served(store_url, "latin")
    again = harvester_cli(config, "run", "--full", *FAST)
    assert again.exit_code == 0, again.output
    assert "12 record(s): 12 unchanged; 3 page(s) recoded;" in by_partner(again)["latin"]
    assert served(store_url, "latin") == before, "a second run changes nothing, datestamps included"


@with_specs(Spec("latin", records=12, page_size=5, cp1252=True))
def test_each_recoded_page_is_a_warning_naming_it(
    fleet: Fleet, store_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    report = run_once(fleet, "latin", store_url, caplog)
    assert report.outcome == harvest.SUCCESS and report.counts.recoded == 3
    warned = [r.getMessage() for r in caplog.records if "is declared UTF-8 but" in r.getMessage()]
    assert len(warned) == 3
    assert warned[0].startswith(
        "latin: page 1 of the run (verb=ListRecords metadataPrefix=oai_dc) is declared UTF-8 but"
    )
    assert all(m.endswith("; read as Windows-1252") or m.endswith("; read as ISO-8859-1") for m in warned)


def run_once(fleet: Fleet, name: str, store_url: str, caplog: pytest.LogCaptureFixture) -> harvest.RunReport:
    partner = make_config(store_url, partners=[{"name": name, "base_url": fleet.url(name)}]).partners[0]
    store = Store(store_url)
    try:
        with caplog.at_level(logging.INFO):
            return harvest.run(store, partner, settings=FAST_HARVEST)
    finally:
        store.close()


# ---- bytes that are neither UTF-8 nor Windows-1252 text ----------------------------------------------


@with_specs(Spec("neither", records=12, page_size=5, not_text=frozenset({7})))
def test_a_page_whose_bytes_are_neither_is_refused_with_the_reason(
    fleet: Fleet, tmp_path: Path, store_url: str
) -> None:
    assert fleet.expected("neither").quarantined == {items(fleet.specs["neither"])[7].identifier: NOT_TEXT}
    second_page = requests.get(
        fleet.url("neither"), params={"verb": "ListRecords", "resumptionToken": "1~~"}, timeout=10
    )
    at = second_page.content.index(CYRILLIC_1251.encode("ascii", "surrogateescape"))
    config = partners_config(tmp_path, store_url, fleet)
    result = harvester_cli(config, "run", *FAST)
    assert result.exit_code == 1, result.output
    line = by_partner(result)["neither"]
    assert line.startswith("neither: failed: 1 page(s), 5 record(s): 5 added;")
    assert (
        f"(ListRecords, HTTP 200): the page is declared UTF-8 in its XML declaration, but bytes {at:,} to {at + 5:,} "
        "(0xcf 0xf0 0xe8 0xe2 0xe5 0xf2) are not UTF-8, and read as Windows-1252 ('Ïðèâåò') they are 6 non-ASCII "
        "characters in a row, which Western text is not: another encoding (Windows-1251, ISO-8859-5, Shift_JIS?); "
        "refused"
    ) in line
    assert len(titles(store_url, "neither")) == 5, "the page before it is kept"
    history = json.loads(harvester_cli(config, "history", "neither", "--json").stdout)
    assert history["runs"][0]["outcome"] == "failed" and "bytes " in history["runs"][0]["reason"]

    before = served(store_url, "neither")
    again = harvester_cli(config, "run", *FAST)
    assert again.exit_code == 1 and "0xcf 0xf0" in by_partner(again)["neither"]
    assert served(store_url, "neither") == before, "a second run changes nothing"


# ---- UTF-8 encoded twice --------------------------------------------------------------------------------


@with_specs(
    # Lists of several pages are converted in the worker process, a list of one page here: both ways.
    Spec("twice", records=12, page_size=5, doubled=frozenset(range(12)) - {4, 9}, doubled_mixed=frozenset({4})),
    Spec("once", records=4, page_size=5, doubled=frozenset({0, 1, 2})),
)
def test_titles_encoded_twice_are_undone_or_kept_and_counted(fleet: Fleet, tmp_path: Path, store_url: str) -> None:
    spec = fleet.specs["twice"]
    sent = {i.identifier: sent_title(spec, i) for i in items(spec)}
    assert sum("Ã" in t or "Å" in t for t in sent.values()) >= 10, "the partner does send text encoded twice"
    config = partners_config(tmp_path, store_url, fleet)
    result = harvester_cli(config, "run", *FAST)
    assert result.exit_code == 0, result.output
    for name in ("twice", "once"):
        assert titles(store_url, name) == fleet.expected(name).live
    stored = titles(store_url, "twice")
    kept = stored.pop(items(spec)[4].identifier)
    assert kept == sent[items(spec)[4].identifier] and kept.endswith(MIXED_TAIL), "kept as sent: it cannot be undone"
    assert not [t for t in stored.values() if "Ã" in t or "Å" in t]
    assert "12 added; 10 record(s) undoubled, 1 record(s) doubled;" in by_partner(result)["twice"]
    assert "4 added; 3 record(s) undoubled;" in by_partner(result)["once"]
    counts = last_counts(config, "twice")
    assert (counts["undoubled"], counts["doubled"], counts["recoded"], counts["failed"]) == (10, 1, 0, 0)

    before = served(store_url, "twice")
    again = harvester_cli(config, "run", "--full", *FAST)
    assert "12 unchanged; 10 record(s) undoubled, 1 record(s) doubled;" in by_partner(again)["twice"], again.output
    assert served(store_url, "twice") == before, "a second run changes nothing, datestamps included"


@with_specs(Spec("twice", records=6, page_size=5, doubled=frozenset({0, 1}), doubled_mixed=frozenset({3})))
def test_text_kept_doubled_is_a_warning_naming_the_record(
    fleet: Fleet, store_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    report = run_once(fleet, "twice", store_url, caplog)
    assert (report.outcome, report.counts.undoubled, report.counts.doubled) == (harvest.SUCCESS, 2, 1)
    messages = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    identifiers = [i.identifier for i in items(fleet.specs["twice"])]
    assert f"twice: UTF-8 encoded twice, undone in 2 record(s): {identifiers[0]}, {identifiers[1]}" in messages
    kept = [m for m in messages if "keeps text that looks UTF-8 encoded twice" in m]
    assert len(kept) == 1 and kept[0].startswith(f"twice: record {identifiers[3]} keeps text")
    assert kept[0].endswith("which cannot be undone exactly")


# ---- the client: what it reads, and what it costs -------------------------------------------------------


def page_of(title: bytes) -> bytes:
    return (
        b'<?xml version="1.0" encoding="UTF-8"?>\n'
        b'<OAI-PMH xmlns="http://www.openarchives.org/OAI/2.0/"><responseDate>2024-05-01T12:00:00Z</responseDate>'
        b"<request>http://p/oai</request><ListRecords><record><header><identifier>oai:p:1</identifier>"
        b"<datestamp>2024-01-01</datestamp></header><metadata>"
        b'<oai_dc:dc xmlns:oai_dc="http://www.openarchives.org/OAI/2.0/oai_dc/" '
        b'xmlns:dc="http://purl.org/dc/elements/1.1/"><dc:title>' + title + b"</dc:title></oai_dc:dc>"
        b"</metadata></record></ListRecords></OAI-PMH>"
    )


def client_for(body: bytes, *, lenient: bool) -> Client:
    return Client("http://p/oai", ClientSettings(lenient_xml=lenient), send=lambda params: Answer(200, body, {}))


@pytest.mark.parametrize("lenient", [False, True])
def test_a_page_valid_in_its_encoding_is_parsed_once_and_never_recoded(
    lenient: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The hot path: nothing reads a valid page's bytes but the parser."""
    looked: list[bytes] = []
    monkeypatch.setattr(encodings, "recode", lambda body: looked.append(body))
    with client_for(page_of("Zürich – ’".encode()), lenient=lenient) as client:
        page = client.request("ListRecords", metadataPrefix="oai_dc")
    assert page.recoded is None and not looked


@pytest.mark.parametrize("lenient", [False, True])
def test_the_client_reads_windows_1252_as_such_and_says_so(lenient: bool) -> None:
    with client_for(page_of("Zürich – œuvre".encode("cp1252")), lenient=lenient) as client:
        page = client.request("ListRecords", metadataPrefix="oai_dc")
    assert page.recoded is not None and (page.recoded.encoding, page.recoded.characters) == ("Windows-1252", 3)
    assert page.body == page_of("Zürich – œuvre".encode()) and not page.repairs
    assert page.items[0].findtext(".//{http://purl.org/dc/elements/1.1/}title") == "Zürich – œuvre"


@pytest.mark.parametrize("lenient", [False, True])
def test_the_client_refuses_bytes_that_are_not_text(lenient: bool) -> None:
    body = page_of(b"broken \x81 byte")
    with client_for(body, lenient=lenient) as client, pytest.raises(err.EncodingError) as refused:
        client.request("ListRecords", metadataPrefix="oai_dc")
    at = body.index(b"\x81")
    assert str(refused.value) == (
        "http://p/oai (ListRecords, HTTP 200): the page is declared UTF-8 in its XML declaration, but byte "
        f"{at:,} (0x81) is not UTF-8, and not a character of Windows-1252 or text in ISO-8859-1 "
        "either; refused"
    )
    assert isinstance(refused.value, err.ResponseError)
