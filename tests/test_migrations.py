"""The store's schema is numbered: a new store gets the latest number, an older one is migrated
in place when opened, and one written by a newer version is refused in one line."""

from __future__ import annotations

import logging
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import sqlalchemy as sa
from conftest import Clock, engine_of, make_record, pg_schema

from oaiserver.records import Record
from oaiserver.store import (
    MIGRATIONS,
    Migration,
    Store,
    StoreTooNew,
    SweepState,
    add_partner_sets_in,
    claim_due,
    due_slots,
    finish_run,
    harvest_history,
    harvest_state_of,
    learn,
    meta,
    name_partner_sets,
    native_records,
    open_store,
    quarantine_in,
    quarantined,
    save_checkpoint_in,
    save_sweep_in,
    schema,
    schema_version,
    start_run,
    sweep_states,
)
from oaiserver.store.schema import LZ4_COLUMNS, _lz4_available

LATEST = MIGRATIONS[-1][0]


def version_rows(url: str) -> list[int]:
    with engine_of(url) as engine, engine.connect() as conn:
        return list(conn.execute(sa.select(schema_version.c.version)).scalars())


def table_names(url: str) -> set[str]:
    with engine_of(url) as engine:
        return set(sa.inspect(engine).get_table_names())


def opened(url: str, migrations: tuple[tuple[int, Migration], ...] = MIGRATIONS) -> None:
    Store(url, migrations=migrations).close()


def with_next(step: Migration) -> tuple[tuple[int, Migration], ...]:
    """This version's migrations and one more: the code of a version that changes the schema."""
    return (*MIGRATIONS, (LATEST + 1, step))


def recording(calls: list[int], number: int, then: Migration | None = None) -> Migration:
    def step(conn: sa.Connection) -> None:
        calls.append(number)
        if then is not None:
            then(conn)

    return step


def migrated_from(store_url: str, clock: Clock, *, version: int, without: str, records: list[Record]) -> Store:
    """A store holding `records` as migration `version` left it (the table `without` not made
    yet), opened again: migrated to the latest number."""
    store = Store(store_url, clock=clock)
    store.write(records)
    store.close()
    with engine_of(store_url) as engine, engine.begin() as conn:
        conn.exec_driver_sql(f"DROP TABLE {without}")
        conn.execute(schema_version.update().values(version=version))
    assert without not in table_names(store_url)
    migrated = Store(store_url, clock=clock)
    assert version_rows(store_url) == [LATEST]
    return migrated


def add_probe_table(conn: sa.Connection) -> None:
    conn.exec_driver_sql("CREATE TABLE probe (n INTEGER)")


def test_migrations_are_numbered_from_1_without_gaps() -> None:
    assert [number for number, _ in MIGRATIONS] == list(range(1, len(MIGRATIONS) + 1))


def test_a_new_store_has_every_table_and_the_latest_number(store_url: str, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="oaiserver.store"):
        opened(store_url)
    assert caplog.text == "", "creating a store is not news"
    assert version_rows(store_url) == [LATEST]
    assert set(meta.tables) <= table_names(store_url)


def test_a_new_store_is_made_by_migration_1_alone(store_url: str) -> None:
    """The tables describe the latest schema: a new store is made from them, stamped with the
    last number, and the later steps (written for stores made before them) do not run."""
    calls: list[int] = []
    steps = ((1, recording(calls, 1, MIGRATIONS[0][1])), (2, recording(calls, 2)), (3, recording(calls, 3)))
    opened(store_url, steps)
    assert calls == [1]
    assert version_rows(store_url) == [3]


def test_opening_a_store_again_does_nothing(store_url: str) -> None:
    calls: list[int] = []
    steps = ((1, recording(calls, 1, MIGRATIONS[0][1])), (2, recording(calls, 2)))
    opened(store_url, steps)
    opened(store_url, steps)
    opened(store_url, steps)
    assert calls == [1]
    assert version_rows(store_url) == [2]


def test_a_store_at_the_previous_number_is_migrated_and_keeps_its_records(
    store_url: str, clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    store = Store(store_url, clock=clock)
    store.write([make_record("1"), make_record("2")])
    store.close()
    assert version_rows(store_url) == [LATEST]
    calls: list[int] = []
    newer = with_next(recording(calls, LATEST + 1, add_probe_table))
    with caplog.at_level(logging.INFO, logger="oaiserver.store"):
        migrated = Store(store_url, clock=clock, migrations=newer)
    try:
        assert f"migrating the store's schema from {LATEST} to {LATEST + 1}" in caplog.text
        assert calls == [LATEST + 1]
        assert version_rows(store_url) == [LATEST + 1]
        assert "probe" in table_names(store_url)
        assert migrated.counts() == {"live": 2, "deleted": 0}
    finally:
        migrated.close()
    opened(store_url, newer)
    assert calls == [LATEST + 1], "a second opening finds nothing to do"


def test_a_migration_that_fails_leaves_the_store_as_it_was(store_url: str) -> None:
    """The steps and the new number commit together, or not at all."""

    def half_done(conn: sa.Connection) -> None:
        add_probe_table(conn)
        raise RuntimeError("the step fails after changing the schema")

    opened(store_url)
    with pytest.raises(RuntimeError, match="the step fails"):
        opened(store_url, with_next(half_done))
    assert version_rows(store_url) == [LATEST]
    assert "probe" not in table_names(store_url)


def test_a_store_written_by_a_newer_version_is_refused_and_left_alone(store_url: str) -> None:
    opened(store_url, with_next(add_probe_table))
    expected = f"the store was written by a newer version (schema {LATEST + 1}); this version knows up to {LATEST}"
    with pytest.raises(StoreTooNew) as refused:
        open_store(store_url)
    assert str(refused.value) == expected
    assert version_rows(store_url) == [LATEST + 1]


NEWER_STORE_COMMANDS: dict[str, Callable[[Path], list[str]]] = {
    "oaiserver stats": lambda config: ["oaiserver", "-c", str(config), "stats"],
    "oaiserver serve": lambda config: ["oaiserver", "-c", str(config), "serve", "--bind", "127.0.0.1:0"],
    "harvester status": lambda config: ["harvester", "-c", str(config), "status"],
}


@pytest.mark.parametrize("command", list(NEWER_STORE_COMMANDS))
def test_the_commands_refuse_a_newer_store_in_one_line(tmp_path: Path, command: str) -> None:
    url = f"sqlite:///{tmp_path / 'store.sqlite3'}"
    opened(url, with_next(add_probe_table))
    config = tmp_path / "config.yaml"
    config.write_text(f"storage:\n  url: {url}\n")
    program, *args = NEWER_STORE_COMMANDS[command](config)
    done = subprocess.run(
        [sys.executable, "-m", program, *args], capture_output=True, text=True, timeout=120, cwd=tmp_path
    )
    assert done.returncode == 1, done.stderr
    lines = done.stderr.splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].endswith(
        f"the store was written by a newer version (schema {LATEST + 1}); this version knows up to {LATEST}"
    )
    assert version_rows(url) == [LATEST + 1]


def two() -> list[Record]:
    return [make_record("1"), make_record("2")]


def telegrams() -> list[Record]:
    return [make_record(str(i), f"Telegram number {i}", creator="Gromyko, Andrei") for i in range(2500)]


def test_a_store_at_version_1_gets_a_search_index_of_its_records(store_url: str, clock: Clock) -> None:
    """Migration 2 (the search index): a store made before it, with records, is upgraded on
    opening and its records are found by their words."""
    migrated = migrated_from(store_url, clock, version=1, without="records_search", records=telegrams())
    try:
        assert migrated.search_count("gromyko", up_to=5000) == 2500  # more than one batch of the fill
        assert [h.identifier for h in migrated.search("telegram 1234")] == ["oai:test.example.org:1234"]
    finally:
        migrated.close()


def test_a_store_at_version_2_gets_an_empty_harvest_quarantine(store_url: str, clock: Clock) -> None:
    """Migration 3 (the harvest quarantine): a store made before it keeps its records and its
    harvest history, and gets the table, empty and usable."""
    migrated = migrated_from(store_url, clock, version=2, without="harvest_quarantine", records=[make_record("1")])
    try:
        assert quarantined(migrated, "p") == [] and migrated.counts() == {"live": 1, "deleted": 0}
        with migrated.writing() as (conn, _):
            quarantine_in(conn, "p", [("oai:p:1", "broken"), ("oai:p:2", "refused")], 1000)
        assert [(q.identifier, q.reason, q.tries) for q in quarantined(migrated, "p")] == [
            ("oai:p:1", "broken", 1),
            ("oai:p:2", "refused", 1),
        ]
    finally:
        migrated.close()


def test_a_store_at_version_3_gets_the_schedulers_due_times(store_url: str, clock: Clock) -> None:
    """Migration 4 (harvest_due): a store made before it is upgraded on opening, keeps its
    records, and its partners are due when a scheduler first fires for them."""
    migrated = migrated_from(store_url, clock, version=3, without="harvest_due", records=[make_record("1")])
    try:
        assert migrated.counts() == {"live": 1, "deleted": 0}
        assert due_slots(migrated) == {}
        assert claim_due(migrated, "p", "scheduler", now=1_000, ttl=60) == 1_000
    finally:
        migrated.close()


def test_a_store_at_version_4_gets_the_deletion_sweeps_table(store_url: str, clock: Clock) -> None:
    """Migration 5 (harvest_sweeps): a store made before it keeps its records and can hold a
    partner's deletion sweep once opened."""
    migrated = migrated_from(
        store_url, clock, version=4, without="harvest_sweeps", records=[make_record("1"), make_record("2")]
    )
    try:
        with migrated.writing() as (conn, _):
            save_sweep_in(conn, "p", SweepState(last_swept=clock.now))
        assert sweep_states(migrated) == {"p": SweepState(last_swept=clock.now)}
        assert migrated.counts() == {"live": 2, "deleted": 0}
    finally:
        migrated.close()


def test_a_store_at_version_5_gets_what_the_harvester_learned(store_url: str, clock: Clock) -> None:
    """Migration 6 (harvest_state.learned): a store made before it keeps its harvest state and can
    remember what a run learned of a partner once opened."""
    store = Store(store_url, clock=clock)
    with store.writing() as (conn, _):
        save_checkpoint_in(conn, "p", {"token": "t1"}, clock.now)
    store.close()
    # the store as version 5 left it: no learned column
    with engine_of(store_url) as engine, engine.begin() as conn:
        conn.exec_driver_sql("ALTER TABLE harvest_state DROP COLUMN learned")
        conn.execute(schema_version.update().values(version=5))
    migrated = Store(store_url, clock=clock)
    try:
        assert version_rows(store_url) == [LATEST]
        assert harvest_state_of(migrated, "p").checkpoint == {"token": "t1"}
        learn(migrated, "p", {"granularity": "days"}, clock.now)
        assert harvest_state_of(migrated, "p").learned == {"granularity": "days"}
    finally:
        migrated.close()


def test_a_store_at_version_6_gets_the_partners_sets_table(store_url: str, clock: Clock) -> None:
    """Migration 7 (partner_sets): a store made before it keeps its records and can hold a
    partner's sets once opened (empty until the partner's next harvest)."""
    migrated = migrated_from(
        store_url, clock, version=6, without="partner_sets", records=[make_record("1"), make_record("2")]
    )
    try:
        assert migrated.harvested_sets() == []
        with migrated.writing() as (conn, _):
            add_partner_sets_in(conn, "p", ["partners:p:a"])
        assert name_partner_sets(migrated, "p", {"partners:p:a": "A", "partners:p:b": "B"}) == 1
        assert migrated.harvested_sets() == [("p", "partners:p:a", "A")]
        assert migrated.counts() == {"live": 2, "deleted": 0}
    finally:
        migrated.close()


def test_a_store_at_version_7_keeps_each_partners_harvest_state_under_its_format(store_url: str, clock: Clock) -> None:
    """Migration 8 (harvest per format): a partner's state, kept per partner before, is its one
    format's afterwards (the prefix its window key names), so its next run goes on from there;
    its past runs keep their lines, with no format; the table of further formats is there."""
    store = Store(store_url, clock=clock)
    run = start_run(store, "p", "me", started=1_700_000_000, from_date=None, resumed=False)
    finish_run(store, run, "p", finished=1_700_000_060, outcome="success", reason=None, counts={})
    store.close()
    # the store as version 7 left it: harvest_state per partner, runs without a format
    with engine_of(store_url) as engine, engine.begin() as conn:
        conn.exec_driver_sql("DROP TABLE harvest_state")
        conn.exec_driver_sql("DROP TABLE native_formats")
        conn.exec_driver_sql("ALTER TABLE harvest_runs DROP COLUMN format")
        conn.exec_driver_sql(
            "CREATE TABLE harvest_state (partner VARCHAR(200) PRIMARY KEY, next_from VARCHAR(40),"
            " next_from_key TEXT, checkpoint TEXT, updated BIGINT NOT NULL, learned TEXT)"
        )
        conn.exec_driver_sql(
            "INSERT INTO harvest_state VALUES ('p', '2024-05-01T12:00:00Z', '[\"mods\", [], true]', NULL, 1, NULL),"
            ' (\'q\', NULL, NULL, \'{"key": "[\\"marcxml\\", [], true]", "from": null}\', 2, NULL),'
            " ('r', NULL, NULL, NULL, 3, NULL)"
        )
        conn.execute(schema_version.update().values(version=7))
    migrated = Store(store_url, clock=clock)
    try:
        assert version_rows(store_url) == [LATEST]
        assert harvest_state_of(migrated, "p", "mods").next_from == "2024-05-01T12:00:00Z"
        assert harvest_state_of(migrated, "p", "oai_dc").next_from is None
        assert harvest_state_of(migrated, "q", "marcxml").checkpoint == {"key": '["marcxml", [], true]', "from": None}
        assert harvest_state_of(migrated, "r", "oai_dc").format == "oai_dc"
        assert [(r.partner, r.outcome, r.format) for r in harvest_history(migrated, "p")] == [("p", "success", None)]
        assert native_records(migrated, "p", "marcxml") == {}
    finally:
        migrated.close()


def compressions(url: str) -> dict[str, str]:
    """The compression each of the large columns (`LZ4_COLUMNS`) is declared with, by
    "table.column" (pg_attribute.attcompression: 'l' lz4, 'p' pglz, '' the server's default)."""
    with engine_of(url) as engine, engine.connect() as conn:
        return {
            f"{table}.{column}": conn.exec_driver_sql(
                "SELECT attcompression FROM pg_attribute WHERE attrelid = %s::regclass AND attname = %s",
                (table, column),
            ).scalar_one()
            for table, columns in LZ4_COLUMNS.items()
            for column in columns
        }


def lz4_on_server(url: str) -> bool:
    with engine_of(url) as engine, engine.connect() as conn:
        return _lz4_available(conn)


def stored_compressions(url: str) -> dict[str, str | None]:
    """How each record's served bytes (formats.record) are stored: 'lz4', 'pglz', or None (not
    compressed), by identifier."""
    with engine_of(url) as engine, engine.connect() as conn:
        rows = conn.exec_driver_sql(
            "SELECT r.identifier, pg_column_compression(f.record) FROM records r JOIN formats f ON f.record_id = r.id"
        )
        return {identifier: method for identifier, method in rows}


def set_compression(url: str, method: str, *, version: int | None = None) -> None:
    """Declare the large columns with `method` (as a store before migration 11 had them: 'default'),
    and stamp the store `version`."""
    with engine_of(url) as engine, engine.begin() as conn:
        for table, columns in LZ4_COLUMNS.items():
            for column in columns:
                conn.exec_driver_sql(f"ALTER TABLE {table} ALTER COLUMN {column} SET COMPRESSION {method}")
        if version is not None:
            conn.execute(schema_version.update().values(version=version))


def large(local: str) -> Record:
    """A record whose row PostgreSQL compresses (well over 2 kB, and compressible)."""
    return make_record(local, description=" ".join(f"Telegram {i} from Moscow to Berlin." for i in range(500)))


def test_a_new_postgresql_store_compresses_its_large_columns_with_lz4() -> None:
    with pg_schema() as url:
        if not lz4_on_server(url):
            pytest.skip("this PostgreSQL was built without lz4")
        opened(url)
        assert compressions(url) == dict.fromkeys(compressions(url), "l")
        assert len(compressions(url)) == 10
        store = Store(url)
        try:
            store.write([large("1")])
        finally:
            store.close()
        assert stored_compressions(url) == {"oai:test.example.org:1": "lz4"}


def test_a_postgresql_store_at_version_10_compresses_with_lz4_what_is_written_after(clock: Clock) -> None:
    """Migration 11: the columns are declared lz4; the values stored already keep pglz (nothing is
    rewritten), and those written afterwards are lz4."""
    with pg_schema() as url:
        if not lz4_on_server(url):
            pytest.skip("this PostgreSQL was built without lz4")
        opened(url)
        set_compression(url, "pglz", version=10)  # as a store before it (whatever the server's default)
        old = Store(url, clock=clock, migrations=MIGRATIONS[:10])
        try:
            old.write([large("1")])
        finally:
            old.close()
        assert stored_compressions(url) == {"oai:test.example.org:1": "pglz"}
        migrated = Store(url, clock=clock)
        try:
            assert version_rows(url) == [11]
            assert compressions(url) == dict.fromkeys(compressions(url), "l")
            clock.tick()
            migrated.write([large("2")])
            assert migrated.counts() == {"live": 2, "deleted": 0}
        finally:
            migrated.close()
        assert stored_compressions(url) == {"oai:test.example.org:1": "pglz", "oai:test.example.org:2": "lz4"}


def test_on_a_postgresql_without_lz4_migration_11_only_records_its_number(
    clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pg_schema() as url:
        opened(url)
        set_compression(url, "default", version=10)
        monkeypatch.setattr(schema, "_lz4_available", lambda conn: False)
        migrated = Store(url, clock=clock)
        try:
            migrated.write([large("1")])
        finally:
            migrated.close()
        assert version_rows(url) == [11]
        assert compressions(url) == dict.fromkeys(compressions(url), "")
        monkeypatch.undo()
        opened(url)
        assert compressions(url) == dict.fromkeys(compressions(url), ""), "an opening at 11 changes nothing"


def test_a_sqlite_store_at_version_10_is_migrated_to_11_unchanged(tmp_path: Path, clock: Clock) -> None:
    url = f"sqlite:///{tmp_path / 'store.sqlite3'}"
    store = Store(url, clock=clock, migrations=MIGRATIONS[:10])
    store.write([large("1")])
    store.close()

    def sqlite_schema() -> list[tuple[str, str]]:
        engine = sa.create_engine(url)
        try:
            with engine.connect() as conn:
                return [tuple(row) for row in conn.exec_driver_sql("SELECT name, sql FROM sqlite_master ORDER BY name")]
        finally:
            engine.dispose()

    before = sqlite_schema()
    migrated = Store(url, clock=clock)
    try:
        assert version_rows(url) == [11]
        assert migrated.counts() == {"live": 1, "deleted": 0}
    finally:
        migrated.close()
    assert sqlite_schema() == before
