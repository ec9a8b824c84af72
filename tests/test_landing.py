"""A record's landing URL (its dc:identifier) follows the site's address, and a move of the
site is no change to the records: their datestamps stay, so harvesters fetch nothing again.

The address belongs to the deployment (`repository.base_url`), not to the record: the store
keeps the landing URL without it, and every response puts the configured one in.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from conftest import NS, Clock, make_config, validate

from oaiserver import create_app, oai_dc
from oaiserver.ingest import ingest
from oaiserver.store import Store

SEEDS = Path(__file__).parent.parent / "seeds"
OLD, NEW = "http://127.0.0.1:5000/oai", "https://archive.example.org/repo/oai"
KEPT = "oai:test.example.org:kept"


@pytest.fixture
def seeds(tmp_path: Path) -> Path:
    folder = tmp_path / "seeds"
    folder.mkdir()
    for name in ("kept", "other"):
        shutil.copy(next(SEEDS.glob("*.txt")), folder / f"{name}.txt")
    return folder


def landing_urls(app: object, query: str) -> list[str]:
    response = app.test_client().get(f"/oai?{query}")  # type: ignore[attr-defined]
    assert response.status_code == 200
    urls: list[str] = validate(response.data).xpath("//dc:identifier/text()", namespaces=NS)
    return urls


def test_landing_urls_follow_the_base_url_they_are_served_under(
    store_url: str, store: Store, clock: Clock, seeds: Path
) -> None:
    assert ingest(make_config(store_url, repository__base_url=OLD), store, seeds).written.added == 2
    clock.tick()  # a list shows what was written before it started
    app = create_app(make_config(store_url, repository__base_url=NEW), store=store)
    expected = "https://archive.example.org/repo/records/oai:test.example.org:kept"
    assert landing_urls(app, f"verb=GetRecord&metadataPrefix=oai_dc&identifier={KEPT}") == [expected]
    assert sorted(landing_urls(app, "verb=ListRecords&metadataPrefix=oai_dc")) == [
        expected,
        "https://archive.example.org/repo/records/oai:test.example.org:other",
    ]
    for page in (f"/records/{KEPT}", f"/oai/view?verb=GetRecord&metadataPrefix=oai_dc&identifier={KEPT}"):
        html = app.test_client().get(page).get_data(as_text=True)
        assert f'<a href="{expected}">{expected}</a>' in html, page
        assert "127.0.0.1:5000" not in html and oai_dc.SITE not in html, page
    listed = app.test_client().get("/oai/view?verb=ListRecords&metadataPrefix=oai_dc").get_data(as_text=True)
    assert f'<a href="{expected}">' in listed and oai_dc.SITE not in listed


def test_moving_the_site_and_ingesting_again_changes_no_datestamp(
    store_url: str, store: Store, clock: Clock, seeds: Path
) -> None:
    old, new = make_config(store_url, repository__base_url=OLD), make_config(store_url, repository__base_url=NEW)
    assert ingest(old, store, seeds).written.added == 2
    stamps = {i: store.get(i).datestamp for i in store.identifiers()}  # type: ignore[union-attr]
    clock.tick(3600)
    written = ingest(new, store, seeds).written
    assert (written.added, written.changed, written.unchanged) == (0, 0, 2)
    assert {i: store.get(i).datestamp for i in store.identifiers()} == stamps  # type: ignore[union-attr]
    # A harvester asking for what changed since the move gets nothing.
    app = create_app(new, store=store)
    doc = validate(
        app.test_client().get("/oai?verb=ListIdentifiers&metadataPrefix=oai_dc&from=2023-11-14T23:00:00Z").data
    )
    assert [e.get("code") for e in doc.iterfind("oai:error", NS)] == ["noRecordsMatch"]


def test_a_change_of_content_still_changes_the_datestamp(
    store_url: str, store: Store, clock: Clock, seeds: Path
) -> None:
    cfg = make_config(store_url, repository__base_url=NEW)
    ingest(cfg, store, seeds)
    before = store.get(KEPT).datestamp  # type: ignore[union-attr]
    clock.tick(60)
    path = seeds / "kept.txt"
    path.write_text(path.read_text(encoding="utf-8").replace("Yili", "Ili", 1), encoding="utf-8")
    written = ingest(cfg, store, seeds).written
    assert (written.changed, written.unchanged) == (1, 1)
    assert store.get(KEPT).datestamp == before + 60  # type: ignore[union-attr]


def test_a_record_cannot_borrow_the_site_address_through_its_text(store: Store, store_url: str, clock: Clock) -> None:
    """Only the landing URL the crosswalk wrote is completed; the same characters in a title or
    a harvested record's own values are served as they were written."""
    from conftest import make_record

    text = f"{oai_dc.SITE}/records/x"
    store.write([make_record("t", text, description=text, identifier=text)])
    clock.tick()
    app = create_app(make_config(store_url, repository__base_url=NEW), store=store)
    body = app.test_client().get("/oai?verb=ListRecords&metadataPrefix=oai_dc").data
    doc = validate(body)
    assert doc.xpath("//dc:title/text()", namespaces=NS) == [text]
    assert doc.xpath("//dc:description/text()", namespaces=NS) == [text]
    assert doc.xpath("//dc:identifier/text()", namespaces=NS) == [text]
