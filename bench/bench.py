#!/usr/bin/env python3
"""Benchmarks for oaiserver and the harvester: one table on stdout, JSON on disk.

    .venv/bin/python bench/bench.py --records 100000        # what `make bench` runs
    .venv/bin/python bench/bench.py --quick                 # a smoke run (5,000 records)
    make bench N=1000000                                    # the 1M figures (disk: ~3 GB, ~1 h)

What it does, in one run, so that every comparison is made side by side on the same noisy
machine (medians over --repeat repetitions, the servers measured alternately):

1. load N synthetic records (oaiserver.synthetic) into a fresh SQLite store through
   `Store.write(..., keep_datestamps=True, batch=...)`; only the time spent in `write` counts;
   then each record again in a second format, MARC21 slim (bench/marcxml.py), through the
   harvester's `write_native_in`;
2. serve that file with oaiserver as in production (`oaiserver serve`: gunicorn, its request-buffering workers)
   and with a reference peer, pyoai (`oaipmh` from PyPI, bench/peer_app.py) behind the same
   gunicorn, from its own venv (bench/.peer-venv, made here);
3. full ListRecords harvests with a plain `requests` loop (token found by a regex), server CPU
   from /proc/<pid>/stat of the gunicorn master and its workers; page latency at 0/10/50/90 %
   of the list; the same full harvests in the second format against oai_dc, alternating, and its
   first and 90 % pages; the staff views' search (/search) for a rare word, a common one and a
   prefix; GetRecord p50/p95; 8 and 32 concurrent harvesters; peak RSS per worker;
4. the project's harvester (`harvester.harvest.run`) harvesting our server into a second store
   (SQLite, and PostgreSQL unless --skip-pg or unreachable) against a plain Sickle loop.

See bench/README.md for the figures' definitions and the targets. This file is the command line
and the run's order; the parts live next to it, one idea each: harness (paths, log, medians), procfs
(CPU and memory from /proc), loading (the data set), marcxml (its second format), servers (ours
and the peer under gunicorn), oai_client (full harvests and crowds with a plain requests loop),
harvesters (harvest.run and a Sickle loop), cpu_profiles; the sections that use them (sections, server_sections,
harvester_sections, profile_sections); results (the machine, the table and what goes into the JSON).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

from harness import BENCH, ROOT, log, median, percentile
from harvester_sections import HarvesterSections
from loading import load
from oai_client import full_harvest, warm_up
from profile_sections import ProfileSections
from results import machine
from server_sections import FormatSections, ServerSections
from servers import Server, start_ours, start_peer

from oaiserver.config import Config

# What bench/harvest_ab.py and bench/slowclients.py use as `bench.<name>`.
__all__ = [
    "BENCH",
    "ROOT",
    "Server",
    "full_harvest",
    "load",
    "log",
    "main",
    "median",
    "parse_args",
    "percentile",
    "start_ours",
    "warm_up",
]

DEFAULT_PG = "postgresql+psycopg://postgres@127.0.0.1:5432/test"


class Bench(ServerSections, FormatSections, HarvesterSections, ProfileSections):
    """One run: the sections in order, the servers stopped and the work folder removed afterwards."""

    def run(self) -> None:
        a = self.args
        workdir = Path(a.workdir) if a.workdir else Path(tempfile.mkdtemp(prefix="oai-bench-"))
        workdir.mkdir(parents=True, exist_ok=True)
        db = workdir / "oai.sqlite3"
        log(f"working in {workdir}")
        servers: list[Server] = []
        try:
            self.section_load(db)
            log(f"starting oaiserver (gunicorn, {a.workers} workers, page size {a.page_size})")
            ours = start_ours(workdir, db, a.workers, a.page_size)
            servers.append(ours)
            peer, oairepo = self.start_peers(workdir, db, servers)
            for s in servers:
                warm_up(s)
            walks = self.section_full_harvest(ours, peer, oairepo)
            self.section_floor(db)
            self.section_page_latency(ours, peer, walks)
            self.section_search(ours, db)
            self.section_get_record(ours, peer, oairepo)
            self.section_crowds(ours, peer)
            self.section_postgres_server(ours, workdir)
            self.section_harvester(ours, workdir)
            self.section_memory(ours, peer)
            if a.other_page_size:
                self.section_other_page_size(ours, workdir, db)
            # Last: serving a record in a further format for the first time gives it a new
            # datestamp (a harvest of the format does the same), which would change the lists the
            # sections above walk (the crowds' `from`).
            self.section_second_format_load(db)
            self.section_second_format(ours, db)
            if a.profile:
                self.section_profiles(ours, workdir)
        finally:
            for s in servers:
                s.stop()
            if not a.keep and not a.workdir:
                shutil.rmtree(workdir, ignore_errors=True)
            elif a.keep:
                log(f"kept {workdir}")

    def start_peers(self, workdir: Path, db: Path, servers: list[Server]) -> tuple[Server | None, Server | None]:
        """The pyoai peer and the oai-repo peer, each None when skipped (with the reason)."""
        a = self.args
        if a.skip_peer:
            self.skipped["peer"] = "--skip-peer"
            return None, None
        started: dict[str, Server | None] = {}
        for name, label in (("peer", "pyoai"), ("oairepo", "oai-repo")):
            log(f"starting the {label} peer (gunicorn, same workers)")
            try:
                started[name] = start_peer(workdir, db, a.workers, a.page_size, name)
                servers.append(started[name])  # type: ignore[arg-type]
            except (RuntimeError, subprocess.CalledProcessError) as exc:
                started[name] = None
                self.skipped[name] = f"the {label} peer could not be started: {exc}"
                log(self.skipped[name])
        return started["peer"], started["oairepo"]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--records", "-n", type=int, help="records in the data set (default 100000; 5000 with --quick)")
    p.add_argument("--quick", action="store_true", help="a smoke run: small N, one repetition, short crowd runs")
    p.add_argument("--skip-peer", action="store_true", help="do not build or measure the peers (pyoai, oai-repo)")
    p.add_argument(
        "--pg-url",
        default=DEFAULT_PG,
        help=f"PostgreSQL for the harvester and our server on it (default {DEFAULT_PG})",
    )
    p.add_argument("--skip-pg", action="store_true", help="no PostgreSQL: neither the harvester nor our server on it")
    p.add_argument("--skip-harvester", action="store_true", help="skip the harvester and Sickle runs")
    p.add_argument(
        "--skip-second-format",
        action="store_true",
        help="do not write every record in MARC21 slim too, nor list it against oai_dc",
    )
    p.add_argument("--json", default=str(BENCH / "results" / "latest.json"), help="where to write the JSON results")
    p.add_argument("--workers", type=int, default=2, help="gunicorn workers, both servers (default 2)")
    p.add_argument(
        "--page-size",
        type=int,
        default=Config.page_size,
        help=f"records per list page, both servers (default {Config.page_size}, the server's default)",
    )
    p.add_argument(
        "--other-page-size",
        type=int,
        default=100,
        help="also harvest a second server with this page size (default 100; 0 to skip)",
    )
    p.add_argument("--load-batch", type=int, default=1000, help="Store.write batch size (default 1000)")
    p.add_argument("--repeat", type=int, help="full harvest and crowd runs (default 3; 1 if quick or N >= 500000)")
    p.add_argument(
        "--harvest-repeat", type=int, help="harvester and Sickle runs, alternating (default 3; 1 quick or N >= 500000)"
    )
    p.add_argument("--latency-reps", type=int, help="requests per page position (default 7; 3 quick)")
    p.add_argument("--get-records", type=int, help="GetRecord requests (default 300; 50 quick)")
    p.add_argument("--crowd-seconds", type=float, help="seconds per concurrent-harvesters run (default 10; 4 quick)")
    p.add_argument("--crowd-max-pages", type=int, default=100_000, help="page cap per concurrent harvester")
    p.add_argument("--profile", action="store_true", help="also profile server, harvester, load (CPU time)")
    p.add_argument("--workdir", help="keep the data set and server logs here (default: a temporary folder, removed)")
    p.add_argument("--keep", action="store_true", help="keep the temporary folder")
    a = p.parse_args(argv)
    quick = a.quick
    a.records = a.records or (5_000 if quick else 100_000)
    a.repeat = a.repeat or (1 if quick or a.records >= 500_000 else 3)
    a.harvest_repeat = a.harvest_repeat or (1 if quick or a.records >= 500_000 else 3)
    a.latency_reps = a.latency_reps or (3 if quick else 7)
    a.get_records = a.get_records or (50 if quick else 300)
    a.crowd_seconds = a.crowd_seconds or (4.0 if quick else 10.0)
    if a.records < 1000:
        p.error("--records must be at least 1000")
    return a


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    info = machine()
    log(f"{info['cpu_model']}, {info['nproc']} CPUs, Python {info['python']}; N={args.records:,}")
    bench = Bench(args)
    started = time.time()
    failed: BaseException | None = None
    try:
        bench.run()
    except BaseException as exc:  # still print and save what was measured
        failed = exc
        traceback.print_exc()
    info["loadavg_end"] = list(os.getloadavg())
    out = bench.report()
    out = {
        "machine": info,
        "params": {k: v for k, v in vars(args).items() if k != "pg_url"} | {"pg_url": args.pg_url.split("@")[-1]},
        "seconds": round(time.time() - started, 1),
        "complete": failed is None,
        **out,
    }
    path = Path(args.json)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=2, ensure_ascii=False) + "\n")
    misses = [c.figure for c in bench.checks if c.passed is False]
    print(
        f"\nJSON: {path}   ({out['seconds']:.0f} s; {len(misses)} target(s) missed"
        f"{': ' + '; '.join(misses) if misses else ''})"
    )
    return 1 if failed is not None else 0


if __name__ == "__main__":
    sys.exit(main())
