"""Lists that end by a token fault, finished another way: pure rules, no I/O.

A list ends without reaching its last page when its resumption token comes back, when it goes
round (harvester.loops), or when the partner refuses a token in the middle of it
(badResumptionToken: expired, or forgotten). Listing the window again from its start would meet
the same fault at the same page, so the list is *taken up* instead: listed again with `from` set
to the latest datestamp the faulted list gave. Records already held come again unchanged and
are not rewritten (a datestamp means change). The rules, one per outcome of the faulted list:

* it gave records past its own `from` (a later day, for a partner listed in days): taken up from
  the latest of them (the records before it came in datestamp order, as a list's do);
* it gave records at its `from` only (more records share that datestamp than the list gets
  through, or its last page repeats): those are taken as given and the list is taken up one
  unit later (the next second, or the next day for a partner listed in days): a date window
  past it, which ends the list when nothing is left (noRecordsMatch);
* it gave nothing: a token kept from an earlier run (a checkpoint) is taken up once from the
  window's `from`; otherwise the list cannot be finished, and the run fails with the reason;
* it gave only records before its `from`: the partner ignores `from`; the run fails;
* its records did not come in datestamp order (a list in the order of the partner's own ids), or
  have not been seen to rise (all of one datestamp so far: a list giving its newest first looks so,
  and taken up from that datestamp would lose its older records; a list taken up goes on as the
  list it finishes showed): taking it up from a datestamp could skip records, so the run's window (its `from`, or the
  partner's earliestDatestamp, to the first response's date) is walked by date windows instead:
  its two halves listed with `from` and `until`, each from its start; a half whose list ends by
  a token fault again is halved again (`TakeUp.walk`), in the partner's granularity (days for
  one listed in days). A window of one unit (a second, or a day) that still fails cannot be
  finished, and the run fails with the reason, as before; so does a window whose list ended by a
  token fault having given no record, or a record outside the window (the partner ignores `from`
  and `until`: a smaller window would give the same list).

So each take-up starts strictly later than the one before, and each window is smaller than the
one it halves: the walk ends. It is also bounded in requests: a run spends at most `BUDGET`
requests (1,000) on lists taken up or windows walked, the requests that failed included. A
partner whose tokens expire every 50 pages of a 10,000-page list needs about 200 of them; one
that never lets a list finish is stopped there.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from oaiserver.records import DAY, format_datestamp

BUDGET = 1_000  # requests a run may spend on lists taken up after a token fault
DAY_SECONDS = 86_400


Window = tuple[int, int]  # a date window's first and last unit (seconds since the epoch), both included


class CannotTakeUp(Exception):
    """The list cannot be finished another way; the message says why."""


@dataclass
class TakeUp:
    """The lists of one run taken up after token faults, and what they cost."""

    budget: int = BUDGET
    requests: int = 0  # requests spent on lists taken up (their pages, and each fault)
    froms: list[str] = field(default_factory=list)  # the `from` of each list taken up, as sent
    first: str | None = None  # the first fault, as the run's note says it
    windows: int = 0  # date windows listed to their end (a list not in datestamp order, walked)

    def next_from(
        self,
        fault: str,
        *,
        start: int | None,
        latest: int | None,
        granularity: str,
        from_token: bool,
    ) -> int | None:
        """The `from` (seconds) to take a list up at, after it ended by `fault` having started at
        `start` (None: the beginning) and given records up to `latest` (None: none); a list
        that began at a kept token (`from_token`) is taken up at `start` once. Raises
        CannotTakeUp when none can be (see the module's docstring)."""
        self._within_budget(fault)
        if latest is None:
            if from_token and not self.froms:
                return start
            raise CannotTakeUp(f"{fault}, before it gave any record")
        unit = DAY_SECONDS if granularity == DAY else 1
        if start is None or latest - latest % unit > start - start % unit:
            return latest
        if latest < start - start % unit:
            raise CannotTakeUp(
                f"{fault}; the partner ignores `from` (a list from {format_datestamp(start)} gave older records)"
            )
        return start - start % unit + unit

    def walk(self, fault: str, window: Window, granularity: str, *, again: bool = False) -> list[Window]:
        """The date windows to list in place of `window` (first and last unit, in seconds, both
        included), whose list ended by `fault`: its two halves, older first, or `window` itself
        `again` (its list began at a token kept from an earlier run, which the partner forgot).
        Raises CannotTakeUp when the budget is spent or `window` is one unit."""
        self._within_budget(fault)
        self.first = self.first or fault
        self.requests += 1  # the request that failed
        unit = DAY_SECONDS if granularity == DAY else 1
        low, high = window[0] - window[0] % unit, window[1] - window[1] % unit
        if again:
            return [(low, high)]
        units = (high - low) // unit + 1
        if units < 2:
            shown = format_datestamp(low)[: 10 if unit == DAY_SECONDS else None]
            name = "day" if unit == DAY_SECONDS else "second"
            raise CannotTakeUp(
                f"{fault}; its records do not come in datestamp order, and a date window of one {name} "
                f"({shown}) fails too, so it cannot be finished"
            )
        middle = low + (units // 2) * unit
        return [(low, middle - unit), (middle, high)]

    def _within_budget(self, fault: str) -> None:
        if self.requests >= self.budget:
            raise CannotTakeUp(
                f"{fault}; taking the list up stopped after {self.requests} requests (at most {self.budget})"
            )

    def took(self, fault: str, sent: str) -> None:
        """A list taken up at `sent` (the `from` as sent) after `fault`."""
        self.first = self.first or fault
        self.requests += 1  # the request that failed (a repeated token is not sent: one too many, at most)
        self.froms.append(sent)

    def note(self) -> str | None:
        """`the list repeated its token at page 4: taken up from A, then B; 2 list(s), 3 request(s)`, or
        `…: finished by 4 date window(s) (from/until), 13 request(s)`."""
        if self.first is None:
            return None
        parts = []
        if self.froms:
            shown = ", then ".join(self.froms[:3]) + (f", … {self.froms[-1]}" if len(self.froms) > 3 else "")
            parts.append(f"taken up from {shown}; {len(self.froms)} list(s)")
        if self.windows:
            parts.append(f"finished by {self.windows} date window(s) (from/until)")
        return f"{self.first}: {', then '.join(parts)}, {self.requests} request(s)"
