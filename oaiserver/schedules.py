"""When a partner is next harvested, and its schedule in words: read by the server's partner
page and by the harvester (`harvester status`, harvester.schedule), so it lives on this side of
the one-way import (`harvester` uses `oaiserver`, never the reverse). APScheduler is imported
only when a schedule is read (oaiserver.config.schedule_trigger)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from oaiserver.config import Partner, schedule_trigger


def next_run(partner: Partner, last_started: int | None, now: int) -> int | None:
    """When `harvester schedule` next harvests `partner` (seconds since the epoch), or None
    when it has no schedule. A cron line fires at set times: its first one from `now`. An
    interval counts from the scheduler's start, which only the scheduler knows: it is counted
    from the partner's last run here (never harvested: one interval from `now`), so a time in
    the past means no scheduler has harvested the partner for longer than its interval."""
    from apscheduler.triggers.interval import IntervalTrigger

    if not partner.schedule:
        return None
    trigger = schedule_trigger(partner.schedule, f"partners.{partner.name}.schedule")
    if isinstance(trigger, IntervalTrigger):
        return (now if last_started is None else last_started) + int(trigger.interval_length)
    fire = trigger.get_next_fire_time(None, datetime.fromtimestamp(now, UTC))
    return int(fire.timestamp()) if fire is not None else None


def describe_schedule(schedule: dict[str, Any]) -> str:
    """`every 6 hours`, `cron '0 3 * * *' in UTC`: a partner's schedule as its configuration says it."""
    if "cron" in schedule:
        return f"cron {schedule['cron']!r} in UTC"
    return "every " + ", ".join(f"{value:g} {unit}" for unit, value in schedule.get("interval", {}).items())
