"""From notes to the report: one result per rule (its failures first, then its warnings), printed
one line each with a summary; the exit code is 1 if any rule failed. A broken SHOULD rule is
reported as WARN (`rules.Rule.level`). The same results as JSON (`as_json`) for scripts and CI."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import TYPE_CHECKING, TextIO

from oaiserver.validate.rules import (
    FAIL,
    NOTHING_SEEN,
    PASS,
    RULE,
    SHOULD,
    SKIP,
    WARN,
    Note,
    Result,
    rule_names,
    section_and_level,
)

if TYPE_CHECKING:
    from oaiserver.validate.core import Validator

STYLES = {PASS: "green", FAIL: "bold red", WARN: "yellow", SKIP: "dim"}
SHOWN = 3  # notes quoted in a result's reason


def results(v: Validator) -> list[Result]:
    out = []
    for name in rule_names():
        r = result_of(name, v.notes.get(name, []), v.skipped, RULE[name].every if name in RULE else False)
        section, level = section_and_level(name)
        shown = [n for n in v.notes.get(name, []) if n.status == r.status and n.url][:SHOWN]
        requests = tuple(dict.fromkeys(n.url for n in shown))
        status = WARN if level == SHOULD and r.status == FAIL else r.status
        out.append(Result(r.name, status, r.reason, section, level, requests))
    return out


def result_of(name: str, notes: list[Note], skipped: dict[str, str], every: bool) -> Result:
    """A rule's result: SKIP without notes, else its first failures, else its first warnings, else PASS
    (counted for a rule checked on every response, its reasons joined otherwise)."""
    if not notes:
        return Result(name, SKIP, skipped.get(name, NOTHING_SEEN.get(name, "nothing to check")))
    for status in (FAIL, WARN):
        shown = [n for n in notes if n.status == status]
        if shown:
            more = f" (+{len(shown) - SHOWN} more)" if len(shown) > SHOWN else ""
            reason = "; ".join(f"{n.subject}: {n.reason}" if n.subject else n.reason for n in shown[:SHOWN]) + more
            return Result(name, status, reason)
    if every:
        said = list(dict.fromkeys(n.reason for n in notes if n.reason))
        return Result(name, PASS, "; ".join([f"{len(notes)} response(s)", *said]))
    return Result(name, PASS, "; ".join(n.reason for n in notes if n.reason))


def counts(results: Sequence[Result]) -> dict[str, int]:
    return {s: sum(1 for r in results if r.status == s) for s in (PASS, FAIL, WARN, SKIP)}


def summary(results: Sequence[Result]) -> str:
    n = counts(results)
    verdict = "FAILED" if n[FAIL] else "OK"
    return (
        f"{len(results)} checks: {n[PASS]} passed, {n[FAIL]} failed, {n[WARN]} warnings, {n[SKIP]} skipped: {verdict}"
    )


def exit_code(results: Sequence[Result]) -> int:
    return 1 if any(r.status == FAIL for r in results) else 0


def report(results: Sequence[Result], out: TextIO, rich: bool = False) -> int:
    """Print one line per rule and a summary; the exit code: 1 if any rule failed."""
    width = max(len(r.name) for r in results)
    if rich:
        from rich.console import Console
        from rich.text import Text

        console = Console(file=out, highlight=False, soft_wrap=True)
        for r in results:
            console.print(Text.assemble((r.status, STYLES[r.status]), "  ", r.name.ljust(width), "  ", r.reason))
        console.print(Text(summary(results), style=STYLES[FAIL] if exit_code(results) else STYLES[PASS]))
    else:
        for r in results:
            out.write(f"{r.status}  {r.name.ljust(width)}  {r.reason}\n")
        out.write(summary(results) + "\n")
    return exit_code(results)


def as_json(url: str, results: Sequence[Result], requests_sent: int) -> str:
    """The results for scripts: the URL, the counts, and one object per rule in report order."""
    doc = {
        "url": url,
        "ok": not exit_code(results),
        "counts": counts(results),
        "requests": requests_sent,
        "results": [
            {
                "rule": r.name,
                "status": r.status,
                "section": r.section,
                "level": r.level,
                "reason": r.reason,
                "requests": list(r.requests),
            }
            for r in results
        ],
    }
    return json.dumps(doc, indent=2, ensure_ascii=False) + "\n"
