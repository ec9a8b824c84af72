"""Lists that never end: the signs that a partner's list goes round, as pure rules.

A partner whose resumption tokens lead back into the list (new tokens over pages it already
gave) would be harvested forever; the client already ends a list whose token comes back.
`ListWatch` sees each page of one list and names the first sign that the list goes round:

* several pages in a row whose records this list already gave (`repeated_pages`);
* several empty pages in a row that still carry a token (`empty_pages`);
* far more pages than the largest completeListSize announced makes, at the largest page size
  seen (`overrun` times as many, plus `overrun_slack` pages).

A record that moves while a list is paged may come twice, and some partners send an empty page
now and then: single events are normal, so each rule counts pages in a row, or far past the end.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field


@dataclass(frozen=True)
class LoopLimits:
    repeated_pages: int = 3  # pages in a row holding only records this list already gave
    empty_pages: int = 10  # empty pages in a row that carry a token
    overrun: int = 2  # a list may run to this many times the pages its completeListSize makes
    overrun_slack: int = 10  # ... plus this many pages
    remembered: int = 1_000_000  # identifiers remembered per list (about 60 MB at most)


@dataclass
class ListWatch:
    """What one list has shown so far (a restarted list gets a new watch)."""

    limits: LoopLimits = field(default_factory=LoopLimits)
    pages: int = 0
    repeated: int = 0  # pages in a row with only records already given
    empty: int = 0  # empty pages in a row
    largest_page: int = 0
    announced: int = 0  # the largest completeListSize announced
    seen: set[int] = field(default_factory=set)  # hash() of each identifier given

    def see(self, identifiers: Iterable[str], *, token: str | None, complete_list_size: int | None) -> str | None:
        """Take one page in; return why the list goes round, or None while it looks sane."""
        self.pages += 1
        ids = [hash(i) for i in identifiers]
        self.largest_page = max(self.largest_page, len(ids))
        if complete_list_size is not None and complete_list_size > self.announced:
            self.announced = complete_list_size
        if token is None:  # the last page: the list ended by itself
            return None
        limits = self.limits
        self.empty = self.empty + 1 if not ids else 0
        if self.empty >= limits.empty_pages:
            return f"{self.empty} empty pages in a row, each with a new resumption token"
        if ids:
            self.repeated = self.repeated + 1 if all(i in self.seen for i in ids) else 0
            if len(self.seen) < limits.remembered:
                self.seen.update(ids)
        if self.repeated >= limits.repeated_pages:
            return (
                f"{self.repeated} pages in a row held only records this list already gave, under new resumption tokens"
            )
        if self.announced and self.largest_page:
            expected = math.ceil(self.announced / self.largest_page)
            allowed = limits.overrun * expected + limits.overrun_slack
            if self.pages >= allowed:
                return (
                    f"completeListSize {self.announced} makes {expected} page(s) of up to {self.largest_page} "
                    f"record(s), and the list still went on after {self.pages} pages"
                )
        return None
