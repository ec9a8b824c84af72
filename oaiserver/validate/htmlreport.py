"""The report as one HTML page a partner's staff can read: the verdict, then each failure and warning in
words with the spec section it comes from, the requests that showed it (as links) and what to change,
then every rule in a table. Self-contained (no script, no external style) and escaped throughout."""

from __future__ import annotations

from collections.abc import Sequence
from html import escape

from oaiserver.validate.report import counts, summary
from oaiserver.validate.rules import FAIL, SPEC, WARN, Result, fix_for

STYLE = """
body { font: 15px/1.5 system-ui, sans-serif; max-width: 60em; margin: 2em auto; padding: 0 1em; color: #222; }
h1 { font-size: 1.4em; } h2 { font-size: 1.15em; margin-top: 2em; }
.FAIL { color: #b00020; } .WARN { color: #8a5a00; } .PASS { color: #1b6e20; } .SKIP { color: #777; }
section.problem { border-left: 4px solid #b00020; padding: .2em 1em; margin: 1em 0; background: #fdf3f4; }
section.problem.WARN { border-color: #c98a00; background: #fdf8ec; }
table { border-collapse: collapse; width: 100%; } td, th { text-align: left; padding: .25em .5em; vertical-align: top; }
tr:nth-child(even) { background: #f5f5f5; } code { font-size: .95em; word-break: break-all; }
"""


def html_report(url: str, results: Sequence[Result], requests_sent: int) -> str:
    n = counts(results)
    problems = [r for r in results if r.status in (FAIL, WARN)]
    head = (
        f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>OAI-PMH validation of {escape(url)}</title><style>{STYLE}</style></head><body>\n"
        f"<h1>OAI-PMH 2.0 validation of <code>{escape(url)}</code></h1>\n"
        f'<p class="{"FAIL" if n[FAIL] else "PASS"}"><strong>{escape(summary(results))}</strong> '
        f"({requests_sent} requests). A FAIL breaks a MUST of the "
        f'<a href="{SPEC}">specification</a>, a WARN a SHOULD.</p>\n'
    )
    body = [head]
    if problems:
        body.append("<h2>What to fix</h2>\n")
        body.extend(_problem(r) for r in problems)
    else:
        body.append("<p>Nothing to fix.</p>\n")
    body.append("<h2>Every rule</h2>\n<table><tr><th>Result</th><th>Rule</th><th>Section</th><th>Detail</th></tr>\n")
    body.extend(
        f'<tr><td class="{r.status}">{r.status}</td><td>{escape(r.name)}</td>'
        f"<td>{escape(r.section)} {r.level}</td><td>{escape(r.reason)}</td></tr>\n"
        for r in results
    )
    body.append("</table>\n</body></html>\n")
    return "".join(body)


def _problem(r: Result) -> str:
    links = "".join(f'<li><a href="{escape(u)}">{escape(u)}</a></li>' for u in r.requests)
    shown = f"<p>Seen in:</p><ul>{links}</ul>" if links else ""
    return (
        f'<section class="problem {r.status}"><h3><span class="{r.status}">{r.status}</span> '
        f"{escape(r.name)} <small>(section {escape(r.section)}, {r.level})</small></h3>"
        f"<p>{escape(r.reason)}</p>{shown}"
        f"<p><strong>What to change:</strong> {escape(fix_for(r.name))}.</p></section>\n"
    )
