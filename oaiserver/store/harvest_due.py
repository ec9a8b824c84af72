"""When each scheduled partner is next due: one row per partner, shared by every `harvester
schedule` process on the store, written by the harvester only.

Every scheduler fires its own timer for every partner. The first to find the partner due claims
its due harvest (`claim_due`: one conditional UPDATE, so of processes racing on PostgreSQL or
SQLite only one wins), runs it, and sets the next due time (`finish_due`); the others find the
harvest claimed, or no longer due, and skip it. So a due harvest runs once, however many
schedulers fire for it. A claim lasts `ttl` seconds unless renewed (the scheduler renews it with
every page): the due harvest of a scheduler killed mid-run is free again after that.

Times are seconds since the epoch, read from the schedulers' own clocks, as leases are.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from oaiserver.store.schema import harvest_due, harvest_runs

if TYPE_CHECKING:
    from oaiserver.store import Store


@dataclass(frozen=True)
class DueSlot:
    """A partner's row: when it is due, who holds its due harvest, who ran the last one."""

    partner: str
    due_at: int
    claimed_by: str | None = None
    claimed_until: int | None = None
    ran_at: int | None = None
    ran_by: str | None = None

    def claimed_at(self, now: int) -> bool:
        """Whether a claim holds at `now` (through its `claimed_until` second)."""
        return self.claimed_by is not None and self.claimed_until is not None and self.claimed_until >= now


def _write_conn(store: Store) -> Connection:
    """A connection whose transactions take SQLite's write lock at BEGIN: a read then a write in
    one transaction is never refused half-way because another process wrote meanwhile."""
    return store.engine.connect().execution_options(sqlite_immediate=True)


def _slot(row: sa.Row[tuple[object, ...]]) -> DueSlot:
    return DueSlot(row.partner, row.due_at, row.claimed_by, row.claimed_until, row.ran_at, row.ran_by)


def due_slot(store: Store, partner: str) -> DueSlot | None:
    """`partner`'s row, or None when no scheduler has fired for it yet."""
    with store.engine.connect() as conn:
        row = conn.execute(sa.select(harvest_due).where(harvest_due.c.partner == partner)).first()
    return None if row is None else _slot(row)


def due_slots(store: Store) -> dict[str, DueSlot]:
    """Every partner's row, by partner."""
    with store.engine.connect() as conn:
        return {row.partner: _slot(row) for row in conn.execute(sa.select(harvest_due))}


def claim_due(store: Store, partner: str, owner: str, *, now: int, ttl: int) -> int | None:
    """Claim `partner`'s due harvest for `owner` until `now + ttl`; the due time claimed, or None
    when it is not due yet or another claim holds it. A partner without a row is due `now`.

    The UPDATE's condition decides: on PostgreSQL a second process updating the row waits for
    the first to commit, then finds the claim taken and updates nothing; SQLite writes one
    transaction at a time. Two processes inserting a new partner's row: the second's insert fails.
    """
    free = sa.or_(harvest_due.c.claimed_until.is_(None), harvest_due.c.claimed_until < now)
    with _write_conn(store) as conn:
        with conn.begin():
            claimed = conn.execute(
                harvest_due.update()
                .where(harvest_due.c.partner == partner, harvest_due.c.due_at <= now, free)
                .values(claimed_by=owner, claimed_until=now + ttl)
            )
            if claimed.rowcount == 1:
                return int(
                    conn.execute(sa.select(harvest_due.c.due_at).where(harvest_due.c.partner == partner)).scalar_one()
                )
            if conn.execute(sa.select(harvest_due.c.partner).where(harvest_due.c.partner == partner)).first():
                return None
        try:
            with conn.begin():
                conn.execute(
                    harvest_due.insert().values(partner=partner, due_at=now, claimed_by=owner, claimed_until=now + ttl)
                )
        except sa.exc.IntegrityError:  # another scheduler inserted it first, with its claim
            return None
        return now


def renew_claim(store: Store, partner: str, owner: str, *, now: int, ttl: int) -> bool:
    """Extend `owner`'s claim to `now + ttl`; False when it holds none (it lapsed and was taken)."""
    with _write_conn(store) as conn, conn.begin():
        renewed = conn.execute(
            harvest_due.update()
            .where(harvest_due.c.partner == partner, harvest_due.c.claimed_by == owner)
            .values(claimed_until=now + ttl)
        )
        return renewed.rowcount == 1


def release_claim(store: Store, partner: str, holder: str) -> bool:
    """Give up `holder`'s claim, leaving the harvest due (it did not run, or `holder` is gone);
    False when `holder` held none."""
    with _write_conn(store) as conn, conn.begin():
        released = conn.execute(
            harvest_due.update()
            .where(harvest_due.c.partner == partner, harvest_due.c.claimed_by == holder)
            .values(claimed_by=None, claimed_until=None)
        )
        return released.rowcount == 1


def finish_due(
    store: Store,
    partner: str,
    owner: str,
    *,
    ran_at: int,
    next_due: int,
    ran_by: str | None = None,
    due_at: int | None = None,
) -> bool:
    """The due harvest `owner` claimed has run (it started at `ran_at`, run by `ran_by`, by
    default `owner`): the partner is next due at `next_due`. With `due_at`, the harvest claimed
    for that due time: also set when the claim lapsed and was given back meanwhile (another
    scheduler took it over, found the partner busy with this very harvest and let it go).
    False when another scheduler holds the claim, or the partner is due at another time."""
    mine = harvest_due.c.claimed_by == owner
    if due_at is not None:
        mine = sa.or_(mine, sa.and_(harvest_due.c.claimed_by.is_(None), harvest_due.c.due_at == due_at))
    with _write_conn(store) as conn, conn.begin():
        finished = conn.execute(
            harvest_due.update()
            .where(harvest_due.c.partner == partner, mine)
            .values(due_at=next_due, ran_at=ran_at, ran_by=ran_by or owner, claimed_by=None, claimed_until=None)
        )
        return finished.rowcount == 1


def ran_unsettled(store: Store, partner: str, holder: str, *, since: int, formats: Sequence[str]) -> int | None:
    """When `holder` ran `partner`'s due harvest to its end but did not set the next due time
    (its scheduler died in between, or its claim lapsed): the start of that harvest. One harvest
    runs its `formats` in order, so its runs are `holder`'s last ones of the partner: one of each
    format, in that order, the first started at `since` or later, each ended a success or
    partial. None otherwise: a failed run, one cut short or a format not run count as not run,
    so the harvest runs again."""
    runs_c = harvest_runs.c
    with store.engine.connect() as conn:
        rows = conn.execute(
            sa.select(runs_c.format, runs_c.started, runs_c.outcome)
            .where(runs_c.partner == partner, runs_c.owner == holder)
            .order_by(runs_c.id.desc())
            .limit(len(formats))
        ).all()[::-1]
    if not rows or [row.format for row in rows] != list(formats) or rows[0].started < since:
        return None
    if any(row.outcome not in ("success", "partial") for row in rows):
        return None
    return int(rows[0].started)


def bring_forward(store: Store, partner: str, due_at: int) -> bool:
    """Make `partner` due at `due_at` if it is due later (its schedule was shortened since its
    due time was set); False when it is due by then already, or has no row."""
    with _write_conn(store) as conn, conn.begin():
        moved = conn.execute(
            harvest_due.update()
            .where(harvest_due.c.partner == partner, harvest_due.c.due_at > due_at)
            .values(due_at=due_at)
        )
        return moved.rowcount == 1
