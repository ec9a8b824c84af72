"""What a running server answers from, kept current without a restart.

The store: a server started while its database is down, missing or unreachable starts anyway,
answers 503 with Retry-After, and opens the store as soon as it can (tried at most once a
RETRY seconds, by one thread at a time). The partners: the configuration file is checked on
each request (one stat) and its `partners` re-read when it has changed, so ListSets and the
home page follow config.yaml; the other keys take effect at the next start.
"""

from __future__ import annotations

import logging
import os
import secrets
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import replace
from pathlib import Path

import sqlalchemy as sa

from oaiserver import config as config_mod
from oaiserver.protocol import MetadataFormat, Repository
from oaiserver.store import Store, StoreUnavailable, open_store
from oaiserver.tokens import Tokens

log = logging.getLogger(__name__)
RETRY = 1.0  # seconds between attempts to open a store that is down

Stamp = tuple[int, int, int] | None


def token_secret(cfg: config_mod.Config, store: Store) -> str:
    """The configured secret, else one generated once and kept in the store, so every
    worker, instance and restart that shares the store accepts the same tokens."""
    return cfg.secret or store.ensure_setting("token_secret", secrets.token_urlsafe(32))


def stamp(path: Path | None) -> Stamp:
    """What tells a changed file: its inode, size and modification time."""
    if path is None:
        return None
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_ino, st.st_size, st.st_mtime_ns)


class Live:
    """The app's Repository, built once the store opens, its partners kept as the file says."""

    def __init__(
        self,
        cfg: config_mod.Config,
        formats: Mapping[str, MetadataFormat],
        store: Store | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.config = cfg  # what the app was started with: retry_after and the like, store or not
        self.formats = dict(formats)
        self.clock = clock
        self._repo: Repository | None = None
        self._opening = threading.Lock()
        self._next_try = 0.0
        self._failed = False  # an attempt to open the store failed: say so when one succeeds
        self._stamp = stamp(cfg.source)
        self._reading = threading.Lock()
        if store is not None:
            self._repo = self._build(store)
            return
        try:
            self._open()
        except StoreUnavailable as exc:
            log.error("%s: %s; answering 503 until it opens", config_mod.storage_key(), exc)

    def repository(self) -> Repository:
        """The Repository to answer from; StoreUnavailable while the store cannot be opened."""
        repo = self._repo or self._open()
        current = stamp(self.config.source)
        if current != self._stamp:
            repo = self._reread(current) or repo
        return repo

    def _build(self, store: Store) -> Repository:
        cfg = self.config
        try:
            tokens = Tokens(token_secret(cfg, store), cfg.token_lifetime)
        except sa.exc.SQLAlchemyError as exc:
            raise StoreUnavailable(f"cannot read the token secret: {exc.__class__.__name__}") from exc
        return Repository(config=cfg, store=store, tokens=tokens, formats=self.formats, sets=cfg.all_sets)

    def _open(self) -> Repository:
        if not self._opening.acquire(blocking=False):  # another thread is trying now
            raise StoreUnavailable("the store is being opened")
        try:
            if self._repo is not None:
                return self._repo
            if self.clock() < self._next_try:
                raise StoreUnavailable("the store could not be opened; trying again shortly")
            self._next_try = self.clock() + RETRY
            try:
                store = open_store(self.config.storage_url)
                try:
                    self._repo = self._build(store)
                except StoreUnavailable:
                    store.close()
                    raise
            except StoreUnavailable:
                self._failed = True
                raise
            if self._failed:
                log.info("%s: the store is open; serving", config_mod.storage_key())
            return self._repo
        finally:
            self._opening.release()

    def _reread(self, current: Stamp) -> Repository | None:
        """The Repository with the partners the file now names; None if another thread is
        reading it or it cannot be used (the last good partners stay, and it says why once)."""
        if self.config.source is None or not self._reading.acquire(blocking=False):
            return None
        try:
            self._stamp = current
            try:
                partners = config_mod.load(self.config.source).partners
            except config_mod.ConfigError as exc:
                log.warning("configuration not re-read, partners unchanged: %s", exc)
                return None
            if partners == self.config.partners:
                return None
            self.config = replace(self.config, partners=partners)
            log.info("configuration re-read: %d partner(s)", len(partners))
            if self._repo is None:  # built with them once the store opens
                return None
            self._repo = replace(self._repo, config=self.config, sets=self.config.all_sets)
            return self._repo
        finally:
            self._reading.release()
