"""Whether a run got what the partner announced: its `completeListSize` against the records
that arrived and were stored.

* Each list of a window (the whole repository, or one set) is tallied on its own: the size its
  first page announced (or the first announcement of the list, if its first page had none), the
  records received, the records stored (added, changed or unchanged; tombstones included), and
  every later announcement that differs from the first (a list that changes while it is read).
* A list whose first page carries no resumptionToken is the whole list: it announces what it
  holds. An empty list (noRecordsMatch) announces 0.
* The tally lives in the window's checkpoint, so a run that resumes a window compares the whole
  window (runs it resumed included) with what its lists announced: like with like, also for an
  incremental run, whose announcement is for its `from`. A list listed again from its start (a
  rejected token) is tallied afresh.
* The verdict: complete (every list stored at least what it announced), short by N (announced
  minus stored, over the lists), or unknown (a list of several pages announced nothing).

Pure functions over JSON-ready dicts: no I/O.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

COMPLETE, SHORT, UNKNOWN = "complete", "short", "unknown"


def see_page(
    tally: dict[str, Any] | None,
    list_key: str,
    *,
    first: bool,
    announced: int | None,
    more: bool,
    received: int,
    stored: int,
) -> dict[str, Any]:
    """The window's tally with one committed page of list `list_key` added (a new dict).

    `first`: the page was asked for without a token (it starts the list); `announced`: its
    completeListSize; `more`: it carries a token for a next page."""
    lists = dict((tally or {}).get("lists", {}))
    entry = {"announced": None, "received": 0, "stored": 0, "changes": []} if first else lists.get(list_key)
    if entry is None:  # a checkpoint written before tallies were kept: the start of the list is unseen
        entry = {"announced": None, "received": 0, "stored": 0, "changes": [], "unseen_start": True}
    entry = {**entry, "received": entry["received"] + received, "stored": entry["stored"] + stored}
    if first and not more and announced is None:
        announced = received  # the list fits on this page
    if announced is not None:
        if entry["announced"] is None and not entry.get("unseen_start"):
            entry["announced"] = announced
        elif entry["announced"] is not None and announced != entry["announced"] and announced not in entry["changes"]:
            entry["changes"] = [*entry["changes"], announced]
    lists[list_key] = entry
    return {"lists": lists}


@dataclass(frozen=True)
class Completeness:
    """A window's verdict, as a run records it."""

    verdict: str  # COMPLETE, SHORT or UNKNOWN
    announced: int | None  # over the lists; None when one of them announced nothing
    received: int
    stored: int
    shortfall: int = 0  # announced minus stored, when short
    changes: list[int] = field(default_factory=list)  # announcements that differed from the first ones

    def text(self) -> str:
        """`complete (12 announced, 12 stored)`, `short by 488 (500 announced, 12 received, 12 stored)`,
        `completeness unknown (no completeListSize announced; 40 stored)`; a changed announcement is said."""
        if self.verdict == UNKNOWN:
            text = f"completeness unknown (no completeListSize announced; {self.stored:,} stored)"
        elif self.verdict == SHORT:
            received = f", {self.received:,} received" if self.received != self.stored else ""
            text = f"short by {self.shortfall:,} ({self.announced:,} announced{received}, {self.stored:,} stored)"
        else:
            text = f"complete ({self.announced:,} announced, {self.stored:,} stored)"
        if self.changes:
            text += "; the announced size changed while the list was read: " + ", ".join(f"{n:,}" for n in self.changes)
        return text

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> Completeness | None:
        if not data or data.get("verdict") not in (COMPLETE, SHORT, UNKNOWN):
            return None
        return cls(
            verdict=data["verdict"],
            announced=data.get("announced"),
            received=int(data.get("received", 0)),
            stored=int(data.get("stored", 0)),
            shortfall=int(data.get("shortfall", 0)),
            changes=[int(n) for n in data.get("changes", [])],
        )


def judge(tally: dict[str, Any] | None) -> Completeness:
    """The verdict over a window's lists, once every one was read to its end."""
    lists = list((tally or {}).get("lists", {}).values())
    received = sum(e["received"] for e in lists)
    stored = sum(e["stored"] for e in lists)
    changes = [n for e in lists for n in e["changes"]]
    if not lists or any(e["announced"] is None for e in lists):
        return Completeness(UNKNOWN, None, received, stored, changes=changes)
    announced = sum(e["announced"] for e in lists)
    shortfall = sum(max(0, e["announced"] - e["stored"]) for e in lists)
    verdict = SHORT if shortfall else COMPLETE
    return Completeness(verdict, announced, received, stored, shortfall, changes)
