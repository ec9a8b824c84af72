"""What every part of the store stands on: the engine, the schema migrated on opening, and the
transactions reads and writes run in, with the write clock (see the package's doc)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from oaiserver.store.engine import StoreTooNew, make_engine
from oaiserver.store.schema import MIGRATIONS, PG_CLOCK_KEY, PG_SCHEMA_LOCK, Migration, records, schema_version

log = logging.getLogger("oaiserver.store")  # the package's one logger, named as before it was split


class Transactions:
    """The engine, the schema brought up to date on opening, a read straight on the driver,
    and the transactions every read and write runs in (the write clock): what `Store`'s
    reads (`read.Reads`) and writes (`write.Writes`) share."""

    def __init__(
        self,
        url: str,
        *,
        create: bool = True,
        clock: Callable[[], float] | None = None,
        migrations: Sequence[tuple[int, Migration]] = MIGRATIONS,
    ) -> None:
        """`create`: make or migrate the schema (see `MIGRATIONS`); StoreTooNew if the store's
        is newer than `migrations` know."""
        self.url = url
        self.clock = clock
        self.engine = make_engine(url)
        self.is_sqlite = self.engine.dialect.name == "sqlite"
        self._dbapi_error: type[Exception] = self.engine.dialect.loaded_dbapi.Error
        if create:
            try:
                self._migrate(migrations)
            except BaseException:  # refused or failed: no connection is left open behind
                self.engine.dispose()
                raise

    def _migrate(self, migrations: Sequence[tuple[int, Migration]]) -> None:
        """Bring the schema to the last of `migrations`, in one transaction.

        Under the schema lock, so that processes opening one store at once (gunicorn's workers)
        take turns and the later ones find the work done: on SQLite BEGIN IMMEDIATE (a deferred
        transaction that reads the catalogue then writes is refused at once, "database is
        locked", while another one writes), on PostgreSQL an advisory lock.
        """
        latest = migrations[-1][0]
        with self.engine.connect().execution_options(sqlite_immediate=True) as conn, conn.begin():
            if not self.is_sqlite:
                conn.exec_driver_sql(f"SELECT pg_advisory_xact_lock({PG_SCHEMA_LOCK})")
            schema_version.create(conn, checkfirst=True)
            current = conn.execute(sa.select(sa.func.max(schema_version.c.version))).scalar() or 0
            if current > latest:
                raise StoreTooNew(
                    f"the store was written by a newer version (schema {current}); this version knows up to {latest}"
                )
            if current == latest:
                return
            # A new store is made whole by migration 1 (the tables above are the latest schema);
            # an older one gets the steps it lacks.
            steps = migrations[:1] if current == 0 else [m for m in migrations if m[0] > current]
            if current:
                log.info("migrating the store's schema from %d to %d", current, latest)
            for _, step in steps:
                step(conn)
            conn.execute(schema_version.delete())
            conn.execute(schema_version.insert().values(version=latest))

    def _q(self, sql: str) -> str:
        """SQL written with `?` placeholders, in the driver's own style (psycopg: `%s`)."""
        return sql if self.is_sqlite else sql.replace("?", "%s")

    def _fetch(self, sql: str, params: Sequence[Any]) -> list[Any]:
        """A read straight on the driver: the hot paths (list pages, GetRecord) skip
        SQLAlchemy's statement and row machinery, which cost ten times the query itself.
        Driver errors still surface as SQLAlchemy's DBAPIError (the web layer answers 503)."""
        sql = self._q(sql)
        try:
            conn = self.engine.raw_connection()  # from the pool, pre-pinged on PostgreSQL
        except self._dbapi_error as exc:  # the pool hands connect errors on unwrapped
            raise sa.exc.DBAPIError.instance(sql, params, exc, self._dbapi_error) from exc
        try:
            cur = conn.cursor()
            cur.execute(sql, params)
            rows = list(cur.fetchall())
            cur.close()
            return rows
        except self._dbapi_error as exc:
            conn.invalidate(exc)  # a broken connection must not go back to the pool
            raise sa.exc.DBAPIError.instance(sql, params, exc, self._dbapi_error) from exc
        finally:
            conn.close()  # back to the pool, rolled back

    def close(self) -> None:
        """Close the pooled connections. One still in use (a request a server is finishing, a
        thread still reading) is closed when it is given back: left in the pool that was let
        go, it would be closed by the garbage collector, at any later moment and with a
        ResourceWarning (psycopg's)."""
        sa.event.listen(self.engine.pool, "checkin", _close_given_back)
        self.engine.dispose()

    def analyze(self) -> None:
        """Bring the planner's statistics up to date after a bulk write. PostgreSQL plans a list
        page from them: with none (a store just loaded, before autovacuum has looked) it sorts
        the whole list for every page, 13 times slower at 20,000 records. SQLite plans from the
        indexes alone."""
        if self.is_sqlite:
            return
        with self.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.exec_driver_sql("ANALYZE records, formats, set_members")

    def ping(self) -> None:
        """Raise if the database cannot be reached."""
        with self.engine.connect() as conn:
            conn.exec_driver_sql("SELECT 1")

    # ---- the write clock ------------------------------------------------------------------

    def _now(self, conn: Connection) -> int:
        if self.clock is not None:
            return int(self.clock())
        if self.is_sqlite:
            return int(time.time())
        return int(conn.exec_driver_sql("SELECT floor(extract(epoch from clock_timestamp()))").scalar_one())

    @contextmanager
    def writing(self) -> Iterator[tuple[Connection, int]]:
        """A write transaction and the datestamp its changes get.

        The stamp is taken after the clock lock, and is never below the newest datestamp
        stored, so a clock that steps back cannot reorder history.
        """
        with self.engine.connect().execution_options(sqlite_immediate=True) as conn, conn.begin():
            if not self.is_sqlite:
                conn.exec_driver_sql(f"SELECT pg_advisory_xact_lock_shared({PG_CLOCK_KEY})")
            newest = conn.execute(sa.select(sa.func.max(records.c.datestamp))).scalar()
            yield conn, max(self._now(conn), newest or 0)

    @contextmanager
    def snapshot(self) -> Iterator[Connection]:
        """One read transaction that sees the store as it was at its first read, whatever
        commits meanwhile: an export of a live store is consistent (records, settings and
        harvest state from one moment). SQLite's WAL keeps the snapshot of a read
        transaction; PostgreSQL needs REPEATABLE READ for it."""
        conn = self.engine.connect()
        if not self.is_sqlite:
            conn = conn.execution_options(isolation_level="REPEATABLE READ")
        with conn, conn.begin():
            yield conn

    def freeze(self) -> int:
        """Now, once every write stamped before now has committed (see the module doc)."""
        with self.engine.connect().execution_options(sqlite_immediate=True) as conn, conn.begin():
            if not self.is_sqlite:
                conn.exec_driver_sql(f"SELECT pg_advisory_xact_lock({PG_CLOCK_KEY})")
            return self._now(conn)


def _close_given_back(dbapi_connection: Any, record: Any) -> None:
    """A connection given back to a pool closed by `Transactions.close` is closed at once."""
    if dbapi_connection is not None:
        dbapi_connection.close()
