"""`oaiserver validate URL`: the URL checked, the validator run behind a spinner on a terminal, the
report printed."""

from __future__ import annotations

import sys
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from typing import Any, TextIO
from urllib.parse import urlsplit

from oaiserver.validate.core import Validator
from oaiserver.validate.report import report


def url_problem(url: str) -> str | None:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return "give an http:// or https:// base URL"
    if parts.query or parts.fragment:
        return "give the base URL without ?verb=... or #fragment"
    return None


def validate(url: str, *, max_pages: int = 50, timeout: float = 30.0, out: TextIO | None = None) -> int:
    """Validate the base URL, print the report to `out` (stdout), return the exit code."""
    out = out or sys.stdout
    rich = out.isatty()
    status: AbstractContextManager[Any] = nullcontext()
    progress: Callable[[str], None] | None = None
    if rich:
        from rich.console import Console

        spinner = Console(file=out).status(f"validating {url}")
        status = spinner

        def progress(subject: str) -> None:
            spinner.update(f"validating {url}: {subject}")

    with status:
        results = Validator(url, max_pages=max_pages, timeout=timeout, progress=progress).run()
    return report(results, out, rich=rich)
