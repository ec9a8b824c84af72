"""Search for people: the words of each record's titles, creators and identifiers in the
store's own full-text index, and a query of plain words over them.

One table, `records_search`, one row per record keyed by the record's row id, written in the
same transaction as the record (`index_in`, from `Writes.write_in`):

* SQLite: an FTS5 table whose rowid is `records.id`. It keeps its own copy of the words: the
  words are derived (from the encoded Dublin Core), so an external-content table over
  `records` cannot name them, and a contentless table cannot delete a row before SQLite 3.43.
* PostgreSQL: `(record_id, words tsvector)` under a GIN index, with the `simple` configuration
  (no stemming, no stop words), so that names and identifiers match as typed.

Both are given the same text: `words()` folds case and diacritics in Python and keeps runs of
letters and digits, so `oai:example.org:rec-1` is the words `oai example org rec 1` on both.
A query is cut into words the same way, so no character a person types reaches FTS5's or
tsquery's syntax: each whitespace-separated piece becomes a phrase of such words (quoted), all
pieces must match, and the last word also matches as a prefix (staff type).

Hits come newest row first, paged by row id (keyset: page 100 costs what page 1 costs); no
ranking, which would score every match of a common word.
"""

from __future__ import annotations

import json
import re
import unicodedata
from collections.abc import Callable, Iterable, Sequence
from typing import Any, NamedTuple

from sqlalchemy.engine import Connection

from oaiserver.rows import _FIELD, _VALUE

INDEXED = ("title", "creator", "identifier")  # Dublin Core elements whose words are searched
MAX_WORDS = 16  # of a query: more only slows it, never narrows it usefully
MAX_WORD = 64  # characters of one query word
PREFIX_FROM = 3  # a last word this long also matches as a prefix (shorter ones would match half the index)
COUNT_UP_TO = 1000  # hits counted at most; beyond, "more than 1000"

_WORD = re.compile(r"[^\W_]+")
_MARKS = re.compile(r"[\u0300-\u036f\u1ab0-\u1aff\u1dc0-\u1dff\u20d0-\u20ff\ufe20-\ufe2f]+")  # combining marks


def words(text: str) -> list[str]:
    """Runs of letters and digits, case and diacritics folded (`Élan_vital` -> elan, vital)."""
    text = text.casefold()
    if not text.isascii():
        text = _MARKS.sub("", unicodedata.normalize("NFKD", text))
    return _WORD.findall(text)


def index_text(identifier: str, dc: str) -> str:
    """What a record is found by: its OAI identifier, and the titles, creators and identifiers
    of its encoded Dublin Core (`rows.encode_dc`), as words separated by spaces. A
    dc:identifier that is the record's own landing page adds nothing the OAI identifier does
    not, but the site's address in every record: it is left out."""
    landing = "/records/" + identifier
    parts = [identifier]
    parts += [v for e, v in _elements(dc) if e in INDEXED and not (e == "identifier" and v.endswith(landing))]
    return " ".join(words("\n".join(parts)))


def _elements(dc: str) -> list[tuple[str, str]]:
    """(element, value) of encoded Dublin Core (`rows.encode_dc`; `read.decode_dc` gives whole
    DCValues, but the store's reads import this module's schema)."""
    if dc.startswith("["):  # JSON: a separator in a name or tag
        return [(element, value) for element, value, _ in json.loads(dc)]
    pairs = []
    for item in dc.split(_VALUE) if dc else ():
        element, _, value = item.split(_FIELD, 2)
        pairs.append((element, value))
    return pairs


class Query(NamedTuple):
    """A query as phrases of words (each piece the person typed), and whether the last word
    is also a prefix. Empty when nothing searchable was typed."""

    phrases: tuple[tuple[str, ...], ...]
    prefix: bool

    @classmethod
    def parse(cls, text: str) -> Query:
        phrases: list[tuple[str, ...]] = []
        budget = MAX_WORDS
        for piece in text.split():
            found = tuple(w[:MAX_WORD] for w in words(piece))[:budget]
            if found:
                phrases.append(found)
                budget -= len(found)
            if budget <= 0:
                break
        prefix = bool(phrases) and len(phrases[-1][-1]) >= PREFIX_FROM
        return cls(tuple(phrases), prefix)

    def fts5(self) -> str:
        """FTS5 MATCH text: each phrase quoted (its words hold no quote, nor any other syntax)."""
        quoted = ['"' + " ".join(p) + '"' for p in self.phrases]
        if self.prefix:
            quoted[-1] += " *"
        return " ".join(quoted)

    def tsquery(self) -> str:
        """to_tsquery text: words joined by <-> within a phrase and & between phrases (words
        hold no operator, quote or colon, so none can be injected)."""
        text = " & ".join("(" + " <-> ".join(p) + ")" for p in self.phrases)
        return text[:-1] + ":*)" if self.prefix else text


class Hit(NamedTuple):
    """One search result: a record's row id (the page key), identifier, datestamp, deleted flag,
    first title (None if it has none) and creators."""

    row_id: int
    identifier: str
    datestamp: int
    deleted: bool
    title: str | None
    creators: tuple[str, ...]

    @classmethod
    def from_row(cls, row_id: int, identifier: str, datestamp: int, deleted: Any, dc: str) -> Hit:
        values = _elements(dc)
        title = next((v for e, v in values if e == "title" and v), None)
        return cls(row_id, identifier, datestamp, bool(deleted), title, tuple(v for e, v in values if e == "creator"))


# ---- the index's table, made by migrations -------------------------------------------------


def create_index(conn: Connection) -> None:
    """The empty `records_search` table of the connection's backend."""
    if conn.dialect.name == "sqlite":
        conn.exec_driver_sql("CREATE VIRTUAL TABLE IF NOT EXISTS records_search USING fts5(words, columnsize=0)")
    else:
        conn.exec_driver_sql(
            "CREATE TABLE IF NOT EXISTS records_search (record_id INTEGER PRIMARY KEY"
            " REFERENCES records (id) ON DELETE CASCADE, words TSVECTOR NOT NULL)"
        )
        conn.exec_driver_sql("CREATE INDEX IF NOT EXISTS ix_records_search_words ON records_search USING GIN (words)")


def fill_index(conn: Connection, batch: int = 2000) -> None:
    """Every stored record's words into the index (a store that had none)."""
    last = 0
    cur = conn.connection.cursor()
    is_sqlite = conn.dialect.name == "sqlite"
    try:
        while True:
            mark = "?" if is_sqlite else "%s"
            cur.execute(
                f"SELECT id, identifier, dc FROM records WHERE id > {mark} ORDER BY id LIMIT {mark}", (last, batch)
            )
            rows = cur.fetchall()
            if not rows:
                break
            _put(cur, is_sqlite, [(row_id, index_text(ident, dc)) for row_id, ident, dc in rows])
            last = rows[-1][0]
        if not is_sqlite:  # PostgreSQL plans a query from the index's statistics (see Searches)
            cur.execute("ANALYZE records_search")
    finally:
        cur.close()


def index_in(cur: Any, is_sqlite: bool, entries: Iterable[tuple[str, str]]) -> None:
    """(identifier, encoded Dublin Core) of records just written: their words replace what the
    index held for them. Inside the write's transaction, on its cursor."""
    by_identifier = dict(entries)
    idents = list(by_identifier)
    rows: list[tuple[int, str]] = []
    for n in range(0, len(idents), 500):
        part = idents[n : n + 500]
        if is_sqlite:
            cur.execute(
                f"SELECT identifier, id FROM records WHERE identifier IN ({', '.join(['?'] * len(part))})", part
            )
        else:  # one array: a statement of fixed text, parsed once by psycopg
            cur.execute("SELECT identifier, id FROM records WHERE identifier = ANY(%s)", [part])
        rows += [(row_id, index_text(ident, by_identifier[ident])) for ident, row_id in cur.fetchall()]
    rows.sort()
    _put(cur, is_sqlite, rows)


def _put(cur: Any, is_sqlite: bool, rows: Sequence[tuple[int, str]]) -> None:
    if not is_sqlite:
        # The words of 500 records as two arrays unnested by the server: a statement of fixed
        # text (psycopg parses a long one's text, such as 250 rows of VALUES, in Python on every
        # call), planned once for its two parameters. Half the server's CPU of executemany's
        # statement a row (one each, pipelined), and less of the client's. (For the records'
        # own rows, long texts, psycopg's quoting of text arrays costs more than it saves.)
        for n in range(0, len(rows), 500):
            part = rows[n : n + 500]
            cur.execute(
                "INSERT INTO records_search (record_id, words) SELECT id, to_tsvector('simple', w)"
                " FROM unnest(%s::int4[], %s::text[]) AS t (id, w)"
                " ON CONFLICT (record_id) DO UPDATE SET words = excluded.words",
                [[r[0] for r in part], [r[1] for r in part]],
            )
        return
    for n in range(0, len(rows), 250):
        part = rows[n : n + 250]
        ids = [row_id for row_id, _ in part]
        cur.execute(f"DELETE FROM records_search WHERE rowid IN ({', '.join(['?'] * len(ids))})", ids)
        cur.execute(
            "INSERT INTO records_search (rowid, words) VALUES " + ", ".join(["(?, ?)"] * len(part)),
            [v for row in part for v in row],
        )


# ---- reads --------------------------------------------------------------------------------


class Searches:
    """`Store`'s search (see the module doc)."""

    is_sqlite: bool
    _fetch: Callable[[str, Sequence[Any]], list[Any]]

    def search(self, text: str, *, before: int | None = None, limit: int = 50) -> list[Hit]:
        """Up to `limit` records matching every word of `text`, newest row first, strictly
        before row id `before` (the last hit of the previous page)."""
        query = Query.parse(text)
        if not query.phrases:
            return []
        key = "s.rowid" if self.is_sqlite else "s.record_id"
        sql, params = self._matching(query, f"{key}, r.identifier, r.datestamp, r.deleted, r.dc")
        if before is not None:
            sql += f" AND {key} < ?"
            params.append(before)
        sql += f" ORDER BY {key} DESC LIMIT ?"
        params.append(limit)
        return [Hit.from_row(*row) for row in self._fetch(sql, params)]

    def search_count(self, text: str, up_to: int = COUNT_UP_TO) -> int:
        """How many records match `text`, counted up to `up_to` + 1 (more means "more than")."""
        query = Query.parse(text)
        if not query.phrases:
            return 0
        sql, params = self._matching(query, "1")
        return int(self._fetch(f"SELECT count(*) FROM ({sql} LIMIT ?) AS hits", [*params, up_to + 1])[0][0])

    def _matching(self, query: Query, columns: str) -> tuple[str, list[Any]]:
        # The index drives (CROSS JOIN fixes SQLite's join order), in row id order: FTS5
        # walks its rowids backwards; PostgreSQL walks its primary key backwards for common
        # words and reads the GIN index for rare ones, as the statistics tell it (autovacuum's
        # ANALYZE; without them a word that matches nothing can be a scan of the whole table).
        if self.is_sqlite:
            sql = (
                f"SELECT {columns} FROM records_search s CROSS JOIN records r"
                " WHERE records_search MATCH ? AND r.id = s.rowid"
            )
            return sql, [query.fts5()]
        sql = (
            f"SELECT {columns} FROM records_search s JOIN records r ON r.id = s.record_id"
            " WHERE s.words @@ to_tsquery('simple', ?)"
        )
        return sql, [query.tsquery()]
