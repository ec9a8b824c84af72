"""The front door: what `make run` and `make test` install, the browser tests' skip rule, and
the packaging a fresh clone builds."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from conftest import HERE, browser_skip_reason

ROOT = HERE.parent
MAKE = shutil.which("make")
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))

needs_make = pytest.mark.skipif(MAKE is None, reason="make is not installed")


def plan(folder: Path, target: str, **env: str) -> str:
    """What `make -n TARGET` would run in `folder` (a copy of the Makefile and pyproject.toml)."""
    assert MAKE is not None
    result = subprocess.run(
        [MAKE, "-n", target], cwd=folder, capture_output=True, text=True, check=True, env={**os.environ, **env}
    )
    return result.stdout


@pytest.fixture
def clone(tmp_path: Path) -> Path:
    for name in ("Makefile", "pyproject.toml"):
        shutil.copy(ROOT / name, tmp_path / name)
    os.utime(tmp_path / "pyproject.toml", (1_700_000_000, 1_700_000_000))
    return tmp_path


def stamp(folder: Path, name: str, when: int) -> None:
    path = folder / ".venv" / name
    path.parent.mkdir(exist_ok=True)
    path.touch()
    os.utime(path, (when, when))


def installs(commands: str) -> list[str]:
    """What each `pip install` of a plan installs."""
    return [line.rsplit(" -e ", 1)[1] for line in commands.splitlines() if "pip install" in line]


@needs_make
def test_make_run_installs_only_what_running_needs(clone: Path) -> None:
    assert installs(plan(clone, "run")) == ["'.[postgres]'"]


@needs_make
def test_make_test_then_adds_only_the_dev_tools(clone: Path) -> None:
    stamp(clone, ".installed-run", 1_700_000_100)
    assert installs(plan(clone, "test")) == ["'.[postgres,dev]'"]
    for target in ("lint", "bench", "venv"):
        assert installs(plan(clone, target)) == ["'.[postgres,dev]'"], target


@needs_make
def test_nothing_is_installed_twice(clone: Path) -> None:
    stamp(clone, ".installed-run", 1_700_000_100)
    stamp(clone, ".installed-dev", 1_700_000_200)
    for target in ("run", "test", "lint", "demo"):
        assert installs(plan(clone, target)) == [], target


@needs_make
def test_a_changed_pyproject_installs_both_again(clone: Path) -> None:
    stamp(clone, ".installed-run", 1_600_000_100)
    stamp(clone, ".installed-dev", 1_600_000_200)
    assert installs(plan(clone, "test")) == ["'.[postgres]'", "'.[postgres,dev]'"]


def pytest_command(commands: str) -> list[str]:
    """The arguments of the one pytest command of a plan."""
    (line,) = [line for line in commands.splitlines() if line.startswith(".venv/bin/pytest")]
    return line.split()[1:]


@needs_make
def test_make_test_runs_the_suite_on_every_core_and_in_one_process_when_asked(clone: Path) -> None:
    stamp(clone, ".installed-run", 1_700_000_100)
    stamp(clone, ".installed-dev", 1_700_000_200)
    assert pytest_command(plan(clone, "test")) == ["-n", "auto", "--dist", "loadgroup"]
    assert pytest_command(plan(clone, "test", PYTEST_ARGS="-n0")) == ["-n0"]
    dev = PYPROJECT["project"]["optional-dependencies"]["dev"]
    assert any(spec.startswith("pytest-xdist>=") for spec in dev)


def test_the_runtime_needs_no_dev_tool() -> None:
    runtime = " ".join(PYPROJECT["project"]["dependencies"])
    for tool in ("pytest", "hypothesis", "ruff", "mypy", "selenium"):
        assert tool not in runtime


# ---- the browser tests: run, or skip saying why (never skip with CI set) -------------------------


def executables(folder: Path, *names: str) -> str:
    """A PATH of one folder holding executables called `names`."""
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        path = folder / name
        path.write_text("#!/bin/sh\nexit 0\n")
        path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return str(folder)


@pytest.mark.parametrize(
    ("on_path", "ci", "skipped_for"),
    [
        (("chromium", "chromedriver"), "", None),
        (("chromium",), "", "chromedriver not found on PATH"),
        (("chromedriver",), "", "chromium not found on PATH"),
        ((), "", "chromium and chromedriver not found on PATH"),
        ((), "1", None),  # CI: they run, and fail without a browser
        (("chromium",), "true", None),
    ],
)
def test_browser_skip_rule(tmp_path: Path, on_path: tuple[str, ...], ci: str, skipped_for: str | None) -> None:
    environ = {"PATH": executables(tmp_path / "bin", *on_path), "CI": ci}
    reason = browser_skip_reason(environ)
    if skipped_for is None:
        assert reason is None
    else:
        assert reason is not None and reason.startswith(skipped_for) and "make browser" in reason


def test_without_chromium_the_browser_tests_skip_with_the_reason(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "CI"}
    env["PATH"] = executables(tmp_path / "bin")
    result = subprocess.run(
        [sys.executable, "-m", "pytest", str(HERE / "test_browser.py"), "-p", "no:randomly", "-q"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env=env,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "chromium and chromedriver not found on PATH: `make browser` installs" in result.stdout
    assert " skipped" in result.stdout and "passed" not in result.stdout and "failed" not in result.stdout


@needs_make
@pytest.mark.parametrize(
    ("on_path", "ci", "code", "says"),
    [
        (("id", "chromium", "chromedriver"), "", 0, ""),
        (
            ("id",),
            "",
            0,
            "chromium and chromedriver are missing (installing them needs root and apt-get): "
            "the browser tests will be skipped",
        ),
        (("id",), "1", 2, "CI is set: failing"),
    ],
)
def test_make_browser_without_apt(tmp_path: Path, on_path: tuple[str, ...], ci: str, code: int, says: str) -> None:
    """Without apt-get (or root), `make browser` does not fail `make test`; with CI set it does."""
    assert MAKE is not None
    env = {"PATH": executables(tmp_path / "bin", *[n for n in on_path if n != "id"]), "CI": ci}
    if "id" in on_path:
        (tmp_path / "bin" / "id").symlink_to(shutil.which("id") or "/usr/bin/id")
    result = subprocess.run([MAKE, "-s", "browser"], cwd=ROOT, capture_output=True, text=True, env=env)
    assert result.returncode == code, result.stdout + result.stderr
    assert says in result.stdout + result.stderr
    if not says:
        assert result.stdout + result.stderr == ""


@needs_make
@pytest.mark.parametrize(
    ("ci", "code", "says"), [("", 0, "accessibility checks will be skipped"), ("1", 2, "CI is set")]
)
def test_make_browser_without_npm(tmp_path: Path, ci: str, code: int, says: str) -> None:
    """axe-core comes from tests/browser/package-lock.json through npm: without npm (nor root
    and apt-get to install it), the accessibility checks skip, saying why; with CI set, it fails."""
    assert MAKE is not None
    shutil.copy(ROOT / "Makefile", tmp_path / "Makefile")
    (tmp_path / "tests" / "browser").mkdir(parents=True)
    for name in ("package.json", "package-lock.json"):
        shutil.copy(ROOT / "tests" / "browser" / name, tmp_path / "tests" / "browser" / name)
    env = {"PATH": executables(tmp_path / "bin", "chromium", "chromedriver"), "CI": ci}
    (tmp_path / "bin" / "id").symlink_to(shutil.which("id") or "/usr/bin/id")
    result = subprocess.run([MAKE, "-s", "browser"], cwd=tmp_path, capture_output=True, text=True, env=env)
    assert result.returncode == code, result.stdout + result.stderr
    assert says in result.stdout + result.stderr
    assert not (tmp_path / "tests" / "browser" / "node_modules").exists()


# ---- packaging ---------------------------------------------------------------------------------


def test_every_folder_of_the_packages_is_listed() -> None:
    """setuptools warns about (and will stop shipping) a folder inside a package that is not listed."""
    listed = set(PYPROJECT["tool"]["setuptools"]["packages"])
    for top in ("oaiserver", "harvester"):
        for folder in [ROOT / top, *(p for p in (ROOT / top).rglob("*") if p.is_dir())]:
            if folder.name == "__pycache__":
                continue
            assert ".".join(folder.relative_to(ROOT).parts) in listed, folder


def test_license_file_matches_the_declared_license() -> None:
    assert PYPROJECT["project"]["license"] == "MIT"
    text = (ROOT / "LICENSE").read_text(encoding="utf-8")
    assert text.startswith("MIT License\n")
    assert "Permission is hereby granted, free of charge" in text
