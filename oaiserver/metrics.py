"""Prometheus metrics for the data provider, and the /metrics exposition.

The counts are the server's, whichever worker answers a scrape: under gunicorn every worker
writes its counts to a file of its own in a folder the workers share (prometheus_client's
multiprocess mode), and a scrape adds the files up. A worker that is restarted leaves its file
behind, so its counts stay counted; its successor, another process, writes another file, so
none is counted twice. The folder is $PROMETHEUS_MULTIPROC_DIR when set (`oaiserver serve` sets
a fresh one for each start), else one named after the gunicorn master process (gunicorn run by
hand). A single process (`--dev`, tests) keeps its counts in memory.
"""

from __future__ import annotations

import functools
import math
import os
import signal
import tempfile
import time
from pathlib import Path
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
    multiprocess,
    values,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

ENV = "PROMETHEUS_MULTIPROC_DIR"
REGISTRY = CollectorRegistry()  # this process's own instruments (the default one adds the process's)


def _instruments(registry: CollectorRegistry) -> tuple[Counter, Counter, Counter, Histogram, Counter]:
    return (
        Counter("oai_requests_total", "OAI-PMH requests answered, by verb", ["verb"], registry=registry),
        Counter("oai_errors_total", "OAI-PMH errors answered, by code", ["code"], registry=registry),
        Counter(
            "oai_records_served_total", "Headers and records served in lists and GetRecord", ["verb"], registry=registry
        ),
        Histogram(
            "oai_request_seconds",
            "Time to answer an OAI-PMH request, by verb",
            ["verb"],
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
            registry=registry,
        ),
        Counter("oai_overload_total", "List requests refused with 503 because the cap was reached", registry=registry),
    )


REQUESTS, ERRORS, RECORDS, LATENCY, OVERLOAD = _instruments(REGISTRY)


def gunicorn_master() -> int | None:
    """The pid of the gunicorn master this process serves under, or None outside gunicorn.

    gunicorn's master sets SERVER_SOFTWARE for itself and its workers; a worker's SIGTERM
    handler is a method of the worker, which knows its master."""
    if not os.environ.get("SERVER_SOFTWARE", "").startswith("gunicorn/"):
        return None
    worker = getattr(signal.getsignal(signal.SIGTERM), "__self__", None)
    return int(getattr(worker, "ppid", 0) or 0) or os.getpid()


def _started(pid: int) -> str:
    """When process `pid` started (clock ticks since boot; Linux), so that a folder left by
    an earlier master with the same pid is not taken for this one's."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return "0"


def share_across_workers() -> None:
    """Count in the folder the server's workers share, from now on in this process.

    Called by the app factory in each worker; prometheus_client decides between memory and
    files when an instrument is made, and the master may have made ours (importing the worker
    class) before the folder was known, so they are made again here."""
    if values.ValueClass._multiprocess:  # type: ignore[union-attr]
        return
    folder = os.environ.get(ENV)
    if folder is None:
        master = gunicorn_master()
        if master is None:
            return
        folder = os.path.join(tempfile.gettempdir(), f"oaiserver-metrics-{master}-{_started(master)}")
        os.environ[ENV] = folder
    os.makedirs(folder, exist_ok=True)
    values.ValueClass = values.MultiProcessValue()  # type: ignore[no-untyped-call]
    global REQUESTS, ERRORS, RECORDS, LATENCY, OVERLOAD  # the names web.py counts with
    REQUESTS, ERRORS, RECORDS, LATENCY, OVERLOAD = _instruments(CollectorRegistry())
    _by_verb.cache_clear()


def answered(verb: str, seconds: float, served: int, error_codes: list[str]) -> None:
    """Count an answered OAI-PMH request: its verb, time, records served and errors."""
    requests, latency, records = _by_verb(verb)
    requests.inc()
    latency.observe(seconds)
    if served:
        records.inc(served)
    for code in error_codes:
        ERRORS.labels(code).inc()


@functools.lru_cache(maxsize=64)
def _by_verb(verb: str) -> tuple[Any, Any, Any]:
    """A verb's instruments, looked up once: `labels()` takes a lock and builds a key each time,
    and three of them cost a request more than the counting itself."""
    return REQUESTS.labels(verb), LATENCY.labels(verb), RECORDS.labels(verb)


def worker_exited(pid: int) -> None:
    """gunicorn's child_exit hook: a dead worker's live gauges go; its counts stay."""
    if os.environ.get(ENV):
        multiprocess.mark_process_dead(pid)  # type: ignore[no-untyped-call]


class HarvestCollector(Collector):
    """Harvester figures, read from the store's run history at scrape time, so they are right
    whichever process harvested; None when the store could not be read (they are left out)."""

    def __init__(self, summary: dict[str, dict[str, Any]] | None, now: float | None = None) -> None:
        self.summary = summary
        self.now = now  # the scrape's time (default: the clock when collected)

    def collect(self) -> Any:
        up = GaugeMetricFamily("oai_store_up", "1 if the store answered this scrape, else 0 (harvest figures left out)")
        up.add_metric([], 0 if self.summary is None else 1)
        yield up
        if self.summary is None:
            return
        runs = CounterMetricFamily("harvest_runs", "Harvest runs by partner and outcome", labels=["partner", "outcome"])
        received = CounterMetricFamily("harvest_records", "Records received from a partner", labels=["partner"])
        without_dc = CounterMetricFamily(
            "harvest_records_without_dc",
            "Records received from a partner with no Dublin Core, none in oai_dc and none by a crosswalk "
            "(stored, not republished)",
            labels=["partner"],
        )
        success = GaugeMetricFamily(
            "harvest_last_success_timestamp_seconds", "End of the last successful run", labels=["partner"]
        )
        shortfall = GaugeMetricFamily(
            "harvest_shortfall_records",
            "Records the partner announced (completeListSize) that its last judged run did not store",
            labels=["partner"],
        )
        since_complete = GaugeMetricFamily(
            "harvest_seconds_since_complete",
            "Seconds since the end of the partner's last complete run (+Inf: none yet)",
            labels=["partner"],
        )
        held = GaugeMetricFamily(
            "harvest_quarantined_records",
            "Records of the partner in quarantine (could not be harvested; retried by GetRecord at each run)",
            labels=["partner"],
        )
        sweep_held = GaugeMetricFamily(
            "harvest_sweep_held_records",
            "Records a deletion sweep would have turned into tombstones but held back for a person (0: none)",
            labels=["partner"],
        )
        shadowed = GaugeMetricFamily(
            "harvest_shadowed_records",
            "Records of the partner kept but not served: a source before it (local, or a partner earlier"
            " in the configuration) holds the identifier",
            labels=["partner"],
        )
        now = time.time() if self.now is None else self.now
        for partner, entry in sorted(self.summary.items()):
            for outcome, n in sorted(entry["runs"].items()):
                runs.add_metric([partner, outcome], n)
            received.add_metric([partner], entry["received"])
            without_dc.add_metric([partner], entry.get("without_dc", 0))
            if entry["last_success"] is not None:
                success.add_metric([partner], entry["last_success"])
            if entry.get("shortfall") is not None:
                shortfall.add_metric([partner], entry["shortfall"])
            complete = entry.get("last_complete")
            since_complete.add_metric([partner], math.inf if complete is None else max(0.0, now - complete))
            held.add_metric([partner], entry.get("quarantined", 0))
            sweep_held.add_metric([partner], entry.get("sweep_held", 0))
            shadowed.add_metric([partner], entry.get("shadowed", 0))
        yield from (runs, received, without_dc, success, shortfall, since_complete, held, sweep_held, shadowed)


def exposition(harvests: dict[str, dict[str, Any]] | None) -> tuple[bytes, str]:
    """The metrics text (every worker's counts added up), then the store's figures; `harvests`
    is None when the store cannot be read."""
    if values.ValueClass._multiprocess:  # type: ignore[union-attr]
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        own = generate_latest(registry)
    else:
        own = generate_latest(REGISTRY)
    store_registry = CollectorRegistry()
    store_registry.register(HarvestCollector(harvests))
    return own + generate_latest(store_registry), CONTENT_TYPE_LATEST
