"""Opening a database: the engine for a URL (SQLite's set-up, PostgreSQL's driver), and the
errors that say, on one line, why a store cannot be opened."""

from __future__ import annotations

import errno
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine


class StoreUnavailable(Exception):
    """The store cannot be opened (a folder that cannot be written, a file that is not a
    database, a server that does not answer): the message says which store and why, on one line."""


class StoreNotOpen(StoreUnavailable):
    """A store named rightly that cannot be opened now (a server down, a database or folder not
    there yet): a server waits for it, answering 503, where a wrong URL stops it."""


class StoreTooNew(StoreUnavailable):
    """The store has a schema newer than this version knows: it is left as it is, unread."""


def _sqlite_path(url: sa.URL) -> None:
    if url.database and url.database != ":memory:" and not url.database.startswith("file:"):
        folder = Path(url.database).parent
        if folder.exists() and not folder.is_dir():
            raise NotADirectoryError(errno.ENOTDIR, "not a folder", str(folder))
        folder.mkdir(parents=True, exist_ok=True)


def _cause(exc: BaseException) -> str:
    """An error's own words, on one line: the driver's message, or the system's."""
    if isinstance(exc, sa.exc.DBAPIError) and exc.orig is not None:
        text = str(exc.orig)
    elif isinstance(exc, OSError) and exc.strerror:
        text = f"{exc.strerror}: {exc.filename}" if exc.filename else exc.strerror
    else:
        text = str(exc)
    lines = text.strip().splitlines()
    return " ".join(lines[0].split()) if lines else type(exc).__name__


# The sqlite3 driver binds str, int and float at once, but looks every other value up as a
# candidate for adaptation, by attribute lookups that fail (an exception made and dropped each
# time): a write binds a None, a bool or bytes five times a record or more. Adapters that
# return the value as it binds anyway make that one dictionary lookup (3 % of the instructions
# of a bulk load). Registered only where the process has no adapter of its own for the type.
# Process-wide because the sqlite3 module has no other kind: its one table of adapters serves
# every connection (there is no per-connection or per-engine one). So they are registered when
# a SQLite engine is made, never on import, and return what the driver binds anyway: another
# user of sqlite3 in the process sees the same values stored.
_SQLITE_AS_IS: dict[type, Callable[[Any], Any]] = {type(None): {}.get, bool: int, bytes: bytes}  # as bound


def _sqlite_binds_as_is() -> None:
    for kind, same in _SQLITE_AS_IS.items():
        if (kind, sqlite3.PrepareProtocol) not in sqlite3.adapters:
            sqlite3.register_adapter(kind, same)


def _switch_to_wal(cur: sqlite3.Cursor, attempts: int = 100) -> None:
    """PRAGMA journal_mode=WAL, waited for: on a new file, the switch needs a lock that SQLite
    refuses at once (no busy timeout) while another process (a second gunicorn worker) is
    creating the tables, for milliseconds."""
    for attempt in range(attempts):
        try:
            cur.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or attempt == attempts - 1:
                raise
            time.sleep(0.05)


def make_engine(url: str) -> Engine:
    parsed = sa.make_url(url)
    if parsed.get_backend_name() == "sqlite":
        _sqlite_path(parsed)
        _sqlite_binds_as_is()
        engine = sa.create_engine(parsed, connect_args={"timeout": 60, "check_same_thread": False})

        @sa.event.listens_for(engine, "connect")
        def _connect(dbapi_conn: Any, _record: Any) -> None:
            dbapi_conn.isolation_level = None  # we issue BEGIN ourselves (below)
            cur = dbapi_conn.cursor()
            # 16 KiB pages (new files only): a stored record fits a page with room to spare, and a
            # list page reads about 40 % less CPU than with 4 KiB pages (bench/README.md).
            cur.execute("PRAGMA page_size=16384")
            _switch_to_wal(cur)
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA busy_timeout=60000")
            cur.close()

        @sa.event.listens_for(engine, "begin")
        def _begin(conn: Connection) -> None:
            immediate = conn.get_execution_options().get("sqlite_immediate")
            conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")

        return engine
    if parsed.get_backend_name() == "postgresql" and parsed.drivername == "postgresql":
        parsed = parsed.set(drivername="postgresql+psycopg")
    return sa.create_engine(parsed, pool_pre_ping=True)
