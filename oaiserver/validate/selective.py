"""Selective harvesting (2.7): from and until are inclusive bounds, in the declared granularity and in
days (which every repository must accept), and set=X takes in X's descendant sets. Each check asks a
list whose answer is known from the whole ListIdentifiers chain already read, and follows it (at most
--max-pages pages) until the record it must contain is found."""

from __future__ import annotations

import calendar
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from oaiserver.records import DAY, format_datestamp, format_day
from oaiserver.validate.parsing import OAI, child_text, parse_any
from oaiserver.validate.rules import DC, FAIL, LI, PASS

if TYPE_CHECKING:
    from oaiserver.validate.core import Validator


@dataclass
class Stamped:
    """A header of the main listing, read."""

    identifier: str
    when: datetime
    sets: list[str]
    datestamp: str  # as the repository wrote it (a day, at day granularity)


def stamped(v: Validator) -> list[Stamped]:
    out = []
    for _, header in v.headers:
        datestamp = child_text(header, "datestamp")
        when = parse_any(datestamp)
        if when is not None:
            sets = [(s.text or "").strip() for s in header.findall(f"{OAI}setSpec")]
            out.append(Stamped(child_text(header, "identifier"), when, sets, datestamp))
    return out


def bound(when: datetime, granularity: str) -> str:
    seconds = calendar.timegm(when.timetuple())
    return format_day(seconds) if granularity == DAY else format_datestamp(seconds)


def check_selective(v: Validator) -> None:
    seen = stamped(v)
    if not seen or v.granularity is None:
        reason = "no granularity declared" if v.granularity is None else "no datestamped headers listed"
        v.skip(["selective.from-until", "selective.day-inclusive"], reason)
    else:
        check_from_until(v, seen, v.granularity)
        check_day_inclusive(v, seen)
    check_set_hierarchy(v, seen)


def check_from_until(v: Validator, seen: list[Stamped], granularity: str) -> None:
    """from=until=D, D a datestamp listed (the middle one of those seen): exactly the records stamped D."""
    stamps = sorted({s.when for s in seen})
    d = bound(stamps[len(stamps) // 2], granularity)
    target = next(s for s in seen if bound(s.when, granularity) == d)
    select(v, "selective.from-until", [("from", d), ("until", d)], target, lambda w: bound(w, granularity) == d)


def check_day_inclusive(v: Validator, seen: list[Stamped]) -> None:
    """until=day of the oldest record seen lists it; from=day of the newest lists it."""
    oldest = min(seen, key=lambda s: s.when)
    newest = max(seen, key=lambda s: s.when)
    first, last = bound(oldest.when, DAY), bound(newest.when, DAY)
    select(v, "selective.day-inclusive", [("until", first)], oldest, lambda w: bound(w, DAY) <= first)
    select(v, "selective.day-inclusive", [("from", last)], newest, lambda w: bound(w, DAY) >= last)


def select(
    v: Validator, rule: str, bounds: list[tuple[str, str]], target: Stamped, inside: Callable[[datetime], bool]
) -> None:
    """Follow ListIdentifiers with these bounds until `target` is found; every header must be `inside`."""
    what = " ".join(f"{k}={value}" for k, value in bounds)
    found, outside, ending = follow(v, f"ListIdentifiers {what}", [LI, DC, *bounds], target.identifier)
    stamp = target.datestamp
    headers_outside = [
        f"{child_text(h, 'identifier')} ({child_text(h, 'datestamp')})"
        for h in outside
        if (w := parse_any(child_text(h, "datestamp"))) is not None and not inside(w)
    ]
    if headers_outside:
        v.note(rule, FAIL, f"{what} listed {', '.join(headers_outside[:3])}, outside the bounds", shown_by=v.shown)
    elif found:
        v.note(rule, PASS, f"{what} lists {target.identifier} ({stamp})")
    elif ending in ("complete", "no-records"):
        v.note(
            rule,
            FAIL,
            f"{what} left out {target.identifier}, stamped {stamp}: the bounds are inclusive",
            shown_by=v.shown,
        )
    elif ending != "max-pages":
        why = f": {v.shown.why()}" if ending == "error" and v.shown is not None else ""
        v.note(rule, FAIL, f"{what}: the list broke off ({ending}{why})", shown_by=v.shown)
    else:
        v.skip([rule], f"{what}: {target.identifier} not found within --max-pages={v.max_pages}")


def follow(v: Validator, label: str, pairs: list[tuple[str, str]], wanted: str) -> tuple[bool, list[Any], str]:
    """Walk a selective list until `wanted` appears: (found, the headers read, how the walk ended). The
    first page (the failed one, when the list broke off on an error) is remembered as `v.shown` for the
    note that follows."""
    chain = v.walk("ListIdentifiers", pairs, "header", label=label)
    headers = [h for page in chain.pages for h in page.items]
    found = any(child_text(h, "identifier") == wanted for h in headers)
    v.shown = chain.pages[0].fetched if chain.pages and chain.ending != "error" else chain.last
    return found, headers, chain.ending


def check_set_hierarchy(v: Validator, seen: list[Stamped]) -> None:
    """2.7.2: set=X, X a declared set with a declared descendant that a listed record is in, lists that
    record, and lists nothing outside X's part of the hierarchy."""
    if not v.set_specs:
        v.skip(["selective.set"], "no sets declared" if v.set_specs is not None else "ListSets not read whole")
        return
    choice = next(
        (
            (parent, s)
            for parent in sorted(v.set_specs)
            for s in seen
            if any(spec.startswith(parent + ":") for spec in s.sets)
        ),
        None,
    )
    if choice is None:
        v.skip(["selective.set"], "no listed record in a set with a declared parent")
        return
    parent, member = choice

    def within(specs: list[str]) -> bool:
        return not specs or any(s == parent or s.startswith(parent + ":") for s in specs)

    found, headers, ending = follow(v, f"ListIdentifiers set={parent}", [LI, DC, ("set", parent)], member.identifier)
    strays = [
        child_text(h, "identifier")
        for h in headers
        if not within([(s.text or "").strip() for s in h.findall(f"{OAI}setSpec")])
    ]
    sub = next(spec for spec in member.sets if spec.startswith(parent + ":"))
    if strays:
        v.note(
            "selective.set",
            FAIL,
            f"set={parent} listed {', '.join(strays[:3])}, in no set under {parent}",
            shown_by=v.shown,
        )
    elif found:
        v.note("selective.set", PASS, f"set={parent} lists {member.identifier} of its descendant {sub}")
    elif ending in ("complete", "no-records"):
        v.note(
            "selective.set",
            FAIL,
            f"set={parent} left out {member.identifier}, which is in {sub}: a set takes in its descendants",
        )
    elif ending != "max-pages":
        v.note("selective.set", FAIL, f"set={parent}: the list broke off ({ending})", shown_by=v.shown)
    else:
        v.skip(["selective.set"], f"set={parent}: {member.identifier} not found within --max-pages")
