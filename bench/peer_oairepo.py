"""A second reference data provider for the benchmark: oai-repo (`oai-repo` on PyPI) serving the
same SQLite file as oaiserver.

Like bench/peer_app.py it runs in bench/.peer-venv and imports nothing from this project. It
uses oai-repo as its documentation intends: a `DataInterface` subclass whose methods read the
store (`records.identifier, datestamp, deleted, setspecs, dc`, `set_members` for sets), with the
bulk variants (`get_records_header`, `get_records_metadata`) answered by one query each, and
`OAIRepository.process` answering every request; the bytes are `bytes(response)`. Its tokens
are its own (the query, a cursor and the list's size, base64), which become LIMIT/OFFSET here,
and it needs the list's size on every page, so each page also counts the list.

What it cannot serve as the others do: a record whose metadata is None is left out of
ListRecords and GetRecord (oai_repo.getrecord.add_records), so deleted records, which have no
metadata, are never disseminated; its lists carry the live records only (98 % of the data set).

    PEER_DB=/path/oai.sqlite3 PEER_BASE_URL=http://127.0.0.1:8002/oai \\
        bench/.peer-venv/bin/gunicorn -w 2 -b 127.0.0.1:8002 --chdir bench peer_oairepo:app
"""

from __future__ import annotations

import datetime as dt
import sqlite3
import threading

from lxml import etree
from oai_repo import DataInterface, Identify, MetadataFormat, OAIRepository, RecordHeader
from peer_wsgi import dc_statements, lazy_entry, list_filter, wsgi_app

OAI_DC_NS = "http://www.openarchives.org/OAI/2.0/oai_dc/"
DC_NS = "http://purl.org/dc/elements/1.1/"
XSI_NS = "http://www.w3.org/2001/XMLSchema-instance"
OAI_DC = MetadataFormat("oai_dc", "http://www.openarchives.org/OAI/2.0/oai_dc.xsd", OAI_DC_NS)
EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


def _stamp(epoch: int) -> str:
    return (EPOCH + dt.timedelta(seconds=epoch)).strftime("%Y-%m-%dT%H:%M:%SZ")


class SQLiteData(DataInterface):
    """oai-repo's DataInterface over oaiserver's `records` table."""

    def __init__(self, path: str, base_url: str, page_size: int) -> None:
        self.path = path
        self.limit = page_size
        self._local = threading.local()
        earliest = self._conn().execute("SELECT min(datestamp) FROM records").fetchone()[0]
        self._identify = Identify(
            repository_name="oai-repo reference (benchmark)",
            base_url=base_url,
            admin_email=["admin@example.org"],
            earliest_datestamp=_stamp(earliest or 0),
            deleted_record="persistent",
            granularity="YYYY-MM-DDThh:mm:ssZ",
        )

    def _conn(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:  # one connection per worker process (and thread), opened after fork
            conn = sqlite3.connect(self.path, check_same_thread=False)
            conn.execute("PRAGMA query_only=ON")
            self._local.conn = conn
        return conn

    def get_identify(self) -> Identify:
        return self._identify  # asked for on every request, and for every header's datestamp

    def is_valid_identifier(self, identifier: str) -> bool:
        return self._conn().execute("SELECT 1 FROM records WHERE identifier = ?", (identifier,)).fetchone() is not None

    def get_metadata_formats(self, identifier: str | None = None) -> list[MetadataFormat]:
        return [OAI_DC]

    def list_set_specs(self, identifier: str | None = None, cursor: int = 0) -> tuple:
        if identifier is not None:
            row = self._conn().execute("SELECT setspecs FROM records WHERE identifier = ?", (identifier,)).fetchone()
            return (row[0].split() if row else []), None, None
        specs = [s for (s,) in self._conn().execute("SELECT DISTINCT spec FROM set_members ORDER BY spec")]
        return specs, len(specs), None

    def list_identifiers(
        self,
        metadataprefix: str,
        filter_from: dt.datetime | None = None,
        filter_until: dt.datetime | None = None,
        filter_set: str | None = None,
        cursor: int = 0,
    ) -> tuple:
        where, params = list_filter(filter_set, filter_from, filter_until)
        sql = " FROM records" + where
        conn = self._conn()
        size = conn.execute("SELECT count(*)" + sql, params).fetchone()[0]
        rows = conn.execute(
            "SELECT identifier" + sql + " ORDER BY datestamp, identifier LIMIT ? OFFSET ?",
            (*params, self.limit, cursor),
        )
        return [identifier for (identifier,) in rows], size, None

    def _rows(self, identifiers: list[str], columns: str) -> dict[str, tuple]:
        marks = ",".join("?" * len(identifiers))
        sql = f"SELECT identifier, {columns} FROM records WHERE identifier IN ({marks})"
        return {row[0]: row[1:] for row in self._conn().execute(sql, identifiers)}

    def get_records_header(self, identifiers: list[str]) -> list[RecordHeader]:
        rows = self._rows(identifiers, "datestamp, deleted, setspecs")
        return [
            RecordHeader(ident, _stamp(stamp), setspecs.split(), "deleted" if deleted else None)
            for ident, (stamp, deleted, setspecs) in ((i, rows[i]) for i in identifiers)
        ]

    def get_records_metadata(self, identifiers: list[str], metadataprefix: str) -> list[etree._Element | None]:
        rows = self._rows(identifiers, "deleted, dc")
        return [None if rows[i][0] else _oai_dc(rows[i][1]) for i in identifiers]

    def get_records_abouts(self, identifiers: list[str]) -> list[list[etree._Element]]:
        return [[] for _ in identifiers]


def _oai_dc(dc: str) -> etree._Element:
    """The Dublin Core as oaiserver's store writes it (`element US lang US value` joined by RS,
    or JSON in older stores), as an oai_dc element."""
    root = etree.Element(f"{{{OAI_DC_NS}}}dc", nsmap={"oai_dc": OAI_DC_NS, "dc": DC_NS, "xsi": XSI_NS})
    root.set(f"{{{XSI_NS}}}schemaLocation", f"{OAI_DC_NS} http://www.openarchives.org/OAI/2.0/oai_dc.xsd")
    statements = dc_statements(dc)
    for element, value in statements:
        etree.SubElement(root, f"{{{DC_NS}}}{element}").text = value
    return root


def make_app(path: str, base_url: str, page_size: int = 100):
    repository = OAIRepository(SQLiteData(path, base_url, page_size))

    return wsgi_app(lambda args: bytes(repository.process(args)))


app = lazy_entry(make_app)  # gunicorn's entry point; configured by PEER_DB, PEER_BASE_URL and PEER_PAGE_SIZE
