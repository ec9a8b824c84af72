"""What changed since a date (the changes page): records added or changed, and records deleted,
counted apart, in all, per set and per partner, as ListRecords with that `from` lists them."""

from __future__ import annotations

from typing import NamedTuple

from oaiserver import formats
from oaiserver.records import ListQuery
from oaiserver.store import Store


class Tally(NamedTuple):
    """A list's records since a date: all of them, and the deleted ones among them."""

    total: int
    deleted: int

    @property
    def changed(self) -> int:
        """Added or changed, and not deleted."""
        return self.total - self.deleted


def tally(store: Store, since: int, spec: str | None) -> Tally:
    """The records of set `spec` (None: of the whole repository) with a datestamp from `since`."""
    query = ListQuery(formats.DEFAULT, since, None, spec)
    total = store.count(query)
    return Tally(total, store.deleted_count(query) if total else 0)


class Scope(NamedTuple):
    """What one changes page is narrowed to: a partner (`partner=`) or a set (`set=`)."""

    kind: str  # "partner" or "set"
    name: str  # the partner's name or the set's spec
    spec: str  # the set counted


def anchor(kind: str, name: str) -> str:
    """The id of a row of the page (`partner-hal`, `set-a:b`), so that a link can point at it."""
    return f"{kind}-{name}"
