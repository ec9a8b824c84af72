"""The harvester as a process, the way it runs in production: `harvester run` killed with
SIGKILL at random points and restarted ends with the same store as an uninterrupted run; and
two `harvester run` processes sharing one PostgreSQL store never harvest a partner at once."""

from __future__ import annotations

import itertools
import os
import random
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner
from conftest import BASE_CONFIG, LiveServer, make_config, pg_schema
from harvestkit import (
    FAST,
    FAST_HARVEST,
    FakePartner,
    identify,
    list_records,
    record,
    second_store_url,
    xml,
)
from werkzeug.wrappers import Response

from harvester import errors as err
from harvester import harvest
from harvester.cli import main
from oaiserver import create_app
from oaiserver.config import Partner, partner_set
from oaiserver.store import (
    Store,
    acquire_lease,
    harvest_history,
    harvest_state_of,
    iter_records,
    leases,
    quarantined,
)
from oaiserver.synthetic import synthetic_records, synthetic_sets

ROOT = Path(__file__).parent.parent
HARVESTER = Path(sys.executable).with_name("harvester")
COMMAND = [str(HARVESTER)] if HARVESTER.exists() else [sys.executable, "-m", "harvester.cli"]
CLIENT = ["--timeout", "10", "--retries", "3", "--backoff", "0.05"]
HARVEST_DATE = re.compile(r'harvestDate="[^"]*"')


def write_config(path: Path, store_url: str, partner: str, base_url: str) -> Path:
    config = {**BASE_CONFIG, "storage": {"url": store_url}, "partners": [{"name": partner, "base_url": base_url}]}
    path.write_text(yaml.safe_dump(config))
    return path


def snapshot(store: Store) -> dict[str, tuple[Any, ...]]:
    """Everything a harvest leaves in the store, but when it happened: the harvest dates (in the
    provenance and the <about> container), the datestamps the store gave, and the run history."""
    out = {}
    for r in iter_records(store):
        provenance = {k: v for k, v in (r.provenance or {}).items() if k != "harvestDate"}
        about = HARVEST_DATE.sub('harvestDate="-"', r.about) if r.about is not None else None
        out[r.identifier] = (
            r.deleted,
            r.source,
            tuple(r.sets),
            tuple(sorted(r.metadata.items())),
            tuple(r.dc),
            r.fulltext,
            r.raw_xml,
            tuple(sorted(provenance.items())),
            about,
        )
    return out


def assert_same_store(got: Store, expected: Store) -> None:
    mine, theirs = snapshot(got), snapshot(expected)
    missing, extra = theirs.keys() - mine.keys(), mine.keys() - theirs.keys()
    assert not missing and not extra, (len(missing), sorted(missing)[:5], len(extra), sorted(extra)[:5])
    differ = [i for i in theirs if mine[i] != theirs[i]]
    assert not differ, (len(differ), differ[:3], mine[differ[0]], theirs[differ[0]])
    assert got.counts() == expected.counts()
    assert got.set_counts() == expected.set_counts()


# ---- killed with SIGKILL at random points ----------------------------------------------------

RECORDS, PAGE, SLOW = 2000, 40, 0.02  # 50 pages, each answered at least 20 ms late
KILLS, SEED = 5, 20240501
KILL_WAIT, SPAWN_WAIT = 0.25, 0.4  # the longest wait before a kill: after a page is asked for, after the spawn
REFERENCE_AGENT = "reference-harvest"  # the in-process uninterrupted run's User-Agent


class Slowed:
    """The source app, with every list page answered SLOW seconds late; counts the list
    requests of the harvester processes (not those of the in-process reference run)."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.lists = 0

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Any:
        if "verb=ListRecords" in environ.get("QUERY_STRING", ""):
            if environ.get("HTTP_USER_AGENT") != REFERENCE_AGENT:
                self.lists += 1
            time.sleep(SLOW)
        return self.app(environ, start_response)


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Store, LiveServer, Slowed]]:
    """Our own oaiserver with RECORDS synthetic records (2% deleted, in 16 sets), PAGE per page."""
    store = Store(f"sqlite:///{tmp_path_factory.mktemp('source') / 'source.sqlite3'}")
    store.write(synthetic_records(RECORDS, "source.example.org"), keep_datestamps=True)
    slowed = Slowed(create_app(make_config(store.url, server__page_size=PAGE, sets=synthetic_sets()), store=store))
    with LiveServer(slowed) as live:
        yield store, live, slowed
    store.close()


def test_a_harvest_killed_at_random_points_ends_as_an_uninterrupted_one(
    store_url: str, tmp_path: Path, source: tuple[Store, LiveServer, Slowed]
) -> None:
    origin, live, slowed = source
    deadline = time.monotonic() + 600  # against a hang, not a speed: ~12-35 s per backend on an idle machine
    config = write_config(tmp_path / "config.yaml", store_url, "mirror", live.url)
    command = [*COMMAND, "--config", str(config), "run", "mirror", *CLIENT]
    rng = random.Random(SEED)
    outputs: list[str] = []
    progress: list[int] = []  # the window's pages committed when each kill landed
    with second_store_url(store_url, tmp_path) as reference_url:
        target, reference = Store(store_url), Store(reference_url)
        # The uninterrupted run, into a second store on the same backend, meanwhile.
        uninterrupted: list[harvest.RunReport] = []
        settings = harvest.HarvestSettings(replace(FAST, user_agent=REFERENCE_AGENT))
        thread = threading.Thread(
            target=lambda: uninterrupted.append(harvest.run(reference, Partner("mirror", live.url), settings=settings))
        )
        thread.start()
        try:

            def start() -> tuple[subprocess.Popen[bytes], Path]:
                log = tmp_path / f"run-{len(outputs)}.log"
                with log.open("wb") as out:
                    process = subprocess.Popen(command, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)
                return process, log

            # Where each kill lands: once the process has asked for a random page of the window, a
            # random moment later (while the page is served, read, converted, committed, or the next
            # one asked for); and one kill timed from the spawn, while Python starts or the lease is taken.
            # Never so late that the window could end first: the pages still to ask for take at least
            # SLOW each, longer in all than the longest wait before a kill.
            pages = RECORDS // PAGE
            tail = int(max(KILL_WAIT, SPAWN_WAIT) / SLOW) + 2  # pages not yet asked for at the latest kill
            stride = (pages - 2 - tail) // (KILLS - 1)  # one random page in each stretch of the window
            plan: list[int | None] = [2 + i * stride + rng.randrange(stride) for i in range(KILLS - 1)]
            plan.insert(rng.randrange(KILLS), None)
            dead_lease_shown = False  # `harvester status` tells a dead holder's lease from a live one
            for kill, position in enumerate(plan):
                committed = progress[-1] if progress else 0
                lists_before = slowed.lists
                process, log = start()
                if position is None:
                    time.sleep(rng.uniform(0.05, SPAWN_WAIT))
                else:
                    wanted = max(1, position - committed)
                    while slowed.lists - lists_before < wanted and process.poll() is None:
                        assert time.monotonic() < deadline, "too slow"
                        time.sleep(0.002)
                    time.sleep(rng.uniform(0.0, KILL_WAIT))
                finished = process.poll() is not None
                if not finished:
                    process.send_signal(signal.SIGKILL)
                process.wait(30)
                outputs.append(log.read_text())
                assert not finished, f"run {kill + 1} ended before its kill (exit {process.returncode}): {outputs[-1]}"
                assert process.returncode == -signal.SIGKILL
                checkpoint = harvest_state_of(target, "mirror").checkpoint
                progress.append(checkpoint["counts"]["pages"] if checkpoint else 0)
                if "mirror" in leases(target) and not dead_lease_shown:
                    status = CliRunner().invoke(main, ["--config", str(config), "status"])
                    assert "but that process is gone; the next run takes the lease over" in status.output, status.output
                    dead_lease_shown = True

            # Restarted until it exits 0; with no kill, the first restart must finish the job.
            process, log = start()
            process.wait(max(1.0, deadline - time.monotonic()))
            outputs.append(log.read_text())
            assert process.returncode == 0, "\n---\n".join(outputs)
            assert "mirror: success: " in outputs[-1] and "; resumed" in outputs[-1], outputs[-1]

            print(f"kills left the window at pages {progress}")  # shown with -s
            assert dead_lease_shown, "no kill left a lease behind"
            takeovers = sum("is no longer running; taking the lease over" in o for o in outputs)
            assert takeovers >= 1, "a killed harvester's lease is taken over at once, not after its TTL"
            # The kills landed mid-window, at different places (not all before the first page).
            assert len({p for p in progress if 0 < p < pages}) >= KILLS - 2, progress
            assert progress == sorted(progress), f"a committed page was lost: {progress}"
            runs = harvest_history(target, "mirror", limit=100)
            assert runs[0].outcome == "success" and runs[0].resumed
            assert all(r.outcome == "failed" and "interrupted" in (r.reason or "") for r in runs[1:]), runs
            assert harvest_state_of(target, "mirror").checkpoint is None and leases(target) == {}

            thread.join(max(1.0, deadline - time.monotonic()))
            assert uninterrupted, "the uninterrupted run did not finish"
            report = uninterrupted[0]
            assert report.outcome == "success" and report.counts.received == RECORDS and not report.resumed
            assert_same_store(target, reference)
            # And the copy is the source's: every identifier, deleted flag and Dublin Core value.
            copy = snapshot(target)
            assert len(copy) == RECORDS
            for r in iter_records(origin):
                deleted, source_name, sets, _, dc, *_ = copy[r.identifier]
                ours = (partner_set("mirror"), *(f"{partner_set('mirror')}:{spec}" for spec in r.sets))
                assert (deleted, source_name, sets) == (r.deleted, "mirror", ours), r.identifier
                assert [v.value for v in dc] == ([] if r.deleted else [v.value.strip() for v in r.dc]), r.identifier
        finally:
            thread.join(60)
            target.close()
            reference.close()


def test_only_a_dead_local_holders_lease_is_taken_over(store: Store) -> None:
    """A lease is taken over before it expires only when its holder is certainly gone: a
    process of this host and PID namespace that no longer runs (or is a zombie)."""
    host, scope = socket.gethostname(), harvest._process_scope()
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    zombie = subprocess.Popen([sys.executable, "-c", "pass"])  # exits, and is not reaped until the end
    reaped = subprocess.Popen([sys.executable, "-c", "pass"])
    reaped.wait()
    try:
        while Path(f"/proc/{zombie.pid}").exists() and " Z " not in Path(f"/proc/{zombie.pid}/stat").read_text():
            time.sleep(0.01)
        holders = {
            f"{host}:{sleeper.pid}:{scope}:live": False,
            f"{host}:{os.getpid()}:{scope}:this-process": False,  # maybe another thread's run
            f"elsewhere:{reaped.pid}:{scope}:other-host": False,
            f"{host}:{reaped.pid}:00000000:other-pid-namespace": False,
            f"{host}:{reaped.pid}:old-format": False,
            f"{host}:{zombie.pid}:{scope}:zombie": True,
            f"{host}:{reaped.pid}:{scope}:killed": True,
        }
        assert {h: harvest.holder_is_gone(h) for h in holders} == holders
        with FakePartner(lambda params, n: xml(list_records([record(f"oai:p:{n}")]))) as fake:
            for n, (holder, gone) in enumerate(holders.items()):
                partner = Partner(f"p{n}", fake.url)
                assert acquire_lease(store, partner.name, holder, 600, int(time.time()))[0]
                if gone:
                    report = harvest.run(store, partner, settings=FAST_HARVEST)
                    assert report.outcome == "success", holder
                    assert partner.name not in leases(store)
                else:
                    with pytest.raises(err.PartnerBusy):
                        harvest.run(store, partner, settings=FAST_HARVEST)
                    assert leases(store)[partner.name][0] == holder
    finally:
        sleeper.kill()
        sleeper.wait()
        zombie.wait()


def test_two_partners_writing_one_identifier_at_once_keep_both_copies(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Partners a and b both send oai:x:1, harvested at the same moment (two schedule jobs). On
    PostgreSQL b's insert meets a's uncommitted row at the unique index and waits for a's commit;
    the store then finds the row taken, and b's copy is kept beside a's, not served (neither
    comes first in a configuration: the holder is served), as it would have been later."""
    a_wrote, b_reading = threading.Event(), threading.Event()
    original = harvest.write_harvested_in

    def paused(store_: Store, conn: Any, stamp: int, chunk: Any, **kw: Any) -> Any:
        result = original(store_, conn, stamp, chunk, **kw)
        if chunk and chunk[0].source == "a":
            a_wrote.set()
            b_reading.wait(5)
            time.sleep(0.3)  # b is now blocked on our row (PostgreSQL) or on BEGIN IMMEDIATE (SQLite)
        return result

    def answer(params: dict[str, str], n: int) -> Response:
        if "b" in params.get("set", ""):  # b's list waits until a's transaction holds oai:x:1
            assert a_wrote.wait(5)
            b_reading.set()
        return xml(list_records([record("oai:x:1", "Shared"), record(f"oai:x:{params.get('set', '')}-own")]))

    monkeypatch.setattr(harvest, "write_harvested_in", paused)
    reports: dict[str, harvest.RunReport] = {}
    with FakePartner(answer) as fake:
        threads = [
            threading.Thread(
                target=lambda name=name: reports.__setitem__(
                    name, harvest.run(store, Partner(name, fake.url, sets=(name,)), settings=FAST_HARVEST)
                )
            )
            for name in ("a", "b")
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
    assert reports["a"].outcome == "success"
    assert reports["b"].outcome == "success", reports["b"].reason
    assert reports["b"].failures == [] and reports["b"].counts.shadowed == 1
    assert reports["b"].counts.added == 2 and reports["b"].counts.quarantined == 0
    assert not quarantined(store, "b") and not quarantined(store, "a")
    shared = store.get("oai:x:1")
    assert shared is not None and shared.source == "a"
    assert store.identifiers(source="b") == {"oai:x:b-own"}


# ---- two processes, one PostgreSQL store ------------------------------------------------------------


@pytest.fixture
def pg_store_url() -> Iterator[str]:
    """A fresh schema on PostgreSQL (conftest's one skip rule)."""
    with pg_schema("k") as url:
        yield url


class ListLog:
    """A partner of 12 pages of 5 records, 0.3 s per page; each list it starts gets its own
    tokens (`L<list>-<page>`), so the log shows which list each request belongs to."""

    PAGES, SIZE, DELAY = 12, 5, 0.3

    def __init__(self) -> None:
        self.lists = 0
        self.log: list[tuple[int, float, float]] = []  # (list, asked, answered), in order of asking
        self.lock = threading.Lock()

    def __call__(self, params: dict[str, str], n: int) -> Response:
        if params.get("verb") == "Identify":
            return xml(identify())
        token = params.get("resumptionToken")
        with self.lock:
            if token is None:
                self.lists += 1
                number, page = self.lists, 0
            else:
                number, page = (int(x) for x in token[1:].split("-"))
            entry = len(self.log)
            self.log.append((number, time.time(), 0.0))
        time.sleep(self.DELAY)
        records = [record(f"oai:partner.example.org:{page * self.SIZE + i}") for i in range(self.SIZE)]
        following = f"L{number}-{page + 1}" if page + 1 < self.PAGES else None
        with self.lock:
            self.log[entry] = (number, self.log[entry][1], time.time())
        return xml(list_records(records, following))


# `harvester run` behind a start gate: the process imports everything, says it is ready, and
# enters the command line's main() once the test opens the gate.
GATE = (
    "import os, sys, time\n"
    "from harvester.cli import main\n"
    "ready, gate = sys.argv.pop(1), sys.argv.pop(1)\n"
    "open(ready, 'w').close()\n"
    "while not os.path.exists(gate):\n"
    "    time.sleep(0.001)\n"
    "sys.argv[0] = 'harvester'\n"
    "main()\n"
)


@pytest.mark.parametrize("start", ["gate", "spawn"])
def test_two_harvester_processes_never_harvest_one_partner_at_once(
    pg_store_url: str, tmp_path: Path, start: str
) -> None:
    """`spawn`: two `harvester run` processes started together (they race from process start:
    one is busy, or they run one after the other); `gate`: both import everything first, then
    enter `harvester run` at the same instant, so the lease is contended within milliseconds
    and one of them must be told the partner is busy."""
    partner = ListLog()
    with FakePartner(partner) as fake:
        config = write_config(tmp_path / "config.yaml", pg_store_url, "shared", fake.url)
        args = ["--config", str(config), "run", "shared", *CLIENT]
        gate = tmp_path / "gate"
        ready = [tmp_path / f"ready-{i}" for i in range(2)]
        commands = [
            [sys.executable, "-c", GATE, str(ready[i]), str(gate), *args] if start == "gate" else [*COMMAND, *args]
            for i in range(2)
        ]
        processes = [
            subprocess.Popen(c, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for c in commands
        ]
        try:
            if start == "gate":
                limit = time.monotonic() + 30
                while not all(r.exists() for r in ready):
                    assert time.monotonic() < limit and all(p.poll() is None for p in processes), "not ready"
                    time.sleep(0.005)
                gate.touch()
            outputs = [p.communicate(timeout=60)[0] for p in processes]
        finally:
            for p in processes:
                if p.poll() is None:
                    p.kill()
                    p.wait()
    codes = [p.returncode for p in processes]
    shown = "\n---\n".join(outputs)
    store = Store(pg_store_url)
    try:
        runs = sorted(harvest_history(store, "shared"), key=lambda r: r.id)
        harvested, held = store.identifiers(source="shared"), leases(store)
    finally:
        store.close()

    # The partner saw the list requests of one client, then (maybe) those of the other: never mixed.
    order = [number for number, _, _ in partner.log]
    assert order == sorted(order), f"two harvesters' list requests interleaved: {order}\n{shown}"
    spans = {
        n: (min(a for m, a, _ in partner.log if m == n), max(b for m, _, b in partner.log if m == n)) for n in order
    }
    for n in range(2, partner.lists + 1):
        assert spans[n - 1][1] <= spans[n][0], f"list {n} began before list {n - 1} ended: {spans}"
    # The run history: each run finished before the next one started.
    for earlier, later in itertools.pairwise(runs):
        assert earlier.finished is not None and earlier.finished <= later.started, f"runs overlap: {runs}"

    assert sorted(codes) == [0, 1] if start == "gate" else sorted(codes) in ([0, 1], [0, 0]), shown
    if sorted(codes) == [0, 1]:
        # One harvested, the other was told the partner was busy, and did not touch it.
        busy = outputs[codes.index(1)]
        assert re.search(r"shared: another harvester \(\S+\) holds the lease; skipped \(lease until ", busy), shown
        assert "shared: success" not in busy
        assert len(runs) == 1 and runs[0].outcome == "success" and partner.lists == 1, runs
    else:
        # Both harvested, one after the other (the second one incrementally).
        assert len(runs) == 2 and all(r.outcome == "success" for r in runs) and runs[0].owner != runs[1].owner, runs
    assert len(harvested) == ListLog.PAGES * ListLog.SIZE and held == {}
    assert sum(1 for e in partner.log if e[0] == 1) == ListLog.PAGES, "the first run took the whole list"
    assert runs[0].finished is not None and runs[0].finished - runs[0].started >= 2, "long enough to contend"
