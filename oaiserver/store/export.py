"""Export and import: the whole store as plain rows, read through one snapshot (`oaiserver.dump`
writes and reads the files)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any, NamedTuple

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from oaiserver.records import Record
from oaiserver.rows import content_hash
from oaiserver.store.read import _metadata, record_of_row
from oaiserver.store.schema import (
    formats,
    harvest_quarantine,
    harvest_runs,
    harvest_state,
    harvested_formats,
    native_formats,
    partner_sets,
    records,
    settings,
    shadowed_records,
)

if TYPE_CHECKING:
    from oaiserver.store import Store

# Tables carried by an export besides records, with the order that makes an export
# deterministic. Surrogate keys are left out (an import numbers rows afresh, in order), and so
# are harvest leases and the schedulers' due times (`harvest_due`), which only mean something to
# the processes that hold them.
EXPORTED_TABLES: dict[str, tuple[sa.Table, tuple[str, ...]]] = {
    "settings": (settings, ("key",)),
    "harvest_state": (harvest_state, ("partner", "format")),
    "harvest_runs": (harvest_runs, ("id",)),
    "harvest_quarantine": (harvest_quarantine, ("partner", "identifier")),
    "partner_sets": (partner_sets, ("partner", "spec")),
    "harvested_formats": (harvested_formats, ("prefix",)),
    # A row per record of a partner in a further format, and per record kept but not served:
    # as many as the records, so an import leaves refusing a key met twice to the tables' keys.
    "native_formats": (native_formats, ("source", "identifier", "prefix")),
    "shadowed_records": (shadowed_records, ("source", "identifier")),
}


class Stored(NamedTuple):
    """A record as an export carries it: with the content hash the store holds for it, its
    metadata the formats that hash covers, and apart (`further`) those it is served in from its
    partner's records in further formats, which `write_native_in` adds beside the record
    without touching its hash (prefix -> fragment, "" for a tombstone's)."""

    record: Record
    content_hash: str
    further: dict[str, str]


def iter_records(store: Store, batch: int = 1000) -> Iterator[Record]:
    """Every record, tombstones included, in identifier order (keyset paging, bounded memory),
    with every format it is served in."""
    with store.snapshot() as conn:
        for record, _, further in iter_stored_in(conn, batch):
            record.metadata = dict(sorted({**record.metadata, **further}.items()))
            yield record


def iter_stored_in(conn: Connection, batch: int = 1000) -> Iterator[Stored]:
    """`iter_records` with each record's stored content hash, which an import checks, read
    through `conn` (a `Store.snapshot()`, so that the batches are of one moment)."""
    last: str | None = None
    while True:
        stmt = sa.select(records).order_by(records.c.identifier).limit(batch)
        if last is not None:
            stmt = stmt.where(records.c.identifier > last)
        rows = conn.execute(stmt).all()
        if not rows:
            return
        ids = [r.id for r in rows]
        fmts: dict[int, dict[str, str]] = {}
        about = {r.id: r.about for r in rows}
        for f in conn.execute(sa.select(formats).where(formats.c.record_id.in_(ids))):
            fmts.setdefault(f.record_id, {})[f.prefix] = _metadata(f.record, about[f.record_id]) or ""
        native: dict[tuple[str, str], set[str]] = {}
        n = native_formats.c
        by_source: dict[str, list[str]] = {}
        for r in rows:
            by_source.setdefault(r.source, []).append(r.identifier)
        for source, identifiers in sorted(by_source.items()):  # on the primary key: source, identifier
            for identifier, prefix in conn.execute(
                sa.select(n.identifier, n.prefix).where(n.source == source, n.identifier.in_(identifiers))
            ):
                native.setdefault((source, identifier), set()).add(prefix)
        for row in rows:
            record = record_of_row(row, dict(sorted(fmts.get(row.id, {}).items())))
            yield _split(record, row.content_hash, native.get((row.source, row.identifier), set()))
        last = rows[-1].identifier


def _split(record: Record, digest: str, native: set[str]) -> Stored:
    """The record with the formats its content hash covers, and apart those served from its
    source's records in further formats (`native`: the prefixes it holds them in). A tombstone
    made by a deletion covers every format it had; a live record, those written with it. When
    neither split gives the stored hash, the record keeps every format, and an export reports
    it (changed behind the store's back)."""
    further = {p: x for p, x in record.metadata.items() if p in native}
    if not further or content_hash(record) == digest:
        return Stored(record, digest, {})
    own = replace(record, metadata={p: x for p, x in record.metadata.items() if p not in native})
    if content_hash(own) != digest:
        return Stored(record, digest, {})
    return Stored(own, digest, further)


def exported_columns(table: sa.Table) -> list[sa.Column[Any]]:
    """A table's columns as an export carries them: surrogate keys are numbered afresh."""
    return [c for c in table.c if not (c.primary_key and c.autoincrement is True)]


def table_rows_in(conn: Connection, name: str, batch: int = 1000) -> Iterator[dict[str, Any]]:
    """An exported table's rows in key order, read through `conn` (an export's snapshot) a
    batch at a time (a table of partners' records is as long as the records)."""
    table, order = EXPORTED_TABLES[name]
    stmt = sa.select(*exported_columns(table)).order_by(*(table.c[k] for k in order))
    for row in conn.execute(stmt.execution_options(yield_per=batch)):
        # bytes(): a driver may hand BYTEA over as a memoryview
        yield {k: bytes(v) if isinstance(v, memoryview) else v for k, v in row._mapping.items()}


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
