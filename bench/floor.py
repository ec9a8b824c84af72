"""The floor under the server's CPU: what a full ListRecords harvest costs without HTTP.

The same rows the harvest serves (each record's stored `<record>` element, `formats.record` for
oai_dc), read from the same store through the store's own page read, in key order, a page of the
server's size at a time, and each page's bytes gzipped as the server gzips them (the same function,
level 1). No Flask, no gunicorn, no envelope, no token: what remains is the least a server of
this store must spend, so the server's CPU per 1,000 records over this is its overhead."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path


@dataclass
class Floor:
    records: int
    pages: int
    cpu_s: float  # this thread's CPU time, reading and gzipping
    read_s: float  # of which reading the rows
    raw_bytes: int
    gzip_bytes: int

    @property
    def ms_per_1k(self) -> float:
        return self.cpu_s * 1e6 / self.records

    @property
    def read_ms_per_1k(self) -> float:
        return self.read_s * 1e6 / self.records


def floor_walk(db: Path, page_size: int, prefix: str = "oai_dc") -> Floor:
    """One walk over the whole list in `prefix`, as a harvest pages it; CPU by `time.thread_time`
    (this thread only: the benchmark's other threads are idle meanwhile, but are not counted)."""
    from oaiserver.records import ListQuery
    from oaiserver.store import Store
    from oaiserver.web import gzip_compress

    store = Store(f"sqlite:///{db}")
    try:
        store.page_rendered(ListQuery(prefix), None, 1, with_metadata=True)  # open the connection
        query = ListQuery(prefix)
        after: tuple[int, str] | None = None
        records = pages = raw = packed = 0
        read = 0.0
        started = time.thread_time()
        while True:
            t = time.thread_time()
            rows = store.page_rendered(query, after, page_size, with_metadata=True)
            read += time.thread_time() - t
            if not rows:
                break
            body = b"".join([r.xml for r in rows])
            raw += len(body)
            packed += len(gzip_compress(body, compresslevel=1))
            records += len(rows)
            pages += 1
            after = (rows[-1].datestamp, rows[-1].identifier)
        cpu = time.thread_time() - started
    finally:
        store.close()
    return Floor(records, pages, cpu, read, raw, packed)
