"""List pages converted in a worker process, so that a harvest uses two cores.

What a harvest does to a record is Python work: cut it out of the page verbatim, read its
Dublin Core, render our oai_dc and provenance, prepare its rows (`oaiserver.rows`), and
write them. In one process these steps take turns on the interpreter lock; here the ones
before the write run in a worker process on page N+1 while the harvest writes page N.
Records come back as plain tuples (`Prepared.to_wire`), which pickle at a fifth of the cost
of records, a part at a time (about PART_BYTES each): neither process ever holds a page's
records pickled whole, and the worker lets each record go once it is sent. A page's body goes
as it is, not pickled (a pickle would be one more copy of it on each side).

Only that conversion moves. Requests, retries, the checks on every response, the checkpoint
and the writes stay in the harvest's process, in page order, so a crash loses nothing and a
stop stops where it did before. What the worker logs (a character XML forbids, removed) is
logged again by the harvest's process. A worker that dies fails the pages it held, so the run
fails (the next one resumes at its checkpoint), and the next page sent starts a new worker; a
worker whose parent dies exits.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any

from lxml import etree

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows has no fcntl
    fcntl = None  # type: ignore[assignment]

from harvester import errors as err
from harvester.client import ITEMS, Page, xml_parser
from harvester.convert import Converted, convert_page
from oaiserver.config import Partner
from oaiserver.records import OAI_NS
from oaiserver.rows import Prepared, prepare

log = logging.getLogger(__name__)


# What the worker answers for a page: PART messages, each some of its records, then DONE
# (what is left: failures, counts, logs) or FAILED (why it could not be converted).
PART, DONE, FAILED = "part", "done", "failed"
# The records of a page are sent in parts of about this many bytes of text: a page's records
# pickled at once would be a second copy of them in each process (18 MB for a 6 MB page).
PART_BYTES = 1 << 20


@dataclass
class Offloaded:
    """A page's records as the worker sends them back: plain values, cheap to pickle."""

    records: list[tuple[Any, ...]]  # Prepared.to_wire, gathered from the PART messages
    failures: list[tuple[str, str]]
    without_dc: int
    logs: list[tuple[str, int, str]]  # (logger, level, message) logged in the worker


def can_offload(page: Page, *, lenient: bool) -> bool:
    """Pages worth a worker: ListRecords with records, read by the strict parser (a repaired
    page stays here, where the repairs are known)."""
    return page.verb == "ListRecords" and bool(page.items) and not lenient and not page.repairs


def submit(page: Page, partner: Partner) -> Future[Offloaded]:
    """Convert `page` in the worker (started with the first page sent); its body is all that
    travels."""
    with _lock:
        global _worker
        if _worker is None or not _worker.alive:
            _worker = _Worker()
        current = _worker
    return current.submit(page.body, (partner, page.response_date))


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
    for name, level, message in done.logs:
        logging.getLogger(name).log(level, "%s", message)
    return Converted(
        failures=done.failures,
        without_dc=done.without_dc,
        prepared=[Prepared.from_wire(values) for values in done.records],
    )


def shutdown() -> None:
    """Stop the worker, if one runs (a process that exits stops its worker too)."""
    with _lock:
        global _worker
        current, _worker = _worker, None
    if current is not None:
        current.close()


class _Worker:
    """A child process running `main`, fed pages on its stdin and answering on its stdout, in
    order. A process of our own rather than a multiprocessing pool: it never re-runs the
    caller's main module (a script without a `__main__` guard keeps working), nothing is
    forked from a process with threads, and it sees the end of its stdin when its parent dies,
    however that happens. It imports from the parent's `sys.path`, so both run the same code.

    Two locks, so that no thread ever blocks on the pipe while holding what the thread reading
    the answers needs: `sending` keeps one request on the pipe at a time, in the order of
    `pending`; `lock` guards `pending` and `alive` and is only held for a moment.
    """

    def __init__(self) -> None:
        env = {**os.environ, _PATH: os.pathsep.join(sys.path)}
        self.process = subprocess.Popen(
            [sys.executable, "-c", _START], stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env
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

    def submit(self, body: bytes, request: tuple[Any, ...]) -> Future[Offloaded]:
        """`request` pickled, then `body` as it is (send_bytes copies nothing)."""
        future: Future[Offloaded] = Future()
        with self.sending:
            with self.lock:
                if not self.alive:
                    raise err.WorkerError("the harvest worker process has stopped")
                self.pending.append(future)
            try:
                self.requests.send(request)
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
        ended = False
        records: list[tuple[Any, ...]] = []  # the parts of the page at the head of `pending`
        while True:
            try:
                kind, answer = self.answers.recv()
            except EOFError:
                self._fail(f"the harvest worker process ended (exit status {self.process.wait()})")
                ended = True
                break
            except Exception as exc:  # an answer that cannot be read: nothing after it can be trusted
                self._fail(f"an answer of the harvest worker could not be read ({type(exc).__name__}: {exc})")
                break
            with self.lock:
                future = self.pending[0] if self.pending else None
                if future is not None and kind != PART:
                    self.pending.popleft()
            if future is None:  # an answer to a page that was given up: out of step from here on
                self._fail("the harvest worker answered a page it was not asked for")
                break
            if kind == PART:
                records += answer
                continue
            if kind == DONE:  # with the last part
                records += answer.records
                answer.records = records
                future.set_result(answer)
            else:
                future.set_exception(err.WorkerError(f"the harvest worker could not convert a page: {answer}"))
            records = []
        if not ended:  # it may be alive and blocked on the pipe: a sender waiting on it then lets go
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


_PATH = "OAI_HARVEST_WORKER_PATH"
_START = (
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
_lock = threading.Lock()
_worker: _Worker | None = None


# ---- in the worker process ---------------------------------------------------------------------

_logged: list[tuple[str, int, str]] = []


class _Keep(logging.Handler):
    def emit(self, record: logging.LogRecord) -> None:
        _logged.append((record.name, record.levelno, record.getMessage()))


def main() -> None:
    """The worker's loop: a page in, its records out, until its input ends."""
    # Ctrl-C and a service manager's SIGTERM reach the whole process group: the harvest's
    # process decides when to stop, and its worker exits when that process's end of the pipe
    # closes (a normal exit, or a kill).
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    requests = Connection(os.dup(0), writable=False)
    answers = Connection(os.dup(1), readable=False)
    os.dup2(2, 1)  # a stray print must not corrupt the answers
    root = logging.getLogger()
    root.handlers[:] = [_Keep()]
    root.setLevel(logging.INFO)
    # What start-up made lives as long as the worker: out of the collector's sight, so that its
    # collections walk one page's objects only (7 % of the worker's CPU, measured).
    gc.freeze()

    def send(part: list[tuple[Any, ...]]) -> None:
        answers.send((PART, part))

    while True:
        try:
            partner, response_date = requests.recv()
            body = [requests.recv_bytes()]
        except (EOFError, OSError):  # the end of the input, or its end in the middle of a page
            return
        try:
            answer: tuple[str, Any] = (DONE, convert_body(body, partner, response_date, send))
        except Exception as exc:  # sent back: the harvest fails the run with it
            answer = (FAILED, f"{type(exc).__name__}: {exc}")
        try:
            answers.send(answer)
        except OSError:  # the harvest's process has gone
            return


def convert_body(
    body: list[bytes], partner: Partner, response_date: str, send: Callable[[list[tuple[Any, ...]]], None]
) -> Offloaded:
    """A ListRecords response's bytes to its records prepared for the store (in the worker).
    The harvest's process parsed and checked the same bytes with the same parser already.

    The records go to `send` a part at a time, and what is done with is let go on the way:
    the body (handed over in a list, emptied here) once parsed, the tree once the records are
    read, each record once prepared. The page's copies are then never all alive at once."""
    _logged.clear()
    root = etree.fromstring(body[0], xml_parser(lenient=False))
    container = root.find(f"{{{OAI_NS}}}ListRecords")
    items = container.findall(f"{{{OAI_NS}}}{ITEMS['ListRecords']}") if container is not None else []
    page = Page("ListRecords", {}, 200, root, response_date, body=body.pop(), items=items)
    converted = convert_page(page, partner)
    del page, root, container, items
    records, converted.records = converted.records, []
    records.reverse()  # taken from the end, each let go once prepared
    part: list[tuple[Any, ...]] = []
    size = 0
    while records:
        wire = prepare(records.pop()).to_wire()
        part.append(wire)
        size += _size(wire)
        if size >= PART_BYTES:
            send(part)
            part, size = [], 0
    return Offloaded(part, converted.failures, converted.without_dc, list(_logged))


def _size(values: tuple[Any, ...]) -> int:
    """The text a record's wire values carry, roughly what they pickle to."""
    return sum(len(v) if isinstance(v, str | bytes) else _size(v) if isinstance(v, tuple) else 8 for v in values)
