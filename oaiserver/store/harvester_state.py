"""The harvester's state, kept in the record store: written by `harvester` only.

Per partner: the `from` of its next run, the checkpoint of the window being harvested (committed
in the same transaction as the records of each page), a history of runs, a lease, so that of
several harvester processes sharing one store only one harvests a given partner at a time, and
its deletion sweep (the last one applied, a drop held back).
Functions, not methods: the harvester's state stays out of the record store's class.

It lives in `oaiserver.store` rather than `harvester` because imports go one way (`harvester`
uses `oaiserver`, never the reverse) and the server reads it too: `harvest_summary` for its
metrics, an export carries `harvest_state` and `harvest_runs`.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NamedTuple

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from oaiserver.fragments import header_xml, record_body, with_header
from oaiserver.native import payload
from oaiserver.records import Record, identifier_problem
from oaiserver.rows import Prepared
from oaiserver.store.schema import (
    formats,
    harvest_leases,
    harvest_quarantine,
    harvest_runs,
    harvest_state,
    harvest_sweeps,
    harvested_formats,
    native_formats,
    partner_sets,
    records,
    set_members,
    shadowed_records,
)
from oaiserver.store.write import WriteResult

# A partner's format where none is named: its one format by default (oai_dc).
DEFAULT_FORMAT = "oai_dc"

if TYPE_CHECKING:
    from oaiserver.store import Store


@dataclass(frozen=True)
class HarvestState:
    partner: str
    format: str
    next_from: str | None = None
    next_from_key: str | None = None
    checkpoint: dict[str, Any] | None = None
    learned: dict[str, Any] | None = None  # what runs learned of the partner (see `learn`)


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
    format: str | None = None  # None: a run from before formats were harvested one by one


def _write_conn(store: Store) -> Connection:
    return store.engine.connect().execution_options(sqlite_immediate=True)


def harvest_state_of(store: Store, partner: str, fmt: str = DEFAULT_FORMAT) -> HarvestState:
    """The state of harvesting `partner` in the format `fmt` (each format has its own), with what
    runs learned of the partner in any of its formats."""
    with store.engine.connect() as conn:
        rows = conn.execute(sa.select(harvest_state).where(harvest_state.c.partner == partner)).all()
    learned = _learned([r.learned for r in rows])
    row = next((r for r in rows if r.format == fmt), None)
    if row is None:
        return HarvestState(partner, fmt, learned=learned)
    checkpoint = json.loads(row.checkpoint) if row.checkpoint else None
    return HarvestState(row.partner, row.format, row.next_from, row.next_from_key, checkpoint, learned)


def _learned(values: list[str | None]) -> dict[str, Any] | None:
    """What runs learned of a partner, in any of its formats: how a partner's server behaves is
    the same whatever format is asked of it."""
    merged: dict[str, Any] = {}
    for value in values:
        merged.update(json.loads(value) if value else {})
    return merged or None


def learn(store: Store, partner: str, learned: dict[str, Any], now: int, *, fmt: str = DEFAULT_FORMAT) -> None:
    """Remember `learned` of `partner` (added to what was learned before), for later runs of each
    of its formats to act on at once: `{"granularity": "days", "why": ...}` for a partner that
    refuses times. Kept in the row of the format whose run learned it."""
    with _write_conn(store) as conn, conn.begin():
        row = conn.execute(
            sa.select(harvest_state.c.learned).where(harvest_state.c.partner == partner, harvest_state.c.format == fmt)
        ).first()
        known = json.loads(row.learned) if row is not None and row.learned else {}
        _upsert_state(conn, partner, fmt, {"learned": json.dumps({**known, **learned}), "updated": now})


def _upsert_state(conn: Connection, partner: str, fmt: str, values: dict[str, Any]) -> None:
    updated = conn.execute(
        harvest_state.update().where(harvest_state.c.partner == partner, harvest_state.c.format == fmt).values(**values)
    )
    if updated.rowcount == 0:
        conn.execute(harvest_state.insert().values(partner=partner, format=fmt, **values))


def save_checkpoint_in(
    conn: Connection, partner: str, checkpoint: dict[str, Any] | None, now: int, *, fmt: str = DEFAULT_FORMAT
) -> None:
    """Record where the window stands, inside the transaction that writes the page's records."""
    _upsert_state(conn, partner, fmt, {"checkpoint": json.dumps(checkpoint) if checkpoint else None, "updated": now})


def start_run(
    store: Store,
    partner: str,
    owner: str,
    *,
    started: int,
    from_date: str | None,
    resumed: bool,
    fmt: str = DEFAULT_FORMAT,
) -> int:
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
                format=fmt,
                owner=owner,
                started=started,
                outcome="running",
                from_date=from_date,
                resumed=resumed,
                counts="{}",
            )
        )
        return int(inserted.inserted_primary_key[0])  # type: ignore[index]


def add_run_counts_in(conn: Connection, run_id: int, extra: dict[str, Any]) -> None:
    """Add `extra` to the counts of a run that has ended (its deletion sweep comes after it)."""
    stored = conn.execute(sa.select(harvest_runs.c.counts).where(harvest_runs.c.id == run_id)).scalar_one()
    merged = {**json.loads(stored or "{}"), **extra}
    conn.execute(harvest_runs.update().where(harvest_runs.c.id == run_id).values(counts=json.dumps(merged)))


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
    fmt: str = DEFAULT_FORMAT,
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
        _upsert_state(conn, partner, fmt, values)


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
            r.format,
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


def write_harvested_in(
    store: Store, conn: Connection, stamp: int, chunk: Sequence[Record | Prepared], *, priority: Sequence[str] = ()
) -> WriteResult:
    """Write a partner's records inside a page's transaction (see `Store.write_in`).

    A record held under another source (a local record, or another partner's) is kept either
    way: the one served is local's, else that of the partner first in `priority` (the
    configuration's order); the other is kept in shadowed_records and listed in `shadowed`. A
    record whose exposed content is unchanged keeps its stored `about`, so the provenance served
    (its harvestDate) changes only when the datestamp does.
    """
    return store.write_in(conn, stamp, chunk, guard_source=True, priority=priority)


def shadowed_counts(store: Store) -> dict[str, int]:
    """source -> how many of its records are kept but not served (another source comes first)."""
    with store.engine.connect() as conn:
        rows = conn.execute(
            sa.select(shadowed_records.c.source, sa.func.count()).group_by(shadowed_records.c.source)
        ).all()
    return {source: int(n) for source, n in rows}


class SweepState(NamedTuple):
    """A partner's deletion sweep: when one was last applied, and the drop held back (`held`
    records of its `held_live` live ones, since `held_since`), if any."""

    last_swept: int | None = None
    held: int | None = None
    held_live: int | None = None
    held_since: int | None = None


def write_native_in(
    conn: Connection,
    stamp: int,
    source: str,
    prefix: str,
    chunk: Sequence[Record | Prepared],
    *,
    serve: bool = True,
) -> WriteResult:
    """A partner's records in a further format, kept verbatim per (source, identifier, format),
    in the page's transaction: bytes identical to those stored change nothing (the datestamp
    stays); others replace them, stamped `stamp`. With `serve` (a republished partner), the
    records it serves are served in this format too (`_serve_native_in`)."""
    result = WriteResult()
    given: dict[str, Record] = {}
    for item in chunk:
        record = item.record if isinstance(item, Prepared) else item
        problem = identifier_problem(record.identifier)
        if problem is None:
            given[record.identifier] = record
        else:
            result.rejected.append((record.identifier, problem))
    if not given:
        return result
    key = (native_formats.c.source == source, native_formats.c.prefix == prefix)
    stored = _native_stored(conn, key, sorted(given))
    inserts: list[dict[str, Any]] = []
    updates: list[dict[str, Any]] = []
    for identifier in sorted(given):  # key order: concurrent writers lock rows in one order
        record = given[identifier]
        body = (record.raw_xml or "").encode("utf-8")
        old = stored.get(identifier)
        if old == body:
            result.unchanged += 1
            continue
        values = {"datestamp": stamp, "deleted": record.deleted, "record": body}
        if old is None:
            inserts.append({"source": source, "identifier": identifier, "prefix": prefix, **values})
        else:
            updates.append({"b_identifier": identifier, **values})
    # A statement per table for the page (executemany), as the store's other writes.
    if inserts:
        conn.execute(native_formats.insert(), inserts)
        result.added += len(inserts)
    if updates:
        conn.execute(
            native_formats.update().where(*key, native_formats.c.identifier == sa.bindparam("b_identifier")), updates
        )
        result.changed += len(updates)
    if serve:
        _serve_native_in(conn, stamp, source, prefix, given)
    return result


def _native_stored(conn: Connection, key: tuple[Any, ...], identifiers: list[str]) -> dict[str, bytes]:
    """identifier -> the bytes native_formats holds under `key` (source, prefix), of these."""
    stored: dict[str, bytes] = {}
    for part in _chunks(identifiers):
        rows = conn.execute(
            sa.select(native_formats.c.identifier, native_formats.c.record).where(
                *key, native_formats.c.identifier.in_(part)
            )
        )
        stored.update((identifier, bytes(record)) for identifier, record in rows)
    return stored


def _chunks(values: Sequence[Any], size: int = 500) -> list[list[Any]]:
    """`values` in lists of `size`: the IN lists of one statement each (SQLite caps a
    statement's parameters)."""
    return [list(values[n : n + size]) for n in range(0, len(values), size)]


def _serve_native_in(conn: Connection, stamp: int, source: str, prefix: str, given: dict[str, Record]) -> None:
    """The `formats` rows of the records this source serves, in `prefix`: our header, the
    partner's metadata element byte for byte (oaiserver.native) and the record's provenance
    <about>, so that every list and GetRecord serve them as they serve oai_dc. A served record
    that is deleted has its header alone; one whose partner record here is deleted or has no
    metadata lacks the format. Each row is compared with the one stored and written only if it
    differs (a write of the first format that changes a record drops its rows: written again
    here). A row whose metadata changed restamps its record (`_restamp_in`): datestamps mean
    change, in any format. A statement per table for the page, never one a record."""
    served, stored = _served_in(conn, source, prefix, sorted(given))
    if not served:
        return
    dropped: list[dict[str, Any]] = []
    inserts: list[dict[str, Any]] = []
    changed: dict[int, tuple[Any, bytes]] = {}  # row id -> (its row, the new body in `prefix`)
    for row in served:
        record = given[row.identifier]
        metadata = None if row.deleted or record.deleted else payload(record.raw_xml or "")
        old = stored.get(row.id)
        if metadata is None and not row.deleted:
            if old is not None:
                dropped.append({"rid": row.id})
            continue
        body = record_body(metadata, row.about)
        if old is None:
            values = {"record": with_header(row.header_xml, body), "datestamp": row.datestamp}
            inserts.append({"record_id": row.id, "prefix": prefix, **values})
        elif not old.endswith(body):
            changed[row.id] = (row, body)
    of_record = (formats.c.record_id == sa.bindparam("rid"), formats.c.prefix == prefix)
    if dropped:
        conn.execute(formats.delete().where(*of_record), dropped)
    if inserts:
        conn.execute(formats.insert(), inserts)
    if changed:
        _restamp_in(conn, stamp, prefix, changed)


def _served_in(
    conn: Connection, source: str, prefix: str, identifiers: list[str]
) -> tuple[list[Any], dict[int, bytes]]:
    """The rows of `records` that `source` holds under these identifiers (in key order), and
    their `formats` rows in `prefix` (row id -> bytes)."""
    served: list[Any] = []
    for part in _chunks(identifiers):
        served += conn.execute(
            sa.select(
                records.c.id,
                records.c.identifier,
                records.c.datestamp,
                records.c.deleted,
                records.c.setspecs,
                records.c.header_xml,
                records.c.about,
            ).where(records.c.identifier.in_(part), records.c.source == source)
        ).all()
    served.sort(key=lambda r: r.id)  # key order, as every writer locks rows
    stored: dict[int, bytes] = {}
    for part in _chunks([r.id for r in served]):
        stored.update(
            (rid, bytes(body))
            for rid, body in conn.execute(
                sa.select(formats.c.record_id, formats.c.record).where(
                    formats.c.record_id.in_(part), formats.c.prefix == prefix
                )
            )
        )
    return served, stored


def _restamp_in(conn: Connection, stamp: int, prefix: str, changed: dict[int, tuple[Any, bytes]]) -> None:
    """Served records stamped `stamp` (each one's header, in every format and set, with it):
    their metadata in the further format `prefix` changed, to the body given (row id -> (its
    row, the body)). Statements for all of them at once, rows in key order."""
    headers = {
        rid: header_xml(row.identifier, stamp, row.deleted, row.setspecs.split()) for rid, (row, _) in changed.items()
    }
    conn.execute(
        records.update().where(records.c.id == sa.bindparam("rid")),
        [{"rid": rid, "datestamp": stamp, "header_xml": header} for rid, header in sorted(headers.items())],
    )
    rewritten: list[dict[str, Any]] = []
    for part in _chunks(sorted(changed)):
        for rid, fmt, body in conn.execute(
            sa.select(formats.c.record_id, formats.c.prefix, formats.c.record)
            .where(formats.c.record_id.in_(part))
            .order_by(formats.c.record_id, formats.c.prefix)
        ).all():
            row, new_body = changed[rid]
            # Each row keeps what follows its header; the row of `prefix` gets the new body.
            tail = new_body if fmt == prefix else bytes(body)[len(with_header(row.header_xml, b"")) :]
            rewritten.append({"rid": rid, "fmt": fmt, "record": with_header(headers[rid], tail), "datestamp": stamp})
    if rewritten:
        conn.execute(
            formats.update().where(formats.c.record_id == sa.bindparam("rid"), formats.c.prefix == sa.bindparam("fmt")),
            rewritten,
        )
    conn.execute(
        set_members.update().where(set_members.c.record_id == sa.bindparam("rid")),
        [{"rid": rid, "datestamp": stamp} for rid in sorted(changed)],
    )


def declare_format_in(conn: Connection, source: str, prefix: str, schema: str, namespace: str) -> None:
    """A further format as `source` declared it (its ListMetadataFormats): listed by ours once
    records are served in it. The first declaration of a prefix stands."""
    known = conn.execute(sa.select(harvested_formats.c.prefix).where(harvested_formats.c.prefix == prefix)).first()
    if known is None:
        conn.execute(
            harvested_formats.insert().values(prefix=prefix, schema=schema, namespace=namespace, source=source)
        )


def native_records(store: Store, source: str, prefix: str) -> dict[str, bytes]:
    """A partner's records in a further format, verbatim, by identifier."""
    with store.engine.connect() as conn:
        rows = conn.execute(
            sa.select(native_formats.c.identifier, native_formats.c.record).where(
                native_formats.c.source == source, native_formats.c.prefix == prefix
            )
        )
        return {identifier: bytes(record) for identifier, record in rows}


def sweep_states(store: Store) -> dict[str, SweepState]:
    """partner -> its deletion sweep; a partner never swept is left out."""
    with store.engine.connect() as conn:
        rows = conn.execute(sa.select(harvest_sweeps)).all()
    return {r.partner: SweepState(r.last_swept, r.held, r.held_live, r.held_since) for r in rows}


def save_sweep_in(conn: Connection, partner: str, state: SweepState) -> None:
    """A partner's deletion sweep, inside the transaction that applies it or holds it back."""
    values = state._asdict()
    updated = conn.execute(harvest_sweeps.update().where(harvest_sweeps.c.partner == partner).values(**values))
    if updated.rowcount == 0:
        conn.execute(harvest_sweeps.insert().values(partner=partner, **values))


def held_shapes_in(conn: Connection, identifiers: Sequence[str]) -> dict[str, tuple[list[str], list[str]]]:
    """identifier -> (its setSpecs, the formats it is served in), of the records held under
    these identifiers: what a tombstone keeps, so that a harvester of any of its formats or
    sets sees the deletion."""
    shapes: dict[str, tuple[list[str], list[str]]] = {}
    for n in range(0, len(identifiers), 500):
        part = list(identifiers[n : n + 500])
        stmt = (
            sa.select(records.c.identifier, records.c.setspecs, formats.c.prefix)
            .select_from(records.outerjoin(formats, formats.c.record_id == records.c.id))
            .where(records.c.identifier.in_(part))
        )
        for identifier, setspecs, prefix in conn.execute(stmt):
            prefixes = shapes.setdefault(identifier, (setspecs.split(), []))[1]
            if prefix is not None:
                prefixes.append(prefix)
    return shapes


def live_identifiers(store: Store, source: str) -> set[str]:
    """The identifiers of the live (not deleted) records `source` holds."""
    stmt = sa.select(records.c.identifier).where(records.c.source == source, records.c.deleted == sa.false())
    with store.engine.connect() as conn:
        return set(conn.execute(stmt).scalars())


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


class Quarantined(NamedTuple):
    """A record of a partner that could not be harvested: retried by GetRecord at each run."""

    identifier: str
    reason: str
    first_seen: int
    last_tried: int
    tries: int


def quarantine_in(conn: Connection, partner: str, failures: Sequence[tuple[str, str]], now: int) -> None:
    """Put (identifier, reason) pairs in `partner`'s quarantine, inside the transaction that
    writes their page: a record already there is tried once more, with its new reason."""
    q = harvest_quarantine.c
    for identifier, reason in dict(failures).items():
        where = sa.and_(q.partner == partner, q.identifier == identifier)
        updated = conn.execute(
            harvest_quarantine.update().where(where).values(reason=reason, last_tried=now, tries=q.tries + 1)
        )
        if updated.rowcount == 0:
            conn.execute(
                harvest_quarantine.insert().values(
                    partner=partner, identifier=identifier, reason=reason, first_seen=now, last_tried=now, tries=1
                )
            )


def release_in(conn: Connection, partner: str, identifiers: Sequence[str]) -> int:
    """Take `identifiers` out of `partner`'s quarantine (they were harvested); how many were in it."""
    if not identifiers:
        return 0
    q = harvest_quarantine.c
    gone = conn.execute(harvest_quarantine.delete().where(q.partner == partner, q.identifier.in_(list(identifiers))))
    return int(gone.rowcount)


def quarantined(store: Store, partner: str, limit: int | None = None) -> list[Quarantined]:
    """`partner`'s quarantine, the records tried longest ago first (the order a run retries them)."""
    q = harvest_quarantine.c
    stmt = (
        sa.select(q.identifier, q.reason, q.first_seen, q.last_tried, q.tries)
        .where(q.partner == partner)
        .order_by(q.last_tried, q.identifier)
        .limit(limit)
    )
    with store.engine.connect() as conn:
        return [Quarantined(*row) for row in conn.execute(stmt)]


def quarantine_counts(store: Store) -> dict[str, int]:
    """partner -> the records in its quarantine (partners with none are left out)."""
    q = harvest_quarantine.c
    with store.engine.connect() as conn:
        rows = conn.execute(sa.select(q.partner, sa.func.count()).group_by(q.partner))
        return {partner: int(n) for partner, n in rows}


def harvested_datestamps(store: Store, partner: str, identifiers: Sequence[str]) -> dict[str, str]:
    """identifier -> the datestamp the partner gave the copy of it we hold, for those of
    `identifiers` that `partner` holds: a header with that datestamp needs no GetRecord."""
    if not identifiers:
        return {}
    stmt = sa.select(records.c.identifier, records.c.provenance).where(
        records.c.source == partner, records.c.identifier.in_(list(identifiers))
    )
    with store.engine.connect() as conn:
        rows = conn.execute(stmt).all()
    return {r.identifier: str(json.loads(r.provenance).get("datestamp", "")) for r in rows if r.provenance}


def harvest_summary(store: Store) -> dict[str, dict[str, Any]]:
    """Per partner: runs by outcome, records received and those of them without Dublin Core
    (`without_dc`), the last run and last success times, the
    end of the last complete run (`last_complete`), the shortfall of the last run judged
    complete or short (`shortfall`; None when it was unknown, or no run was judged), the records
    in its quarantine now (`quarantined`), the records a deletion sweep held back
    (`sweep_held`, 0 when none) and its records kept but not served, another source coming first
    (`shadowed`). A run's completeness is what the harvester wrote in its counts
    (harvester.completeness)."""
    summary: dict[str, dict[str, Any]] = {}
    held = quarantine_counts(store)
    shadowed = shadowed_counts(store)
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
                partner,
                {
                    "runs": {},
                    "received": 0,
                    "without_dc": 0,
                    "last_outcome": None,
                    "last_run": None,
                    "last_success": None,
                    "last_complete": None,
                    "shortfall": None,
                    "quarantined": held.get(partner, 0),
                    "sweep_held": 0,
                    "shadowed": shadowed.get(partner, 0),
                },
            )
            data = json.loads(counts or "{}")
            entry["runs"][outcome] = entry["runs"].get(outcome, 0) + 1
            entry["received"] += int(data.get("received", 0))
            entry["without_dc"] += int(data.get("without_dc", 0))
            entry["last_outcome"], entry["last_run"] = outcome, finished or started
            if outcome == "success":
                entry["last_success"] = finished or started
            verdict = (data.get("completeness") or {}).get("verdict")
            if verdict is not None:
                entry["shortfall"] = int(data["completeness"].get("shortfall", 0)) if verdict != "unknown" else None
            if verdict == "complete":
                entry["last_complete"] = finished or started
    for partner, sweep in sweep_states(store).items():
        if partner in summary:  # a sweep follows a run
            summary[partner]["sweep_held"] = sweep.held or 0
    return summary


# ---- the partners' sets -----------------------------------------------------------------------


def partner_set_names(store: Store, partner: str) -> dict[str, str | None]:
    """The sets of `partner` our records are in, by our setSpec, with the partner's name for each."""
    c = partner_sets.c
    with store.engine.connect() as conn:
        rows = conn.execute(sa.select(c.spec, c.name).where(c.partner == partner)).all()
    return {spec: name for spec, name in rows}


def add_partner_sets_in(conn: Connection, partner: str, specs: Sequence[str]) -> None:
    """Sets of `partner` met in its records and not stored yet (unnamed until its ListSets is
    read), inside the transaction that writes their page; the caller holds the partner's lease."""
    if specs:
        conn.execute(partner_sets.insert(), [{"partner": partner, "spec": spec, "name": None} for spec in specs])


def name_partner_sets(store: Store, partner: str, names: dict[str, str]) -> int:
    """Give the stored sets of `partner` the names its ListSets gave (by our setSpec); a set it
    did not name keeps the name it had. Returns how many names changed."""
    c = partner_sets.c
    held = partner_set_names(store, partner)
    changed = {spec: name for spec, name in names.items() if spec in held and held[spec] != name}
    with store.engine.begin() as conn:
        for spec, name in changed.items():
            conn.execute(partner_sets.update().where(c.partner == partner, c.spec == spec).values(name=name))
    return len(changed)
