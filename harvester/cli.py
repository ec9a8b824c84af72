"""`harvester`: pull partner repositories into the record store.

`harvester --help` is the reference. Exit codes of `harvester run`: 0 every partner
succeeded, 2 some records could not be harvested (partial), 1 a run failed or was skipped.
"""

from __future__ import annotations

import json
import logging
import signal
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent import futures
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import asdict, dataclass, replace
from typing import Any

import click

from harvester import errors as err
from harvester import harvest, sweep
from harvester.client import ClientSettings
from harvester.completeness import SHORT, Completeness
from harvester.probe import MAX_REQUESTS as PROBE_MAX_REQUESTS
from harvester.transport import origin_of
from oaiserver import config as config_mod
from oaiserver.cli import Context, Group, group_options, pass_ctx, setup_logging
from oaiserver.records import format_datestamp, shown_identifier
from oaiserver.store import (
    DueSlot,
    HarvestRun,
    HeldRecords,
    Store,
    SweepState,
    due_slots,
    harvest_history,
    harvest_state_of,
    harvest_summary,
    leases,
    quarantine_counts,
    quarantined,
    records_held,
    sweep_states,
)


@click.group(cls=Group, context_settings={"help_option_names": ["-h", "--help"]})
@group_options("harvester")
@click.pass_context
def main(ctx: click.Context, config_path: str | None, verbose: bool) -> None:
    """Harvest the partner repositories of config.yaml into the shared record store."""
    setup_logging(verbose)
    ctx.obj = Context(config_path)


def client_options(command: Callable[..., Any]) -> Callable[..., Any]:
    defaults = ClientSettings()
    options = [
        click.option(
            "--timeout",
            type=float,
            default=defaults.timeout,
            show_default=True,
            help="Seconds to wait for a partner to connect and for each read; a whole request (redirects "
            "included) may take 4 times this. A partner's own `timeout` in the configuration wins.",
        ),
        click.option(
            "--retries",
            type=int,
            default=defaults.retries,
            show_default=True,
            help="Retries per request after a timeout, a broken connection, 429 or 5xx (a partner that refuses "
            "the connection, or whose host name is unknown, is not retried: its next run tries again). A "
            "partner's own `retries` in the configuration wins.",
        ),
        click.option(
            "--backoff",
            type=float,
            default=defaults.backoff,
            show_default=True,
            help="First wait between retries (doubles).",
        ),
    ]
    for option in reversed(options):
        command = option(command)
    return command


clock_skew_option = click.option(
    "--clock-skew",
    type=click.IntRange(min=0),
    default=harvest.HarvestSettings().clock_skew,
    show_default=True,
    help="Seconds a partner's responseDate may be ahead of our clock and still be the next `from`.",
)


def _order(config: config_mod.Config) -> tuple[str, ...]:
    """The partners in configuration order: the order their records are served in when they share
    an identifier (local records first)."""
    return tuple(p.name for p in config.partners)


def _settings(
    timeout: float,
    retries: int,
    backoff: float,
    section: config_mod.HarvesterConfig,
    config: config_mod.Config | None = None,
) -> harvest.HarvestSettings:
    """The command's settings: its options (a partner's own `timeout` and `retries` win over
    them), and the configuration's `harvester:` section (User-Agent, requests at once per host)."""
    if timeout <= 0 or retries < 0 or backoff < 0:
        raise click.BadParameter("--timeout must be positive, --retries and --backoff not negative")
    client = ClientSettings(
        timeout=timeout,
        retries=retries,
        backoff=backoff,
        user_agent=section.user_agent,
        per_host=section.per_host,
    )
    if config is None:
        return harvest.HarvestSettings(client=client)
    return harvest.HarvestSettings(client=client, sources=_order(config), partners=tuple(config.partners))


def _signals_to_the_main_thread() -> None:
    """A harvest thread (and the threads it starts) blocks SIGTERM and SIGINT, so the kernel hands
    them to the main thread: one delivered to a harvest thread would leave the main thread asleep
    until every run had ended, and the stop would come too late."""
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM, signal.SIGINT})


@contextmanager
def _stop_on_signals() -> Iterator[threading.Event]:
    """SIGTERM and SIGINT ask the harvest to stop after the current page."""
    stop = threading.Event()

    def handler(signum: int, _frame: object) -> None:
        click.echo(f"{signal.Signals(signum).name}: stopping after the current page", err=True)
        stop.set()

    previous = {s: signal.signal(s, handler) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield stop
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


@main.command()
@click.argument("partners", nargs=-1)
@click.option("--full", is_flag=True, help="Ignore the stored `from` and any checkpoint: list everything again.")
@click.option(
    "--sweep",
    "force_sweep",
    is_flag=True,
    help="After each run, make the partner's deletion sweep now, due or not: list every identifier it still "
    "has (ListIdentifiers) and turn our records it no longer lists into tombstones, unless they are more "
    "than its deletion_sweep.max_drop (then nothing is applied and the drop is held back).",
)
@click.option(
    "--accept-drop",
    "accept_drop",
    multiple=True,
    metavar="PARTNER",
    help="Apply the drop held back by PARTNER's sweep, up to the number of records held back (a larger one "
    "is held back again); sweeps PARTNER now. Repeatable.",
)
@client_options
@clock_skew_option
@pass_ctx
def run(
    ctx: Context,
    partners: tuple[str, ...],
    full: bool,
    force_sweep: bool,
    accept_drop: tuple[str, ...],
    timeout: float,
    retries: int,
    backoff: float,
    clock_skew: int,
) -> None:
    """Harvest PARTNERS now (default: every configured partner), `harvester.jobs` of them at once.

    Each partner's outcome is one line on stdout (`name: outcome: counts; next from …`, or the
    reason it failed); records that could not be harvested are listed on stderr. A deletion
    sweep that is due (`deletion_sweep.interval`, or --sweep) follows a run that read its lists to
    the end: its line (`  sweep: …`) is on stdout, or on stderr when it was held back or incomplete.

    Exit code 0 when every run succeeded, 2 when some records could not be harvested
    (partial), 1 when a run failed or a partner was busy (another harvester holds its lease).
    """
    settings = replace(_settings(timeout, retries, backoff, ctx.config.harvester, ctx.config), clock_skew=clock_skew)
    configured = {p.name: p for p in ctx.config.partners}
    unknown = [name for name in partners if name not in configured]
    if unknown:
        raise click.ClickException(
            f"unknown partner(s): {', '.join(unknown)} (configured: {', '.join(configured) or 'none'})"
        )
    chosen = [configured[name] for name in partners] if partners else list(configured.values())
    not_run = [name for name in accept_drop if name not in {p.name for p in chosen}]
    if not_run:
        raise click.BadParameter(f"{', '.join(not_run)}: not a partner of this run", param_hint="--accept-drop")
    if not chosen:
        click.echo("no partners configured")
        return
    store = ctx.store()
    jobs = min(ctx.config.harvester.jobs, len(chosen))
    with _stop_on_signals() as stop, _quiet(harvest.report_log), _quiet(sweep.report_log), _display() as display:
        runner = _Runner(store, settings, stop, display, full, chosen)
        runner.sweeps = _Sweeps(force_sweep, frozenset(accept_drop))
        with ThreadPoolExecutor(jobs, thread_name_prefix="harvest", initializer=_signals_to_the_main_thread) as pool:
            jobs_done = [pool.submit(runner.work) for _ in range(jobs)]
            while futures.wait(jobs_done, timeout=0.1).not_done:
                pass  # wakes the main thread, where Python runs signal handlers, ten times a second
            codes = [code for done in jobs_done for code in done.result()]
    sys.exit(1 if 1 in codes else 2 if 2 in codes else 0)


@dataclass(frozen=True)
class _Sweeps:
    """What `harvester run` asks of the deletion sweeps: all now (`forced`), and whose drop held
    back is accepted."""

    forced: bool = False
    accepted: frozenset[str] = frozenset()


class _Runner:
    """`harvester run`'s partners, up to `harvester.jobs` at once on threads of this process
    (each run has its lease, its transactions and, for a big list, its worker process): each
    outcome is printed as its run ends, with the records it could not harvest right after it.
    A stop (SIGTERM), or a store that failed under a run, leaves the partners not started yet alone.

    Each job takes a partner whose host has fewer than `per_host` partners under way, if any:
    a job waiting on a busy host (transport.Hosts) while partners of idle hosts wait for a job
    would waste it (40 partners on one host listed first would take every job). Of those, one
    of the host with the most partners left (in configuration order within a host): a host
    left with many partners at the end would be harvested `per_host` at a time while the other
    jobs stand idle (the hosts listed last did, 10 s of a 60 s fleet of 200 partners)."""

    def __init__(
        self,
        store: Store,
        settings: harvest.HarvestSettings,
        stop: threading.Event,
        display: _Lines,
        full: bool,
        partners: list[config_mod.Partner],
    ) -> None:
        self.store, self.settings, self.stop, self.display, self.full = store, settings, stop, display, full
        self.halt = threading.Event()  # the store failed: the next partners would meet it too
        self.printing = threading.Lock()
        self.pending = list(partners)
        self.under_way: dict[str, int] = {}  # partners being harvested, by origin
        self.taking = threading.Lock()
        self.sweeps = _Sweeps()

    def work(self) -> list[int]:
        """One job: partners one after the other until none is left; their exit codes."""
        codes = []
        while (partner := self._take()) is not None:
            origin = origin_of(partner.base_url)
            try:
                code = self.one(partner)
            finally:
                with self.taking:
                    self.under_way[origin] -= 1
            if code is not None:
                codes.append(code)
        return codes

    def _take(self) -> config_mod.Partner | None:
        with self.taking:
            if not self.pending:
                return None
            room = self.settings.client.per_host or len(self.pending)
            left = Counter(origin_of(p.base_url) for p in self.pending)
            free = [p for p in self.pending if self.under_way.get(origin_of(p.base_url), 0) < room]
            chosen = max(free, key=lambda p: left[origin_of(p.base_url)]) if free else self.pending[0]
            self.pending.remove(chosen)
            origin = origin_of(chosen.base_url)
            self.under_way[origin] = self.under_way.get(origin, 0) + 1
            return chosen

    def one(self, partner: config_mod.Partner) -> int | None:
        """Harvest `partner` and print its outcome; its exit code, or None when it was not started."""
        if self.stop.is_set() or self.halt.is_set():
            return None
        display = self.display
        with self.printing:
            display.start(partner.name)
        try:
            on_page = self._on_page if display.on_page is not None else None
            report = harvest.run(
                self.store, partner, settings=self.settings, stop=self.stop, on_page=on_page, full=self.full
            )
        except err.PartnerBusy as exc:
            with self.printing:
                display.done(partner.name, f"{exc} (lease until {format_datestamp(exc.expires)})", err=True)
            return 1
        except err.StoreError as exc:
            self.halt.set()
            with self.printing:
                display.done(partner.name, str(exc), err=True)
            return 1
        with self.printing:
            display.done(partner.name, harvest.describe(report))
            for where, why in report.failures[:_FAILURES_SHOWN]:
                display.line(f"  not harvested: {where}: {why}", err=True)
            if len(report.failures) > _FAILURES_SHOWN:
                more = len(report.failures) - _FAILURES_SHOWN
                display.line(f"  … and {more:,} more (harvester history {partner.name} --json)", err=True)
        self._sweep(partner, report)
        return report.exit_code

    def _sweep(self, partner: config_mod.Partner, report: harvest.RunReport) -> None:
        """The partner's deletion sweep after its run, if due or asked for, and its line."""
        try:
            swept = sweep.after_run(
                self.store,
                partner,
                report,
                settings=self.settings,
                stop=self.stop,
                forced=self.sweeps.forced,
                accepted=partner.name in self.sweeps.accepted,
            )
        except err.HarvestError as exc:  # busy, lease lost, the store failed
            if isinstance(exc, err.StoreError):
                self.halt.set()
            with self.printing:
                self.display.line(f"  sweep not made: {exc}", err=True)
            return
        if swept is not None:
            with self.printing:
                self.display.line(f"  {sweep.describe(swept)}", err=swept.outcome != sweep.APPLIED)
        elif report.outcome == harvest.FAILED and (self.sweeps.forced or partner.name in self.sweeps.accepted):
            with self.printing:
                self.display.line(_NO_SWEEP, err=True)

    def _on_page(self, partner: str, counts: harvest.Counts, page: Any) -> None:
        if self.display.on_page is not None:
            with self.printing:
                self.display.on_page(partner, counts, page)


_FAILURES_SHOWN = 20  # records not harvested listed after a run's line
_QUARANTINE_JSON = 100  # quarantined records listed by `status --json` (all are counted)
_QUARANTINE_TEXT = 10  # and by `status`
_NO_SWEEP = "  sweep not made: the run failed (a sweep follows a run that read its lists to the end)"


@contextmanager
def _quiet(logger: logging.Logger) -> Iterator[None]:
    """`logger` says nothing while the command prints the same itself."""
    before, logger.disabled = logger.disabled, True
    try:
        yield
    finally:
        logger.disabled = before


class _Lines:
    """What `harvester run` shows when stderr is no terminal: each outcome on a line of stdout,
    problems on stderr, no progress bar (the per-page log lines say how a run goes)."""

    on_page: harvest.ProgressCallback | None = None

    def start(self, partner: str) -> None:
        pass

    def line(self, text: str, *, err: bool = False) -> None:
        click.echo(text, err=err)

    def done(self, partner: str, text: str, *, err: bool = False) -> None:
        self.line(text, err=err)


class _Bar(_Lines):
    """On a terminal: a live progress bar (rich) for the partner being harvested, on stderr,
    with every line (outcomes, log records) printed above it through rich's console, never
    into the bar's line. A partner's bar goes once its outcome is printed."""

    def __init__(self, progress: Any) -> None:
        self.progress = progress
        self.tasks: dict[str, Any] = {}
        self.stdout_is_terminal = sys.stdout.isatty()

    def start(self, partner: str) -> None:
        self.tasks[partner] = self.progress.add_task(partner, total=None)

    def on_page(self, partner: str, counts: harvest.Counts, page: Any) -> None:  # type: ignore[override]
        self.progress.update(self.tasks[partner], completed=counts.received, total=page.complete_list_size)

    def line(self, text: str, *, err: bool = False) -> None:
        if err or self.stdout_is_terminal:
            self.progress.console.print(text, markup=False, highlight=False, emoji=False, soft_wrap=True)
        else:  # stdout goes to a file or a pipe: the line goes there, the bar stays on the terminal
            click.echo(text)

    def done(self, partner: str, text: str, *, err: bool = False) -> None:
        task = self.tasks.pop(partner, None)
        if task is not None:
            self.progress.remove_task(task)
        self.line(text, err=err)


@contextmanager
def _display() -> Iterator[_Lines]:
    """A progress bar on a terminal (stderr), plain lines otherwise."""
    if not sys.stderr.isatty():
        yield _Lines()
        return
    from rich.console import Console
    from rich.logging import RichHandler
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    console = Console(stderr=True)
    # Log records go through the bar's console too, so they print above the bar.
    handlers = [h for h in logging.getLogger().handlers if isinstance(h, RichHandler)]
    consoles = [h.console for h in handlers]
    pages = logging.getLogger("harvester.harvest.pages")
    level = pages.level
    pages.setLevel(logging.WARNING)  # the bar shows them
    try:
        for handler in handlers:
            handler.console = console
        with Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=console,
            transient=True,
            redirect_stdout=sys.stdout.isatty(),
        ) as progress:
            yield _Bar(progress)
    finally:
        pages.setLevel(level)
        for handler, previous in zip(handlers, consoles, strict=True):
            handler.console = previous


json_option = click.option(
    "--json", "as_json", is_flag=True, help="Print JSON for scripts (keys and times: README, Harvesting partners)."
)


@main.command()
@json_option
@pass_ctx
def status(ctx: Context, as_json: bool) -> None:
    """Show each partner's records, next `from`, checkpoint, last run, last complete harvest,
    last error, next scheduled run and lease."""
    store = ctx.store(existing=True)
    now = int(time.time())
    partners = ctx.config.partners
    for partner in partners:
        harvest.settle_runs(store, partner.name)
    held = leases(store)
    due = due_slots(store)
    counts = records_held(store, [p.name for p in partners])
    summary = harvest_summary(store) if partners else {}
    sweeps = sweep_states(store) if partners else {}
    shown = [
        {
            **_partner_status(store, p, counts.get(p.name, HeldRecords()), held.get(p.name), due.get(p.name), now),
            "last_complete": _iso(summary.get(p.name, {}).get("last_complete")),
            "shadowed": summary.get(p.name, {}).get("shadowed", 0),
            "sweep": _sweep_json(p, sweeps.get(p.name, SweepState())),
        }
        for p in partners
    ]
    if as_json:
        click.echo(json.dumps({"now": _iso(now), "partners": shown}, indent=2))
        return
    if not partners:
        click.echo("no partners configured")
    for entry in shown:
        _print_status(entry, now)


def _sweep_json(partner: config_mod.Partner, state: SweepState) -> dict[str, Any]:
    """A partner's deletion sweep as `status --json` gives it: its settings, the last one
    applied, and the drop held back (None when none is)."""
    held = None
    if state.held is not None:
        share = state.held / state.held_live if state.held_live else 0.0
        held = {
            "records": state.held,
            "live": state.held_live,
            "share": round(share, 4),
            "since": _iso(state.held_since),
        }
    return {
        "interval": partner.deletion_sweep.interval,
        "max_drop": partner.deletion_sweep.max_drop,
        "last_swept": _iso(state.last_swept),
        "held": held,
    }


def _interval(seconds: float) -> str:
    """`7 day(s)`, `12 hour(s)`, `90 minute(s)`: the largest unit that divides it."""
    for unit, size in (("day", 86_400), ("hour", 3_600), ("minute", 60)):
        if seconds % size == 0:
            return f"{int(seconds // size):,} {unit}(s)"
    return f"{seconds:g} second(s)"


def _print_sweep(name: str, shown: dict[str, Any]) -> None:
    """The status lines of a partner's deletion sweep."""
    every = f"every {_interval(shown['interval'])}" if shown["interval"] else "only when asked (harvester run --sweep)"
    click.echo(f"  deletion sweep: {every}; last applied: {shown['last_swept'] or 'never'}")
    held = shown["held"]
    if held:
        click.echo(
            f"  sweep held back since {held['since']}: {held['records']:,} of {held['live']:,} live record(s) "
            f"({held['share']:.0%}) no longer listed, more than max_drop {shown['max_drop']:.0%}; "
            f"harvester run {name} --sweep --accept-drop {name} applies it"
        )


def _iso(epoch: int | None) -> str | None:
    """ISO 8601 in UTC, to the second (`2026-12-03T17:08:39Z`), as every time in the JSON."""
    return format_datestamp(epoch) if epoch is not None else None


def _partner_status(
    store: Store,
    partner: config_mod.Partner,
    records: HeldRecords,
    lease: tuple[str, int] | None,
    due: DueSlot | None,
    now: int,
) -> dict[str, Any]:
    """What `status --json` says of one partner; the text output is made from it too. Its next
    run is the due time the schedulers share, once one of them has fired for it."""
    from harvester.schedule import next_run

    last = harvest_history(store, partner.name, limit=1)
    error = harvest_history(store, partner.name, limit=1, outcomes=(harvest.FAILED, harvest.PARTIAL))
    each = [_format_json(store, partner, fmt) for fmt in partner.harvested_formats]
    return {
        "name": partner.name,
        "base_url": partner.base_url,
        "metadata_prefix": partner.metadata_prefix,
        "formats": each,
        "sets": list(partner.sets),
        "records": {"live": records.live, "deleted": records.deleted},
        "next_from": each[0]["next_from"],
        "learned": harvest_state_of(store, partner.name, partner.harvested_formats[0]).learned,
        "checkpoint": each[0]["checkpoint"],
        "schedule": partner.schedule or None,
        "next_run": _iso(
            due.due_at
            if due is not None and partner.schedule
            else next_run(partner, last[0].started if last else None, now)
        ),
        "last_run": _run_json(last[0]) if last else None,
        "last_error": _run_json(error[0]) if error else None,
        "quarantine": _quarantine_json(store, partner.name),
        "lease": None
        if lease is None or lease[1] < now
        else {"holder": lease[0], "expires": _iso(lease[1]), "holder_gone": harvest.holder_is_gone(lease[0])},
    }


def _quarantine_json(store: Store, partner: str) -> dict[str, Any]:
    """The partner's quarantine: how many records, and the first of them (tried longest ago first)."""
    count = quarantine_counts(store).get(partner, 0)
    held = quarantined(store, partner, limit=_QUARANTINE_JSON) if count else []
    listed = [
        {
            "identifier": q.identifier,
            "reason": q.reason,
            "first_seen": _iso(q.first_seen),
            "last_tried": _iso(q.last_tried),
            "tries": q.tries,
        }
        for q in held
    ]
    return {"count": count, "records": listed}


def _print_quarantine(quarantine: dict[str, Any]) -> None:
    count = quarantine["count"]
    if not count:
        click.echo("  quarantine: none")
        return
    click.echo(f"  quarantine: {count:,} record(s), retried by GetRecord at each run")
    for q in quarantine["records"][:_QUARANTINE_TEXT]:
        tried = f"tried {q['tries']} time(s) since {q['first_seen']}"
        click.echo(f"    {shown_identifier(q['identifier'])}: {q['reason']} ({tried})")
    if count > _QUARANTINE_TEXT:
        click.echo(f"    … and {count - _QUARANTINE_TEXT:,} more (harvester status --json lists {_QUARANTINE_JSON})")


def _format_json(store: Store, partner: config_mod.Partner, fmt: str) -> dict[str, Any]:
    """Where the harvest of one of a partner's formats stands: its next `from`, its checkpoint."""
    state = harvest_state_of(store, partner.name, fmt)
    checkpoint = None
    if state.checkpoint:
        cp_counts = harvest.Counts.from_dict(state.checkpoint.get("counts"))
        checkpoint = {"from": state.checkpoint.get("from"), "pages": cp_counts.pages, "records": cp_counts.received}
    return {"prefix": fmt, "next_from": state.next_from or partner.from_date, "checkpoint": checkpoint}


def _run_json(r: HarvestRun) -> dict[str, Any]:
    """One run as `history --json` and `status --json` give it."""
    counts = asdict(harvest.Counts.from_dict(r.counts))
    failures = [{"identifier": str(i), "reason": str(why)} for i, why in r.counts.get("failures", [])]
    return {
        "id": r.id,
        "partner": r.partner,
        "format": r.format,
        "outcome": r.outcome,
        "reason": r.reason,
        "started": _iso(r.started),
        "finished": _iso(r.finished),
        "seconds": r.finished - r.started if r.finished is not None else None,
        "from": r.from_date,
        "resumed": r.resumed,
        "counts": counts,
        "failures": failures,
        "completeness": r.counts.get("completeness"),
        "sweep": r.counts.get("sweep"),  # the deletion sweep that followed the run (harvester.sweep)
    }


def _completeness_text(run: dict[str, Any]) -> str:
    """A run's completeness as its line says it; empty when the run was not judged."""
    judged = Completeness.from_dict(run.get("completeness"))
    return judged.text() if judged is not None else ""


def _print_status(entry: dict[str, Any], now: int) -> None:
    click.echo(f"{entry['name']}  {entry['base_url']}  ({', '.join(f['prefix'] for f in entry['formats'])})")
    records = entry["records"]
    not_served = f", {entry['shadowed']:,} not served (another source first)" if entry["shadowed"] else ""
    click.echo(f"  records: {records['live']:,} live, {records['deleted']:,} deleted{not_served}")
    for each in entry["formats"][1:]:
        click.echo(f"  next from ({each['prefix']}): {each['next_from'] or 'the beginning (full harvest)'}")
    click.echo(f"  next from: {entry['next_from'] or 'the beginning (full harvest)'}")
    if (entry.get("learned") or {}).get("granularity") == "days":
        click.echo(f"  from in days: {entry['learned']['why']} (learned at {_iso(entry['learned']['since'])})")
    if entry["checkpoint"]:
        cp = entry["checkpoint"]
        click.echo(
            f"  checkpoint: {cp['records']:,} record(s) in {cp['pages']:,} page(s) "
            f"of the window from {cp['from'] or 'the beginning'}; the next run resumes there"
        )
    _print_last_run(entry["last_run"])
    complete = entry.get("last_complete")
    click.echo(f"  last complete harvest: {complete or 'none yet'}")
    _print_sweep(entry["name"], entry["sweep"])
    error = entry["last_error"]
    if error:
        when = error["finished"] or error["started"]
        click.echo(f"  last error: #{error['id']} {error['outcome']} at {when}: {error['reason']}")
    else:
        click.echo("  last error: none")
    _print_quarantine(entry["quarantine"])
    _print_next_run(entry, now)


def _print_last_run(last: dict[str, Any] | None) -> None:
    """The last run's outcome, its records without Dublin Core and its completeness."""
    if not last:
        click.echo("  last run: never")
        return
    reason = f": {last['reason']}" if last["reason"] and last["outcome"] == harvest.SUCCESS else ""
    click.echo(f"  last run: #{last['id']} {last['outcome']} at {last['finished'] or last['started']}{reason}")
    if missing := last["counts"]["without_dc"]:
        click.echo(
            f"  without Dublin Core: #{last['id']} {missing:,} record(s) with no oai_dc and no crosswalk of their "
            "format; stored, not republished"
        )
    if text := _completeness_text(last):
        label = "shortfall" if last["completeness"]["verdict"] == SHORT else "completeness"
        click.echo(f"  {label}: #{last['id']} {text}")


def _print_next_run(entry: dict[str, Any], now: int) -> None:
    """When the partner is harvested next, and who holds its lease."""
    from harvester.schedule import describe_schedule

    if entry["schedule"] is None:
        click.echo("  next run: not scheduled (harvested by `harvester run` only)")
    elif entry["next_run"] < _iso(now):
        click.echo(
            f"  next run: due since {entry['next_run']} ({describe_schedule(entry['schedule'])}): "
            "is `harvester schedule` running?"
        )
    else:
        click.echo(f"  next run: {entry['next_run']} ({describe_schedule(entry['schedule'])})")
    lease = entry["lease"]
    if lease and lease["holder_gone"]:
        click.echo(
            f"  lease held by {lease['holder']} until {lease['expires']}, but that process is gone; "
            "the next run takes the lease over"
        )
    elif lease:
        click.echo(f"  being harvested by {lease['holder']} (lease until {lease['expires']})")


@main.command()
@click.argument("partner")
@click.option("--limit", "-n", default=20, show_default=True, help="How many runs to show, latest first.")
@json_option
@pass_ctx
def history(ctx: Context, partner: str, limit: int, as_json: bool) -> None:
    """Show the latest runs of PARTNER with their outcome and counts."""
    store = ctx.store(existing=True)
    harvest.settle_runs(store, partner)
    runs = harvest_history(store, partner, limit=limit)
    if not runs and partner not in {p.name for p in ctx.config.partners}:
        raise click.ClickException(f"unknown partner {partner!r} and no runs recorded for it")
    if as_json:
        listed = {
            "partner": partner,
            "runs": [_run_json(r) for r in runs],
            "quarantine": _quarantine_json(store, partner),
        }
        click.echo(json.dumps(listed, indent=2))
        return
    if not runs:
        click.echo(f"{partner}: no runs yet")
    held = quarantine_counts(store).get(partner, 0)
    if held:
        click.echo(f"{partner}: {held:,} record(s) in quarantine now (harvester status lists them)")
    for r in runs:
        c = harvest.Counts.from_dict(r.counts)
        took = f"{r.finished - r.started}s" if r.finished is not None else "-"
        judged = Completeness.from_dict(r.counts.get("completeness"))
        shown = "; ".join(t for t in (harvest.counts_text(c), judged.text() if judged else "") if t)
        click.echo(
            f"#{r.id} {format_datestamp(r.started)} {r.outcome:<8} {took:>6}  from {r.from_date or '-'}"
            f"{'  resumed' if r.resumed else ''}" + (f": {shown}" if shown else "")
        )
        if r.reason:
            click.echo(f"    {r.reason}")
        if c.quarantined:
            distinct = dict((str(where), str(why)) for where, why in r.counts.get("failures", []))
            for where, why in list(distinct.items())[:_QUARANTINE_TEXT]:
                click.echo(f"    not harvested: {where}: {why}")
        if r.counts.get("sweep"):
            click.echo(f"    {sweep.describe(sweep.SweepReport.from_dict(partner, r.counts['sweep']))}")


@main.command()
@click.option(
    "--now",
    "run_now",
    is_flag=True,
    help="Also fire every partner's job right away: a partner that is due (never harvested, or past its time) "
    "is harvested now.",
)
@click.option(
    "--lease-seconds",
    type=click.IntRange(min=1),
    default=harvest.HarvestSettings().lease_ttl,
    show_default=True,
    help="How long a partner's lease and this scheduler's claim on its due harvest last unless renewed (each "
    "page renews them): another scheduler takes over the partners of one that was killed after this long.",
)
@client_options
@clock_skew_option
@pass_ctx
def schedule(
    ctx: Context,
    run_now: bool,
    lease_seconds: int,
    timeout: float,
    retries: int,
    backoff: float,
    clock_skew: int,
) -> None:
    """Run the partners' schedules in the foreground until SIGTERM or SIGINT.

    Several schedulers may share one store: each due harvest is run by one of them.
    On a signal, each running harvest finishes its current page, then the process exits 0.
    """
    from harvester.schedule import HarvestScheduler

    settings = replace(
        _settings(timeout, retries, backoff, ctx.config.harvester, ctx.config),
        clock_skew=clock_skew,
        lease_ttl=lease_seconds,
    )
    store = ctx.store()
    try:
        scheduler = HarvestScheduler(ctx.config, store, settings=settings, run_now=run_now)
    except err.ConfigurationError as exc:
        raise click.ClickException(f"configuration: {exc}") from None
    scheduler.run_forever()


@main.command()
@click.argument("url")
@click.option("--name", help="The partner's name in the entry (default: made from the URL's host and path).")
@click.option(
    "--max-requests",
    type=click.IntRange(min=1),
    default=PROBE_MAX_REQUESTS,
    show_default=True,
    help="Requests the probe may send in all; the validator's checks that do not fit are skipped.",
)
@click.option(
    "--timeout",
    type=click.FloatRange(min=0, min_open=True),
    default=30.0,
    show_default=True,
    help="Seconds to wait for each answer.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the findings as JSON for scripts.")
def probe(url: str, name: str | None, max_requests: int, timeout: float, as_json: bool) -> None:
    """Try the OAI-PMH base URL of a new partner and print what its configuration needs.

    Identify, formats, sets, a timed first page of ListRecords, the announced volume, what was
    detected (granularity honoured, token lifetime, gzip, encoding, XML faults), the validator's
    rules within the request cap, and a `partners:` entry to paste into config.yaml.

    Exit code 0 when the URL answers OAI-PMH (whatever the rules found), 1 when it does not.
    """
    from harvester import probe as probe_mod
    from oaiserver.validate import url_problem

    problem = url_problem(url)
    if problem:
        raise click.BadParameter(problem, param_hint="URL")
    try:
        report = probe_mod.probe(url, timeout=timeout, max_requests=max_requests, name=name)
    except probe_mod.NotOAI as exc:
        click.echo(str(exc), err=True)
        sys.exit(1)
    except config_mod.ConfigError as exc:
        raise click.BadParameter(str(exc), param_hint="--name") from None
    if as_json:
        click.echo(json.dumps(probe_mod.as_json(report), indent=2, ensure_ascii=False))
    else:
        click.echo("\n".join(probe_mod.lines(report)))


if __name__ == "__main__":  # pragma: no cover
    main()
