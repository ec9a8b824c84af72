"""Reads of records: GetRecord's row, list pages and their counts, whole records, and tallies.
The hot paths (`header`, `page`, `row`, `count`) go straight to the driver (`Transactions._fetch`)."""

from __future__ import annotations

import json
from itertools import repeat
from typing import Any, NamedTuple

import sqlalchemy as sa

from oaiserver.formats import MetadataFormat
from oaiserver.fragments import metadata_of
from oaiserver.records import DCValue, Header, ListQuery, Record, Rendered
from oaiserver.rows import _FIELD, _VALUE
from oaiserver.store import list_counts
from oaiserver.store.schema import formats, harvested_formats, partner_sets, records, set_members
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
        return record_of_row(row, {p: x or "" for p, x in fmts.items()})

    def header(self, identifier: str, prefix: str) -> Header | None:
        """GetRecord's one row: the header and the fragment for `prefix` (None if it has none)."""
        rows = self._fetch(
            f"SELECT {_HEADER_COLUMNS}"
            " FROM records r JOIN formats f ON f.record_id = r.id AND f.prefix = ? WHERE r.identifier = ?",
            (prefix, identifier),
        )
        return _headers(rows, with_metadata=True)[0] if rows else None

    def formats_of(self, identifier: str) -> list[str] | None:
        """The prefixes a record can be disseminated in, or None if there is no such record."""
        with self.engine.connect() as conn:
            rid = conn.execute(sa.select(records.c.id).where(records.c.identifier == identifier)).scalar()
            if rid is None:
                return None
            return [r.prefix for r in conn.execute(sa.select(formats.c.prefix).where(formats.c.record_id == rid))]

    def harvested_formats(self) -> list[MetadataFormat]:
        """The formats partners declared that records are served in, by prefix."""
        held = sa.exists().where(formats.c.prefix == harvested_formats.c.prefix)
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(harvested_formats).where(held).order_by(harvested_formats.c.prefix))
            return [MetadataFormat(r.prefix, r.schema, r.namespace) for r in rows]

    def holds_harvested_format(self, prefix: str) -> bool:
        """Whether `prefix` is among `harvested_formats()`: one indexed lookup, on the driver."""
        rows = self._fetch(
            "SELECT 1 FROM harvested_formats h WHERE h.prefix = ?"
            " AND EXISTS (SELECT 1 FROM formats f WHERE f.prefix = h.prefix)",
            (prefix,),
        )
        return bool(rows)

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
        """A list's size. From its beginning: the kept count less the rows stamped after its
        `end` (list_counts.py), so a first page costs the same however large the list; unless
        many rows are stamped after `end` (an `until` long past), when the rows up to it are
        counted instead. With a `from`: the rows of the range, counted in the index."""
        if query.start is None and (query.end is None or self._few_after(query)):
            sql, params = list_counts.count_sql(query.prefix, query.set_spec, query.end)
            n, parts = self._fetch(sql, params)[0]
            if parts > list_counts.FOLD_AT:
                list_counts.fold(self.engine, query.prefix, query.set_spec)
            return int(n)
        if query.set_spec is None:  # one index range
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

    def _few_after(self, query: ListQuery) -> bool:
        """Whether fewer than `list_counts.FEW` rows of the list's prefix or set are stamped after
        its `end`: counted in the index, up to that many at most."""
        sql, params = list_counts.after_sql(query.prefix, query.set_spec, query.end or 0)
        return int(self._fetch(sql, params)[0][0]) < list_counts.FEW

    def deleted_count(self, query: ListQuery) -> int:
        """How many of a list's records are deleted: the changes page counts them apart from
        the records added or changed. Not on a hot path: it reads the list's rows."""
        sql, params = self._list_sql(query, "count(*)", None)
        return int(self._fetch(sql + " AND r.deleted", params)[0][0])

    # Two reads per shape, one return type each: the stored XML elements a list serves
    # (`*_rendered`), or Header fields, for people's views and tests (`*_headers`).

    def page_rendered(
        self, query: ListQuery, after: tuple[int, str] | None, limit: int, *, with_metadata: bool
    ) -> list[Rendered]:
        """Up to `limit` records in (datestamp, identifier) order, strictly after `after`, each as
        its stored XML element (`<record>`, or `<header>` without metadata), ready to serve."""
        rows = self._page(query, after, limit, _rendered_columns(query, with_metadata))
        if with_metadata:
            return _as_rendered(rows)
        return [Rendered(datestamp, identifier, xml.encode() + b"\n") for datestamp, identifier, xml in rows]

    def page_headers(
        self, query: ListQuery, after: tuple[int, str] | None, limit: int, *, with_metadata: bool
    ) -> list[Header]:
        """`page_rendered`'s records as Header fields."""
        return _headers(self._page(query, after, limit, _HEADER_COLUMNS), with_metadata)

    def row_rendered(self, query: ListQuery, identifier: str, *, with_metadata: bool) -> list[Rendered]:
        """One record as `page_rendered` shows it (a list of one, or none), if it has the query's
        format and is in its set, whatever its datestamp (a record that changed while its list
        was paged: see protocol)."""
        rows = self._row(query, identifier, _rendered_columns(query, with_metadata))
        if with_metadata:
            return _as_rendered(rows)
        return [Rendered(datestamp, ident, xml.encode() + b"\n") for datestamp, ident, xml in rows]

    def row_headers(self, query: ListQuery, identifier: str, *, with_metadata: bool) -> list[Header]:
        """`row_rendered`'s record as Header fields."""
        return _headers(self._row(query, identifier, _HEADER_COLUMNS), with_metadata)

    def _page(self, query: ListQuery, after: tuple[int, str] | None, limit: int, columns: str) -> list[Any]:
        key = "r" if query.set_spec is None else "m"
        sql, params = self._list_sql(query, columns, after)
        sql += f" ORDER BY {key}.datestamp, {key}.identifier LIMIT ?"
        params.append(limit)
        return self._fetch(sql, params)

    def _row(self, query: ListQuery, identifier: str, columns: str) -> list[Any]:
        sql, params = self._list_sql(ListQuery(query.prefix, set_spec=query.set_spec), columns, None)
        return self._fetch(sql + " AND r.identifier = ?", [*params, identifier])

    def harvested_sets(self) -> list[tuple[str, str, str | None]]:
        """The partners' sets our records are in: (partner, setSpec, the partner's name for it
        or None), in setSpec order."""
        c = partner_sets.c
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(c.partner, c.spec, c.name).order_by(c.spec)).all()
        return [(r.partner, r.spec, r.name) for r in rows]

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


def record_of_row(row: Any, metadata: dict[str, str]) -> Record:
    """The record a row of `records` holds, with its metadata (prefix -> XML) read from `formats`."""
    return Record(
        identifier=row.identifier,
        dc=decode_dc(row.dc),
        sets=row.setspecs.split(),
        deleted=row.deleted,
        source=row.source,
        datestamp=row.datestamp,
        metadata=metadata,
        fulltext=row.fulltext,
        raw_xml=row.raw_xml,
        provenance=json.loads(row.provenance) if row.provenance else None,
        about=row.about,
    )


def _metadata(record: bytes, about: str | None) -> str | None:
    """A format's metadata fragment, read out of the served `<record>` (None for a deleted record)."""
    return metadata_of(bytes(record), about)  # bytes(): a driver may hand BYTEA over as a memoryview


class _HeaderRow(NamedTuple):
    """The columns a Header is made from, in the order they are selected (`_HEADER_COLUMNS`)."""

    identifier: str
    datestamp: int
    deleted: bool
    setspecs: str
    header_xml: str
    about: str | None
    record: bytes


_HEADER_COLUMNS = ", ".join(("f." if name == "record" else "r.") + name for name in _HeaderRow._fields)


def _rendered_columns(query: ListQuery, with_metadata: bool) -> str:
    """A rendered row's columns, as `Rendered`'s fields: (datestamp, identifier, XML element),
    the key from the table the list is keyed on (see `_list_sql`)."""
    key = "r" if query.set_spec is None else "m"
    return f"{key}.datestamp, {key}.identifier, " + ("f.record" if with_metadata else "r.header_xml")


def _as_rendered(rows: list[Any]) -> list[Rendered]:
    """The driver's rows, (datestamp, identifier, XML element) tuples, as Rendered: made by
    `tuple.__new__` in C, with no Python call per row, where the named tuple's own `_make` is a
    Python function (half a list page's 0.2 ms of conversion)."""
    return list(map(tuple.__new__, repeat(Rendered, len(rows)), rows))


def _headers(rows: list[Any], with_metadata: bool) -> list[Header]:
    if with_metadata:
        return [
            Header(
                r.identifier,
                r.datestamp,
                bool(r.deleted),
                tuple(r.setspecs.split()),
                _metadata(r.record, r.about),
                r.about,
                r.header_xml,
                r.record,
            )
            for r in map(_HeaderRow._make, rows)
        ]
    return [
        Header(r.identifier, r.datestamp, bool(r.deleted), tuple(r.setspecs.split()), xml=r.header_xml)
        for r in map(_HeaderRow._make, rows)
    ]
