"""What a run reports: the machine it ran on, one Check per table row, the table itself and the JSON."""

from __future__ import annotations

import argparse
import datetime as dt
import importlib.metadata
import os
import platform
import shutil
import sqlite3
import subprocess
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness import ROOT


def machine() -> dict[str, Any]:
    model = "unknown"
    with suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    mem_kb = 0
    with suppress(OSError):
        mem_kb = int(Path("/proc/meminfo").read_text().split()[1])
    versions = {}
    for dist in ("flask", "gunicorn", "sqlalchemy", "lxml", "requests", "sickle"):
        with suppress(importlib.metadata.PackageNotFoundError):
            versions[dist] = importlib.metadata.version(dist)
    commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    dirty = subprocess.run(["git", "status", "--porcelain"], cwd=ROOT, capture_output=True, text=True).stdout
    return {
        "nproc": os.cpu_count(),
        "cpu_model": model,
        "memory_gib": round(mem_kb / 2**20, 1),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "sqlite": sqlite3.sqlite_version,
        "packages": versions,
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "git_commit": commit,
        "git_dirty": bool(dirty.strip()),
        "loadavg_start": list(os.getloadavg()),
    }


@dataclass
class Check:
    group: str
    figure: str
    value: str
    target: str = ""
    passed: bool | None = None  # None: no target (information)
    note: str = ""


def print_report(
    args: argparse.Namespace, checks: list[Check], skipped: dict[str, str], results: dict[str, Any]
) -> dict[str, Any]:
    """The table on stdout (and the profiles' top functions); returns what goes into the JSON."""
    from rich.console import Console
    from rich.table import Table

    a = args
    table = Table(
        title=f"oaiserver benchmarks: N={a.records:,}, {a.workers} workers, page size {a.page_size}, "
        f"{os.cpu_count()} CPUs"
    )
    for col in ("group", "figure", "value", "target", "result", "notes"):
        table.add_column(col, overflow="fold")
    for c in checks:
        result = "" if c.passed is None else ("[green]PASS[/]" if c.passed else "[red]FAIL[/]")
        table.add_row(c.group, c.figure, c.value, c.target, result, c.note)
    for what, why in skipped.items():
        table.add_row(what, "SKIPPED", "", "", "[yellow]SKIP[/]", why)
    console = Console(width=max(shutil.get_terminal_size((200, 40)).columns, 200))
    console.print(table)
    for name, prof in results.get("profiles", {}).items():
        console.print(f"\n[bold]profile {name}[/]: {prof['what']}; {prof['samples']} samples; {prof['file']}")
        console.print("  inclusive %: " + "".join(f"\n    {pct:5.1f}  {f}" for pct, f in prof["inclusive"][:14]))
        console.print("  self %:      " + "".join(f"\n    {pct:5.1f}  {f}" for pct, f in prof["self"][:10]))
    return {
        "checks": [c.__dict__ for c in checks],
        "skipped": skipped,
        "results": results,
    }
