"""A partner harvested in several formats (`formats: [oai_dc, marcxml]`): each format on its own,
with its own `from`, checkpoint and history line; the further formats kept byte for byte and
served again in their own format (the partner's metadata element under our header); a format
the partner does not offer fails alone. On both backends."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

from conftest import WITH_MARC, Clock, error_codes, identifiers, make_config, make_record, the_token, token_of
from conftest import validate as validate_oai
from harvestkit import (
    FAST_HARVEST,
    OAI_NS,
    FakePartner,
    error,
    harvester_cli,
    identify,
    list_records,
    oai,
    partners_config,
    record,
    xml,
)
from lxml import etree
from werkzeug.wrappers import Response

from harvester import harvest, sweep
from oaiserver import create_app
from oaiserver.config import DeletionSweep, Partner
from oaiserver.records import Record, format_datestamp
from oaiserver.store import (
    Store,
    harvest_history,
    harvest_state_of,
    native_records,
    write_harvested_in,
    write_native_in,
)
from oaiserver.store.harvester_state import declare_format_in

MARC_NS = "http://www.loc.gov/MARC21/slim"
MARC_SCHEMA = "http://www.loc.gov/standards/marcxml/schema/MARC21slim.xsd"


def marc_record(identifier: str, title: str, *, datestamp: str = "2024-04-01T10:00:00Z") -> str:
    """A MARC21 slim record as partners send it: the `marc:` prefix, and its own <marc:record>
    nested in the OAI <record>."""
    return (
        f"<record><header><identifier>{identifier}</identifier><datestamp>{datestamp}</datestamp></header>"
        f'<metadata><marc:record xmlns:marc="{MARC_NS}" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"'
        f' xsi:schemaLocation="{MARC_NS} {MARC_SCHEMA}">'
        "<marc:leader>00000nam a2200000 a 4500</marc:leader>"
        f'<marc:controlfield tag="001">{identifier[-1]}</marc:controlfield>'
        f'<marc:datafield tag="245" ind1="1" ind2="0"><marc:subfield code="a">{title}</marc:subfield></marc:datafield>'
        "</marc:record></metadata></record>"
    )


class TwoFormats:
    """A partner offering oai_dc and marcxml, one page each, and nothing else."""

    def __init__(self, titles: dict[str, str], *, also_listed: tuple[str, ...] = ()) -> None:
        self.titles = titles
        self.also_listed = also_listed  # formats its ListMetadataFormats lists but its lists do not have
        self.response_date = "2024-05-01T12:00:00Z"

    def pages(self) -> dict[str, list[str]]:
        return {
            "oai_dc": [record(i, t) for i, t in self.titles.items()],
            "marcxml": [marc_record(i, t) for i, t in self.titles.items()],
        }

    def __call__(self, params: dict[str, str], n: int) -> Response:
        verb = params.get("verb")
        if verb == "Identify":
            return xml(identify())
        if verb == "ListMetadataFormats":
            formats = "".join(
                f"<metadataFormat><metadataPrefix>{p}</metadataPrefix><schema>{s}</schema>"
                f"<metadataNamespace>{ns}</metadataNamespace></metadataFormat>"
                for p, s, ns in (
                    (
                        "oai_dc",
                        "http://www.openarchives.org/OAI/2.0/oai_dc.xsd",
                        "http://www.openarchives.org/OAI/2.0/oai_dc/",
                    ),
                    ("marcxml", MARC_SCHEMA, MARC_NS),
                    *((p, f"https://example.org/{p}.xsd", f"urn:{p}") for p in self.also_listed),
                )
            )
            return xml(oai(f"<ListMetadataFormats>{formats}</ListMetadataFormats>"))
        if verb == "ListIdentifiers":  # what a deletion sweep lists
            headers = "".join(
                f"<header><identifier>{i}</identifier><datestamp>2024-04-01T10:00:00Z</datestamp></header>"
                for i in self.titles
            )
            return xml(oai(f"<ListIdentifiers>{headers}</ListIdentifiers>"))
        if verb != "ListRecords":
            return xml(error("badVerb"))
        page = self.pages().get(params.get("metadataPrefix", ""))
        if page is None:
            return xml(error("cannotDisseminateFormat", f"{params.get('metadataPrefix')} is not offered here"))
        return xml(list_records(page, response_date=self.response_date))


def run(store: Store, partner: Partner, **kwargs: Any) -> harvest.RunReport:
    return harvest.run(store, partner, settings=FAST_HARVEST, **kwargs)


def served(store: Store, identifier: str) -> tuple[Any, ...]:
    """What a record exposes: its datestamp, metadata and <about> (its provenance's harvest
    date, not served, is refreshed by each run)."""
    got = store.get(identifier)
    assert got is not None
    return got.datestamp, got.metadata, got.about


TITLES = {"oai:p:1": "Kalevala", "oai:p:2": "Kanteletar"}


def test_each_format_is_harvested_with_its_own_from_and_history_line(store: Store) -> None:
    with FakePartner(TwoFormats(TITLES)) as fake:
        partner = Partner("p", fake.url, formats=("oai_dc", "marcxml"))
        report = run(store, partner)
    assert [(r.format, r.outcome, r.counts.received, r.counts.added) for r in report.all()] == [
        ("oai_dc", "success", 2, 2),
        ("marcxml", "success", 2, 2),
    ]
    assert [r["metadataPrefix"] for r in fake.requests if r.get("verb") == "ListRecords"] == ["oai_dc", "marcxml"]
    assert harvest.describe(report).splitlines() == [
        "p [oai_dc]: success: 1 page(s), 2 record(s): 2 added; complete (2 announced, 2 stored);"
        " next from 2024-05-01T12:00:00Z",
        "p [marcxml]: success: 1 page(s), 2 record(s): 2 added; complete (2 announced, 2 stored);"
        " next from 2024-05-01T12:00:00Z",
    ]
    assert [(r.format, r.outcome) for r in harvest_history(store, "p")] == [
        ("marcxml", "success"),
        ("oai_dc", "success"),
    ]
    for fmt in ("oai_dc", "marcxml"):
        state = harvest_state_of(store, "p", fmt)
        assert (state.format, state.next_from, state.checkpoint) == (fmt, "2024-05-01T12:00:00Z", None)
    kalevala = store.get("oai:p:1")
    assert kalevala is not None and kalevala.source == "p" and [v.value for v in kalevala.dc] == ["Kalevala"]


def test_a_further_format_without_a_crosswalk_is_not_counted_as_without_dublin_core(store: Store) -> None:
    """A further format is served as it came, whatever it holds: its run counts no record without
    Dublin Core (the first format's run gives the records their DC), and reads the partner's
    ListSets no second time."""

    class WithCmdi(TwoFormats):
        def pages(self) -> dict[str, list[str]]:
            cmdi = '<cmd:CMD xmlns:cmd="http://www.clarin.eu/cmd/"><cmd:Header/></cmd:CMD>'
            return {
                "oai_dc": [record(i, t, sets=("a",)) for i, t in self.titles.items()],
                "cmdi": [
                    f"<record><header><identifier>{i}</identifier><datestamp>2024-04-01T10:00:00Z</datestamp>"
                    f"</header><metadata>{cmdi}</metadata></record>"
                    for i in self.titles
                ],
            }

    with FakePartner(WithCmdi(TITLES, also_listed=("cmdi",))) as fake:
        report = run(store, Partner("p", fake.url, formats=("oai_dc", "cmdi")))
    assert [(r.format, r.outcome, r.counts.received, r.counts.without_dc) for r in report.all()] == [
        ("oai_dc", "success", 2, 0),
        ("cmdi", "success", 2, 0),
    ]
    assert "without Dublin Core" not in harvest.describe(report)
    assert [r.get("verb") for r in fake.requests].count("ListSets") == 1


def test_a_further_format_is_kept_byte_for_byte(store: Store) -> None:
    partner_side = TwoFormats(TITLES)
    with FakePartner(partner_side) as fake:
        run(store, Partner("p", fake.url, formats=("oai_dc", "marcxml")))
    sent = partner_side.pages()["marcxml"]
    # The <record> as received, with the OAI namespace it inherited from the response declared on it.
    assert native_records(store, "p", "marcxml") == {
        "oai:p:1": sent[0].replace("<record>", f'<record xmlns="{OAI_NS}">', 1).encode("utf-8"),
        "oai:p:2": sent[1].replace("<record>", f'<record xmlns="{OAI_NS}">', 1).encode("utf-8"),
    }
    assert native_records(store, "p", "oai_dc") == {}, "the first format is the record itself"


def test_a_second_run_of_each_format_changes_nothing(store: Store) -> None:
    partner_side = TwoFormats(TITLES)
    with FakePartner(partner_side) as fake:
        partner = Partner("p", fake.url, formats=("oai_dc", "marcxml"))
        run(store, partner)
        before = (served(store, "oai:p:1"), native_records(store, "p", "marcxml"))
        partner_side.response_date = "2024-06-01T08:30:00Z"
        fake.requests.clear()
        second = run(store, partner)
    listed = [r for r in fake.requests if r.get("verb") == "ListRecords"]
    assert listed == [
        {"verb": "ListRecords", "metadataPrefix": "oai_dc", "from": "2024-05-01T12:00:00Z"},
        {"verb": "ListRecords", "metadataPrefix": "marcxml", "from": "2024-05-01T12:00:00Z"},
    ]
    assert [(r.format, r.from_date, r.counts.added, r.counts.changed, r.counts.unchanged) for r in second.all()] == [
        ("oai_dc", "2024-05-01T12:00:00Z", 0, 0, 2),
        ("marcxml", "2024-05-01T12:00:00Z", 0, 0, 2),
    ]
    assert (served(store, "oai:p:1"), native_records(store, "p", "marcxml")) == before
    assert harvest_state_of(store, "p", "marcxml").next_from == "2024-06-01T08:30:00Z"


def test_a_changed_record_in_a_further_format_replaces_the_stored_bytes(store: Store) -> None:
    partner_side = TwoFormats(TITLES)
    with FakePartner(partner_side) as fake:
        partner = Partner("p", fake.url, formats=("oai_dc", "marcxml"))
        run(store, partner)
        partner_side.titles = {**TITLES, "oai:p:2": "Kanteletar, 2nd ed."}
        second = run(store, partner)
    assert [(r.format, r.counts.changed, r.counts.unchanged) for r in second.all()] == [
        ("oai_dc", 1, 1),
        ("marcxml", 1, 1),
    ]
    assert b"Kanteletar, 2nd ed." in native_records(store, "p", "marcxml")["oai:p:2"]


def test_a_format_the_partner_does_not_list_fails_alone(store: Store) -> None:
    with FakePartner(TwoFormats(TITLES)) as fake:
        partner = Partner("p", fake.url, formats=("mods", "oai_dc", "marcxml"))
        report = run(store, partner)
    assert [(r.format, r.outcome) for r in report.all()] == [
        ("mods", "failed"),
        ("oai_dc", "success"),
        ("marcxml", "success"),
    ]
    assert report.reason == (
        "p: the partner does not offer mods (its ListMetadataFormats lists oai_dc, marcxml); "
        "its other formats are harvested"
    )
    assert {"verb": "ListRecords", "metadataPrefix": "mods"} not in fake.requests
    assert report.exit_code == harvest.EXIT_CODES["failed"]
    assert harvest_state_of(store, "p", "mods").next_from is None
    assert harvest_state_of(store, "p", "oai_dc").next_from == "2024-05-01T12:00:00Z"
    assert len(native_records(store, "p", "marcxml")) == 2


def test_a_format_the_partner_cannot_disseminate_fails_alone(store: Store) -> None:
    """Listed by ListMetadataFormats, refused by ListRecords (cannotDisseminateFormat)."""
    with FakePartner(TwoFormats(TITLES, also_listed=("mods",))) as fake:
        report = run(store, Partner("p", fake.url, formats=("oai_dc", "mods", "marcxml")))
    assert [(r.format, r.outcome) for r in report.all()] == [
        ("oai_dc", "success"),
        ("mods", "failed"),
        ("marcxml", "success"),
    ]
    reason = report.more[0].reason
    assert reason is not None and "cannotDisseminateFormat" in reason and "mods is not offered here" in reason, reason
    assert harvest_state_of(store, "p", "mods").next_from is None


def test_the_command_line_runs_and_reports_each_format(store_url: str, tmp_path: Path) -> None:
    """`harvester run` prints a line per format, exits 1 when one failed; `status --json` says
    where each format stands, `history --json` which format each run harvested."""
    with FakePartner(TwoFormats(TITLES)) as fake:
        config = partners_config(tmp_path, store_url, {"p": fake.url}, {"p": {"formats": ["oai_dc", "mods"]}})
        ran = harvester_cli(config, "run", "p")
    assert ran.exit_code == 1, ran.output
    lines = [line for line in ran.stdout.splitlines() if line.startswith("p [")]
    assert [line.split(":")[:2] for line in lines] == [["p [oai_dc]", " success"], ["p [mods]", " failed"]]
    status = json.loads(harvester_cli(config, "status", "--json").stdout)["partners"][0]
    assert status["metadata_prefix"] == "oai_dc"
    assert status["formats"] == [
        {"prefix": "oai_dc", "next_from": "2024-05-01T12:00:00Z", "checkpoint": None},
        {"prefix": "mods", "next_from": None, "checkpoint": None},
    ]
    text = harvester_cli(config, "status").stdout.splitlines()
    assert "  next from (mods): the beginning (full harvest)" in text and "  next from: 2024-05-01T12:00:00Z" in text
    assert any(line.startswith("p  ") and line.endswith("  (oai_dc, mods)") for line in text), text
    runs = json.loads(harvester_cli(config, "history", "p", "--json").stdout)["runs"]
    assert [(r["format"], r["outcome"]) for r in runs] == [("mods", "failed"), ("oai_dc", "success")]


# ---- served again natively ------------------------------------------------------------------

MANY = {f"oai:p:{n}": f"Runo {n}" for n in range(1, 6)}


def served_in_formats(store: Store, store_url: str, titles: dict[str, str] = MANY) -> tuple[TwoFormats, Any]:
    """A store that harvested `titles` from a partner in oai_dc and marcxml and holds one local
    record, and the Flask client of our server over it (lists of 2 records a page)."""
    partner_side = TwoFormats(titles)
    with FakePartner(partner_side) as fake:
        run(store, Partner("p", fake.url, formats=("oai_dc", "marcxml")))
    store.write([make_record("local1", "Ours")])
    app = create_app(make_config(store_url, server={"page_size": 2}), store=store)
    return partner_side, app.test_client()


def validate(body: bytes) -> etree._Element:
    """Valid against OAI-PMH's schemas, a MARC21 slim payload against MARC21 slim's structure."""
    return validate_oai(body, WITH_MARC)


def get(client: Any, query: str) -> bytes:
    response = client.get(f"/oai?{query}")
    assert response.status_code == 200, response.data
    validate(response.data)
    return bytes(response.data)


def between(body: bytes, start: bytes, end: bytes) -> bytes:
    """What lies between the first `start` and the `end` after it."""
    at = body.index(start) + len(start)
    return body[at : body.index(end, at)]


def formats_listed(body: bytes) -> list[tuple[str | None, ...]]:
    doc = validate(body)
    return [
        tuple(f.findtext(f"{{{OAI_NS}}}{name}") for name in ("metadataPrefix", "schema", "metadataNamespace"))
        for f in doc.iter(f"{{{OAI_NS}}}metadataFormat")
    ]


OAI_DC_FORMAT = (
    "oai_dc",
    "http://www.openarchives.org/OAI/2.0/oai_dc.xsd",
    "http://www.openarchives.org/OAI/2.0/oai_dc/",
)


def test_list_metadata_formats_lists_a_harvested_format_as_the_partner_declared_it(
    store: Store, store_url: str
) -> None:
    _, client = served_in_formats(store, store_url)
    marc = ("marcxml", MARC_SCHEMA, MARC_NS)
    assert formats_listed(get(client, "verb=ListMetadataFormats")) == [OAI_DC_FORMAT, marc]
    assert formats_listed(get(client, "verb=ListMetadataFormats&identifier=oai:p:3")) == [OAI_DC_FORMAT, marc]
    local = get(client, "verb=ListMetadataFormats&identifier=oai:test.example.org:local1")
    assert formats_listed(local) == [OAI_DC_FORMAT]


def test_a_harvested_format_is_served_once_a_record_holds_it_and_only_then(store: Store, store_url: str) -> None:
    """`holds_harvested_format` (each page of a list asks it) agrees with ListMetadataFormats:
    a format declared by a partner but held by no record is not served."""
    _, client = served_in_formats(store, store_url)
    with store.engine.begin() as conn:
        declare_format_in(
            conn, "p", "mods", "http://www.loc.gov/standards/mods/v3/mods-3-7.xsd", "http://www.loc.gov/mods/v3"
        )
    assert [f.prefix for f in store.harvested_formats()] == ["marcxml"]
    assert [p for p in ("marcxml", "mods", "oai_dc", "nothing") if store.holds_harvested_format(p)] == ["marcxml"]
    assert error_codes(validate(get(client, "verb=ListRecords&metadataPrefix=mods"))) == ["cannotDisseminateFormat"]


def test_get_record_serves_the_partners_metadata_byte_for_byte_under_our_header(store: Store, store_url: str) -> None:
    partner_side, client = served_in_formats(store, store_url)
    sent = partner_side.pages()["marcxml"][1].encode("utf-8")  # oai:p:2
    in_dc = between(
        get(client, "verb=GetRecord&identifier=oai:p:2&metadataPrefix=oai_dc"), b"<GetRecord>\n", b"</GetRecord>"
    )
    in_marc = between(
        get(client, "verb=GetRecord&identifier=oai:p:2&metadataPrefix=marcxml"), b"<GetRecord>\n", b"</GetRecord>"
    )
    header = between(in_dc, b"<record>", b"<metadata>")
    about = between(in_dc, b"</metadata><about>", b"</about></record>")
    assert b"<provenance" in about and b"<baseURL>" in about
    payload = between(sent, b"<metadata>", b"</metadata>")
    assert payload.startswith(b"<marc:record xmlns:marc=") and payload.endswith(b"</marc:record>")
    # The same provenance, but for the namespace of the record harvested (test below).
    dc_ns = b"<metadataNamespace>http://www.openarchives.org/OAI/2.0/oai_dc/</metadataNamespace>"
    about = about.replace(dc_ns, f"<metadataNamespace>{MARC_NS}</metadataNamespace>".encode())
    assert in_marc == (
        b"<record>" + header + b"<metadata>" + payload + b"</metadata><about>" + about + b"</about></record>\n"
    )


def test_get_record_in_a_format_a_record_lacks_is_cannot_disseminate_format(store: Store, store_url: str) -> None:
    _, client = served_in_formats(store, store_url)
    local = validate(get(client, "verb=GetRecord&identifier=oai:test.example.org:local1&metadataPrefix=marcxml"))
    assert error_codes(local) == ["cannotDisseminateFormat"]
    unknown = validate(get(client, "verb=GetRecord&identifier=oai:p:1&metadataPrefix=mods"))
    assert error_codes(unknown) == ["cannotDisseminateFormat"]
    nowhere = validate(get(client, "verb=GetRecord&identifier=oai:p:9&metadataPrefix=marcxml"))
    assert error_codes(nowhere) == ["idDoesNotExist"]


def paged(client: Any, verb: str, prefix: str, extra: str = "") -> tuple[list[str], int]:
    """Every identifier of a list in `prefix`, page by page, and the number of pages."""
    doc = validate(get(client, f"verb={verb}&metadataPrefix={prefix}{extra}"))
    found, pages = identifiers(doc), 1
    while (token := token_of(doc)) is not None and token.text:
        doc = validate(get(client, f"verb={verb}&resumptionToken={token.text}"))
        found, pages = found + identifiers(doc), pages + 1
    return found, pages


def test_lists_in_a_harvested_format_page_over_the_records_that_have_it(
    store: Store, store_url: str, clock: Clock
) -> None:
    partner_side, client = served_in_formats(store, store_url)
    clock.tick()  # a list holds what was written before the second it was asked in
    for verb in ("ListRecords", "ListIdentifiers"):
        first = validate(get(client, f"verb={verb}&metadataPrefix=marcxml"))
        assert the_token(first).get("completeListSize") == "5"
        assert paged(client, verb, "marcxml") == (sorted(MANY), 3), verb
    assert paged(client, "ListRecords", "oai_dc")[0] == [*sorted(MANY), "oai:test.example.org:local1"]
    page = get(client, "verb=ListRecords&metadataPrefix=marcxml")
    for sent in partner_side.pages()["marcxml"][:2]:
        assert b"<metadata>" + between(sent.encode(), b"<metadata>", b"</metadata>") + b"</metadata>" in page
    nothing = validate(get(client, "verb=ListRecords&metadataPrefix=marcxml&from=2100-01-01"))
    assert error_codes(nothing) == ["noRecordsMatch"]


def test_a_record_deleted_at_the_partner_is_listed_in_the_harvested_format_by_its_header(
    store: Store, store_url: str
) -> None:
    _, client = served_in_formats(store, store_url)
    assert store.delete(["oai:p:4"]) == 1
    doc = validate(get(client, "verb=GetRecord&identifier=oai:p:4&metadataPrefix=marcxml"))
    header = doc.find(f".//{{{OAI_NS}}}header")
    assert header is not None and header.get("status") == "deleted"
    assert doc.find(f".//{{{OAI_NS}}}metadata") is None


def test_a_record_swept_away_is_listed_in_each_of_its_formats_by_its_header(
    store: Store, store_url: str, clock: Clock
) -> None:
    """A deletion sweep's tombstone keeps the formats the record was served in: a harvester of
    marcxml sees the deletion too."""
    partner_side, client = served_in_formats(store, store_url)
    partner_side.titles = {i: t for i, t in MANY.items() if i != "oai:p:4"}
    partner = Partner("p", "", formats=("oai_dc", "marcxml"), deletion_sweep=DeletionSweep(7 * 86_400, max_drop=0.5))
    with FakePartner(partner_side) as fake:
        partner = replace(partner, base_url=fake.url)
        report = run(store, partner)
        swept = sweep.after_run(store, partner, report, settings=FAST_HARVEST, forced=True)
    assert swept is not None and swept.swept == 1
    for prefix in ("oai_dc", "marcxml"):
        doc = validate(get(client, f"verb=GetRecord&identifier=oai:p:4&metadataPrefix={prefix}"))
        header = doc.find(f".//{{{OAI_NS}}}header")
        assert header is not None and header.get("status") == "deleted", prefix
        assert doc.find(f".//{{{OAI_NS}}}metadata") is None
    clock.tick()  # a list holds what was written before the second it was asked in
    assert paged(client, "ListIdentifiers", "marcxml") == (sorted(MANY), 3)


def served_marc(store: Store, store_url: str, partner_side: TwoFormats) -> bytes:
    """Our GetRecord of oai:p:1 in marcxml, once `partner_side` was harvested in both formats."""
    with FakePartner(partner_side) as fake:
        run(store, Partner("p", fake.url, formats=("oai_dc", "marcxml")))
    client = create_app(make_config(store_url), store=store).test_client()
    return get(client, "verb=GetRecord&identifier=oai:p:1&metadataPrefix=marcxml")


def test_a_payload_using_a_prefix_declared_above_it_is_served_with_that_declaration(
    store: Store, store_url: str
) -> None:
    """A partner that declares `marc:` on its response's root: the payload alone would not be
    XML, so it is served with the declaration it inherited, and only that one."""

    class PrefixOnRoot(TwoFormats):
        def __call__(self, params: dict[str, str], n: int) -> Response:
            response = super().__call__(params, n)
            if params.get("metadataPrefix") == "marcxml":
                body = response.get_data(as_text=True).replace(f' xmlns:marc="{MARC_NS}"', "")
                body = body.replace("<OAI-PMH ", f'<OAI-PMH xmlns:marc="{MARC_NS}" ', 1)
                response.set_data(body)
            return response

    partner_side = PrefixOnRoot({"oai:p:1": "Kalevala"})
    body = served_marc(store, store_url, partner_side)
    payload = between(body, b"<metadata>", b"</metadata>")
    sent = between(partner_side.pages()["marcxml"][0].encode(), b"<metadata>", b"</metadata>")
    start = b'<marc:record xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" xmlns:marc="' + MARC_NS.encode() + b'"'
    assert payload == start + sent[len(start) :], "the one declaration it needs, and the partner's bytes after it"


def test_the_partners_own_spelling_of_its_payload_is_kept(store: Store, store_url: str) -> None:
    """Byte for byte means as the partner wrote it: single quotes, character references and an
    empty element written out in full are not the spelling a parser would serialize."""

    class OwnSpelling(TwoFormats):
        def pages(self) -> dict[str, list[str]]:
            pages = super().pages()
            pages["marcxml"] = [
                m.replace('tag="245"', "tag='245'").replace(">Kalevala<", ">&#x4B;alevala<")
                .replace("</marc:datafield>", '<marc:subfield code="b"></marc:subfield></marc:datafield>')
                for m in pages["marcxml"]
            ]  # fmt: skip
            return pages

    partner_side = OwnSpelling({"oai:p:1": "Kalevala"})
    body = served_marc(store, store_url, partner_side)
    sent = between(partner_side.pages()["marcxml"][0].encode(), b"<metadata>", b"</metadata>")
    assert b"tag='245'" in sent and b"&#x4B;alevala" in sent and b"></marc:subfield>" in sent
    assert between(body, b"<metadata>", b"</metadata>") == sent


def test_a_change_in_a_further_format_alone_changes_the_records_datestamp(
    store: Store, store_url: str, clock: Clock
) -> None:
    """Datestamps mean change: a record whose MARC changed and whose Dublin Core did not is
    stamped anew, in every format, and listed again from then on."""

    class MarcChanges(TwoFormats):
        edition = ""

        def pages(self) -> dict[str, list[str]]:
            pages = super().pages()
            pages["marcxml"] = [m.replace("Kanteletar<", f"Kanteletar{self.edition}<") for m in pages["marcxml"]]
            return pages

    partner_side = MarcChanges(TITLES)
    with FakePartner(partner_side) as fake:
        partner = Partner("p", fake.url, formats=("oai_dc", "marcxml"))
        run(store, partner)
        first = clock()
        clock.tick(60)
        partner_side.edition = ", 2nd ed."
        second = run(store, partner)
    assert [(r.format, r.counts.changed, r.counts.unchanged) for r in second.all()] == [
        ("oai_dc", 0, 2),
        ("marcxml", 1, 1),
    ]
    clock.tick()
    client = create_app(make_config(store_url), store=store).test_client()
    for prefix in ("oai_dc", "marcxml"):
        doc = validate(get(client, f"verb=ListIdentifiers&metadataPrefix={prefix}"))
        stamps = {
            h.findtext(f"{{{OAI_NS}}}identifier"): h.findtext(f"{{{OAI_NS}}}datestamp")
            for h in doc.iter(f"{{{OAI_NS}}}header")
        }
        assert stamps == {"oai:p:1": format_datestamp(int(first)), "oai:p:2": format_datestamp(int(first) + 60)}, prefix
        in_set = validate(
            get(
                client,
                f"verb=ListIdentifiers&metadataPrefix={prefix}&set=partners:p&from={format_datestamp(int(first) + 1)}",
            )
        )
        assert identifiers(in_set) == ["oai:p:2"], prefix
    body = get(client, "verb=GetRecord&identifier=oai:p:2&metadataPrefix=marcxml")
    assert b"Kanteletar, 2nd ed.</marc:subfield>" in body


PROV = "{http://www.openarchives.org/OAI/2.0/provenance}"


def origin_namespaces(doc: etree._Element) -> list[str | None]:
    """The metadataNamespace of each record's provenance, outermost originDescription."""
    return [
        about.findtext(f"{PROV}provenance/{PROV}originDescription/{PROV}metadataNamespace")
        for about in doc.iter(f"{{{OAI_NS}}}about")
    ]


def test_the_provenance_of_a_record_in_a_harvested_format_names_that_formats_namespace(
    store: Store, store_url: str, clock: Clock
) -> None:
    """The provenance <about> of a record served in marcxml says the partner's record was MARC21
    slim (the namespace the partner's ListMetadataFormats declared), not Dublin Core; every
    response valid against OAI-PMH.xsd and provenance.xsd."""
    _, client = served_in_formats(store, store_url)
    clock.tick()
    marc = validate(get(client, "verb=GetRecord&identifier=oai:p:1&metadataPrefix=marcxml"))
    assert origin_namespaces(marc) == [MARC_NS]
    dc = validate(get(client, "verb=GetRecord&identifier=oai:p:1&metadataPrefix=oai_dc"))
    assert origin_namespaces(dc) == ["http://www.openarchives.org/OAI/2.0/oai_dc/"]
    page = validate(get(client, "verb=ListRecords&metadataPrefix=marcxml"))
    assert origin_namespaces(page) == [MARC_NS, MARC_NS]


class MarcLater(TwoFormats):
    """A partner whose records in marcxml are deleted from its marcxml list (`gone`) while
    its Dublin Core stays."""

    gone: tuple[str, ...] = ()

    def pages(self) -> dict[str, list[str]]:
        pages = super().pages()
        pages["marcxml"] = [
            record(i, deleted=True) if i in self.gone else m for i, m in zip(self.titles, pages["marcxml"], strict=True)
        ]
        return pages


def listed_since(client: Any, prefix: str, since: int) -> list[str]:
    doc = validate(get(client, f"verb=ListIdentifiers&metadataPrefix={prefix}&from={format_datestamp(since)}"))
    return [] if error_codes(doc) == ["noRecordsMatch"] else identifiers(doc)


def test_a_record_that_gains_or_loses_a_format_is_listed_again_from_then(
    store: Store, store_url: str, clock: Clock
) -> None:
    """A record first disseminated in marcxml by a later run (the format added to the
    configuration) has changed: it gets a new datestamp, so a harvester asking for marcxml (or
    oai_dc) `from` the first harvest lists it. The same when its marcxml goes (deleted at the
    partner, its Dublin Core kept): listed again, and no longer served in marcxml."""
    partner_side = MarcLater(TITLES)
    client = create_app(make_config(store_url), store=store).test_client()
    with FakePartner(partner_side) as fake:
        run(store, Partner("p", fake.url))
        first = int(clock())
        clock.tick(60)
        run(store, Partner("p", fake.url, formats=("oai_dc", "marcxml")))
        clock.tick(60)
        since = first + 1
        assert listed_since(client, "marcxml", since) == sorted(TITLES)
        assert listed_since(client, "oai_dc", since) == sorted(TITLES)
        second = int(clock())
        partner_side.gone = ("oai:p:2",)
        partner_side.response_date = "2024-06-01T12:00:00Z"
        run(store, Partner("p", fake.url, formats=("oai_dc", "marcxml")))
        clock.tick()
    assert listed_since(client, "oai_dc", second) == ["oai:p:2"]
    assert listed_since(client, "marcxml", second) == []
    gone = validate(get(client, "verb=GetRecord&identifier=oai:p:2&metadataPrefix=marcxml"))
    assert error_codes(gone) == ["cannotDisseminateFormat"]


def test_a_page_larger_than_one_in_list_is_written_whole_in_a_further_format(store: Store, clock: Clock) -> None:
    """A page in a further format is read and written a statement per table, by IN lists of
    500 identifiers: a page of 600 crosses into a second list, and every record of it is kept,
    served in the format and, when its metadata there changes, stamped anew in every format."""
    n = 600
    ids = [f"oai:p:{i:04d}" for i in range(n)]

    def page(edition: str) -> list[Record]:
        xml = [marc_record(i, f"Title {i}{edition}").replace("<record>", f'<record xmlns="{OAI_NS}">', 1) for i in ids]
        return [Record(i, source="p", raw_xml=x) for i, x in zip(ids, xml, strict=True)]

    def write(edition: str) -> tuple[int, Any]:
        with store.writing() as (conn, stamp):
            return stamp, write_native_in(conn, stamp, "p", "marcxml", page(edition))

    def count(sql: str, *params: Any) -> int:
        with store.engine.connect() as conn:
            return int(
                conn.exec_driver_sql(sql.replace("?", "%s" if not store.is_sqlite else "?"), params).scalar_one()
            )

    with store.writing() as (conn, stamp):
        records = [replace(make_record("x", sets=("s",)), identifier=i, source="p") for i in ids]
        write_harvested_in(store, conn, stamp, records)
    clock.tick()
    _, first = write("")
    assert (first.added, first.changed, first.unchanged) == (n, 0, 0)
    assert count("SELECT count(*) FROM formats WHERE prefix = 'marcxml'") == n
    clock.tick(60)
    _, again = write("")
    assert (again.added, again.changed, again.unchanged) == (0, 0, n)
    clock.tick(60)
    stamp, edited = write(", 2nd ed.")
    assert (edited.added, edited.changed, edited.unchanged) == (0, n, 0)
    assert count("SELECT count(*) FROM records WHERE datestamp = ?", stamp) == n
    assert count("SELECT count(*) FROM formats WHERE datestamp = ?", stamp) == 2 * n  # oai_dc and marcxml
    assert count("SELECT count(*) FROM set_members WHERE datestamp = ?", stamp) == n  # set s
    with store.engine.connect() as conn:
        served = [
            bytes(r) for r in conn.exec_driver_sql("SELECT record FROM formats WHERE prefix = 'marcxml'").scalars()
        ]
    assert len(served) == n and all(b"2nd ed.</marc:subfield>" in body for body in served)
    assert len(native_records(store, "p", "marcxml")) == n
