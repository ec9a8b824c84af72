"""Dublin Core for every harvested record: a record in a native format we know (MARC21 slim,
MODS, DataCite) gets its Dublin Core by that format's crosswalk, and is served in oai_dc, on
its landing page and in the views; a record that still has none is counted (`without_dc`) in
the run's line, `status`, `history` (and their --json), the partner's page and /metrics, never dropped silently."""

from __future__ import annotations

import json
from contextlib import closing
from pathlib import Path

import pytest
from conftest import HERE, NS, Clock, OAIClient, make_config
from harvestkit import FAST_HARVEST, FakePartner, PagedPartner, harvester_cli, partners_config, second_store
from lxml import etree

from harvester import harvest
from harvester.convert import convert_record
from oaiserver import create_app, oai_dc
from oaiserver.config import Partner
from oaiserver.crosswalks import crosswalk
from oaiserver.store import Store

MARC = "http://www.loc.gov/MARC21/slim"
OAI_NS = "http://www.openarchives.org/OAI/2.0/"
CROSSWALKS = HERE / "data" / "crosswalks"
DC_STATUS_ONLY = 3  # of the five records of STATUS_PAGES, these hold only <dc:status>


def marc_record(identifier: str, title: str, author: str) -> str:
    """An OAI <record> whose payload is MARC21 slim under the prefix `marc:`: a <marc:record>
    nested in OAI-PMH's own <record>."""
    return (
        f"<record><header><identifier>{identifier}</identifier><datestamp>2024-04-01T10:00:00Z</datestamp>"
        f'</header><metadata><marc:record xmlns:marc="{MARC}">'
        "<marc:leader>00000nam a2200000 a 4500</marc:leader>"
        "<marc:controlfield tag='008'>240101s2019    fi            000 0 fin d</marc:controlfield>"
        f"<marc:datafield tag='100' ind1='1' ind2=' '><marc:subfield code='a'>{author}</marc:subfield></marc:datafield>"
        f"<marc:datafield tag='245' ind1='1' ind2='0'><marc:subfield code='a'>{title} /</marc:subfield>"
        f"<marc:subfield code='c'>{author}.</marc:subfield></marc:datafield>"
        "<marc:datafield tag='700' ind1='1' ind2=' '><marc:subfield code='a'>Virtanen, Liisa,</marc:subfield>"
        "<marc:subfield code='e'>editor.</marc:subfield></marc:datafield>"
        "</marc:record></metadata></record>"
    )


def test_marc21_records_are_served_in_oai_dc_by_the_crosswalk(store_url: str, tmp_path: Path, clock: Clock) -> None:
    pages = [
        [marc_record("oai:lib:1", "Baltic journeys", "Salo, Ari"), marc_record("oai:lib:2", "Tides", "Koski, Eva")]
    ]
    with FakePartner(PagedPartner(pages)) as fake, second_store(store_url, tmp_path, clock) as target:
        report = harvest.run(target, Partner("lib", fake.url, "marc21"), settings=FAST_HARVEST)
        assert (report.outcome, report.counts.added, report.counts.without_dc) == ("success", 2, 0)
        clock.tick()
        config = make_config(target.url, partners=[{"name": "lib", "base_url": fake.url, "metadata_prefix": "marc21"}])
        app = create_app(config, store=target)
        served = OAIClient(app.test_client())
        doc = served(verb="GetRecord", identifier="oai:lib:1", metadataPrefix="oai_dc")  # schema-valid, payload too
        dc = doc.find(".//oai:metadata/oai_dc:dc", NS)
        assert [(el.tag.split("}")[1], el.text) for el in dc] == [
            ("title", "Baltic journeys"),
            ("creator", "Salo, Ari"),
            ("contributor", "Virtanen, Liisa"),
            ("date", "2019"),
            ("type", "Text"),
            ("language", "fin"),
        ]
        listed = served(verb="ListRecords", metadataPrefix="oai_dc", set="partners:lib")
        assert [t.text for t in listed.iterfind(".//dc:title", NS)] == ["Baltic journeys", "Tides"]
        landing = app.test_client().get("/records/oai:lib:2").get_data(as_text=True)
        assert "Tides" in landing and "Koski, Eva" in landing
        view = app.test_client().get("/oai/view?verb=ListRecords&metadataPrefix=oai_dc").get_data(as_text=True)
        assert "Baltic journeys" in view and "Tides" in view


def status_only(identifier: str) -> str:
    """An oai_dc record holding no Dublin Core element: only <dc:status>, which DC does not have."""
    return (
        f"<record><header><identifier>{identifier}</identifier><datestamp>2024-04-01T10:00:00Z</datestamp>"
        '</header><metadata><oai_dc:dc xmlns:oai_dc="http://www.openarchives.org/OAI/2.0/oai_dc/" '
        'xmlns:dc="http://purl.org/dc/elements/1.1/"><dc:status>published</dc:status></oai_dc:dc></metadata></record>'
    )


def test_records_without_dublin_core_are_counted_everywhere(store_url: str, tmp_path: Path) -> None:
    from harvestkit import record

    pages = [
        [record("oai:p:1"), status_only("oai:p:2"), status_only("oai:p:3")],
        [status_only("oai:p:4"), record("oai:p:5")],
    ]
    with FakePartner(PagedPartner(pages)) as fake:
        config_file = partners_config(tmp_path, store_url, {"thin": fake.url})
        run = harvester_cli(config_file, "run", "thin")
        assert run.exit_code == 0, run.output
        assert run.stdout.splitlines() == [
            "thin: success: 2 page(s), 5 record(s): 5 added; 3 without Dublin Core (not republished); "
            "completeness unknown (no completeListSize announced; 5 stored); next from 2024-05-01T12:00:00Z"
        ]
        history = harvester_cli(config_file, "history", "thin")
        assert "5 added; 3 without Dublin Core (not republished)" in history.stdout.splitlines()[0]
        runs = json.loads(harvester_cli(config_file, "history", "thin", "--json").stdout)["runs"]
        assert runs[0]["counts"]["without_dc"] == DC_STATUS_ONLY
        status = harvester_cli(config_file, "status").stdout.splitlines()
        assert (
            "  without Dublin Core: #1 3 record(s) with no oai_dc and no crosswalk of their format; "
            "stored, not republished"
        ) in status
        listed = json.loads(harvester_cli(config_file, "status", "--json").stdout)["partners"]
        assert listed[0]["last_run"]["counts"]["without_dc"] == DC_STATUS_ONLY
        config = make_config(store_url, partners=[{"name": "thin", "base_url": fake.url}])
        with closing(Store(store_url)) as store:
            client = create_app(config, store=store).test_client()
            metrics = client.get("/metrics").get_data(as_text=True)
            assert 'harvest_records_without_dc_total{partner="thin"} 3.0' in metrics.splitlines()
            page = client.get("/partners/thin").get_data(as_text=True)
            assert "5 received: 5 added; 3 without Dublin Core (not republished)" in page
            served = OAIClient(client)(verb="GetRecord", identifier="oai:p:2", metadataPrefix="oai_dc")
            assert [e.get("code") for e in served.iterfind("oai:error", NS)] == ["cannotDisseminateFormat"]


@pytest.mark.parametrize(
    ("sample", "prefix"),
    [
        ("marc-thesis.xml", "marcxml"),
        ("mods-sound-and-fury.xml", "mods"),
        ("datacite-example-HasMetadata-v3.0.xml", "datacite"),
        ("datacite-example-GeoLocation-v4.xml", "oai_datacite"),
    ],
)
def test_each_known_native_format_gives_the_record_its_crosswalk(sample: str, prefix: str) -> None:
    """Whatever prefix the partner calls it by, the payload's namespace names the format."""
    payload = etree.parse(str(CROSSWALKS / sample)).getroot()
    element = etree.fromstring(
        f'<record xmlns="{OAI_NS}"><header><identifier>oai:x:1</identifier>'
        "<datestamp>2024-04-01T10:00:00Z</datestamp></header><metadata/></record>"
    )
    element.find(f"{{{OAI_NS}}}metadata").append(payload)  # type: ignore[union-attr]
    record = convert_record(element, Partner("x", "http://x.example.org/oai", prefix), harvest_date="2024-05-01")
    expected = crosswalk(prefix, payload)
    assert expected and record.dc == expected
    assert record.sets == ["partners:x"] and record.metadata["oai_dc"] == oai_dc.render(expected)
