"""List pages converted in a worker process, so that a harvest uses two cores.

What a harvest does to a record is Python work: cut it out of the page verbatim, read its
Dublin Core, render our oai_dc and provenance, prepare its rows (`Store`'s `prepare`), and
write them. In one process these steps take turns on the interpreter lock; here the ones
before the write run in a worker process on page N+1 while the harvest writes page N.
Records come back as plain tuples (`Prepared.to_wire`), which pickle at a fifth of the cost
of records.

Only that conversion moves. Requests, retries, the checks on every response, the checkpoint
and the writes stay in the harvest's process, in page order, so a crash loses nothing and a
stop stops where it did before. What the worker logs (a character XML forbids, removed) is
logged again by the harvest's process. A worker that dies fails the run at hand like any
internal error and is replaced for the next one; one that loses its parent exits.
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
from collections import deque
from concurrent.futures import Future
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from lxml import etree

try:
    import fcntl
except ImportError:  # pragma: no cover - not on Windows
    fcntl = None  # type: ignore[assignment]

from harvester import errors as err
from harvester.client import ITEMS, OAI_NS, Page, xml_parser
from harvester.convert import Converted, convert_page
from oaiserver.config import Partner
from oaiserver.store import Prepared, prepare

log = logging.getLogger(__name__)


@dataclass
class Offloaded:
    """A page's records as the worker sends them back: plain values, cheap to pickle."""

    records: list[tuple[Any, ...]]  # Prepared.to_wire
    failures: list[tuple[str, str]]
    without_dc: int
    logs: list[tuple[str, int, str]]  # (logger, level, message) logged in the worker


def can_offload(page: Page, *, lenient: bool) -> bool:
    """Pages worth a worker: ListRecords with records, read by the strict parser (a repaired
    page stays here, where the repairs are known)."""
    return page.verb == "ListRecords" and bool(page.items) and not lenient and not page.repairs


def submit(page: Page, partner: Partner) -> Future[Offloaded]:
    """Convert `page` in the worker (started at the first page); its body is all that travels."""
    with _lock:
        global _worker
        if _worker is None or not _worker.alive:
            _worker = _Worker()
        return _worker.submit((page.body, partner, page.response_date))


def received(future: Future[Offloaded]) -> Converted:
    """The page's records, prepared for the store, once the worker is done with them."""
    done = future.result()
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
    """`python -m harvester.worker`, fed pages over its stdin and answering on its stdout, in
    order. A child process of our own rather than a multiprocessing pool: it never re-imports
    the caller's main module (a script without a `__main__` guard keeps working), nothing is
    forked from a process with threads, and it sees the end of its stdin when its parent dies,
    however that happens."""

    def __init__(self) -> None:
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join([str(_SOURCE), *filter(None, [env.get("PYTHONPATH")])])
        self.process = subprocess.Popen(
            [sys.executable, "-m", "harvester.worker"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env
        )
        assert self.process.stdin is not None and self.process.stdout is not None
        for pipe in (self.process.stdin, self.process.stdout):
            _widen(pipe.fileno())
        self.requests = Connection(os.dup(self.process.stdin.fileno()), readable=False)
        self.answers = Connection(os.dup(self.process.stdout.fileno()), writable=False)
        self.process.stdin.close()
        self.process.stdout.close()
        self.pending: deque[Future[Offloaded]] = deque()
        self.lock = threading.Lock()
        self.alive = True
        threading.Thread(target=self._read, name="harvest-worker-answers", daemon=True).start()
        log.info("started the harvest worker process (pid %d) to convert pages", self.process.pid)

    def submit(self, request: tuple[Any, ...]) -> Future[Offloaded]:
        future: Future[Offloaded] = Future()
        with self.lock:
            if not self.alive:
                raise err.WorkerError("the harvest worker process has stopped")
            self.pending.append(future)
            try:
                self.requests.send(request)
                return future
            except OSError as exc:
                gone = f"the harvest worker process is gone ({exc})"
        self._fail(gone)
        return future

    def _read(self) -> None:
        while True:
            try:
                ok, answer = self.answers.recv()
            except (EOFError, OSError):
                code = self.process.wait()
                self._fail(f"the harvest worker process ended (exit status {code})")
                return
            except Exception as exc:  # an answer that cannot be read: nothing after it can be trusted
                self._fail(f"an answer of the harvest worker could not be read ({type(exc).__name__}: {exc})")
                self.close()
                return
            with self.lock:
                future = self.pending.popleft()
            if ok:
                future.set_result(answer)
            else:
                future.set_exception(err.WorkerError(f"the harvest worker could not convert a page: {answer}"))

    def _fail(self, reason: str) -> None:
        with self.lock:
            self.alive = False
            pending, self.pending = list(self.pending), deque()
        for future in pending:
            if not future.done():
                future.set_exception(err.WorkerError(reason))

    def close(self) -> None:
        with self.lock:
            self.alive = False
        self.requests.close()  # the worker sees the end of its input and exits
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:  # pragma: no cover - a worker stuck in a page
            self.process.kill()
            self.process.wait()


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
_SOURCE = Path(__file__).resolve().parents[1]  # where `harvester` is imported from, for the worker
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
    while True:
        try:
            body, partner, response_date = requests.recv()
        except EOFError:
            return
        try:
            answer: tuple[bool, Any] = (True, convert_body(body, partner, response_date))
        except Exception as exc:  # sent back: the harvest fails the run with it
            answer = (False, f"{type(exc).__name__}: {exc}")
        answers.send(answer)


def convert_body(body: bytes, partner: Partner, response_date: str) -> Offloaded:
    """A ListRecords response's bytes to its records prepared for the store (in the worker).
    The harvest's process parsed and checked the same bytes with the same parser already."""
    _logged.clear()
    root = etree.fromstring(body, xml_parser(lenient=False))
    container = root.find(f"{{{OAI_NS}}}ListRecords")
    items = container.findall(f"{{{OAI_NS}}}{ITEMS['ListRecords']}") if container is not None else []
    page = Page("ListRecords", {}, 200, root, response_date, body=body, items=items)
    converted = convert_page(page, partner)
    records = [prepare(record).to_wire() for record in converted.records]
    return Offloaded(records, converted.failures, converted.without_dc, list(_logged))


if __name__ == "__main__":
    # Run as `python -m`, this file is `__main__`: what it sends must name the module's classes
    # by their importable name, so the loop runs in the module imported under its own name.
    from harvester.worker import main as run

    run()
