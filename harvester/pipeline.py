"""The path of a harvested page, from its request to its rows, and all of a harvest's threads
and processes.

    Pipeline.pages(client, ...)                 a run's lists, one after the other
      fetch      Client.pages: the request, its retries, the checks, one parse   fetch-ahead thread
      convert    here (convert_page), or the body handed to the worker process   fetch-ahead thread
      receive    the records, in page order (from the worker: its answers)       the caller's thread
      -> Ready   which the caller (harvest._Run._commit) writes with its checkpoint, in one transaction

Concurrency, all of it in this module:

* The fetch-ahead thread (one per list) asks for the next pages while the caller writes this
  one, `ahead` pages at most, and only while the pages held weigh less than AHEAD_BUDGET (or
  the caller waits): the partner's time and ours overlap. Nothing is committed ahead: the
  caller checkpoints a token only with the page it came with. A caller that leaves the list
  cancels the request under way.
* The worker process (one per Pipeline, so one per run; closed with the Pipeline) converts
  the pages of a big list on the other core, page N+1 while the caller writes page N: 1.3
  times the records a second when that core is free (11,482 against 8,664), for a quarter
  more CPU a record (the body is parsed again there, 7 % of the worker's time; the records
  cross a pipe). Starting it costs about 0.3 s of CPU (an interpreter, lxml, our modules),
  what converting a few thousand records here costs: it is started only once a run's list
  goes on (a token) and is big, announced (completeListSize) or received so far at
  WORKER_FROM records or more. Small partners, an aggregator's usual ones, are converted
  here: 60 partners of 20 records took 88.7 s and 19.5 s of CPU with a worker each, 19.1 s
  and 2.3 s without. Its code is
  harvester.worker; the thread reading its answers is here. Only the page's body travels,
  and records come back as `Wire` rows, a part at a time. A repaired page (the quirk
  lenient_xml) stays here, where the repairs are known.
* A worker that dies, or cannot convert a page, fails the pages it held (WorkerError: the run
  fails, the next one resumes at its checkpoint); the next page sent starts a new worker. A
  stop (SIGTERM) finishes the page in hand; a worker that has not answered `grace` seconds
  after it is given up on (Stopped). The worker runs in a process group of its own and
  ignores SIGINT and SIGTERM: the harvest's process decides when to stop, and its worker
  exits when that process's end of the pipe closes (a normal exit, or a kill).
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Generic, TypeVar

from lxml import etree

from harvester import errors as err
from harvester.client import Client, Page
from harvester.convert import Converted, convert_page
from harvester.transport import MB
from harvester.worker import DONE, PART, Offloaded, Sent
from oaiserver.config import Partner
from oaiserver.records import OAI_NS
from oaiserver.rows import Prepared, Wire

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows has no fcntl
    fcntl = None  # type: ignore[assignment]

log = logging.getLogger(__name__)

AHEAD_BUDGET = 64 * MB  # pages are asked for ahead while the pages held weigh less than this
# A run's pages go to the worker process from the page whose list is announced (completeListSize)
# or has been received at this many records: below it, the process start costs more than it saves.
WORKER_FROM = 5000
# The identifiers of a ListRecords page, in one call (under 1 us a record with ListWatch.see).
_IDENTIFIERS = etree.XPath(
    "o:ListRecords/o:record/o:header/o:identifier/text()", namespaces={"o": OAI_NS}, smart_strings=False
)


@dataclass(frozen=True)
class Ready:
    """A page whose records are ready to be written: what the caller commits."""

    page: Page  # its token and dates; without its body and tree if the worker converted it
    received: int  # the records it held
    identifiers: list[str]  # for the loop watch (harvester.loops)
    converted: Converted
    skipped: int = 0  # records listed that we hold as listed, not asked for (harvester.identifiers)
    datestamps: list[str] | None = None  # as listed, when its headers are at hand (harvester.identifiers)


@dataclass(frozen=True)
class _Sent:
    """A page on its way: converted here already, or its records still to come from the worker."""

    page: Page
    received: int
    identifiers: list[str]
    records: Converted | Future[Offloaded]


class Pipeline:
    """A run's pages on their way to the store, and the worker process that converts them.
    A context manager: the worker, if one was started, is closed at the end."""

    def __init__(
        self,
        partner: Partner,
        *,
        stop: threading.Event,
        worker: bool = True,
        worker_from: int = WORKER_FROM,
        lenient: bool = False,
        grace: float = 30.0,
    ) -> None:
        """`worker`: big lists of more than one page are converted in a worker process, from
        the page that shows the run's list announced or received at `worker_from` records;
        `lenient`: the partner's pages are read by the lenient parser (they are then converted
        here); `grace`: how long a stop waits for the worker to finish the page in hand."""
        self.partner, self.stop, self.grace = partner, stop, grace
        self.offloading = worker and not lenient  # pages may go to the worker process
        self.worker_from = worker_from
        self.received = 0  # records the run's pages have held so far
        self.handing = False  # the run has met a big list of more than one page: its pages go to the worker
        self.worker: Worker | None = None
        self.closed = False
        self.lock = threading.Lock()  # a fetch-ahead thread may start a worker as the run closes the pipeline

    def __enter__(self) -> Pipeline:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the worker, once it has finished the pages it holds; none is started after."""
        with self.lock:
            self.closed, worker = True, self.worker
        if worker is not None:
            worker.close()

    def pages(self, client: Client, *, token: str | None, **args: str) -> Iterator[Ready]:
        """A list's pages (ListRecords with `args`, from `token` if given), ready to be written,
        in order. With a worker converting, two pages ahead keep it busy while this one is written."""

        def sent(cancel: threading.Event) -> Iterator[_Sent]:
            for page in client.pages("ListRecords", token=token, cancel=cancel, **args):
                yield self._convert(page)

        ahead = 2 if self.offloading else 1
        for item in fetched_ahead(sent, ahead=ahead, stop=self.stop, weight=lambda s: s.page.weight):
            records = item.records
            if isinstance(records, Future):
                records = received(records, self.stop, grace=self.grace)
            yield Ready(item.page, item.received, item.identifiers, records)

    def _convert(self, page: Page) -> _Sent:
        """On the fetch-ahead thread: convert the page here, or hand it to the worker once the
        list turns out to have more than one page and to be big (`worker_from`). A page handed
        over is shed (its body and tree let go): only what the harvest still reads of it is kept."""
        identifiers = _IDENTIFIERS(page.root) if page.items and page.root is not None else []
        self.received += len(page.items)
        self.handing = self.handing or (self.offloading and page.token is not None and self._big(page))
        if not (self.handing and page.items and not page.repairs):
            return _Sent(page, len(page.items), identifiers, convert_page(page, self.partner))
        with self.lock:
            if self.closed:  # a page asked for ahead, arriving once the run has ended
                raise err.Stopped("the harvest's pipeline is closed")
            if self.worker is None or not self.worker.alive:
                self.worker = Worker()
            worker = self.worker
        future = worker.submit(page.body, self.partner, page.response_date)
        sent = _Sent(page, len(page.items), identifiers, future)
        page.shed()
        return sent

    def _big(self, page: Page) -> bool:
        """Whether the run's list is worth the worker's start: announced or received at `worker_from`."""
        return max(page.complete_list_size or 0, self.received) >= self.worker_from


# ---- fetching ahead --------------------------------------------------------------------------

T = TypeVar("T")


def fetched_ahead(
    source: Callable[[threading.Event], Iterator[T]],
    *,
    ahead: int,
    stop: threading.Event,
    weight: Callable[[T], int],
) -> Iterator[T]:
    """The items of `source(cancel)`, taken from it on a thread of their own, up to `ahead`
    items before the caller asks for them, and only while those held (the caller's last and
    the ones waiting) weigh less than AHEAD_BUDGET, or when the caller waits: heavy pages are
    then held two at a time at most. `cancel` is set when the caller leaves. A stop ends the
    items with Stopped: a list stopped is not complete, and must not look it."""
    feed = _Ahead(source, ahead, stop, weight)
    threading.Thread(target=feed.run, name="oai-prefetch", daemon=True).start()
    try:
        yield from feed.items()
    finally:
        feed.leave()


_END = object()


class _Ahead(Generic[T]):
    def __init__(
        self,
        source: Callable[[threading.Event], Iterator[T]],
        ahead: int,
        stop: threading.Event,
        weight: Callable[[T], int],
    ) -> None:
        self.source, self.ahead, self.stop, self.weight = source, max(ahead, 1), stop, weight
        self.ready: queue.SimpleQueue[T | BaseException | object | None] = queue.SimpleQueue()
        self.cancel = threading.Event()
        self.scale = threading.Condition()
        self.waiting, self.queued, self.held = False, 0, 0  # items queued, and the weight of those held

    def run(self) -> None:
        """The thread: the source's items, one at a time, each when there is room for it."""
        try:
            items = self.source(self.cancel)
            while self._room():
                item = next(items, _END)
                if item is _END:
                    self.ready.put(_END)
                    return
                with self.scale:  # the caller, if it waited, waits no more
                    self.queued, self.waiting = self.queued + 1, False
                    self.held += self.weight(item)  # type: ignore[arg-type]
                self.ready.put(item)
            self.ready.put(None)
        except BaseException as exc:
            self.ready.put(exc)

    def _room(self) -> bool:
        """Wait until an item may be taken ahead; False when the caller left or a stop came."""

        def room() -> bool:
            if self.cancel.is_set() or self.stop.is_set():
                return True
            return self.queued < self.ahead and (self.held < AHEAD_BUDGET or self.waiting)

        with self.scale:
            while not self.scale.wait_for(room, timeout=0.1):  # a stop does not notify: looked at each 0.1 s
                pass
        return not (self.cancel.is_set() or self.stop.is_set())

    def items(self) -> Iterator[T]:
        last = 0  # the weight of the item the caller holds
        while True:
            with self.scale:
                self.waiting, self.held = True, self.held - last
                self.scale.notify_all()
            item = self.ready.get()
            if item is _END:
                return
            if item is None:
                raise err.Stopped("stopped after a page, as asked")
            if isinstance(item, BaseException):
                raise item
            with self.scale:
                self.queued -= 1
            last = self.weight(item)  # type: ignore[arg-type]
            yield item  # type: ignore[misc]

    def leave(self) -> None:
        self.cancel.set()
        with self.scale:
            self.scale.notify_all()


# ---- the worker process ----------------------------------------------------------------------


def received(future: Future[Offloaded], stop: threading.Event | None = None, *, grace: float = 30.0) -> Converted:
    """The page's records, prepared for the store, once the worker is done with them.

    A stop (SIGTERM) does not drop the page in hand: it is finished, so that the caller writes
    and checkpoints it, as a page converted in-process would be. Only a worker that has not
    answered `grace` seconds after the stop is given up on (Stopped: the page is then neither
    written nor checkpointed, and the next run asks for it again)."""
    stopped_at: float | None = None
    while True:
        try:
            done = future.result(timeout=0.1 if stopped_at is not None else 0.5)
            break
        except TimeoutError:
            if stop is None or not stop.is_set():
                continue
            now = time.monotonic()
            stopped_at = now if stopped_at is None else stopped_at
            if now - stopped_at >= grace:
                raise err.Stopped(
                    f"stopped: the harvest worker did not finish the page within {grace:g} s of the stop"
                ) from None
    for name, level, message in done.logs:  # what the worker logged (a character XML forbids, removed)
        logging.getLogger(name).log(level, "%s", message)
    wires = [Wire._make(values) for values in done.records]
    return Converted(
        failures=done.failures,
        without_dc=done.without_dc,
        prepared=[Prepared.from_wire(w) for w in wires],
        listed=[w.listed for w in wires],
        undoubled=done.undoubled,
        doubled=done.doubled,
    )


class Worker:
    """A child process running `harvester.worker.main`, fed pages on its stdin and answering
    on its stdout, in order. A process of our own rather than a multiprocessing pool: it never
    re-runs the caller's main module (a script without a `__main__` guard keeps working),
    nothing is forked from a process with threads, and it sees the end of its stdin when its
    parent dies, however that happens. It imports from the parent's `sys.path`, so both run
    the same code.

    Two locks, so that no thread ever blocks on the pipe while holding what the thread reading
    the answers needs: `sending` keeps one request on the pipe at a time, in the order of
    `pending`; `lock` guards `pending` and `alive` and is only held for a moment.
    """

    def __init__(self) -> None:
        env = {**os.environ, _PATH: os.pathsep.join(sys.path)}
        self.process = subprocess.Popen(
            [sys.executable, "-c", _START], stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env, process_group=0
        )
        assert self.process.stdin is not None and self.process.stdout is not None
        for pipe in (self.process.stdin, self.process.stdout):
            _widen(pipe.fileno())
        self.requests = Connection(os.dup(self.process.stdin.fileno()), readable=False)
        self.answers = Connection(os.dup(self.process.stdout.fileno()), writable=False)
        self.process.stdin.close()
        self.process.stdout.close()
        self.pending: deque[Future[Offloaded]] = deque()
        self.sending = threading.Lock()
        self.lock = threading.Lock()
        self.alive = True
        threading.Thread(target=self._read, name="harvest-worker-answers", daemon=True).start()
        log.info("started the harvest worker process (pid %d) to convert pages", self.process.pid)

    def submit(self, body: bytes, partner: Partner, response_date: str) -> Future[Offloaded]:
        """The page's records to come: (partner, response_date) pickled, then `body` as it is
        (send_bytes copies nothing)."""
        future: Future[Offloaded] = Future()
        with self.sending:
            with self.lock:
                if not self.alive:
                    raise err.WorkerError("the harvest worker process has stopped")
                self.pending.append(future)
            try:
                self.requests.send((partner, response_date))
                self.requests.send_bytes(body)
                return future
            except BaseException as exc:
                # Part of a request may be on the pipe: nothing after it would be read in step.
                failure = exc
                self._fail(self._why(exc))
                self.requests.close()  # under `sending`, so no other send is using it
        self._reap()
        if not isinstance(failure, Exception):
            raise failure
        return future

    def _why(self, exc: BaseException) -> str:
        if isinstance(exc, OSError):  # a broken pipe: the worker has ended
            with contextlib.suppress(subprocess.TimeoutExpired):
                return f"the harvest worker process ended (exit status {self.process.wait(1)})"
        return f"a page could not be sent to the harvest worker ({type(exc).__name__}: {exc})"

    def _read(self) -> None:
        """The thread reading the answers: each page's parts gathered, its future settled."""
        records: list[Sent] = []  # the parts of the page at the head of `pending`
        why = None
        while why is None:
            try:
                kind, answer = self.answers.recv()
            except EOFError:
                why = f"the harvest worker process ended (exit status {self.process.wait()})"
                break
            except Exception as exc:  # an answer that cannot be read: nothing after it can be trusted
                why = f"an answer of the harvest worker could not be read ({type(exc).__name__}: {exc})"
                continue
            with self.lock:
                future = self.pending[0] if self.pending else None
                if future is not None and kind != PART:
                    self.pending.popleft()
            if future is None:  # an answer to a page that was given up: out of step from here on
                why = "the harvest worker answered a page it was not asked for"
            elif kind == PART:
                records += answer
            else:
                _settle(future, kind, answer, records)
                records = []
        self._fail(why)
        if self.process.poll() is None:  # it may be alive and blocked on the pipe: a sender waiting on it then lets go
            self.process.kill()
        self.close()
        self.answers.close()

    def _fail(self, reason: str) -> None:
        """Every page still expected fails with `reason`, and no more are taken."""
        with self.lock:
            self.alive = False
            pending, self.pending = list(self.pending), deque()
        for future in pending:
            if not future.done():
                future.set_exception(err.WorkerError(reason))

    def close(self) -> None:
        """The worker sees the end of its input, finishes the page in hand, and exits."""
        with self.lock:
            self.alive = False
        with self.sending:  # closed only between sends, and once: a closed descriptor's number is reused
            self.requests.close()
        self._reap()

    def _reap(self) -> None:
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:  # stuck in a page
            self.process.kill()
            self.process.wait()


def _settle(future: Future[Offloaded], kind: str, answer: Offloaded | str, records: list[Sent]) -> None:
    """A page's last answer: DONE, with the last of its records, or why it failed."""
    if kind == DONE and isinstance(answer, Offloaded):
        answer.records = records + answer.records
        future.set_result(answer)
    else:
        future.set_exception(err.WorkerError(f"the harvest worker could not convert a page: {answer}"))


_PATH = "OAI_HARVEST_WORKER_PATH"
# Signals ignored first: a Ctrl-C or SIGTERM that comes while the worker imports would kill it,
# and with it the pages it holds.
_START = (
    "import signal; signal.signal(signal.SIGINT, signal.SIG_IGN); signal.signal(signal.SIGTERM, signal.SIG_IGN); "
    f"import os, sys; sys.path[:] = os.environ.pop({_PATH!r}).split(os.pathsep); "
    "from harvester.worker import main; main()"
)


def _widen(fd: int) -> None:
    """A pipe of 1 MiB rather than 64 KiB where the system allows (Linux): a page (about 1 MB
    in, 3 MB out) then crosses in a few reads instead of dozens, and each read of the answers
    waits its turn for the interpreter lock while the harvest writes."""
    size = getattr(fcntl, "F_SETPIPE_SZ", None) if fcntl is not None else None
    if size is None:
        return
    with contextlib.suppress(OSError):  # above /proc/sys/fs/pipe-max-size: the default works, slower
        fcntl.fcntl(fd, size, _PIPE_SIZE)


_PIPE_SIZE = 1 << 20
