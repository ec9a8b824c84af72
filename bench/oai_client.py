"""The measuring client: a plain `requests` loop over ListRecords (token found by a regex), one at a
time (a full harvest) or many at once (a crowd of concurrent harvesters)."""

from __future__ import annotations

import html
import re
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import requests
from harness import median, percentile
from loading import identifier
from procfs import machine_busy, others_pct, self_cpu
from servers import Server

TOKEN_RE = re.compile(rb"<resumptionToken[^>]*>([^<]*)</resumptionToken>")
ERROR_RE = re.compile(rb'<error code="([^"]+)"')
# An OAI-PMH <error> stands in for the verb's element, right after <request>: it is within the
# first few KB. The client reads only there (and the token from the end), so that the harness
# spends its CPU, which it shares with the server under test, on HTTP rather than on scans.
ERROR_WINDOW = 16_384
RECORD = b"<record>"


class ProtocolFailure(Exception):
    pass


def fetch(session: requests.Session, url: str, params: dict[str, str], *, gzip: bool = True) -> tuple[bytes, float]:
    headers = None if gzip else {"Accept-Encoding": "identity"}
    started = time.perf_counter()
    response = session.get(url, params=params, headers=headers, timeout=300)
    body = response.content
    elapsed = time.perf_counter() - started
    if response.status_code != 200:
        raise ProtocolFailure(f"HTTP {response.status_code}")
    error = ERROR_RE.search(body, 0, ERROR_WINDOW)
    if error:
        raise ProtocolFailure(f"OAI error {error.group(1).decode()}")
    return body, elapsed


def next_token(body: bytes) -> str | None:
    """The resumption token: the list's last element, so looked for from the end."""
    at = body.rfind(b"<resumptionToken")
    m = TOKEN_RE.match(body, at) if at >= 0 else None
    token = html.unescape(m.group(1).decode()).strip() if m else ""
    return token or None


def first_page(extra: dict[str, str] | None = None, *, prefix: str = "oai_dc") -> dict[str, str]:
    return {"verb": "ListRecords", "metadataPrefix": prefix, **(extra or {})}


@dataclass
class Walk:
    records: int = 0
    pages: int = 0
    served_bytes: int = 0  # of the pages, as served before gzip (envelopes included)
    seconds: float = 0.0
    server_cpu: float = 0.0
    client_cpu: float = 0.0
    busy: float = 0.0  # the machine's busy CPU seconds meanwhile (everyone's)
    tokens: list[str] = field(default_factory=list)  # tokens[i] asks for page i + 1
    latencies: list[float] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        per_k = 1000 / self.records if self.records else float("nan")
        return {
            "records": self.records,
            "pages": self.pages,
            "seconds": round(self.seconds, 3),
            "records_per_s": round(self.records / self.seconds, 1) if self.seconds else None,
            "server_cpu_ms_per_1k": round(self.server_cpu * 1000 * per_k, 2),
            "client_cpu_ms_per_1k": round(self.client_cpu * 1000 * per_k, 2),
            "page_ms_p50": round(median(self.latencies) * 1000, 2),
            "others_cpu_pct": others_pct(self.busy, self.server_cpu + self.client_cpu, self.seconds),
        }


def full_harvest(
    server: Server,
    *,
    gzip: bool = True,
    max_pages: int | None = None,
    extra: dict[str, str] | None = None,
    prefix: str = "oai_dc",
) -> Walk:
    """Every page of ListRecords in `prefix` (`extra`: more arguments, a set), one after the
    other; tokens kept for the latency probes."""
    walk = Walk()
    session = requests.Session()
    params = first_page(extra, prefix=prefix)
    cpu0, me0, busy0, t0 = server.cpu(), self_cpu(), machine_busy(), time.perf_counter()
    while max_pages is None or walk.pages < max_pages:
        body, elapsed = fetch(session, server.url, params, gzip=gzip)
        walk.latencies.append(elapsed)
        walk.pages += 1
        walk.records += body.count(RECORD)
        walk.served_bytes += len(body)
        token = next_token(body)
        if token is None:
            break
        walk.tokens.append(token)
        params = {"verb": "ListRecords", "resumptionToken": token}
    walk.seconds = time.perf_counter() - t0
    walk.server_cpu, walk.client_cpu = server.cpu() - cpu0, self_cpu() - me0
    walk.busy = machine_busy() - busy0
    session.close()
    return walk


@dataclass
class Crowd:
    harvesters: int
    seconds: float = 0.0
    records: int = 0
    requests: int = 0
    errors: int = 0
    error_kinds: dict[str, int] = field(default_factory=dict)
    latencies: list[float] = field(default_factory=list)
    server_cpu: float = 0.0
    client_cpu: float = 0.0
    busy: float = 0.0

    def summary(self) -> dict[str, Any]:
        return {
            "harvesters": self.harvesters,
            "seconds": round(self.seconds, 2),
            "records": self.records,
            "requests": self.requests,
            "records_per_s": round(self.records / self.seconds, 1) if self.seconds else None,
            "p50_ms": round(median(self.latencies) * 1000, 1),
            "p95_ms": round(percentile(self.latencies, 95) * 1000, 1),
            "errors": self.errors,
            "error_kinds": self.error_kinds,
            "server_cpu_ms_per_1k": round(self.server_cpu * 1e6 / self.records, 2) if self.records else None,
            "client_cpu_ms_per_1k": round(self.client_cpu * 1e6 / self.records, 2) if self.records else None,
            "others_cpu_pct": others_pct(self.busy, self.server_cpu + self.client_cpu, self.seconds),
        }


def crowd(server: Server, harvesters: int, seconds: float, max_pages: int) -> Crowd:
    """`harvesters` threads, each paging ListRecords from its own list start (a `from` spread
    over the 20 years of datestamps) for `seconds` or `max_pages` pages, restarting its list
    when it ends. Every non-200 answer, OAI error or exception is an error."""
    result = Crowd(harvesters)
    lock = threading.Lock()
    barrier = threading.Barrier(harvesters + 1)
    deadline = [0.0]

    def one(k: int) -> None:
        start = first_page({"from": f"{2000 + (20 * k) // harvesters:04d}-01-01"})
        session = requests.Session()
        params, records, errors, count = start, 0, 0, 0
        latencies: list[float] = []
        kinds: dict[str, int] = {}  # error kind -> how many times
        barrier.wait()
        while time.perf_counter() < deadline[0] and count < max_pages:
            count += 1
            try:
                body, elapsed = fetch(session, server.url, params)
            except (ProtocolFailure, requests.RequestException) as exc:
                errors += 1
                kind = str(exc) if isinstance(exc, ProtocolFailure) else type(exc).__name__
                kinds[kind] = kinds.get(kind, 0) + 1
                params = start
                continue
            latencies.append(elapsed)
            records += body.count(RECORD)
            token = next_token(body)
            params = start if token is None else {"verb": "ListRecords", "resumptionToken": token}
        session.close()
        with lock:
            result.records += records
            result.requests += count
            result.errors += errors
            result.latencies += latencies
            for kind, n in kinds.items():
                result.error_kinds[kind] = result.error_kinds.get(kind, 0) + n

    threads = [threading.Thread(target=one, args=(k,), daemon=True) for k in range(harvesters)]
    for t in threads:
        t.start()
    cpu0, me0, busy0 = server.cpu(), self_cpu(), machine_busy()
    t0 = time.perf_counter()
    deadline[0] = t0 + seconds
    barrier.wait()
    for t in threads:
        t.join()
    result.seconds = time.perf_counter() - t0
    result.server_cpu, result.client_cpu = server.cpu() - cpu0, self_cpu() - me0
    result.busy = machine_busy() - busy0
    return result


def warm_up(server: Server, pages: int = 20) -> None:
    """Every worker imports, connects and compiles its statements before we measure."""
    session = requests.Session()
    params = first_page()
    for _ in range(pages):
        body, _ = fetch(session, server.url, params)
        token = next_token(body)
        params = first_page() if token is None else {"verb": "ListRecords", "resumptionToken": token}
    fetch(session, server.url, {"verb": "GetRecord", "metadataPrefix": "oai_dc", "identifier": identifier(0)})
    session.close()
