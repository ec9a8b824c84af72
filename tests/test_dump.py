"""Backup and move: export → import → export gives the same bytes, across backends."""

from __future__ import annotations

import gzip
import hashlib
import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from click.testing import CliRunner
from conftest import PG_URL, Clock, backend_store_url, engine_of, make_record

from oaiserver.cli import main
from oaiserver.dump import DumpError, export, load
from oaiserver.records import Record
from oaiserver.store import (
    ListQuery,
    Store,
    add_partner_sets_in,
    content_hash,
    finish_run,
    formats,
    harvest_history,
    iter_records,
    meta,
    name_partner_sets,
    start_run,
)
from oaiserver.synthetic import synthetic_records


def fill(store: Store) -> None:
    store.write(synthetic_records(300, "test.example.org"), keep_datestamps=True)
    hostile = make_record("x", 'Trade & <Tariffs> "quoted" 北京', sets=("a:b",))
    hostile.fulltext, hostile.provenance = "full\ntext", {"baseURL": "http://127.0.0.1:9/oai"}
    hostile.about, hostile.source, hostile.raw_xml = "<p xmlns='urn:a'>about</p>", "partner", "<record/>"
    store.write([hostile])
    store.delete(["oai:test.example.org:rec-0000007"])
    store.ensure_setting("token_secret", "kept-across-the-move")
    run = start_run(store, "partner", "me", started=1_700_000_000, from_date="2020-01-01", resumed=False)
    finish_run(
        store,
        run,
        "partner",
        finished=1_700_000_050,
        outcome="success",
        reason=None,
        counts={"received": 1},
        next_from=("2023-11-14T22:13:20Z", "oai_dc"),
    )
    with store.writing() as (conn, _):
        add_partner_sets_in(conn, "partner", ["partners:partner:a", "partners:partner:a:~C3~85"])
    name_partner_sets(store, "partner", {"partners:partner:a": "Archive"})


@pytest.mark.parametrize("suffix", [".jsonl", ".jsonl.gz"])
def test_export_import_export_is_byte_identical(store: Store, clock: Clock, tmp_path: Path, suffix: str) -> None:
    fill(store)
    first, second = tmp_path / f"first{suffix}", tmp_path / f"second{suffix}"
    report = export(store, first)
    synthetic_deleted = sum(r.deleted for r in synthetic_records(300, "test.example.org"))
    assert (report.records, report.deleted) == (301, 1 + synthetic_deleted)
    # Into the other backend (SQLite when the source is PostgreSQL, and vice versa when it runs).
    other = "postgresql" if store.is_sqlite and PG_URL is not None else "sqlite"
    (tmp_path / "copy").mkdir()
    with backend_store_url(other, tmp_path / "copy") as target:
        copy = Store(target)
        try:
            load(copy, first)
            export(copy, second)
            assert first.read_bytes() == second.read_bytes()
            assert copy.get("oai:test.example.org:x") == store.get("oai:test.example.org:x")
            assert copy.setting("token_secret") == "kept-across-the-move"
            assert [r.outcome for r in harvest_history(copy, "partner")] == ["success"]
            assert copy.harvested_sets() == [
                ("partner", "partners:partner:a", "Archive"),
                ("partner", "partners:partner:a:~C3~85", None),
            ]
            query = ListQuery("oai_dc", set_spec="a")
            assert [h.xml for h in copy.page_headers(query, None, 500, with_metadata=True)] == [
                h.xml for h in store.page_headers(query, None, 500, with_metadata=True)
            ]
            with pytest.raises(DumpError, match="not empty"):
                load(copy, first)
        finally:
            copy.close()


def test_export_and_import_commands(tmp_path: Path, store_url: str, store: Store) -> None:
    fill(store)
    config = tmp_path / "config.yaml"
    config.write_text(f"storage:\n  url: {store_url}\n")
    dump = tmp_path / "all.jsonl.gz"
    out = CliRunner().invoke(main, ["--config", str(config), "export", str(dump)])
    assert out.exit_code == 0 and "exported 301 record(s)" in out.output
    config2 = tmp_path / "config2.yaml"
    config2.write_text(f"storage:\n  url: sqlite:///{tmp_path / 'new.sqlite3'}\n")
    out = CliRunner().invoke(main, ["--config", str(config2), "import", str(dump)])
    assert out.exit_code == 0 and "imported 301 record(s)" in out.output
    out = CliRunner().invoke(main, ["--config", str(config2), "import", str(dump)])
    assert out.exit_code == 1 and "not empty" in out.output
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"format": "something else"}\n')
    config3 = tmp_path / "config3.yaml"
    config3.write_text(f"storage:\n  url: sqlite:///{tmp_path / 'new3.sqlite3'}\n")
    out = CliRunner().invoke(main, ["--config", str(config3), "import", str(bad)])
    assert out.exit_code == 1 and "not an export" in out.output


@pytest.mark.parametrize("command", ["import", "synthetic"])
def test_a_bulk_load_into_postgresql_leaves_the_planner_its_statistics(tmp_path: Path, command: str) -> None:
    """Without statistics (a store just loaded, before autovacuum looks) PostgreSQL sorts the
    whole list for every page: `import` and `synthetic` analyze the tables they filled."""
    source = Store(f"sqlite:///{tmp_path / 'source.sqlite3'}")
    try:
        fill(source)
        export(source, tmp_path / "all.jsonl")
    finally:
        source.close()
    with backend_store_url("postgresql", tmp_path) as url:
        config = tmp_path / "config.yaml"
        config.write_text(f"storage:\n  url: {url}\n")
        args = ["import", str(tmp_path / "all.jsonl")] if command == "import" else ["synthetic", "301"]
        out = CliRunner().invoke(main, ["--config", str(config), *args])
        assert out.exit_code == 0, out.output
        with engine_of(url) as engine, engine.connect() as conn:
            analyzed = conn.exec_driver_sql(
                "SELECT relname, last_analyze IS NOT NULL FROM pg_stat_user_tables"
                " WHERE relid IN ('records'::regclass, 'formats'::regclass, 'set_members'::regclass)"
                " ORDER BY relname"
            ).all()
            live = conn.exec_driver_sql("SELECT reltuples FROM pg_class WHERE oid = 'records'::regclass").scalar()
    assert [tuple(row) for row in analyzed] == [("formats", True), ("records", True), ("set_members", True)]
    assert live == 301


# ---- all or nothing: a damaged file is refused with its line number, and nothing is written ----

GOOD_RECORDS = 2100  # more than two of import's batches (1,000): a half import would show
DAMAGED = 1500  # the index of the line damaged: a record in the second batch


def synthetic_export(tmp: Path) -> Path:
    """An export of a SQLite store of GOOD_RECORDS synthetic records plus `fill`'s."""
    source = Store(f"sqlite:///{tmp / 'source.sqlite3'}", clock=Clock())
    try:
        source.write(synthetic_records(GOOD_RECORDS - 301, "other.example.org"), keep_datestamps=True)
        fill(source)
        export(source, tmp / "good.jsonl")
    finally:
        source.close()
    return tmp / "good.jsonl"


@pytest.fixture(scope="module")
def good(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return synthetic_export(tmp_path_factory.mktemp("export"))


def line_dict(line: bytes) -> dict[str, Any]:
    return json.loads(line)


def encode(obj: Any) -> bytes:
    return json.dumps(obj, ensure_ascii=False, sort_keys=True, separators=(",", ":")).encode() + b"\n"


def live_record_at(lines: list[bytes], index: int) -> int:
    """The index of the first live record line at or after `index`."""
    while "record" not in line_dict(lines[index]) or line_dict(lines[index])["record"]["deleted"]:
        index += 1
    return index


def rehash(item: dict[str, Any]) -> dict[str, Any]:
    """The record line with the content hash the store would compute for its content."""
    r = item["record"]
    r["content_hash"] = content_hash(
        Record(identifier=r["identifier"], sets=r["sets"], deleted=r["deleted"], metadata=r["metadata"])
    )
    return item


def reseal(lines: list[bytes]) -> list[bytes]:
    """`lines` (the trailer last) with a trailer that matches them: a file edited by someone
    who knows the format, which only the per-record checks can refuse."""
    body = lines[:-1]
    items = [line_dict(line) for line in body]
    records = [i["record"] for i in items if "record" in i]
    counts = {"records": len(records), "deleted": sum(r["deleted"] for r in records)}
    counts["rows"] = sum("table" in i for i in items)
    digest = hashlib.sha256(b"".join(body)).hexdigest()
    return [*body, encode({"end": {"lines": len(body), **counts, "sha256": digest}})]


def edit_metadata(lines: list[bytes], change: Callable[[str], str], *, rehashed: bool = True) -> list[bytes]:
    at = live_record_at(lines, DAMAGED)
    item = line_dict(lines[at])
    item["record"]["metadata"]["oai_dc"] = change(item["record"]["metadata"]["oai_dc"])
    lines[at] = encode(rehash(item) if rehashed else item)
    return lines


def cut_mid_line(lines: list[bytes]) -> list[bytes]:
    return [*lines[:DAMAGED], lines[DAMAGED][:60]]


def malformed(lines: list[bytes]) -> list[bytes]:
    item = line_dict(lines[DAMAGED])
    item["record"]["datestamp"] = "yesterday"
    lines[DAMAGED] = encode(item)
    return lines


def flip_in_fulltext(lines: list[bytes]) -> list[bytes]:
    at = next(i for i in range(DAMAGED, len(lines)) if b'"fulltext":"' in lines[i])
    start = lines[at].index(b'"fulltext":"') + len(b'"fulltext":"')
    lines[at] = lines[at][:start] + (b"Y" if lines[at][start : start + 1] != b"Y" else b"Z") + lines[at][start + 1 :]
    return lines


def flip_in_title(lines: list[bytes]) -> list[bytes]:
    at = live_record_at(lines, DAMAGED)
    start = lines[at].index(b"<dc:title>") + len(b"<dc:title>")
    lines[at] = lines[at][:start] + (b"Y" if lines[at][start : start + 1] != b"Y" else b"Z") + lines[at][start + 1 :]
    return lines


def twice(lines: list[bytes], earlier: int) -> list[bytes]:
    lines[DAMAGED] = lines[earlier]
    return reseal(lines)


def set_about(lines: list[bytes], about: str) -> list[bytes]:
    at = live_record_at(lines, DAMAGED)
    item = line_dict(lines[at])
    item["record"]["about"] = about
    lines[at] = encode(item)  # `about` is not part of the content hash
    return reseal(lines)


def set_bytes(lines: list[bytes], field: bytes) -> list[bytes]:
    """A record's full text replaced by `field` as it stands in JSON (the content hash does
    not cover the full text, so only the trailer needs fixing)."""
    at = live_record_at(lines, DAMAGED)
    item = line_dict(lines[at])
    item["record"]["fulltext"] = "placeholder"
    lines[at] = encode(item).replace(b'"fulltext":"placeholder"', b'"fulltext":"' + field + b'"')
    return reseal(lines)


def long_identifier(lines: list[bytes]) -> list[bytes]:
    """A record whose identifier is over the store's limit (a store written before the limit
    could hold one), with its trailer fixed: the import refuses the file, naming the limit."""
    at = live_record_at(lines, DAMAGED)
    item = line_dict(lines[at])
    item["record"]["identifier"] = "oai:test.example.org:" + "x" * 2000
    return reseal([*lines[:at], encode(item), *lines[at + 1 :]])


def run_counts(lines: list[bytes], counts: str) -> list[bytes]:
    at = next(i for i, line in enumerate(lines) if line.startswith(b'{"row":') and b'"harvest_runs"' in line)
    item = line_dict(lines[at])
    item["row"]["counts"] = counts
    lines[at] = encode(item)
    return reseal(lines)


# Each case: how the good file's lines are damaged, and which line (1-based) the refusal names:
# "damaged" for the damaged line, "last" for the trailer, "end" for the last line left, "run"
# for the harvest run's line.
DAMAGES: dict[str, tuple[Callable[[list[bytes]], list[bytes]], str, str]] = {
    "cut at a line end": (lambda lines: lines[:DAMAGED], "end", "without its trailer"),
    "trailer missing": (lambda lines: lines[:-1], "end", "without its trailer"),
    "cut mid-line": (cut_mid_line, "damaged", "cut short"),
    "malformed row": (malformed, "damaged", "datestamp"),
    "not JSON": (lambda lines: [*lines[:DAMAGED], b'{"record": {\n', *lines[DAMAGED + 1 :]], "damaged", "not JSON"),
    "a byte changed in a title": (flip_in_title, "damaged", "does not match its content_hash"),
    "a byte changed in a full text": (flip_in_fulltext, "last", "trailer does not match"),
    "a line added after the trailer": (lambda lines: [*lines, lines[DAMAGED]], "last", "after the trailer"),
    "a record twice in one batch": (lambda lines: twice(lines, DAMAGED - 50), "damaged", "appears twice"),
    "a record twice across batches": (lambda lines: twice(lines, 10), "damaged", "appears twice"),
    # Edited by someone who also fixed the content hash and the trailer: the fragments are checked.
    "</dc:tit<le>": (
        lambda lines: reseal(edit_metadata(lines, lambda x: x.replace("</dc:title>", "</dc:tit<le>", 1))),
        "damaged",
        "not well-formed XML",
    ),
    "a character XML forbids": (
        lambda lines: reseal(edit_metadata(lines, lambda x: x.replace("<dc:title>", "<dc:title>\x01", 1))),
        "damaged",
        "character XML does not allow",
    ),
    "a lone surrogate": (lambda lines: set_bytes(lines, b"text \\ud800 text"), "damaged", "XML does not allow"),
    "U+FFFF as UTF-8": (lambda lines: set_bytes(lines, "text \uffff".encode()), "damaged", "XML does not allow"),
    "a form feed": (lambda lines: set_bytes(lines, b"text \\f"), "damaged", "XML does not allow"),
    "metadata that is two elements": (
        lambda lines: reseal(edit_metadata(lines, lambda x: x + "<x/>")),
        "damaged",
        "not one XML element",
    ),
    "an about with an undeclared prefix": (lambda lines: set_about(lines, "<p:x/>"), "damaged", "not well-formed"),
    "an about with a DOCTYPE": (
        lambda lines: set_about(lines, '<!DOCTYPE x [<!ENTITY e "boom">]><x>&e;</x>'),
        "damaged",
        "not well-formed",
    ),
    "a table line naming a list": (
        lambda lines: [*lines[:DAMAGED], b'{"row":{},"table":[1]}\n', *lines[DAMAGED + 1 :]],
        "damaged",
        "not a record or table line",
    ),
    "an identifier over the limit": (long_identifier, "damaged", "at most 1024 bytes in UTF-8"),
    "a harvest run whose counts are not JSON": (lambda lines: run_counts(lines, "{received: 1"), "run", "JSON object"),
    # A byte changed and the trailer fixed, the content hash left: the record's digest refuses it.
    "a title changed, the trailer fixed": (
        lambda lines: reseal(edit_metadata(lines, lambda x: x.replace("<dc:title>", "<dc:title>X", 1), rehashed=False)),
        "damaged",
        "does not match its content_hash",
    ),
}


def row_counts(url: str) -> dict[str, int]:
    """Rows per table of data (the store's schema number is not data: a new store has it)."""
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            return {
                t.name: conn.execute(sa.select(sa.func.count()).select_from(t)).scalar_one()
                for t in meta.sorted_tables
                if t.name != "schema_version"
            }
    finally:
        engine.dispose()


def import_cli(tmp_path: Path, url: str, path: Path) -> Any:
    config = tmp_path / "import.yaml"
    config.write_text(f"storage:\n  url: {url}\n")
    return CliRunner().invoke(main, ["--config", str(config), "import", str(path)])


@pytest.mark.parametrize("damage", list(DAMAGES))
def test_a_damaged_file_is_refused_with_its_line_and_nothing_is_written(
    store_url: str, tmp_path: Path, good: Path, damage: str
) -> None:
    """An import is all or nothing: a file cut, altered or malformed anywhere is refused with
    the line number, the store is left exactly empty, and the good file then imports."""
    change, where, reason = DAMAGES[damage]
    lines = good.read_bytes().splitlines(keepends=True)
    damaged_lines = change(list(lines))
    run_line = next((n for n, line in enumerate(damaged_lines, 1) if b'"harvest_runs"' in line), None)
    expected_line = {"damaged": DAMAGED + 1, "last": len(damaged_lines), "end": len(damaged_lines), "run": run_line}[
        where
    ]
    bad = tmp_path / "bad.jsonl"
    bad.write_bytes(b"".join(damaged_lines))
    Store(store_url).close()  # the tables, as a new store has them
    empty = row_counts(store_url)
    assert not any(empty.values())

    out = import_cli(tmp_path, store_url, bad)
    assert out.exit_code == 1, out.output
    assert row_counts(store_url) == empty
    assert f"line {expected_line}:" in out.output and reason in out.output, out.output
    assert "nothing was imported" in out.output, out.output
    assert isinstance(out.exception, SystemExit), out.exception  # a message, not an exception

    out = import_cli(tmp_path, store_url, good)
    assert out.exit_code == 0 and f"imported {GOOD_RECORDS} record(s)" in out.output, out.output


def test_a_truncated_gzip_file_is_refused_and_nothing_is_written(store_url: str, tmp_path: Path, good: Path) -> None:
    packed = tmp_path / "good.jsonl.gz"
    with packed.open("wb") as raw, gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0) as out:
        out.write(good.read_bytes())
    cut = tmp_path / "cut.jsonl.gz"
    cut.write_bytes(packed.read_bytes()[: packed.stat().st_size * 2 // 3])
    Store(store_url).close()
    empty = row_counts(store_url)

    out = import_cli(tmp_path, store_url, cut)
    assert out.exit_code == 1, out.output
    assert row_counts(store_url) == empty
    assert re.search(r"line \d+: the compressed data is cut short or damaged", out.output), out.output

    out = import_cli(tmp_path, store_url, packed)
    assert out.exit_code == 0 and f"imported {GOOD_RECORDS} record(s)" in out.output, out.output


def test_an_export_without_content_hashes_and_trailer_is_refused_with_a_clear_message(
    store_url: str, tmp_path: Path
) -> None:
    """Exports made before the trailer existed (format version 1) cannot be proven whole."""
    old = tmp_path / "old.jsonl"
    record = {"identifier": "oai:test.example.org:1", "datestamp": 1_700_000_000, "deleted": False}
    old.write_bytes(encode({"format": "oai-repository-export", "version": 1}) + encode({"record": record}))
    out = import_cli(tmp_path, store_url, old)
    assert out.exit_code == 1 and "line 1: an export in version 1" in out.output, out.output
    assert "export the store again" in out.output
    assert not any(row_counts(store_url).values())


def test_a_record_changed_in_the_store_is_reported_by_export_and_refused_by_import(
    store: Store, store_url: str, tmp_path: Path
) -> None:
    """A byte changed in a stored record (behind the store's back) does not travel silently:
    export names it and exits 1, and import refuses the file at that record's line."""
    store.write([make_record("1", "A title"), make_record("2", "Another title")])
    with store.engine.begin() as conn:
        blob = conn.execute(sa.select(formats.c.record).where(formats.c.record_id == 2)).scalar_one()
        conn.execute(formats.update().where(formats.c.record_id == 2).values(record=bytes(blob).replace(b"An", b"A ")))
    config = tmp_path / "config.yaml"
    config.write_text(f"storage:\n  url: {store_url}\n")
    path = tmp_path / "all.jsonl"
    out = CliRunner().invoke(main, ["--config", str(config), "export", str(path)])
    assert out.exit_code == 1 and "1 record(s) whose stored content no longer matches" in out.output, out.output
    assert "oai:test.example.org:2" in out.output
    out = import_cli(tmp_path, f"sqlite:///{tmp_path / 'copy.sqlite3'}", path)
    assert out.exit_code == 1, out.output
    assert "line 3: record 'oai:test.example.org:2': its content does not match its content_hash" in out.output


def test_an_export_of_a_live_store_is_one_snapshot(
    store: Store, store_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A backup taken while harvests write holds the store as it was at one moment: a record
    and a harvest run written while the export runs are in neither its records nor its rows
    (a newer harvest state beside older records would make a restored harvester skip them)."""
    import oaiserver.dump as dump_module

    fill(store)
    before = tmp_path / "before.jsonl"
    export(store, before)
    other = Store(store_url)
    real_record = dump_module._record
    written: list[bool] = []  # True once the record was written during the export

    def record_then_write(*args: Any) -> Any:
        if not written:  # once the export has begun reading records
            other.write([make_record("zzz-written-during-the-export", "late")])
            start_run(other, "partner", "me", started=1_800_000_000, from_date=None, resumed=False)
            written.append(True)
        return real_record(*args)

    monkeypatch.setattr(dump_module, "_record", record_then_write)
    during = tmp_path / "during.jsonl"
    export(store, during)
    other.engine.dispose()
    assert written
    assert during.read_bytes() == before.read_bytes()
    assert "oai:test.example.org:zzz-written-during-the-export" in {r.identifier for r in iter_records(store)}
