"""A record's landing URL (its dc:identifier) follows the site's address, and a move of the
site is no change to the records: their datestamps stay, so harvesters fetch nothing again.

The address belongs to the deployment (`repository.base_url`), not to the record: answers
follow the configured address at once, and the next ingest moves the stored landing URLs in
place, under their datestamps (oaiserver/landing.py).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from conftest import NS, Clock, make_config, stored, validate
from flask import Flask

from oaiserver import create_app, landing, oai_dc
from oaiserver.ingest import ingest, seed_record
from oaiserver.records import DCValue
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


def landing_urls(app: Flask, query: str) -> list[str]:
    response = app.test_client().get(f"/oai?{query}")
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
        assert "127.0.0.1:5000" not in html, page
    listed = app.test_client().get("/oai/view?verb=ListRecords&metadataPrefix=oai_dc").get_data(as_text=True)
    assert f'<a href="{expected}">' in listed and "127.0.0.1:5000" not in listed


def test_moving_the_site_and_ingesting_again_changes_no_datestamp(
    store_url: str, store: Store, clock: Clock, seeds: Path
) -> None:
    old, new = make_config(store_url, repository__base_url=OLD), make_config(store_url, repository__base_url=NEW)
    assert ingest(old, store, seeds).written.added == 2
    stamps = {i: stored(store, i).datestamp for i in store.identifiers()}
    clock.tick(3600)
    written = ingest(new, store, seeds).written
    assert (written.added, written.changed, written.unchanged) == (0, 0, 2)
    assert {i: stored(store, i).datestamp for i in store.identifiers()} == stamps
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
    before = stored(store, KEPT).datestamp
    assert before is not None
    clock.tick(60)
    path = seeds / "kept.txt"
    path.write_text(path.read_text(encoding="utf-8").replace("Yili", "Ili", 1), encoding="utf-8")
    written = ingest(cfg, store, seeds).written
    assert (written.changed, written.unchanged) == (1, 1)
    assert stored(store, KEPT).datestamp == before + 60


def test_only_landing_urls_of_the_stored_site_are_rewritten(
    store: Store, store_url: str, clock: Clock, seeds: Path
) -> None:
    """The stored site's address in other text, or another site's records/ URL, is served as
    written: only `<dc:identifier>` values that begin with the stored site move."""
    from conftest import make_record

    ingest(make_config(store_url, repository__base_url=OLD), store, seeds)
    text = "http://127.0.0.1:5000/records/x"
    other = "http://other.example.org/records/oai:test.example.org:kept"
    store.write([make_record("t", text, description=text, identifier=other)])
    clock.tick()
    app = create_app(make_config(store_url, repository__base_url=NEW), store=store)
    query = "verb=GetRecord&metadataPrefix=oai_dc&identifier=oai:test.example.org:t"
    doc = validate(app.test_client().get(f"/oai?{query}").data)
    assert doc.xpath("//dc:title/text()", namespaces=NS) == [text]
    assert doc.xpath("//dc:description/text()", namespaces=NS) == [text]
    assert doc.xpath("//dc:identifier/text()", namespaces=NS) == [other]
    # Nor does an ingest touch records that are not its own.
    ingest(make_config(store_url, repository__base_url=NEW), store, seeds)
    assert stored(store, "oai:test.example.org:t").dc == make_record("t", text, description=text, identifier=other).dc


def test_serving_reads_the_stored_site_again_after_an_ingest_elsewhere(
    store: Store, store_url: str, clock: Clock, seeds: Path
) -> None:
    """A server process rechecks which site the store's landing URLs point to (an ingest run by
    another process moves them) at most every landing.RECHECK seconds."""
    now = [0.0]
    site = landing.StoredSite(store, clock=lambda: now[0])
    new = make_config(store_url, repository__base_url=NEW)
    assert site.moved(new.site_url) is None  # nothing ingested yet
    ingest(make_config(store_url, repository__base_url=OLD), store, seeds)
    now[0] += landing.RECHECK
    assert site.moved(new.site_url) == ("http://127.0.0.1:5000", "https://archive.example.org/repo")
    ingest(new, store, seeds)
    assert site.moved(new.site_url) is not None  # read less than RECHECK seconds ago
    now[0] += landing.RECHECK
    assert site.moved(new.site_url) is None


def test_records_an_earlier_version_stored_are_upgraded_in_place_by_the_next_ingest(
    store_url: str, store: Store, clock: Clock, seeds: Path
) -> None:
    """Records ingested before held their landing URL whole. The first ingest after the upgrade
    stores them the new way under their old datestamps (what is served under the same base_url
    is the same, byte for byte); a record whose content changed meanwhile is changed as ever."""
    old = make_config(store_url, repository__base_url=OLD)
    legacy = [seed_record(old, path) for path in sorted(seeds.glob("*.txt"))]
    for record in legacy:  # as the earlier version wrote them
        record.dc = [
            DCValue(v.element, old.landing_url(record.identifier)) if v.element == "identifier" else v
            for v in record.dc
        ]
        record.metadata = {oai_dc.PREFIX: oai_dc.render(record.dc)}
    assert store.write(legacy).added == 2
    clock.tick()
    served = sorted(landing_urls(create_app(old, store=store), "verb=ListRecords&metadataPrefix=oai_dc"))
    stamps = {i: stored(store, i).datestamp for i in store.identifiers()}
    clock.tick(3600)
    path = seeds / "other.txt"
    path.write_text(path.read_text(encoding="utf-8").replace("Yili", "Ili", 1), encoding="utf-8")
    written = ingest(old, store, seeds).written
    assert (written.added, written.changed, written.unchanged) == (0, 1, 1)
    assert stored(store, KEPT).datestamp == stamps[KEPT]
    assert stored(store, "oai:test.example.org:other").datestamp == clock.now
    clock.tick()
    assert sorted(landing_urls(create_app(old, store=store), "verb=ListRecords&metadataPrefix=oai_dc")) == served
    # From now on the site can move without a datestamp changing.
    moved = landing_urls(
        create_app(make_config(store_url, repository__base_url=NEW), store=store),
        f"verb=GetRecord&metadataPrefix=oai_dc&identifier={KEPT}",
    )
    assert moved == ["https://archive.example.org/repo/records/oai:test.example.org:kept"]
    written = ingest(make_config(store_url, repository__base_url=NEW), store, seeds).written
    assert (written.added, written.changed, written.unchanged) == (0, 0, 2)
