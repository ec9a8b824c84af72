"""Deletions a partner does not report: list every identifier it still has, and turn the
records of ours that it no longer lists into tombstones.

A partner whose `deletedRecord` is `no` or `transient` (or that simply loses records) never
sends the deletion an incremental harvest would see. A deletion sweep finds them:

* It is due when the partner's `deletion_sweep.interval` has passed since its last sweep
  (applied or held back), or when asked (`harvester run --sweep`); it follows a run that read
  its lists to the end (success or partial), under the partner's lease.
* It lists the partner's identifiers with ListIdentifiers (its prefix, each configured set,
  no from or until). A header marked deleted counts as listed: that record is, or will be, a
  tombstone through the harvest itself. A listing that does not end well (an error, a list that
  goes round, a rejected token, a stop) applies nothing, and the sweep stays due.
* The vanished records are our live records of the partner that the listing lacks. Up to
  `max_drop` of them (a share of our live records; default 0.15) become tombstones as a harvested
  deletion would: stamped now, so incremental harvesters of ours see them, with a provenance
  that says they were swept.
* More than that is held back: nothing changes, the drop is kept in the store (records, share,
  since when), logged as a warning, shown by `harvester status` and by the metric
  `harvest_sweep_held_records`, until `harvester run --sweep --accept-drop PARTNER` applies it
  (a drop up to the one held back; a larger one is held back again).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from functools import partial
from typing import Any

import sqlalchemy as sa

from harvester import errors as err
from harvester.client import Client, settings_for
from harvester.convert import kept_copy_reader
from harvester.harvest import FAILED, HarvestSettings, RunReport, default_owner, store_problem
from harvester.loops import ListWatch
from oaiserver import formats
from oaiserver.config import ConfigError, Partner, partner_set
from oaiserver.records import OAI_NS, Record, format_datestamp
from oaiserver.store import (
    Store,
    SweepState,
    acquire_lease,
    add_run_counts_in,
    held_shapes_in,
    live_identifiers,
    release_lease,
    renew_lease_in,
    save_sweep_in,
    sweep_states,
    write_harvested_in,
)

log = logging.getLogger(__name__)
# A sweep's outcome: `harvester run` prints it itself, once, and quietens this logger.
report_log = logging.getLogger(f"{__name__}.report")

APPLIED, HELD, INCOMPLETE = "applied", "held", "incomplete"
_IDENTIFIER = f"{{{OAI_NS}}}identifier"
_ROUNDING = 1e-9  # 0.29 * 100 is 28.999999999999996 in floating point: 29 of 100 is within 0.29


@dataclass(frozen=True)
class SweepReport:
    """What one sweep of one partner found and did."""

    partner: str
    outcome: str  # APPLIED, HELD or INCOMPLETE
    live: int = 0  # our live records of the partner before the sweep
    listed: int = 0  # identifiers the partner listed, deleted ones included
    vanished: int = 0  # our live records it did not list
    swept: int = 0  # records turned into tombstones
    max_drop: float = 0.0
    reason: str | None = None  # why the listing is incomplete

    @property
    def share(self) -> float:
        return self.vanished / self.live if self.live else 0.0

    @classmethod
    def from_dict(cls, partner: str, data: dict[str, Any]) -> SweepReport:
        """From a run's counts (`as_dict`), as `harvester history` shows it."""
        counted = {k: int(data.get(k, 0)) for k in ("live", "listed", "vanished", "swept")}
        max_drop = float(data.get("max_drop", 0.0))
        return cls(partner, str(data.get("outcome")), **counted, max_drop=max_drop, reason=data.get("reason"))

    def as_dict(self) -> dict[str, object]:
        """As the run's counts keep it (`sweep`)."""
        shown: dict[str, object] = {"outcome": self.outcome, "live": self.live, "listed": self.listed}
        shown |= {"vanished": self.vanished, "swept": self.swept, "share": round(self.share, 4)}
        shown |= {"max_drop": self.max_drop}
        return shown | ({"reason": self.reason} if self.reason else {})


# ---- the rules -------------------------------------------------------------------------------


def due(partner: Partner, state: SweepState, now: int, *, forced: bool = False) -> bool:
    """Whether `partner`'s sweep is due at `now`: asked for, or its interval passed since its last
    sweep, applied or held back (a partner never swept is due; one without interval never is)."""
    if forced:
        return True
    interval = partner.deletion_sweep.interval
    if interval is None:
        return False
    last = max((t for t in (state.last_swept, state.held_since) if t is not None), default=None)
    return last is None or now - last >= interval


def vanished(ours: set[str], listed: set[str]) -> list[str]:
    """Our live records that the partner no longer lists, in identifier order."""
    return sorted(ours - listed)


def may_apply(gone: int, live: int, max_drop: float, accepted_up_to: int | None) -> bool:
    """Whether a sweep deleting `gone` of `live` records goes ahead: up to `max_drop` of them,
    or up to a drop held back that a person accepted (`accepted_up_to`)."""
    if gone <= max_drop * live + _ROUNDING:
        return True
    return accepted_up_to is not None and gone <= accepted_up_to


def tombstone(
    partner: Partner, identifier: str, harvest_date: str, held: tuple[list[str], list[str]] = ([], [])
) -> Record:
    """A record the partner no longer lists, as a deleted header from it would be written,
    with a provenance that says it was swept. `held`: the sets and formats the record has here,
    which its tombstone keeps, so that a harvester of any of them sees the deletion."""
    provenance = {
        "baseURL": partner.base_url,
        "identifier": identifier,
        "metadataPrefix": partner.metadata_prefix,
        "harvestDate": harvest_date,
        "deletion": "swept: the partner no longer lists it",
    }
    record = Record(identifier=identifier, deleted=True, source=partner.name, provenance=provenance)
    if partner.republish:
        sets, prefixes = held
        record.metadata = {**formats.rendered([], deleted=True), **dict.fromkeys(prefixes, "")}
        record.sets = sets or [partner_set(partner.name)]
    return record


def describe(report: SweepReport) -> str:
    """A sweep on one line (`sweep: …`, `sweep held back: …`, `sweep incomplete: …`), as
    `harvester run` prints it under the run's line and the scheduler logs it after the name."""
    found = f"{report.listed:,} listed, {report.vanished:,} of {report.live:,} live record(s) no longer listed"
    if report.outcome == INCOMPLETE:
        return f"sweep incomplete, nothing applied: {report.reason}"
    if report.outcome == HELD:
        return (
            f"sweep held back: {found} ({report.share:.0%}), more than max_drop {report.max_drop:.0%}; "
            f"nothing applied (harvester run {report.partner} --sweep --accept-drop {report.partner} applies it)"
        )
    return f"sweep: {found}: {report.swept:,} turned into tombstones"


# ---- listing ---------------------------------------------------------------------------------


def listed_identifiers(
    client: Client,
    partner: Partner,
    watch: Callable[[], ListWatch],
    stop: threading.Event,
    on_page: Callable[[], None] = lambda: None,
) -> set[str]:
    """Every identifier the partner lists (each configured set, or all); a HarvestError if the
    listing does not end well. `on_page` is called after each page (the lease is renewed there)."""
    found: set[str] = set()
    targets: list[str | None] = [*partner.sets] or [None]
    for spec in targets:
        args = {"metadataPrefix": partner.metadata_prefix} | ({"set": spec} if spec else {})
        found.update(_one_list(client, args, watch(), stop, on_page))
    return found


def _one_list(
    client: Client, args: dict[str, str], watch: ListWatch, stop: threading.Event, on_page: Callable[[], None]
) -> Iterator[str]:
    for page in client.pages("ListIdentifiers", cancel=stop, **args):
        on_page()
        ids = [(header.findtext(_IDENTIFIER) or "").strip() for header in page.items]
        if not all(ids):
            raise err.ResponseError(f"{client.base_url}: a ListIdentifiers header has no identifier")
        why = watch.see(ids, token=page.token, complete_list_size=page.complete_list_size)
        if why is not None:
            raise err.ListLoopError(f"{client.base_url}: the identifier list goes round: {why}")
        yield from ids
        if stop.is_set() and page.token is not None:
            raise err.Stopped("stopped during the identifier list, as asked")


# ---- one sweep -------------------------------------------------------------------------------


class _Sweep:
    def __init__(
        self,
        store: Store,
        partner: Partner,
        settings: HarvestSettings,
        stop: threading.Event,
        owner: str,
        clock: Callable[[], float],
    ) -> None:
        self.store, self.partner, self.settings, self.stop = store, partner, settings, stop
        self.owner, self.clock = owner, clock

    def listing(self) -> set[str]:
        try:
            credentials = self.partner.credentials()
        except ConfigError as exc:
            raise err.HarvestError(str(exc)) from None
        client_settings = settings_for(self.partner, self.settings.client, credentials)
        with Client(self.partner.base_url, client_settings, stop=self.stop) as client:
            watch = partial(ListWatch, self.settings.loops)  # a new watch per list
            return listed_identifiers(client, self.partner, watch, self.stop, self._keep_lease)

    def _keep_lease(self) -> None:
        """Renew our lease while the listing goes on (a long one outlasts it); LeaseLost if
        another harvester took the partner meanwhile."""
        won, holder, _ = acquire_lease(
            self.store, self.partner.name, self.owner, self.settings.lease_ttl, int(self.clock())
        )
        if not won:
            raise err.LeaseLost(f"{self.partner.name}: {holder} took over the lease during the sweep's listing")

    def sweep(self, run_id: int, state: SweepState, accepted: bool, now: int) -> SweepReport:
        partner = self.partner
        max_drop = partner.deletion_sweep.max_drop
        try:
            listed = self.listing()
        except err.HarvestError as exc:
            report = SweepReport(partner.name, INCOMPLETE, max_drop=max_drop, reason=str(exc))
            self._record(run_id, report, None)
            return report
        ours = live_identifiers(self.store, partner.name)
        gone = vanished(ours, listed)
        found = SweepReport(partner.name, HELD, len(ours), len(listed), len(gone), max_drop=max_drop)
        if not may_apply(len(gone), len(ours), max_drop, state.held if accepted else None):
            self._record(run_id, found, SweepState(state.last_swept, len(gone), len(ours), now))
            return found
        return self._apply(run_id, gone, replace(found, outcome=APPLIED), now)

    def _apply(self, run_id: int, gone: list[str], found: SweepReport, now: int) -> SweepReport:
        """The tombstones, the sweep's state and the run's counts, in one transaction under our lease."""
        harvest_date = format_datestamp(now)
        with self.store.writing() as (conn, stamp):
            self._renew(conn, now)
            held = held_shapes_in(conn, gone)
            tombstones = [tombstone(self.partner, i, harvest_date, held.get(i, ([], []))) for i in gone]
            written = write_harvested_in(
                self.store,
                conn,
                stamp,
                tombstones,
                priority=self.settings.sources,
                promote=kept_copy_reader(self.settings.partners),
            )
            report = replace(found, swept=written.changed)
            save_sweep_in(conn, self.partner.name, SweepState(last_swept=now))
            add_run_counts_in(conn, run_id, {"swept": report.swept, "sweep": report.as_dict()})
        return report

    def _record(self, run_id: int, report: SweepReport, state: SweepState | None) -> None:
        """A sweep that applied nothing: in the run's counts, and a drop held back in the sweep's state."""
        with self.store.writing() as (conn, _):
            if state is not None:
                save_sweep_in(conn, self.partner.name, state)
            add_run_counts_in(conn, run_id, {"sweep": report.as_dict()})

    def _renew(self, conn: sa.Connection, now: int) -> None:
        if not renew_lease_in(conn, self.partner.name, self.owner, self.settings.lease_ttl, now):
            raise err.LeaseLost(
                f"{self.partner.name}: another harvester took over the lease; the sweep was not applied"
            )


def after_run(
    store: Store,
    partner: Partner,
    run: RunReport,
    *,
    settings: HarvestSettings | None = None,
    stop: threading.Event | None = None,
    forced: bool = False,
    accepted: bool = False,
    clock: Callable[[], float] = time.time,
) -> SweepReport | None:
    """Sweep `partner` after its run `run` if the sweep is due (`forced`: whenever the run read
    its lists to the end); None when no sweep was made. `accepted`: a drop held back (up to its
    size) is applied. Raises PartnerBusy if another process holds the lease, StoreError if the
    store fails."""
    now = int(clock())
    try:
        state = sweep_states(store).get(partner.name, SweepState())
    except sa.exc.SQLAlchemyError as exc:
        raise err.StoreError(f"{partner.name}: the record store failed: {store_problem(exc)}") from None
    if run.outcome == FAILED or not due(partner, state, now, forced=forced or accepted):
        return None
    settings = settings or HarvestSettings()
    owner = default_owner()
    try:
        won, holder, expires = acquire_lease(store, partner.name, owner, settings.lease_ttl, now)
        if not won:
            raise err.PartnerBusy(partner.name, holder, expires)
        try:
            report = _Sweep(store, partner, settings, stop or threading.Event(), owner, clock).sweep(
                run.run_id, state, accepted, now
            )
        finally:
            release_lease(store, partner.name, owner)
    except sa.exc.SQLAlchemyError as exc:
        raise err.StoreError(f"{partner.name}: the record store failed: {store_problem(exc)}") from None
    level = logging.INFO if report.outcome == APPLIED else logging.WARNING
    report_log.log(level, "%s: %s", partner.name, describe(report))
    return report
