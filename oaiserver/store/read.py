"""Reads of records: GetRecord's row, list pages and their counts, whole records, and tallies.
The hot paths (`header`, `page`, `row`, `count`) go straight to the driver (`Transactions._fetch`)."""

from __future__ import annotations

import json
from typing import Any, Literal, overload

import sqlalchemy as sa

from oaiserver.fragments import metadata_of
from oaiserver.records import DCValue, Header, ListQuery, Record, Rendered
from oaiserver.rows import _FIELD, _VALUE
from oaiserver.store.schema import formats, records, set_members
from oaiserver.store.transactions import Transactions


class Reads(Transactions):
    """`Store`'s reads."""

    # ---- reads ----------------------------------------------------------------------------

    def get(self, identifier: str) -> Record | None:
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(records).where(records.c.identifier == identifier)).first()
            if row is None:
                return None
            fmts = {
                r.prefix: _metadata(r.record, row.about)
                for r in conn.execute(sa.select(formats).where(formats.c.record_id == row.id))
            }
        return Record(
            identifier=row.identifier,
            dc=decode_dc(row.dc),
            sets=row.setspecs.split(),
            deleted=row.deleted,
            source=row.source,
            datestamp=row.datestamp,
            metadata={p: x or "" for p, x in fmts.items()},
            fulltext=row.fulltext,
            raw_xml=row.raw_xml,
            provenance=json.loads(row.provenance) if row.provenance else None,
            about=row.about,
        )

    def header(self, identifier: str, prefix: str) -> Header | None:
        """GetRecord's one row: the header and the fragment for `prefix` (None if it has none)."""
        rows = self._fetch(
            "SELECT r.identifier, r.datestamp, r.deleted, r.setspecs, r.about, r.header_xml, f.record"
            " FROM records r JOIN formats f ON f.record_id = r.id AND f.prefix = ? WHERE r.identifier = ?",
            (prefix, identifier),
        )
        if not rows:
            return None
        r = rows[0]
        return Header(r[0], r[1], bool(r[2]), tuple(r[3].split()), _metadata(r[6], r[4]), r[4], r[5], r[6])

    def formats_of(self, identifier: str) -> list[str] | None:
        """The prefixes a record can be disseminated in, or None if there is no such record."""
        with self.engine.connect() as conn:
            rid = conn.execute(sa.select(records.c.id).where(records.c.identifier == identifier)).scalar()
            if rid is None:
                return None
            return [r.prefix for r in conn.execute(sa.select(formats.c.prefix).where(formats.c.record_id == rid))]

    @staticmethod
    def _list_sql(query: ListQuery, columns: str, after: tuple[int, str] | None) -> tuple[str, list[Any]]:
        """FROM and WHERE of a list, keyed on (datestamp, identifier) of the records or,
        for a set, of its members (each has its own index, so paging is an index range scan).

        CROSS JOIN fixes the join order in SQLite (PostgreSQL plans it freely): the keyed table
        drives, in index order, so a page never sorts what remains of the list."""
        params: list[Any] = [query.prefix]
        if query.set_spec is None:
            key = "r"
            sql = f"SELECT {columns} FROM records r CROSS JOIN formats f WHERE f.record_id = r.id AND f.prefix = ?"
        else:
            key = "m"
            sql = (
                f"SELECT {columns} FROM set_members m CROSS JOIN records r CROSS JOIN formats f"
                " WHERE r.id = m.record_id AND f.record_id = r.id AND f.prefix = ? AND m.spec = ?"
            )
            params.append(query.set_spec)
        if query.start is not None:
            sql += f" AND {key}.datestamp >= ?"
            params.append(query.start)
        if query.end is not None:
            sql += f" AND {key}.datestamp <= ?"
            params.append(query.end)
        if after is not None:
            sql += f" AND ({key}.datestamp, {key}.identifier) > (?, ?)"
            params += after
        return sql, params

    def count(self, query: ListQuery) -> int:
        params: list[Any]
        if query.set_spec is None:  # one index range, however many records the list holds
            sql, params = "SELECT count(*) FROM formats WHERE prefix = ?", [query.prefix]
            if query.start is not None:
                sql += " AND datestamp >= ?"
                params.append(query.start)
            if query.end is not None:
                sql += " AND datestamp <= ?"
                params.append(query.end)
        else:
            sql, params = self._list_sql(query, "count(*)", None)
        return int(self._fetch(sql, params)[0][0])

    # Which of the two lists `page` gives follows from `rendered`: these say so to the type checker.
    @overload
    def page(
        self,
        query: ListQuery,
        after: tuple[int, str] | None,
        limit: int,
        *,
        with_metadata: bool,
        rendered: Literal[False] = False,
    ) -> list[Header]: ...

    @overload
    def page(
        self,
        query: ListQuery,
        after: tuple[int, str] | None,
        limit: int,
        *,
        with_metadata: bool,
        rendered: Literal[True],
    ) -> list[Rendered]: ...

    @overload
    def page(
        self,
        query: ListQuery,
        after: tuple[int, str] | None,
        limit: int,
        *,
        with_metadata: bool,
        rendered: bool = False,
    ) -> list[Header] | list[Rendered]: ...

    def page(
        self,
        query: ListQuery,
        after: tuple[int, str] | None,
        limit: int,
        *,
        with_metadata: bool,
        rendered: bool = False,
    ) -> list[Header] | list[Rendered]:
        """Up to `limit` records in (datestamp, identifier) order, strictly after `after`.

        `rendered`: each as its stored XML element (`<record>`, or `<header>` without
        metadata), ready to serve; otherwise as Header fields (for people's views and tests).
        """
        key = "r" if query.set_spec is None else "m"
        sql, params = self._list_sql(query, self._row_columns(key, with_metadata, rendered), after)
        sql += f" ORDER BY {key}.datestamp, {key}.identifier LIMIT ?"
        params.append(limit)
        return self._rows(self._fetch(sql, params), with_metadata, rendered)

    def row(
        self, query: ListQuery, identifier: str, *, with_metadata: bool, rendered: bool = False
    ) -> list[Header] | list[Rendered]:
        """One record as `page` shows it (a list of one, or none), if it has the query's format and
        is in its set, whatever its datestamp (a record that changed while its list was paged:
        see protocol)."""
        key = "r" if query.set_spec is None else "m"
        columns = self._row_columns(key, with_metadata, rendered)
        sql, params = self._list_sql(ListQuery(query.prefix, set_spec=query.set_spec), columns, None)
        rows = self._fetch(sql + " AND r.identifier = ?", [*params, identifier])
        return self._rows(rows, with_metadata, rendered)

    @staticmethod
    def _row_columns(key: str, with_metadata: bool, rendered: bool) -> str:
        if rendered:
            return f"{key}.datestamp, {key}.identifier, " + ("f.record" if with_metadata else "r.header_xml")
        return "r.identifier, r.datestamp, r.deleted, r.setspecs, r.header_xml, r.about, f.record"

    @staticmethod
    def _rows(rows: list[Any], with_metadata: bool, rendered: bool) -> list[Header] | list[Rendered]:
        if rendered:
            if with_metadata:
                return list(map(Rendered._make, rows))  # tuple.__new__: no Python call per row
            return [Rendered(r[0], r[1], r[2].encode() + b"\n") for r in rows]
        if with_metadata:
            return [
                Header(r[0], r[1], bool(r[2]), tuple(r[3].split()), _metadata(r[6], r[5]), r[5], r[4], r[6])
                for r in rows
            ]
        return [Header(r[0], r[1], bool(r[2]), tuple(r[3].split()), xml=r[4]) for r in rows]

    def earliest_datestamp(self) -> int | None:
        with self.engine.connect() as conn:
            return conn.execute(sa.select(sa.func.min(records.c.datestamp))).scalar()

    def identifiers(self, source: str | None = None, *, live_only: bool = False) -> set[str]:
        stmt = sa.select(records.c.identifier)
        if source is not None:
            stmt = stmt.where(records.c.source == source)
        if live_only:
            stmt = stmt.where(records.c.deleted.is_(False))
        with self.engine.connect() as conn:
            return set(conn.execute(stmt).scalars())

    def counts(self) -> dict[str, int]:
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(records.c.deleted, sa.func.count()).group_by(records.c.deleted)).all()
        result = {"live": 0, "deleted": 0}
        for deleted, n in rows:
            result["deleted" if deleted else "live"] = int(n)
        return result

    def set_counts(self) -> dict[str, int]:
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(set_members.c.spec, sa.func.count()).group_by(set_members.c.spec)).all()
        return {spec: int(n) for spec, n in rows}


def decode_dc(text: str) -> list[DCValue]:
    if text.startswith("["):  # JSON: a separator in a name or tag (see encode_dc)
        return [DCValue(e, v, lang) for e, v, lang in json.loads(text)]
    values = []
    for item in text.split(_VALUE) if text else ():
        element, lang, value = item.split(_FIELD, 2)
        values.append(DCValue(element, value, lang or None))
    return values


def _metadata(record: bytes, about: str | None) -> str | None:
    """A format's metadata fragment, read out of the served `<record>` (None for a deleted record)."""
    return metadata_of(bytes(record), about)  # bytes(): a driver may hand BYTEA over as a memoryview
