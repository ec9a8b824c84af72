"""The record write path: insert, update or leave each record of a batch (content hashes decide),
and turn records into tombstones. Straight on the driver, a statement per table per batch.

Records are kept per source. Two sources (local and a partner, or two partners) may hold one
identifier; the store serves one of them, by priority: local first, then partners in the order
given (configuration order), then any other source; between two unranked sources, the one held
first. A harvested deletion never hides another source's live record: live comes before
deleted, and when the record served is deleted, a live kept copy is served instead
(harvester_state.promote_kept_in). The served record is the row of `records`, exactly as
before; every other source's copy is kept verbatim in `shadowed_records` (source, identifier),
never served, counted and reported.

Why this shape rather than keying `records` by (source, identifier) with a `served` flag: every
read (lists paged by (datestamp, identifier), set members, formats, GetRecord, search) stays on
one row per identifier with no filter to add, and so do its indexes; the cost of a conflict is
paid on the write that meets it, which is rare, not on every page served.
"""

from __future__ import annotations

import gc
import itertools
import logging
import threading
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from oaiserver.fragments import header_xml, record_xml, with_header
from oaiserver.records import Record, identifier_problem, shown_identifier
from oaiserver.rows import Prepared, content_hash, prepare
from oaiserver.store import search
from oaiserver.store.schema import formats, records, set_members
from oaiserver.store.transactions import Transactions

log = logging.getLogger("oaiserver.store")

_ROW12 = "(" + ", ".join(["?"] * 12) + ")"


# The columns binary COPY writes, with their types on PostgreSQL (binary COPY sends each value
# in its column's own binary form: psycopg must be told which, or an int goes as the smallest
# integer type that holds it).
_PG_TYPES = {
    ("formats", "record_id"): "int4",
    ("formats", "prefix"): "text",
    ("formats", "record"): "bytea",
    ("formats", "datestamp"): "int8",
    ("set_members", "spec"): "text",
    ("set_members", "datestamp"): "int8",
    ("set_members", "identifier"): "text",
    ("set_members", "record_id"): "int4",
}


def _marks(n: int) -> str:
    return ", ".join(["?"] * n)


@dataclass
class WriteResult:
    added: int = 0
    changed: int = 0
    unchanged: int = 0
    rejected: list[tuple[str, str]] = field(default_factory=list)  # (identifier, why it cannot be one): not stored
    # (identifier, source served instead): stored, not served, another source coming first
    shadowed: list[tuple[str, str]] = field(default_factory=list)
    # (identifier, source now served): a kept copy served once the record served was deleted
    promoted: list[tuple[str, str]] = field(default_factory=list)

    def __iadd__(self, other: WriteResult) -> WriteResult:
        self.added += other.added
        self.changed += other.changed
        self.unchanged += other.unchanged
        self.rejected += other.rejected
        self.shadowed += other.shadowed
        self.promoted += other.promoted
        return self


class _Stored(NamedTuple):
    """What a write reads of a row the store holds."""

    id: int
    content_hash: str
    source: str
    deleted: bool


@dataclass
class _Plan:
    """What one pass of a write does: rows for each statement (each in key order), and the
    datestamp and header of every record whose exposed content changes."""

    inserts: list[tuple[Any, ...]] = field(default_factory=list)
    updates: list[tuple[Any, ...]] = field(default_factory=list)
    refreshes: list[tuple[Any, ...]] = field(default_factory=list)
    # Records that another source comes before: kept in shadowed_records.
    shadows: list[Prepared] = field(default_factory=list)
    # Row ids whose holder this write serves another source before: its copy goes to shadowed_records.
    taken: list[int] = field(default_factory=list)
    stamps: dict[str, int] = field(default_factory=dict)
    headers: dict[str, str] = field(default_factory=dict)


def served_first(source: str, holder: str, priority: Sequence[str]) -> bool:
    """Whether `source` is served before `holder` under one identifier: local first, then the
    sources of `priority` in its order, then the others; between equals, the holder."""

    def rank(name: str) -> int:
        if name == "local":
            return -1
        return priority.index(name) if name in priority else len(priority)

    return rank(source) < rank(holder)


def _served_instead(record: Record, old: _Stored, priority: Sequence[str]) -> bool:
    """Whether a harvested `record` is served instead of the copy another source holds: a live
    record (republished: it has formats) before a deleted one, and a tombstone never hides a
    record another source still has; else by `served_first`."""
    if old.deleted and not record.deleted and record.metadata:
        return True
    if record.deleted and not old.deleted:
        return False
    return served_first(record.source, old.source, priority)


def _plan(
    by_id: dict[str, Prepared],
    existing: dict[str, _Stored],
    stamp: int,
    result: WriteResult,
    *,
    keep_datestamps: bool,
    guard_source: bool,
    priority: Sequence[str],
) -> _Plan:
    """Insert, update, refresh or shadow each record (shadows go into `result`)."""
    plan = _Plan()
    for identifier, (record, digest, setspecs, dc, provenance, *_) in by_id.items():
        old = existing.get(identifier)
        if old is not None and old.source != record.source:
            if guard_source and not _served_instead(record, old, priority):
                plan.shadows.append(by_id[identifier])
                result.shadowed.append((identifier, old.source))
                continue
            plan.taken.append(old.id)
        elif old is not None and old.content_hash == digest:
            # Exposed content is identical: keep the datestamp (and the served <about>, which
            # must not change under an old datestamp); refresh what is not served.
            plan.refreshes.append((record.source, setspecs, dc, record.fulltext, record.raw_xml, provenance, old.id))
            continue
        own_stamp = record.datestamp if keep_datestamps and record.datestamp is not None else stamp
        plan.stamps[identifier] = own_stamp
        plan.headers[identifier] = header = header_xml(identifier, own_stamp, record.deleted, setspecs.split())
        values = (own_stamp, record.deleted, record.source, setspecs, digest, dc, record.fulltext,
                  record.raw_xml, provenance, record.about, header)  # fmt: skip
        if old is None:
            plan.inserts.append((identifier, *values))
        else:
            plan.updates.append((*values, old.id))
    # Rows in key order: concurrent writers on PostgreSQL then lock rows in one order, and the
    # deadlock of two batches taking the same identifiers in opposite orders cannot happen.
    plan.refreshes.sort(key=lambda row: row[-1])
    plan.updates.sort(key=lambda row: row[-1])
    plan.inserts.sort(key=lambda row: row[0])
    return plan


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


class Writes(Transactions):
    """`Store`'s writes."""

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
        priority: Sequence[str] = (),
    ) -> WriteResult:
        """Write records (or records already `prepare`d) inside a transaction from `writing()`
        (the harvester adds its state).

        A record held under another source is served by priority (module docstring): without
        `guard_source` (local writes, loads) the record written is; with it (harvests), the
        record of the source that comes first in `priority` (partners' names, local before all).
        The other copy is kept in shadowed_records and the records not served are reported in
        `shadowed`.

        Straight on the driver, a statement per table per batch: this is the bulk path too.
        Inserts skip identifiers that appeared since they were looked up (a concurrent writer
        on PostgreSQL, where writers run side by side); those go round again as updates.
        """
        with collector_paused():
            return self._write_in(conn, stamp, chunk, keep_datestamps, guard_source, tuple(priority))

    def _write_in(
        self,
        conn: Connection,
        stamp: int,
        chunk: Sequence[Record | Prepared],
        keep_datestamps: bool,
        guard_source: bool,
        priority: tuple[str, ...] = (),
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
        accepted = dict(pending)
        cur = conn.connection.cursor()
        try:
            for _ in range(3):
                if not pending:
                    break
                pending = self._write_rows(cur, stamp, pending, result, keep_datestamps, guard_source, priority)
            self._index_written(cur, accepted, result)
        except self._dbapi_error as exc:
            raise sa.exc.DBAPIError.instance("write", None, exc, self._dbapi_error) from exc
        finally:
            cur.close()
        if pending:  # pragma: no cover - would need three concurrent inserts of one identifier
            raise RuntimeError(f"could not settle concurrent writes of {sorted(pending)[:3]}")
        return result

    def _index_written(self, cur: Any, accepted: dict[str, Prepared], result: WriteResult) -> None:
        """The search index brought up to date with the records of a write (all but those
        shadowed: another source is served, with its own words)."""
        shadowed = {identifier for identifier, _ in result.shadowed}
        search.index_in(cur, self.is_sqlite, ((i, p.dc) for i, p in accepted.items() if i not in shadowed))

    def _guarded(
        self,
        cur: Any,
        sql: str,
        rows: list[tuple[Any, ...]],
        records_by_row_id: dict[int, Prepared] | None,
        read: dict[int, str],
    ) -> tuple[list[tuple[Any, ...]], dict[str, Prepared]]:
        """Run an UPDATE per row (each ends with the row id). With `records_by_row_id` (guarding
        sources), a row whose source changed since it was read (`read`: row id -> source) is left
        alone: returns the rows updated, and the records of those left alone."""
        if records_by_row_id is None:
            cur.executemany(self._q(sql), rows)
            return rows, {}
        cur.executemany(self._q(sql), [(*row, read[row[-1]]) for row in rows])
        if cur.rowcount == len(rows):
            return rows, {}
        moved: set[int] = set()
        for part, where in self._in_lists([row[-1] for row in rows]):
            cur.execute(self._q(f"SELECT id, source FROM records WHERE id {where}"), part)
            moved.update(row_id for row_id, source in cur.fetchall() if source != read[row_id])
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
        priority: tuple[str, ...] = (),
    ) -> dict[str, Prepared]:
        """One pass of `write_in`; returns the records to write again: inserts that lost a race,
        and guarded updates whose row another source took meanwhile."""
        existing = self._stored(cur, list(by_id))
        plan = _plan(
            by_id,
            existing,
            stamp,
            result,
            keep_datestamps=keep_datestamps,
            guard_source=guard_source,
            priority=priority,
        )
        self._shadow(cur, stamp, plan, result)
        # With guard_source an update applies only if the row still has the source read above: a
        # writer that took the identifier meanwhile (PostgreSQL) is not overwritten; the record
        # goes round again and is served or shadowed then.
        guard = " AND source=?" if guard_source else ""
        by_row_id = {existing[i].id: r for i, r in by_id.items() if i in existing} if guard_source else None
        read = {row.id: row.source for row in existing.values()}
        lost: dict[str, Prepared] = {}  # records that go round again: rows another writer took meanwhile
        if plan.refreshes:
            plan.refreshes, left = self._guarded(
                cur,
                "UPDATE records SET source=?, setspecs=?, dc=?, fulltext=?, raw_xml=?, provenance=? WHERE id=?" + guard,
                plan.refreshes,
                by_row_id,
                read,
            )
            lost.update(left)
        ids: dict[str, int] = {}
        if plan.updates:
            self._keep_taken(cur, plan.taken, read, {u[-1]: u[2] for u in plan.updates})
            plan.updates, left = self._guarded(
                cur,
                "UPDATE records SET datestamp=?, deleted=?, source=?, setspecs=?, content_hash=?, dc=?,"
                " fulltext=?, raw_xml=?, provenance=?, about=?, header_xml=? WHERE id=?" + guard,
                plan.updates,
                by_row_id,
                read,
            )
            lost.update(left)
            changed_ids = [(u[-1],) for u in plan.updates]
            cur.executemany(self._q("DELETE FROM formats WHERE record_id=?"), changed_ids)
            cur.executemany(self._q("DELETE FROM set_members WHERE record_id=?"), changed_ids)
            ids.update((i, existing[i].id) for i in plan.stamps if i in existing and i not in lost)
        inserted = self._insert_records(cur, plan.inserts, by_id, ids, lost)
        self._index(cur, plan, by_id, ids, lost)
        # A record that takes an identifier over from another source is new to its own source.
        taken = len(set(plan.taken) & {u[-1] for u in plan.updates})
        result.added += inserted + taken
        result.changed += len(plan.updates) - taken
        result.unchanged += len(plan.refreshes)
        return lost

    def _shadow(self, cur: Any, stamp: int, plan: _Plan, result: WriteResult) -> None:
        """Keep the records another source is served before: unchanged content changes nothing.
        A statement per table for the whole batch, as every write (rows in key order)."""
        if not plan.shadows:
            return
        by_key = {(item.record.source, item.record.identifier): item for item in plan.shadows}
        held: dict[tuple[str, str], str] = {}
        for source in sorted({source for source, _ in by_key}):
            idents = sorted(identifier for s, identifier in by_key if s == source)
            sql = "SELECT identifier, content_hash FROM shadowed_records WHERE source=? AND identifier"
            for part, where in self._in_lists(idents):
                cur.execute(self._q(f"{sql} {where}"), [source, *part])
                held.update(((source, identifier), digest) for identifier, digest in cur.fetchall())
        inserts: list[tuple[Any, ...]] = []
        updates: list[tuple[Any, ...]] = []
        for key in sorted(by_key):
            item, old = by_key[key], held.get(key)
            if old == item.digest:
                result.unchanged += 1
                continue
            row = (stamp, item.record.deleted, item.digest, item.record.raw_xml, item.provenance, *key)
            (inserts if old is None else updates).append(row)
        if inserts:
            columns = "datestamp, deleted, content_hash, raw_xml, provenance, source, identifier"
            cur.executemany(self._q(f"INSERT INTO shadowed_records ({columns}) VALUES ({_marks(7)})"), inserts)
            result.added += len(inserts)
        if updates:
            sql = "UPDATE shadowed_records SET datestamp=?, deleted=?, content_hash=?, raw_xml=?, provenance=?"
            cur.executemany(self._q(sql + " WHERE source=? AND identifier=?"), updates)
            result.changed += len(updates)

    def _keep_taken(self, cur: Any, taken: list[int], read: dict[int, str], updating: dict[int, str]) -> None:
        """The copies of the holders a write now serves another source before (`updating`: row
        id -> the source written), kept in shadowed_records (replacing an older copy of theirs);
        the new holder's own copy there, if it had one, is dropped: it is served now."""
        row_ids = sorted(set(taken) & set(updating))
        if not row_ids:
            return
        holders: list[tuple[int, str]] = []  # (row id, identifier) of those still held as read
        for part, where in self._in_lists(row_ids):
            cur.execute(self._q(f"SELECT id, identifier, source FROM records WHERE id {where}"), part)
            holders += [(row_id, identifier) for row_id, identifier, source in cur.fetchall() if source == read[row_id]]
        # A row taken meanwhile is left alone: its update is too, and goes round again.
        if not holders:
            return
        holders.sort()
        dropped = sorted(
            {(read[i], identifier) for i, identifier in holders}
            | {(updating[i], identifier) for i, identifier in holders}
        )
        cur.executemany(self._q("DELETE FROM shadowed_records WHERE source=? AND identifier=?"), dropped)
        for part, where in self._in_lists([row_id for row_id, _ in holders]):
            cur.execute(
                self._q(
                    "INSERT INTO shadowed_records (source, identifier, datestamp, deleted, content_hash, raw_xml,"
                    " provenance) SELECT source, identifier, datestamp, deleted, content_hash, raw_xml, provenance"
                    f" FROM records WHERE id {where}"
                ),
                part,
            )

    def _in_lists(self, values: Sequence[Any], size: int = 500) -> Iterator[tuple[list[Any], str]]:
        """`values` in chunks of `size`, each as (its parameters, the condition that matches
        them, written with `?` marks). SQLite: `IN (?, ?, ...)`, a mark a value (it caps a
        statement's parameters). PostgreSQL: `= ANY(?)`, the chunk as one array: a statement of
        fixed text, which psycopg parses once (a long one it parses in Python on every call)."""
        for n in range(0, len(values), size):
            part = list(values[n : n + size])
            if self.is_sqlite:
                yield part, f"IN ({_marks(len(part))})"
            else:
                yield [part], "= ANY(?)"

    def _stored(self, cur: Any, idents: list[str]) -> dict[str, _Stored]:
        """What the store holds of these identifiers, by identifier."""
        existing: dict[str, _Stored] = {}
        for part, where in self._in_lists(idents):
            cur.execute(
                self._q(f"SELECT identifier, id, content_hash, source, deleted FROM records WHERE identifier {where}"),
                part,
            )
            existing.update((row[0], _Stored._make(row[1:])) for row in cur.fetchall())
        return existing

    def _insert_records(
        self,
        cur: Any,
        inserts: list[tuple[Any, ...]],
        by_id: dict[str, Prepared],
        ids: dict[str, int],
        lost: dict[str, Prepared],
    ) -> int:
        """Insert new rows, adding their ids to `ids` and to `lost` the records whose identifier
        another writer inserted meanwhile; returns how many were inserted."""
        if not inserts:
            return 0
        columns = (
            "identifier, datestamp, deleted, source, setspecs, content_hash, dc, fulltext, raw_xml, provenance,"
            " about, header_xml"
        )
        got: dict[str, int] = {}
        if self.is_sqlite:
            for n in range(0, len(inserts), 500):
                rows = inserts[n : n + 500]
                cur.execute(
                    f"INSERT INTO records ({columns}) VALUES " + ",".join([_ROW12] * len(rows))
                    + " ON CONFLICT (identifier) DO NOTHING RETURNING identifier, id",
                    [v for row in rows for v in row],
                )  # fmt: skip
                got.update(cur.fetchall())
        else:
            # psycopg: one statement of fixed text, sent for every row in one pipeline (prepared
            # once), its results read back as they come. A statement of 500 rows of VALUES costs
            # more: psycopg parses a query text that long in Python on every call (it caches
            # short ones only), 14 ms a page, and the server plans 6,000 parameters.
            cur.executemany(
                self._q(
                    f"INSERT INTO records ({columns}) VALUES ({_marks(12)}) ON CONFLICT (identifier) DO NOTHING"
                    " RETURNING identifier, id"
                ),
                inserts,
                returning=True,
            )
            while True:
                got.update(cur.fetchall())
                if not cur.nextset():
                    break
        ids.update(got)
        lost.update((row[0], by_id[row[0]]) for row in inserts if row[0] not in got)
        return len(got)

    def _index(
        self, cur: Any, plan: _Plan, by_id: dict[str, Prepared], ids: dict[str, int], lost: dict[str, Prepared]
    ) -> None:
        """The served records (in each format) and set memberships of the rows written."""
        format_rows: list[tuple[Any, ...]] = []
        member_rows: list[tuple[Any, ...]] = []
        for identifier, own_stamp in plan.stamps.items():
            if identifier in lost:
                continue
            item, record_id, header = by_id[identifier], ids[identifier], plan.headers[identifier]
            format_rows += [(record_id, prefix, with_header(header, body), own_stamp) for prefix, body in item.bodies]
            member_rows += [(spec, own_stamp, identifier, record_id) for spec in item.specs]
        self._insert_many(cur, "formats", ("record_id", "prefix", "record", "datestamp"), format_rows)
        self._insert_many(cur, "set_members", ("spec", "datestamp", "identifier", "record_id"), member_rows)

    def _insert_many(
        self, cur: Any, table: str, columns: tuple[str, ...], rows: list[tuple[Any, ...]], per_statement: int = 250
    ) -> None:
        """Rows inserted the way the driver is fastest, all at once, never one statement a row.

        SQLite: a few hundred rows to a statement rather than executemany: fewer calls into the
        driver (4 % fewer instructions a record in a bulk load), and the interpreter lock is let
        go once a statement rather than once a row, which a harvest converting the next page on
        another thread feels. PostgreSQL: binary COPY, a stream of rows with no statement to
        parse or plan (psycopg parses a long query's text in Python on every call): a fifth of
        the client's CPU a row of a multi-row INSERT, and less of the server's."""
        if not rows:
            return
        if not self.is_sqlite:
            with cur.copy(f"COPY {table} ({', '.join(columns)}) FROM STDIN (FORMAT BINARY)") as copy:
                copy.set_types([_PG_TYPES[table, column] for column in columns])
                for row in rows:
                    copy.write_row(row)
            return
        marks = "(" + _marks(len(columns)) + ")"
        into = f"{table} ({', '.join(columns)})"
        for n in range(0, len(rows), per_statement):
            part = rows[n : n + per_statement]
            cur.execute(f"INSERT INTO {into} VALUES " + ",".join([marks] * len(part)), [v for r in part for v in r])

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
