"""From notes to the report: one result per rule (its failures first, then its warnings), printed
one line each with a summary; the exit code is 1 if any rule failed."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, TextIO

from oaiserver.validate.rules import FAIL, NOTHING_SEEN, PASS, RULES, SKIP, WARN, Note, Result, rule_names

if TYPE_CHECKING:
    from oaiserver.validate.core import Validator

STYLES = {PASS: "green", FAIL: "bold red", WARN: "yellow", SKIP: "dim"}


def results(v: Validator) -> list[Result]:
    every = {name: each for name, each, _ in RULES}
    return [result_of(name, v.notes.get(name, []), v.skipped, every.get(name, False)) for name in rule_names()]


def result_of(name: str, notes: list[Note], skipped: dict[str, str], every: bool) -> Result:
    """A rule's result: SKIP without notes, else its first failures, else its first warnings, else PASS
    (counted for a rule checked on every response, its reasons joined otherwise)."""
    if not notes:
        return Result(name, SKIP, skipped.get(name, NOTHING_SEEN.get(name, "nothing to check")))
    for status in (FAIL, WARN):
        shown = [n for n in notes if n.status == status]
        if shown:
            more = f" (+{len(shown) - 3} more)" if len(shown) > 3 else ""
            reason = "; ".join(f"{n.subject}: {n.reason}" if n.subject else n.reason for n in shown[:3]) + more
            return Result(name, status, reason)
    if every:
        return Result(name, PASS, f"{len(notes)} response(s)")
    return Result(name, PASS, "; ".join(n.reason for n in notes if n.reason))


def report(results: Sequence[Result], out: TextIO, rich: bool = False) -> int:
    """Print one line per rule and a summary; the exit code: 1 if any rule failed."""
    counts = {s: sum(1 for r in results if r.status == s) for s in (PASS, FAIL, WARN, SKIP)}
    width = max(len(r.name) for r in results)
    verdict = "FAILED" if counts[FAIL] else "OK"
    summary = (
        f"{len(results)} checks: {counts[PASS]} passed, {counts[FAIL]} failed, {counts[WARN]} warnings, "
        f"{counts[SKIP]} skipped: {verdict}"
    )
    if rich:
        from rich.console import Console
        from rich.text import Text

        console = Console(file=out, highlight=False, soft_wrap=True)
        for r in results:
            console.print(Text.assemble((r.status, STYLES[r.status]), "  ", r.name.ljust(width), "  ", r.reason))
        console.print(Text(summary, style=STYLES[FAIL] if counts[FAIL] else STYLES[PASS]))
    else:
        for r in results:
            out.write(f"{r.status}  {r.name.ljust(width)}  {r.reason}\n")
        out.write(summary + "\n")
    return 1 if counts[FAIL] else 0
