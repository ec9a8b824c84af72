"""The production shape: gunicorn over PostgreSQL under load, under writes, through
faults and overload, and against hostile XML. Each test is bounded in time and stops by
itself; they run on PostgreSQL only (with CI set they never skip; elsewhere set
OAI_TEST_PG_URL). Figures are printed (pytest -s) and attached to the test report (its
user_properties, as record_property does)."""

from __future__ import annotations

import logging
import os
import random
import re
import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import suppress
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
import requests
import sqlalchemy as sa
from conftest import NS, make_config, make_record, validate
from harvestkit import FakePartner, identify, list_records, record, xml
from loadkit import (
    Gunicorn,
    Listing,
    PrivatePostgres,
    Stats,
    Threads,
    duplicates,
    list_all,
    percentile,
    pg_schema,
    private_postgres,
    require_postgres_tools,
    wait_for_postgres,
)
from sickle import Sickle
from werkzeug.wrappers import Response

from harvester import client as harvest_client
from harvester import errors as harvest_errors
from harvester import harvest
from harvester.client import ClientSettings
from harvester.harvest import HarvestSettings
from oaiserver import create_app, oai_dc
from oaiserver.config import Partner
from oaiserver.records import DCValue, Record, format_datestamp, parse_datestamp
from oaiserver.store import PG_CLOCK_KEY, ListQuery, Store, iter_records, meta
from oaiserver.synthetic import synthetic_records
from oaiserver.tokens import ListState, Tokens

pytestmark = pytest.mark.slow

REPO = "test.example.org"


@pytest.fixture
def pg_url() -> Iterator[str]:
    with pg_schema("load") as url:
        yield url


@pytest.fixture
def source(pg_url: str) -> Iterator[Store]:
    """The served store, on the real clock (as the gunicorn workers are)."""
    s = Store(pg_url)
    yield s
    s.close()


def load(store: Store, n: int) -> None:
    store.write(synthetic_records(n, REPO), keep_datestamps=True)


def listed(store: Store, query: ListQuery) -> list[str]:
    """The identifiers a list over `query` must give, in the order it must give them."""
    return [h.identifier for h in store.page_headers(query, None, 10**7, with_metadata=False)]


def state(store: Store) -> dict[str, tuple[str, bool]]:
    """identifier -> (datestamp, deleted) of every record, tombstones included."""
    return {
        h.identifier: (format_datestamp(h.datestamp), h.deleted)
        for h in store.page_headers(ListQuery("oai_dc"), None, 10**7, with_metadata=False)
    }


def compare(got: list[str], expected: list[str]) -> str | None:
    """None if `got` is exactly `expected`; else what is wrong, briefly."""
    if got == expected:
        return None
    missing, extra = set(expected) - set(got), set(got) - set(expected)
    if not missing and not extra and not duplicates(got):
        at = next(i for i, (a, b) in enumerate(zip(got, expected, strict=True)) if a != b)
        return f"not in (datestamp, identifier) order from position {at}: {got[at]} where {expected[at]} belongs"
    return (
        f"{len(got)} listed, {len(expected)} expected; missing {sorted(missing)[:3]} ({len(missing)}), "
        f"extra {sorted(extra)[:3]} ({len(extra)}), twice {duplicates(got)[:3]}"
    )


def server_problems(server: Gunicorn, allowed: tuple[int, ...] = (200,)) -> list[str]:
    log = server.log()
    problems = [f"HTTP {status} x{n}" for status, n in server.statuses().items() if status not in allowed]
    problems += [line for line in log.splitlines() if "WORKER TIMEOUT" in line or "internal error" in line]
    return problems


Figures = Callable[..., None]


@pytest.fixture
def figures(request: pytest.FixtureRequest) -> Figures:
    """Print figures (pytest -s) and attach them to the test report, as record_property does
    (the report's user_properties, <property> in JUnit XML), but without record_property's
    warning under junit_family=xunit2, which `filterwarnings = error` turns into an error."""

    def publish(**values: Any) -> None:
        for name, value in values.items():
            request.node.user_properties.append((name, value))
        print("\n  " + ", ".join(f"{k}={v}" for k, v in values.items()))

    return publish


# ---- 1. load ----------------------------------------------------------------------------------

LOAD_RECORDS = 3000
LOAD_CLIENTS = 32
LOAD_SECONDS = 60.0


def test_32_harvesters_for_a_minute_get_complete_lists(
    tmp_path: Path, pg_url: str, source: Store, figures: Figures
) -> None:
    """32 concurrent harvesters against `oaiserver serve` (4 workers, 4 threads each) for 60 s: every
    request answered, every list exactly the stored identifiers in order, none twice."""
    load(source, LOAD_RECORDS)
    since = parse_datestamp("2010-01-01")[0]
    plans: list[tuple[str, dict[str, str], list[str]]] = [
        ("ListRecords", {"metadataPrefix": "oai_dc"}, listed(source, ListQuery("oai_dc"))),
        ("ListIdentifiers", {"metadataPrefix": "oai_dc"}, listed(source, ListQuery("oai_dc"))),
        (
            "ListRecords",
            {"metadataPrefix": "oai_dc", "set": "history"},
            listed(source, ListQuery("oai_dc", set_spec="history")),
        ),
        (
            "ListIdentifiers",
            {"metadataPrefix": "oai_dc", "from": "2010-01-01"},
            listed(source, ListQuery("oai_dc", start=since)),
        ),
    ]
    assert len(plans[0][2]) == LOAD_RECORDS and all(len(p[2]) > 300 for p in plans)
    stats = Stats()
    # The per-process list cap is raised to the number of clients so that none is refused by
    # it; a 503 that does come (a store hiccup) is honoured after Retry-After and counted.
    with Gunicorn(
        tmp_path, pg_url, workers=4, timeout=30, page_size=100, max_concurrent_lists=LOAD_CLIENTS, retry_after=1
    ) as server:
        started = time.monotonic()
        end = started + LOAD_SECONDS
        hard = end + 90  # a list in progress at `end` is finished, within this

        def harvester(i: int) -> None:
            with requests.Session() as session:
                turn = i
                while time.monotonic() < end:
                    verb, args, expected = plans[turn % len(plans)]
                    turn += 1
                    listing = list_all(session, server.base, verb, args, stats=stats, deadline=hard)
                    assert listing is not None
                    problem = compare([h.identifier for h in listing.headers], expected)
                    if problem is None and listing.sizes != {len(expected)}:
                        problem = f"completeListSize {sorted(listing.sizes)}, expected {len(expected)}"
                    if problem:
                        stats.add_error(f"{verb} {args}: {problem}")

        threads = Threads()
        for i in range(LOAD_CLIENTS):
            threads.start(harvester, i, name=f"harvester-{i}")
        threads.join(LOAD_SECONDS + 120)
        elapsed = time.monotonic() - started
        problems = server_problems(server, allowed=(200, 503))
    rate = stats.records / elapsed
    p95 = percentile(stats.latencies, 95) * 1000
    figures(
        seconds=round(elapsed, 1),
        lists=stats.lists,
        pages=stats.pages,
        records=stats.records,
        records_per_s=round(rate),
        p50_ms=round(percentile(stats.latencies, 50) * 1000, 1),
        p95_ms=round(p95, 1),
        max_ms=round(max(stats.latencies, default=0) * 1000, 1),
        honoured_503=stats.refused,
    )
    assert not threads.failures, threads.failures[:5]
    assert not stats.errors, stats.errors[:5]
    assert not problems, problems[:5]
    assert elapsed >= LOAD_SECONDS
    assert stats.lists >= LOAD_CLIENTS, "every harvester completed at least one list"


# ---- 2. writes under load -----------------------------------------------------------------------

WRITE_RECORDS = 1200
WRITE_HARVESTERS = 8


class Writer:
    """Updates, adds, deletes and revives records through the store, on its real clock,
    until stopped; it keeps count of what it did."""

    def __init__(self, url: str, seed: int = 5) -> None:
        self.store = Store(url)
        self.rng = random.Random(seed)
        self.stop = threading.Event()
        self.done = {"update": 0, "add": 0, "delete": 0, "revive": 0}
        self.first = list(self.done)
        self.live = sorted(self.store.identifiers(live_only=True))
        self.dead = sorted(self.store.identifiers() - set(self.live))
        self.added = 0

    def close(self) -> None:
        self.store.close()

    def revised(self, identifier: str) -> Record:
        title = f"Revised {self.rng.randrange(10**9)}"
        dc = [DCValue("title", title), DCValue("creator", "Writer, W.")]
        return Record(identifier, dc=dc, sets=["history"], metadata={oai_dc.PREFIX: oai_dc.render(dc)})

    def step(self) -> None:
        # Each kind once first, then at random: a busy machine that lets the writer make only a
        # few changes while the lists run still sees every kind.
        op = self.first.pop(0) if self.first else self.rng.choice(("update", "update", "add", "delete", "revive"))
        n = self.rng.randint(1, 3)
        if op == "update" and self.live:
            self.store.write([self.revised(i) for i in self.rng.sample(self.live, min(n, len(self.live)))])
        elif op == "add":
            new = [
                make_record(f"new-{self.added + k:05d}", f"New {self.added + k}", sets=("history",)) for k in range(n)
            ]
            self.added += n
            self.store.write(new)
            self.live += [r.identifier for r in new]
        elif op == "delete" and self.live:
            gone = self.rng.sample(self.live, min(n, len(self.live)))
            self.store.delete(gone)
            self.live = [i for i in self.live if i not in gone]
            self.dead += gone
        elif op == "revive" and self.dead:
            back = self.rng.sample(self.dead, min(n, len(self.dead)))
            self.store.write([self.revised(i) for i in back])
            self.dead = [i for i in self.dead if i not in back]
            self.live += back
        else:
            return
        self.done[op] += 1

    def run(self) -> None:
        while not self.stop.is_set():
            self.step()
            time.sleep(self.rng.uniform(0.005, 0.03))


def test_harvests_during_writes_miss_nothing(tmp_path: Path, pg_url: str, source: Store, figures: Figures) -> None:
    """8 harvesters page through ListIdentifiers (pages of 10) while a writer changes the
    store; each list has no identifier twice, and each list plus an incremental harvest from
    its first responseDate gives every record in its final state."""
    load(source, WRITE_RECORDS)
    writer = Writer(pg_url)
    firsts: dict[int, Listing] = {}
    try:
        with Gunicorn(tmp_path, pg_url, workers=3, page_size=10, retry_after=1) as server:
            deadline = time.monotonic() + 150

            def harvester(i: int) -> None:
                time.sleep(0.4 * i)  # staggered: each list is frozen at another moment
                with requests.Session() as session:
                    listing = list_all(
                        session, server.base, "ListIdentifiers", {"metadataPrefix": "oai_dc"}, deadline=deadline
                    )
                assert listing is not None
                firsts[i] = listing

            threads = Threads()
            threads.start(writer.run, name="writer")
            harvesters = Threads()
            for i in range(WRITE_HARVESTERS):
                harvesters.start(harvester, i, name=f"harvester-{i}")
            harvesters.join(150)
            writer.stop.set()
            threads.join(30)
            assert not harvesters.failures and not threads.failures, harvesters.failures + threads.failures
            final = state(source)
            # An incremental harvest lists what changed before its own first request (its
            # `until` is frozen one second before it): start it after the second of the last write.
            last_write = max(parse_datestamp(stamp)[0] for stamp, _ in final.values())
            time.sleep(max(0.0, last_write + 1.05 - time.time()))
            problems: list[str] = []
            incremental_sizes = []
            with requests.Session() as session:
                for i, first in sorted(firsts.items()):
                    again = list_all(
                        session,
                        server.base,
                        "ListIdentifiers",
                        {"metadataPrefix": "oai_dc", "from": first.response_date},
                        deadline=deadline,
                    )
                    assert again is not None
                    incremental_sizes.append(len(again.headers))
                    ids, more = [h.identifier for h in first.headers], [h.identifier for h in again.headers]
                    if duplicates(ids) or duplicates(more):
                        problems.append(f"harvester {i}: listed twice: {duplicates(ids)[:3]} {duplicates(more)[:3]}")
                    if set(ids) | set(more) != set(final):
                        missed = sorted(set(final) - set(ids) - set(more))
                        problems.append(f"harvester {i}: missed {len(missed)}: {missed[:3]}")
                    seen = {h.identifier: (h.datestamp, h.deleted) for h in first.headers + again.headers}
                    stale = sorted(k for k, v in final.items() if seen.get(k) != v)
                    if stale:
                        problems.append(
                            f"harvester {i}: {len(stale)} record(s) not in their final state: "
                            f"{[(k, seen.get(k), final[k]) for k in stale[:2]]}"
                        )
            server_log = server_problems(server)
    finally:
        writer.stop.set()
        writer.close()
    figures(
        writes=sum(writer.done.values()),
        **{f"writes_{k}": v for k, v in writer.done.items()},
        pages_per_list=[f.pages for _, f in sorted(firsts.items())],
        incremental=incremental_sizes,
    )
    assert len(firsts) == WRITE_HARVESTERS
    assert not problems, problems
    assert not server_log, server_log[:5]
    assert all(writer.done.values()), f"the writer did not exercise every kind of change: {writer.done}"
    assert min(incremental_sizes) > 0, "every list overlapped writes"


# ---- 3. faults -----------------------------------------------------------------------------------

FAULT_RECORDS = 2000


def patient(retries: int = 30) -> HarvestSettings:
    """Small waits, many retries: Retry-After (1 s here) is honoured up to 1 s."""
    return HarvestSettings(
        client=ClientSettings(timeout=20.0, retries=retries, backoff=0.2, max_backoff=1.0, retry_after_cap=1.0),
        lease_ttl=300,
    )


class Pause:
    """An on_page callback that holds the harvest after page `at` until released."""

    def __init__(self, *at: int) -> None:
        self.at = set(at)
        self.reached = {n: threading.Event() for n in at}
        self.release = {n: threading.Event() for n in at}

    def __call__(self, partner: str, counts: harvest.Counts, page: Any) -> None:
        if counts.pages in self.at:
            self.reached[counts.pages].set()
            if not self.release[counts.pages].wait(120):
                raise AssertionError("the test never released the harvest")


def waiting_backends(url: str, application: str) -> int:
    """Connections of one server (by application_name) waiting for a lock in PostgreSQL; the
    database is shared with other tests, so only ours are counted."""
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            query = "SELECT count(*) FROM pg_stat_activity WHERE application_name = %(a)s AND wait_event_type = 'Lock'"
            return int(conn.exec_driver_sql(query, {"a": application}).scalar_one())
    finally:
        engine.dispose()


def until(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def assert_mirrors(source: Store, target: Store) -> None:
    """The harvested copy holds every source record once, in its source state."""
    theirs = state(source)
    ours = {r.identifier: r for r in iter_records(target)}
    assert set(ours) == set(theirs), (len(ours), len(theirs), sorted(set(theirs) ^ set(ours))[:3])
    for identifier, (datestamp, deleted) in theirs.items():
        copy = ours[identifier]
        assert copy.deleted == deleted, identifier
        assert copy.provenance is not None and copy.provenance["datestamp"] == datestamp, identifier


@pytest.fixture
def private_pg() -> Iterator[PrivatePostgres]:
    """A PostgreSQL server of this test's own, to stop and start: never the machine's (which
    may be a user's own database, or shared by other tests)."""
    with private_postgres(require_postgres_tools()) as server:
        yield server


@pytest.fixture
def private_source(private_pg: PrivatePostgres) -> Iterator[Store]:
    """The served store, on the test's own PostgreSQL server."""
    s = Store(private_pg.url)
    yield s
    s.close()


def test_postgres_restart_mid_harvest(
    tmp_path: Path, private_pg: PrivatePostgres, private_source: Store, figures: Figures
) -> None:
    """PostgreSQL stops mid-harvest: a request in flight answers 503 (not 500), the server
    recovers by itself, and the project's harvester retries and completes with nothing lost.
    The harvester keeps its copy in SQLite: its own store is not the one that goes down. The
    PostgreSQL that stops is the test's own (initdb in a temporary folder, a free port)."""
    pg_url, source = private_pg.url, private_source
    load(source, FAULT_RECORDS)
    target = Store(f"sqlite:///{tmp_path / 'copy.sqlite3'}")
    pause = Pause(3)
    stopped = False
    try:
        with Gunicorn(tmp_path, pg_url, workers=2, page_size=100, retry_after=1) as server:
            workers = server.workers()
            reports: list[harvest.RunReport] = []
            threads = Threads()
            threads.start(
                lambda: reports.append(
                    harvest.run(target, Partner("pgdown", server.base), settings=patient(), on_page=pause)
                ),
                name="harvest",
            )
            until(lambda: pause.reached[3].is_set() or bool(reports), 60, "the harvest to get to page 3")
            assert not reports, f"the harvest ended early: {reports[0].reason}"

            # A request in flight: a list's first page waits for the write clock, which we hold.
            in_flight: list[requests.Response] = []
            holder = sa.create_engine(pg_url)
            conn = holder.connect()
            trans = conn.begin()
            conn.exec_driver_sql(f"SELECT pg_advisory_xact_lock_shared({PG_CLOCK_KEY})")
            threads.start(
                lambda: in_flight.append(
                    requests.get(
                        server.base, params={"verb": "ListIdentifiers", "metadataPrefix": "oai_dc"}, timeout=60
                    )
                ),
                name="in-flight",
            )
            until(lambda: waiting_backends(pg_url, server.application) > 0, 20, "the request to wait in PostgreSQL")
            assert not in_flight, "the request is still being answered when PostgreSQL stops"
            private_pg.stop()
            stopped = True
            with suppress(sa.exc.DBAPIError):  # its backend was terminated with the others
                trans.rollback()
            conn.close()
            holder.dispose()
            until(lambda: bool(in_flight), 30, "the request in flight to be answered")
            down = [
                requests.get(server.base, params={"verb": "ListRecords", "metadataPrefix": "oai_dc"}, timeout=30),
                requests.get(server.base.replace("/oai", "/healthz"), timeout=30),
            ]
            pause.release[3].set()  # the harvest goes on while the store is down: it must wait and retry
            # Three 503s so far (the request in flight and the two above): wait for the harvester's.
            until(lambda: server.statuses().get(503, 0) > 3, 60, "the harvester to meet the outage")
            private_pg.start()
            stopped = False
            wait_for_postgres(pg_url)
            threads.join(120)
            assert not threads.failures, threads.failures
            healthy = requests.get(server.base.replace("/oai", "/healthz"), timeout=30)
            after = server.workers()
            statuses = server.statuses()
            problems = server_problems(server, allowed=(200, 503))
    finally:
        pause.release[3].set()
        if stopped:
            private_pg.start()
        target.close()
    report = reports[0]
    figures(answered_503=statuses.get(503, 0), pages=report.counts.pages, received=report.counts.received)
    for response in [*in_flight, *down]:
        assert response.status_code == 503, (response.status_code, response.text[:300])
        assert re.fullmatch(r"\d+", response.headers.get("Retry-After", "")), response.headers
    assert not problems, problems
    assert healthy.status_code == 200, "the server recovered by itself"
    assert after == workers, "no worker died or was restarted"
    assert report.outcome == "success", report.reason
    assert report.window.received == FAULT_RECORDS
    assert statuses.get(503, 0) > 3, "the harvester met the outage"
    target = Store(f"sqlite:///{tmp_path / 'copy.sqlite3'}")
    try:
        assert_mirrors(source, target)
    finally:
        target.close()


def test_a_worker_killed_mid_response(
    tmp_path: Path,
    pg_url: str,
    source: Store,
    request: pytest.FixtureRequest,
    figures: Figures,
) -> None:
    """The only gunicorn worker is SIGKILLed twice while it answers the harvester (held in a
    database wait so the kill lands mid-response, on the first page and on a token page): the
    project's harvester retries, the arbiter boots a new worker, and the copy is complete."""
    load(source, FAULT_RECORDS)
    transport_errors: list[str] = []

    class Retried(logging.Handler):
        """The client's log line for each retry after a broken connection (not after a 503)."""

        def emit(self, record: logging.LogRecord) -> None:
            problem = record.args[0] if isinstance(record.args, tuple) and record.args else None
            if type(problem) in (harvest_errors.TransportError, harvest_errors.DeadlineExceeded):
                transport_errors.append(str(problem))

    retried = Retried(logging.WARNING)
    logging.getLogger(harvest_client.__name__).addHandler(retried)
    request.addfinalizer(lambda: logging.getLogger(harvest_client.__name__).removeHandler(retried))
    pause = Pause(4)
    with pg_schema("copy") as copy_url, Gunicorn(tmp_path, pg_url, workers=1, page_size=200, retry_after=1) as server:
        target = Store(copy_url)
        holder = sa.create_engine(pg_url)
        threads = Threads()
        reports: list[harvest.RunReport] = []
        try:

            def kill_worker_while(hold_sql: str, start: Callable[[], None]) -> int:
                """Hold a lock the worker's next query needs, let the request come, kill the worker
                while it waits, then let go once a new worker is up."""
                (victim,) = server.workers()
                with holder.connect() as conn:
                    trans = conn.begin()
                    conn.exec_driver_sql(hold_sql)
                    start()
                    until(lambda: waiting_backends(pg_url, server.application) > 0, 30, "the worker to wait")
                    os.kill(victim, signal.SIGKILL)
                    until(lambda: server.workers() not in ([], [victim]), 30, "a new worker")
                    until(lambda: len(transport_errors) > kills, 30, "the harvester to see the connection drop")
                    trans.rollback()
                return victim

            kills = 0
            first = kill_worker_while(
                f"SELECT pg_advisory_xact_lock_shared({PG_CLOCK_KEY})",
                lambda: threads.start(
                    lambda: reports.append(
                        harvest.run(target, Partner("killed", server.base), settings=patient(10), on_page=pause)
                    ),
                    name="harvest",
                ),
            )
            kills = 1
            until(lambda: pause.reached[4].is_set() or bool(reports), 60, "the harvest to get to page 4")
            assert not reports, f"the harvest ended early: {reports[0].reason}"
            second = kill_worker_while("LOCK TABLE records IN ACCESS EXCLUSIVE MODE", pause.release[4].set)
            threads.join(120)
            assert not threads.failures, threads.failures
            log = server.log()
        finally:
            pause.release[4].set()
            holder.dispose()
            target.close()
        target = Store(copy_url)
        try:
            report = reports[0]
            figures(transport_errors=len(transport_errors), pages=report.counts.pages)
            assert report.outcome == "success", report.reason
            assert report.window.received == FAULT_RECORDS
            assert_mirrors(source, target)
        finally:
            target.close()
    assert len(transport_errors) >= 2, transport_errors
    for victim in (first, second):
        assert f"Worker (pid:{victim}) was sent SIGKILL" in log
    assert " 500 " not in "".join(re.findall(r'"GET [^"]*" \d{3} ', log))


# ---- 4. overload -----------------------------------------------------------------------------------

OVERLOAD_RECORDS = 1000


class Refusals:
    """A requests response hook (passed through Sickle's public `**request_args`) counting the
    503s that Sickle's own retry loop honours."""

    def __init__(self) -> None:
        self.count = 0
        self.lock = threading.Lock()

    def __call__(self, response: requests.Response, *args: Any, **kwargs: Any) -> None:
        if response.status_code == 503:
            with self.lock:
                self.count += 1


def test_overload_answers_503_with_retry_after_and_patient_clients_finish(
    tmp_path: Path, pg_url: str, source: Store, figures: Figures
) -> None:
    """One gthread worker with 20 threads and `max_concurrent_lists: 2`: a burst of 20 list
    requests gets some 503s with an integer Retry-After; 20 Sickle clients that honour it all
    finish their lists, exactly."""
    load(source, OVERLOAD_RECORDS)
    expected = listed(source, ListQuery("oai_dc"))
    with Gunicorn(
        tmp_path, pg_url, workers=1, gthread=20, page_size=100, max_concurrent_lists=2, retry_after=1
    ) as server:
        barrier = threading.Barrier(20)
        answers: list[requests.Response] = []

        def burst() -> None:
            barrier.wait(30)
            answers.append(
                requests.get(
                    server.base,
                    params={"verb": "ListRecords", "metadataPrefix": "oai_dc"},
                    headers={"Connection": "close"},
                    timeout=60,
                )
            )

        threads = Threads()
        for i in range(20):
            threads.start(burst, name=f"burst-{i}")
        threads.join(90)
        assert not threads.failures, threads.failures
        refused = [r for r in answers if r.status_code == 503]
        served = [r for r in answers if r.status_code == 200]
        assert len(answers) == 20 and len(refused) + len(served) == 20, [r.status_code for r in answers]
        assert refused, "20 simultaneous lists over a cap of 2: some must be refused"
        assert served, "the cap's worth of lists are served"
        for r in refused:
            assert re.fullmatch(r"\d+", r.headers.get("Retry-After", "")), r.headers
        for r in served:
            validate(r.content)

        refusals = Refusals()
        results: dict[int, list[str]] = {}

        def patient_client(i: int) -> None:
            sickle = Sickle(
                server.base,
                max_retries=120,
                retry_status_codes=[503],
                default_retry_after=1,
                timeout=30,
                hooks={"response": refusals},
            )
            results[i] = [h.identifier for h in sickle.ListIdentifiers(metadataPrefix="oai_dc")]

        started = time.monotonic()
        clients = Threads()
        for i in range(20):
            clients.start(patient_client, i, name=f"sickle-{i}")
        clients.join(150)
        seconds = time.monotonic() - started
        problems = server_problems(server, allowed=(200, 503))
    figures(
        burst_503=len(refused),
        burst_200=len(served),
        sickle_503=refusals.count,
        sickle_seconds=round(seconds, 1),
    )
    assert not clients.failures, clients.failures[:3]
    assert len(results) == 20
    for i, got in results.items():
        assert compare(got, expected) is None, (i, compare(got, expected))
    assert not problems, problems


# ---- 5. security -------------------------------------------------------------------------------------


def hostile(doctype: str, title: str) -> str:
    body = list_records([record("oai:evil.example.org:1", title)]).split("\n", 1)[1]
    return f'<?xml version="1.0" encoding="UTF-8"?>\n{doctype}\n{body}'


LAUGHS = (
    '<!DOCTYPE OAI-PMH [<!ENTITY lol "lol">'
    + "".join(f'<!ENTITY lol{i} "{f"&lol{i - 1};" * 10 if i > 1 else "&lol;" * 10}">' for i in range(1, 10))
    + "]>"
)


def store_text(store: Store) -> str:
    """Every value of every table of the store, as one string."""
    parts = []
    with store.engine.connect() as conn:
        for table in meta.sorted_tables:
            for row in conn.execute(sa.select(table)):
                parts.append(" ".join(str(v) for v in row))
    return "\n".join(parts)


@pytest.mark.parametrize(
    "case", ["external entity (file)", "external entity (network)", "billion laughs", "external DTD"]
)
def test_hostile_xml_is_refused_and_never_resolved(pg_url: str, source: Store, case: str) -> None:
    """A partner's page with a DOCTYPE (external entities, an entity-expansion bomb, an
    external DTD) is refused with a clear error; nothing is read from disk or the network."""
    canary = FakePartner(lambda params, n: xml("<x>canary</x>"))
    with canary:
        spy = canary.url.replace("/oai", "/evil")
        body = {
            "external entity (file)": hostile(
                '<!DOCTYPE OAI-PMH [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>', "&xxe;"
            ),
            "external entity (network)": hostile(f'<!DOCTYPE OAI-PMH [<!ENTITY xxe SYSTEM "{spy}.txt">]>', "&xxe;"),
            "billion laughs": hostile(LAUGHS, "&lol9;"),
            "external DTD": hostile(f'<!DOCTYPE OAI-PMH SYSTEM "{spy}.dtd">', "An ordinary title"),
        }[case]

        def partner(params: dict[str, str], n: int) -> Response:
            return xml(identify()) if params.get("verb") == "Identify" else xml(body)

        with FakePartner(partner) as fake:
            started = time.monotonic()
            report = harvest.run(source, Partner("evil", fake.url), settings=patient(0))
            seconds = time.monotonic() - started
    passwd = [line for line in Path("/etc/passwd").read_text().splitlines() if line.strip()]
    everything = store_text(source)
    assert canary.requests == [], "the harvester fetched a URL named in the document"
    assert not any(line in everything for line in passwd), "/etc/passwd content reached the store"
    assert "lollollol" not in everything
    assert seconds < 10
    assert report.outcome == "failed", f"the page was accepted: {report.outcome}, {report.counts}"
    assert re.search(r"DOCTYPE|DTD|entit", report.reason or "", re.I), report.reason
    assert report.counts.received == 0 and source.identifiers() == set()


def test_tampered_tokens_are_bad_resumption_tokens(pg_url: str, source: Store) -> None:
    load(source, 50)
    app = create_app(make_config(pg_url, server__page_size=10), store=source)
    http = app.test_client()
    doc = validate(http.get("/oai?verb=ListIdentifiers&metadataPrefix=oai_dc").data)
    token = doc.findtext(".//oai:resumptionToken", namespaces=NS) or ""
    records_doc = validate(http.get("/oai?verb=ListRecords&metadataPrefix=oai_dc").data)
    records_token = records_doc.findtext(".//oai:resumptionToken", namespaces=NS) or ""
    middle = len(token) // 2
    flipped = token[:middle] + ("A" if token[middle] != "A" else "B") + token[middle + 1 :]
    forged, _ = Tokens("not-our-secret", 3600).issue(
        ListState(
            verb="ListIdentifiers",
            prefix="oai_dc",
            start=None,
            end=None,
            set_spec=None,
            last=(0, ""),
            cursor=0,
            total=10**6,
        )
    )

    def codes(t: str, verb: str = "ListIdentifiers") -> list[str | None]:
        response = http.get(f"/oai?verb={verb}&resumptionToken={quote(t, safe='')}")
        assert response.status_code == 200
        return [e.get("code") for e in validate(response.data).iter(f"{{{NS['oai']}}}error")]

    assert codes(token) == [], "the untouched token is good"
    for bad in (flipped, token[:-3], token + "x", forged, "", "../../etc/passwd"):
        assert codes(bad) == ["badResumptionToken"], bad
    assert codes(records_token) == ["badResumptionToken"], "a ListRecords token is no ListIdentifiers token"
