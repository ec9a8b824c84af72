"""Harvesting on a schedule: the only module that imports APScheduler.

One job per partner with a `schedule` in config.yaml, either `{interval: {minutes: 60}}`
(weeks, days, hours, minutes, seconds) or `{cron: "0 3 * * *"}` (a crontab line, in UTC).
A job never runs twice at once (max_instances=1), and runs missed while the process was
busy or asleep collapse into one (coalesce).

Several schedulers may share one store (for availability), each firing its own timers for
every partner. When a partner's job fires, the scheduler claims the partner's due harvest in
the store (`claim_due`); only one scheduler gets it, and only while the partner is due. It
runs the harvest, renewing its claim with every page, and sets the next due time from the
schedule (`next_due`); the others find the harvest taken or not due and skip it. So each due
harvest runs once. The claim of a scheduler that is killed lapses after `lease_ttl` seconds
(at once when the scheduler was a process of this host that is gone), and the next scheduler
whose timer fires takes the partner. A harvest stopped by SIGTERM leaves the partner due, for
the others. The partner's lease (harvest.run) still keeps a `harvester run` started by hand
and a scheduled run off the same partner at once.

SIGTERM or SIGINT: every running harvest finishes the page it is on (its records and
checkpoint are committed), the scheduler stops, and the process exits 0. The scheduler runs
on its own thread while the main thread waits for the stop in short steps: the system may
deliver a signal to any thread, and Python runs its handler only when the main thread next
runs Python code, which a main thread asleep until the next job (hours) would not do.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from types import FrameType
from typing import Any

import sqlalchemy as sa
from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.base import BaseTrigger
from apscheduler.triggers.interval import IntervalTrigger

from harvester import errors as err
from harvester import harvest, sweep
from oaiserver.config import Config, Partner, schedule_trigger
from oaiserver.records import format_datestamp
from oaiserver.schedules import describe_schedule, next_run
from oaiserver.store import (
    DueSlot,
    Store,
    bring_forward,
    claim_due,
    due_slot,
    due_slots,
    finish_due,
    ran_unsettled,
    release_claim,
    renew_claim,
)

__all__ = ["HarvestScheduler", "describe_schedule", "next_run", "trigger_for"]

log = logging.getLogger(__name__)


def trigger_for(partner: Partner) -> BaseTrigger:
    """The trigger a partner's `schedule` describes; the configuration checked it when it loaded."""
    return schedule_trigger(partner.schedule, f"partners.{partner.name}.schedule")


def next_due(partner: Partner, due_at: int, started: int) -> int:
    """When `partner` is due again after the harvest due at `due_at` that started at `started`;
    always after `started`.

    An interval: a harvest that started on time keeps the rhythm (`due_at` plus the interval),
    so the scheduler that ran it finds the partner due when its own timer next fires; one that
    started more than half an interval late (its scheduler was busy, or the one that claimed it
    was killed) starts a new rhythm from its start, so two harvests are never closer than half
    an interval. A cron line: its first time after the start."""
    trigger = trigger_for(partner)
    if isinstance(trigger, IntervalTrigger):
        length = max(1, int(trigger.interval_length))
        return due_at + length if started - due_at <= length // 2 else started + length
    fire = trigger.get_next_fire_time(None, datetime.fromtimestamp(started + 1, UTC))
    if fire is None:  # the configuration refuses a cron line that never fires
        raise err.ConfigurationError(f"{partner.name}: its schedule never fires again")
    return int(fire.timestamp())


def sooner_by_schedule(partner: Partner, slot: DueSlot) -> int | None:
    """The due time `partner`'s schedule gives after its last due harvest, when it is sooner than
    the one stored (the schedule was shortened since that was set); None otherwise."""
    if slot.ran_at is None:
        return None
    wanted = next_due(partner, slot.ran_at, slot.ran_at)
    return wanted if wanted < slot.due_at else None


def why_skipped(partner: str, slot: DueSlot | None, now: int) -> str:
    """Why a scheduler whose timer fired at `now` does not harvest `partner`: the due harvest is
    another scheduler's, or the partner is not due (another scheduler ran it)."""
    if slot is None:
        return f"{partner}: not due"
    if slot.due_at <= now and slot.claimed_at(now):
        until = format_datestamp(slot.claimed_until or now)
        return f"{partner}: due harvest claimed by {slot.claimed_by} (until {until})"
    if slot.due_at <= now:  # its claimant gave it back between the claim and this read
        return f"{partner}: due harvest given back by another scheduler just now; the next timer takes it"
    ran = f"ran at {format_datestamp(slot.ran_at)} by {slot.ran_by}" if slot.ran_at is not None else "not run yet"
    return f"{partner}: not due: {ran}; next due at {format_datestamp(slot.due_at)}"


class HarvestScheduler:
    """A scheduler with one job per scheduled partner, stopped cleanly by signals."""

    def __init__(
        self,
        config: Config,
        store: Store,
        *,
        settings: harvest.HarvestSettings | None = None,
        run_now: bool = False,
        owner: str | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """`owner`: who this scheduler is in the store's claims (default: host, pid and a random
        part, as a lease holder); its claims last `settings.lease_ttl` seconds unless renewed."""
        self.store = store
        self.settings = settings or harvest.HarvestSettings()
        self.owner = owner or harvest.default_owner()
        self.clock = clock
        self.stop = threading.Event()
        self._active = 0
        self._idle = threading.Condition()
        # `harvester.jobs` partners harvested at once (APScheduler's default pool is 10 threads).
        self.scheduler = BackgroundScheduler(
            timezone=UTC, daemon=True, executors={"default": ThreadPoolExecutor(config.harvester.jobs)}
        )
        for partner in config.partners:
            if not partner.schedule:
                log.info("%s: no schedule; harvested only by `harvester run`", partner.name)
                continue
            options: dict[str, Any] = {}
            if run_now:
                options["next_run_time"] = datetime.now(UTC)
            self.scheduler.add_job(
                self._job,
                trigger_for(partner),
                args=[partner],
                id=partner.name,
                name=f"harvest {partner.name}",
                max_instances=1,
                coalesce=True,
                misfire_grace_time=None,  # late is better than never; coalesce makes it once
                **options,
            )

    @property
    def jobs(self) -> list[Any]:
        return list(self.scheduler.get_jobs())

    @contextmanager
    def _tracked(self) -> Iterator[None]:
        with self._idle:
            self._active += 1
        try:
            yield
        finally:
            with self._idle:
                self._active -= 1
                self._idle.notify_all()

    def _job(self, partner: Partner) -> None:
        if self.stop.is_set():
            return
        with self._tracked():
            now = int(self.clock())
            try:
                due_at = self._claim(partner, now)
                if due_at is None:
                    return
                done = self._harvest(partner)
                self._settle(partner, due_at, now, done)
            except sa.exc.SQLAlchemyError as exc:
                log.error("%s: the record store failed: %s", partner.name, harvest.store_problem(exc))

    def _claim(self, partner: Partner, now: int) -> int | None:
        """Claim the partner's due harvest: the due time claimed, or None (logged why)."""
        name, ttl = partner.name, self.settings.lease_ttl
        before = due_slot(self.store, name)  # a lapsed claim this one may take over
        if before is not None and before.claimed_at(now):
            before = None  # if it is claimed after all, it was given back meanwhile: to be run
        due_at = claim_due(self.store, name, self.owner, now=now, ttl=ttl)
        if due_at is None:
            slot = due_slot(self.store, name)
            holder = slot.claimed_by if slot is not None and slot.claimed_at(now) else None
            if holder is None or not harvest.holder_is_gone(holder):
                log.info("%s", why_skipped(name, slot, now))
                return None
            log.warning("%s: the scheduler %s that claimed its due harvest is gone; taking it over", name, holder)
            release_claim(self.store, name, holder)
            due_at = claim_due(self.store, name, self.owner, now=now, ttl=ttl)
            if due_at is None:
                log.info("%s", why_skipped(name, due_slot(self.store, name), now))
                return None
            before = slot
        previous = before.claimed_by if before is not None else None
        if previous is not None and self._ran_already(partner, previous, due_at):
            return None
        return due_at

    def _ran_already(self, partner: Partner, holder: str, due_at: int) -> bool:
        """A claim taken over from a scheduler that ran the harvest to its end and died (or
        lapsed) before setting the next due time: set it now, as that harvest's, and run none."""
        started = ran_unsettled(self.store, partner.name, holder, since=due_at, formats=partner.harvested_formats)
        if started is None:
            return False
        following = next_due(partner, due_at, started)
        if not finish_due(self.store, partner.name, self.owner, ran_at=started, next_due=following, ran_by=holder):
            log.warning("%s: the claim on this due harvest lapsed at once; another scheduler took it", partner.name)
            return True
        log.info(
            "%s: not due: ran at %s by %s, which ended before setting the next due time; next due at %s",
            partner.name,
            format_datestamp(started),
            holder,
            format_datestamp(following),
        )
        return True

    def _harvest(self, partner: Partner) -> bool:
        """Run the claimed harvest; whether it is done with (False: the partner stays due, for
        the next scheduler whose timer fires: it was busy, the store failed, or a stop cut it short)."""
        try:
            # Its runs carry the claim's owner: a scheduler taking the claim over sees they ran.
            report = harvest.run(
                self.store, partner, settings=self.settings, stop=self.stop, on_page=self._renew, owner=self.owner
            )
            sweep.after_run(self.store, partner, report, settings=self.settings, stop=self.stop)
        except err.PartnerBusy as exc:
            log.info("%s", exc)
            return False
        except err.StoreError as exc:
            log.error("%s", exc)
            return False
        except Exception:
            log.exception("%s: the harvest crashed", partner.name)
            return True  # at its next due time, not at every timer of every scheduler
        return not (self.stop.is_set() and report.outcome == harvest.FAILED)

    def _renew(self, name: str, _counts: harvest.Counts, _page: object) -> None:
        """After each page: the claim lasts as long as the harvest (the partner's lease is
        renewed in the page's own transaction)."""
        if not renew_claim(self.store, name, self.owner, now=int(self.clock()), ttl=self.settings.lease_ttl):
            log.warning("%s: this scheduler's claim on the due harvest lapsed and was taken", name)

    def _settle(self, partner: Partner, due_at: int, started: int, done: bool) -> None:
        """Set the next due time, or give the due harvest back."""
        if not done:
            release_claim(self.store, partner.name, self.owner)
            return
        following = next_due(partner, due_at, started)
        if not finish_due(self.store, partner.name, self.owner, ran_at=started, next_due=following, due_at=due_at):
            log.warning(
                "%s: the claim on this due harvest lapsed while it ran; another scheduler took it", partner.name
            )

    def follow_schedules(self) -> None:
        """A schedule shortened since a partner's due time was set takes effect when a scheduler
        starts with it, not at that later time (a lengthened one does after the next harvest)."""
        try:
            slots = due_slots(self.store)
            for job in self.jobs:
                partner: Partner = job.args[0]
                slot = slots.get(partner.name)
                sooner = sooner_by_schedule(partner, slot) if slot is not None else None
                if sooner is not None and slot is not None and bring_forward(self.store, partner.name, sooner):
                    shown = format_datestamp(sooner), format_datestamp(slot.due_at)
                    log.info("%s: due at %s by its schedule (was %s)", partner.name, *shown)
        except sa.exc.SQLAlchemyError as exc:
            log.error("the record store failed: %s", harvest.store_problem(exc))

    def request_stop(self, signum: int | None = None, _frame: FrameType | None = None) -> None:
        """Finish the current pages, then stop. Safe in a signal handler: it only sets an
        event, which the main thread waits for."""
        if signum is not None and not self.stop.is_set():
            log.info("%s: finishing the current page(s), then exiting", signal.Signals(signum).name)
        self.stop.set()

    def run_forever(self) -> None:
        """Run until SIGTERM or SIGINT, then wait for running harvests."""
        previous = {s: signal.signal(s, self.request_stop) for s in (signal.SIGTERM, signal.SIGINT)}
        try:
            if not self.jobs:
                log.warning("no partner has a schedule: nothing to do")
                return
            for job in self.jobs:
                log.info("scheduled %s (%s)", job.name, job.trigger)
            self.follow_schedules()
            if self.stop.is_set():
                return
            self.scheduler.start()
            while not self.stop.wait(_SIGNAL_POLL):
                pass
        finally:
            if self.scheduler.running:
                self.scheduler.shutdown(wait=False)
            with self._idle:
                while self._active:
                    self._idle.wait()
            for sig, handler in previous.items():
                signal.signal(sig, handler)


# How long the main thread sleeps at a time: a signal that the system delivered to another
# thread is handled at the latest this many seconds later.
_SIGNAL_POLL = 0.5
