"""One harvest run of one partner: incremental, checkpointed, idempotent.

* The `from` of a run is the partner's own responseDate of the first request of the last
  complete run (in the granularity its Identify declares); a first run takes everything, or
  starts at the configured `from`. The `from` moves only when a run succeeds.
* Each page's records and the checkpoint (the next resumption token, the counts) are
  committed in one transaction, under the partner's lease, renewed in that transaction. A
  crash loses nothing: the next run resumes from the checkpoint token.
* A list ended by a token fault (its token comes back, it goes round, the partner rejects a
  token: expired, or forgotten after a restart) is taken up from the latest datestamp it gave,
  or, when its records did not come in datestamp order, the window is walked by halving date
  windows listed with `from` and `until` (their walk is in the checkpoint: a killed run resumes
  inside it), bounded in requests (harvester.takeup); the run's note says how, and a run that
  finished its window so is complete and moves `from` on.
* A partner whose Identify claims seconds but that refuses a time in `from` (badArgument) is
  listed with days; that is remembered for it (harvest_state.learned), so later runs send days
  at once, without asking Identify.
* Writes are upserts by identifier and unchanged content keeps its datestamp, so harvesting
  a page twice changes nothing.
* Never stalled by one record. A record that cannot be read, is refused by the checks or
  cannot be stored is quarantined by its identifier, with the reason, in its page's transaction
  (harvest_quarantine); each run first asks for the quarantined records again by GetRecord, and
  one that reads is stored and leaves the quarantine. A run whose only failures are quarantined
  is a success ("N record(s) quarantined") and moves `from` on.
* How a list is read is the partner's `mode`: `list_records`, `identifiers` (ListIdentifiers and
  a GetRecord per record: harvester.identifiers), or `auto`: ListRecords, and when one of its
  pages cannot be read (HTTP 5xx after retries, HTML, not well-formed, not OAI-PMH, too large), the list
  again from its start by ListIdentifiers and GetRecord, and so the rest of the run (not
  remembered: the next run tries ListRecords first). A record already held at the datestamp its
  header gives is not asked for again, so a list walked again costs its pages and a GetRecord
  for each record from the broken page on. Under `list_records` a page that cannot be read
  fails the run, as it always did.
* A run ends as success, partial (records without an identifier could not be read: counted and
  reported), or failed (with the reason), and is kept in the run history. Each page's transaction also
  stores the run's counts so far, so a run killed mid-way shows the pages it committed.
* A run whose lists were read to the end is also judged complete, short by N, or unknown:
  what the partner announced (completeListSize) against what arrived and was stored
  (harvester.completeness). A shortfall is a warning, never a failure.
* Text is taken as the partner meant it (harvester.encodings), and counted: pages declared UTF-8
  whose bytes are Windows-1252 are `recoded`, Dublin Core encoded twice is `undoubled`, and
  what looks encoded twice but cannot be undone exactly is kept and counted `doubled`, each
  with a warning naming the page or the record. A page whose bytes are not text is refused.
* A list that cannot be taken up (harvester.takeup) fails the run with the reason; it keeps
  what it wrote and leaves `from` where it was. A responseDate further ahead of our clock
  than `clock_skew` is not taken as the next `from`.
* A store that fails under a run fails it on one line; if the run cannot even be marked
  failed, `settle_runs` (called by `harvester status` and `history`) marks it later.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any, NamedTuple

import sqlalchemy as sa

from harvester import errors as err
from harvester import identifiers as per_record
from harvester import partner_sets
from harvester.client import Client, ClientSettings, Identity, Page, settings_for, utc
from harvester.completeness import SHORT, Completeness, judge, see_page
from harvester.convert import Converted, kept_copy_reader, listed_at, named, seconds
from harvester.loops import ListWatch, LoopLimits
from harvester.pipeline import WORKER_FROM, Pipeline, Ready
from harvester.takeup import BUDGET, DAY_SECONDS, CannotTakeUp, TakeUp
from oaiserver.config import ConfigError, Partner
from oaiserver.records import DAY, OAI_NS, SECONDS, format_datestamp, parse_datestamp, shown_identifier
from oaiserver.store import (
    KEEP,
    Store,
    WriteResult,
    acquire_lease,
    add_partner_sets_in,
    close_interrupted_run,
    declare_format_in,
    finish_run,
    harvest_history,
    harvest_state_of,
    harvested_datestamps,
    learn,
    leases,
    name_partner_sets,
    partner_set_names,
    quarantine_in,
    quarantined,
    release_in,
    release_lease,
    renew_lease_in,
    save_checkpoint_in,
    save_run_counts_in,
    serve_kept_copies_in,
    start_run,
    write_harvested_in,
    write_native_in,
)

log = logging.getLogger(__name__)
page_log = logging.getLogger(f"{__name__}.pages")  # one line per page; quietened under a progress bar
# A run's outcome and the records it could not harvest: the scheduler's record of them.
# `harvester run` prints them itself, once, and quietens this logger.
report_log = logging.getLogger(f"{__name__}.report")

SUCCESS, PARTIAL, FAILED = "success", "partial", "failed"
# How a list is read (the checkpoint's `path`): ListRecords pages, or ListIdentifiers and GetRecord.
LIST_RECORDS, IDENTIFIERS = "list_records", "identifiers"
EXIT_CODES = {SUCCESS: 0, PARTIAL: 2, FAILED: 1}


@dataclass(frozen=True)
class HarvestSettings:
    client: ClientSettings = field(default_factory=ClientSettings)
    lease_ttl: int = 900  # seconds a lease lasts unless renewed (it is renewed with every page)
    take_up_budget: int = BUDGET  # requests a run may spend on lists taken up (harvester.takeup)
    max_failures_kept: int = 50  # failed records named in the run history (all are counted)
    # Big lists of more than one page are converted in a worker process (harvester.pipeline), the
    # previous page being written meanwhile: about 1.3 times the records a second on 2 cores.
    # POSIX only: the worker's pipes are file descriptors.
    worker_process: bool = os.name == "posix"
    # A run's pages go to the worker from the page whose list is announced or received at this
    # many records: a smaller one is converted in the harvest's process (a process start costs more).
    worker_from: int = WORKER_FROM
    # A stop (SIGTERM) finishes the page in hand; a worker that has not converted it this many
    # seconds after the stop is given up on (the page is then asked for again by the next run).
    stop_grace: float = 30.0
    loops: LoopLimits = field(default_factory=LoopLimits)  # when a list that goes round is ended
    # A responseDate more than this many seconds past our clock is not taken as the next `from`.
    clock_skew: int = 300
    # Quarantined records retried by GetRecord at the start of a run, those tried longest ago first.
    max_quarantine_retries: int = 1000
    # The partners' names in configuration order: under an identifier two sources share, local
    # records are served first, then partners in this order (oaiserver.store.write).
    sources: tuple[str, ...] = ()
    # The configured partners: when the record served under an identifier is deleted, the copy
    # another of them holds is read again (convert.kept_copy_reader) and served instead.
    partners: tuple[Partner, ...] = ()


@dataclass
class Counts:
    pages: int = 0
    received: int = 0  # records received, deleted ones included
    added: int = 0
    changed: int = 0
    unchanged: int = 0
    deleted: int = 0  # deleted records received (kept as tombstones)
    failed: int = 0  # records that could not be harvested and have no identifier to quarantine them by
    quarantined: int = 0  # records put in quarantine (read wrong, refused, not storable): retried later
    recovered: int = 0  # quarantined records that GetRecord harvested at the start of a run
    repaired: int = 0  # records the lenient parser had to repair (quirk lenient_xml)
    # Live records with no Dublin Core, none in oai_dc and none a crosswalk of their format gives
    # (harvester.convert): stored, not republished.
    without_dc: int = 0
    restarts: int = 0  # lists taken up after a token fault (harvester.takeup)
    # Text (harvester.encodings): pages declared UTF-8 whose bytes were not, read as Windows-1252;
    # records whose Dublin Core was UTF-8 encoded twice, undone; records that keep text looking so.
    recoded: int = 0  # pages
    undoubled: int = 0  # records
    doubled: int = 0  # records
    swept: int = 0  # records its deletion sweep turned into tombstones (harvester.sweep)
    # Records stored (in added, changed or unchanged) but not served: a source that comes before
    # this partner (local, or a partner earlier in the configuration) serves the identifier.
    shadowed: int = 0

    def __add__(self, other: Counts) -> Counts:
        return Counts(**{f.name: getattr(self, f.name) + getattr(other, f.name) for f in fields(self)})

    def __sub__(self, other: Counts) -> Counts:
        return Counts(**{f.name: getattr(self, f.name) - getattr(other, f.name) for f in fields(self)})

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> Counts:
        names = {f.name for f in fields(cls)}
        return cls(**{k: int(v) for k, v in (data or {}).items() if k in names})


@dataclass
class RunReport:
    partner: str
    outcome: str
    reason: str | None
    run_id: int
    from_date: str | None
    resumed: bool
    counts: Counts  # this run
    window: Counts  # the whole window, runs it resumed included
    failures: list[tuple[str, str]] = field(default_factory=list)
    next_from: str | None = None
    completeness: Completeness | None = None  # judged when every list was read to its end
    format: str = "oai_dc"  # the metadataPrefix harvested
    more: list[RunReport] = field(default_factory=list)  # the partner's further formats, in order

    @property
    def exit_code(self) -> int:
        return max(EXIT_CODES[r.outcome] for r in self.all())

    def all(self) -> list[RunReport]:
        """This report and those of the partner's further formats."""
        return [self, *self.more]


ProgressCallback = Callable[[str, Counts, Page], None]


def _process_scope() -> str:
    """Which process table a pid is looked up in: this boot of this machine, and this PID
    namespace (two containers may share a host name but never a PID namespace)."""
    parts = []
    try:
        parts.append(Path("/proc/sys/kernel/random/boot_id").read_text().strip())
        parts.append(str(os.stat("/proc/self/ns/pid").st_ino))
    except OSError:
        pass  # not Linux: host name and pid are all there is
    return hashlib.sha1("|".join(parts).encode()).hexdigest()[:8] if parts else "any"


def default_owner() -> str:
    """Who holds a lease: host, process, where that process id means something, and a random
    part (two runs never share one): `host:pid:scope:random`."""
    return f"{socket.gethostname()}:{os.getpid()}:{_process_scope()}:{uuid.uuid4().hex[:8]}"


def holder_is_gone(holder: str) -> bool:
    """Whether the lease holder is a harvester process of this host that no longer runs (it
    was killed, or crashed, before releasing its lease). Only a certain answer counts: another
    host, another PID namespace, an unknown format, a live process (even one that reused the
    pid), or this very process are all "not gone", and their lease is left to expire."""
    parts = holder.split(":")
    if len(parts) != 4 or not parts[1].isdigit():
        return False
    host, pid_text, scope, _ = parts
    pid = int(pid_text)
    if host != socket.gethostname() or scope != _process_scope() or pid == os.getpid() or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False  # alive, under another user
    try:  # alive, or a zombie that its parent has not reaped yet: that one holds nothing
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[:1] == ["Z"]


def clock_ahead(response_date: str, now: int, skew: int) -> str | None:
    """Why `response_date` (the partner's clock) cannot be a `from`: it is more than `skew`
    seconds past `now` (ours); None when it can."""
    try:
        theirs, _ = parse_datestamp(response_date)
    except ValueError:
        return None  # the client gives UTC seconds; anything else is not a clock reading
    if theirs - now <= skew:
        return None
    return f"its responseDate {response_date} is {_duration(theirs - now)} past ours ({format_datestamp(now)})"


def _duration(seconds: int) -> str:
    if seconds < 2 * 3600:
        return f"{round(seconds / 60)} minutes"
    if seconds < 2 * 86_400:
        return f"{round(seconds / 3600)} hours"
    return f"{round(seconds / 86_400):,} days"


def window_key(partner: Partner) -> str:
    """The list a `from` and a checkpoint belong to; changing any of these starts afresh."""
    return json.dumps([partner.metadata_prefix, list(partner.sets), partner.republish])


def run(
    store: Store,
    partner: Partner,
    *,
    settings: HarvestSettings | None = None,
    stop: threading.Event | None = None,
    on_page: ProgressCallback | None = None,
    owner: str | None = None,
    full: bool = False,
    clock: Callable[[], float] = time.time,
) -> RunReport:
    """Harvest `partner` once. Raises PartnerBusy if another process holds its lease;
    every other problem ends the run as failed, with the reason in the report and history.

    `full` ignores the stored `from` and any checkpoint: everything (or everything since the
    configured `from`) is listed again.
    """
    settings = settings or HarvestSettings()
    owner = owner or default_owner()
    stop = stop or threading.Event()
    try:
        won, holder, expires = acquire_lease(store, partner.name, owner, settings.lease_ttl, int(clock()))
        if not won and holder_is_gone(holder):
            # A harvester killed mid-run (SIGKILL, OOM, power) keeps its lease until it expires:
            # free it now, so that a restart resumes at once. Racing takers still get one lease:
            # the release is conditional on the dead holder, the acquisition on a free row.
            log.warning("%s: the lease holder %s is no longer running; taking the lease over", partner.name, holder)
            release_lease(store, partner.name, holder)
            won, holder, expires = acquire_lease(store, partner.name, owner, settings.lease_ttl, int(clock()))
    except sa.exc.SQLAlchemyError as exc:
        raise err.StoreError(f"{partner.name}: the record store failed: {store_problem(exc)}") from None
    if not won:
        raise err.PartnerBusy(partner.name, holder, expires)
    failing = False
    try:
        # Each format on its own (its `from`, checkpoint and history line), under one lease: a
        # format the partner does not offer fails its own run, and the others go on.
        reports = [
            _Run(store, replace(partner, metadata_prefix=fmt), settings, stop, on_page, owner, clock).execute(full)
            for fmt in partner.harvested_formats
        ]
        reports[0].more = reports[1:]
        _serve_kept(store, partner, settings)
        return reports[0]
    except err.StoreError:
        failing = True
        raise
    finally:
        try:
            release_lease(store, partner.name, owner)
        except sa.exc.SQLAlchemyError as exc:
            # Said already when the store failed under the run; the lease is taken over once
            # this process is gone (holder_is_gone), or expires.
            log.log(
                logging.DEBUG if failing else logging.WARNING,
                "%s: the lease could not be released: %s",
                partner.name,
                store_problem(exc),
            )


def _serve_kept(store: Store, partner: Partner, settings: HarvestSettings) -> None:
    """The partner's kept copies of records served deleted, or from a partner no longer
    configured, served instead (store.serve_kept_copies_in), under its lease: its records are
    served even though it does not send them again. A store failure here is logged: the run's
    records are written, and the next run tries again."""
    if not settings.partners or not partner.republish:
        return
    try:
        with store.writing() as (conn, stamp):
            promote = kept_copy_reader(settings.partners)
            served = serve_kept_copies_in(store, conn, stamp, partner.name, promote, settings.sources)
    except sa.exc.SQLAlchemyError as exc:
        log.warning("%s: its kept records could not be served: %s", partner.name, store_problem(exc))
        return
    if served:
        log.info("%s: %d record(s) it kept are served now (the record served was deleted)", partner.name, len(served))


INTERRUPTED = (
    "interrupted: the harvester process ended before the run finished (killed, or the record store failed "
    "under it); the next run resumes from the checkpoint"
)


def settle_runs(store: Store, partner: str, clock: Callable[[], float] = time.time) -> int:
    """Mark as failed the runs of `partner` still marked running that no harvester is running:
    their owner holds no live lease on the partner, or is a process of this host that is gone.
    A run killed, or whose store failed under it, is then shown as what it is. Returns how
    many were closed."""
    running = harvest_history(store, partner, limit=100, running=True)  # before the leases: see below
    if not running:
        return 0
    # A run is started after its lease is taken and ended before it is released: read after
    # the runs, a lease that is not there any more means its run ended (or its process died).
    held = leases(store).get(partner)
    now = int(clock())
    closed = 0
    for r in running:
        holding = held is not None and held[0] == r.owner and held[1] >= now
        if holding and not holder_is_gone(r.owner):
            continue
        closed += close_interrupted_run(store, r.id, INTERRUPTED)
    return closed


def store_problem(exc: sa.exc.SQLAlchemyError) -> str:
    """A store error on one line: the driver's exception and the first line of its message
    (SQLAlchemy's own text adds the statement, its parameters and a link)."""
    cause: BaseException = getattr(exc, "orig", None) or exc
    lines = str(cause).strip().splitlines()
    return f"{type(cause).__name__}: {lines[0].strip() if lines else ''}".rstrip(": ")


class _Run:
    def __init__(
        self,
        store: Store,
        partner: Partner,
        settings: HarvestSettings,
        stop: threading.Event,
        on_page: ProgressCallback | None,
        owner: str,
        clock: Callable[[], float],
    ) -> None:
        self.store, self.partner, self.settings = store, partner, settings
        self.stop, self.on_page, self.owner, self.clock = stop, on_page, owner, clock
        self.counts = Counts()
        self.failures: list[tuple[str, str]] = []
        self.quarantined: set[str] = set()  # identifiers this run put in quarantine
        self.fallen: tuple[err.HarvestError, int] | None = None  # why ListRecords was left, and when (pages)
        self.run_id: int | None = None
        self.take_up = TakeUp(budget=settings.take_up_budget)
        self.taking_up = False  # the list being read is one taken up
        self.list_latest: int | None = None  # the latest datestamp the list being read gave
        self.list_pages = 0  # the pages of the list being read
        self.list_ordered = True  # its records came in datestamp order
        self.list_rising = False  # ... and one came later than another: the order is shown, not assumed
        self.list_seen: set[int] = set()  # hash() of the identifiers it gave
        self.list_window: tuple[int, int] | None = None  # the date window it lists, when one is walked
        self.list_stray: int | None = None  # a datestamp it gave outside that window: from/until ignored
        self.granularity: str | None = None  # of `from` values: asked of Identify when one is first sent
        self.identity: Identity | None = None  # what Identify said, once asked
        self.notes: list[str] = []  # what the run's outcome also says
        self.fmt = partner.metadata_prefix
        # A format after the partner's first is kept verbatim beside its record (native_formats).
        self.native = self.fmt != partner.harvested_formats[0]
        # A further format as the partner's ListMetadataFormats declares it: (schema, namespace),
        # written with the first page, so that ours lists it (None: not declared, not listed).
        self.declared: tuple[str, str] | None = None
        # Its namespace, as the partner declared it: the provenance of a record served in it names it.
        self.namespace = ""

    def now(self) -> int:
        return int(self.clock())

    def execute(self, full: bool) -> RunReport:
        try:
            return self._execute(full)
        except sa.exc.SQLAlchemyError as exc:
            reason = f"{self.partner.name}: the record store failed: {store_problem(exc)}"
            if self.run_id is None:
                raise err.StoreError(reason) from None
            try:
                return self._finish(FAILED, f"{reason}; the next run resumes from the checkpoint")
            except sa.exc.SQLAlchemyError:
                raise err.StoreError(
                    f"{reason}; run #{self.run_id} is marked failed by the next harvester command that reaches it"
                ) from None

    def _execute(self, full: bool) -> RunReport:
        self._start(full)
        try:
            self._harvest()
        except err.Stopped as exc:
            return self._finish(FAILED, f"{exc}; the next run resumes from the checkpoint")
        except err.ListLoopError as exc:
            # Resuming at one of its tokens would go round again: the next run lists the window
            # afresh, from the same `from` (the list did not end, so records may be unseen).
            return self._finish(FAILED, str(exc), checkpoint=None)
        except err.Unreachable as exc:
            return self._finish(FAILED, f"{exc}; the next run tries again")
        except err.HarvestError as exc:
            return self._finish(FAILED, str(exc))
        except sa.exc.SQLAlchemyError:
            raise  # execute says so
        except Exception as exc:
            self._finish(FAILED, f"internal error: {type(exc).__name__}: {exc}")
            raise
        return self._completed()

    def _start(self, full: bool) -> None:
        """Open the run in the store: at the checkpoint kept for this window (unless `full`), or else
        from the `from` the last complete run of this window left (the partner's own `from_date` if none)."""
        name = self.partner.name
        self.full = full
        state = harvest_state_of(self.store, name, self.fmt)
        key = window_key(self.partner)
        checkpoint = state.checkpoint if not full and state.checkpoint and state.checkpoint.get("key") == key else None
        self.resumed = checkpoint is not None
        if checkpoint is None:
            previous = state.next_from if not full and state.next_from_key == key else None
            checkpoint = {
                "key": key,
                "from": previous or self.partner.from_date,
                "first_response": None,
                "set": 0,
                "token": None,
                "counts": {},
                "path": IDENTIFIERS if self.partner.mode == IDENTIFIERS else LIST_RECORDS,
            }
        self.cp = checkpoint
        self.taking_up = bool(checkpoint.get("windows"))  # a run killed while walking date windows goes on
        if (state.learned or {}).get("granularity") == "days":
            self.granularity = DAY
        self.window = Counts.from_dict(checkpoint["counts"])
        self.sets = partner_sets.Seen(name, set(partner_set_names(self.store, name)))
        self.run_id = start_run(
            self.store,
            name,
            self.owner,
            started=self.now(),
            from_date=checkpoint["from"],
            resumed=self.resumed,
            fmt=self.fmt,
        )
        if self.resumed:
            log.info("%s: resuming the window from %s at its checkpoint", name, checkpoint["from"] or "the start")

    def _completed(self) -> RunReport:
        """The end of a run whose lists were read to the end: partial if records failed, else a
        success whose next `from` is the first response's date, unless the partner's clock is ahead."""
        completeness = judge(self.cp.get("tally"))
        if self.window.failed:
            first = "; ".join(f"{where}: {why}" for where, why in self.failures[:3])
            partial = f"{self.window.failed} record(s) could not be harvested" + (f" ({first})" if first else "")
            return self._finish(PARTIAL, partial, checkpoint=None, completeness=completeness)
        notes = [f"{self.window.repaired} record(s) repaired by the lenient parser"] if self.window.repaired else []
        if self.window.quarantined:
            notes.append(self._quarantine_note())
        notes += [n for n in (self.take_up.note(), *self.notes) if n]
        if self.fallen is not None:  # said once, in the run's line (the error names the partner's URL)
            notes.append(
                f"harvested by ListIdentifiers and GetRecord, ListRecords failing ({self.fallen[0]}); "
                "mode: identifiers makes that the partner's way"
            )
        next_from = self.cp["first_response"]
        ahead = clock_ahead(next_from, self.now(), self.settings.clock_skew) if next_from else None
        if ahead is not None:
            # A `from` in the future would miss every change until then. The run's own `from`
            # loses nothing whatever the partner's clock says (the window is listed again, and
            # unchanged records stay unchanged); our clock would lose what a partner stamps
            # behind it.
            kept = self.cp["from"]
            again = f"from {kept} again" if kept else "from the beginning again"
            notes.append(f"the partner's clock is ahead: {ahead}; the next run starts {again}")
            next_from = None
        reason = "; ".join(notes) or None
        return self._finish(
            SUCCESS,
            reason,
            checkpoint=None,
            next_from=(next_from, self.cp["key"]) if next_from else None,
            completeness=completeness,
        )

    def _quarantine_note(self) -> str:
        """`2 record(s) quarantined (id: why; …)`: the first three named."""
        named_failures = dict((where, why) for where, why in self.failures if named(where))
        first = "; ".join(f"{where}: {why}" for where, why in list(named_failures.items())[:3])
        return f"{self.window.quarantined} record(s) quarantined" + (f" ({first})" if first else "")

    def _finish(
        self,
        outcome: str,
        reason: str | None,
        *,
        checkpoint: Any = KEEP,
        next_from: tuple[str, str] | None = None,
        completeness: Completeness | None = None,
    ) -> RunReport:
        assert self.run_id is not None, "a run is finished after it is started"
        run_id = self.run_id
        counts = {**asdict(self.counts), "failures": self.failures[: self.settings.max_failures_kept]}
        if completeness is not None:
            counts["completeness"] = completeness.as_dict()
        finish_run(
            self.store,
            run_id,
            self.partner.name,
            fmt=self.fmt,
            finished=self.now(),
            outcome=outcome,
            reason=reason,
            counts=counts,
            checkpoint=checkpoint,
            next_from=next_from,
        )
        report = RunReport(
            partner=self.partner.name,
            outcome=outcome,
            reason=reason,
            run_id=run_id,
            from_date=self.cp["from"],
            resumed=self.resumed,
            counts=self.counts,
            window=self.window,
            failures=self.failures,
            next_from=next_from[0] if next_from else None,
            completeness=completeness,
            format=self.fmt,
        )
        quiet = (
            outcome == SUCCESS
            and not reason
            and (completeness is None or completeness.verdict != SHORT)
            and not (self.counts.recoded or self.counts.undoubled or self.counts.doubled or self.counts.without_dc)
        )
        report_log.log(logging.INFO if quiet else logging.WARNING, "%s", describe(report))
        return report

    def _harvest(self) -> None:
        partner, settings = self.partner, self.settings
        try:
            credentials = partner.credentials()  # read now, from the environment: never stored
        except ConfigError as exc:
            raise err.HarvestError(f"{exc}; the partner's password is read from it when a harvest starts") from None
        client_settings = settings_for(partner, settings.client, credentials)
        with (
            Client(partner.base_url, client_settings, stop=self.stop) as client,
            Pipeline(
                partner,
                stop=self.stop,
                worker=settings.worker_process,
                worker_from=settings.worker_from,
                lenient=client_settings.lenient_xml,
                grace=settings.stop_grace,
            ) as pipeline,
        ):
            self._check_offered(client)
            if self.cp["from"]:
                self._from_text(client, self.cp["from"])  # a bad `from` fails before anything is asked
            self._retry_quarantined(client)
            targets: list[str | None] = [*partner.sets] or [None]
            while self.cp["set"] < len(targets):
                args = self._list_args(client, targets[self.cp["set"]])
                try:
                    self._list(client, pipeline, args)
                except (err.ListLoopError, err.BadResumptionToken) as exc:
                    self._take_up(client, exc)
                except err.BadArgument as exc:
                    self._to_days(exc, args)
                except per_record.FALLBACK_FAULTS as exc:
                    self._fall_back(exc)  # the next turn lists it by ListIdentifiers
            # Once a run of the first format, after its lists: the names of the partner's sets (a
            # further format's run adds no set).
            if self.sets.stored and not self.native:
                found = partner_sets.names(client, partner.name)
                if found is not None:
                    name_partner_sets(self.store, partner.name, found)

    def _also_failing(self, exc: err.HarvestError) -> err.HarvestError:
        """`exc`, or, when it is ListIdentifiers failing at once where ListRecords failed just
        before (auto's fallback), an error that gives both reasons."""
        if self.fallen is None or self.counts.pages > self.fallen[1] or isinstance(exc, err.BadResumptionToken):
            return exc
        return err.HarvestError(f"{self.fallen[0]}; and ListIdentifiers, tried instead, fails too: {exc}")

    def _list(self, client: Client, pipeline: Pipeline, args: dict[str, str]) -> None:
        """One list, from the checkpoint's token, by the checkpoint's path, page after page."""
        watch = ListWatch(self.settings.loops)
        token = self.cp["token"]
        self.list_latest, self.list_pages, from_token = None, 0, token is not None
        self.list_ordered, self.list_seen, self.list_stray = True, set(), None
        walking = self.cp.get("windows")
        self.list_window = (walking[0][0], walking[0][1]) if walking else None
        # A list taken up from its latest datestamp goes on from there: what the list showed holds.
        self.list_rising = self.list_rising and self.taking_up
        self.cp = {**self.cp, "from_token": from_token}
        if self.cp.get("path") == IDENTIFIERS:
            pages = per_record.pages(client, self.partner, self._held, token=token, args=args)
        else:
            pages = pipeline.pages(client, token=token, **args)
        try:
            for ready in pages:
                self._commit(ready)
                self._watch(watch, ready)
                if self.stop.is_set():
                    raise err.Stopped("stopped after a page, as asked")
        except (*per_record.PAGE_FAULTS, err.PartnerOAIError) as exc:  # type: ignore[misc]  # a tuple of them
            raise self._also_failing(exc) from exc.__cause__

    def _held(self, identifiers: Sequence[str]) -> dict[str, str]:
        """The datestamps we hold `identifiers` at, as their headers give them (none under `full`:
        every record is asked for again)."""
        # (A further format is kept apart from the record: what the record holds says nothing of it.)
        if self.full or self.native:
            return {}
        return harvested_datestamps(self.store, self.partner.name, identifiers)

    def _fall_back(self, exc: err.HarvestError) -> None:
        """A page of ListRecords that cannot be read: under `auto`, the list again from its start by
        ListIdentifiers and GetRecord, and so the rest of the run (the records already stored
        are not asked for again); otherwise the run fails."""
        if self.partner.mode != "auto" or self.cp.get("path") == IDENTIFIERS:
            raise exc
        log.info(
            "%s: ListRecords fails; harvesting by ListIdentifiers and GetRecord for the rest of this run",
            self.partner.name,
        )
        self.cp = {**self.cp, "token": None, "path": IDENTIFIERS}
        self.fallen = (exc, self.counts.pages)

    def _retry_quarantined(self, client: Client) -> None:
        """The partner's quarantined records, each asked for by GetRecord: one that reads is
        stored and leaves the quarantine, one the partner no longer has leaves it too."""
        for entry in quarantined(self.store, self.partner.name, limit=self.settings.max_quarantine_retries):
            fetched = per_record.get_record(client, self.partner, entry.identifier)
            with self.store.writing() as (conn, stamp):
                if not renew_lease_in(conn, self.partner.name, self.owner, self.settings.lease_ttl, self.now()):
                    raise err.LeaseLost(f"{self.partner.name}: another harvester took over the lease")
                if fetched is None:
                    release_in(conn, self.partner.name, [entry.identifier])
                    log.info("%s: quarantined record %s is gone from the partner", self.partner.name, entry.identifier)
                    continue
                written = self._write(conn, stamp, fetched)
            if not written.failures:
                self.counts.recovered += 1
                self.window.recovered += 1
                log.info("%s: quarantined record %s harvested by GetRecord", self.partner.name, entry.identifier)

    def _take_up(self, client: Client, exc: err.HarvestError) -> None:
        """A list ended by a token fault: taken up later in the window, or walked by date windows
        when its records did not come in datestamp order (harvester.takeup), or the run fails
        (ListLoopError: the next run lists the window afresh)."""
        if isinstance(exc, err.BadResumptionToken) and self.cp["token"] is None:
            raise exc  # refused without a token: no token fault
        n = self.list_pages
        fault = {
            err.RepeatedTokenError: f"the list repeated its token after page {n}",
            err.BadResumptionToken: f"the partner refused the token for page {n + 1} (badResumptionToken)",
        }.get(type(exc), f"the list went round at page {n}")
        # From its latest datestamp only a list shown to rise: records all of one datestamp so far
        # may be the newest of a list that gives its newest first, and the older ones would be lost.
        # (One that gave none is taken up by the rules for that: from a kept token's `from`, or not.)
        shown = self.list_rising or self.list_latest is None
        if not (self.list_ordered and shown) or self.cp.get("windows"):
            self._walk(client, exc, fault)
            return
        start = self.cp.get("list_from")
        if start is None and self.cp["from"]:
            start = parse_datestamp(self.cp["from"])[0]
        try:
            at = self.take_up.next_from(
                fault,
                start=start,
                latest=self.list_latest,
                granularity=self.granularity or SECONDS,
                from_token=bool(self.cp.get("from_token")),
            )
        except CannotTakeUp as why:
            raise self._cannot(exc, why) from None
        sent = "the start" if at is None else format_datestamp(at)[: 10 if self.granularity == DAY else None]
        log.warning("%s: %s: %s; taken up from %s", self.partner.name, fault, exc, sent)
        self.take_up.took(fault, sent)
        self.counts.restarts += 1
        self.window.restarts += 1
        self.taking_up = True
        self.cp = {**self.cp, "token": None, "list_from": at}

    def _walk(self, client: Client, exc: err.HarvestError, fault: str) -> None:
        """A list not in datestamp order ended by a token fault: the window being listed (at first the
        run's whole window) is halved, and its halves listed with `from` and `until` in its place.
        A list that began at a token kept from an earlier run and was refused at once lists its
        window again from its start."""
        walking = [(low, high) for low, high in self.cp.get("windows") or []]
        again = bool(walking and self.cp.get("from_token") and self.list_pages == 0)
        try:
            self._not_ignored(fault, again)
            halves = self.take_up.walk(
                fault, walking[0] if walking else self._run_window(client), self.granularity or SECONDS, again=again
            )
        except CannotTakeUp as why:
            raise self._cannot(exc, why) from None
        windows = halves + walking[1:]
        shown = " and ".join(f"{format_datestamp(low)} to {format_datestamp(high)}" for low, high in halves)
        log.warning("%s: %s: %s; listing %s", self.partner.name, fault, exc, shown)
        self.counts.restarts += 1
        self.window.restarts += 1
        self.taking_up = True
        self.cp = {**self.cp, "token": None, "list_from": None, "windows": windows}

    def _not_ignored(self, fault: str, again: bool) -> None:
        """Raises CannotTakeUp when the date window just listed gave a record outside it (the partner
        ignores `from` and `until`: smaller windows would give the same list again), or gave none
        (as a list taken up that gives none; unless its list began at a token the partner forgot)."""
        if self.list_window is None or again:
            return
        if self.list_latest is None:
            raise CannotTakeUp(f"{fault}, before it gave any record")
        if self.list_stray is None:
            return
        low, high = (format_datestamp(at) for at in self.list_window)
        raise CannotTakeUp(
            f"{fault}; the partner ignores `from` and `until` (a list from {low} until {high} "
            f"gave a record of {format_datestamp(self.list_stray)})"
        )

    def _run_window(self, client: Client) -> tuple[int, int]:
        """The run's window in seconds: its `from` (else the partner's earliestDatestamp, else the
        epoch) to the date of its first response (the next run's `from`; else now)."""
        low = self.cp["from"] or self._identity(client).earliest
        first = self.cp["first_response"]
        low_at = seconds(low) or 0
        return low_at, max(low_at, seconds(first) or self.now())

    def _cannot(self, exc: err.HarvestError, why: CannotTakeUp) -> err.ListLoopError:
        name = self.partner.name
        detail = str(exc).removeprefix(f"{name}: ").removesuffix(_KEPT)
        return err.ListLoopError(f"{name}: {why}: {detail}{_KEPT}")

    def _to_days(self, exc: err.BadArgument, args: dict[str, str]) -> None:
        """A `from` with a time refused: the partner is listed with days, now and from now on."""
        if "T" not in args.get("from", "") or self.granularity == DAY:
            raise exc
        self.granularity = DAY
        why = "it refused a time in `from` (badArgument) though its Identify says seconds"
        learn(
            self.store,
            self.partner.name,
            {"granularity": "days", "since": self.now(), "why": why},
            self.now(),
            fmt=self.fmt,
        )
        log.warning("%s: %s: %s; listed with days from now on", self.partner.name, why, exc)
        self.notes.append(f"{why}: listed with days, and remembered")

    def _write(self, conn: sa.Connection, stamp: int, converted: Converted) -> _Written:
        """A page's records written in the page's transaction; those that fail and have an
        identifier put in quarantine, those stored taken out of it."""
        # A record another source holds, even one inserted by a concurrent harvest while this
        # page was being written (the store settles that race), is kept; the one served is by priority.
        if self.native:
            if self.declared is not None:
                declare_format_in(conn, self.partner.name, self.fmt, *self.declared)
                self.declared = None  # once a run; a transaction that fails ends the run
            result = write_native_in(
                conn,
                stamp,
                self.partner.name,
                self.fmt,
                converted.to_write,
                serve=self.partner.republish,
                namespace=self.namespace,
            )
        else:
            result = write_harvested_in(
                self.store,
                conn,
                stamp,
                converted.to_write,
                priority=self.settings.sources,
                promote=kept_copy_reader(self.settings.partners),
            )
            # The partner's sets its records are first in, so that ListSets lists every set a header names.
            new_sets = self.sets.new(converted)
            add_partner_sets_in(conn, self.partner.name, new_sets)
            self.sets.keep(new_sets)  # a transaction that fails ends the run, and this with it
        failing = converted.failures + result.rejected
        held = [(i, why) for i, why in failing if named(i)]
        quarantine_in(conn, self.partner.name, held, self.now())
        bad = {i for i, _ in failing}
        release_in(conn, self.partner.name, [i for i in _identifiers(converted) if i not in bad])
        shown = [(shown_identifier(i) if named(i) else i, why) for i, why in failing]
        return _Written(result, shown, set(dict(held)), len(failing) - len(held))

    def _watch(self, watch: ListWatch, ready: Ready) -> None:
        """End the list (ListLoopError) once it shows a sign of going round."""
        page = ready.page
        why = watch.see(ready.identifiers, token=page.token, complete_list_size=page.complete_list_size)
        if why is not None:
            raise err.ListLoopError(
                f"{self.partner.name}: the list goes round: {why}; "
                f"ended after {watch.pages} page(s) of this list{_KEPT}"
            )

    def _check_offered(self, client: Client) -> None:
        """A partner harvested in several formats: one its ListMetadataFormats does not list fails
        this format's run, before any list is asked for (a partner may answer noRecordsMatch
        for a format it does not know). Unusable, it is not trusted: ListRecords' answer (its
        cannotDisseminateFormat) says then."""
        if len(self.partner.harvested_formats) == 1:
            return
        try:
            page = client.request("ListMetadataFormats")
        except (err.ResponseError, err.PartnerOAIError) as exc:
            log.warning("%s: ListMetadataFormats is unusable (%s); listing %s anyway", self.partner.name, exc, self.fmt)
            return
        declared = {
            (item.findtext(f"{{{OAI_NS}}}metadataPrefix") or "").strip(): (
                (item.findtext(f"{{{OAI_NS}}}schema") or "").strip(),
                (item.findtext(f"{{{OAI_NS}}}metadataNamespace") or "").strip(),
            )
            for item in page.items
        }
        offered = list(declared)
        schema, namespace = declared.get(self.fmt, ("", ""))
        if self.native and schema and namespace:
            self.declared = (schema, namespace)
            self.namespace = namespace
        if self.fmt not in offered:
            raise err.HarvestError(
                f"{self.partner.name}: the partner does not offer {self.fmt} "
                f"(its ListMetadataFormats lists {', '.join(offered) or 'nothing'}); its other formats are harvested"
            )

    def _list_args(self, client: Client, spec: str | None) -> dict[str, str]:
        """The arguments of the list to read now: the window's `from`, or the `from` it was taken
        up at, or the date window being walked (`from` and `until`), in the partner's granularity;
        its set, if any."""
        args = {"metadataPrefix": self.partner.metadata_prefix}
        windows = self.cp.get("windows")
        if windows:
            low, high = windows[0]
            args["from"] = self._from_text(client, format_datestamp(low))
            args["until"] = self._from_text(client, format_datestamp(high))
        else:
            start = self.cp.get("list_from")
            value = format_datestamp(start) if start is not None else self.cp["from"]
            if value:
                args["from"] = self._from_text(client, value)
        if spec:
            args["set"] = spec
        return args

    def _from_text(self, client: Client, value: str) -> str:
        """`value` as a `from` in the partner's granularity (Identify says which, unless a run
        learned that the partner takes days only)."""
        parsed = utc(value)
        if parsed is None:
            raise err.ConfigurationError(
                f"{self.partner.name}: from {value!r} is not a date (YYYY-MM-DD or YYYY-MM-DDThh:mm:ssZ)"
            )
        if self.granularity is None:
            self.granularity = self._identity(client).granularity
        utc_value, given = parsed
        if self.granularity == SECONDS:
            return utc_value if given == SECONDS else f"{utc_value}T00:00:00Z"
        return utc_value[:10]

    def _identity(self, client: Client) -> Identity:
        """What Identify says, asked once a run; an unusable Identify is taken as days, which every
        repository supports, and no earliestDatestamp."""
        if self.identity is None:
            try:
                self.identity = client.identify()
            except (err.ResponseError, err.HTTPStatusError, err.PartnerOAIError) as exc:
                log.warning(
                    "%s: Identify is unusable (%s); using days, which every repository supports", self.partner.name, exc
                )
                self.identity = Identity("", "", DAY, None, None)
        return self.identity

    def _commit(self, ready: Ready) -> None:
        """The page's records and the checkpoint, in one transaction, under our lease."""
        name = self.partner.name
        page, converted, received = ready.page, ready.converted, ready.received
        delta = Counts(
            pages=1,
            received=received,
            deleted=converted.deleted,
            repaired=len(converted.repaired),
            # A further format is served as it came: whether it gives Dublin Core is the first format's matter.
            without_dc=0 if self.native else converted.without_dc,
            recoded=1 if page.recoded is not None else 0,
            undoubled=len(converted.undoubled),
            doubled=len(converted.doubled),
        )
        # A list's end ends its set, unless it ends a date window with more to walk.
        walked = page.token is None and bool(self.cp.get("windows"))
        windows = self.cp["windows"][1:] if walked else self.cp.get("windows")
        checkpoint = {
            **self.cp,
            "first_response": self.cp["first_response"] or page.response_date,
            "token": page.token,
            "set": self.cp["set"] + (1 if page.token is None and not windows else 0),
            "windows": windows or None,
        }
        if page.token is None:
            checkpoint["list_from"] = None
        taken_up = self.taking_up
        with self.store.writing() as (conn, stamp):
            if not renew_lease_in(conn, name, self.owner, self.settings.lease_ttl, self.now()):
                raise err.LeaseLost(f"{name}: another harvester took over the lease; this page was not written")
            written = self._write(conn, stamp, converted)
            stored = written.result.added + written.result.changed + written.result.unchanged
            window = self.window + replace(
                delta,
                added=written.result.added,
                changed=written.result.changed,
                unchanged=written.result.unchanged + ready.skipped,
                failed=written.unnamed,
                shadowed=len(written.result.shadowed),
                quarantined=len(written.quarantined - self.quarantined),  # each record once a run
            )
            checkpoint["counts"] = asdict(window)
            checkpoint["tally"] = see_page(
                self.cp.get("tally"),
                str(self.cp["set"]),
                # A list taken up adds to the list it finishes: its own announcement is of part of it.
                first=self.cp["token"] is None and not taken_up,
                announced=None if taken_up else page.complete_list_size,
                more=page.token is not None,
                received=received,
                stored=stored + ready.skipped,
            )
            save_checkpoint_in(conn, name, checkpoint, self.now(), fmt=self.fmt)
            failures = written.failures
            counts = self.counts + (window - self.window)
            keep = self.settings.max_failures_kept
            kept = (self.failures[:keep] + failures[:keep])[:keep]
            assert self.run_id is not None
            save_run_counts_in(conn, self.run_id, {**asdict(counts), "failures": kept})
        delta = window - self.window
        self.cp, self.window, self.counts = checkpoint, window, counts
        self.take_up.windows += 1 if walked else 0
        self._seen_page(ready, taken_up)
        for where, why in failures:
            report_log.warning("%s: record %s not harvested: %s", name, where, why)
        self.failures.extend(failures)
        self.quarantined |= written.quarantined
        self._warn_repairs(page, converted)
        line = {
            "partner": name,
            "page": self.counts.pages,
            "window_page": window.pages,
            "records": delta.received,
            "deleted": delta.deleted,
            "failed": delta.failed,
            "quarantined": delta.quarantined,
            "added": delta.added,
            "changed": delta.changed,
            "unchanged": delta.unchanged,
            "token": "yes" if page.token else "no",
            "fetch": f"{page.fetched:.3f}s",
            "duration": f"{time.monotonic() - page.started:.3f}s" if page.started else "-",
        }
        # One line per page, key=value (logfmt), and the same fields as `extra` for structured handlers.
        page_log.info("page %s", " ".join(f"{k}={v}" for k, v in line.items()), extra={"harvest_page": line})
        if self.on_page is not None:
            self.on_page(name, self.counts, page)

    def _seen_page(self, ready: Ready, taken_up: bool) -> None:
        """What a take-up needs of a committed page: the list's latest datestamp, whether its new
        records came in datestamp order (one it gave again, going round, does not count), and its cost."""
        self.list_pages += 1
        self.take_up.requests += 1 if taken_up else 0
        for identifier, stamp in _listed(ready):
            if stamp is None or hash(identifier) in self.list_seen:
                continue
            if len(self.list_seen) < self.settings.loops.remembered:  # as the loop watch, at most
                self.list_seen.add(hash(identifier))
            if self.list_latest is not None and stamp < self.list_latest:
                self.list_ordered = False
            if self.list_window is not None and not _within(stamp, self.list_window):
                self.list_stray = stamp
            self.list_rising = self.list_rising or (self.list_latest is not None and stamp > self.list_latest)
            self.list_latest = stamp if self.list_latest is None else max(stamp, self.list_latest)
        if ready.page.token is None and not self.cp.get("windows"):
            self.taking_up = False

    def _warn_repairs(self, page: Page, converted: Converted) -> None:
        """A warning for each repair a page needed: the partner is worth telling."""
        name = self.partner.name
        if converted.repaired:
            log.warning(
                "%s: the lenient parser repaired %d record(s): %s; %s",
                name,
                len(converted.repaired),
                ", ".join(converted.repaired[:10]),
                "; ".join(page.repairs[:5]),
            )
        if page.recoded is not None:
            r = page.recoded
            log.warning(
                "%s: page %d of the run (%s) is declared UTF-8 but %d character(s) of it were not, the first at "
                "byte %d; read as %s",
                name,
                self.counts.pages,
                " ".join(f"{k}={v}" for k, v in page.params.items()),
                r.characters,
                r.first,
                r.encoding,
            )
        if converted.undoubled:
            shown = ", ".join(converted.undoubled[:10]) + (", …" if len(converted.undoubled) > 10 else "")
            log.warning("%s: UTF-8 encoded twice, undone in %d record(s): %s", name, len(converted.undoubled), shown)
        for identifier, sample in converted.doubled:
            log.warning(
                "%s: record %s keeps text that looks UTF-8 encoded twice (%r), which cannot be undone exactly",
                name,
                identifier,
                sample,
            )


_KEPT = " (the records harvested are kept; the next run lists the window again)"


class _Written(NamedTuple):
    """What `_Run._write` did with a page's records."""

    result: WriteResult
    failures: list[tuple[str, str]]  # (identifier as shown, or place on the page; why), for the report
    quarantined: set[str]  # identifiers put in quarantine
    unnamed: int  # failures without an identifier: not quarantined


def _listed(ready: Ready) -> list[tuple[str, int | None]]:
    """(identifier, datestamp listed, in seconds) of each record of a page, in its order."""
    if ready.datestamps is not None:  # ListIdentifiers: its headers
        return [(i, seconds(d)) for i, d in zip(ready.identifiers, ready.datestamps, strict=False)]
    converted = ready.converted
    listed = [(r.identifier, listed_at(r)) for r in converted.records]
    # Read by the worker, beside each row: their provenance is not parsed again here.
    listed += zip([p.record.identifier for p in converted.prepared], converted.listed, strict=True)
    return listed


def _within(stamp: int, window: tuple[int, int]) -> bool:
    """Whether a datestamp (seconds) falls in a date window (its first and last unit, both included),
    give or take a day: a partner that says seconds may keep days, or compare them in its own zone."""
    return window[0] - DAY_SECONDS <= stamp < window[1] + 2 * DAY_SECONDS


def _identifiers(converted: Converted) -> list[str]:
    return [r.identifier for r in converted.records] + [p.record.identifier for p in converted.prepared]


def describe(report: RunReport) -> str:
    """A run's outcome on one line, as `harvester run` prints it and the scheduler logs it:
    `name: outcome: counts; completeness; resumed; next from …; reason`, leaving out what is
    empty. A partial run's reason is left out: the records it could not harvest are listed one
    by one. A partner harvested in several formats has a line per format, `name [prefix]: …`."""
    several = bool(report.more)
    return "\n".join(_describe_one(r, several) for r in report.all())


def _describe_one(report: RunReport, several: bool) -> str:
    details = [counts_text(report.counts)]
    details += [report.completeness.text()] if report.completeness else []
    details += ["resumed"] if report.resumed else []
    details += [f"next from {report.next_from}"] if report.next_from else []
    details += [report.reason] if report.reason and report.outcome != PARTIAL else []
    shown = "; ".join(d for d in details if d)
    named = f"{report.partner} [{report.format}]" if several else report.partner
    return f"{named}: {report.outcome}" + (f": {shown}" if shown else "")


def counts_text(c: Counts) -> str:
    """`2 page(s), 3 record(s) (1 deleted): 3 added; 1 without Dublin Core (not republished);
    1 page(s) recoded`: only the counts that are not zero; empty when the run received no page at all."""
    if not c.received:
        recovered = f"{c.recovered:,} recovered from quarantine" if c.recovered else ""
        return ("no records" + (f"; {recovered}" if recovered else "")) if c.pages else recovered
    text = f"{c.pages:,} page(s), {c.received:,} record(s)" + (f" ({c.deleted:,} deleted)" if c.deleted else "")
    changes = [
        f"{n:,} {label}"
        for n, label in (
            (c.added, "added"),
            (c.changed, "changed"),
            (c.unchanged, "unchanged"),
            (c.quarantined, "quarantined"),
            (c.failed, "failed"),
            (c.shadowed, "not served (another source first)"),
        )
        if n
    ]
    text += ": " + ", ".join(changes) if changes else ""
    text += f"; {c.without_dc:,} without Dublin Core (not republished)" if c.without_dc else ""
    text += f"; {c.recovered:,} recovered from quarantine" if c.recovered else ""
    repaired = ((c.recoded, "page(s) recoded"), (c.undoubled, "record(s) undoubled"), (c.doubled, "record(s) doubled"))
    repairs = [f"{n:,} {label}" for n, label in repaired if n]
    return text + ("; " + ", ".join(repairs) if repairs else "")
