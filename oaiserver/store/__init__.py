"""The record store: the one place records live, and the only package that writes SQL.

SQLAlchemy Core over SQLite (WAL, the embedded default) or PostgreSQL (for scale); the same
code serves both. Two rules shape it:

* Datestamps mean change. A write whose exposed content (metadata fragments, sets, deleted
  flag) hashes the same as what is stored changes nothing.
* A list frozen at time T never misses a write. Writers take a shared "clock" lock and stamp
  their changes only after acquiring it; `freeze()` takes the lock exclusively, so every
  write stamped before T has committed when it returns, and every later write is stamped at
  T or after. Lists run with `until = T - 1`.

Its modules, one concern each: `schema` (tables, migrations), `engine` (opening a database,
the errors that say why it cannot be), `transactions` (what reads and writes share: the
engine, the write clock), `write`, `read`, `search` (the words of records, for people),
`stored_settings`, `export` (the whole store as rows), `harvester_state` (the harvester's),
`harvest_due` (when the schedulers next harvest each partner) and `list_counts` (each list's
size, kept by triggers as records are written, so a list's first page reads its
completeListSize rather than counting the list).
Every name importers use is importable from here.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

# The protocol's word for a list, defined in records; importable from here too.
from oaiserver.records import ListQuery as ListQuery

# Row preparation lives in oaiserver.rows (the harvest worker uses it without SQLAlchemy); its
# names stay importable from here.
from oaiserver.rows import Prepared as Prepared
from oaiserver.rows import ancestors as ancestors
from oaiserver.rows import content_hash as content_hash
from oaiserver.rows import encode_dc as encode_dc
from oaiserver.rows import prepare as prepare
from oaiserver.store.engine import StoreNotOpen, StoreTooNew, StoreUnavailable, _cause, make_engine
from oaiserver.store.export import (
    EXPORTED_TABLES,
    Stored,
    exported_columns,
    insert_rows_in,
    is_empty_in,
    iter_records,
    iter_stored_in,
    last_record_id_in,
    record_ids_in,
    table_rows_in,
)
from oaiserver.store.harvest_due import (
    DueSlot,
    bring_forward,
    claim_due,
    due_slot,
    due_slots,
    finish_due,
    ran_unsettled,
    release_claim,
    renew_claim,
)
from oaiserver.store.harvester_state import (
    KEEP,
    HarvestRun,
    HarvestState,
    HeldRecords,
    Quarantined,
    SweepState,
    acquire_lease,
    add_partner_sets_in,
    add_run_counts_in,
    close_interrupted_run,
    declare_format_in,
    finish_run,
    harvest_history,
    harvest_state_of,
    harvest_summary,
    harvested_datestamps,
    held_shapes_in,
    learn,
    leases,
    live_identifiers,
    name_partner_sets,
    native_records,
    partner_set_names,
    quarantine_counts,
    quarantine_in,
    quarantined,
    records_held,
    release_in,
    release_lease,
    renew_lease_in,
    save_checkpoint_in,
    save_run_counts_in,
    save_sweep_in,
    serve_kept_copies_in,
    shadowed_counts,
    start_run,
    sweep_states,
    write_harvested_in,
    write_native_in,
)
from oaiserver.store.read import Reads, decode_dc
from oaiserver.store.schema import (
    MIGRATIONS,
    PG_CLOCK_KEY,
    PG_CLOCK_LOCK,
    PG_SCHEMA_LOCK,
    Migration,
    formats,
    harvest_due,
    harvest_leases,
    harvest_quarantine,
    harvest_runs,
    harvest_state,
    harvest_sweeps,
    meta,
    records,
    schema_version,
    set_members,
    settings,
)
from oaiserver.store.search import Hit, Searches
from oaiserver.store.stored_settings import Settings
from oaiserver.store.write import WriteResult, Writes, collector_paused


class Store(Writes, Reads, Searches, Settings):
    """Records and their state, over one SQLAlchemy engine.

    One object (what the protocol's `RecordSource` describes, and what a test patches), its
    methods kept by purpose in the package's modules: `write.Writes`, `read.Reads`,
    `search.Searches`, `stored_settings.Settings`, over `transactions.Transactions` (opening, the write clock).
    """


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


__all__ = [
    "EXPORTED_TABLES",
    "KEEP",
    "MIGRATIONS",
    "PG_CLOCK_KEY",
    "PG_CLOCK_LOCK",
    "PG_SCHEMA_LOCK",
    "DueSlot",
    "HarvestRun",
    "HarvestState",
    "HeldRecords",
    "Hit",
    "ListQuery",
    "Migration",
    "Prepared",
    "Quarantined",
    "Store",
    "StoreNotOpen",
    "StoreTooNew",
    "StoreUnavailable",
    "Stored",
    "SweepState",
    "WriteResult",
    "acquire_lease",
    "add_partner_sets_in",
    "add_run_counts_in",
    "ancestors",
    "bring_forward",
    "claim_due",
    "close_interrupted_run",
    "collector_paused",
    "content_hash",
    "declare_format_in",
    "decode_dc",
    "due_slot",
    "due_slots",
    "encode_dc",
    "exported_columns",
    "finish_due",
    "finish_run",
    "formats",
    "harvest_due",
    "harvest_history",
    "harvest_leases",
    "harvest_quarantine",
    "harvest_runs",
    "harvest_state",
    "harvest_state_of",
    "harvest_summary",
    "harvest_sweeps",
    "harvested_datestamps",
    "held_shapes_in",
    "insert_rows_in",
    "is_empty_in",
    "iter_records",
    "iter_stored_in",
    "last_record_id_in",
    "learn",
    "leases",
    "live_identifiers",
    "make_engine",
    "meta",
    "name_partner_sets",
    "native_records",
    "open_store",
    "partner_set_names",
    "prepare",
    "quarantine_counts",
    "quarantine_in",
    "quarantined",
    "ran_unsettled",
    "record_ids_in",
    "records",
    "records_held",
    "release_claim",
    "release_in",
    "release_lease",
    "renew_claim",
    "renew_lease_in",
    "save_checkpoint_in",
    "save_run_counts_in",
    "save_sweep_in",
    "schema_version",
    "serve_kept_copies_in",
    "set_members",
    "settings",
    "shadowed_counts",
    "start_run",
    "sweep_states",
    "table_rows_in",
    "write_harvested_in",
    "write_native_in",
]
