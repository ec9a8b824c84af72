"""The record store: the one place records live, and the only module that writes SQL.

SQLAlchemy Core over SQLite (WAL, the embedded default) or PostgreSQL (for scale); the same
code serves both. Two rules shape it:

* Datestamps mean change. A write whose exposed content (metadata fragments, sets, deleted
  flag) hashes the same as what is stored changes nothing.
* A list frozen at time T never misses a write. Writers take a shared "clock" lock and stamp
  their changes only after acquiring it; `freeze()` takes the lock exclusively, so every
  write stamped before T has committed when it returns, and every later write is stamped at
  T or after. Lists run with `until = T - 1`.
"""

from __future__ import annotations

import errno
import gc
import itertools
import json
import logging
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, NamedTuple, overload

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from oaiserver.fragments import header_xml, metadata_of, record_xml, with_header
from oaiserver.records import (
    DCValue,
    Header,
    ListQuery,  # the protocol's word for a list, defined in records; importable from here too
    Record,
    Rendered,
    identifier_problem,
    shown_identifier,
)

# Row preparation lives in oaiserver.rows (the harvest worker uses it without SQLAlchemy); its
# names stay importable from here.
from oaiserver.rows import _FIELD, _VALUE, Prepared, content_hash, prepare
from oaiserver.rows import ancestors as ancestors
from oaiserver.rows import encode_dc as encode_dc

log = logging.getLogger(__name__)

meta = sa.MetaData()

records = sa.Table(
    "records",
    meta,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("identifier", sa.String(1024), nullable=False, unique=True),
    sa.Column("datestamp", sa.BigInteger, nullable=False),
    sa.Column("deleted", sa.Boolean, nullable=False, default=False),
    sa.Column("source", sa.String(200), nullable=False, default="local"),
    sa.Column("setspecs", sa.Text, nullable=False, default=""),
    sa.Column("content_hash", sa.String(64), nullable=False),
    sa.Column("dc", sa.Text, nullable=False, default=""),  # see encode_dc
    sa.Column("fulltext", sa.Text),
    sa.Column("raw_xml", sa.Text),
    sa.Column("provenance", sa.Text),
    sa.Column("about", sa.Text),  # pre-rendered <about> payload (provenance of harvested records)
    sa.Column("header_xml", sa.Text, nullable=False, default=""),  # pre-rendered <header>
    sa.Index("ix_records_datestamp_identifier", "datestamp", "identifier"),
    sa.Index("ix_records_source", "source"),
)

formats = sa.Table(
    "formats",
    meta,
    sa.Column("record_id", sa.Integer, sa.ForeignKey("records.id", ondelete="CASCADE"), primary_key=True),
    sa.Column("prefix", sa.String(100), primary_key=True),
    # The whole <record> element as served (header, metadata, about), UTF-8: a list page is
    # these bytes joined, with nothing decoded, parsed or re-encoded on the way out. A deleted
    # record's rows keep the formats it had, with the header alone. The metadata fragment is
    # kept only here (see `_metadata`).
    sa.Column("record", sa.LargeBinary, nullable=False),
    # The record's datestamp again: a list's completeListSize is then counted on one index.
    sa.Column("datestamp", sa.BigInteger, nullable=False),
    sa.Index("ix_formats_prefix_datestamp", "prefix", "datestamp"),
)

set_members = sa.Table(
    "set_members",
    meta,
    sa.Column("spec", sa.String(400), primary_key=True),
    sa.Column("datestamp", sa.BigInteger, primary_key=True),
    sa.Column("identifier", sa.String(1024), primary_key=True),
    sa.Column("record_id", sa.Integer, sa.ForeignKey("records.id", ondelete="CASCADE"), nullable=False),
    sa.Index("ix_set_members_record", "record_id"),
    # SQLite: the rows are the primary key's index itself, one B-tree fewer to write.
    sqlite_with_rowid=False,
)

settings = sa.Table(
    "settings",
    meta,
    sa.Column("key", sa.String(100), primary_key=True),
    sa.Column("value", sa.Text, nullable=False),
)

# The number of the last migration the store has (one row). A table of its own, not a row of
# `settings`: an export carries the settings into another store, and a schema is the store's own.
schema_version = sa.Table(
    "schema_version",
    meta,
    sa.Column("version", sa.Integer, nullable=False),
)

PG_CLOCK_LOCK = 0x0A1_C10C  # advisory lock key for the write clock
PG_SCHEMA_LOCK = 0x0A1_5C4E  # advisory lock key for creating and migrating the schema
_ROW12 = "(" + ", ".join(["?"] * 12) + ")"


def _marks(n: int) -> str:
    return ", ".join(["?"] * n)


@dataclass
class WriteResult:
    added: int = 0
    changed: int = 0
    unchanged: int = 0
    rejected: list[tuple[str, str]] = field(default_factory=list)  # (identifier, why it cannot be one): not stored
    refused: list[tuple[str, str]] = field(default_factory=list)  # (identifier, source holding it)

    def __iadd__(self, other: WriteResult) -> WriteResult:
        self.added += other.added
        self.changed += other.changed
        self.unchanged += other.unchanged
        self.rejected += other.rejected
        self.refused += other.refused
        return self


def _sqlite_path(url: sa.URL) -> None:
    if url.database and url.database != ":memory:" and not url.database.startswith("file:"):
        folder = Path(url.database).parent
        if folder.exists() and not folder.is_dir():
            raise NotADirectoryError(errno.ENOTDIR, "not a folder", str(folder))
        folder.mkdir(parents=True, exist_ok=True)


class StoreUnavailable(Exception):
    """The store cannot be opened (a folder that cannot be written, a file that is not a
    database, a server that does not answer): the message says which store and why, on one line."""


class StoreNotOpen(StoreUnavailable):
    """A store named rightly that cannot be opened now (a server down, a database or folder not
    there yet): a server waits for it, answering 503, where a wrong URL stops it."""


class StoreTooNew(StoreUnavailable):
    """The store has a schema newer than this version knows: it is left as it is, unread."""


Migration = Callable[[Connection], None]


def _schema_from_metadata(conn: Connection) -> None:
    """Migration 1: the tables and indexes this module declares (those not there yet)."""
    meta.create_all(conn)


# Schema changes, numbered, applied in order. A new store is made from the tables above, which
# always describe the latest schema, and gets the last number; a store at an earlier number gets
# each later step. Changing the schema is changing the tables above *and* appending the step
# that brings a store of the previous number to them (never "inspect the columns and patch").
MIGRATIONS: tuple[tuple[int, Migration], ...] = ((1, _schema_from_metadata),)


def open_store(url: str, **options: Any) -> Store:
    """`Store(url, ...)`, or StoreUnavailable with the cause in words (the password hidden)."""
    try:
        shown = sa.make_url(url).render_as_string(hide_password=True)
    except (sa.exc.ArgumentError, ValueError):
        raise StoreUnavailable(f"{url!r} is not a database URL") from None
    try:
        return Store(url, **options)
    except (OSError, ImportError, sa.exc.SQLAlchemyError) as exc:
        raise StoreNotOpen(f"cannot open {shown}: {_cause(exc)}") from exc


def _cause(exc: BaseException) -> str:
    """An error's own words, on one line: the driver's message, or the system's."""
    if isinstance(exc, sa.exc.DBAPIError) and exc.orig is not None:
        text = str(exc.orig)
    elif isinstance(exc, OSError) and exc.strerror:
        text = f"{exc.strerror}: {exc.filename}" if exc.filename else exc.strerror
    else:
        text = str(exc)
    lines = text.strip().splitlines()
    return " ".join(lines[0].split()) if lines else type(exc).__name__


# The sqlite3 driver binds str, int and float at once, but looks every other value up as a
# candidate for adaptation, by attribute lookups that fail (an exception made and dropped each
# time): a write binds a None, a bool or bytes five times a record or more. Adapters that
# return the value as it binds anyway make that one dictionary lookup (3 % of the instructions
# of a bulk load). Registered only where the process has no adapter of its own for the type.
_SQLITE_AS_IS: dict[type, Callable[[Any], Any]] = {type(None): {}.get, bool: int, bytes: bytes}  # as bound


def _sqlite_binds_as_is() -> None:
    for kind, same in _SQLITE_AS_IS.items():
        if (kind, sqlite3.PrepareProtocol) not in sqlite3.adapters:
            sqlite3.register_adapter(kind, same)


def _switch_to_wal(cur: sqlite3.Cursor, attempts: int = 100) -> None:
    """PRAGMA journal_mode=WAL, waited for: on a new file, the switch needs a lock that SQLite
    refuses at once (no busy timeout) while another process (a second gunicorn worker) is
    creating the tables, for milliseconds."""
    for attempt in range(attempts):
        try:
            cur.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or attempt == attempts - 1:
                raise
            time.sleep(0.05)


def make_engine(url: str) -> Engine:
    parsed = sa.make_url(url)
    if parsed.get_backend_name() == "sqlite":
        _sqlite_path(parsed)
        _sqlite_binds_as_is()
        engine = sa.create_engine(parsed, connect_args={"timeout": 60, "check_same_thread": False})

        @sa.event.listens_for(engine, "connect")
        def _connect(dbapi_conn: Any, _record: Any) -> None:
            dbapi_conn.isolation_level = None  # we issue BEGIN ourselves (below)
            cur = dbapi_conn.cursor()
            # 16 KiB pages (new files only): a stored record fits a page with room to spare, and a
            # list page reads about 40 % less CPU than with 4 KiB pages (bench/README.md).
            cur.execute("PRAGMA page_size=16384")
            _switch_to_wal(cur)
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA busy_timeout=60000")
            cur.close()

        @sa.event.listens_for(engine, "begin")
        def _begin(conn: Connection) -> None:
            immediate = conn.get_execution_options().get("sqlite_immediate")
            conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")

        return engine
    if parsed.get_backend_name() == "postgresql" and parsed.drivername == "postgresql":
        parsed = parsed.set(drivername="postgresql+psycopg")
    return sa.create_engine(parsed, pool_pre_ping=True)


_collector_lock = threading.Lock()
_collector = {"pauses": 0, "was_on": False}  # writes under way with the collector held off


@contextmanager
def collector_paused() -> Iterator[None]:
    """Python's cyclic garbage collector held off while a batch is written.

    A write allocates tens of thousands of tuples and strings that reference counting frees,
    and none of them form cycles; yet the allocations trigger collections that walk every
    object alive, such as the caller's batch of records (in a bulk load, 8 of 44 us of CPU a
    record). Held off for one batch at a time (tens of milliseconds), counted across threads,
    and only if the collector was on: cycles made meanwhile are collected once it is back. The
    switch is the process's: while writers overlap (harvests of several partners, a write
    waiting on PostgreSQL's row locks) it stays off for all threads until the last one ends.
    """
    with _collector_lock:
        if _collector["pauses"] == 0:
            _collector["was_on"] = gc.isenabled()
            gc.disable()
        _collector["pauses"] += 1
    try:
        yield
    finally:
        with _collector_lock:
            _collector["pauses"] -= 1
            if _collector["pauses"] == 0 and _collector["was_on"]:
                gc.enable()


class Store:
    """Records and their state, over one SQLAlchemy engine."""

    def __init__(
        self,
        url: str,
        *,
        create: bool = True,
        clock: Callable[[], float] | None = None,
        migrations: Sequence[tuple[int, Migration]] = MIGRATIONS,
    ) -> None:
        """`create`: make or migrate the schema (see `MIGRATIONS`); StoreTooNew if the store's
        is newer than `migrations` know."""
        self.url = url
        self.clock = clock
        self.engine = make_engine(url)
        self.is_sqlite = self.engine.dialect.name == "sqlite"
        self._dbapi_error: type[Exception] = self.engine.dialect.loaded_dbapi.Error
        if create:
            try:
                self._migrate(migrations)
            except BaseException:  # refused or failed: no connection is left open behind
                self.engine.dispose()
                raise

    def _migrate(self, migrations: Sequence[tuple[int, Migration]]) -> None:
        """Bring the schema to the last of `migrations`, in one transaction.

        Under the schema lock, so that processes opening one store at once (gunicorn's workers)
        take turns and the later ones find the work done: on SQLite BEGIN IMMEDIATE (a deferred
        transaction that reads the catalogue then writes is refused at once, "database is
        locked", while another one writes), on PostgreSQL an advisory lock.
        """
        latest = migrations[-1][0]
        with self.engine.connect().execution_options(sqlite_immediate=True) as conn, conn.begin():
            if not self.is_sqlite:
                conn.exec_driver_sql(f"SELECT pg_advisory_xact_lock({PG_SCHEMA_LOCK})")
            schema_version.create(conn, checkfirst=True)
            current = conn.execute(sa.select(sa.func.max(schema_version.c.version))).scalar() or 0
            if current > latest:
                raise StoreTooNew(
                    f"the store was written by a newer version (schema {current}); this version knows up to {latest}"
                )
            if current == latest:
                return
            # A new store is made whole by migration 1 (the tables above are the latest schema);
            # an older one gets the steps it lacks.
            steps = migrations[:1] if current == 0 else [m for m in migrations if m[0] > current]
            if current:
                log.info("migrating the store's schema from %d to %d", current, latest)
            for _, step in steps:
                step(conn)
            conn.execute(schema_version.delete())
            conn.execute(schema_version.insert().values(version=latest))

    def _q(self, sql: str) -> str:
        """SQL written with `?` placeholders, in the driver's own style (psycopg: `%s`)."""
        return sql if self.is_sqlite else sql.replace("?", "%s")

    def _fetch(self, sql: str, params: Sequence[Any]) -> list[Any]:
        """A read straight on the driver: the hot paths (list pages, GetRecord) skip
        SQLAlchemy's statement and row machinery, which cost ten times the query itself.
        Driver errors still surface as SQLAlchemy's DBAPIError (the web layer answers 503)."""
        sql = self._q(sql)
        try:
            conn = self.engine.raw_connection()  # from the pool, pre-pinged on PostgreSQL
        except self._dbapi_error as exc:  # the pool hands connect errors on unwrapped
            raise sa.exc.DBAPIError.instance(sql, params, exc, self._dbapi_error) from exc
        try:
            cur = conn.cursor()
            cur.execute(sql, params)
            rows = list(cur.fetchall())
            cur.close()
            return rows
        except self._dbapi_error as exc:
            conn.invalidate(exc)  # a broken connection must not go back to the pool
            raise sa.exc.DBAPIError.instance(sql, params, exc, self._dbapi_error) from exc
        finally:
            conn.close()  # back to the pool, rolled back

    def close(self) -> None:
        self.engine.dispose()

    def ping(self) -> None:
        """Raise if the database cannot be reached."""
        with self.engine.connect() as conn:
            conn.exec_driver_sql("SELECT 1")

    # ---- the write clock ------------------------------------------------------------------

    def _now(self, conn: Connection) -> int:
        if self.clock is not None:
            return int(self.clock())
        if self.is_sqlite:
            return int(time.time())
        return int(conn.exec_driver_sql("SELECT floor(extract(epoch from clock_timestamp()))").scalar_one())

    @contextmanager
    def writing(self) -> Iterator[tuple[Connection, int]]:
        """A write transaction and the datestamp its changes get.

        The stamp is taken after the clock lock, and is never below the newest datestamp
        stored, so a clock that steps back cannot reorder history.
        """
        with self.engine.connect().execution_options(sqlite_immediate=True) as conn, conn.begin():
            if not self.is_sqlite:
                conn.exec_driver_sql(f"SELECT pg_advisory_xact_lock_shared({PG_CLOCK_LOCK})")
            newest = conn.execute(sa.select(sa.func.max(records.c.datestamp))).scalar()
            yield conn, max(self._now(conn), newest or 0)

    @contextmanager
    def snapshot(self) -> Iterator[Connection]:
        """One read transaction that sees the store as it was at its first read, whatever
        commits meanwhile: an export of a live store is consistent (records, settings and
        harvest state from one moment). SQLite's WAL keeps the snapshot of a read
        transaction; PostgreSQL needs REPEATABLE READ for it."""
        conn = self.engine.connect()
        if not self.is_sqlite:
            conn = conn.execution_options(isolation_level="REPEATABLE READ")
        with conn, conn.begin():
            yield conn

    def freeze(self) -> int:
        """Now, once every write stamped before now has committed (see the module doc)."""
        with self.engine.connect().execution_options(sqlite_immediate=True) as conn, conn.begin():
            if not self.is_sqlite:
                conn.exec_driver_sql(f"SELECT pg_advisory_xact_lock({PG_CLOCK_LOCK})")
            return self._now(conn)

    # ---- writes ---------------------------------------------------------------------------

    def write(self, items: Iterable[Record], *, batch: int = 500, keep_datestamps: bool = False) -> WriteResult:
        """Insert or update records; unchanged content keeps its datestamp.

        `keep_datestamps` is for loading a dump or a data set: records that carry a
        datestamp keep it instead of being stamped now.
        """
        total = WriteResult()
        source = iter(items)
        while chunk := list(itertools.islice(source, max(batch, 1))):
            total += self._write_batch(chunk, keep_datestamps)
        return total

    def write_in(
        self,
        conn: Connection,
        stamp: int,
        chunk: Sequence[Record | Prepared],
        *,
        keep_datestamps: bool = False,
        guard_source: bool = False,
    ) -> WriteResult:
        """Write records (or records already `prepare`d) inside a transaction from `writing()`
        (the harvester adds its state).

        With `guard_source`, a record held under another source (a local record, or another
        partner's) is refused and reported in `refused`, never overwritten.

        Straight on the driver, a statement per table per batch: this is the bulk path too.
        Inserts skip identifiers that appeared since they were looked up (a concurrent writer
        on PostgreSQL, where writers run side by side); those go round again as updates.
        """
        with collector_paused():
            return self._write_in(conn, stamp, chunk, keep_datestamps, guard_source)

    def _write_in(
        self,
        conn: Connection,
        stamp: int,
        chunk: Sequence[Record | Prepared],
        keep_datestamps: bool,
        guard_source: bool,
    ) -> WriteResult:
        result = WriteResult()
        pending: dict[str, Prepared] = {}
        for item in (r if isinstance(r, Prepared) else prepare(r) for r in chunk):
            record = item.record
            problem = identifier_problem(record.identifier)
            if problem is None:
                pending[record.identifier] = item
            else:
                # It could be listed but never fetched (by GetRecord or its landing page): keep it out.
                log.warning("not stored: %s: %s", shown_identifier(record.identifier), problem)
                result.rejected.append((record.identifier, problem))
        cur = conn.connection.cursor()
        try:
            for _ in range(3):
                if not pending:
                    break
                pending = self._write_rows(cur, stamp, pending, result, keep_datestamps, guard_source)
        except self._dbapi_error as exc:
            raise sa.exc.DBAPIError.instance("write", None, exc, self._dbapi_error) from exc
        finally:
            cur.close()
        if pending:  # pragma: no cover - would need three concurrent inserts of one identifier
            raise RuntimeError(f"could not settle concurrent writes of {sorted(pending)[:3]}")
        return result

    def _guarded(
        self, cur: Any, sql: str, rows: list[tuple[Any, ...]], records_by_row_id: dict[int, Prepared] | None
    ) -> tuple[list[tuple[Any, ...]], dict[str, Prepared]]:
        """Run an UPDATE per row (each ends with the row id). With `records_by_row_id` (guarding
        sources), a row whose source changed since it was read is left alone: returns the rows
        updated, and the records of those left alone."""
        if records_by_row_id is None:
            cur.executemany(self._q(sql), rows)
            return rows, {}
        cur.executemany(self._q(sql), [(*row, records_by_row_id[row[-1]].record.source) for row in rows])
        if cur.rowcount == len(rows):
            return rows, {}
        ids = [row[-1] for row in rows]
        cur.execute(self._q(f"SELECT id, source FROM records WHERE id IN ({_marks(len(ids))})"), ids)
        moved = {row_id for row_id, source in cur.fetchall() if source != records_by_row_id[row_id].record.source}
        left = {records_by_row_id[row_id].record.identifier: records_by_row_id[row_id] for row_id in moved}
        return [row for row in rows if row[-1] not in moved], left

    def _write_rows(
        self,
        cur: Any,
        stamp: int,
        by_id: dict[str, Prepared],
        result: WriteResult,
        keep_datestamps: bool,
        guard_source: bool,
    ) -> dict[str, Prepared]:
        """One pass of `write_in`; returns the records to write again: inserts that lost a race,
        and guarded updates whose row another source took meanwhile."""
        q = self._q
        idents = list(by_id)
        existing: dict[str, tuple[int, str, str]] = {}
        for n in range(0, len(idents), 500):
            part = idents[n : n + 500]
            sql = f"SELECT identifier, id, content_hash, source FROM records WHERE identifier IN ({_marks(len(part))})"
            cur.execute(q(sql), part)
            existing.update((row[0], row[1:]) for row in cur.fetchall())
        inserts: list[tuple[Any, ...]] = []
        updates: list[tuple[Any, ...]] = []
        refreshes: list[tuple[Any, ...]] = []
        stamps: dict[str, int] = {}
        headers: dict[str, str] = {}
        for identifier, (record, digest, setspecs, dc, provenance, *_) in by_id.items():
            old = existing.get(identifier)
            if guard_source and old is not None and old[2] != record.source:
                result.refused.append((identifier, old[2]))
                continue
            if old is not None and old[1] == digest:
                # Exposed content is identical: keep the datestamp (and the served <about>, which
                # must not change under an old datestamp); refresh what is not served.
                refreshes.append((record.source, setspecs, dc, record.fulltext, record.raw_xml, provenance, old[0]))
                continue
            own_stamp = record.datestamp if keep_datestamps and record.datestamp is not None else stamp
            stamps[identifier] = own_stamp
            headers[identifier] = header = header_xml(identifier, own_stamp, record.deleted, setspecs.split())
            values = (own_stamp, record.deleted, record.source, setspecs, digest, dc, record.fulltext,
                      record.raw_xml, provenance, record.about, header)  # fmt: skip
            if old is None:
                inserts.append((identifier, *values))
            else:
                updates.append((*values, old[0]))
        # Rows in key order: concurrent writers on PostgreSQL then lock rows in one order, and the
        # deadlock of two batches taking the same identifiers in opposite orders cannot happen.
        refreshes.sort(key=lambda row: row[-1])
        updates.sort(key=lambda row: row[-1])
        inserts.sort(key=lambda row: row[0])
        # With guard_source an update applies only if the row still has the source read above: a
        # writer that took the identifier meanwhile (PostgreSQL) is not overwritten; the record
        # goes round again and is refused then.
        guard = " AND source=?" if guard_source else ""
        by_row_id = {existing[i][0]: r for i, r in by_id.items() if i in existing} if guard_source else None
        lost: dict[str, Prepared] = {}  # records that go round again: rows another writer took meanwhile
        if refreshes:
            refreshes, left = self._guarded(
                cur,
                "UPDATE records SET source=?, setspecs=?, dc=?, fulltext=?, raw_xml=?, provenance=? WHERE id=?" + guard,
                refreshes,
                by_row_id,
            )
            lost.update(left)
        ids: dict[str, int] = {}
        if updates:
            updates, left = self._guarded(
                cur,
                "UPDATE records SET datestamp=?, deleted=?, source=?, setspecs=?, content_hash=?, dc=?,"
                " fulltext=?, raw_xml=?, provenance=?, about=?, header_xml=? WHERE id=?" + guard,
                updates,
                by_row_id,
            )
            lost.update(left)
            changed_ids = [(u[-1],) for u in updates]
            cur.executemany(q("DELETE FROM formats WHERE record_id=?"), changed_ids)
            cur.executemany(q("DELETE FROM set_members WHERE record_id=?"), changed_ids)
            ids.update((i, existing[i][0]) for i in stamps if i in existing and i not in lost)
        inserted = 0
        for n in range(0, len(inserts), 500):
            rows = inserts[n : n + 500]
            cur.execute(
                q(
                    "INSERT INTO records (identifier, datestamp, deleted, source, setspecs, content_hash, dc,"
                    " fulltext, raw_xml, provenance, about, header_xml) VALUES "
                    + ",".join([_ROW12] * len(rows))
                    + " ON CONFLICT (identifier) DO NOTHING RETURNING identifier, id"
                ),
                [v for row in rows for v in row],
            )
            got = dict(cur.fetchall())
            ids.update(got)
            inserted += len(got)
            lost.update((row[0], by_id[row[0]]) for row in rows if row[0] not in got)
        format_rows: list[tuple[Any, ...]] = []
        member_rows: list[tuple[Any, ...]] = []
        for identifier, own_stamp in stamps.items():
            if identifier in lost:
                continue
            item, record_id, header = by_id[identifier], ids[identifier], headers[identifier]
            format_rows += [(record_id, prefix, with_header(header, body), own_stamp) for prefix, body in item.bodies]
            member_rows += [(spec, own_stamp, identifier, record_id) for spec in item.specs]
        self._insert_many(cur, "formats (record_id, prefix, record, datestamp)", format_rows)
        self._insert_many(cur, "set_members (spec, datestamp, identifier, record_id)", member_rows)
        result.added += inserted
        result.changed += len(updates)
        result.unchanged += len(refreshes)
        return lost

    def _insert_many(self, cur: Any, into: str, rows: list[tuple[Any, ...]], per_statement: int = 250) -> None:
        """Rows inserted a few hundred to a statement rather than one by one (executemany):
        fewer calls into the driver (4 % fewer instructions a record in a bulk load), and the
        interpreter lock is let go once a statement rather than once a row, which a harvest
        converting the next page on another thread feels."""
        for n in range(0, len(rows), per_statement):
            part = rows[n : n + per_statement]
            marks = "(" + _marks(len(part[0])) + ")"
            cur.execute(
                self._q(f"INSERT INTO {into} VALUES " + ",".join([marks] * len(part))), [v for r in part for v in r]
            )

    def _write_batch(self, chunk: Sequence[Record], keep_datestamps: bool) -> WriteResult:
        with self.writing() as (conn, stamp):
            return self.write_in(conn, stamp, chunk, keep_datestamps=keep_datestamps)

    def delete(self, identifiers: Iterable[str]) -> int:
        """Turn records into tombstones (kept forever, stamped with the deletion time).

        Returns how many records were live and are now deleted.
        """
        count = 0
        with self.writing() as (conn, stamp):
            for identifier in identifiers:
                row = conn.execute(
                    sa.select(records.c.id, records.c.deleted, records.c.setspecs).where(
                        records.c.identifier == identifier
                    )
                ).first()
                if row is None or row.deleted:
                    continue
                prefixes = [
                    r.prefix for r in conn.execute(sa.select(formats.c.prefix).where(formats.c.record_id == row.id))
                ]
                tomb = Record(
                    identifier=identifier, deleted=True, sets=row.setspecs.split(), metadata=dict.fromkeys(prefixes, "")
                )
                header = header_xml(identifier, stamp, True, tomb.sets)
                conn.execute(
                    records.update()
                    .where(records.c.id == row.id)
                    .values(deleted=True, datestamp=stamp, content_hash=content_hash(tomb), header_xml=header)
                )
                conn.execute(
                    formats.update()
                    .where(formats.c.record_id == row.id)
                    .values(record=record_xml(header, None, None), datestamp=stamp)
                )
                conn.execute(set_members.update().where(set_members.c.record_id == row.id).values(datestamp=stamp))
                count += 1
        return count

    # ---- reads ----------------------------------------------------------------------------

    def get(self, identifier: str) -> Record | None:
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(records).where(records.c.identifier == identifier)).first()
            if row is None:
                return None
            fmts = {
                r.prefix: _metadata(r.record, row.about)
                for r in conn.execute(sa.select(formats).where(formats.c.record_id == row.id))
            }
        return Record(
            identifier=row.identifier,
            dc=decode_dc(row.dc),
            sets=row.setspecs.split(),
            deleted=row.deleted,
            source=row.source,
            datestamp=row.datestamp,
            metadata={p: x or "" for p, x in fmts.items()},
            fulltext=row.fulltext,
            raw_xml=row.raw_xml,
            provenance=json.loads(row.provenance) if row.provenance else None,
            about=row.about,
        )

    def header(self, identifier: str, prefix: str) -> Header | None:
        """GetRecord's one row: the header and the fragment for `prefix` (None if it has none)."""
        rows = self._fetch(
            "SELECT r.identifier, r.datestamp, r.deleted, r.setspecs, r.about, r.header_xml, f.record"
            " FROM records r JOIN formats f ON f.record_id = r.id AND f.prefix = ? WHERE r.identifier = ?",
            (prefix, identifier),
        )
        if not rows:
            return None
        r = rows[0]
        return Header(r[0], r[1], bool(r[2]), tuple(r[3].split()), _metadata(r[6], r[4]), r[4], r[5], r[6])

    def formats_of(self, identifier: str) -> list[str] | None:
        """The prefixes a record can be disseminated in, or None if there is no such record."""
        with self.engine.connect() as conn:
            rid = conn.execute(sa.select(records.c.id).where(records.c.identifier == identifier)).scalar()
            if rid is None:
                return None
            return [r.prefix for r in conn.execute(sa.select(formats.c.prefix).where(formats.c.record_id == rid))]

    @staticmethod
    def _list_sql(query: ListQuery, columns: str, after: tuple[int, str] | None) -> tuple[str, list[Any]]:
        """FROM and WHERE of a list, keyed on (datestamp, identifier) of the records or,
        for a set, of its members (each has its own index, so paging is an index range scan).

        CROSS JOIN fixes the join order in SQLite (PostgreSQL plans it freely): the keyed table
        drives, in index order, so a page never sorts what remains of the list."""
        params: list[Any] = [query.prefix]
        if query.set_spec is None:
            key = "r"
            sql = f"SELECT {columns} FROM records r CROSS JOIN formats f WHERE f.record_id = r.id AND f.prefix = ?"
        else:
            key = "m"
            sql = (
                f"SELECT {columns} FROM set_members m CROSS JOIN records r CROSS JOIN formats f"
                " WHERE r.id = m.record_id AND f.record_id = r.id AND f.prefix = ? AND m.spec = ?"
            )
            params.append(query.set_spec)
        if query.start is not None:
            sql += f" AND {key}.datestamp >= ?"
            params.append(query.start)
        if query.end is not None:
            sql += f" AND {key}.datestamp <= ?"
            params.append(query.end)
        if after is not None:
            sql += f" AND ({key}.datestamp, {key}.identifier) > (?, ?)"
            params += after
        return sql, params

    def count(self, query: ListQuery) -> int:
        params: list[Any]
        if query.set_spec is None:  # one index range, however many records the list holds
            sql, params = "SELECT count(*) FROM formats WHERE prefix = ?", [query.prefix]
            if query.start is not None:
                sql += " AND datestamp >= ?"
                params.append(query.start)
            if query.end is not None:
                sql += " AND datestamp <= ?"
                params.append(query.end)
        else:
            sql, params = self._list_sql(query, "count(*)", None)
        return int(self._fetch(sql, params)[0][0])

    # Which of the two lists `page` gives follows from `rendered`: these say so to the type checker.
    @overload
    def page(
        self,
        query: ListQuery,
        after: tuple[int, str] | None,
        limit: int,
        *,
        with_metadata: bool,
        rendered: Literal[False] = False,
    ) -> list[Header]: ...

    @overload
    def page(
        self,
        query: ListQuery,
        after: tuple[int, str] | None,
        limit: int,
        *,
        with_metadata: bool,
        rendered: Literal[True],
    ) -> list[Rendered]: ...

    @overload
    def page(
        self,
        query: ListQuery,
        after: tuple[int, str] | None,
        limit: int,
        *,
        with_metadata: bool,
        rendered: bool = False,
    ) -> list[Header] | list[Rendered]: ...

    def page(
        self,
        query: ListQuery,
        after: tuple[int, str] | None,
        limit: int,
        *,
        with_metadata: bool,
        rendered: bool = False,
    ) -> list[Header] | list[Rendered]:
        """Up to `limit` records in (datestamp, identifier) order, strictly after `after`.

        `rendered`: each as its stored XML element (`<record>`, or `<header>` without
        metadata), ready to serve; otherwise as Header fields (for people's views and tests).
        """
        key = "r" if query.set_spec is None else "m"
        sql, params = self._list_sql(query, self._row_columns(key, with_metadata, rendered), after)
        sql += f" ORDER BY {key}.datestamp, {key}.identifier LIMIT ?"
        params.append(limit)
        return self._rows(self._fetch(sql, params), with_metadata, rendered)

    def row(
        self, query: ListQuery, identifier: str, *, with_metadata: bool, rendered: bool = False
    ) -> list[Header] | list[Rendered]:
        """One record as `page` shows it (a list of one, or none), if it has the query's format and
        is in its set, whatever its datestamp (a record that changed while its list was paged:
        see protocol)."""
        key = "r" if query.set_spec is None else "m"
        columns = self._row_columns(key, with_metadata, rendered)
        sql, params = self._list_sql(ListQuery(query.prefix, set_spec=query.set_spec), columns, None)
        rows = self._fetch(sql + " AND r.identifier = ?", [*params, identifier])
        return self._rows(rows, with_metadata, rendered)

    @staticmethod
    def _row_columns(key: str, with_metadata: bool, rendered: bool) -> str:
        if rendered:
            return f"{key}.datestamp, {key}.identifier, " + ("f.record" if with_metadata else "r.header_xml")
        return "r.identifier, r.datestamp, r.deleted, r.setspecs, r.header_xml, r.about, f.record"

    @staticmethod
    def _rows(rows: list[Any], with_metadata: bool, rendered: bool) -> list[Header] | list[Rendered]:
        if rendered:
            if with_metadata:
                return list(map(Rendered._make, rows))  # tuple.__new__: no Python call per row
            return [Rendered(r[0], r[1], r[2].encode() + b"\n") for r in rows]
        if with_metadata:
            return [
                Header(r[0], r[1], bool(r[2]), tuple(r[3].split()), _metadata(r[6], r[5]), r[5], r[4], r[6])
                for r in rows
            ]
        return [Header(r[0], r[1], bool(r[2]), tuple(r[3].split()), xml=r[4]) for r in rows]

    def earliest_datestamp(self) -> int | None:
        with self.engine.connect() as conn:
            return conn.execute(sa.select(sa.func.min(records.c.datestamp))).scalar()

    def identifiers(self, source: str | None = None, *, live_only: bool = False) -> set[str]:
        stmt = sa.select(records.c.identifier)
        if source is not None:
            stmt = stmt.where(records.c.source == source)
        if live_only:
            stmt = stmt.where(records.c.deleted.is_(False))
        with self.engine.connect() as conn:
            return set(conn.execute(stmt).scalars())

    def counts(self) -> dict[str, int]:
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(records.c.deleted, sa.func.count()).group_by(records.c.deleted)).all()
        result = {"live": 0, "deleted": 0}
        for deleted, n in rows:
            result["deleted" if deleted else "live"] = int(n)
        return result

    def set_counts(self) -> dict[str, int]:
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(set_members.c.spec, sa.func.count()).group_by(set_members.c.spec)).all()
        return {spec: int(n) for spec, n in rows}

    # ---- settings -------------------------------------------------------------------------

    def setting(self, key: str, default: str | None = None) -> str | None:
        with self.engine.connect() as conn:
            value = conn.execute(sa.select(settings.c.value).where(settings.c.key == key)).scalar()
        return default if value is None else value

    def put_setting(self, key: str, value: str) -> None:
        """Store `value` under `key`, replacing what is there."""
        with self.engine.begin() as conn:
            if conn.execute(settings.update().where(settings.c.key == key).values(value=value)).rowcount == 0:
                conn.execute(settings.insert().values(key=key, value=value))

    def ensure_setting(self, key: str, value: str) -> str:
        """Store `value` under `key` unless one is there already; return the stored one."""
        try:
            with self.engine.connect().execution_options(sqlite_immediate=True) as conn, conn.begin():
                current = conn.execute(sa.select(settings.c.value).where(settings.c.key == key)).scalar()
                if current is not None:
                    return str(current)
                conn.execute(settings.insert().values(key=key, value=value))
                return value
        except sa.exc.IntegrityError:  # another process stored one first: use theirs
            stored = self.setting(key)
            assert stored is not None
            return stored


def decode_dc(text: str) -> list[DCValue]:
    if text.startswith("["):  # JSON: a separator in a name or tag (see encode_dc)
        return [DCValue(e, v, lang) for e, v, lang in json.loads(text)]
    values = []
    for item in text.split(_VALUE) if text else ():
        element, lang, value = item.split(_FIELD, 2)
        values.append(DCValue(element, value, lang or None))
    return values


def _metadata(record: bytes, about: str | None) -> str | None:
    """A format's metadata fragment, read out of the served `<record>` (None for a deleted record)."""
    return metadata_of(bytes(record), about)  # bytes(): a driver may hand BYTEA over as a memoryview


# ---- harvest state ----------------------------------------------------------------------------
#
# Written by `harvester` only. Per partner: the `from` of its next run, the checkpoint of the
# window being harvested (committed in the same transaction as the records of each page), a
# history of runs, and a lease, so that of several harvester processes sharing one store only
# one harvests a given partner at a time. Functions, not methods: the harvester's state stays
# out of the record store's class.

harvest_state = sa.Table(
    "harvest_state",
    meta,
    sa.Column("partner", sa.String(200), primary_key=True),
    # The partner's responseDate of the first request of the last complete run.
    sa.Column("next_from", sa.String(40)),
    # Which list (prefix, sets, republish) `next_from` belongs to: another list starts afresh.
    sa.Column("next_from_key", sa.Text),
    sa.Column("checkpoint", sa.Text),  # JSON: the window in progress (token, counts), or NULL
    sa.Column("updated", sa.BigInteger, nullable=False),
)

harvest_runs = sa.Table(
    "harvest_runs",
    meta,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),  # not exported: renumbered
    sa.Column("partner", sa.String(200), nullable=False),
    sa.Column("owner", sa.String(200), nullable=False),
    sa.Column("started", sa.BigInteger, nullable=False),
    sa.Column("finished", sa.BigInteger),
    sa.Column("outcome", sa.String(20), nullable=False),  # running, success, partial, failed
    sa.Column("reason", sa.Text),
    sa.Column("from_date", sa.String(40)),
    sa.Column("resumed", sa.Boolean, nullable=False, default=False),
    sa.Column("counts", sa.Text, nullable=False, default="{}"),
    sa.Index("ix_harvest_runs_partner_id", "partner", "id"),
)

harvest_leases = sa.Table(
    "harvest_leases",
    meta,
    sa.Column("partner", sa.String(200), primary_key=True),
    sa.Column("owner", sa.String(200), nullable=False),
    sa.Column("expires", sa.BigInteger, nullable=False),
)


@dataclass(frozen=True)
class HarvestState:
    partner: str
    next_from: str | None = None
    next_from_key: str | None = None
    checkpoint: dict[str, Any] | None = None


@dataclass(frozen=True)
class HarvestRun:
    id: int
    partner: str
    owner: str
    started: int
    finished: int | None
    outcome: str
    reason: str | None
    from_date: str | None
    resumed: bool
    counts: dict[str, Any]


def _write_conn(store: Store) -> Connection:
    return store.engine.connect().execution_options(sqlite_immediate=True)


def harvest_state_of(store: Store, partner: str) -> HarvestState:
    with store.engine.connect() as conn:
        row = conn.execute(sa.select(harvest_state).where(harvest_state.c.partner == partner)).first()
    if row is None:
        return HarvestState(partner)
    checkpoint = json.loads(row.checkpoint) if row.checkpoint else None
    return HarvestState(row.partner, row.next_from, row.next_from_key, checkpoint)


def _upsert_state(conn: Connection, partner: str, values: dict[str, Any]) -> None:
    updated = conn.execute(harvest_state.update().where(harvest_state.c.partner == partner).values(**values))
    if updated.rowcount == 0:
        conn.execute(harvest_state.insert().values(partner=partner, **values))


def save_checkpoint_in(conn: Connection, partner: str, checkpoint: dict[str, Any] | None, now: int) -> None:
    """Record where the window stands, inside the transaction that writes the page's records."""
    _upsert_state(conn, partner, {"checkpoint": json.dumps(checkpoint) if checkpoint else None, "updated": now})


def start_run(store: Store, partner: str, owner: str, *, started: int, from_date: str | None, resumed: bool) -> int:
    """A new row in the run history. Runs still marked running were cut short (the caller
    holds the lease, so no one else is running them): they are closed as failed."""
    with _write_conn(store) as conn, conn.begin():
        conn.execute(
            harvest_runs.update()
            .where(harvest_runs.c.partner == partner, harvest_runs.c.outcome == "running")
            .values(outcome="failed", reason="interrupted: the process ended before the run finished")
        )
        inserted = conn.execute(
            harvest_runs.insert().values(
                partner=partner,
                owner=owner,
                started=started,
                outcome="running",
                from_date=from_date,
                resumed=resumed,
                counts="{}",
            )
        )
        return int(inserted.inserted_primary_key[0])  # type: ignore[index]


def save_run_counts_in(conn: Connection, run_id: int, counts: dict[str, Any]) -> None:
    """A running run's counts so far, inside the transaction that writes a page: a run killed
    afterwards shows in the history the pages it committed."""
    conn.execute(harvest_runs.update().where(harvest_runs.c.id == run_id).values(counts=json.dumps(counts)))


def close_interrupted_run(store: Store, run_id: int, reason: str) -> bool:
    """Mark a run that is still marked running as failed (its process is gone); False if it
    ended meanwhile. Its counts stay what its last page committed."""
    with _write_conn(store) as conn, conn.begin():
        closed = conn.execute(
            harvest_runs.update()
            .where(harvest_runs.c.id == run_id, harvest_runs.c.outcome == "running")
            .values(outcome="failed", reason=reason)
        )
        return closed.rowcount == 1


KEEP = object()  # finish_run: leave the checkpoint as the last page committed it


def finish_run(
    store: Store,
    run_id: int,
    partner: str,
    *,
    finished: int,
    outcome: str,
    reason: str | None,
    counts: dict[str, Any],
    checkpoint: Any = KEEP,
    next_from: tuple[str, str] | None = None,
) -> None:
    """Close a run; on success `next_from` = (the partner's responseDate, the list's key)."""
    with _write_conn(store) as conn, conn.begin():
        conn.execute(
            harvest_runs.update()
            .where(harvest_runs.c.id == run_id)
            .values(finished=finished, outcome=outcome, reason=reason, counts=json.dumps(counts))
        )
        values: dict[str, Any] = {"updated": finished}
        if checkpoint is not KEEP:
            values["checkpoint"] = json.dumps(checkpoint) if checkpoint else None
        if next_from is not None:
            values["next_from"], values["next_from_key"] = next_from
        _upsert_state(conn, partner, values)


def harvest_history(
    store: Store,
    partner: str | None = None,
    limit: int = 20,
    *,
    running: bool = False,
    outcomes: Sequence[str] = (),
) -> list[HarvestRun]:
    """The latest runs first; `running`: only those still marked running; `outcomes`: only
    those that ended so (`harvester status` finds the last error with it)."""
    stmt = sa.select(harvest_runs).order_by(harvest_runs.c.id.desc()).limit(limit)
    if partner is not None:
        stmt = stmt.where(harvest_runs.c.partner == partner)
    if running:
        stmt = stmt.where(harvest_runs.c.outcome == "running")
    if outcomes:
        stmt = stmt.where(harvest_runs.c.outcome.in_(list(outcomes)))
    with store.engine.connect() as conn:
        rows = conn.execute(stmt).all()
    return [
        HarvestRun(
            r.id,
            r.partner,
            r.owner,
            r.started,
            r.finished,
            r.outcome,
            r.reason,
            r.from_date,
            bool(r.resumed),
            json.loads(r.counts or "{}"),
        )
        for r in rows
    ]


def acquire_lease(store: Store, partner: str, owner: str, ttl: int, now: int) -> tuple[bool, str, int]:
    """Take `partner`'s lease until `now + ttl` if it is free, expired or already ours.

    Returns (won, holder, expires). One conditional UPDATE decides, so two processes racing
    on PostgreSQL cannot both win: the second re-checks the row after the first commits.
    """
    expires = now + ttl
    with _write_conn(store) as conn:
        with conn.begin():
            taken = conn.execute(
                harvest_leases.update()
                .where(
                    harvest_leases.c.partner == partner,
                    sa.or_(harvest_leases.c.owner == owner, harvest_leases.c.expires < now),
                )
                .values(owner=owner, expires=expires)
            )
            if taken.rowcount == 1:
                return True, owner, expires
            row = conn.execute(
                sa.select(harvest_leases.c.owner, harvest_leases.c.expires).where(harvest_leases.c.partner == partner)
            ).first()
            if row is not None:
                return False, row.owner, row.expires
        try:
            with conn.begin():
                conn.execute(harvest_leases.insert().values(partner=partner, owner=owner, expires=expires))
            return True, owner, expires
        except sa.exc.IntegrityError:  # another process inserted it first
            with conn.begin():
                row = conn.execute(
                    sa.select(harvest_leases.c.owner, harvest_leases.c.expires).where(
                        harvest_leases.c.partner == partner
                    )
                ).one()
            return False, row.owner, row.expires


def renew_lease_in(conn: Connection, partner: str, owner: str, ttl: int, now: int) -> bool:
    """Extend our lease inside a page's transaction; False if someone else holds it now."""
    renewed = conn.execute(
        harvest_leases.update()
        .where(harvest_leases.c.partner == partner, harvest_leases.c.owner == owner)
        .values(expires=now + ttl)
    )
    return renewed.rowcount == 1


def release_lease(store: Store, partner: str, owner: str) -> None:
    with _write_conn(store) as conn, conn.begin():
        conn.execute(
            harvest_leases.delete().where(harvest_leases.c.partner == partner, harvest_leases.c.owner == owner)
        )


def leases(store: Store) -> dict[str, tuple[str, int]]:
    """partner -> (holder, expires), expired leases included."""
    with store.engine.connect() as conn:
        rows = conn.execute(sa.select(harvest_leases)).all()
    return {r.partner: (r.owner, r.expires) for r in rows}


def write_harvested_in(store: Store, conn: Connection, stamp: int, chunk: Sequence[Record | Prepared]) -> WriteResult:
    """Write a partner's records inside a page's transaction (see `Store.write_in`).

    A record held under another source (a local record, or another partner's) is refused and
    listed with its holder in `refused`, never overwritten. A record whose exposed content is unchanged
    keeps its stored `about`, so the provenance served (its harvestDate) changes only when the
    datestamp does.
    """
    return store.write_in(conn, stamp, chunk, guard_source=True)


class HeldRecords(NamedTuple):
    live: int = 0
    deleted: int = 0


def records_held(store: Store, sources: Sequence[str]) -> dict[str, HeldRecords]:
    """Per source of `sources` (partners' names, `local`): the records it holds, live and
    deleted; a source that holds none is left out."""
    held: dict[str, HeldRecords] = {}
    if not sources:
        return held
    stmt = (
        sa.select(records.c.source, records.c.deleted, sa.func.count())
        .where(records.c.source.in_(list(sources)))
        .group_by(records.c.source, records.c.deleted)
    )
    with store.engine.connect() as conn:
        for source, deleted, count in conn.execute(stmt):
            live, gone = held.get(source, HeldRecords())
            held[source] = HeldRecords(live, gone + count) if deleted else HeldRecords(live + count, gone)
    return held


def harvest_summary(store: Store) -> dict[str, dict[str, Any]]:
    """Per partner: runs by outcome, records received, and the last run and last success times."""
    summary: dict[str, dict[str, Any]] = {}
    with store.engine.connect() as conn:
        rows = conn.execute(
            sa.select(
                harvest_runs.c.partner,
                harvest_runs.c.outcome,
                harvest_runs.c.started,
                harvest_runs.c.finished,
                harvest_runs.c.counts,
            ).order_by(harvest_runs.c.id)
        )
        for partner, outcome, started, finished, counts in rows:
            entry = summary.setdefault(
                partner, {"runs": {}, "received": 0, "last_outcome": None, "last_run": None, "last_success": None}
            )
            entry["runs"][outcome] = entry["runs"].get(outcome, 0) + 1
            entry["received"] += int(json.loads(counts or "{}").get("received", 0))
            entry["last_outcome"], entry["last_run"] = outcome, finished or started
            if outcome == "success":
                entry["last_success"] = finished or started
    return summary


# ---- export and import: the whole store as plain rows ---------------------------------------------

# Tables carried by an export besides records, with the order that makes an export
# deterministic. Surrogate keys are left out (an import numbers rows afresh, in order), and so
# are harvest leases, which only mean something to the processes that hold them.
EXPORTED_TABLES: dict[str, tuple[sa.Table, tuple[str, ...]]] = {
    "settings": (settings, ("key",)),
    "harvest_state": (harvest_state, ("partner",)),
    "harvest_runs": (harvest_runs, ("id",)),
}


class Stored(NamedTuple):
    """A record as an export carries it: with the content hash the store holds for it."""

    record: Record
    content_hash: str


def iter_records(store: Store, batch: int = 1000) -> Iterator[Record]:
    """Every record, tombstones included, in identifier order (keyset paging, bounded memory)."""
    with store.snapshot() as conn:
        yield from (stored.record for stored in iter_stored_in(conn, batch))


def iter_stored_in(conn: Connection, batch: int = 1000) -> Iterator[Stored]:
    """`iter_records` with each record's stored content hash, which an import checks, read
    through `conn` (a `Store.snapshot()`, so that the batches are of one moment)."""
    last: str | None = None
    while True:
        stmt = sa.select(records).order_by(records.c.identifier).limit(batch)
        if last is not None:
            stmt = stmt.where(records.c.identifier > last)
        rows = conn.execute(stmt).all()
        ids = [r.id for r in rows]
        fmts: dict[int, dict[str, str]] = {}
        if ids:
            about = {r.id: r.about for r in rows}
            for f in conn.execute(sa.select(formats).where(formats.c.record_id.in_(ids))):
                fmts.setdefault(f.record_id, {})[f.prefix] = _metadata(f.record, about[f.record_id]) or ""
        if not rows:
            return
        for row in rows:
            record = Record(
                identifier=row.identifier,
                dc=decode_dc(row.dc),
                sets=row.setspecs.split(),
                deleted=row.deleted,
                source=row.source,
                datestamp=row.datestamp,
                metadata=dict(sorted(fmts.get(row.id, {}).items())),
                fulltext=row.fulltext,
                raw_xml=row.raw_xml,
                provenance=json.loads(row.provenance) if row.provenance else None,
                about=row.about,
            )
            yield Stored(record, row.content_hash)
        last = rows[-1].identifier


def exported_columns(table: sa.Table) -> list[sa.Column[Any]]:
    """A table's columns as an export carries them: surrogate keys are numbered afresh."""
    return [c for c in table.c if not (c.primary_key and c.autoincrement is True)]


def table_rows_in(conn: Connection, name: str) -> list[dict[str, Any]]:
    """An exported table's rows, read through `conn` (an export's snapshot)."""
    table, order = EXPORTED_TABLES[name]
    rows = conn.execute(sa.select(*exported_columns(table)).order_by(*(table.c[k] for k in order))).all()
    return [dict(r._mapping) for r in rows]


def insert_rows_in(conn: Connection, name: str, rows: list[dict[str, Any]]) -> None:
    """Exported rows into their table, inside an import's transaction."""
    table, _ = EXPORTED_TABLES[name]
    if not rows:
        return
    if name == "settings":  # a fresh store may have generated its own secret already
        conn.execute(settings.delete().where(settings.c.key.in_([r["key"] for r in rows])))
    conn.execute(table.insert(), rows)


def is_empty_in(conn: Connection) -> bool:
    """No record and no harvest run: an import may fill it."""
    return (
        conn.execute(sa.select(records.c.id).limit(1)).first() is None
        and conn.execute(sa.select(harvest_runs.c.id).limit(1)).first() is None
    )


def last_record_id_in(conn: Connection) -> int:
    """The highest record row id (0 in an empty store): an import tells the rows a batch
    added from those it found already written."""
    return int(conn.execute(sa.select(sa.func.coalesce(sa.func.max(records.c.id), 0))).scalar_one())


def record_ids_in(conn: Connection, identifiers: Sequence[str]) -> dict[str, int]:
    """identifier -> row id of those stored."""
    rows = conn.execute(sa.select(records.c.identifier, records.c.id).where(records.c.identifier.in_(identifiers)))
    return {identifier: row_id for identifier, row_id in rows}
