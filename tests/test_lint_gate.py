"""The lint gate: CI lints and type-checks all our Python (code, tests and benchmarks) with tools pinned
exactly, so a new ruff or mypy release cannot turn the gate red (or green) on its own."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tomllib

import pytest
from conftest import HERE

ROOT = HERE.parent
MAKE = shutil.which("make")
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
OUR_PYTHON = ["oaiserver", "harvester", "tests", "bench", "docs"]


def lint_commands(tmp_path_factory: pytest.TempPathFactory) -> list[list[str]]:
    """The commands `make lint` runs, each split into words, in a copy whose tools count as installed."""
    assert MAKE is not None
    folder = tmp_path_factory.mktemp("clone")
    for name in ("Makefile", "pyproject.toml"):
        shutil.copy(ROOT / name, folder / name)
    (folder / ".venv").mkdir()
    for when, stamp in enumerate((".installed-run", ".installed-dev"), start=1):
        (folder / ".venv" / stamp).touch()
        os.utime(folder / ".venv" / stamp, (2_000_000_000 + when, 2_000_000_000 + when))
    out = subprocess.run([MAKE, "-n", "lint"], cwd=folder, capture_output=True, text=True, check=True).stdout
    return [line.split() for line in out.splitlines() if line.strip()]


@pytest.mark.skipif(MAKE is None, reason="make is not installed")
@pytest.mark.parametrize("tool", [["ruff", "check"], ["ruff", "format", "--check"], ["mypy"]])
def test_make_lint_covers_code_tests_and_benchmarks(tmp_path_factory: pytest.TempPathFactory, tool: list[str]) -> None:
    runs = [words for words in lint_commands(tmp_path_factory) if words[0].endswith("/" + tool[0])]
    matching = [words for words in runs if words[1 : len(tool)] == tool[1:]]
    assert matching, f"make lint does not run {' '.join(tool)}"
    paths = matching[0][len(tool) :]
    assert paths == OUR_PYTHON, f"{' '.join(tool)} runs over {paths}, not {OUR_PYTHON}"


def test_ci_runs_the_lint_gate() -> None:
    assert re.search(r"^make lint$", (ROOT / ".ci" / "run").read_text(encoding="utf-8"), re.MULTILINE)


def test_lint_tools_and_stubs_are_pinned_exactly() -> None:
    dev = PYPROJECT["project"]["optional-dependencies"]["dev"]
    names = {re.split(r"[<>=!~\[ ;]", spec, maxsplit=1)[0].lower(): spec for spec in dev}
    pinned = {"ruff", "mypy"} | {name for name in names if name.startswith("types-")}
    assert {"ruff", "mypy"} <= set(names)
    for name in sorted(pinned):
        assert re.fullmatch(rf"{re.escape(name)}==[0-9][0-9A-Za-z.]*", names[name], re.IGNORECASE), (
            f"pin {names[name]!r} exactly, as {name}==X.Y.Z"
        )
