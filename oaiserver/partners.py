"""What the partner page (`/partners/<name>`) says of one partner: its configuration, its
schedule, its recent runs with their completeness, how fresh its records are, its last error,
the records held from it and those quarantined. Read from the harvest state the harvester keeps
in the store; the markup is templates/partner.html.

The harvester judges each run's completeness and writes the verdict in the run's counts
(harvester.completeness); it is read here as stored, since the server never imports the harvester."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NamedTuple

from oaiserver.config import Partner, partner_set
from oaiserver.schedules import describe_schedule, next_run
from oaiserver.store import HarvestRun, HeldRecords, Store, harvest_history, harvest_summary, quarantined, records_held

RECENT_RUNS = 10  # runs the page lists, latest first
ERROR_OUTCOMES = ("failed", "partial")  # what `harvester status` calls the last error


class RunRow(NamedTuple):
    """One run as the page lists it."""

    id: int
    outcome: str
    started: int
    seconds: int | None  # None while it runs
    records: str  # what it received and what that did to the store
    completeness: str  # complete, short by N, unknown; empty when not judged
    reason: str | None
    from_date: str | None
    resumed: bool


QUARANTINE_SHOWN = 100  # quarantined records listed on a partner's page


class QuarantinedRow(NamedTuple):
    """A record held back from a partner: its identifier, why, and since when."""

    identifier: str
    reason: str
    since: int


@dataclass(frozen=True)
class PartnerPage:
    partner: Partner
    set_spec: str  # the set its republished records are in
    schedule: str | None  # in words; None when it has no schedule
    next_run: int | None
    runs: list[RunRow]
    last_error: RunRow | None
    last_complete: int | None  # end of the last run judged complete
    last_success: int | None  # end of the last successful run
    held: HeldRecords
    quarantined: list[QuarantinedRow]
    now: int
    shadowed: int = 0  # its records kept but not served: a source before it holds the identifier

    @property
    def next_run_due(self) -> bool:
        """Whether the next run is past: no scheduler has harvested the partner on time."""
        return self.next_run is not None and self.next_run < self.now


def completeness_text(counts: dict[str, Any]) -> str:
    """`complete`, `short by 3`, `unknown`, as the harvester judged the run (its counts'
    `completeness`), with what was announced and stored; empty when it was not judged."""
    judged = counts.get("completeness") or {}
    verdict = judged.get("verdict")
    stored = int(judged.get("stored", 0))
    if verdict == "complete":
        return f"complete ({int(judged.get('announced') or 0):,} announced, {stored:,} stored)"
    if verdict == "short":
        announced = int(judged.get("announced") or 0)
        return f"short by {int(judged.get('shortfall', 0)):,} ({announced:,} announced, {stored:,} stored)"
    if verdict == "unknown":
        return f"unknown (no completeListSize announced; {stored:,} stored)"
    return ""


RECORD_COUNTS = ("added", "changed", "unchanged", "failed")


def records_text(counts: dict[str, Any]) -> str:
    """`12 received (1 deleted): 12 added`, as the harvester's run line says it: the records a run
    received, the tombstones among them, and what those that are not zero did to the store, and
    the live ones without Dublin Core; `none` for a run that received none."""
    received = int(counts.get("received", 0))
    if not received:
        return "none"
    deleted = int(counts.get("deleted", 0))
    done = [f"{int(counts[key]):,} {key}" for key in RECORD_COUNTS if counts.get(key)]
    text = f"{received:,} received" + (f" ({deleted:,} deleted)" if deleted else "")
    text += ": " + ", ".join(done) if done else ""
    missing = int(counts.get("without_dc", 0))
    return text + (f"; {missing:,} without Dublin Core (not republished)" if missing else "")


def run_row(run: HarvestRun) -> RunRow:
    seconds = run.finished - run.started if run.finished is not None else None
    return RunRow(
        run.id,
        run.outcome,
        run.started,
        seconds,
        records_text(run.counts),
        completeness_text(run.counts),
        run.reason,
        run.from_date,
        run.resumed,
    )


UNITS = (("day", 86400), ("h", 3600), ("min", 60), ("s", 1))


def age_text(seconds: int) -> str:
    """`3 days 4 h`, `12 min 5 s`, `0 s`: a time span in its two largest units."""
    seconds = max(0, seconds)
    parts: list[str] = []
    for name, size in UNITS:
        amount, seconds = divmod(seconds, size)
        if amount and len(parts) < 2:
            parts.append(f"{amount} {name}{'s' if name == 'day' and amount > 1 else ''}")
        elif parts:
            break
    return " ".join(parts) or "0 s"


def duration_text(seconds: int | None) -> str:
    return "running" if seconds is None else age_text(seconds)


def _quarantine_rows(store: Store, name: str) -> list[QuarantinedRow]:
    """The records of partner `name` held in quarantine, the first QUARANTINE_SHOWN of them."""
    return [QuarantinedRow(q.identifier, q.reason, q.first_seen) for q in quarantined(store, name, QUARANTINE_SHOWN)]


def partner_page(store: Store, partner: Partner, now: int) -> PartnerPage:
    """Everything the page shows of `partner`, read at `now`."""
    runs = harvest_history(store, partner.name, limit=RECENT_RUNS)
    errors = harvest_history(store, partner.name, limit=1, outcomes=ERROR_OUTCOMES)
    summary = harvest_summary(store).get(partner.name, {})
    return PartnerPage(
        partner=partner,
        set_spec=partner_set(partner.name),
        schedule=describe_schedule(partner.schedule) if partner.schedule else None,
        next_run=next_run(partner, runs[0].started if runs else None, now),
        runs=[run_row(r) for r in runs],
        last_error=run_row(errors[0]) if errors else None,
        last_complete=summary.get("last_complete"),
        last_success=summary.get("last_success"),
        held=records_held(store, [partner.name]).get(partner.name, HeldRecords()),
        quarantined=_quarantine_rows(store, partner.name),
        now=now,
        shadowed=summary.get("shadowed", 0),
    )
