"""The front door of both command lines: `--config` anywhere, `--version`, `python -m`, `oaiserver
init`, `ingest` without PATH, `--prune` that asks first, and a store that is missing or down said
on one line, never a traceback."""

from __future__ import annotations

import logging
import os
import pty
import re
import socket
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from importlib.metadata import version
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner, Result
from conftest import BASE_CONFIG, HERE, pg_url, stored

from harvester.cli import main as harvester_main
from oaiserver import config as config_mod
from oaiserver.cli import main as oaiserver_main
from oaiserver.store import Store

ROOT = HERE.parent
SEED = (ROOT / "seeds" / "000_44774e4221cac103.txt").read_bytes()
IDENTIFIER = "oai:test.example.org:{}"
PROGRAMS = {"oaiserver": oaiserver_main, "harvester": harvester_main}


def write_config(folder: Path, url: str = "sqlite:///data/store.sqlite3", **extra: Any) -> Path:
    """A configuration file in `folder` (made if missing) whose store is `url`."""
    folder.mkdir(parents=True, exist_ok=True)
    data: dict[str, Any] = {k: dict(v) if isinstance(v, dict) else v for k, v in BASE_CONFIG.items()}
    data["storage"] = {"url": url}
    data["sets"] = []
    data.update(extra)
    path = folder / "config.yaml"
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return path


def seeds_in(folder: Path, *names: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        (folder / f"{name}.txt").write_bytes(SEED)
    return folder


def cli(program: str, *args: str, input: str | None = None, env: dict[str, str | None] | None = None) -> Result:
    """Run a program as a user would, without $OAI_CONFIG or $OAI_STORAGE_URL unless `env` sets them."""
    unset: dict[str, str | None] = {config_mod.ENV_CONFIG: None, config_mod.ENV_STORAGE_URL: None}
    return CliRunner().invoke(PROGRAMS[program], list(args), input=input, env={**unset, **(env or {})})


def counts(url: str) -> dict[str, int]:
    store = Store(url)
    try:
        return store.counts()
    finally:
        store.close()


def closed_port() -> int:
    """A port on 127.0.0.1 that nobody listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def root_level() -> Iterator[None]:
    """Tests that turn on --verbose leave the root logger as they found it."""
    level = logging.getLogger().level
    yield
    logging.getLogger().setLevel(level)


# ---- --config and --verbose, before or after the subcommand ----------------------------------


def test_config_is_accepted_after_the_subcommand(tmp_path: Path) -> None:
    a = write_config(tmp_path / "a", partners=[{"name": "alpha", "base_url": "http://127.0.0.1:9/oai"}])
    b = write_config(tmp_path / "b", partners=[{"name": "beta", "base_url": "http://127.0.0.1:9/oai"}])
    seeds = seeds_in(tmp_path / "seeds", "one", "two")
    assert cli("oaiserver", "ingest", str(seeds), "--config", str(b)).exit_code == 0
    assert cli("oaiserver", "stats", "--config", str(b)).output == "records: 2 live, 0 deleted\n"
    assert cli("oaiserver", "stats", "-c", str(b)).output == "records: 2 live, 0 deleted\n"
    # After the subcommand wins over before it.
    assert cli("oaiserver", "--config", str(a), "stats", "--config", str(b)).output.startswith("records: 2 live")
    assert not (tmp_path / "a" / "data").exists(), "the file given before the subcommand was not used"
    status = cli("harvester", "--config", str(a), "status", "--config", str(b))
    assert status.exit_code == 0 and "beta" in status.output and "alpha" not in status.output
    status = cli("harvester", "status", "-c", str(a))  # a's store does not exist (yet)
    assert status.exit_code == 1 and str(tmp_path / "a" / "data" / "store.sqlite3") in status.output


def test_config_still_comes_from_the_environment_and_the_default(tmp_path: Path, monkeypatch: Any) -> None:
    here = write_config(tmp_path / "here")
    there = write_config(tmp_path / "there")
    seeds_in(tmp_path / "there" / "seeds", "one")
    monkeypatch.chdir(tmp_path / "here")
    assert cli("oaiserver", "ingest", env={config_mod.ENV_CONFIG: str(there)}).exit_code == 0
    assert (tmp_path / "there" / "data" / "store.sqlite3").exists()
    # ./config.yaml when neither is given: `here` has no store yet.
    out = cli("oaiserver", "stats").output
    assert str(here.parent / "data" / "store.sqlite3") in out
    # --config after the subcommand beats $OAI_CONFIG.
    assert cli("oaiserver", "stats", "-c", str(there), env={config_mod.ENV_CONFIG: str(here)}).output == (
        "records: 1 live, 0 deleted\n"
    )


@pytest.mark.parametrize("program", sorted(PROGRAMS))
@pytest.mark.parametrize("where", ["before", "after"])
def test_verbose_is_accepted_before_or_after_the_subcommand(
    tmp_path: Path, program: str, where: str, root_level: None
) -> None:
    config = write_config(tmp_path)
    Store(f"sqlite:///{tmp_path / 'data' / 'store.sqlite3'}").close()
    logging.getLogger().setLevel(logging.WARNING)
    command = "stats" if program == "oaiserver" else "status"
    args = ["-v", command] if where == "before" else [command, "--verbose"]
    result = cli(program, "-c", str(config), *args)
    assert result.exit_code == 0, result.output
    assert logging.getLogger().level == logging.DEBUG


@pytest.mark.parametrize("program", sorted(PROGRAMS))
def test_every_subcommand_lists_config_and_verbose_in_its_help(program: str) -> None:
    group = PROGRAMS[program]
    for name in group.commands:
        text = cli(program, name, "--help").output
        assert "--config" in text and "--verbose" in text, name


# ---- --version and python -m ---------------------------------------------------------------


@pytest.mark.parametrize("program", sorted(PROGRAMS))
def test_version_is_the_package_version(program: str) -> None:
    result = cli(program, "--version")
    assert result.exit_code == 0
    assert result.output == f"{program}, version {version('oai-repository')}\n"


@pytest.mark.parametrize("program", sorted(PROGRAMS))
def test_python_dash_m_runs_each_program(program: str, tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", program, "--version"], capture_output=True, text=True, timeout=60, cwd=tmp_path
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == f"{program}, version {version('oai-repository')}\n"
    done = subprocess.run([sys.executable, "-m", program, "--help"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and f"Usage: {program} [OPTIONS] COMMAND" in done.stdout


# ---- oaiserver init --------------------------------------------------------------------------


def keys_of(data: Any, prefix: str = "") -> Iterator[str]:
    """Dotted keys of a configuration mapping; the items of `sets` and `partners` under their list's name."""
    if isinstance(data, dict):
        for key, value in data.items():
            dotted = f"{prefix}.{key}" if prefix else str(key)
            yield dotted
            if dotted in ("repository", "storage", "server", "harvester"):
                yield from keys_of(value, dotted)
            elif dotted in ("sets", "partners") and isinstance(value, list):
                for item in value:
                    yield from (f"{dotted}.{k}" for k in item)


def uncommented(text: str) -> str:
    """The template with its commented-out settings (`# key: value`, `#   - key: value`) switched on."""
    return re.sub(r"^(\s*)# ((?:- )?[a-z_]+:(?: |$)|  )", r"\1\2", text, flags=re.MULTILINE)


def test_init_writes_a_commented_configuration_that_loads(tmp_path: Path, monkeypatch: Any) -> None:
    monkeypatch.chdir(tmp_path)
    result = cli("oaiserver", "init")
    assert result.exit_code == 0, result.output
    path = tmp_path / "config.yaml"
    text = path.read_text(encoding="utf-8")
    assert str(path) in result.output
    assert sum(line.lstrip().startswith("#") for line in text.splitlines()) >= 20, "the file explains itself"
    cfg = config_mod.load(path)
    assert cfg.storage_url == f"sqlite:///{tmp_path / 'data' / 'oai.sqlite3'}"
    partner_keys = {f"partners.{k}" for k in config_mod.PARTNER_KEYS}
    set_keys = {"sets.spec", "sets.name", "sets.description", "sets.match"}
    real = set(config_mod.KEYS) | {"repository", "storage", "server", "harvester"} | partner_keys | set_keys
    for variant in (text, uncommented(text)):
        data = yaml.safe_load(variant)
        assert set(keys_of(data)) <= real, set(keys_of(data)) - real
    switched_on = tmp_path / "all.yaml"
    switched_on.write_text(uncommented(text), encoding="utf-8")
    full = config_mod.load(switched_on)  # every commented-out example is a valid setting
    assert full.partners and full.sets and full.secret
    assert set(keys_of(yaml.safe_load(uncommented(text)))) >= set(config_mod.KEYS)


def test_init_takes_a_path_and_never_overwrites_without_force(tmp_path: Path) -> None:
    path = tmp_path / "etc" / "oai.yaml"
    assert cli("oaiserver", "init", str(path)).exit_code == 0
    path.write_text("# mine\n", encoding="utf-8")
    again = cli("oaiserver", "init", str(path))
    assert again.exit_code == 1
    assert again.output == f"Error: {path} already exists (--force replaces it)\n"
    assert path.read_text(encoding="utf-8") == "# mine\n"
    assert cli("oaiserver", "init", str(path), "--force").exit_code == 0
    config_mod.load(path)


def test_init_writes_the_file_the_other_commands_read(tmp_path: Path) -> None:
    path = tmp_path / "site.yaml"
    assert cli("oaiserver", "--config", str(path), "init").exit_code == 0
    seeds_in(tmp_path / "seeds", "one")
    result = cli("oaiserver", "ingest", "-c", str(path))
    assert result.exit_code == 0 and "1 added" in result.output
    assert (tmp_path / "data" / "oai.sqlite3").exists()


# ---- ingest: PATH defaults to `seeds`; relative paths follow the configuration file ----------


def test_ingest_without_path_reads_the_configured_seeds_folder(tmp_path: Path, monkeypatch: Any) -> None:
    config = write_config(tmp_path / "site", seeds="docs/seeds")
    seeds_in(tmp_path / "site" / "docs" / "seeds", "one", "two")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    result = cli("oaiserver", "ingest", "-c", str(config))
    assert result.exit_code == 0, result.output
    assert "2 file(s): 2 added" in result.output
    assert counts(f"sqlite:///{tmp_path / 'site' / 'data' / 'store.sqlite3'}")["live"] == 2
    assert not (elsewhere / "data").exists(), "the store's relative path follows the configuration file"


def test_a_missing_seeds_folder_is_one_line(tmp_path: Path) -> None:
    config = write_config(tmp_path, seeds="nothing/here")
    result = cli("oaiserver", "ingest", "-c", str(config))
    assert result.exit_code == 2
    assert result.output.strip().splitlines()[-1] == (
        f"Error: Invalid value for '[PATH]': seeds: {tmp_path / 'nothing' / 'here'} does not exist"
    )


def test_an_absolute_path_and_the_environment_are_taken_as_given(tmp_path: Path, monkeypatch: Any) -> None:
    absolute = tmp_path / "abs" / "store.sqlite3"
    config = write_config(tmp_path / "site", url=f"sqlite:///{absolute}")
    assert config_mod.load(config).storage_url == f"sqlite:///{absolute}"
    monkeypatch.setenv(config_mod.ENV_STORAGE_URL, "sqlite:///rel/store.sqlite3")
    assert config_mod.load(config).storage_url == "sqlite:///rel/store.sqlite3", "a path given at the shell is cwd's"


# ---- a store that does not exist is not created by reading it ------------------------------


READERS = [
    ("oaiserver", ["stats"]),
    ("oaiserver", ["export", "{tmp}/out.jsonl"]),
    ("oaiserver", ["delete", "oai:test.example.org:x"]),
    ("oaiserver", ["ingest", "--dry-run", "--prune", "{tmp}/seeds"]),
    ("harvester", ["status"]),
    ("harvester", ["history", "p"]),
]


@pytest.mark.parametrize(("program", "args"), READERS, ids=[" ".join(a[:1]) for _, a in READERS])
def test_a_reading_command_does_not_create_a_missing_store(tmp_path: Path, program: str, args: list[str]) -> None:
    config = write_config(tmp_path / "site", partners=[{"name": "p", "base_url": "http://127.0.0.1:9/oai"}])
    seeds_in(tmp_path / "seeds", "one")
    result = cli(program, "-c", str(config), *(a.format(tmp=tmp_path) for a in args))
    path = tmp_path / "site" / "data" / "store.sqlite3"
    assert result.exit_code == 1
    assert result.output == (
        f"Error: configuration: storage.url: cannot open sqlite:///{path}: there is no store there yet "
        "(oaiserver ingest, oaiserver import or harvester run create it)\n"
    )
    assert not (tmp_path / "site" / "data").exists() and not (tmp_path / "out.jsonl").exists()


# ---- a store that cannot be reached: one line naming storage.url, no traceback ---------------

ALL_COMMANDS = [
    ("oaiserver", ["ingest", "{tmp}/seeds"]),
    ("oaiserver", ["ingest", "--dry-run", "{tmp}/seeds"]),
    ("oaiserver", ["delete", "oai:x:1"]),
    ("oaiserver", ["stats"]),
    ("oaiserver", ["export", "{tmp}/out.jsonl"]),
    ("oaiserver", ["import", "{tmp}/dump.jsonl"]),
    ("harvester", ["run", "--retries", "0"]),
    ("harvester", ["status"]),
    ("harvester", ["history", "p"]),
    ("harvester", ["schedule"]),
]


def unreachable(tmp_path: Path, case: str) -> tuple[str, str]:
    """(storage.url, what the line must say) for each way a store cannot be reached."""
    if case == "closed-port":
        port = closed_port()
        return (
            f"postgresql://postgres:s3cret@127.0.0.1:{port}/x",
            rf"cannot open postgresql://postgres:\*\*\*@127\.0\.0\.1:{port}/x: .*(refused|failed)",
        )
    if case == "no-such-database":
        pg_url()  # skips without PostgreSQL (conftest's one rule)
        return (
            "postgresql://postgres@127.0.0.1:5432/nosuchdb_xyz",
            r"cannot open postgresql://postgres@127\.0\.0\.1:5432/nosuchdb_xyz: "
            r'.*database "nosuchdb_xyz" does not exist',
        )
    blocker = tmp_path / "blocker"
    blocker.write_text("a file where the store's folder should be\n")
    return f"sqlite:///{blocker}/data/store.sqlite3", r"cannot open sqlite:///.*/blocker/data/store\.sqlite3: "


@pytest.mark.parametrize("case", ["closed-port", "no-such-database", "folder-that-cannot-be"])
def test_an_unreachable_store_is_one_line_from_every_command(tmp_path: Path, case: str) -> None:
    """Every command but `serve`, which says the same line and then waits for the store,
    answering 503 (tests/test_served.py)."""
    url, said = unreachable(tmp_path, case)
    config = write_config(tmp_path, url=url, partners=[{"name": "p", "base_url": "http://127.0.0.1:9/oai"}])
    seeds_in(tmp_path / "seeds", "one")
    (tmp_path / "dump.jsonl").write_text("")
    for program, args in ALL_COMMANDS:
        for before in (True, False):
            given = [a.format(tmp=tmp_path) for a in args]
            argv = ["-c", str(config), *given] if before else [*given, "-c", str(config)]
            result = cli(program, *argv)
            shown = f"{program} {argv}: {result.output!r}"
            assert result.exit_code == 1 and isinstance(result.exception, SystemExit), shown
            assert "Traceback" not in result.output and "s3cret" not in result.output, shown
            lines = result.output.splitlines()
            assert len(lines) == 1 and lines[0].startswith("Error: configuration: storage.url: "), shown
            assert re.search(said, lines[0]), shown


def test_a_store_that_fails_under_a_command_is_one_line(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    seeds = seeds_in(tmp_path / "seeds", "one")
    path = tmp_path / "data" / "store.sqlite3"
    Store(f"sqlite:///{path}").close()
    with sqlite3.connect(path) as db:
        db.execute("CREATE TRIGGER refuse BEFORE INSERT ON records BEGIN SELECT RAISE(ABORT, 'disk says no'); END")
    result = cli("oaiserver", "ingest", str(seeds), "-c", str(config))
    assert result.exit_code == 1 and isinstance(result.exception, SystemExit)
    assert result.output == (
        f"Error: the record store failed (storage.url: sqlite:///{path}): IntegrityError: disk says no\n"
    )


# ---- ingest --prune asks first; --yes; --dry-run -------------------------------------------


@pytest.fixture
def pruning(tmp_path: Path, store_url: str) -> tuple[Path, Path, str]:
    """A store (SQLite, PostgreSQL) holding `keep` and three records whose seed files have gone."""
    config = write_config(tmp_path, url=store_url)
    seeds = seeds_in(tmp_path / "seeds", "keep", "gone1", "gone2", "gone3")
    assert cli("oaiserver", "ingest", str(seeds), "-c", str(config)).exit_code == 0
    for name in ("gone1", "gone2", "gone3"):
        (seeds / f"{name}.txt").unlink()
    return config, seeds, store_url


def datestamps(url: str) -> dict[str, int | None]:
    store = Store(url)
    try:
        return {i: stored(store, i).datestamp for i in sorted(store.identifiers())}
    finally:
        store.close()


GONE = [IDENTIFIER.format(n) for n in ("gone1", "gone2", "gone3")]


def test_prune_without_a_terminal_refuses_and_says_how(pruning: tuple[Path, Path, str]) -> None:
    config, seeds, url = pruning
    before = datestamps(url)
    result = cli("oaiserver", "ingest", "--prune", str(seeds), "-c", str(config), input="y\n")
    assert result.exit_code == 1
    lines = result.output.splitlines()
    assert lines[0] == f"--prune would make tombstones of 3 record(s) whose seed file is gone from {seeds}:"
    assert lines[1:4] == [f"  {i}" for i in GONE]
    assert lines[-1] == (
        "Error: --prune deletes for good and asks first, but there is no terminal to ask: "
        "add --yes to go ahead, or --dry-run to only see what it would do"
    )
    assert counts(url) == {"live": 4, "deleted": 0} and datestamps(url) == before


def test_prune_with_yes_makes_the_tombstones(pruning: tuple[Path, Path, str]) -> None:
    config, seeds, url = pruning
    result = cli("oaiserver", "ingest", "--prune", "--yes", str(seeds), "-c", str(config))
    assert result.exit_code == 0, result.output
    assert result.output.splitlines()[-1] == "1 file(s): 0 added, 0 changed, 1 unchanged, 0 failed, 3 pruned"
    assert counts(url) == {"live": 1, "deleted": 3}


def test_dry_run_shows_and_changes_nothing(pruning: tuple[Path, Path, str]) -> None:
    config, seeds, url = pruning
    (seeds / "new.txt").write_bytes(SEED)
    (seeds / "keep.txt").write_bytes(SEED.replace(b"Rights", b"Rights\nReuse welcome.", 1))
    before = datestamps(url)
    result = cli("oaiserver", "ingest", "--prune", "--dry-run", str(seeds), "-c", str(config))
    assert result.exit_code == 0, result.output
    assert result.output.splitlines() == [
        f"--prune would make tombstones of 3 record(s) whose seed file is gone from {seeds}:",
        *(f"  {i}" for i in GONE),
        "dry run, nothing written: 2 file(s): 1 added, 1 changed, 0 unchanged, 0 failed, 3 pruned",
    ]
    assert datestamps(url) == before and counts(url) == {"live": 4, "deleted": 0}


def test_prune_lists_the_first_twenty_and_a_count(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    names = [f"doc{n:02}" for n in range(25)]
    seeds = seeds_in(tmp_path / "seeds", "keep", *names)
    assert cli("oaiserver", "ingest", str(seeds), "-c", str(config)).exit_code == 0
    for name in names:
        (seeds / f"{name}.txt").unlink()
    lines = cli("oaiserver", "ingest", "--prune", "--dry-run", str(seeds), "-c", str(config)).output.splitlines()
    assert lines[0].startswith("--prune would make tombstones of 25 record(s)")
    assert lines[1:22] == [*(f"  {IDENTIFIER.format(n)}" for n in names[:20]), "  … and 5 more"]


def ingest_on_a_terminal(config: Path, seeds: Path, answer: bytes) -> tuple[int, str, str]:
    """`oaiserver ingest --prune` with a real terminal on stdin, answering `answer`: (exit code,
    stdout, stderr). The answer is echoed on the terminal, not on stdout."""
    parent, child = pty.openpty()
    try:
        proc = subprocess.Popen(
            [sys.executable, "-m", "oaiserver", "ingest", "--prune", str(seeds), "-c", str(config)],
            stdin=child,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env={k: v for k, v in os.environ.items() if k not in (config_mod.ENV_CONFIG, config_mod.ENV_STORAGE_URL)},
        )
        os.write(parent, answer)
        out, err = proc.communicate(timeout=60)
    finally:
        os.close(parent)
        os.close(child)
    return proc.returncode, out.decode(), err.decode()


@pytest.mark.parametrize(("answer", "code", "live"), [(b"n\n", 1, 4), (b"\n", 1, 4), (b"y\n", 0, 1)])
def test_prune_on_a_terminal_asks_before_deleting(
    pruning: tuple[Path, Path, str], answer: bytes, code: int, live: int
) -> None:
    config, seeds, url = pruning
    returncode, out, err = ingest_on_a_terminal(config, seeds, answer)
    assert returncode == code, (out, err)
    assert out.splitlines()[4] == "Make tombstones of these 3 record(s) for good? [y/N]: " + (
        "1 file(s): 0 added, 0 changed, 1 unchanged, 0 failed, 3 pruned" if code == 0 else ""
    )
    assert counts(url)["live"] == live
    assert err == ("Aborted: nothing ingested, nothing deleted.\n" if code else "")
