"""Backup and move: export → import → export gives the same bytes, across backends."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
import sqlalchemy as sa
from click.testing import CliRunner
from conftest import PG_URL, Clock, make_record

from oaiserver.cli import main
from oaiserver.dump import DumpError, export, load
from oaiserver.store import ListQuery, Store, finish_run, harvest_history, start_run
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


def pg_schema_url() -> tuple[str, sa.Engine, str] | None:
    if PG_URL is None:
        return None
    schema = f"t_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(PG_URL)
    with admin.begin() as conn:
        conn.exec_driver_sql(f"CREATE SCHEMA {schema}")
    sep = "&" if "?" in PG_URL else "?"
    return f"{PG_URL}{sep}options=-csearch_path%3D{schema}", admin, schema


@pytest.mark.parametrize("suffix", [".jsonl", ".jsonl.gz"])
def test_export_import_export_is_byte_identical(store: Store, clock: Clock, tmp_path: Path, suffix: str) -> None:
    fill(store)
    first, second = tmp_path / f"first{suffix}", tmp_path / f"second{suffix}"
    report = export(store, first)
    synthetic_deleted = sum(r.deleted for r in synthetic_records(300, "test.example.org"))
    assert (report.records, report.deleted) == (301, 1 + synthetic_deleted)
    # Into the other backend (SQLite when the source is PostgreSQL, and vice versa when it runs).
    targets = [f"sqlite:///{tmp_path / 'copy.sqlite3'}"]
    pg = pg_schema_url() if store.is_sqlite else None
    if pg is not None:
        targets = [pg[0]]
    copy = Store(targets[0])
    try:
        load(copy, first)
        export(copy, second)
        assert first.read_bytes() == second.read_bytes()
        assert copy.get("oai:test.example.org:x") == store.get("oai:test.example.org:x")
        assert copy.setting("token_secret") == "kept-across-the-move"
        assert [r.outcome for r in harvest_history(copy, "partner")] == ["success"]
        query = ListQuery("oai_dc", set_spec="a")
        assert [h.xml for h in copy.page(query, None, 500, with_metadata=True)] == [
            h.xml for h in store.page(query, None, 500, with_metadata=True)
        ]
        with pytest.raises(DumpError, match="not empty"):
            load(copy, first)
    finally:
        copy.close()
        if pg is not None:
            with pg[1].begin() as conn:
                conn.exec_driver_sql(f"DROP SCHEMA {pg[2]} CASCADE")
            pg[1].dispose()


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


def test_an_imported_record_whose_identifier_is_too_long_is_named(tmp_path: Path) -> None:
    """An export from a store written before the identifier limit may hold such records: the
    import names each one it cannot store, and says so in its exit code."""
    source = Store(f"sqlite:///{tmp_path / 'old.sqlite3'}")
    try:
        fill(source)
        export(source, tmp_path / "all.jsonl")
    finally:
        source.close()
    lines = (tmp_path / "all.jsonl").read_text(encoding="utf-8").splitlines()
    long = "oai:test.example.org:" + "x" * 2000
    lines.insert(
        1, lines[1].replace('"identifier":"', f'"identifier":"{long}', 1).replace(long + "oai:", long + "-", 1)
    )
    (tmp_path / "all.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    config = tmp_path / "config.yaml"
    config.write_text(f"storage:\n  url: sqlite:///{tmp_path / 'new.sqlite3'}\n")
    out = CliRunner().invoke(main, ["--config", str(config), "import", str(tmp_path / "all.jsonl")])
    assert out.exit_code == 1, out.output
    assert "imported 301 record(s)" in out.output
    assert "not imported: oai:test.example.org:xxxx" in out.output
    assert "(2" in out.output and ": the identifier is longer than 1024 bytes in UTF-8 (" in out.output
