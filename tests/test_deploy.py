"""Deployment files, checked without Docker: the Dockerfile copies what exists and runs commands
the package has; compose.yaml shares one PostgreSQL store between ingest, server and harvester;
the systemd units run as their own user, restart, and are hardened."""

from __future__ import annotations

import fnmatch
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import click
import pytest
import sqlalchemy as sa
import yaml
from conftest import HERE

from harvester.cli import main as harvester_main
from oaiserver import config as config_mod
from oaiserver.cli import main as oaiserver_main

ROOT = HERE.parent
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
PROGRAMS: dict[str, click.Command] = {"oaiserver": oaiserver_main, "harvester": harvester_main}
UNITS = sorted((ROOT / "deploy" / "systemd").glob("*.service"))


def dockerfile() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of the Dockerfile, continuation lines joined."""
    text = re.sub(r"\\\n", " ", (ROOT / "Dockerfile").read_text(encoding="utf-8"))
    steps = []
    for line in text.splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            op, _, args = line.strip().partition(" ")
            steps.append((op.upper(), args.strip()))
    return steps


def stages() -> list[list[tuple[str, str]]]:
    out: list[list[tuple[str, str]]] = []
    for op, args in dockerfile():
        if op == "FROM":
            out.append([])
        out[-1].append((op, args))
    return out


def words(args: str) -> list[str]:
    """An exec-form (JSON) or shell-form argument list."""
    return yaml.safe_load(args) if args.startswith("[") else shlex.split(args)


def env_of(stage: list[tuple[str, str]]) -> dict[str, str]:
    env: dict[str, str] = {}
    for op, args in stage:
        if op == "ENV":
            for pair in shlex.split(args):
                key, _, value = pair.partition("=")
                env[key] = value
    return env


def image_copies() -> dict[str, str]:
    """Where the image holds each file or folder it copies from the checkout -> that checkout path."""
    run = stages()[-1]
    return {shlex.split(args)[-1]: shlex.split(args)[0] for op, args in run if op == "COPY" and "--from" not in args}


def check_command(argv: list[str]) -> None:
    """argv is `oaiserver|harvester COMMAND [options] [arguments]` that click accepts (a path in
    the image stands for what the image copies there)."""
    program = Path(argv[0]).name
    assert program in PYPROJECT["project"]["scripts"], argv
    group = PROGRAMS[program]
    assert isinstance(group, click.Group)
    rest = [str(ROOT / image_copies()[a]) if a in image_copies() else a for a in argv[1:]]
    command = group.commands.get(rest[0])
    assert command is not None, f"{program} has no command {rest[0]!r}"
    ctx = click.Context(command, info_name=rest[0])
    command.parse_args(ctx, rest[1:])  # raises on an unknown option or a missing argument


def test_the_image_is_small_and_runs_as_its_own_user() -> None:
    build, run = stages()
    assert all(args.split()[0].startswith("python:") and "-slim" in args for (op, args) in (build[0], run[0]))
    installs = [args for op, args in build if op == "RUN" and "pip install" in args]
    assert installs and all("--no-cache-dir" in args for args in installs)
    extra = re.search(r"'\.\[(\w+)\]'", installs[-1])
    assert extra and extra.group(1) in PYPROJECT["project"]["optional-dependencies"]
    assert not any(op == "COPY" and "--from" not in args for op, args in run if "/opt/" in args)
    users = [args for op, args in run if op == "USER"]
    assert users and users[-1] not in ("root", "0")


def test_every_path_the_dockerfile_copies_exists_and_is_in_the_context() -> None:
    ignored = [p.strip() for p in (ROOT / ".dockerignore").read_text(encoding="utf-8").splitlines()]
    ignored = [p for p in ignored if p and not p.startswith("#")]
    for op, args in dockerfile():
        if op != "COPY" or "--from" in args:
            continue
        *sources, _dest = shlex.split(args)
        for source in sources:
            assert (ROOT / source).exists(), source
            assert not any(fnmatch.fnmatch(source, p) or source.startswith(p.rstrip("/") + "/") for p in ignored)


def test_the_image_serves_with_gunicorn_and_checks_healthz() -> None:
    run = stages()[-1]
    cmd = words(next(args for op, args in run if op == "CMD"))
    assert cmd[:2] == ["oaiserver", "serve"]
    check_command(cmd)
    port = cmd[cmd.index("--bind") + 1].rsplit(":", 1)[1]
    assert [args for op, args in run if op == "EXPOSE"] == [port]
    health = next(args for op, args in run if op == "HEALTHCHECK")
    assert f"http://127.0.0.1:{port}/healthz" in health


def test_the_baked_configuration_loads_and_names_the_copied_seeds(monkeypatch: pytest.MonkeyPatch) -> None:
    run = stages()[-1]
    copies = image_copies()
    config_path = env_of(run)["OAI_CONFIG"]
    assert copies[config_path] == "deploy/config.yaml"
    monkeypatch.delenv("OAI_STORAGE_URL", raising=False)
    cfg = config_mod.load(ROOT / "deploy" / "config.yaml")
    assert copies[cfg.seeds] == "seeds"
    shipped = config_mod.load(ROOT / "config.yaml")
    assert cfg.sets == shipped.sets and cfg.repository_identifier == shipped.repository_identifier


def compose() -> dict[str, Any]:
    return yaml.safe_load((ROOT / "compose.yaml").read_text(encoding="utf-8"))


def test_compose_runs_postgresql_ingest_server_and_harvester_on_one_store() -> None:
    services = compose()["services"]
    assert set(services) == {"db", "ingest", "server", "harvester"}
    db = services["db"]
    assert db["image"].startswith("postgres:") and db["healthcheck"]["test"][1] == "pg_isready"
    env = db["environment"]
    expected = f"postgresql://{env['POSTGRES_USER']}:{env['POSTGRES_PASSWORD']}@db:5432/{env['POSTGRES_DB']}"
    for name in ("ingest", "server", "harvester"):
        service = services[name]
        assert service["environment"]["OAI_STORAGE_URL"] == expected, name
        config_mod.check_storage_url(expected)
        assert sa.make_url(expected).get_backend_name() == "postgresql"
        assert service["depends_on"]["db"] == {"condition": "service_healthy"}, name
        check_command(service["command"])
    assert services["ingest"]["command"][:2] == ["oaiserver", "ingest"]
    assert services["server"]["command"][:2] == ["oaiserver", "serve"]
    assert services["harvester"]["command"] == ["harvester", "schedule"]
    for name in ("server", "harvester"):  # the tables exist and the seeds are in before they start
        assert services[name]["depends_on"]["ingest"] == {"condition": "service_completed_successfully"}
    assert services["ingest"]["restart"] == "no"


def test_compose_serves_the_seeds_with_the_mounted_configuration() -> None:
    services = compose()["services"]
    run = stages()[-1]
    copies = image_copies()
    assert copies[services["ingest"]["command"][2]] == "seeds"
    for name in ("ingest", "server", "harvester"):
        source, target, *_ = services[name]["volumes"][0].split(":")
        assert (ROOT / source).is_file() and target == env_of(run)["OAI_CONFIG"], name
    server = services["server"]
    bind = server["command"][server["command"].index("--bind") + 1]
    assert server["ports"] == [f"{bind.rsplit(':', 1)[1]}:{bind.rsplit(':', 1)[1]}"]
    assert set(compose()["volumes"]) == {"pgdata"}


def unit(path: Path) -> dict[str, list[str]]:
    """`Section.Key` -> every value it is given (systemd keys may repeat)."""
    entries: dict[str, list[str]] = {}
    section = ""
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            section = line.strip("[]")
            continue
        key, _, value = line.partition("=")
        entries.setdefault(f"{section}.{key}", []).append(value)
    return entries


HARDENING = {
    "NoNewPrivileges": "yes",
    "ProtectSystem": "strict",
    "ProtectHome": "yes",
    "PrivateTmp": "yes",
    "PrivateDevices": "yes",
    "CapabilityBoundingSet": "",
    "RestrictSUIDSGID": "yes",
    "SystemCallFilter": "@system-service",
}


@pytest.mark.parametrize("path", UNITS, ids=[p.name for p in UNITS])
def test_systemd_unit_runs_as_its_own_user_restarts_and_is_hardened(path: Path) -> None:
    u = unit(path)
    assert u["Service.User"] == ["oai"] and u["Service.Group"] == ["oai"]
    assert u["Service.Restart"] == ["on-failure"]
    assert "Service.RestartSec" in u and "Install.WantedBy" in u
    for key, value in HARDENING.items():
        assert u.get(f"Service.{key}") == [value], key
    assert u["Service.ReadWritePaths"] == ["-/srv/oai/data"]  # "-": absent (a PostgreSQL store) is fine
    assert "OAI_CONFIG=/etc/oaiserver/config.yaml" in u["Service.Environment"]
    check_command(shlex.split(u["Service.ExecStart"][0]))


def test_the_systemd_units_are_the_server_and_the_harvester_schedule() -> None:
    commands = {p.name: shlex.split(unit(p)["Service.ExecStart"][0])[1:3] for p in UNITS}
    assert commands == {"oaiserver.service": ["serve", "--bind"], "oaiserver-harvester.service": ["schedule"]}


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed")
def test_systemd_analyze_verifies_the_units(tmp_path: Path) -> None:
    """systemd's own check; ExecStart pointed at this checkout's scripts (/opt/oai is not here)."""
    bin_dir = Path(sys.executable).parent
    if not (bin_dir / "oaiserver").exists() or not (bin_dir / "harvester").exists():
        pytest.skip("the oaiserver and harvester scripts are not installed beside this Python")
    for path in UNITS:
        (tmp_path / path.name).write_text(path.read_text(encoding="utf-8").replace("/opt/oai/bin/", f"{bin_dir}/"))
    result = subprocess.run(
        ["systemd-analyze", "verify", *(str(tmp_path / p.name) for p in UNITS)], capture_output=True, text=True
    )
    assert result.returncode == 0 and result.stdout + result.stderr == "", result.stdout + result.stderr
