"""What runs in the harvest's worker process: ListRecords bodies in, their records prepared
for the store out (harvester.pipeline starts the process, feeds it and reads its answers).

The worker reads a request (partner, responseDate) and the page's body from its stdin, and
answers on its stdout: PART messages, each some of the page's records (`Wire` rows sent as
plain tuples, about PART_BYTES of text each: neither process ever holds a page's records pickled whole, and each
record is let go once sent), then DONE (what is left: failures, counts, logs) or FAILED (why
the page could not be converted). It ends when its input does: its parent closed it, or died.
"""

from __future__ import annotations

import gc
import logging
import os
import signal
from collections.abc import Callable
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import Any

from lxml import etree

from harvester.client import ITEMS, verbatim_items, xml_parser
from harvester.convert import convert_items, listed_at
from oaiserver.config import Partner
from oaiserver.records import OAI_NS
from oaiserver.rows import Wire, prepare

PART, DONE, FAILED = "part", "done", "failed"
# The records of a page are sent in parts of about this many bytes of text: a page's records
# pickled at once would be a second copy of them in each process (18 MB for a 6 MB page).
PART_BYTES = 1 << 20


# A Wire as it crosses the pipe: a plain tuple, made a Wire again on the other side
# (`Wire._make`). A NamedTuple pickles and unpickles through a Python call per row.
Sent = tuple[Any, ...]


@dataclass
class Offloaded:
    """A page's records as the worker sends them back: plain values, cheap to pickle."""

    records: list[Sent]  # gathered from the PART messages
    failures: list[tuple[str, str]]
    without_dc: int
    logs: list[tuple[str, int, str]]  # (logger, level, message) logged in the worker
    undoubled: list[str] = field(default_factory=list)  # as Converted's
    doubled: list[tuple[str, str]] = field(default_factory=list)


_logged: list[tuple[str, int, str]] = []


class _Keep(logging.Handler):
    def emit(self, record: logging.LogRecord) -> None:
        _logged.append((record.name, record.levelno, record.getMessage()))


def main() -> None:
    """The worker's loop: a page in, its records out, until its input ends."""
    # Ctrl-C and a service manager's SIGTERM are the harvest's process to act on: the worker
    # runs in a process group of its own, and ignores them from its first line on (_START).
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

    def send(part: list[Sent]) -> None:
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
    body: list[bytes], partner: Partner, response_date: str, send: Callable[[list[Sent]], None]
) -> Offloaded:
    """A ListRecords response's bytes to its records prepared for the store. The harvest's
    process parsed and checked the same bytes with the same parser already: a tree cannot cross
    a pipe, and that process needs the page's token before it can ask for the next one. This
    second parse is about 7 % of the worker's time (8 us a record of 113, on 500 records of
    750 bytes).

    The records go to `send` a part at a time, and what is done with is let go on the way:
    the body (handed over in a list, emptied here) once parsed, the tree once the records are
    read, each record once prepared. The page's copies are then never all alive at once."""
    _logged.clear()
    text = body.pop()
    root = etree.fromstring(text, xml_parser(lenient=False))
    container = root.find(f"{{{OAI_NS}}}ListRecords")
    items = container.findall(f"{{{OAI_NS}}}{ITEMS['ListRecords']}") if container is not None else []
    raw = verbatim_items(text, items, root.getroottree().docinfo.encoding)
    del text
    converted = convert_items(items, partner, harvest_date=response_date, raw=raw)
    del root, container, items, raw
    records, converted.records = converted.records, []
    records.reverse()  # taken from the end, each let go once prepared
    part: list[Sent] = []
    size = 0
    while records:
        record = records.pop()
        wire: Wire = prepare(record).to_wire(listed_at(record))
        part.append(tuple(wire))
        size += _size(wire)
        if size >= PART_BYTES:
            send(part)
            part, size = [], 0
    return Offloaded(
        part, converted.failures, converted.without_dc, list(_logged), converted.undoubled, converted.doubled
    )


def _size(values: tuple[Any, ...]) -> int:
    """The text a record's wire values carry, roughly what they pickle to."""
    return sum(len(v) if isinstance(v, str | bytes) else _size(v) if isinstance(v, tuple) else 8 for v in values)
