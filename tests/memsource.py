"""A RecordSource in memory: the protocol's rules tested without a database, in milliseconds.

It keeps the store's semantics where the protocol relies on them, and test_protocol checks
that it does by running the same lists against a real Store: lists in (datestamp,
identifier) order, a record in set `a:b` is also in `a` (the set hierarchy lives in the
store), a list row is a record that has the list's format, deleted ones included.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from oaiserver.formats import MetadataFormat
from oaiserver.records import Header, ListQuery, Rendered


@dataclass
class Item:
    """One stored record, as much of it as the protocol can see."""

    identifier: str
    datestamp: int
    sets: tuple[str, ...] = ()
    deleted: bool = False
    formats: dict[str, str] = field(default_factory=lambda: {"oai_dc": "<oai_dc:dc/>"})

    def in_set(self, spec: str) -> bool:
        return any(s == spec or s.startswith(spec + ":") for s in self.sets)

    def header(self, prefix: str | None, *, with_metadata: bool) -> Header:
        metadata = self.formats.get(prefix or "") if with_metadata and not self.deleted else None
        return Header(self.identifier, self.datestamp, self.deleted, self.sets, metadata)

    def rendered(self, with_metadata: bool) -> Rendered:
        element = b"record" if with_metadata else b"header"
        return Rendered(self.datestamp, self.identifier, b"<%s>%s</%s>" % (element, self.identifier.encode(), element))


class MemorySource:
    """Records in a dict and a clock the test sets: `now` is what `freeze` answers."""

    def __init__(self, now: int = 1_700_000_000) -> None:
        self.now = now
        self.items: dict[str, Item] = {}

    def add(self, identifier: str, datestamp: int | None = None, **fields: object) -> Item:
        """Store (or replace) a record, stamped now unless `datestamp` is given."""
        item = Item(identifier, self.now if datestamp is None else datestamp, **fields)  # type: ignore[arg-type]
        self.items[identifier] = item
        return item

    def _listed(self, query: ListQuery, *, window: bool = True) -> list[Item]:
        found = [
            i
            for i in self.items.values()
            if query.prefix in i.formats
            and (query.set_spec is None or i.in_set(query.set_spec))
            and (not window or query.start is None or i.datestamp >= query.start)
            and (not window or query.end is None or i.datestamp <= query.end)
        ]
        return sorted(found, key=lambda i: (i.datestamp, i.identifier))

    # ---- RecordSource ----------------------------------------------------------------------

    def freeze(self) -> int:
        return self.now

    def count(self, query: ListQuery) -> int:
        return len(self._listed(query))

    def _after(self, query: ListQuery, after: tuple[int, str] | None, limit: int) -> list[Item]:
        return [i for i in self._listed(query) if after is None or (i.datestamp, i.identifier) > after][:limit]

    def _the(self, query: ListQuery, identifier: str) -> list[Item]:
        return [i for i in self._listed(query, window=False) if i.identifier == identifier]

    def page_rendered(
        self, query: ListQuery, after: tuple[int, str] | None, limit: int, *, with_metadata: bool
    ) -> list[Rendered]:
        return [i.rendered(with_metadata) for i in self._after(query, after, limit)]

    def page_headers(
        self, query: ListQuery, after: tuple[int, str] | None, limit: int, *, with_metadata: bool
    ) -> list[Header]:
        return [i.header(query.prefix, with_metadata=with_metadata) for i in self._after(query, after, limit)]

    def row_rendered(self, query: ListQuery, identifier: str, *, with_metadata: bool) -> list[Rendered]:
        return [i.rendered(with_metadata) for i in self._the(query, identifier)]

    def row_headers(self, query: ListQuery, identifier: str, *, with_metadata: bool) -> list[Header]:
        return [i.header(query.prefix, with_metadata=with_metadata) for i in self._the(query, identifier)]

    def header(self, identifier: str, prefix: str) -> Header | None:
        item = self.items.get(identifier)
        if item is None or prefix not in item.formats:
            return None
        return item.header(prefix, with_metadata=True)

    def formats_of(self, identifier: str) -> list[str] | None:
        item = self.items.get(identifier)
        return None if item is None else list(item.formats)

    def harvested_sets(self) -> list[tuple[str, str, str | None]]:
        return []

    def harvested_formats(self) -> list[MetadataFormat]:
        return []

    def holds_harvested_format(self, prefix: str) -> bool:
        return False

    def earliest_datestamp(self) -> int | None:
        return min((i.datestamp for i in self.items.values()), default=None)
