"""Prometheus metrics for the data provider, and the /metrics exposition.

Under gunicorn, `oaiserver serve` points PROMETHEUS_MULTIPROC_DIR at a fresh folder so
every worker's counts add up in one scrape.
"""

from __future__ import annotations

import os
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
    multiprocess,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

REQUESTS = Counter("oai_requests_total", "OAI-PMH requests answered, by verb", ["verb"])
ERRORS = Counter("oai_errors_total", "OAI-PMH errors answered, by code", ["code"])
RECORDS = Counter("oai_records_served_total", "Headers and records served in lists and GetRecord", ["verb"])
LATENCY = Histogram(
    "oai_request_seconds",
    "Time to answer an OAI-PMH request, by verb",
    ["verb"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)
OVERLOAD = Counter("oai_overload_total", "List requests refused with 503 because the cap was reached")


class HarvestCollector(Collector):
    """Harvester figures, read from the store's run history at scrape time, so they are right
    whichever process harvested."""

    def __init__(self, summary: dict[str, dict[str, Any]]) -> None:
        self.summary = summary

    def collect(self) -> Any:
        runs = CounterMetricFamily("harvest_runs", "Harvest runs by partner and outcome", labels=["partner", "outcome"])
        received = CounterMetricFamily("harvest_records", "Records received from a partner", labels=["partner"])
        success = GaugeMetricFamily(
            "harvest_last_success_timestamp_seconds", "End of the last successful run", labels=["partner"]
        )
        for partner, entry in sorted(self.summary.items()):
            for outcome, n in sorted(entry["runs"].items()):
                runs.add_metric([partner, outcome], n)
            received.add_metric([partner], entry["received"])
            if entry["last_success"] is not None:
                success.add_metric([partner], entry["last_success"])
        yield from (runs, received, success)


def exposition(harvests: dict[str, dict[str, Any]]) -> tuple[bytes, str]:
    """The metrics text (aggregated over gunicorn workers), then the harvest figures."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        own = generate_latest(registry)
    else:
        own = generate_latest()
    harvest_registry = CollectorRegistry()
    harvest_registry.register(HarvestCollector(harvests))
    return own + generate_latest(harvest_registry), CONTENT_TYPE_LATEST
