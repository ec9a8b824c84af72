"""The store's schema: its tables, and the numbered migrations that bring a store to them.

The harvester's tables (`harvest_state`, `harvest_runs`, `harvest_quarantine`, `harvest_leases`,
`harvest_due`, `harvest_sweeps`) are declared here too, though only `harvester_state.py` and
`harvest_due.py` read and write them: one `MetaData`, so that migration 1 makes every table and a
migration sees the whole schema it changes.
"""

from __future__ import annotations

import json
from collections.abc import Callable

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from oaiserver.store import list_counts as counted
from oaiserver.store import search

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

# How many records each list holds (spec '': the whole list of a prefix), kept by triggers
# (list_counts.py): a list's first page reads its completeListSize rather than counting.
list_counts = sa.Table(
    "list_counts",
    meta,
    sa.Column("prefix", sa.String(100), primary_key=True),
    sa.Column("spec", sa.String(400), primary_key=True),
    sa.Column("part", sa.Integer, primary_key=True),  # 0, or the PostgreSQL backend that added it
    sa.Column("n", sa.BigInteger, nullable=False),
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
# The clock lock's keys, as SQL: the store's own, by the OID of its records table (in the schema its
# search_path names), so that a list frozen on one store never waits for the writes of another
# store in the same database, nor queues the writers of this one behind those.
PG_CLOCK_KEY = f"{PG_CLOCK_LOCK}, 'records'::regclass::oid::int"
PG_SCHEMA_LOCK = 0x0A1_5C4E  # advisory lock key for creating and migrating the schema


harvest_state = sa.Table(
    "harvest_state",
    meta,
    sa.Column("partner", sa.String(200), primary_key=True),
    # Each format of a partner is harvested on its own: its own `from`, checkpoint and runs.
    sa.Column("format", sa.String(100), primary_key=True),
    # The partner's responseDate of the first request of the last complete run.
    sa.Column("next_from", sa.String(40)),
    # Which list (prefix, sets, republish) `next_from` belongs to: another list starts afresh.
    sa.Column("next_from_key", sa.Text),
    sa.Column("checkpoint", sa.Text),  # JSON: the window in progress (token, counts), or NULL
    sa.Column("updated", sa.BigInteger, nullable=False),
    # JSON: what runs learned of the partner and later runs act on at once (harvester.harvest:
    # `granularity` "days" for a partner that refuses a time in `from`), or NULL.
    sa.Column("learned", sa.Text),
)

harvest_runs = sa.Table(
    "harvest_runs",
    meta,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),  # not exported: renumbered
    sa.Column("partner", sa.String(200), nullable=False),
    sa.Column("format", sa.String(100)),  # the metadataPrefix harvested (NULL: a run before migration 8)
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

# Records of a partner that could not be harvested (unreadable, refused by the strict checks, not
# storable), by identifier: retried by GetRecord at the start of each run until one reads.
harvest_quarantine = sa.Table(
    "harvest_quarantine",
    meta,
    sa.Column("partner", sa.String(200), primary_key=True),
    sa.Column("identifier", sa.Text, primary_key=True),  # as the partner sent it, however long
    sa.Column("reason", sa.Text, nullable=False),  # why it failed last
    sa.Column("first_seen", sa.BigInteger, nullable=False),
    sa.Column("last_tried", sa.BigInteger, nullable=False),
    sa.Column("tries", sa.Integer, nullable=False, default=1),
)

harvest_leases = sa.Table(
    "harvest_leases",
    meta,
    sa.Column("partner", sa.String(200), primary_key=True),
    sa.Column("owner", sa.String(200), nullable=False),
    sa.Column("expires", sa.BigInteger, nullable=False),
)

# When each scheduled partner is next due, shared by every `harvester schedule` on the store
# (harvest_due.py): the scheduler that claims a due harvest runs it and sets the next due time.
harvest_due = sa.Table(
    "harvest_due",
    meta,
    sa.Column("partner", sa.String(200), primary_key=True),
    sa.Column("due_at", sa.BigInteger, nullable=False),
    sa.Column("claimed_by", sa.String(200)),  # the scheduler running the due harvest, or NULL
    sa.Column("claimed_until", sa.BigInteger),  # its claim lapses after this second unless renewed
    sa.Column("ran_at", sa.BigInteger),  # when the last due harvest started, and by which scheduler
    sa.Column("ran_by", sa.String(200)),
)


# Per partner, its deletion sweep (harvester.sweep): when one was last applied, and the drop
# held back for a person (none: NULL), with the share of the partner's live records it is and when.
harvest_sweeps = sa.Table(
    "harvest_sweeps",
    meta,
    sa.Column("partner", sa.String(200), primary_key=True),
    sa.Column("last_swept", sa.BigInteger),
    sa.Column("held", sa.Integer),  # records the held-back sweep would turn into tombstones
    sa.Column("held_live", sa.Integer),  # the partner's live records then
    sa.Column("held_since", sa.BigInteger),
)

# The sets of partners that our records are in (`partners:<name>:<the partner's setSpec>`, and
# each of its ancestors under `partners:<name>`), with the name the partner's ListSets gives the
# set (NULL: not named there). Written by the harvester; ListSets lists them.
partner_sets = sa.Table(
    "partner_sets",
    meta,
    sa.Column("partner", sa.String(200), primary_key=True),
    sa.Column("spec", sa.String(400), primary_key=True),  # ours, as a record's header gives it
    sa.Column("name", sa.Text),
)

# A partner's records in each format after its first, verbatim (the `<record>` as received), per
# (source, identifier, format): the record in the partner's first format is the one in `records`.
native_formats = sa.Table(
    "native_formats",
    meta,
    sa.Column("source", sa.String(200), primary_key=True),
    sa.Column("identifier", sa.String(1024), primary_key=True),
    sa.Column("prefix", sa.String(100), primary_key=True),
    sa.Column("datestamp", sa.BigInteger, nullable=False),  # when these bytes were first stored
    sa.Column("deleted", sa.Boolean, nullable=False, default=False),
    sa.Column("record", sa.LargeBinary, nullable=False),  # UTF-8
    sa.Index("ix_native_formats_prefix_datestamp", "prefix", "datestamp", "identifier"),
)

# The further formats partners declared (their ListMetadataFormats' schema and namespace), by
# prefix: ListMetadataFormats lists them beside the registry's (oaiserver.formats) once records
# are served in them (the `formats` rows written beside native_formats, harvester_state.py).
# One declaration a prefix: the first partner's stands.
harvested_formats = sa.Table(
    "harvested_formats",
    meta,
    sa.Column("prefix", sa.String(100), primary_key=True),
    sa.Column("schema", sa.Text, nullable=False),
    sa.Column("namespace", sa.Text, nullable=False),
    sa.Column("source", sa.String(200), nullable=False),  # the partner that declared it first
)

# Records of a source that another source, earlier in the priority, serves under the same
# identifier (store/write.py: who wins): kept, verbatim as received, never served. `records`
# stays the served view, one row per identifier, so lists stay keyset paged over one table.
shadowed_records = sa.Table(
    "shadowed_records",
    meta,
    sa.Column("source", sa.String(200), primary_key=True),
    sa.Column("identifier", sa.String(1024), primary_key=True),
    sa.Column("datestamp", sa.BigInteger, nullable=False),  # when this content was first stored
    sa.Column("deleted", sa.Boolean, nullable=False, default=False),
    sa.Column("content_hash", sa.String(64), nullable=False),
    sa.Column("raw_xml", sa.Text),
    sa.Column("provenance", sa.Text),
)

Migration = Callable[[Connection], None]

# PostgreSQL: the columns that hold a record whole or a large part of it (its XML as served or as
# received, its text, its words for the search, its provenance), compressed with lz4 rather than
# pglz when a row outgrows a quarter of a page and PostgreSQL compresses it: lz4 compresses
# several times faster, for a little less saved, and a harvest writes these columns for every
# record it stores (harvested rows of bench/harvest_ab.py's data set, inserted again: 28 ms of
# PostgreSQL's CPU per 1,000 records and their formats rows against 64, in 4 % more space; lists
# served from them: 18.0 ms of CPU per 1,000 records against 21.5, the backends' included). A
# server built without lz4 keeps pglz (`_lz4_available`).
LZ4_COLUMNS: dict[str, tuple[str, ...]] = {
    "records": ("dc", "fulltext", "raw_xml", "provenance", "about", "header_xml"),
    "formats": ("record",),
    "native_formats": ("record",),
    "shadowed_records": ("raw_xml", "provenance"),
}


def _lz4_available(conn: Connection) -> bool:
    """Whether the store is on a PostgreSQL server built with lz4 (PostgreSQL 14 and later)."""
    if conn.dialect.name != "postgresql":
        return False
    lz4 = "SELECT 1 FROM pg_settings WHERE name = 'default_toast_compression' AND 'lz4' = ANY(enumvals)"
    return conn.exec_driver_sql(lz4).first() is not None


def compress_with_lz4(conn: Connection) -> None:
    """`LZ4_COLUMNS` compressed with lz4, where the server has it (else nothing): the values
    written from now on; those stored already keep their compression (nothing is rewritten).
    The tables are those of the store's schema, found by the connection's search_path."""
    if not _lz4_available(conn):
        return
    for table, columns in LZ4_COLUMNS.items():
        changes = ", ".join(f"ALTER COLUMN {column} SET COMPRESSION lz4" for column in columns)
        conn.exec_driver_sql(f"ALTER TABLE {table} {changes}")


def _schema_from_metadata(conn: Connection) -> None:
    """Migration 1: the tables and indexes this module declares (those not there yet), and the
    search index (`search.create_index`: a table of each backend's own kind, not in `meta`), the
    triggers that keep `list_counts`, and on PostgreSQL the large columns compressed with lz4."""
    meta.create_all(conn)
    search.create_index(conn)
    counted.create_triggers(conn)
    compress_with_lz4(conn)


def _search_index(conn: Connection) -> None:
    """Migration 2: the search index, filled with the words of the records already stored."""
    search.create_index(conn)
    search.fill_index(conn)


def _quarantine(conn: Connection) -> None:
    """Migration 3: the harvest quarantine (records of partners that could not be harvested)."""
    harvest_quarantine.create(conn, checkfirst=True)


def _harvest_due(conn: Connection) -> None:
    """Migration 4: the schedulers' shared due times (empty: each partner is due when a
    scheduler next fires for it)."""
    harvest_due.create(conn, checkfirst=True)


def _sweep_table(conn: Connection) -> None:
    """Migration 5: the deletion sweeps' table."""
    harvest_sweeps.create(conn, checkfirst=True)


def _learned(conn: Connection) -> None:
    """Migration 6: what the harvester learned of each partner (harvest_state.learned). A store
    whose tables migration 1 made from this module's tables has it already."""
    if "learned" not in {c["name"] for c in sa.inspect(conn).get_columns("harvest_state")}:
        conn.execute(sa.text("ALTER TABLE harvest_state ADD COLUMN learned TEXT"))


def _partner_sets(conn: Connection) -> None:
    """Migration 7: the partners' sets (empty: filled by the next harvest of each partner)."""
    partner_sets.create(conn, checkfirst=True)


def _harvest_per_format(conn: Connection) -> None:
    """Migration 8: harvest state per (partner, format), the format of each run, the table of
    partners' further formats, and that of records another source is served before. A
    partner's state is its one format's: the prefix its window key names (`[prefix, sets,
    republish]`), oai_dc when it has none. (A store whose tables migration 1 made at this
    version already has them: then each step is skipped.)"""
    state_columns = {c["name"] for c in sa.inspect(conn).get_columns("harvest_state")}
    if "format" not in state_columns:
        old = sa.Table("harvest_state", sa.MetaData(), autoload_with=conn)
        rows = [dict(r._mapping) for r in conn.execute(sa.select(old))]
        old.drop(conn)
        harvest_state.create(conn)
        for row in rows:
            key = row["next_from_key"] or (json.loads(row["checkpoint"]).get("key") if row["checkpoint"] else None)
            row["format"] = json.loads(key)[0] if key else "oai_dc"
        if rows:
            conn.execute(harvest_state.insert(), rows)
    if "format" not in {c["name"] for c in sa.inspect(conn).get_columns("harvest_runs")}:
        conn.execute(sa.text("ALTER TABLE harvest_runs ADD COLUMN format VARCHAR(100)"))
    native_formats.create(conn, checkfirst=True)
    shadowed_records.create(conn, checkfirst=True)


def _harvested_formats(conn: Connection) -> None:
    """Migration 9: the formats partners declared (empty: each is declared again by the next
    harvest of a further format)."""
    harvested_formats.create(conn, checkfirst=True)


def _list_counts(conn: Connection) -> None:
    """Migration 10: each list's size kept as records are written (list_counts.py), counted
    once here for the records already stored."""
    list_counts.create(conn, checkfirst=True)
    counted.create_triggers(conn)
    counted.fill(conn)


def _lz4_compression(conn: Connection) -> None:
    """Migration 11: on PostgreSQL, the large columns (`LZ4_COLUMNS`) compressed with lz4 rather
    than pglz. Only values written after it are: the rows stored already keep theirs (pglz),
    as nothing is rewritten: the step changes the catalogue alone, over in a moment whatever
    the size of the store (it takes the tables' exclusive lock, so it waits for the reads in
    flight and holds the next ones back until it commits). A value written later, a stored
    record's included, is compressed with lz4. On a PostgreSQL server built without lz4, and on
    SQLite, the step does nothing (the store still gets its number)."""
    compress_with_lz4(conn)


# Schema changes, numbered, applied in order. A new store is made from the tables above, which
# always describe the latest schema, and gets the last number; a store at an earlier number gets
# each later step. Changing the schema is changing the tables above *and* appending the step
# that brings a store of the previous number to them (never "inspect the columns and patch").
MIGRATIONS: tuple[tuple[int, Migration], ...] = (
    (1, _schema_from_metadata),
    (2, _search_index),
    (3, _quarantine),
    (4, _harvest_due),
    (5, _sweep_table),
    (6, _learned),
    (7, _partner_sets),
    (8, _harvest_per_format),
    (9, _harvested_formats),
    (10, _list_counts),
    (11, _lz4_compression),
)
