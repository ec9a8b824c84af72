"""Harvesting on a schedule: the only module that imports APScheduler.

One job per partner with a `schedule` in config.yaml, either `{interval: {minutes: 60}}`
(weeks, days, hours, minutes, seconds) or `{cron: "0 3 * * *"}` (a crontab line, in UTC).
A job never runs twice at once (max_instances=1), and runs missed while the process was
busy or asleep collapse into one (coalesce). Across processes, the partner's lease in the
store keeps two harvesters sharing one PostgreSQL off the same partner.

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
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from types import FrameType
from typing import Any

from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.base import BaseTrigger
from apscheduler.triggers.interval import IntervalTrigger

from harvester import errors as err
from harvester import harvest, sweep
from oaiserver.config import Config, Partner, schedule_trigger
from oaiserver.store import Store

log = logging.getLogger(__name__)


def trigger_for(partner: Partner) -> BaseTrigger:
    """The trigger a partner's `schedule` describes; the configuration checked it when it loaded."""
    return schedule_trigger(partner.schedule, f"partners.{partner.name}.schedule")


def next_run(partner: Partner, last_started: int | None, now: int) -> int | None:
    """When `harvester schedule` next harvests `partner` (seconds since the epoch), or None
    when it has no schedule. A cron line fires at set times: its first one from `now`. An
    interval counts from the scheduler's start, which only the scheduler knows: it is counted
    from the partner's last run here (never harvested: one interval from `now`), so a time in
    the past means no scheduler has harvested the partner for longer than its interval."""
    if not partner.schedule:
        return None
    trigger = trigger_for(partner)
    if isinstance(trigger, IntervalTrigger):
        return (now if last_started is None else last_started) + int(trigger.interval_length)
    fire = trigger.get_next_fire_time(None, datetime.fromtimestamp(now, UTC))
    return int(fire.timestamp()) if fire is not None else None


def describe_schedule(schedule: dict[str, Any]) -> str:
    """`every 6 hours`, `cron '0 3 * * *' in UTC`: a partner's schedule as its configuration says it."""
    if "cron" in schedule:
        return f"cron {schedule['cron']!r} in UTC"
    return "every " + ", ".join(f"{value:g} {unit}" for unit, value in schedule.get("interval", {}).items())


class HarvestScheduler:
    """A scheduler with one job per scheduled partner, stopped cleanly by signals."""

    def __init__(
        self,
        config: Config,
        store: Store,
        *,
        settings: harvest.HarvestSettings | None = None,
        run_now: bool = False,
    ) -> None:
        self.store = store
        self.settings = settings or harvest.HarvestSettings()
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
            try:
                report = harvest.run(self.store, partner, settings=self.settings, stop=self.stop)
                sweep.after_run(self.store, partner, report, settings=self.settings, stop=self.stop)
            except err.PartnerBusy as exc:
                log.info("%s", exc)
            except err.StoreError as exc:
                log.error("%s", exc)
            except Exception:
                log.exception("%s: the harvest crashed", partner.name)

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
