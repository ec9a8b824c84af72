"""Landing URLs (a local record's dc:identifier, `Config.landing_url`) when the site moves.

The site's address belongs to the deployment (`repository.base_url`), not to the record, so a
move is no change to the records: their datestamps stay and harvesters fetch nothing again.
Records are stored as they are served (a list page is their stored bytes joined, nothing more),
with the landing URL of the site they were ingested under; the store remembers that site
(setting `landing_site`). Two steps follow a move:

* serving: while the stored site is not the configured one, each answer that carries records
  has the stored site's landing URLs rewritten to the configured one (one bytes.replace a page,
  only in that state: otherwise serving does no work for landing URLs at all);
* ingest: rewrites every local record's landing URL to the configured site, in place, under its
  own datestamp, and records the site; then serving is back to copying stored bytes.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from oaiserver.config import Config
from oaiserver.oai_dc import PREFIX
from oaiserver.records import DCValue, Record
from oaiserver.store import Store, iter_records
from oaiserver.xmltext import text

log = logging.getLogger(__name__)

SETTING = "landing_site"  # the site the stored landing URLs point to
RECHECK = 10.0  # seconds a server process trusts what it last read of SETTING


def _prefix(site: str) -> str:
    return f"<dc:identifier>{text(site)}/records/"


def relocate(body: bytes, moved: tuple[str, str]) -> bytes:
    """Landing URLs of site `moved[0]` in `body` made those of `moved[1]`. `<` is escaped in
    any other text, so only dc:identifier elements can match."""
    old, new = moved
    return body.replace(_prefix(old).encode(), _prefix(new).encode())


def relocate_text(fragment: str, moved: tuple[str, str] | None) -> str:
    return fragment if moved is None else fragment.replace(_prefix(moved[0]), _prefix(moved[1]))


class StoredSite:
    """Per server process: the site the stored landing URLs point to, re-read every RECHECK
    seconds (an ingest elsewhere changes it), and whether answers must be rewritten."""

    def __init__(self, store: Store, clock: Callable[[], float] = time.monotonic) -> None:
        self.store = store
        self.clock = clock
        self.site: str | None = None
        self.checked = -RECHECK
        self.lock = threading.Lock()

    def moved(self, site: str) -> tuple[str, str] | None:
        """(stored site, `site`) when they differ; None when nothing is to be rewritten."""
        now = self.clock()
        if now - self.checked >= RECHECK:
            with self.lock:
                if now - self.checked >= RECHECK:
                    self.site = self.store.setting(SETTING)
                    self.checked = now
        stored = self.site
        return None if stored is None or stored == site else (stored, site)


def _moved_copy(cfg: Config, record: Record) -> Record | None:
    """The record with its landing URL on the configured site, or None if it is there already
    (or has none: a withdrawn record, one ingested under another identifier scheme)."""
    fragment = record.metadata.get(PREFIX)
    if record.deleted or not fragment:
        return None
    url = cfg.landing_url(record.identifier)
    path = url[len(cfg.site_url) :]
    if f"<dc:identifier>{text(url)}</dc:identifier>" in fragment:
        return None
    end = f"{text(path)}</dc:identifier>"
    start = fragment.find("<dc:identifier>")
    while start >= 0:
        stop = fragment.find("</dc:identifier>", start) + len("</dc:identifier>")
        element = fragment[start:stop]
        if element.endswith(end) and "://" in element:
            old_url = element[len("<dc:identifier>") : -len("</dc:identifier>")]
            record.metadata = {
                **record.metadata,
                PREFIX: fragment.replace(element, f"<dc:identifier>{text(url)}</dc:identifier>"),
            }
            record.dc = [DCValue(v.element, url, v.lang) if text(v.value) == old_url else v for v in record.dc]
            return record
        start = fragment.find("<dc:identifier>", stop)
    return None


def follow(cfg: Config, store: Store) -> int:
    """Move every local record's landing URL to the configured site, keeping datestamps (what
    changed is the site, not the record); returns how many moved. Done once per move: the
    store remembers the site."""
    site = cfg.site_url
    if store.setting(SETTING) == site:
        return 0
    moved = [copy for r in iter_records(store) if r.source == "local" and (copy := _moved_copy(cfg, r)) is not None]
    if moved:
        store.write(moved, keep_datestamps=True)
        log.info("landing URLs of %d record(s) moved to %s, datestamps kept", len(moved), site)
    store.put_setting(SETTING, site)
    return len(moved)
