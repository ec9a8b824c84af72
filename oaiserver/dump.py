"""`oaiserver export` / `import`: the whole store in one portable, deterministic file.

JSON lines, gzip-compressed when the name ends in `.gz`: a header, then every record
(tombstones included, each with the content hash the store holds for it) in identifier
order, then the rows of the other tables (`EXPORTED_TABLES`, each in key order: settings,
harvest state and history, quarantine, partners' sets and formats, partners' records in
further formats and records kept but not served), then a trailer that proves the file whole:
the number of lines before it, the records, tombstones and rows they hold, and the SHA-256 of
their bytes. The same store always exports to the same bytes, so export → import → export
can be checked with `cmp`.

A record line's `metadata` holds the formats its content hash covers; a record also served in
formats written beside it from its partner's records in them (`write_native_in`) has those in
`further` (prefix -> fragment, "" for a tombstone), a field left out when empty. A binary
column (`native_formats.record`, a partner's `<record>` byte for byte) is its UTF-8 text when
the bytes are UTF-8 of characters XML allows, as the store writes them, else `{"base64": ...}`
(`dumpcheck.text_of`).

Version 3 added `further`, `native_formats` and `shadowed_records`; a file of version 2 has
none of them and imports as it did (a store that served further formats could not make one
that imports: their records did not match their content hash).

An import is all or nothing: it runs in one transaction, streaming (memory does not grow
with the file), checks every line before it is written (`dumpcheck`) and the trailer at the
end; a file that is cut, altered or malformed anywhere is refused with its line number, and
the transaction is rolled back, so the store stays exactly as empty as it was.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import zlib
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from oaiserver.dumpcheck import Refused, record_of, row_of, text_of
from oaiserver.records import Record
from oaiserver.store import (
    EXPORTED_TABLES,
    Prepared,
    Store,
    content_hash,
    insert_rows_in,
    is_empty_in,
    iter_stored_in,
    last_record_id_in,
    record_ids_in,
    table_rows_in,
)

FORMAT = "oai-repository-export"
VERSION = 3
# Versions an import reads: 2 is 3 without `further`, native_formats and shadowed_records.
# 1 (no content hashes and no trailer, made before 0.1.0) is refused.
READS = (2, VERSION)
TABLES = {name: table for name, (table, _) in EXPORTED_TABLES.items()}
# Tables with a row per record: their primary keys, not a set in memory, refuse a row met twice.
_KEYED_BY_STORE = frozenset({"native_formats", "shadowed_records"})


class DumpError(ValueError):
    """An export file that cannot be imported, or a store that cannot take it."""


@dataclass
class DumpReport:
    records: int = 0
    deleted: int = 0
    rows: int = 0
    # Export: records whose stored content no longer matches their stored content hash
    # (changed behind the store's back); an import of the file refuses them.
    mismatched: list[str] = field(default_factory=list)


def _line(obj: Any) -> bytes:
    return json.dumps(obj, ensure_ascii=False, sort_keys=True, separators=(",", ":")).encode() + b"\n"


def _record(r: Record, digest: str, further: dict[str, str]) -> dict[str, Any]:
    return {
        **({"further": further} if further else {}),
        "identifier": r.identifier,
        "datestamp": r.datestamp,
        "deleted": r.deleted,
        "source": r.source,
        "sets": r.sets,
        "dc": [[v.element, v.value, v.lang] for v in r.dc],
        "metadata": r.metadata,
        "fulltext": r.fulltext,
        "raw_xml": r.raw_xml,
        "provenance": r.provenance,
        "about": r.about,
        "content_hash": digest,
    }


@contextmanager
def _open(path: Path, mode: str) -> Iterator[IO[bytes]]:
    with path.open(mode + "b") as raw:
        if path.suffix != ".gz":
            yield raw
            return
        # mtime=0 and no name inside: the same content always gives the same bytes.
        with gzip.GzipFile(filename="", mode=mode + "b", fileobj=raw, mtime=0) as packed:
            yield packed  # type: ignore[misc]


def _trailer(lines: int, report: DumpReport, digest: str) -> dict[str, Any]:
    counts = {"records": report.records, "deleted": report.deleted, "rows": report.rows}
    return {"end": {"lines": lines, **counts, "sha256": digest}}


def export(store: Store, path: Path) -> DumpReport:
    report = DumpReport()
    digest = hashlib.sha256()
    lines = 0
    with _open(path, "w") as out:

        def put(obj: Any) -> None:
            nonlocal lines
            data = _line(obj)
            out.write(data)
            digest.update(data)
            lines += 1

        put({"format": FORMAT, "version": VERSION})
        with store.snapshot() as conn:  # a live store is exported as it was at one moment
            for record, stored_hash, further in iter_stored_in(conn):
                put({"record": _record(record, stored_hash, further)})
                report.records += 1
                report.deleted += record.deleted
                if content_hash(record) != stored_hash:
                    report.mismatched.append(record.identifier)
            for name in EXPORTED_TABLES:
                for row in table_rows_in(conn, name):
                    put({"table": name, "row": {k: text_of(v) if isinstance(v, bytes) else v for k, v in row.items()}})
                    report.rows += 1
        out.write(_line(_trailer(lines, report, digest.hexdigest())))
    return report


# ---- import ------------------------------------------------------------------------------


class _Reader:
    """The lines of an export as (number, JSON value), up to its trailer, which it checks
    against what came before; anything wrong raises DumpError with the line number."""

    def __init__(self, path: Path, src: IO[bytes]) -> None:
        self.path, self.src = path, src
        self.number = 0
        self.digest = hashlib.sha256()
        self.raw = b""  # the line last yielded

    def fail(self, reason: str, number: int | None = None) -> DumpError:
        at = self.number if number is None else number
        return DumpError(f"{self.path}: line {at}: {reason}; nothing was imported")

    def _raw_lines(self) -> Iterator[bytes]:
        while True:
            try:
                raw = self.src.readline()
            except (EOFError, OSError, zlib.error) as exc:  # gzip: cut short, or not gzip at all
                raise self.fail(f"the compressed data is cut short or damaged ({exc})", self.number + 1) from None
            if not raw:
                return
            self.number += 1
            if not raw.endswith(b"\n"):
                raise self.fail("the line is cut short (no line end): the file is incomplete")
            yield raw

    def lines(self, report: DumpReport) -> Iterator[dict[str, Any]]:
        raw_lines = self._raw_lines()
        for raw in raw_lines:
            try:
                item = json.loads(raw)
            except ValueError as exc:
                raise self.fail(f"not JSON ({exc})") from None
            if not isinstance(item, dict):
                raise self.fail("not a JSON object")
            if "end" in item:
                self._check_trailer(item, report)
                if next(raw_lines, None) is not None:
                    raise self.fail("a line after the trailer")
                return
            self.digest.update(raw)
            self.raw = raw
            yield item
        raise self.fail(
            f"the file ends after line {self.number} without its trailer: it is incomplete (cut short) "
            "or not made by `oaiserver export` of this version",
            self.number,
        )

    def _check_trailer(self, item: dict[str, Any], report: DumpReport) -> None:
        expected = _trailer(self.number - 1, report, self.digest.hexdigest())
        if item != expected:
            raise self.fail(
                f"the trailer does not match the lines before it (expected {expected['end']}, "
                f"found {item.get('end')}): the file was altered or is incomplete"
            )


def load(store: Store, path: Path, *, batch: int = 1000) -> DumpReport:
    """Load an export into an empty store (SQLite or PostgreSQL), datestamps kept: in one
    transaction, so a file refused anywhere leaves the store as it was."""
    with _open(path, "r") as src:
        reader = _Reader(path, src)
        try:
            return _load(store, reader, batch)
        except sa.exc.SQLAlchemyError as exc:  # rolled back: the database, not the file, failed
            raise DumpError(
                f"{path}: the store failed at line {reader.number}: {getattr(exc, 'orig', None) or exc}; "
                "nothing was imported"
            ) from exc


def _load(store: Store, reader: _Reader, batch: int) -> DumpReport:
    with store.writing() as (conn, stamp):
        if not is_empty_in(conn):
            raise DumpError("the store is not empty: import only into a new store")
        report = DumpReport()
        lines = reader.lines(report)
        head = next(lines, None)
        if head is None or head.get("format") != FORMAT:
            raise reader.fail(f"not an export of this software (format {FORMAT})")
        if head.keys() != {"format", "version"} or head["version"] not in READS:
            raise reader.fail(
                f"an export in version {head.get('version')!r} of the format; this software reads versions "
                f"{' and '.join(map(str, READS))} (with content hashes and a trailer): export the store again "
                "with this version"
            )
        _Writer(store, conn, stamp, reader, batch).load(lines, report)
        return report


class _Writer:
    """Checked lines into the store, a batch at a time, inside the import's transaction."""

    def __init__(self, store: Store, conn: Connection, stamp: int, reader: _Reader, batch: int) -> None:
        self.store, self.conn, self.stamp, self.reader, self.batch = store, conn, stamp, reader, batch
        self.records: list[tuple[int, Prepared]] = []  # (line number, record)
        self.rows: dict[str, list[dict[str, Any]]] = {}
        self.pending_rows = 0
        self.keys: dict[str, set[tuple[Any, ...]]] = {name: set() for name in TABLES}  # natural keys met

    def load(self, lines: Iterator[dict[str, Any]], report: DumpReport) -> None:
        for item in lines:
            try:
                if "record" in item:
                    prepared = record_of(item, self.reader.raw)
                    self.records.append((self.reader.number, prepared))
                    report.records += 1
                    report.deleted += prepared.record.deleted
                else:
                    name, row = row_of(item, self.reader.raw, TABLES)
                    self._check_key(name, row)
                    self.rows.setdefault(name, []).append(row)
                    self.pending_rows += 1
                    report.rows += 1
            except Refused as exc:
                raise self.reader.fail(str(exc)) from None
            if len(self.records) >= self.batch:
                self._write_records()
            if self.pending_rows >= self.batch:
                self._write_rows()
        self._write_records()
        self._write_rows()

    def _check_key(self, name: str, row: dict[str, Any]) -> None:
        """Settings and harvest states are keyed by name (kept in memory: a few per partner)."""
        columns = [c.name for c in TABLES[name].primary_key.columns if c.name in row]
        if not columns or name in _KEYED_BY_STORE:
            return  # numbered afresh (harvest runs), or as many as records: the table's key refuses twice
        key = tuple(row[c] for c in columns)
        if key in self.keys[name]:
            raise Refused(f"the {name} row {dict(zip(columns, key, strict=True))} appears twice in the file")
        self.keys[name].add(key)

    def _write_records(self) -> None:
        if not self.records:
            return
        before = last_record_id_in(self.conn)
        chunk = [prepared for _, prepared in self.records]
        result = self.store.write_in(self.conn, self.stamp, chunk, keep_datestamps=True)
        if result.rejected:  # record_of checks what the store refuses: kept as a second guard
            identifier, why = result.rejected[0]
            number = next(n for n, p in self.records if p.record.identifier == identifier)
            raise self.reader.fail(f"record {identifier!r}: {why}", number)
        if result.added != len(chunk):
            raise self._duplicate(before)
        self.records = []

    def _duplicate(self, before: int) -> DumpError:
        """The error for a batch that added fewer rows than it held: an identifier met twice."""
        seen = Counter(prepared.record.identifier for _, prepared in self.records)
        earlier = {i for i, row_id in record_ids_in(self.conn, list(seen)).items() if row_id <= before}
        for number, prepared in reversed(self.records):
            identifier = prepared.record.identifier
            if seen[identifier] > 1 or identifier in earlier:
                return self.reader.fail(f"record {identifier!r} appears twice in the file", number)
        return self.reader.fail("a record could not be written")  # pragma: no cover - write_in refused one

    def _write_rows(self) -> None:
        for name, rows in self.rows.items():
            insert_rows_in(self.conn, name, rows)
        self.rows, self.pending_rows = {}, 0
