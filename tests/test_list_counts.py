"""A list's completeListSize is read from counts the store keeps as records are written
(oaiserver/store/list_counts.py), not counted over the whole list: these tests hold the kept
counts to the rows of every list after each kind of write, on both backends."""

from __future__ import annotations

import dataclasses
import threading
from pathlib import Path

import pytest
from conftest import Clock, engine_of, make_record

from oaiserver import dump
from oaiserver.records import ListQuery, Record
from oaiserver.store import Store, list_counts, schema_version

OTHER = "marc_test"  # a second format's prefix: the store keeps any prefix it is given


def direct(store: Store, query: ListQuery) -> int:
    """The list's size counted over its rows, as a page walks them."""
    sql, params = store._list_sql(query, "count(*)", None)
    return int(store._fetch(sql, params)[0][0])


def kept(store: Store) -> dict[tuple[str, str], int]:
    """The kept counts, per (prefix, spec), zeros left out."""
    rows = store._fetch("SELECT prefix, spec, sum(n) FROM list_counts GROUP BY prefix, spec", [])
    return {(p, s): int(n) for p, s, n in rows if n}


def lists_of(store: Store) -> dict[tuple[str, str], int]:
    """Every list's size over its rows, per (prefix, spec), zeros left out."""
    specs = [s for (s,) in store._fetch("SELECT DISTINCT spec FROM set_members", [])]
    prefixes = [p for (p,) in store._fetch("SELECT DISTINCT prefix FROM formats", [])]
    out = {}
    for p in prefixes:
        for s in ["", *specs]:
            n = direct(store, ListQuery(p, set_spec=s or None))
            if n:
                out[(p, s)] = n
    return out


def assert_exact(store: Store, end: int | None = None) -> None:
    """The kept counts are the lists' sizes, and so is every count a first page asks for."""
    assert kept(store) == lists_of(store)
    for p, s in lists_of(store):
        query = ListQuery(p, set_spec=s or None, end=end)
        assert store.count(query) == direct(store, query), query


def with_other(record: Record) -> Record:
    """The record in a second format too."""
    return dataclasses.replace(record, metadata={**record.metadata, OTHER: "<x>other</x>"})


def test_counts_follow_every_kind_of_write(store: Store, clock: Clock) -> None:
    """Inserts, updates that change sets, formats added and removed, tombstones, and records
    deleted outright (their formats and sets cascade): each list's count stays its size."""
    store.write([make_record(str(i), sets=("a:b",) if i % 2 else ("c",)) for i in range(10)])
    assert kept(store)[("oai_dc", "")] == 10
    assert_exact(store)
    clock.tick()
    store.write([with_other(make_record(str(i), "new", sets=("a", "c"))) for i in range(4)])  # sets and a format
    assert kept(store)[(OTHER, "c")] == 4
    assert_exact(store)
    clock.tick()
    store.write([make_record(str(i), "newer", sets=("c",)) for i in range(2)])  # the format taken away
    assert_exact(store)
    clock.tick()
    assert store.delete([f"oai:test.example.org:{i}" for i in (2, 5, 9)]) == 3  # tombstones keep their rows
    assert_exact(store)
    with store.engine.begin() as conn:  # a record purged: its rows go by the foreign keys' cascade
        purged = "'oai:test.example.org:3', 'oai:test.example.org:4'"
        conn.exec_driver_sql(f"DELETE FROM records WHERE identifier IN ({purged})")
    assert kept(store)[("oai_dc", "")] == 8
    assert_exact(store)


def test_a_frozen_list_keeps_its_size_while_records_are_written(store: Store, clock: Clock) -> None:
    """Records written after a list was frozen are not in it: its count up to the frozen moment
    takes them off, and a record of the list stamped again leaves it (as the pages see it)."""
    store.write([make_record(str(i), sets=("s",)) for i in range(6)])
    end = store.freeze()
    clock.tick(5)
    store.write([make_record(f"late{i}", sets=("s",)) for i in range(3)])
    store.write([make_record("0", "changed", sets=("s",))])
    for spec in (None, "s"):
        query = ListQuery("oai_dc", set_spec=spec, end=end)
        assert store.count(query) == direct(store, query) == 5
    assert_exact(store, end)


def test_an_import_counts_what_it_loads(store: Store, clock: Clock, tmp_path: Path) -> None:
    store.write([with_other(make_record(str(i), sets=("a:b",))) for i in range(5)])
    store.delete(["oai:test.example.org:1"])
    dump.export(store, tmp_path / "all.jsonl")
    copy = Store(f"sqlite:///{tmp_path / 'copy.sqlite3'}")
    try:
        dump.load(copy, tmp_path / "all.jsonl")
        assert kept(copy) == lists_of(copy) == lists_of(store)
    finally:
        copy.close()


def test_a_store_before_migration_10_gets_the_counts_of_its_records(store_url: str, clock: Clock) -> None:
    store = Store(store_url, clock=clock)
    store.write([with_other(make_record(str(i), sets=("a:b",) if i % 3 else ())) for i in range(7)])
    store.delete(["oai:test.example.org:1"])
    store.close()
    # the store as migration 9 left it: no counts, no triggers
    with engine_of(store_url) as engine, engine.begin() as conn:
        for table in ("formats", "set_members"):
            for op in ("insert", "delete"):
                on = f" ON {table}" if conn.dialect.name == "postgresql" else ""
                name = f"list_counts_{'members' if table == 'set_members' else 'formats'}_{op}"
                conn.exec_driver_sql(f"DROP TRIGGER {name}{on}")
        conn.exec_driver_sql("DROP TABLE list_counts")
        conn.execute(schema_version.update().values(version=9))
    migrated = Store(store_url, clock=clock)
    try:
        assert kept(migrated) == lists_of(migrated) and kept(migrated)[("oai_dc", "a:b")] == 4
        migrated.write([make_record("new", sets=("a",))])  # and kept from then on
        assert_exact(migrated)
    finally:
        migrated.close()


def test_concurrent_writers_of_the_same_lists_neither_wait_nor_miscount(store_url: str, clock: Clock) -> None:
    """Two writers in flight at once (PostgreSQL's share the write clock), each touching the
    same sets in the opposite order: neither waits for the other's counter rows, nothing
    deadlocks, and the counts are exact afterwards."""
    store = Store(store_url, clock=clock)
    try:
        store.write([make_record("seed", sets=("x", "y"))])
        inside = threading.Barrier(1 if store.is_sqlite else 2, timeout=30)
        errors: list[BaseException] = []

        def writer(name: str, sets: tuple[str, ...]) -> None:
            try:
                with store.writing() as (conn, stamp):
                    for n in range(3):
                        store.write_in(conn, stamp, [make_record(f"{name}{n}", sets=(sets[n % 2],))])
                        if n == 0:
                            inside.wait()  # both hold counter rows of x and y before going on
            except BaseException as exc:  # reported by the assertion below
                errors.append(exc)

        if store.is_sqlite:  # one writer at a time: the second starts when the first is done
            writer("p", ("x", "y"))
            writer("q", ("y", "x"))
        else:
            threads = [threading.Thread(target=writer, args=args) for args in (("p", ("x", "y")), ("q", ("y", "x")))]
            for t in threads:
                t.start()
            for t in threads:
                t.join(60)
        assert errors == []
        assert_exact(store)
        assert kept(store)[("oai_dc", "x")] == 4
    finally:
        store.close()


@pytest.mark.parametrize("store_url", ["postgresql"], indirect=True)
def test_backends_rows_are_folded_without_waiting_for_a_writer(store: Store, clock: Clock) -> None:
    """Each PostgreSQL backend adds to its own row; past FOLD_AT rows a count folds them into
    one, skipping the row of a write still in flight, which it does not wait for."""
    store.write([make_record(str(i), sets=("s",)) for i in range(3)])
    with store.engine.begin() as conn:  # as if many backends had written: rows that add to nothing
        for part in range(1, list_counts.FOLD_AT + 2):
            conn.exec_driver_sql(
                "INSERT INTO list_counts (prefix, spec, part, n) VALUES ('oai_dc', '', %s, %s)",
                (-part, 1 if part <= list_counts.FOLD_AT else -list_counts.FOLD_AT),
            )
    done = threading.Event()
    with store.writing() as (conn, stamp):
        store.write_in(conn, stamp, [make_record("inflight")])  # holds its backend's row

        def count() -> None:
            assert store.count(ListQuery("oai_dc")) == 3
            done.set()

        thread = threading.Thread(target=count)
        thread.start()
        assert done.wait(30), "the count waited for the writer"
        thread.join(30)
    rows = store._fetch("SELECT count(*) FROM list_counts WHERE prefix = 'oai_dc' AND spec = ''", [])[0][0]
    assert rows == 2  # row 0, and the writer's
    assert store.count(ListQuery("oai_dc")) == 4
    assert_exact(store)


def test_a_list_from_its_beginning_reads_the_kept_count(store: Store, clock: Clock) -> None:
    """A list without `from` is sized from the kept count, not by counting its rows."""
    store.write([make_record(str(i)) for i in range(3)])
    with store.engine.begin() as conn:  # a count that is not the rows' own shows where it comes from
        conn.exec_driver_sql("UPDATE list_counts SET n = n + 100 WHERE prefix = 'oai_dc' AND spec = ''")
    assert store.count(ListQuery("oai_dc")) == 103
    assert store.count(ListQuery("oai_dc", start=0)) == 3  # a range with `from` is counted in the index


def test_a_list_up_to_a_date_long_past_is_counted_up_to_it(
    store: Store, clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With many rows stamped after a list's end (an `until` long past), the list is counted
    in the index up to its end rather than the many rows after it taken off the kept count."""
    monkeypatch.setattr(list_counts, "FEW", 2)
    store.write([make_record("old", sets=("s",))])
    end = clock.now
    for i in range(3):
        clock.tick()
        store.write([make_record(str(i), sets=("s",))])
    with store.engine.begin() as conn:  # a kept count that is not the rows' own shows which is read
        conn.exec_driver_sql("UPDATE list_counts SET n = n + 100")
    for spec in (None, "s"):
        assert store.count(ListQuery("oai_dc", set_spec=spec, end=end)) == 1  # 3 after it: counted
        assert store.count(ListQuery("oai_dc", set_spec=spec, end=end + 2)) == 103  # 1 after it: kept
