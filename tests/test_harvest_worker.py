"""Pages converted in a worker process (harvester.pipeline, harvester.worker): the same rows as
converting them in the harvest's own process, in page order, and a worker that dies or fails
costs a run, never a record. The worker lives as long as the run that started it, and no
longer; signals are its parent's to act on."""

from __future__ import annotations

import json
import logging
import os
import pickle
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from concurrent.futures import Future
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
import yaml
from conftest import BASE_CONFIG, Clock
from harvestkit import FAST, FAST_HARVEST, FakePartner, PagedPartner, record, second_store

from harvester import errors as err
from harvester import harvest, worker
from harvester.client import Client, Page
from harvester.convert import Converted, listed_at
from harvester.harvest import _listed
from harvester.pipeline import WORKER_FROM, Pipeline, Ready, Worker, received
from oaiserver.config import Partner
from oaiserver.records import Record
from oaiserver.rows import Prepared, Wire, prepare
from oaiserver.store import Store, harvest_state_of

ABOUT = (
    "<about><provenance xmlns='http://www.openarchives.org/OAI/2.0/provenance'>"
    "<originDescription harvestDate='2024-01-01T00:00:00Z' altered='false'><baseURL>http://origin.example.org/oai"
    "</baseURL><identifier>oai:origin:9</identifier><datestamp>2023-12-01</datestamp>"
    "<metadataNamespace>http://www.openarchives.org/OAI/2.0/oai_dc/</metadataNamespace></originDescription>"
    "</provenance></about>"
)


def pages_of_every_kind(n_pages: int = 4, per_page: int = 30) -> list[list[str]]:
    """Live, deleted, escaped and non-ASCII titles, an <about>, a payload without Dublin Core,
    and a record that cannot be read (no identifier), on every page."""
    pages = []
    for p in range(n_pages):
        page = []
        for i in range(per_page):
            ident = f"oai:partner.example.org:{p}-{i}"
            if i % 10 == 3:
                page.append(record(ident, deleted=True))
            elif i % 10 == 5:
                page.append(
                    record(ident, "Tom &amp; Jerry &lt;3 \u00e9t\u00e9 \u5317\u4eac").replace(
                        "</metadata>", "</metadata>" + ABOUT
                    )
                )
            elif i % 10 == 7:
                page.append(
                    f"<record><header><identifier>{ident}</identifier><datestamp>2024-04-01</datestamp></header>"
                    "<metadata><marc xmlns='http://www.loc.gov/MARC21/slim'><leader>x</leader></marc></metadata></record>"
                )
            elif i % 10 == 9:
                page.append("<record><header><datestamp>2024-04-01</datestamp></header></record>")
            else:
                page.append(record(ident, f"Title {p}-{i}"))
        pages.append(page)
    return pages


def stored(store: Store) -> dict[str, list[Any]]:
    """Every row a harvest writes for records, ids left out (they are the store's business)."""
    with store.engine.connect() as conn:
        rows = conn.exec_driver_sql("SELECT * FROM records ORDER BY identifier").mappings().all()
        fmts = conn.exec_driver_sql(
            "SELECT r.identifier, f.prefix, f.record, f.datestamp FROM formats f"
            " JOIN records r ON r.id = f.record_id ORDER BY r.identifier, f.prefix"
        ).all()
        members = conn.exec_driver_sql(
            "SELECT spec, datestamp, identifier FROM set_members ORDER BY spec, datestamp, identifier"
        ).all()
        key, words = ("s.rowid", "s.words") if store.is_sqlite else ("s.record_id", "s.words::text")
        search = conn.exec_driver_sql(
            f"SELECT r.identifier, {words} FROM records_search s JOIN records r ON r.id = {key} ORDER BY r.identifier"
        ).all()
    return {
        "records": [{k: v for k, v in r.items() if k != "id"} for r in rows],
        "formats": [(i, p, bytes(b), d) for i, p, b, d in fmts],
        "set_members": [tuple(m) for m in members],
        "search": [tuple(w) for w in search],
    }


@pytest.fixture
def one_worker() -> Iterator[Worker]:
    """A worker for the tests that feed it pages themselves; closed at the end."""
    w = Worker()
    yield w
    w.close()


def submit(w: Worker, body: bytes, partner: Partner) -> Future[worker.Offloaded]:
    return w.submit(body, partner, "2024-05-01T12:00:00Z")


@pytest.fixture
def other(store_url: str, tmp_path: Path, clock: Clock) -> Iterator[Store]:
    with second_store(store_url, tmp_path, clock) as s:
        yield s


def test_pages_converted_by_the_worker_are_stored_as_if_converted_here(
    workers: list[Worker], store: Store, other: Store
) -> None:
    pages = pages_of_every_kind()
    with FakePartner(PagedPartner(pages)) as partner:
        p = Partner("p", partner.url)
        here = harvest.run(other, p, settings=replace(FAST_HARVEST, worker_process=False))
        assert workers == [], "converted here: no worker was started"
        there = harvest.run(store, p, settings=FAST_HARVEST)
    assert len(workers) == 1, "a list of several pages goes to the worker"
    assert workers[0].process.pid != os.getpid()
    assert workers[0].process.poll() == 0, "the worker ends with its run"
    assert there.outcome == here.outcome == "partial"  # the records without an identifier
    assert there.counts == here.counts
    assert there.counts.received == 120 and there.counts.failed == 12 and there.counts.deleted == 12
    assert there.counts.without_dc == 12
    assert there.failures == here.failures
    ours, theirs = stored(store), stored(other)
    assert len(ours["records"]) == 108 and len(ours["formats"]) > 0 and len(ours["set_members"]) > 0
    assert len(ours["search"]) == 108
    assert ours == theirs


def test_a_page_that_arrives_once_the_pipeline_is_closed_starts_no_worker(workers: list[Worker]) -> None:
    """A page asked for ahead may arrive after its run has ended (a lost lease, a store that
    failed): a worker started for it would outlive the run, in a scheduler for days."""
    with FakePartner(PagedPartner(pages_of_every_kind(3))) as partner, Client(partner.url, FAST) as client:
        closed = Pipeline(Partner("p", partner.url), stop=threading.Event(), worker_from=0)
        closed.close()
        with pytest.raises(err.Stopped, match="closed"):
            next(closed.pages(client, token=None, metadataPrefix="oai_dc"))
    assert workers == []


def test_a_list_of_one_page_is_converted_without_a_worker(workers: list[Worker], store: Store) -> None:
    with FakePartner(PagedPartner(pages_of_every_kind(1))) as partner:
        report = harvest.run(store, Partner("p", partner.url), settings=FAST_HARVEST)
    assert report.counts.received == 30
    assert workers == []


def test_a_small_list_of_several_pages_is_converted_without_a_worker(workers: list[Worker], store: Store) -> None:
    """A worker's start (an interpreter, lxml, our modules: about 0.3 s of CPU) costs more than
    converting a small list here: an aggregator's many small partners start none."""
    settings = replace(FAST_HARVEST, worker_from=WORKER_FROM)
    with FakePartner(PagedPartner(pages_of_every_kind(n_pages=3))) as partner:
        report = harvest.run(store, Partner("p", partner.url), settings=settings)
    assert report.counts.pages == 3 and report.counts.received == 90
    assert workers == []


def test_a_list_announced_big_goes_to_the_worker_from_its_first_page(workers: list[Worker], store: Store) -> None:
    held: list[tuple[int, bool, int]] = []

    def on_page(name: str, counts: harvest.Counts, page: Page) -> None:
        held.append((len(page.body), page.root is not None, len(page.items)))

    settings = replace(FAST_HARVEST, worker_from=WORKER_FROM)
    with FakePartner(PagedPartner(pages_of_every_kind(n_pages=3), announce=WORKER_FROM)) as partner:
        report = harvest.run(store, Partner("p", partner.url), settings=settings, on_page=on_page)
    assert len(workers) == 1
    assert held == [(0, False, 0)] * 3, "every page went to the worker"
    assert report.counts.received == 90


def test_a_list_goes_to_the_worker_from_the_page_that_brings_it_to_worker_from_records(
    workers: list[Worker], store: Store, other: Store
) -> None:
    """Without completeListSize, the records received so far tell: 30 after page 1, 60 after page 2."""
    here: list[bool] = []

    def on_page(name: str, counts: harvest.Counts, page: Page) -> None:
        here.append(page.root is not None)

    pages = pages_of_every_kind(n_pages=4)
    with FakePartner(PagedPartner(pages)) as partner:
        p = Partner("p", partner.url)
        report = harvest.run(store, p, settings=replace(FAST_HARVEST, worker_from=60), on_page=on_page)
        harvest.run(other, p, settings=replace(FAST_HARVEST, worker_process=False))
    assert len(workers) == 1
    assert here == [True, False, False, False], "page 1 converted here, pages 2 to 4 by the worker"
    assert report.counts.received == 120
    assert stored(store) == stored(other)


def test_a_worker_killed_with_a_page_in_hand_fails_the_run_and_the_next_run_resumes(
    store: Store, other: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    pages = pages_of_every_kind(n_pages=6, per_page=300)  # pages that take the worker tens of ms
    real_submit, sent = Worker.submit, []

    def submit_then_kill(self: Worker, body: bytes, partner: Partner, response_date: str) -> Future[worker.Offloaded]:
        future = real_submit(self, body, partner, response_date)
        sent.append(future)
        if len(sent) == 4:  # sent once the first page is written (two go ahead); now in the worker's hands
            os.kill(self.process.pid, signal.SIGKILL)
        return future

    monkeypatch.setattr(Worker, "submit", submit_then_kill)
    with FakePartner(PagedPartner(pages)) as partner:
        p = Partner("p", partner.url)
        failed = harvest.run(store, p, settings=FAST_HARVEST)
        assert failed.outcome == "failed"
        assert "the harvest worker process ended (exit status -9)" in (failed.reason or ""), failed.reason
        assert 1 <= failed.counts.pages <= 3, "the pages the worker answered before its end are written"
        again = harvest.run(store, p, settings=FAST_HARVEST)
        harvest.run(other, p, settings=replace(FAST_HARVEST, worker_process=False))
    assert again.outcome == "partial" and again.resumed
    assert again.window.received == 6 * 300
    assert stored(store)["records"] == stored(other)["records"]


def test_big_pages_from_concurrent_harvests_never_deadlock_the_pipes(one_worker: Worker) -> None:
    """Pages larger than the pipes, sent by several threads while answers larger than the pipes
    come back: every page is converted (this hung when a sender held the lock the thread
    reading the answers needed)."""
    filler = "x" * 3000
    page = [record(f"oai:big.example.org:{i}", f"Title {i} {filler}") for i in range(450)]  # about 1.5 MB
    body = PagedPartner([page])({"verb": "ListRecords"}, 0).get_data()
    assert len(body) > 1 << 20
    results: list[int] = []

    def send_three() -> None:
        futures = [submit(one_worker, body, Partner("p", "http://127.0.0.1:1/oai")) for _ in range(3)]
        results.extend(len(within(f).prepared) for f in futures)

    threads = [threading.Thread(target=send_three, daemon=True) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not any(t.is_alive() for t in threads), "deadlocked"
    assert results == [450] * 9


def test_a_page_handed_to_the_worker_lets_go_of_its_body_and_tree_here(workers: list[Worker], store: Store) -> None:
    """The harvest's process keeps of a page sent to the worker only what it still reads (its
    token, its record count, its identifiers for the loop watch): not its bytes, nor its tree,
    which weigh three to ten times the page while the pages ahead wait their turn."""
    held: list[tuple[int, bool, int]] = []

    def on_page(name: str, counts: harvest.Counts, page: Page) -> None:
        held.append((len(page.body), page.root is not None, len(page.items)))

    with FakePartner(PagedPartner(pages_of_every_kind(n_pages=3))) as partner:
        report = harvest.run(store, Partner("p", partner.url), settings=FAST_HARVEST, on_page=on_page)
    assert len(workers) == 1, "the pages went to the worker"
    assert held == [(0, False, 0)] * 3
    assert report.counts.pages == 3 and report.counts.received == 90 and report.counts.failed == 9


def test_the_worker_sends_a_page_s_records_in_parts_and_keeps_none_of_them(one_worker: Worker) -> None:
    """A page's records go back a part at a time (about PART_BYTES each, never the whole page
    pickled at once), in the page's order, and the worker lets go of the body it was handed."""
    filler = "x" * 3000
    page = [record(f"oai:big.example.org:{i}", f"Title {i} {filler}") for i in range(1000)]  # about 3.3 MB
    body = PagedPartner([page])({"verb": "ListRecords"}, 0).get_data()
    handed = [body]
    parts: list[list[worker.Sent]] = []
    rest = worker.convert_body(handed, Partner("p", "http://127.0.0.1:1/oai"), "2024-05-01T12:00:00Z", parts.append)
    assert handed == [], "the body is let go once parsed"
    sizes = [len(pickle.dumps(part)) for part in parts]
    assert len(parts) >= 3 and max(sizes) < 2 * worker.PART_BYTES, sizes
    identifiers = [Wire._make(values).identifier for part in [*parts, rest.records] for values in part]
    assert identifiers == [f"oai:big.example.org:{i}" for i in range(1000)]
    # and through the pipes, gathered in order
    done = within(submit(one_worker, body, Partner("p", "http://127.0.0.1:1/oai")))
    assert [p.record.identifier for p in done.prepared] == identifiers


def test_the_worker_sends_the_datestamp_each_record_was_listed_at_beside_its_row(one_worker: Worker) -> None:
    """A take-up reads each record's datestamp as listed (in seconds): the worker reads it once,
    and it travels beside the row, so the harvest's process parses no provenance for it. One
    not in OAI-PMH's form (an offset, a fraction; converted all the same) is None, as before."""
    sent = ["2024-04-01T10:00:00Z", "2024-04-02", "2024-04-03T10:00:00+02:00", "2024-04-04T10:00:00.5Z"]
    page = [record(f"oai:dated.example.org:{i}", datestamp=d) for i, d in enumerate(sent)]
    body = PagedPartner([page])({"verb": "ListRecords"}, 0).get_data()
    done = within(submit(one_worker, body, Partner("p", "http://127.0.0.1:1/oai")))
    assert [p.record.identifier for p in done.prepared] == [f"oai:dated.example.org:{i}" for i in range(4)]
    assert done.listed == [1711965600, 1712016000, None, None]
    assert done.listed == [listed_at(_record_of(p)) for p in done.prepared]
    converted = Converted(prepared=done.prepared, listed=done.listed)
    assert _listed(Ready(_NO_PAGE, 4, [], converted)) == list(
        zip([p.record.identifier for p in done.prepared], done.listed, strict=True)
    )


def test_the_take_up_reads_a_worker_s_datestamp_beside_the_row_not_its_provenance() -> None:
    prepared = prepare(Record("oai:p:1", source="p", provenance={"datestamp": "2024-04-01"}))
    ready = Ready(_NO_PAGE, 1, ["oai:p:1"], Converted(prepared=[prepared], listed=[7]))
    assert _listed(ready) == [("oai:p:1", 7)]
    with pytest.raises(ValueError):  # a datestamp for each row, or the page's would be shifted
        _listed(Ready(_NO_PAGE, 1, ["oai:p:1"], Converted(prepared=[prepared], listed=[])))


_NO_PAGE: Any = None  # what a take-up reads of a page's records needs none of the page


def _record_of(p: Prepared) -> Record:
    return Record(p.record.identifier, provenance=json.loads(p.provenance or "{}"))


def test_a_page_that_cannot_be_sent_fails_alone_and_never_shifts_the_answers(one_worker: Worker) -> None:
    """A request that breaks off mid-send must not leave the answers one page out of step: a
    later page would be given another page's records."""
    good_body = PagedPartner([pages_of_every_kind(1)[0][:2]])({"verb": "ListRecords"}, 0).get_data()
    unpicklable = Partner("p", "http://127.0.0.1:1/oai", quirks={"hook": lambda: None})
    broken = submit(one_worker, good_body, unpicklable)
    with pytest.raises(err.WorkerError, match="could not be sent"):
        within(broken)
    with pytest.raises(err.WorkerError, match="has stopped"):  # no page after it goes to this worker
        submit(one_worker, good_body, Partner("after", "http://127.0.0.1:1/oai"))
    fresh = Worker()  # as the pipeline starts one for the next page
    try:
        after = within(submit(fresh, good_body, Partner("after", "http://127.0.0.1:1/oai")))
    finally:
        fresh.close()
    assert [p.record.source for p in after.prepared] == ["after", "after"]


def test_a_stop_waits_for_the_page_in_hand_only_so_long() -> None:
    """A worker that never answers cannot hold a stopping harvest for longer than `grace`."""
    never: Future[worker.Offloaded] = Future()
    stop = threading.Event()
    threading.Timer(0.2, stop.set).start()
    started = time.monotonic()
    with pytest.raises(err.Stopped, match=r"did not finish the page within 0\.3 s"):
        received(never, stop, grace=0.3)
    assert time.monotonic() - started < 30


def test_a_stop_while_the_worker_converts_waits_for_the_page() -> None:
    """SIGTERM finishes the page in flight: a page being converted when the stop comes is
    still handed back, to be written and checkpointed."""
    answer: Future[worker.Offloaded] = Future()
    stop = threading.Event()
    stop.set()

    def answer_once_stopped() -> None:
        stop.wait()
        answer.set_result(worker.Offloaded([], [], 3, []))

    threading.Thread(target=answer_once_stopped, daemon=True).start()
    converted = received(answer, stop, grace=60)
    assert converted.without_dc == 3


def test_a_stop_while_the_worker_converts_the_first_page_commits_it(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The stop comes while page 1 is in the worker's hands (its answer is held back until the
    stop is set): page 1 is written and checkpointed, then the run stops."""
    real_submit, stop = Worker.submit, threading.Event()

    def submit_then_stop(self: Worker, body: bytes, partner: Partner, response_date: str) -> Future[worker.Offloaded]:
        real = real_submit(self, body, partner, response_date)
        held: Future[worker.Offloaded] = Future()

        def relay() -> None:
            stop.wait()
            try:
                held.set_result(real.result(60))
            except Exception as exc:
                held.set_exception(exc)

        threading.Thread(target=relay, daemon=True).start()
        stop.set()  # SIGTERM, while the worker converts the page
        return held

    monkeypatch.setattr(Worker, "submit", submit_then_stop)
    with FakePartner(PagedPartner(pages_of_every_kind(n_pages=3, per_page=10))) as partner:
        report = harvest.run(store, Partner("p", partner.url), settings=FAST_HARVEST, stop=stop)
    assert report.outcome == "failed" and "stopped after a page" in (report.reason or ""), report.reason
    assert report.counts.pages == 1 and report.counts.received == 10
    checkpoint = harvest_state_of(store, "p").checkpoint
    assert checkpoint is not None and checkpoint["token"] == "t1"
    assert store.identifiers(source="p") == {f"oai:partner.example.org:0-{i}" for i in range(10) if i != 9}


def test_a_page_the_worker_cannot_convert_is_an_error_and_the_worker_goes_on(one_worker: Worker) -> None:
    with pytest.raises(err.WorkerError, match="could not convert a page: XMLSyntaxError"):
        within(submit(one_worker, b"<not xml", Partner("p", "http://127.0.0.1:1/oai")))
    body = PagedPartner([pages_of_every_kind(1)[0][:3]])({"verb": "ListRecords"}, 0).get_data()
    done = within(submit(one_worker, body, Partner("p", "http://127.0.0.1:1/oai")))
    assert [p.record.identifier for p in done.prepared] == [f"oai:partner.example.org:0-{i}" for i in range(3)]
    assert done.deleted == 0 and not done.failures


def test_what_the_worker_logs_is_logged_by_the_harvest(caplog: pytest.LogCaptureFixture) -> None:
    answer: Future[worker.Offloaded] = Future()
    answer.set_result(worker.Offloaded([], [], 0, [("oaiserver.records", logging.WARNING, "removed 1 character(s)")]))
    with caplog.at_level(logging.WARNING):
        received(answer)
    assert [(r.name, r.levelno, r.getMessage()) for r in caplog.records] == [
        ("oaiserver.records", logging.WARNING, "removed 1 character(s)")
    ]


def test_the_worker_exits_when_its_parent_is_killed(tmp_path: Path) -> None:
    script = tmp_path / "parent.py"
    script.write_text(
        textwrap.dedent(
            """
            import sys, time
            from harvester.pipeline import Worker
            w = Worker()
            print(w.process.pid, flush=True)
            time.sleep(60)
            """
        )
    )
    parent = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True)
    assert parent.stdout is not None
    pid = int(parent.stdout.readline())
    assert _running(pid)
    parent.send_signal(signal.SIGKILL)
    parent.wait()
    parent.stdout.close()
    deadline = time.monotonic() + 15
    while _running(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not _running(pid), "the worker outlived its parent"


def test_a_signal_to_the_harvest_s_process_group_leaves_its_worker_converting(tmp_path: Path) -> None:
    """Ctrl-C in a terminal, or `kill -TERM -PGID`, reaches the whole process group: the harvest
    finishes the page in hand, so its worker must go on, even when the signal comes while the
    worker is starting (it used to die then, and the run failed with "the harvest worker process
    ended (exit status -15)" instead of stopping after the page)."""
    body = PagedPartner([pages_of_every_kind(1)[0][:3]])({"verb": "ListRecords"}, 0).get_data()
    (tmp_path / "page.xml").write_bytes(body)
    script = tmp_path / "parent.py"
    script.write_text(
        textwrap.dedent(
            f"""
            import os, signal, threading
            from harvester.pipeline import Worker, received
            from oaiserver.config import Partner
            for sig in (signal.SIGINT, signal.SIGTERM):
                signal.signal(sig, lambda *_: None)  # the harvest's own handlers: stop after the page
            w = Worker()
            os.killpg(0, signal.SIGTERM)
            os.killpg(0, signal.SIGINT)
            body = open({str(tmp_path / "page.xml")!r}, "rb").read()
            done = received(w.submit(body, Partner("p", "http://127.0.0.1:1/oai"), "2024-05-01T12:00:00Z"))
            print(len(done.prepared), flush=True)
            w.close()
            print(w.process.returncode)
            """
        )
    )
    done = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=120, start_new_session=True
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["3", "0"], done.stderr
    assert "Traceback" not in done.stderr, done.stderr


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_harvester_run_stopped_by_a_signal_to_its_process_group_stops_after_a_page(
    tmp_path: Path, signum: signal.Signals
) -> None:
    """`harvester run` as a service manager or a terminal stops it: the signal reaches the
    process group just as the worker starts (the partner sends it when asked for page 2, which
    is asked for as page 1 goes to the worker: the list is announced big). The run stops after
    a page, its worker with it, and nothing but the stop is said on stderr: no traceback."""
    pages = pages_of_every_kind(n_pages=6, per_page=30)
    harvester: list[subprocess.Popen[str]] = []

    def answer(params: dict[str, str], n: int) -> Any:
        if params.get("resumptionToken") == "t1" and harvester:
            os.killpg(harvester[0].pid, signum)
        return PagedPartner(pages, announce=WORKER_FROM)(params, n)

    with FakePartner(answer) as partner:
        config = {
            **BASE_CONFIG,
            "storage": {"url": f"sqlite:///{tmp_path / 'store.sqlite3'}"},
            "partners": [{"name": "p", "base_url": partner.url}],
        }
        (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
        command = [sys.executable, "-m", "harvester.cli", "-c", str(tmp_path / "config.yaml"), "run"]
        process = subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True
        )
        harvester.append(process)
        out, errors = process.communicate(timeout=120)
    assert "stopped after a page, as asked" in out, (out, errors)
    assert "worker process ended" not in out, out
    assert "Traceback" not in errors, errors
    assert process.returncode == 1


def test_a_script_without_a_main_guard_harvests_through_the_worker(tmp_path: Path) -> None:
    """The worker is a plain child process: unlike a multiprocessing pool started by spawn, it
    never re-runs the caller's script."""
    target = tmp_path / "script.sqlite3"
    with FakePartner(PagedPartner(pages_of_every_kind(3))) as partner:
        script = tmp_path / "harvest_script.py"
        script.write_text(
            textwrap.dedent(
                f"""
                import logging
                from harvester import harvest
                logging.basicConfig(level=logging.INFO)
                from oaiserver.config import Partner
                from oaiserver.store import Store, harvest_state_of
                settings = harvest.HarvestSettings(worker_from=0)  # its pages go to the worker as a big list's do
                report = harvest.run(Store("sqlite:///{target}"), Partner("p", "{partner.url}"), settings=settings)
                print(report.outcome, report.counts.received)
                """
            )
        )
        done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["partial", "90"]
    assert "started the harvest worker process" in done.stderr
    engine = sa.create_engine(f"sqlite:///{target}")
    with engine.connect() as conn:
        assert conn.exec_driver_sql("SELECT count(*) FROM records").scalar_one() == 81
    engine.dispose()


def within(future: Future[worker.Offloaded], seconds: float = 60) -> Any:
    """`received`, bounded: a regression fails the test instead of hanging the suite."""
    stop = threading.Event()
    timer = threading.Timer(seconds, stop.set)
    timer.start()
    try:
        return received(future, stop, grace=0)
    finally:
        timer.cancel()


def _running(pid: int) -> bool:
    """Alive, and not a zombie waiting for whoever adopted it to reap it."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state != "Z"
