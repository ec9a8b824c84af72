"""`oaiserver export` / `import`: the whole store in one portable, deterministic file.

JSON lines, gzip-compressed when the name ends in `.gz`: a header, then every record
(tombstones included) in identifier order, then settings and harvest state. The same store
always exports to the same bytes, so export → import → export can be checked with `cmp`.
"""

from __future__ import annotations

import gzip
import json
from collections.abc import Generator, Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from oaiserver.records import DCValue, Record
from oaiserver.store import EXPORTED_TABLES, Store, insert_rows, is_empty, iter_records, table_rows

FORMAT = "oai-repository-export"
VERSION = 1


class DumpError(ValueError):
    """An export file that cannot be imported, or a store that cannot take it."""


@dataclass
class DumpReport:
    records: int = 0
    deleted: int = 0
    rows: int = 0
    rejected: list[tuple[str, str]] = field(default_factory=list)  # (identifier, why): not stored


def _line(obj: Any) -> bytes:
    return json.dumps(obj, ensure_ascii=False, sort_keys=True, separators=(",", ":")).encode() + b"\n"


def _record(r: Record) -> dict[str, Any]:
    return {
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


def export(store: Store, path: Path) -> DumpReport:
    report = DumpReport()
    with _open(path, "w") as out:
        out.write(_line({"format": FORMAT, "version": VERSION}))
        for record in iter_records(store):
            out.write(_line({"record": _record(record)}))
            report.records += 1
            report.deleted += record.deleted
        for name in EXPORTED_TABLES:
            for row in table_rows(store, name):
                out.write(_line({"table": name, "row": row}))
                report.rows += 1
    return report


def _lines(path: Path) -> Generator[dict[str, Any], None, None]:
    with _open(path, "r") as src:
        for number, line in enumerate(src, 1):
            try:
                yield json.loads(line)
            except ValueError as exc:
                raise DumpError(f"{path}: line {number} is not JSON: {exc}") from None


def load(store: Store, path: Path, *, batch: int = 1000) -> DumpReport:
    """Load an export into an empty store (SQLite or PostgreSQL), datestamps kept."""
    if not is_empty(store):
        raise DumpError("the store is not empty: import only into a new store")
    with closing(_lines(path)) as lines:
        return _load(store, path, lines, batch)


def _load(store: Store, path: Path, lines: Iterator[dict[str, Any]], batch: int) -> DumpReport:
    head = next(lines, None)
    if not head or head.get("format") != FORMAT or head.get("version") != VERSION:
        raise DumpError(f"{path}: not an export of this software (format {FORMAT} version {VERSION})")
    report = DumpReport()
    pending: list[Record] = []
    rows: dict[str, list[dict[str, Any]]] = {name: [] for name in EXPORTED_TABLES}
    for item in lines:
        if "record" in item:
            r = item["record"]
            pending.append(
                Record(
                    identifier=r["identifier"],
                    dc=[DCValue(e, v, lang) for e, v, lang in r["dc"]],
                    sets=r["sets"],
                    deleted=r["deleted"],
                    source=r["source"],
                    datestamp=r["datestamp"],
                    metadata=r["metadata"],
                    fulltext=r["fulltext"],
                    raw_xml=r["raw_xml"],
                    provenance=r["provenance"],
                    about=r["about"],
                )
            )
            report.records += 1
            report.deleted += r["deleted"]
            if len(pending) >= batch:
                report.rejected += store.write(pending, keep_datestamps=True, batch=batch).rejected
                pending = []
        elif item.get("table") in rows:
            rows[item["table"]].append(item["row"])
            report.rows += 1
        else:
            raise DumpError(f"{path}: unexpected line {str(item)[:80]!r}")
    if pending:
        report.rejected += store.write(pending, keep_datestamps=True, batch=batch).rejected
    report.records -= len(report.rejected)
    for name, table_rows_ in rows.items():
        insert_rows(store, name, table_rows_)
    return report
