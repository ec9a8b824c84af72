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
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cmp_to_key
from typing import TYPE_CHECKING, Any, NamedTuple

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from oaiserver.fragments import header_xml, record_body, with_header
from oaiserver.native import about_in, payload
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
from oaiserver.store.write import WriteResult, served_first

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


# A kept copy made servable again: (source, its `<record>` as received, its provenance JSON) ->
# the record to serve (as the harvester converts a record of that source), or None.
Promote = Callable[[str, str, str | None], Record | None]


def write_harvested_in(
    store: Store,
    conn: Connection,
    stamp: int,
    chunk: Sequence[Record | Prepared],
    *,
    priority: Sequence[str] = (),
    promote: Promote | None = None,
) -> WriteResult:
    """Write a partner's records inside a page's transaction (see `Store.write_in`).

    A record held under another source (a local record, or another partner's) is kept either
    way: the one served is local's, else that of the partner first in `priority` (the
    configuration's order), a live record always before a deleted one; the other is kept in
    shadowed_records and listed in `shadowed`. A record whose exposed content is unchanged keeps
    its stored `about`, so the provenance served (its harvestDate) changes only when the
    datestamp does.

    With `promote`, a record of the chunk served deleted whose identifier another source still
    holds live (a kept copy) is served from that source instead, stamped `stamp`: the first in
    `priority` of those `promote` converts (`promote_kept_in`); listed in `promoted`.
    """
    result = store.write_in(conn, stamp, chunk, guard_source=True, priority=priority)
    deleted = [r.identifier for r in (i.record if isinstance(i, Prepared) else i for i in chunk) if r.deleted]
    if promote is not None and deleted:  # a page without deletions costs nothing more
        result.promoted = promote_kept_in(store, conn, stamp, deleted, promote, priority)
    return result


def _vacated(priority: Sequence[str]) -> sa.ColumnElement[bool]:
    """A served record that a live kept copy may replace: a deleted one, or (with `priority`,
    the configured partners) one of a source no longer configured, which comes after them all."""
    if not priority:
        return records.c.deleted
    gone = sa.and_(records.c.source != "local", records.c.source.not_in(list(priority)))
    return sa.or_(records.c.deleted, gone)


def serve_kept_copies_in(
    store: Store, conn: Connection, stamp: int, source: str, promote: Promote, priority: Sequence[str]
) -> list[tuple[str, str]]:
    """The live copies `source` keeps of records served deleted (deleted by hand, by a
    partner that is no longer harvested, locally) or from a source no longer configured:
    served instead (`promote_kept_in`). A harvest runs it at the end of each run, so that
    such a copy is served even though its partner does not send it again. One query to find
    them (shadowed_records' key starts with the source)."""
    s = shadowed_records.c
    stmt = (
        sa.select(s.identifier)
        .join(records, records.c.identifier == s.identifier)
        .where(s.source == source, sa.not_(s.deleted), _vacated(priority))
    )
    identifiers = list(conn.execute(stmt).scalars())
    return promote_kept_in(store, conn, stamp, identifiers, promote, priority) if identifiers else []


def promote_kept_in(
    store: Store, conn: Connection, stamp: int, identifiers: Sequence[str], promote: Promote, priority: Sequence[str]
) -> list[tuple[str, str]]:
    """Of `identifiers`, those whose served record is deleted (or of a source no longer
    configured: `_vacated`) and that another source holds live in shadowed_records: that copy
    served instead (the source first in `priority` of those `promote` converts), in the formats
    that source was harvested in. Returns (identifier, source now served). A statement per
    table, whatever the number of identifiers."""
    kept: dict[str, list[Any]] = {}
    s = shadowed_records.c
    for n in range(0, len(identifiers), 500):
        stmt = (
            sa.select(s.source, s.identifier, s.raw_xml, s.provenance)
            .join(records, records.c.identifier == s.identifier)
            .where(s.identifier.in_(list(identifiers[n : n + 500])), _vacated(priority), sa.not_(s.deleted))
        )
        for row in conn.execute(stmt):
            kept.setdefault(row.identifier, []).append(row)

    def order(a: Any, b: Any) -> int:
        return -1 if served_first(a.source, b.source, priority) else int(served_first(b.source, a.source, priority))

    chosen: dict[str, Record] = {}
    for identifier, copies in sorted(kept.items()):
        for row in sorted(copies, key=cmp_to_key(order)):
            record = promote(row.source, row.raw_xml or "", row.provenance)
            if record is not None and not record.deleted and record.identifier == identifier:
                chosen[identifier] = record
                break
    if not chosen:
        return []
    written = store.write_in(conn, stamp, list(chosen.values()), guard_source=True, priority=priority)
    served = {identifier: source for identifier, source in written.shadowed}  # taken meanwhile: left as is
    promoted = [(i, r.source) for i, r in chosen.items() if i not in served]
    _serve_kept_formats_in(conn, stamp, promoted)
    return promoted


def _serve_kept_formats_in(conn: Connection, stamp: int, promoted: Sequence[tuple[str, str]]) -> None:
    """The further formats of records now served from another source (`promote_kept_in`):
    that source's verbatim copies in native_formats served, as its harvest of them would."""
    if not promoted:
        return
    n = native_formats.c
    wanted = set(promoted)
    by_prefix: dict[tuple[str, str], dict[str, Record]] = {}
    rows = conn.execute(
        sa.select(n.source, n.identifier, n.prefix, n.deleted, n.record).where(
            n.identifier.in_([i for i, _ in promoted])
        )
    )
    for row in rows:
        if (row.identifier, row.source) in wanted:
            record = Record(identifier=row.identifier, deleted=row.deleted, raw_xml=bytes(row.record).decode("utf-8"))
            by_prefix.setdefault((row.source, row.prefix), {})[row.identifier] = record
    declared = dict(conn.execute(sa.select(harvested_formats.c.prefix, harvested_formats.c.namespace)).all())
    for (source, prefix), given in sorted(by_prefix.items()):
        _serve_native_in(conn, stamp, source, prefix, given, declared.get(prefix, ""))


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
    namespace: str = "",
) -> WriteResult:
    """A partner's records in a further format, kept verbatim per (source, identifier, format),
    in the page's transaction: bytes identical to those stored change nothing (the datestamp
    stays); others replace them, stamped `stamp`. With `serve` (a republished partner), the
    records it serves are served in this format too (`_serve_native_in`); `namespace` is the
    format's as the partner declared it (empty: each payload's own)."""
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
    rows = conn.execute(
        sa.select(native_formats.c.identifier, native_formats.c.record).where(
            *key, native_formats.c.identifier.in_(list(given))
        )
    )
    stored = {identifier: bytes(record) for identifier, record in rows}
    inserts: list[dict[str, Any]] = []
    updates: list[dict[str, Any]] = []
    for identifier in sorted(given):  # key order: concurrent writers lock rows in one order
        record = given[identifier]
        body = (record.raw_xml or "").encode("utf-8")
        old = stored.get(identifier)
        values = {"datestamp": stamp, "deleted": record.deleted, "record": body}
        if old is None:
            inserts.append({"source": source, "identifier": identifier, "prefix": prefix, **values})
        elif old != body:
            updates.append({"ident": identifier, **values})
    result.added, result.changed = len(inserts), len(updates)
    result.unchanged = len(given) - len(inserts) - len(updates)
    if inserts:
        conn.execute(native_formats.insert(), inserts)
    if updates:
        conn.execute(native_formats.update().where(*key, native_formats.c.identifier == sa.bindparam("ident")), updates)
    if serve:
        _serve_native_in(conn, stamp, source, prefix, given, namespace)
    return result


def _serve_native_in(
    conn: Connection, stamp: int, source: str, prefix: str, given: dict[str, Record], namespace: str
) -> None:
    """The `formats` rows of the records this source serves, in `prefix`: our header, the
    partner's metadata element byte for byte (oaiserver.native) and the record's provenance
    <about> naming this format's namespace, so that every list and GetRecord serve them as they
    serve oai_dc. A served record that is deleted has its header alone; one whose partner
    record here is deleted or has no metadata lacks the format. Each row is compared with the
    one stored and written only if it differs (a write of the first format that changes a
    record drops its rows: written again here).

    Datestamps mean change, in any format: a live record whose metadata here changed, that is
    served in this format for the first time, or no longer is, is restamped (`_restamp_in`), so
    that an incremental harvester of any format lists it again. One statement per table a page."""
    served = conn.execute(
        sa.select(
            records.c.id,
            records.c.identifier,
            records.c.datestamp,
            records.c.deleted,
            records.c.setspecs,
            records.c.header_xml,
            records.c.about,
        ).where(records.c.identifier.in_(list(given)), records.c.source == source)
    ).all()
    if not served:
        return
    stored = {
        rid: bytes(body)
        for rid, body in conn.execute(
            sa.select(formats.c.record_id, formats.c.record).where(
                formats.c.record_id.in_([r.id for r in served]), formats.c.prefix == prefix
            )
        )
    }
    bodies: dict[int, bytes] = {}  # row id -> the body to store in `prefix`
    drops: list[int] = []
    restamped: list[Any] = []
    for row in sorted(served, key=lambda r: r.id):  # key order, as every writer locks rows
        record = given[row.identifier]
        found = None if row.deleted or record.deleted else payload(record.raw_xml or "")
        old = stored.get(row.id)
        if found is None and not row.deleted:
            if old is not None:
                drops.append(row.id)
                restamped.append(row)
            continue
        body = (
            record_body(found.metadata, about_in(row.about, found.namespace or namespace))
            if found
            else record_body(None, None)
        )
        if old is not None and old.endswith(body):
            continue
        bodies[row.id] = body
        if not row.deleted and (old is not None or row.datestamp != stamp):
            restamped.append(row)
    if drops:
        conn.execute(formats.delete().where(formats.c.prefix == prefix, formats.c.record_id.in_(drops)))
    headers = _restamp_in(conn, stamp, restamped, prefix)
    by_id = {row.id: row for row in served}
    writes = [
        {"rid": rid, "record": with_header(headers.get(rid, by_id[rid].header_xml), body),
         "datestamp": stamp if rid in headers else by_id[rid].datestamp}
        for rid, body in bodies.items()
    ]  # fmt: skip
    updates = [w for w in writes if w["rid"] in stored]
    inserts = [
        {"record_id": w["rid"], "prefix": prefix, "record": w["record"], "datestamp": w["datestamp"]}
        for w in writes
        if w["rid"] not in stored
    ]
    if updates:
        of_record = (formats.c.record_id == sa.bindparam("rid"), formats.c.prefix == prefix)
        conn.execute(formats.update().where(*of_record), updates)
    if inserts:
        conn.execute(formats.insert(), inserts)


def _restamp_in(conn: Connection, stamp: int, rows: Sequence[Any], prefix: str) -> dict[int, str]:
    """Served records stamped `stamp` (their header, in every format but `prefix`, which the
    caller writes, and in every set, with it); returns row id -> the new header."""
    if not rows:
        return {}
    headers = {row.id: header_xml(row.identifier, stamp, row.deleted, row.setspecs.split()) for row in rows}
    old_start = {row.id: len(with_header(row.header_xml, b"")) for row in rows}
    ids = list(headers)
    conn.execute(
        records.update().where(records.c.id == sa.bindparam("rid")),
        [{"rid": rid, "datestamp": stamp, "header_xml": header} for rid, header in headers.items()],
    )
    others = conn.execute(
        sa.select(formats.c.record_id, formats.c.prefix, formats.c.record).where(
            formats.c.record_id.in_(ids), formats.c.prefix != prefix
        )
    ).all()
    if others:
        conn.execute(
            formats.update().where(formats.c.record_id == sa.bindparam("rid"), formats.c.prefix == sa.bindparam("p")),
            [
                {
                    "rid": rid,
                    "p": p,
                    "record": with_header(headers[rid], bytes(body)[old_start[rid] :]),
                    "datestamp": stamp,
                }
                for rid, p, body in others
            ],
        )
    conn.execute(set_members.update().where(set_members.c.record_id.in_(ids)).values(datestamp=stamp))
    return headers


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
