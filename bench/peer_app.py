"""A reference OAI-PMH data provider for the benchmark: pyoai (`oaipmh` on PyPI) serving the
same SQLite file as oaiserver.

It runs in its own virtual environment (bench/.peer-venv, made by bench.py) and imports
nothing from this project. It uses pyoai's server API as its documentation intends:
`BatchingServer` over an object with the IBatchingOAI methods, `oai_dc_writer` registered in a
`MetadataRegistry`, and pyoai's own resumption tokens (the query and a cursor), which become
LIMIT/OFFSET on the store. The record store is read with the standard library's sqlite3:
`records.identifier, datestamp, deleted, setspecs, dc` (the Dublin Core as oaiserver's store
writes it: `element US lang US value` joined by RS, or JSON in older stores), `set_members`
for selective lists.

    PEER_DB=/path/oai.sqlite3 PEER_BASE_URL=http://127.0.0.1:8001/oai \\
        bench/.peer-venv/bin/gunicorn -w 2 -b 127.0.0.1:8001 --chdir bench peer_app:app
"""

from __future__ import annotations

import datetime as dt
import sqlite3
import threading

from oaipmh import common, error
from oaipmh.metadata import MetadataRegistry
from oaipmh.server import BatchingServer, oai_dc_writer
from peer_wsgi import dc_statements, lazy_entry, list_filter, wsgi_app

OAI_DC = (
    "oai_dc",
    "http://www.openarchives.org/OAI/2.0/oai_dc.xsd",
    "http://www.openarchives.org/OAI/2.0/oai_dc/",
)
EPOCH = dt.datetime(1970, 1, 1)


def _naive_utc(epoch: int) -> dt.datetime:
    return EPOCH + dt.timedelta(seconds=epoch)


class SQLiteOAI:
    """The IBatchingOAI interface over oaiserver's `records` table."""

    def __init__(self, path: str, base_url: str) -> None:
        self.path = path
        self.base_url = base_url
        self._local = threading.local()
        earliest = self._conn().execute("SELECT min(datestamp) FROM records").fetchone()[0]
        self._identify = common.Identify(
            repositoryName="pyoai reference (benchmark)",
            baseURL=base_url,
            protocolVersion="2.0",
            adminEmails=["admin@example.org"],
            earliestDatestamp=_naive_utc(earliest or 0),
            deletedRecord="persistent",
            granularity="YYYY-MM-DDThh:mm:ssZ",
            compression=["identity"],
        )

    def _conn(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:  # one connection per worker process (and thread), opened after fork
            conn = sqlite3.connect(self.path, check_same_thread=False)
            conn.execute("PRAGMA query_only=ON")
            self._local.conn = conn
        return conn

    # ---- IBatchingOAI ----------------------------------------------------------------------

    def identify(self) -> common.Identify:
        return self._identify  # pyoai asks for it on every request (for <request>'s baseURL)

    def listMetadataFormats(self, identifier: str | None = None) -> list[tuple[str, str, str]]:
        if identifier is not None and self._row(identifier) is None:
            raise error.IdDoesNotExistError(identifier)
        return [OAI_DC]

    def listSets(self, cursor: int = 0, batch_size: int = 10) -> list[tuple[str, str, None]]:
        rows = self._conn().execute(
            "SELECT DISTINCT spec FROM set_members ORDER BY spec LIMIT ? OFFSET ?", (batch_size, cursor)
        )
        return [(spec, spec, None) for (spec,) in rows]

    def getRecord(self, metadataPrefix: str, identifier: str) -> tuple[common.Header, common.Metadata | None, None]:
        self._check_prefix(metadataPrefix)
        row = self._row(identifier)
        if row is None:
            raise error.IdDoesNotExistError(identifier)
        return self._record(row)

    def listIdentifiers(
        self,
        metadataPrefix: str,
        set: str | None = None,
        from_: dt.datetime | None = None,
        until: dt.datetime | None = None,
        cursor: int = 0,
        batch_size: int = 10,
    ) -> list[common.Header]:
        return [h for h, _, _ in self.listRecords(metadataPrefix, set, from_, until, cursor, batch_size)]

    def listRecords(
        self,
        metadataPrefix: str,
        set: str | None = None,
        from_: dt.datetime | None = None,
        until: dt.datetime | None = None,
        cursor: int = 0,
        batch_size: int = 10,
    ) -> list[tuple[common.Header, common.Metadata | None, None]]:
        self._check_prefix(metadataPrefix)
        where, params = list_filter(set, from_, until, "r.")
        sql = "SELECT r.identifier, r.datestamp, r.deleted, r.setspecs, r.dc FROM records r" + where
        sql += " ORDER BY r.datestamp, r.identifier LIMIT ? OFFSET ?"
        rows = self._conn().execute(sql, (*params, batch_size, cursor)).fetchall()
        return [self._record(row) for row in rows]

    # ---- helpers ---------------------------------------------------------------------------

    @staticmethod
    def _check_prefix(prefix: str) -> None:
        if prefix != "oai_dc":
            raise error.CannotDisseminateFormatError(prefix)

    def _row(self, identifier: str) -> tuple | None:
        return (
            self._conn()
            .execute(
                "SELECT identifier, datestamp, deleted, setspecs, dc FROM records WHERE identifier = ?", (identifier,)
            )
            .fetchone()
        )

    @staticmethod
    def _record(row: tuple) -> tuple[common.Header, common.Metadata | None, None]:
        identifier, datestamp, deleted, setspecs, dc = row
        header = common.Header(None, identifier, _naive_utc(datestamp), setspecs.split(), bool(deleted))
        if deleted:
            return header, None, None
        fields: dict[str, list[str]] = {}
        statements = dc_statements(dc)
        for element, value in statements:
            fields.setdefault(element, []).append(value)
        return header, common.Metadata(None, fields), None


def make_app(path: str, base_url: str, page_size: int = 100):
    registry = MetadataRegistry()
    registry.registerWriter("oai_dc", oai_dc_writer)
    server = BatchingServer(SQLiteOAI(path, base_url), metadata_registry=registry, resumption_batch_size=page_size)

    return wsgi_app(server.handleRequest)


app = lazy_entry(make_app)  # gunicorn's entry point; configured by PEER_DB, PEER_BASE_URL and PEER_PAGE_SIZE
