"""The README is the user's reference: it must name every setting and every command."""

from __future__ import annotations

import re

import click
from conftest import HERE

from harvester.cli import main as harvester_main
from oaiserver.cli import main
from oaiserver.config import KEYS

README = (HERE.parent / "README.md").read_text(encoding="utf-8")


def test_every_setting_is_documented() -> None:
    documented = set(re.findall(r"^\| `([a-z_.]+)` \|", README, re.MULTILINE))
    assert set(KEYS) <= documented, sorted(set(KEYS) - documented)


def test_every_command_is_documented() -> None:
    for program, group in (("oaiserver", main), ("harvester", harvester_main)):
        assert isinstance(group, click.Group)
        for name in group.commands:
            assert f"`{program} {name}" in README, name


def test_readme_opens_with_the_two_commands() -> None:
    first_block = README.split("```sh", 1)[1].split("```", 1)[0]
    assert "make run" in first_block and "make test" in first_block


def test_the_layout_names_every_module() -> None:
    """The README's Layout is the map a new maintainer reads first: every module is on it."""
    layout = README.split("## Layout", 1)[1].split("\n## ", 1)[0]
    for package in ("oaiserver", "harvester"):
        for module in sorted((HERE.parent / package).glob("*.py")):
            assert f" {module.name}" in layout, f"{package}/{module.name} is not in the README's Layout"
