"""A partner harvested in several formats (`formats: [oai_dc, marcxml]`): each format on its own,
with its own `from`, checkpoint and history line; the further formats kept byte for byte; a
format the partner does not offer fails alone. On both backends."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

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
from werkzeug.wrappers import Response

from harvester import harvest
from oaiserver.config import Partner
from oaiserver.store import Store, harvest_history, harvest_state_of, native_records

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
