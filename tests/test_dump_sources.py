"""Export and import carry every format and source (issue 18): a store that harvested two
partners in oai_dc and MARC21 slim, sharing identifiers, exports, imports into the other
backend and exports again to the same bytes; the copy serves the same responses in each
format, and a harvest after the restore changes nothing. A file of version 2 (before
`further`, native_formats and shadowed_records) still imports. On both backends."""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from conftest import PG_URL, Clock, backend_store_url, make_config, validate
from harvestkit import FAST_HARVEST, FakePartner
from test_dump import encode, reseal, row_counts
from test_harvest_formats import WITH_MARC, TwoFormats

from harvester import harvest
from oaiserver import create_app
from oaiserver.config import Partner
from oaiserver.dump import DumpError, export, load
from oaiserver.dumpcheck import bytes_of, text_of
from oaiserver.store import Store, native_records, shadowed_counts

DATA = Path(__file__).parent / "data"
ORDER = replace(FAST_HARVEST, sources=("p", "q"))  # p is served before q
SHARED = ("oai:shared:1", "oai:shared:2")
SIDES = {
    "p": TwoFormats({SHARED[0]: "P one", SHARED[1]: "P two", "oai:p:own": "P own"}),
    "q": TwoFormats({SHARED[0]: "Q one", SHARED[1]: "Q two", "oai:q:own": "Q own"}),
}


@pytest.fixture
def partners() -> Iterator[dict[str, str]]:
    """p and q on 127.0.0.1, up for the whole test: a harvest after the restore meets the same
    base URLs (they are in each record's provenance)."""
    with FakePartner(SIDES["p"]) as p, FakePartner(SIDES["q"]) as q:
        yield {"p": p.url, "q": q.url}


def harvest_both(store: Store, urls: dict[str, str]) -> list[tuple[str, str, int, int, int, int]]:
    """Harvest p, then q, each in oai_dc and marcxml: (partner, format, added, changed,
    unchanged, shadowed) of each run."""
    runs = []
    for name, url in urls.items():
        report = harvest.run(store, Partner(name, url, formats=("oai_dc", "marcxml")), settings=ORDER)
        runs += [(name, r.format, r.counts.added, r.counts.changed, r.counts.unchanged, r.counts.shadowed)
                 for r in report.all()]  # fmt: skip
    return runs


@contextmanager
def restored(store: Store, tmp_path: Path, clock: Clock) -> Iterator[tuple[Store, Path, Path]]:
    """The store exported, imported into the other backend (SQLite when the store is on
    PostgreSQL, PostgreSQL when it runs and the store is on SQLite), and exported again."""
    first, second = tmp_path / "first.jsonl", tmp_path / "second.jsonl"
    report = export(store, first)
    assert report.mismatched == []
    other = "postgresql" if store.is_sqlite and PG_URL is not None else "sqlite"
    (tmp_path / "copy").mkdir()
    with backend_store_url(other, tmp_path / "copy") as url:
        copy = Store(url, clock=clock)
        try:
            load(copy, first)
            export(copy, second)
            yield copy, first, second
        finally:
            copy.close()


def lines_of(path: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in path.read_bytes().splitlines()]


def test_export_import_export_carries_every_format_and_source(
    store: Store, clock: Clock, tmp_path: Path, partners: dict[str, str]
) -> None:
    harvest_both(store, partners)
    assert store.delete(["oai:p:own"]) == 1  # a tombstone that keeps both its formats
    with restored(store, tmp_path, clock) as (copy, first, second):
        assert first.read_bytes() == second.read_bytes()
        assert shadowed_counts(copy) == shadowed_counts(store) == {"q": 2}
        for name in SIDES:
            assert native_records(copy, name, "marcxml") == native_records(store, name, "marcxml")
            assert len(native_records(copy, name, "marcxml")) == 3
        for identifier in (*SHARED, "oai:p:own", "oai:q:own"):
            assert copy.get(identifier) == store.get(identifier)
            assert copy.formats_of(identifier) == store.formats_of(identifier)
    lines = lines_of(first)
    assert lines[0] == {"format": "oai-repository-export", "version": 3}
    tables = [line["table"] for line in lines if "table" in line]
    assert tables.count("native_formats") == 6 and tables.count("shadowed_records") == 2
    further = {
        r["identifier"]: sorted(r.get("further", {})) for line in lines if isinstance(r := line.get("record"), dict)
    }
    # The tombstone's hash covers both its formats; a live record's, the one written with it.
    assert further == {"oai:p:own": [], "oai:q:own": ["marcxml"], SHARED[0]: ["marcxml"], SHARED[1]: ["marcxml"]}


def served(client: Any, query: str) -> bytes:
    """A response without what depends on the wall clock (its date, a token's expiry and
    signature time): the rest is the same on every ask."""
    response = client.get(f"/oai?{query}")
    assert response.status_code == 200
    validate(response.data, WITH_MARC)
    body = re.sub(rb"<responseDate>[^<]*</responseDate>", b"", response.data)
    body = re.sub(rb' expirationDate="[^"]*"', b"", body)
    return re.sub(rb"(<resumptionToken[^>]*>[^.<]*)[^<]*<", rb"\1<", body)


def test_the_copy_serves_the_same_bytes_in_each_format(
    store: Store, store_url: str, clock: Clock, tmp_path: Path, partners: dict[str, str]
) -> None:
    harvest_both(store, partners)
    clock.tick()  # a list holds what was written before the second it was asked in
    queries = [
        "verb=ListMetadataFormats",
        *(f"verb=ListMetadataFormats&identifier={i}" for i in (*SHARED, "oai:q:own")),
        *(f"verb=ListRecords&metadataPrefix={p}" for p in ("oai_dc", "marcxml")),
        *(f"verb=GetRecord&identifier={i}&metadataPrefix=marcxml" for i in (*SHARED, "oai:p:own", "oai:q:own")),
    ]
    config = make_config(store_url, server={"page_size": 2})
    before = create_app(config, store=store).test_client()  # its token secret, kept in the store, is exported
    with restored(store, tmp_path, clock) as (copy, _, _):
        after = create_app(config, store=copy).test_client()
        for query in queries:
            assert served(after, query) == served(before, query), query
        assert b"<metadataPrefix>marcxml</metadataPrefix>" in served(after, "verb=ListMetadataFormats")
        marc = served(after, "verb=GetRecord&identifier=oai:q:own&metadataPrefix=marcxml")
        assert b'<marc:subfield code="a">Q own</marc:subfield>' in marc


def test_a_harvest_after_the_restore_changes_nothing(
    store: Store, clock: Clock, tmp_path: Path, partners: dict[str, str]
) -> None:
    """The partners' records in further formats and the records not served are restored as
    kept: harvesting both partners again finds each unchanged, and q's copies still not served."""
    harvest_both(store, partners)
    with restored(store, tmp_path, clock) as (copy, _, second):
        again = harvest_both(copy, partners)
        assert again == [
            ("p", "oai_dc", 0, 0, 3, 0),
            ("p", "marcxml", 0, 0, 3, 0),
            ("q", "oai_dc", 0, 0, 3, 2),
            ("q", "marcxml", 0, 0, 3, 0),
        ]
        after = tmp_path / "after.jsonl"
        export(copy, after)
    kept = ("native_formats", "shadowed_records")
    assert [x for x in lines_of(after) if "record" in x or x.get("table") in kept] == [
        x for x in lines_of(second) if "record" in x or x.get("table") in kept
    ]


def test_an_export_of_version_2_still_imports(store: Store, tmp_path: Path) -> None:
    """tests/data/export-v2.jsonl was written by `oaiserver export` before version 3: it
    imports, and exports again in version 3 with the same lines."""
    old = DATA / "export-v2.jsonl"
    report = load(store, old)
    assert (report.records, report.deleted, report.rows) == (6, 1, 4)
    again = tmp_path / "again.jsonl"
    export(store, again)
    old_lines, new_lines = lines_of(old), lines_of(again)
    assert (old_lines[0]["version"], new_lines[0]["version"]) == (2, 3)
    assert new_lines[1:-1] == old_lines[1:-1]


@pytest.mark.parametrize(
    "data",
    [b"<record>Kalevala</record>", "<r>Pohjola \u2603</r>".encode(), b"\xff\xfe not UTF-8", b"<r>\x01</r>", b""],
)
def test_a_binary_column_is_its_text_or_base64_and_reads_back(data: bytes) -> None:
    carried = text_of(data)
    assert isinstance(carried, str) == (data in (b"<record>Kalevala</record>", "<r>Pohjola \u2603</r>".encode(), b""))
    assert bytes_of(json.loads(json.dumps(carried))) == data


# ---- the checks of the new sections ----------------------------------------------------------


@pytest.fixture(scope="module")
def two_partners(tmp_path_factory: pytest.TempPathFactory) -> list[bytes]:
    """The lines of an export of a SQLite store that harvested p and q in both formats."""
    tmp = tmp_path_factory.mktemp("two")
    source = Store(f"sqlite:///{tmp / 'source.sqlite3'}", clock=Clock())
    try:
        with FakePartner(SIDES["p"]) as p, FakePartner(SIDES["q"]) as q:
            harvest_both(source, {"p": p.url, "q": q.url})
        export(source, tmp / "two.jsonl")
    finally:
        source.close()
    return (tmp / "two.jsonl").read_bytes().splitlines(keepends=True)


def edited(lines: list[bytes], find: bytes, change: Callable[[dict[str, Any]], object]) -> tuple[list[bytes], int]:
    """The lines with the first one holding `find` changed by `change` (on its JSON value, in
    place, or a list of values to put there instead), the trailer made to match, and the
    number of that line."""
    at = next(n for n, line in enumerate(lines) if find in line)
    item = json.loads(lines[at])
    new = change(item)
    lines = [*lines[:at], *(encode(i) for i in (new if isinstance(new, list) else [item])), *lines[at + 1 :]]
    return reseal(lines), at + 1


def native(change: Callable[[dict[str, Any]], None]) -> Callable[[dict[str, Any]], None]:
    return lambda item: change(item["row"])


def marc_of(item: dict[str, Any]) -> dict[str, Any]:
    return item["record"]["further"]  # type: ignore[no-any-return]


NEW_DAMAGES: dict[str, tuple[bytes, Callable[[dict[str, Any]], object], str]] = {
    "base64 that is not": (
        b'"native_formats"',
        native(lambda row: row.update(record={"base64": "not base64!"})),
        "native_formats.record is not UTF-8 text nor",
    ),
    "a native record as a number": (
        b'"native_formats"',
        native(lambda row: row.update(record=7)),
        "native_formats.record is not UTF-8 text nor",
    ),
    "a native prefix with a space": (
        b'"native_formats"',
        native(lambda row: row.update(prefix="marc xml")),
        "native_formats.prefix is not a metadataPrefix",
    ),
    "a native row twice": (
        b'"native_formats"',
        lambda item: [item, item],
        "native_formats",
    ),
    "a kept record's provenance not JSON": (
        b'"shadowed_records"',
        native(lambda row: row.update(provenance="{baseURL")),
        "shadowed_records.provenance is not a JSON object",
    ),
    "a kept record's content hash not a digest": (
        b'"shadowed_records"',
        native(lambda row: row.update(content_hash="x")),
        "shadowed_records.content_hash is not a SHA-256 digest",
    ),
    "a further format not well-formed": (
        b'"further"',
        lambda item: marc_of(item).update(marcxml="<marc:record>"),
        "its marcxml metadata is not well-formed XML",
    ),
    "a further format also in its metadata": (
        b'"further"',
        lambda item: marc_of(item).update(oai_dc=item["record"]["metadata"]["oai_dc"]),
        "oai_dc is both in its metadata and further",
    ),
    "further empty": (b'"further"', lambda item: item["record"].update(further={}), "further is not"),
}


@pytest.mark.parametrize("damage", list(NEW_DAMAGES))
def test_the_new_sections_are_checked_and_nothing_is_written(
    store: Store, store_url: str, two_partners: list[bytes], tmp_path: Path, damage: str
) -> None:
    """A damaged line of the new sections, in a file whose trailer was made to match, is
    refused with its line (a row met twice, by the table's key, where its batch is written),
    and the store stays empty; the good file then imports."""
    find, change, reason = NEW_DAMAGES[damage]
    lines, number = edited(list(two_partners), find, change)
    bad = tmp_path / "bad.jsonl"
    bad.write_bytes(b"".join(lines))
    with pytest.raises(DumpError) as refused:
        load(store, bad)
    message = str(refused.value)
    assert reason in message and "nothing was imported" in message, message
    if damage != "a native row twice":
        assert f"line {number}:" in message, message
    assert not any(row_counts(store_url).values())
    good = tmp_path / "good.jsonl"
    good.write_bytes(b"".join(two_partners))
    assert load(store, good).records == 4
