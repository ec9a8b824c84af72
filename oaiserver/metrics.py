"""Prometheus metrics for the data provider, and the /metrics exposition.

Under gunicorn, `oaiserver serve` points PROMETHEUS_MULTIPROC_DIR at a fresh folder so
every worker's counts add up in one scrape.
"""

from __future__ import annotations

import os

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
    multiprocess,
)

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


def exposition() -> tuple[bytes, str]:
    """The metrics text, aggregated over worker processes when running under gunicorn."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        return generate_latest(registry), CONTENT_TYPE_LATEST
    return generate_latest(), CONTENT_TYPE_LATEST
