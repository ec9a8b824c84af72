"""The formats registry: adding a format is one entry in `oaiserver.formats.REGISTRY`, and
ingest, the protocol and the harvester's republishing all follow it."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import Clock, OAIClient, make_config, make_record
from lxml import etree

from oaiserver import create_app, formats, oai_dc
from oaiserver.ingest import seed_record
from oaiserver.records import DCValue
from oaiserver.store import Store
from oaiserver.synthetic import synthetic_records

NS = {"oai": "http://www.openarchives.org/OAI/2.0/", "oai_dc": oai_dc.NAMESPACE}
# A second prefix for the oai_dc schema (a repository may expose one schema under several
# prefixes, section 3.4), so that its responses validate against the shipped schemas.
DC_AGAIN = formats.MetadataFormat("dc_again", oai_dc.SCHEMA, oai_dc.NAMESPACE, oai_dc.render)


@pytest.fixture
def two_formats(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(formats.REGISTRY, DC_AGAIN.prefix, DC_AGAIN)


def test_oai_dc_is_registered_and_is_the_default() -> None:
    assert formats.DEFAULT == "oai_dc" and formats.REGISTRY["oai_dc"] is formats.OAI_DC
    assert (formats.OAI_DC.schema, formats.OAI_DC.namespace) == (oai_dc.SCHEMA, oai_dc.NAMESPACE)


def test_a_deleted_record_has_every_rendered_format_without_metadata(two_formats: None) -> None:
    dc = [DCValue("title", "T")]
    assert formats.rendered(dc, deleted=True) == {"oai_dc": "", "dc_again": ""}
    assert formats.rendered(dc) == {"oai_dc": oai_dc.render(dc), "dc_again": oai_dc.render(dc)}


def test_a_registered_format_is_ingested_listed_and_served(
    two_formats: None, store: Store, store_url: str, clock: Clock
) -> None:
    cfg = make_config(store_url)
    first = sorted((Path(__file__).resolve().parent.parent / "seeds").glob("*.txt"))[0]
    local = seed_record(cfg, first)
    assert set(local.metadata) == {"oai_dc", "dc_again"}  # ingest renders every registered format
    store.write([local, *synthetic_records(3, "test.example.org")])
    clock.tick(10)  # lists end before the second they are asked in
    oai = OAIClient(create_app(cfg, store=store).test_client())
    listed = oai(verb="ListMetadataFormats").xpath("//oai:metadataPrefix/text()", namespaces=NS)
    assert listed == ["oai_dc", "dc_again"]
    for prefix in ("oai_dc", "dc_again"):
        doc = oai(verb="GetRecord", identifier=local.identifier, metadataPrefix=prefix)
        assert doc.xpath("//oai:metadata/oai_dc:dc", namespaces=NS), etree.tostring(doc)
        listing = oai(verb="ListRecords", metadataPrefix=prefix)
        assert len(listing.xpath("//oai:record", namespaces=NS)) == 4, etree.tostring(listing)


def test_an_unregistered_prefix_cannot_be_disseminated(oai: OAIClient, store: Store) -> None:
    store.write([make_record("a")])
    doc = oai(verb="GetRecord", identifier="oai:test.example.org:a", metadataPrefix="dc_again")
    assert doc.xpath("//oai:error/@code", namespaces=NS) == ["cannotDisseminateFormat"]
