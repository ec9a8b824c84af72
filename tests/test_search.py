"""Search for people: the words of titles, creators and identifiers, found on both backends,
kept current by every write (ingest, re-ingest, delete, harvest, import), and the /search page,
which answers any query with a page, never a 500."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from conftest import Clock, OAIClient, make_config, make_record
from harvestkit import FAST_HARVEST, FakePartner, PagedPartner, record
from lxml import html as lhtml

from harvester import harvest
from oaiserver.config import Partner
from oaiserver.dump import export, load
from oaiserver.ingest import ingest
from oaiserver.store import Store
from oaiserver.store.search import MAX_WORDS, Query, index_text, words

ID = "oai:test.example.org:"


def found(store: Store, text: str) -> list[str]:
    return [hit.identifier for hit in store.search(text)]


# ---- words and queries (no database) ---------------------------------------------------------


def test_words_fold_case_and_diacritics_and_split_on_punctuation() -> None:
    assert words("Émigré letters, ZÜRICH_1953 oai:x.org:rec-1") == [
        "emigre", "letters", "zurich", "1953", "oai", "x", "org", "rec", "1",
    ]  # fmt: skip


def test_only_titles_creators_and_identifiers_are_indexed() -> None:
    record = make_record("r1", "A title", creator="Kuznetsov", subject="Stalin", identifier="https://x.org/r1")
    from oaiserver.rows import prepare

    text = index_text(record.identifier, prepare(record).dc)
    assert text == "oai test example org r1 a title kuznetsov https x org r1"
    landing = make_record("r2", "Own page", identifier="https://repo.example.org/records/oai:test.example.org:r2")
    assert index_text(landing.identifier, prepare(landing).dc) == "oai test example org r2 own page"


@pytest.mark.parametrize(
    ("typed", "fts5", "tsquery"),
    [
        ("cable treaty", '"cable" "treaty" *', "(cable) & (treaty:*)"),
        ("rec-1 Zü", '"rec 1" "zu"', "(rec <-> 1) & (zu)"),
        ('"a" OR b* NEAR(c) -d', '"a" "or" "b" "near c" "d"', "(a) & (or) & (b) & (near <-> c) & (d)"),
        ("'; DROP TABLE records; --", '"drop" "table" "records" *', "(drop) & (table) & (records:*)"),
    ],
)
def test_typed_text_becomes_quoted_words_and_nothing_else(typed: str, fts5: str, tsquery: str) -> None:
    """No character a person types reaches FTS5's or tsquery's syntax: only words do."""
    query = Query.parse(typed)
    assert (query.fts5(), query.tsquery()) == (fts5, tsquery)


def test_a_query_is_bounded() -> None:
    assert sum(len(p) for p in Query.parse("word " * 2000).phrases) == MAX_WORDS
    assert Query.parse("\x00 * ( ) \" ' - :").phrases == ()


# ---- the store, on both backends ---------------------------------------------------------------


@pytest.fixture
def filled(store: Store, clock: Clock) -> Store:
    store.write(
        [
            make_record("cable-1", "Cable from the Embassy in Zürich", creator="Kuznetsov, Vasily"),
            make_record("cable-2", "Telegram on the border", creator="Panyushkin, Alexander"),
            make_record("memo-3", "Memorandum of conversation", identifier="https://archive.example.org/doc/777"),
        ]
    )
    clock.tick()
    return store


def test_titles_creators_and_identifiers_are_found(filled: Store) -> None:
    assert found(filled, "embassy") == [ID + "cable-1"]
    assert found(filled, "kuznetsov") == [ID + "cable-1"]
    assert found(filled, "zurich") == found(filled, "ZÜRICH") == [ID + "cable-1"]
    assert found(filled, "777") == [ID + "memo-3"]
    assert found(filled, ID + "cable-2") == [ID + "cable-2"]


def test_every_word_must_match_and_the_last_is_a_prefix(filled: Store) -> None:
    assert found(filled, "embassy telegram") == []
    assert found(filled, "telegram border") == [ID + "cable-2"]
    assert found(filled, "memorand") == [ID + "memo-3"]
    assert found(filled, "memorand conversation") == []  # only the last word is a prefix
    assert sorted(found(filled, "cable")) == [ID + "cable-1", ID + "cable-2"]  # newest row first
    assert found(filled, "oai") == [ID + "memo-3", ID + "cable-2", ID + "cable-1"]


def test_a_piece_with_punctuation_is_a_phrase(filled: Store) -> None:
    assert found(filled, "cable-1") == [ID + "cable-1"]
    assert found(filled, "example-cable") == []  # both words, not one after the other


def test_pages_are_keyed_on_the_row_and_counts_are_bounded(store: Store) -> None:
    store.write([make_record(f"{i:03d}", f"Report {i}") for i in range(120)])
    store.write([make_record("other", "Something else")])
    pages, before = [], None
    while hits := store.search("report", before=before, limit=50):
        pages.append([h.identifier for h in hits])
        before = hits[-1].row_id
    assert [len(p) for p in pages] == [50, 50, 20]
    assert sorted(i for p in pages for i in p) == [f"{ID}{i:03d}" for i in range(120)]
    assert store.search_count("report") == 120
    assert store.search_count("report", up_to=100) == 101  # "more than 100"
    assert store.search_count("nothing") == 0


@pytest.mark.parametrize(
    "hostile", ['"', "*", "NEAR", "NEAR(a b)", "-", "a -b", "(((", ")", "a AND", "OR", "^a", "a:b", "\x00", "x" * 5000,
                "é" * 5000, "a " * 2500, "' OR 1=1 --", "{col}: a", "\\", "%", "_"],
)  # fmt: skip
def test_hostile_queries_answer_without_error(filled: Store, hostile: str) -> None:
    assert isinstance(filled.search(hostile), list)
    assert filled.search_count(hostile) >= 0


# ---- kept current by every write ---------------------------------------------------------------


def test_a_changed_title_is_found_by_its_new_words_only(filled: Store, clock: Clock) -> None:
    filled.write([make_record("cable-1", "Letter from the legation", creator="Kuznetsov, Vasily")])
    assert found(filled, "embassy") == []
    assert found(filled, "legation") == [ID + "cable-1"]
    assert filled.search_count("kuznetsov") == 1  # one row per record, however often it is written


def test_a_deleted_record_is_found_and_marked(filled: Store, clock: Clock) -> None:
    filled.delete([ID + "cable-2"])
    hits = filled.search("telegram")
    assert [(h.identifier, h.deleted) for h in hits] == [(ID + "cable-2", True)]


SEED = """\
March 3, 1953
Telegram from the Embassy in Beijing, '{title}'
Source note
[…]
{title}
Body text.
[…]
A summary.
Author(s):
Kuznetsov, Vasily
Rights
Reuse welcome.
"""


def test_ingested_seeds_are_found_and_a_reingest_updates_them(store_url: str, store: Store, tmp_path: Path) -> None:
    seeds = tmp_path / "seeds"
    seeds.mkdir()
    (seeds / "doc1.txt").write_text(SEED.format(title="On the Death of Stalin"))
    cfg = make_config(store_url)
    ingest(cfg, store, seeds)
    assert found(store, "stalin") == [ID + "doc1"]
    assert found(store, "kuznetsov vasily") == [ID + "doc1"]
    (seeds / "doc1.txt").write_text(SEED.format(title="On the Funeral of Gottwald"))
    ingest(cfg, store, seeds)
    assert found(store, "stalin") == []
    assert found(store, "gottwald") == [ID + "doc1"]


def test_harvested_records_are_found_and_a_refused_one_keeps_the_local_words(store: Store) -> None:
    store.write([make_record("held", "Local words")])
    pages = [[record("oai:partner.example.org:1", "Partner telegram"), record(ID + "held", "Partner words")]]
    with FakePartner(PagedPartner(pages)) as fake:
        report = harvest.run(store, Partner("p", fake.url), settings=FAST_HARVEST)
    assert report.outcome in ("success", "partial")
    assert found(store, "partner telegram") == ["oai:partner.example.org:1"]
    assert found(store, "partner words") == []
    assert found(store, "local words") == [ID + "held"]


def test_an_imported_store_is_searchable(store: Store, tmp_path: Path) -> None:
    store.write([make_record("a", "Exported telegram", creator="Gromyko")])
    export(store, tmp_path / "dump.jsonl")
    fresh = Store(f"sqlite:///{tmp_path / 'fresh.sqlite3'}")
    try:
        load(fresh, tmp_path / "dump.jsonl")
        assert found(fresh, "gromyko telegram") == [ID + "a"]
    finally:
        fresh.close()


# ---- the page ---------------------------------------------------------------------------------


def page(http: Any, path: str) -> Any:
    response = http.get(path)
    assert response.status_code == 200, response.data[:300]
    assert response.mimetype == "text/html"
    return lhtml.fromstring(response.data)


def test_the_page_links_each_hit_to_its_landing_page_and_to_getrecord(oai: OAIClient, filled: Store) -> None:
    filled.delete([ID + "cable-2"])
    doc = page(oai.http, "/search?q=cable")
    rows = doc.xpath("//ol[@class='hits']/li")
    assert len(rows) == 2
    first, second = rows
    assert first.xpath(".//a[@class='title']/@href")[0] == f"/records/{ID}cable-2"
    assert "deleted" in first.text_content()
    assert "deleted" not in second.text_content()
    links = second.xpath(".//a/@href")
    assert f"/records/{ID}cable-1" in links
    assert f"/oai/view?verb=GetRecord&metadataPrefix=oai_dc&identifier={ID.replace(':', '%3A')}cable-1" in links
    assert "2 records" in " ".join(doc.text_content().split())


def test_the_page_is_paged_by_fifty(oai: OAIClient, store: Store) -> None:
    store.write([make_record(f"{i:03d}", f"Report {i}") for i in range(60)])
    doc = page(oai.http, "/search?q=report")
    assert len(doc.xpath("//ol[@class='hits']/li")) == 50
    more = doc.xpath("//a[starts-with(., 'Next')]")[0]
    doc = page(oai.http, more.get("href"))
    assert len(doc.xpath("//ol[@class='hits']/li")) == 10
    assert not doc.xpath("//a[starts-with(., 'Next')]")


def test_the_site_header_has_a_search_box(oai: OAIClient, filled: Store) -> None:
    doc = page(oai.http, "/")
    (form,) = doc.xpath("//header//form[@role='search']")
    assert form.get("action") == "/search" and form.xpath(".//input[@name='q']")


@pytest.mark.parametrize(
    "query", ["q=%22", "q=*", "q=NEAR(", "q=-", "q=(((", "q=%00", "q=" + "x" * 5000, "q=a%20" * 1000, "q=", "",
              "q=cable&before=abc", "q=cable&before=-1", "q=cable&before=99999999999999999999999", "q=%FF%FE"],
)  # fmt: skip
def test_hostile_queries_answer_a_page(oai: OAIClient, filled: Store, query: str) -> None:
    page(oai.http, f"/search?{query}")
