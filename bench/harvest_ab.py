#!/usr/bin/env python3
"""The harvester's speed, two versions of its code side by side: records/s of a local harvest.

    .venv/bin/python bench/harvest_ab.py --records 20000 --repeat 3 \\
        --code before=/tmp/old-checkout --code after=.

    .venv/bin/python bench/harvest_ab.py --code worker=. --code here=. --in-process here

One synthetic data set is loaded and served with `oaiserver serve` (gunicorn, 2 workers, 500
records a page), as bench/bench.py does; then each `--code` directory (a checkout holding
`harvester/` and `oaiserver/`) harvests it into a fresh SQLite store in a process of its own,
the versions taking turns, `--repeat` times each; a version named in `--in-process` converts
its pages in the harvest's own process (no worker process). Only ratios measured side by side in one run
compare: the machine is shared. Prints one line per run and the medians, of records/s and of
the harvester's CPU (its process and its worker process) per 1,000 records.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
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
store = Store(f"sqlite:///{sys.argv[3]}")
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
cpu = cpu(resource.RUSAGE_SELF) - cpu0 + cpu(resource.RUSAGE_CHILDREN)
print(json.dumps({"outcome": report.outcome, "records": report.counts.received, "seconds": seconds, "cpu": cpu,
                  "code": harvest.__file__}))
"""


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--records", "-n", type=int, default=20_000)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--code", action="append", required=True, help="NAME=DIR: a checkout to measure")
    p.add_argument(
        "--in-process", action="append", default=[], metavar="NAME", help="this --code converts without a worker"
    )
    args = p.parse_args()
    codes = [tuple(c.split("=", 1)) for c in args.code]
    with tempfile.TemporaryDirectory(prefix="harvest-ab-") as tmp:
        work = Path(tmp)
        db = work / "source.sqlite3"
        bench.log(f"loading {args.records:,} records")
        bench.load(db, args.records, 1000)
        server = bench.start_ours(work, db, 2, 500)
        rates: dict[str, list[float]] = {name: [] for name, _ in codes}
        cpus: dict[str, list[float]] = {name: [] for name, _ in codes}
        try:
            bench.warm_up(server)
            for rep in range(args.repeat):
                for name, code in codes:
                    target = work / f"target-{name}-{rep}.sqlite3"
                    done = subprocess.run(
                        [
                            *(sys.executable, "-c", CHILD, str(Path(code).resolve()), server.url, str(target)),
                            "here" if name in args.in_process else "worker",
                        ],
                        capture_output=True,
                        text=True,
                        check=True,
                    )
                    result = json.loads(done.stdout.strip().splitlines()[-1])
                    rate = result["records"] / result["seconds"]
                    cpu = result["cpu"] * 1e6 / result["records"]
                    rates[name].append(rate)
                    cpus[name].append(cpu)
                    print(
                        f"{name} run {rep + 1}: {result['outcome']}, {result['records']:,} records, "
                        f"{rate:,.0f} records/s, {cpu:,.0f} ms CPU per 1,000 records ({result['code']})",
                        flush=True,
                    )
        finally:
            server.stop()
    for name, values in rates.items():
        shown = " / ".join(f"{v:,.0f}" for v in values)
        cpu = statistics.median(cpus[name])
        print(f"{name}: median {statistics.median(values):,.0f} records/s ({shown}); {cpu:,.0f} ms CPU per 1,000")


if __name__ == "__main__":
    main()
