"""The README is the user's reference: its command and configuration tables must match the programs.

Each command's row names every option its `--help` lists and no option it lacks; the configuration
table's rows are exactly the keys in oaiserver.config.KEYS. A failure says what to add or remove."""

from __future__ import annotations

import re

import click
import pytest
from conftest import HERE

from harvester.cli import main as harvester_main
from oaiserver.cli import main
from oaiserver.config import KEYS, PARTNER_KEYS

README = (HERE.parent / "README.md").read_text(encoding="utf-8")
PROGRAMS: dict[str, click.Group] = {"oaiserver": main, "harvester": harvester_main}

# A command's row: | `oaiserver serve [--bind HOST:PORT] ...` | what it does |
COMMAND_ROW = re.compile(r"^\| `(?P<usage>(?P<program>oaiserver|harvester) (?P<command>[a-z][a-z-]*)[^`]*)` \|", re.M)
OPTION = re.compile(r"(?<![\w-])--?[a-zA-Z][a-zA-Z0-9-]*")


def section(title: str) -> str:
    """The README's `## title...` section, up to the next `## ` heading."""
    heading = re.search(rf"^## {re.escape(title)}.*$", README, re.M)
    assert heading, f"README.md has no section '## {title}'"
    return README[heading.end() :].split("\n## ", 1)[0]


def usage_rows() -> dict[tuple[str, str], str]:
    """(program, command) -> the usage its README row shows (the first cell, without backquotes)."""
    rows: dict[tuple[str, str], str] = {}
    for row in COMMAND_ROW.finditer(README):
        key = (row["program"], row["command"])
        assert key not in rows, f"README.md has two rows for `{' '.join(key)}`: keep one"
        rows[key] = row["usage"]
    return rows


def listed_options(program: str, name: str) -> dict[str, click.Option]:
    """The options `PROGRAM NAME --help` lists, by their names (as in `--help`), less --help itself and
    the program's own options (--config, --verbose), which every command takes and the README says so once."""
    group = PROGRAMS[program]
    command = group.commands[name]
    parent = click.Context(group, info_name=program, **group.context_settings)
    ctx = click.Context(command, info_name=name, parent=parent, **command.context_settings)
    shared = {param.name for param in group.params}
    options: dict[str, click.Option] = {}
    for param in command.get_params(ctx):
        if param is command.get_help_option(ctx):
            continue
        if isinstance(param, click.Option) and not param.hidden and param.name not in shared:
            record = param.get_help_record(ctx)
            assert record is not None
            options[record[0]] = param
    return options


COMMANDS = [(program, name) for program, group in PROGRAMS.items() for name in sorted(group.commands)]


def test_every_command_has_a_row_and_every_row_a_command() -> None:
    rows = usage_rows()
    missing = [f"{p} {c}" for p, c in COMMANDS if (p, c) not in rows]
    stale = [rows[key] for key in rows if key not in COMMANDS]
    assert not missing and not stale, (
        f"README.md: add a row to the command tables for {missing or 'none'}; "
        f"remove the row(s) {stale or 'none'} (no such command)"
    )


@pytest.mark.parametrize(("program", "name"), COMMANDS, ids=[f"{p} {c}" for p, c in COMMANDS])
def test_each_command_row_names_every_option_of_its_help(program: str, name: str) -> None:
    usage = usage_rows().get((program, name))
    if usage is None:
        pytest.skip(f"no row for {program} {name} (test_every_command_has_a_row_and_every_row_a_command)")
    named = set(OPTION.findall(usage))
    unnamed = [shown for shown, option in listed_options(program, name).items() if not named & set(option.opts)]
    assert not unnamed, f"README.md row `{usage}`: add {', '.join(f'[{shown}]' for shown in unnamed)}"


@pytest.mark.parametrize(("program", "name"), COMMANDS, ids=[f"{p} {c}" for p, c in COMMANDS])
def test_each_option_a_command_row_names_exists(program: str, name: str) -> None:
    usage = usage_rows().get((program, name))
    if usage is None:
        pytest.skip(f"no row for {program} {name} (test_every_command_has_a_row_and_every_row_a_command)")
    real = {opt for option in listed_options(program, name).values() for opt in option.opts}
    unknown = [opt for opt in OPTION.findall(usage) if opt not in real]
    assert not unknown, f"README.md row `{usage}`: remove {', '.join(unknown)}: `{program} {name}` has no such option"


@pytest.mark.parametrize("program", PROGRAMS)
def test_the_options_every_command_takes_are_documented_once(program: str) -> None:
    """--config, --verbose and --version are the program's own: the Commands section names them."""
    named = set(OPTION.findall(section("Commands")))
    for param in PROGRAMS[program].params:
        if isinstance(param, click.Option) and not param.hidden:
            long = max(param.opts, key=len)
            assert named & set(param.opts), f"README.md, ## Commands: name {long} (`{program} --help` lists it)"


def test_the_configuration_table_is_exactly_the_keys() -> None:
    rows = re.findall(r"^\| `([^`]+)` \|", section("Configuration"), re.M)
    missing = [key for key in KEYS if key not in rows]
    stale = [row for row in rows if row not in KEYS]
    assert not missing and not stale, (
        f"README.md, ## Configuration: add a row for {missing or 'none'} (keys in oaiserver.config.KEYS); "
        f"remove the row(s) {stale or 'none'} (not keys)"
    )
    assert len(rows) == len(set(rows)), f"README.md, ## Configuration: one row per key, not {sorted(rows)}"


def test_the_partners_row_names_exactly_the_partner_keys() -> None:
    row = re.search(r"^\| `partners` \| ([^|]*)\|", section("Configuration"), re.M)
    assert row, "README.md, ## Configuration: add a row for partners"
    named = set(re.findall(r"`([a-z_]+)`", row[1]))
    assert not PARTNER_KEYS - named, f"README.md, the partners row: add {sorted(PARTNER_KEYS - named)}"
    assert not named - PARTNER_KEYS, f"README.md, the partners row: remove {sorted(named - PARTNER_KEYS)}"


def test_readme_opens_with_the_two_commands() -> None:
    first_block = README.split("```sh", 1)[1].split("```", 1)[0]
    assert "make run" in first_block and "make test" in first_block


def test_the_layout_names_every_module() -> None:
    """The README's Layout is the map a new maintainer reads first: every module is on it."""
    layout = README.split("## Layout", 1)[1].split("\n## ", 1)[0]
    for package in ("oaiserver", "harvester"):
        for module in sorted((HERE.parent / package).rglob("*.py")):
            assert f" {module.name}" in layout, f"{package}/{module.name} is not in the README's Layout"


def test_the_validator_rules_table_is_exactly_the_rules() -> None:
    """Every rule `oaiserver validate` reports has its row, with its section and level, and no row is stale."""
    from oaiserver.validate.rules import ERROR_CASES, MUST, RULES

    rows = {
        name: (spec, level)
        for name, spec, level in re.findall(r"^\| `([a-z][\w.-]*)` \| ([\d.]+) \| (MUST|SHOULD) \|", README, re.M)
    }
    rules = {rule.name: (rule.section, rule.level) for rule in RULES}
    rules |= {case.name: (case.section, MUST) for case in ERROR_CASES}
    assert rows == rules, (
        "README.md, Checking a repository: the rules table differs from oaiserver.validate.rules: "
        f"add or mend {sorted(k for k in rules if rows.get(k) != rules[k])}, "
        f"remove {sorted(k for k in rows if k not in rules)}"
    )
