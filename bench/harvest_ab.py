#!/usr/bin/env python3
"""The harvester's speed, two versions of its code side by side: records/s of a local harvest.

    .venv/bin/python bench/harvest_ab.py --records 20000 --repeat 3 \\
        --code before=/tmp/old-checkout --code after=.

    .venv/bin/python bench/harvest_ab.py --code worker=. --code here=. --in-process here

    .venv/bin/python bench/harvest_ab.py --code here=. --pg-url postgresql://postgres@127.0.0.1:5432/test

One synthetic data set is loaded and served with `oaiserver serve` (gunicorn, 2 workers, 500
records a page), as bench/bench.py does; then each `--code` directory (a checkout holding
`harvester/` and `oaiserver/`) harvests it into a fresh SQLite store in a process of its own,
the versions taking turns, `--repeat` times each; a version named in `--in-process` converts
its pages in the harvest's own process (no worker process). With `--pg-url`, each version
also harvests into a fresh PostgreSQL schema (dropped afterwards) right after its SQLite run,
and the ratio PostgreSQL / SQLite is printed per version. Only ratios measured side by side in one run
compare: the machine is shared. Prints one line per run and the medians, of records/s and of
the harvester's CPU (its process and its worker process, and its process alone) per 1,000 records.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from harvesters import pg_target

import bench  # bench/bench.py, next to this file

# Runs in a child process whose sys.path starts with the code under test.
# CPU: this process during the run, and its worker process (stopped first, so that it is
# counted), which is steadier than the wall time on a machine others use too.
CHILD = """
import json, resource, sys, time
sys.path.insert(0, sys.argv[1])
from harvester import harvest
from oaiserver.config import Partner
from oaiserver.store import Store
def cpu(who):
    r = resource.getrusage(who)
    return r.ru_utime + r.ru_stime
store = Store(sys.argv[3])
cpu0, started = cpu(resource.RUSAGE_SELF), time.perf_counter()
settings = harvest.HarvestSettings(worker_process=sys.argv[4] == "worker")
report = harvest.run(store, Partner("bench", sys.argv[2]), settings=settings)
seconds = time.perf_counter() - started
store.close()
try:  # a worker that outlives its run (before harvester.pipeline) is stopped, so that its CPU is counted
    from harvester.worker import shutdown
except ImportError:
    pass
else:
    shutdown()
main = cpu(resource.RUSAGE_SELF) - cpu0
cpu = main + cpu(resource.RUSAGE_CHILDREN)
print(json.dumps({"outcome": report.outcome, "records": report.counts.received, "seconds": seconds, "cpu": cpu,
                  "main_cpu": main, "code": harvest.__file__}))
"""


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--records", "-n", type=int, default=20_000)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--code", action="append", required=True, help="NAME=DIR: a checkout to measure")
    p.add_argument(
        "--in-process", action="append", default=[], metavar="NAME", help="this --code converts without a worker"
    )
    p.add_argument("--pg-url", help="also harvest into a fresh schema of this PostgreSQL, after each SQLite run")
    args = p.parse_args()
    codes = [tuple(c.split("=", 1)) for c in args.code]
    targets = ["sqlite", "postgresql"] if args.pg_url else ["sqlite"]
    with tempfile.TemporaryDirectory(prefix="harvest-ab-") as tmp:
        work = Path(tmp)
        db = work / "source.sqlite3"
        bench.log(f"loading {args.records:,} records")
        bench.load(db, args.records, 1000)
        server = bench.start_ours(work, db, 2, 500)
        runs = [(name, code, target) for name, code in codes for target in targets]
        rates: dict[tuple[str, str], list[float]] = {(name, t): [] for name, _, t in runs}
        cpus: dict[tuple[str, str], list[float]] = {(name, t): [] for name, _, t in runs}
        mains: dict[tuple[str, str], list[float]] = {(name, t): [] for name, _, t in runs}
        try:
            bench.warm_up(server)
            for rep in range(args.repeat):
                for name, code, kind in runs:
                    if kind == "sqlite":
                        target = f"sqlite:///{work / f'target-{name}-{rep}.sqlite3'}"
                        result = _harvest(code, server.url, target, name in args.in_process)
                    else:
                        with pg_target(args.pg_url) as url:
                            result = _harvest(code, server.url, url, name in args.in_process)
                    rate = result["records"] / result["seconds"]
                    cpu = result["cpu"] * 1e6 / result["records"]
                    rates[name, kind].append(rate)
                    main = result["main_cpu"] * 1e6 / result["records"]
                    cpus[name, kind].append(cpu)
                    mains[name, kind].append(main)
                    print(
                        f"{name} {kind} run {rep + 1}: {result['outcome']}, {result['records']:,} records, "
                        f"{rate:,.0f} records/s, {cpu:,.0f} ms CPU per 1,000 records ({main:,.0f} in the "
                        f"harvest's process) ({result['code']})",
                        flush=True,
                    )
        finally:
            server.stop()
    for (name, kind), values in rates.items():
        shown = " / ".join(f"{v:,.0f}" for v in values)
        cpu, main = statistics.median(cpus[name, kind]), statistics.median(mains[name, kind])
        print(
            f"{name} {kind}: median {statistics.median(values):,.0f} records/s ({shown}); {cpu:,.0f} ms CPU per 1,000"
            f" ({main:,.0f} in the harvest's process, the rest in its worker)"
        )
    if args.pg_url:
        for name, _ in codes:
            ratio = statistics.median(rates[name, "postgresql"]) / statistics.median(rates[name, "sqlite"])
            print(f"{name}: PostgreSQL / SQLite {ratio:.2f}x (medians)")


def _harvest(code: str, server_url: str, store_url: str, in_process: bool) -> dict[str, Any]:
    """One harvest by the checkout `code` into `store_url`, in a process of its own."""
    done = subprocess.run(
        [
            *(sys.executable, "-c", CHILD, str(Path(code).resolve()), server_url, store_url),
            "here" if in_process else "worker",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


if __name__ == "__main__":
    main()
