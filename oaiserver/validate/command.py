"""`oaiserver validate URL`: the URL checked, the validator run behind a spinner on a terminal, the
report printed (lines, or JSON with --json) and, with --html, written as a page."""

from __future__ import annotations

import sys
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import Any, TextIO
from urllib.parse import urlsplit

from oaiserver.validate.core import MAX_REQUESTS, Validator
from oaiserver.validate.htmlreport import html_report
from oaiserver.validate.report import as_json, exit_code, report


def url_problem(url: str) -> str | None:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return "give an http:// or https:// base URL"
    if parts.query or parts.fragment:
        return "give the base URL without ?verb=... or #fragment"
    return None


def validate(
    url: str,
    *,
    max_pages: int = 50,
    timeout: float = 30.0,
    max_requests: int = MAX_REQUESTS,
    delay: float = 0.0,
    json_out: bool = False,
    html: Path | None = None,
    out: TextIO | None = None,
    err: TextIO | None = None,
) -> int:
    """Validate the base URL, print the report to `out` (stdout), return the exit code (1 on any FAIL)."""
    out = out or sys.stdout
    err = err or sys.stderr
    rich = out.isatty() and not json_out
    status: AbstractContextManager[Any] = nullcontext()
    progress: Callable[[str], None] | None = None
    if rich:
        from rich.console import Console

        spinner = Console(file=out).status(f"validating {url}")
        status = spinner

        def progress(subject: str) -> None:
            spinner.update(f"validating {url}: {subject}")

    validator = Validator(
        url, max_pages=max_pages, timeout=timeout, max_requests=max_requests, delay=delay, progress=progress
    )
    with status:
        results = validator.run()
    if validator.not_oai:
        err.write(f"{url} is not an OAI-PMH base URL: {validator.not_oai}\n")
    if html is not None:
        html.write_text(html_report(url, results, validator.sent), encoding="utf-8")
    if json_out:
        out.write(as_json(url, results, validator.sent))
        return exit_code(results)
    return report(results, out, rich=rich)
