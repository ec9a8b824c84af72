#!/usr/bin/env python3
"""The aggregator's partner fleet: `harvester run` over hundreds of partners on a few hosts, against
its ideal time and against the plain sequential Sickle loop a user would otherwise write.

    .venv/bin/python bench/fleet_bench.py                   # what `make bench` runs: about 4 minutes
    .venv/bin/python bench/fleet_bench.py --jobs 8 --per-host 4 --repeat 3
    .venv/bin/python bench/fleet_bench.py --partners 6 --hosts 2 --skip-crowd    # a smoke run

Two fleets of tests/fleet.py, served on 127.0.0.1 by this process (a listener per host):

* aggregator (issue 21): --partners partners (200) on --hosts hosts (6), 40 % of them on host 0
  and the rest spread evenly; each partner's page latency drawn from 50 to 500 ms with a fixed
  seed; --faulty of them (10 %) each with one fault of --faults, taken in turn: 503 with
  Retry-After on its first two requests, a last page carrying its own token again, an
  unparsable page, slow pages (1.5 s), fewer records than announced, a record without datestamp.
* crowd (issue 17): 60 partners of 20 records, 40 of them on one host, every page taking 0.5 s.

Each is harvested by `harvester run` (a real subprocess, a fresh SQLite store in a temporary
folder, `harvester.jobs` and `harvester.per_host` from --jobs and --per-host; a fresh fleet per
run, so that each run meets the same faults). Measured: wall time, records stored against what
the fleet's specs make a perfect harvester store, records/s (stored / wall), the peak RSS of the
harvester's process tree (the VmRSS of the harvest process and its worker processes, summed,
sampled every 50 ms; shared pages count in each process), and the most requests in progress at
once on each host (the fleet's gauges). The aggregator's fault-free partners are then harvested
by the reference: Sickle's ListRecords iterator, partner after partner, each record's raw XML
into SQLite (with a faulty partner in the loop, Sickle would follow a repeated token forever and
stop the loop at the first 503). Harvester and loop alternate; medians of --repeat runs.

The ideal time. A job harvests one partner at a time, and a partner's list is one request after
another (each needs the token of the last), so a job has at most one request in progress and a
host at most min(per_host, jobs). With each request taking its partner's latency (what it would
take with an infinitely fast harvester), three lower bounds hold whatever the order of work:

* all requests' latencies / jobs;
* for each host, its requests' latencies / min(per_host, jobs);
* for each partner, its requests' latencies plus the Retry-After its 503s ask for (a chain).

The ideal is the largest of them. The requests are those the harvester made (the fleet's log), so
wall / ideal measures how well the work was scheduled, not how many requests it took; those are
reported apart, against the pages clean lists need. A Retry-After also pauses every partner on
its host (README, `harvester.per_host`); the bound leaves that out and the pauses are reported.

Figures, not a gate: the exit code is 0 whenever the runs completed. JSON goes to
bench/results/fleet.json (--json). Network traffic goes to 127.0.0.1 only.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter, defaultdict
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import yaml
from harness import ROOT, log, median
from procfs import children, status_kb
from results import machine

sys.path.insert(0, str(ROOT / "tests"))  # the fleet the tests use, not a copy of it
from fleet import Fleet, Spec, crowd, expected

HARVESTER = Path(sys.executable).with_name("harvester")
LATENCY = (0.05, 0.5)  # seconds a page of an aggregator partner takes, drawn uniformly
HOST0_SHARE = 0.4  # of the aggregator's partners, on host 0
SLOW = 1.5  # seconds a page of a `slow` partner takes
SAMPLE = 0.05  # seconds between two readings of the harvester's memory
RSS_TARGET_MB = 300
TARGETS = {"aggregator": 1.25, "crowd": 1.5}  # wall / ideal (issue 21, issue 17)


def fault(kind: str, records: int) -> dict[str, Any]:
    """A partner's Spec fields for one fault of FAULTS, for a partner of `records` records."""
    fields: dict[str, dict[str, Any]] = {
        "busy": {"busy": frozenset({0, 1}), "retry_after": 1},
        "repeat": {"repeat_last_token": True},
        "unparsable": {"unparsable": frozenset({records // 2})},
        "slow": {"delay": SLOW},
        "short": {"announce": 2 * records},
        "nodate": {"no_datestamp": frozenset({1})},
    }
    return fields[kind]


FAULTS = ("busy", "repeat", "unparsable", "slow", "short", "nodate")


# ---- the fleets --------------------------------------------------------------------------------


def host_sizes(partners: int, hosts: int) -> list[int]:
    """Partners per host: HOST0_SHARE of them on host 0, the others spread evenly over the rest."""
    if hosts == 1:
        return [partners]
    first = max(1, round(partners * HOST0_SHARE))
    rest, extra = divmod(partners - first, hosts - 1)
    return [first] + [rest + (1 if h < extra else 0) for h in range(hosts - 1)]


def aggregator(args: argparse.Namespace) -> list[Spec]:
    """The aggregator's fleet, the same for the same arguments (one seeded generator)."""
    rng = random.Random(args.seed)
    specs = crowd(args.partners, hosts=host_sizes(args.partners, args.hosts), prefix="a")
    faulty = sorted(rng.sample(range(len(specs)), round(len(specs) * args.faulty)))
    kinds = {n: args.faults[i % len(args.faults)] for i, n in enumerate(faulty)}
    made = []
    for n, spec in enumerate(specs):
        common = {
            "records": args.records,
            "page_size": args.page_size,
            "deleted": frozenset({args.records - 1}),
            "delay": round(rng.uniform(*LATENCY), 3),
            "seed": args.seed,
        }
        made.append(replace(spec, **common | (fault(kinds[n], args.records) if n in kinds else {})))
    return made


def fault_of(spec: Spec) -> str:
    """Which fault of FAULTS a spec has ("" if none): the spec is what tells."""
    for kind in FAULTS:
        if all(getattr(spec, key) == value for key, value in fault(kind, spec.records).items()):
            return kind
    return ""


def crowd17() -> list[Spec]:
    """Issue 17's fleet: 60 small partners, 40 of them on one host, every page taking half a second."""
    return crowd(60, hosts=[40, 5, 5, 5, 5], prefix="c", delay=0.5, records=20, page_size=5)


def expected_total(specs: list[Spec]) -> int:
    """Records (live and tombstones) a perfect harvester stores from these partners."""
    return sum(len(e.live) + len(e.deleted) for e in (expected(s) for s in specs))


# ---- the ideal time ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Ideal:
    """The lower bounds of a run's wall time (module docstring), in seconds."""

    jobs_bound: float
    host_bound: float
    chain_bound: float
    requests: int
    host_pauses: float  # Retry-After seconds asked for by 503s, each pausing a whole host
    seconds: float  # the ideal: the largest bound


def ideal(fleet: Fleet, jobs: int, per_host: int) -> Ideal:
    """The ideal of the requests in the fleet's log, for `jobs` and `per_host`."""
    specs = fleet.specs
    per_host_load: defaultdict[int, float] = defaultdict(float)
    chains: defaultdict[str, float] = defaultdict(float)
    pauses = 0.0
    for entry in fleet.log:
        spec = specs[entry.partner]
        per_host_load[spec.host] += spec.delay
        chains[entry.partner] += spec.delay
        if entry.status == 503:
            chains[entry.partner] += spec.retry_after
            pauses += spec.retry_after
    bounds = (
        sum(per_host_load.values()) / jobs,
        max(per_host_load.values(), default=0.0) / min(per_host, jobs),
        max(chains.values(), default=0.0),
    )
    return Ideal(*bounds, requests=len(fleet.log), host_pauses=pauses, seconds=max(bounds))


def clean_pages(specs: list[Spec]) -> int:
    """Requests a harvester needs for these partners' lists if none misbehaved."""
    return sum(max(1, math.ceil(s.records / s.page_size)) for s in specs)


# ---- the harvester's memory ---------------------------------------------------------------------


def descendants(pid: int) -> list[int]:
    """A process and all its descendants (its worker processes are children of its threads)."""
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        todo.extend(_children(current))
    return found


def _children(pid: int) -> list[int]:
    """Children of every thread of `pid` (cheap: /proc/<pid>/task/<tid>/children), or from a
    scan of /proc where the kernel does not have those files."""
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
        return [int(c) for t in tasks for c in Path(f"/proc/{pid}/task/{t}/children").read_text().split()]
    except FileNotFoundError:
        return children(pid)
    except (ProcessLookupError, OSError):
        return []


class TreeMemory:
    """The largest sum of VmRSS over a process tree, read every SAMPLE seconds while entered."""

    def __init__(self, pid: int) -> None:
        self.pid, self.peak_kb, self.processes = pid, 0, 0
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._sample, daemon=True)

    def __enter__(self) -> TreeMemory:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.done.set()
        self.thread.join()

    def _sample(self) -> None:
        while not self.done.wait(SAMPLE):
            tree = descendants(self.pid)
            self.peak_kb = max(self.peak_kb, sum(status_kb(p, "VmRSS") or 0 for p in tree))
            self.processes = max(self.processes, len(tree))


# ---- one run of the harvester ---------------------------------------------------------------------


def write_config(folder: Path, fleet: Fleet, jobs: int, per_host: int) -> tuple[Path, str]:
    """A config.yaml harvesting every partner of `fleet` into a fresh SQLite store; (path, store URL)."""
    url = f"sqlite:///{folder / 'fleet.sqlite3'}"
    data = {
        "repository": {
            "name": "Fleet benchmark",
            "base_url": "http://127.0.0.1:5000/oai",
            "admin_emails": ["bench@fleet.example.org"],
            "identifier": "fleet.example.org",
        },
        "storage": {"url": url},
        "harvester": {"jobs": jobs, "per_host": per_host},
        "partners": [{"name": name, "base_url": fleet.url(name)} for name in sorted(fleet.specs)],
    }
    path = folder / "config.yaml"
    path.write_text(yaml.safe_dump(data))
    return path, url


@dataclass
class HarvestRun:
    seconds: float
    exit_code: int
    stored: int
    outcomes: dict[str, int]
    peak_tree_mb: float
    largest_process_mb: float  # the largest single process (its VmHWM, from wait4)
    processes: int  # the most processes of the tree seen at once
    cpu_seconds: float  # user + system of the harvest process and its (reaped) worker processes
    workers_started: int  # worker processes the harvest started (one per run of a big list: pipeline.WORKER_FROM)
    host_peaks: list[int]
    ideal: Ideal


def stored_records(url: str, names: list[str]) -> int:
    """Records (live and tombstones) the store holds from these partners."""
    from oaiserver.store import Store, records_held

    store = Store(url)
    try:
        return sum(held.live + held.deleted for held in records_held(store, names).values())
    finally:
        store.close()


def outcomes(stdout: str) -> dict[str, int]:
    """How many partners' lines say success, partial or failed (`name: outcome: ...`)."""
    said = Counter(line.split(": ", 2)[1] for line in stdout.splitlines() if line.count(": ") >= 2)
    return dict(said)


def harvest(specs: list[Spec], jobs: int, per_host: int) -> HarvestRun:
    """`harvester run` over a fresh fleet of `specs`, into a fresh store."""
    with Fleet(specs) as fleet, tempfile.TemporaryDirectory(prefix="fleet-bench-") as tmp:
        folder = Path(tmp)
        config, url = write_config(folder, fleet, jobs, per_host)
        with (folder / "out.txt").open("w+") as out, (folder / "err.txt").open("w+") as err:
            started = time.perf_counter()
            process = subprocess.Popen([str(HARVESTER), "-c", str(config), "run"], stdout=out, stderr=err)
            with TreeMemory(process.pid) as memory:
                _, status, usage = os.wait4(process.pid, 0)
            seconds = time.perf_counter() - started
            process.returncode = os.waitstatus_to_exitcode(status)
            out.seek(0)
            err.seek(0)
            printed, logged = out.read(), err.read()
        return HarvestRun(
            seconds=seconds,
            exit_code=process.returncode,
            stored=stored_records(url, sorted(fleet.specs)),
            outcomes=outcomes(printed),
            peak_tree_mb=memory.peak_kb / 1024,
            largest_process_mb=usage.ru_maxrss / 1024,
            processes=memory.processes,
            cpu_seconds=usage.ru_utime + usage.ru_stime,
            workers_started=logged.count("started the harvest worker process"),
            host_peaks=[fleet.peak(host=h) for h in range(1 + max(s.host for s in specs))],
            ideal=ideal(fleet, jobs, per_host),
        )


# ---- the reference: a plain Sickle loop ------------------------------------------------------------


@dataclass
class LoopRun:
    seconds: float
    stored: int


def sickle_loop(specs: list[Spec]) -> LoopRun:
    """What a user would write: each partner in turn, Sickle's ListRecords iterator, each
    record's raw XML into SQLite (a transaction per partner)."""
    from sickle import Sickle

    with Fleet(specs) as fleet, tempfile.TemporaryDirectory(prefix="fleet-loop-") as tmp:
        conn = sqlite3.connect(Path(tmp) / "raw.sqlite3")
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("CREATE TABLE raw (identifier TEXT PRIMARY KEY, datestamp TEXT, xml TEXT NOT NULL)")
        started = time.perf_counter()
        for name in sorted(fleet.specs):
            records = Sickle(fleet.url(name), timeout=60).ListRecords(metadataPrefix="oai_dc", ignore_deleted=False)
            rows = [(r.header.identifier, r.header.datestamp, r.raw) for r in records]
            with conn:
                conn.executemany("INSERT OR REPLACE INTO raw VALUES (?, ?, ?)", rows)
        seconds = time.perf_counter() - started
        stored = conn.execute("SELECT count(*) FROM raw").fetchone()[0]
        conn.close()
    return LoopRun(seconds, stored)


# ---- a fleet's figures --------------------------------------------------------------------------------


@dataclass
class FleetResult:
    name: str
    partners: int
    hosts: list[int]  # partners per host
    faults: dict[str, int]  # faulty partners by fault
    expected: int
    clean_pages: int
    target: float
    runs: list[HarvestRun] = field(default_factory=list)
    loops: list[LoopRun] = field(default_factory=list)
    loop_partners: int = 0
    loop_expected: int = 0


def measure(name: str, specs: list[Spec], args: argparse.Namespace, *, reference: bool) -> FleetResult:
    """`--repeat` runs of the harvester over the fleet, alternating with the Sickle loop over its
    fault-free partners when `reference`."""
    clean = [s for s in specs if not fault_of(s)]
    hosts = Counter(s.host for s in specs)
    result = FleetResult(
        name=name,
        partners=len(specs),
        hosts=[hosts[h] for h in sorted(hosts)],
        faults=dict(Counter(fault_of(s) for s in specs if fault_of(s))),
        expected=expected_total(specs),
        clean_pages=clean_pages(specs),
        target=TARGETS[name],
        loop_partners=len(clean) if reference else 0,
        loop_expected=expected_total(clean) if reference else 0,
    )
    for round_ in range(args.repeat):
        log(f"{name}: harvester run {round_ + 1} of {args.repeat} ({len(specs)} partners)")
        result.runs.append(harvest(specs, args.jobs, args.per_host))
        log(f"{name}: {result.runs[-1].seconds:.1f} s, {result.runs[-1].stored:,} records stored")
        if reference and clean:
            log(f"{name}: Sickle loop {round_ + 1} of {args.repeat} ({len(clean)} fault-free partners)")
            result.loops.append(sickle_loop(clean))
            log(f"{name}: {result.loops[-1].seconds:.1f} s, {result.loops[-1].stored:,} records stored")
    return result


# ---- the table -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Row:
    figure: str
    value: str
    target: str = ""
    passed: bool | None = None  # None: no target
    note: str = ""


def rows(r: FleetResult, args: argparse.Namespace) -> list[Row]:
    """A fleet's figures (medians of its runs), as table rows."""
    wall = median([h.seconds for h in r.runs])
    best = median([h.ideal.seconds for h in r.runs])
    ratio = wall / best if best else math.nan
    rate = median([h.stored / h.seconds for h in r.runs])
    peak_mb = median([h.peak_tree_mb for h in r.runs])
    last = r.runs[-1]
    bounds = (
        f"jobs {last.ideal.jobs_bound:.1f}, host {last.ideal.host_bound:.1f}, partner {last.ideal.chain_bound:.1f} s"
    )
    faults = ", ".join(f"{k} {v}" for k, v in sorted(r.faults.items())) or "none"
    found = [
        Row("partners", f"{r.partners} on {len(r.hosts)} hosts", note=f"per host {r.hosts}; faulty: {faults}"),
        Row("wall time", f"{wall:.1f} s", note=f"jobs {args.jobs}, per_host {args.per_host}; exit {last.exit_code}"),
        Row("ideal time", f"{best:.1f} s", note=f"the largest lower bound of the last run: {bounds}"),
        Row("wall / ideal", f"{ratio:.2f}x", f"<= {r.target}x", ratio <= r.target, _pauses(last.ideal)),
        Row("records stored", f"{last.stored:,} of {r.expected:,}", "all", last.stored == r.expected, _lines(last)),
        Row("records/s", f"{rate:,.1f}", note="stored / wall"),
        Row("requests", f"{last.ideal.requests:,}", note=f"clean lists need {r.clean_pages:,}"),
        _cpu_row(last, r.partners),
        Row("peak RSS", f"{peak_mb:.0f} MB", f"<= {RSS_TARGET_MB} MB", peak_mb <= RSS_TARGET_MB, _memory(last)),
        _host_row(last, args),
    ]
    return found + _loop_rows(r, rate)


def _pauses(i: Ideal) -> str:
    return f"503s asked {i.host_pauses:.0f} s of host-wide pauses (not in the ideal)" if i.host_pauses else ""


def _lines(h: HarvestRun) -> str:
    return "partners: " + ", ".join(f"{k} {v}" for k, v in sorted(h.outcomes.items()))


def _memory(h: HarvestRun) -> str:
    return f"harvest process and workers (up to {h.processes} at once); largest one {h.largest_process_mb:.0f} MB"


def _cpu_row(h: HarvestRun, partners: int) -> Row:
    note = f"{h.cpu_seconds * 1000 / partners:.0f} ms a partner; {h.workers_started} worker processes started"
    return Row("harvester CPU", f"{h.cpu_seconds:.1f} s", note=note)


def _host_row(h: HarvestRun, args: argparse.Namespace) -> Row:
    cap = min(args.per_host, args.jobs)
    most = max(h.host_peaks)
    return Row("most requests at once", f"{most} on a host", f"<= {cap}", most <= cap, f"per host {h.host_peaks}")


def _loop_rows(r: FleetResult, rate: float) -> list[Row]:
    if not r.loops:
        return []
    wall = median([loop.seconds for loop in r.loops])
    loop_rate = median([loop.stored / loop.seconds for loop in r.loops])
    stored = f"{r.loops[-1].stored:,} of {r.loop_expected:,} records"
    return [
        Row("Sickle loop wall", f"{wall:.1f} s", note=f"{r.loop_partners} fault-free partners in turn; {stored}"),
        Row("Sickle loop records/s", f"{loop_rate:,.1f}"),
        Row("records/s: harvester / loop", f"{rate / loop_rate:.2f}x" if loop_rate else "n/a"),
    ]


def print_table(results: list[FleetResult], args: argparse.Namespace, about: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(
        title=f"partner fleets: harvester run, jobs {args.jobs}, per_host {args.per_host}, medians of {args.repeat}"
    )
    for column in ("fleet", "figure", "value", "target", "result", "notes"):
        table.add_column(column, overflow="fold")
    for result in results:
        for row in rows(result, args):
            verdict = "" if row.passed is None else ("PASS" if row.passed else "FAIL")
            table.add_row(result.name, row.figure, row.value, row.target, verdict, row.note)
    load = f"load average {about['loadavg_start'][0]:.1f} at the start, {about['loadavg_end'][0]:.1f} at the end"
    table.caption = f"{about['date']}, commit {about['git_commit'][:7]}, {about['nproc']} CPUs, {load}"
    Console(width=200).print(table)


# ---- the command line ----------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--partners", type=int, default=200, help="partners of the aggregator's fleet (200)")
    p.add_argument("--hosts", type=int, default=6, help="hosts they are on, 40%% on the first (6)")
    p.add_argument("--faulty", type=float, default=0.1, help="share of them with a fault (0.1)")
    p.add_argument("--faults", default=",".join(FAULTS), help=f"faults dealt in turn ({','.join(FAULTS)})")
    p.add_argument("--records", type=int, default=24, help="records per aggregator partner (24)")
    p.add_argument("--page-size", type=int, default=8, help="records per page (8)")
    p.add_argument("--seed", type=int, default=21, help="the seed of latencies and faults (21)")
    p.add_argument("--jobs", type=int, default=4, help="harvester.jobs (4, its default)")
    p.add_argument("--per-host", type=int, default=2, help="harvester.per_host (2, its default)")
    p.add_argument("--repeat", type=int, default=1, help="runs of each, alternating; medians (1)")
    p.add_argument("--no-reference", action="store_true", help="leave out the Sickle loop")
    p.add_argument("--skip-crowd", action="store_true", help="leave out issue 17's 60-partner fleet")
    p.add_argument("--json", default=str(ROOT / "bench" / "results" / "fleet.json"), help="where the JSON goes")
    args = p.parse_args(argv)
    args.faults = [kind.strip() for kind in args.faults.split(",") if kind.strip()]
    unknown = set(args.faults) - set(FAULTS)
    if unknown or not args.faults or args.hosts < 1 or args.partners < args.hosts:
        p.error(f"--faults from {','.join(FAULTS)}, --hosts at least 1 and at most --partners")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    about = machine()
    results = [measure("aggregator", aggregator(args), args, reference=not args.no_reference)]
    if not args.skip_crowd:
        results.append(measure("crowd", crowd17(), args, reference=False))
    about["loadavg_end"] = list(os.getloadavg())
    print_table(results, args, about)
    path = Path(args.json)
    path.parent.mkdir(parents=True, exist_ok=True)
    options = {k: v for k, v in vars(args).items() if k != "json"}
    path.write_text(
        json.dumps({"machine": about, "options": options, "fleets": [asdict(r) for r in results]}, indent=2)
    )
    log(f"JSON: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
