"""config.yaml: every key checked when the file loads, with a message that names the key; a store
that cannot be opened is one line naming `storage.url`, from every command."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner
from conftest import BASE_CONFIG

from harvester.cli import main as harvester_main
from oaiserver.cli import main as oaiserver_main
from oaiserver.config import COUNTS, KEYS, LENGTHS, RANGES, Config, ConfigError, check_pattern, from_mapping, load
from oaiserver.store import harvest_history, open_store

ROOT = Path(__file__).parent.parent


def write_config(tmp_path: Path, data: dict[str, Any] | str, name: str = "config.yaml") -> Path:
    path = tmp_path / name
    path.write_text(data if isinstance(data, str) else yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")
    return path


def config_with(tmp_path: Path, **sections: Any) -> dict[str, Any]:
    data: dict[str, Any] = {k: dict(v) if isinstance(v, dict) else v for k, v in BASE_CONFIG.items()}
    data["storage"] = {"url": f"sqlite:///{tmp_path / 'store.sqlite3'}"}
    for key, value in sections.items():
        section, _, name = key.partition("__")
        if name:
            data.setdefault(section, {})[name] = value
        else:
            data[section] = value
    return data


# ---- numbers and text have ranges --------------------------------------------------------------


def test_every_key_has_a_range() -> None:
    """Numbers between bounds, text between lengths, lists up to a count (partners' own settings
    are held to theirs in the tests below)."""
    ranged = set(RANGES) | {k.split(".")[0] if k.startswith(("sets.", "partners.")) else k for k in LENGTHS}
    assert set(KEYS) <= ranged | set(COUNTS), sorted(set(KEYS) - ranged - set(COUNTS))


def test_lists_have_a_most(tmp_path: Path) -> None:
    partners = [{"name": f"p{i}", "base_url": "http://127.0.0.1:9/oai"} for i in range(1001)]
    with pytest.raises(ConfigError, match=r"^partners: at most 1000 items, got 1001$"):
        from_mapping(config_with(tmp_path, partners=partners))
    with pytest.raises(ConfigError, match=r"^repository\.admin_emails: at most 100 items, got 101$"):
        from_mapping(config_with(tmp_path, repository__admin_emails=[f"a{i}@example.org" for i in range(101)]))


def test_every_number_has_a_range() -> None:
    numbers = {key for key in KEYS if isinstance(getattr(Config(), key.partition(".")[2], None), int)}
    assert numbers and numbers <= set(RANGES), sorted(numbers - set(RANGES))


@pytest.mark.parametrize("key", sorted(RANGES))
@pytest.mark.parametrize("where", ["below", "above", "absurd"])
def test_a_number_out_of_range_is_refused_by_key(tmp_path: Path, key: str, where: str) -> None:
    least, most = RANGES[key]
    value = {"below": least - 1, "above": most + 1, "absurd": 10**22}[where]
    section, name = key.split(".")
    with pytest.raises(ConfigError) as caught:
        from_mapping(config_with(tmp_path, **{f"{section}__{name}": value}))
    assert str(caught.value) == f"{key}: must be between {least} and {most}, got {value}"


def test_an_absurd_page_size_in_a_file_is_refused_when_it_loads(tmp_path: Path) -> None:
    """It used to load, and then every list answered HTTP 500."""
    text = (
        (ROOT / "config.yaml")
        .read_text(encoding="utf-8")
        .replace("page_size: 500", "page_size: 10000000000000000000000")
    )
    with pytest.raises(ConfigError, match=r"^server\.page_size: must be between 1 and 10000, got 1000000"):
        load(write_config(tmp_path, text))


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("repository__name", "n" * 501, r"^repository\.name: at most 500 characters, got 501$"),
        ("server__secret", "", r"^server\.secret: at least 1 character"),
        ("partners", [{"name": "p" * 101, "base_url": "http://127.0.0.1:9/oai"}], r"^partners\[0\]\.name: at most 100"),
        ("sets", [{"spec": "s" * 201, "name": "S"}], r"^sets\[0\]\.spec: at most 200 characters"),
    ],
)
def test_text_too_long_or_short_is_refused_by_key(tmp_path: Path, key: str, value: Any, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        from_mapping(config_with(tmp_path, **{key: value}))


def test_the_shipped_configuration_loads() -> None:
    config = load(ROOT / "config.yaml")
    assert config.page_size == 500 and len(config.sets) == 4


# ---- partners: every setting checked when the configuration loads ------------------------------

PARTNER = "  - name: p\n    base_url: http://127.0.0.1:9/oai\n"

BAD_PARTNERS = [
    ("    from: yesterday\n", r"^partners\.p\.from: 'yesterday' is not a date \(YYYY-MM-DD or YYYY-MM-DDThh:mm:ssZ"),
    ("    from: 2020-13-01\n", r"^partners\.p\.from: '2020-13-01' is not a date"),
    ("    from: 2020-01-01T00:00:00+02:00\n", r"^partners\.p\.from: '2020-01-01T00:00:00\+02:00' is not a date"),
    ("    from: 2020-01-01 10:00:00\n", r"^partners\.p\.from: '2020-01-01 10:00:00' is not a date"),
    ("    from: 20200101\n", r"^partners\.p\.from: 20200101 is not a date"),
    ("    metadata_prefix: oai dc\n", r"^partners\.p\.metadata_prefix: 'oai dc' is not a metadataPrefix"),
    ("    metadata_prefix: '<x>'\n", r"^partners\.p\.metadata_prefix: '<x>' is not a metadataPrefix"),
    ("    sets: [physics, 'a b']\n", r"^partners\.p\.sets: 'a b' is not a setSpec"),
    ("    schedule: {cron: '61 * * * *'}\n", r"^partners\.p\.schedule\.cron: '61 \* \* \* \*' is not a crontab line"),
    ("    schedule: {cron: '0 0 31 2 *'}\n", r"^partners\.p\.schedule\.cron: '0 0 31 2 \*' never fires$"),
    ("    schedule: {interval: {seconds: 1}}\n", r"^partners\.p\.schedule\.interval: must be between 60 and"),
    ("    schedule: {interval: {weeks: 100000000000000000000}}\n", r"^partners\.p\.schedule\.interval: must be"),
    ("    schedule: {every: hour}\n", r"^partners\.p\.schedule: expected exactly one of interval or cron"),
    ("    schedule: hourly\n", r"^partners\.p\.schedule: expected exactly one of interval or cron"),
    (
        "    quirks: {lenient_xlm: true}\n",
        r"^partners\.p\.quirks: unknown quirk\(s\) lenient_xlm \(known: lenient_xml\)",
    ),
    ("    quirks: {lenient_xml: 'yes'}\n", r"^partners\.p\.quirks\.lenient_xml: expected true or false, got 'yes'$"),
    ("    quirks: [lenient_xml]\n", r"^partners\.p\.quirks: expected a mapping of switch names to true or false"),
    ("    republish: 'no'\n", r"^partners\.p\.republish: expected true or false"),
    ("    colour: blue\n", r"^partners\.p\.colour: unknown key"),
]


@pytest.mark.parametrize(("line", "message"), BAD_PARTNERS, ids=[line.strip() for line, _ in BAD_PARTNERS])
def test_a_bad_partner_setting_is_refused_by_name_when_the_file_loads(tmp_path: Path, line: str, message: str) -> None:
    text = (ROOT / "config.yaml").read_text(encoding="utf-8").replace("partners: []", "partners:\n" + PARTNER + line)
    with pytest.raises(ConfigError, match=message):
        load(write_config(tmp_path, text))


P = {"name": "p", "base_url": "http://127.0.0.1:9/oai"}
BAD_PARTNER_LISTS: dict[str, tuple[list[Any], str]] = {
    "not a mapping": (["p"], r"^partners\[0\]: expected a mapping with name and base_url$"),
    "a bad name": ([{**P, "name": "p q"}], r"^partners\[0\]\.name: expected letters, digits"),
    "a name twice": ([P, P], r"^partners\[1\]\.name: 'p' is used twice$"),
    "an unknown key before a name twice": ([P, {**P, "x": 1}], r"^partners\.p\.x: unknown key"),
    "no base_url": ([{"name": "p"}], r"^partners\.p\.base_url: expected an http\(s\) URL, got None$"),
    "sets not a list": ([{**P, "sets": {"a": 1}}], r"^partners\.p\.sets: expected a setSpec or a list of them$"),
    "formats and metadata_prefix both": (
        [{**P, "formats": ["oai_dc", "marcxml"], "metadata_prefix": "oai_dc"}],
        r"^partners\.p: both metadata_prefix and formats are given; formats lists every format",
    ),
    "formats not a list": ([{**P, "formats": "oai_dc"}], r"^partners\.p\.formats: expected a non-empty list"),
    "formats empty": ([{**P, "formats": []}], r"^partners\.p\.formats: expected a non-empty list"),
    "a bad format": ([{**P, "formats": ["oai_dc", "a b"]}], r"^partners\.p\.formats: 'a b' is not a metadataPrefix"),
    "a format twice": (
        [{**P, "formats": ["marcxml", "oai_dc", "marcxml"]}],
        r"^partners\.p\.formats: marcxml given more",
    ),
    "a bad from after bad limits": (
        [{**P, "from": "x", "max_page_mb": 0}],
        r"^partners\.p\.max_page_mb: expected a whole number",
    ),
}


def test_a_partners_formats_are_harvested_in_the_order_given(tmp_path: Path) -> None:
    """`formats` lists every format harvested; `metadata_prefix` is the shorthand for one."""
    partners = [
        {**P, "formats": ["marcxml", "oai_dc"]},
        {**P, "name": "q", "metadata_prefix": "mods"},
        {**P, "name": "r"},
    ]
    loaded = from_mapping(config_with(tmp_path, partners=partners)).partners
    assert [p.harvested_formats for p in loaded] == [("marcxml", "oai_dc"), ("mods",), ("oai_dc",)]
    assert [p.metadata_prefix for p in loaded] == ["marcxml", "mods", "oai_dc"]


@pytest.mark.parametrize("case", sorted(BAD_PARTNER_LISTS))
def test_a_bad_partner_list_is_refused_by_name(tmp_path: Path, case: str) -> None:
    partners, message = BAD_PARTNER_LISTS[case]
    with pytest.raises(ConfigError, match=message):
        from_mapping(config_with(tmp_path, partners=partners))


S = {"spec": "s", "name": "S"}
BAD_SETS: dict[str, tuple[list[Any], str]] = {
    "not a mapping": (["s"], r"^sets\[0\]: expected a mapping with spec, name, match$"),
    "an unknown key": ([{**S, "colour": "blue"}], r"^sets\[0\]\.colour: unknown key"),
    "a bad spec": ([{**S, "spec": "a b"}], r"^sets\[0\]\.spec: 'a b' is not a setSpec"),
    "a spec twice": ([S, S], r"^sets\[1\]\.spec: 's' is defined twice$"),
    "a spec twice before a bad name": ([S, {**S, "name": ""}], r"^sets\[1\]\.spec: 's' is defined twice$"),
    "an empty name": ([{**S, "name": " "}], r"^sets\[0\]\.name: expected a non-empty string$"),
    "a match not a mapping": ([{**S, "match": "title"}], r"^sets\[0\]\.match: expected a mapping with field"),
    "an unknown match key": ([{**S, "match": {"x": 1}}], r"^sets\[0\]\.match\.x: unknown key"),
    "an unknown field": (
        [{**S, "match": {"field": "colour", "pattern": "x"}}],
        r"^sets\[0\]\.match\.field: 'colour' is not one of title, ",
    ),
    "no pattern": ([{**S, "match": {"field": "title"}}], r"^sets\[0\]\.match\.pattern: expected a regular"),
    "a description not text": ([{**S, "description": 3}], r"^sets\[0\]\.description: expected a string$"),
}


@pytest.mark.parametrize("case", sorted(BAD_SETS))
def test_a_bad_set_is_refused_by_name(tmp_path: Path, case: str) -> None:
    sets, message = BAD_SETS[case]
    with pytest.raises(ConfigError, match=message):
        from_mapping(config_with(tmp_path, sets=sets))


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("2020-01-01", "2020-01-01"),  # as written: YAML's own dates are not read
        ("2020-01-01T10:00:00Z", "2020-01-01T10:00:00Z"),
        ("'2020-01-01T10:00:00Z'", "2020-01-01T10:00:00Z"),
    ],
)
def test_a_partners_from_is_kept_in_oai_pmh_syntax(tmp_path: Path, value: str, expected: str) -> None:
    text = (ROOT / "config.yaml").read_text(encoding="utf-8")
    text = text.replace("partners: []", f"partners:\n{PARTNER}    from: {value}\n    schedule: {{cron: '0 3 * * *'}}\n")
    assert load(write_config(tmp_path, text)).partners[0].from_date == expected


def test_a_partners_from_made_in_code_is_written_in_utc(tmp_path: Path) -> None:
    moment = datetime(2020, 1, 1, 10, tzinfo=timezone(timedelta(hours=2)))
    partners = [{"name": "p", "base_url": "http://127.0.0.1:9/oai", "from": moment}]
    assert from_mapping(config_with(tmp_path, partners=partners)).partners[0].from_date == "2020-01-01T08:00:00Z"


def test_a_bad_from_never_becomes_a_failed_run(tmp_path: Path) -> None:
    """`from: yesterday` used to load and fail each run, in the history; now the harvester
    stops before it opens the store, with one line that names the setting."""
    text = (ROOT / "config.yaml").read_text(encoding="utf-8").replace("partners: []", f"partners:\n{PARTNER}")
    url = f"sqlite:///{tmp_path / 'store.sqlite3'}"
    text = text.replace("sqlite:///data/oai.sqlite3", url)
    good = write_config(tmp_path, text, "good.yaml")
    bad = write_config(
        tmp_path,
        text.replace(
            "    base_url: http://127.0.0.1:9/oai\n", "    base_url: http://127.0.0.1:9/oai\n    from: yesterday\n"
        ),
        "bad.yaml",
    )
    result = CliRunner().invoke(harvester_main, ["-c", str(bad), "run", "--retries", "0", "--timeout", "1"])
    assert result.exit_code == 1 and isinstance(result.exception, SystemExit)
    assert result.output.strip().splitlines() == [
        "Error: configuration: partners.p.from: 'yesterday' is not a date (YYYY-MM-DD or YYYY-MM-DDThh:mm:ssZ, in UTC)"
    ]
    assert load(good).partners[0].from_date is None
    store = open_store(url)
    try:
        assert harvest_history(store, "p") == []
    finally:
        store.close()


# ---- regular expressions that can backtrack catastrophically -------------------------------------


@pytest.mark.parametrize(
    "pattern",
    ["(a+)+", "(a*)*", "(a|a)*", "(?:a|ab)+", r"(\w+\s)*$", "(.*a){20}", "(x+x+)+y", "(a?){30}a{30}", "(a|)+b"],
)
def test_a_pattern_that_can_backtrack_catastrophically_is_refused(tmp_path: Path, pattern: str) -> None:
    sets = [{"spec": "s", "name": "S", "match": {"field": "title", "pattern": pattern}}]
    with pytest.raises(ConfigError, match=r"^sets\[0\]\.match\.pattern: .* can take exponential time to match"):
        from_mapping(config_with(tmp_path, sets=sets))


@pytest.mark.parametrize(
    ("pattern", "reason"),
    [
        ("(a+)+", "a repetition inside a repetition"),
        ("(?=(a+)+)", "a repetition inside a repetition"),
        ("(?!(a*)*)", "a repetition of something that can match nothing"),
        ("(?>(a+)+)", "a repetition inside a repetition"),
        ("(a?){30}", "a repetition of something that can match nothing"),
        ("(?:b|(a|ab)+)", "repeated alternatives that can match the same text"),
        ("(a|)+b", "a repetition of something that can match nothing"),
    ],
)
def test_a_refused_pattern_says_why(pattern: str, reason: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(reason)):
        check_pattern(pattern, "sets[0].match.pattern")


@pytest.mark.parametrize(
    "pattern", [r"\bcable\b", "China|Chinese|Korea", "^local$", "(foo|bar)+", "(a|b)*", "x{2,5}", r"[\w\s]*", "a+b+"]
)
def test_ordinary_patterns_are_accepted(pattern: str) -> None:
    assert check_pattern(pattern, "sets[0].match.pattern") == pattern


def test_an_invalid_pattern_is_named(tmp_path: Path) -> None:
    sets = [{"spec": "s", "name": "S", "match": {"field": "title", "pattern": "(unclosed"}}]
    with pytest.raises(ConfigError, match=r"^sets\[0\]\.match\.pattern: invalid regular expression"):
        from_mapping(config_with(tmp_path, sets=sets))


# ---- files and stores that cannot be used: one line, from every command -----------------------------

COMMANDS: list[tuple[Any, list[str]]] = [
    (oaiserver_main, ["ingest", "{seeds}"]),
    (oaiserver_main, ["delete", "oai:x:1"]),
    (oaiserver_main, ["stats"]),
    (oaiserver_main, ["export", "{tmp}/out.jsonl"]),
    (oaiserver_main, ["import", "{dump}"]),
    (harvester_main, ["run", "--retries", "0"]),
    (harvester_main, ["status"]),
    (harvester_main, ["history", "p"]),
    (harvester_main, ["schedule"]),
]


@contextmanager
def read_only_folder(path: Path) -> Iterator[Path]:
    """A folder nothing can be created in, as a read-only file system would be (root ignores
    permissions, so for root it is made immutable)."""
    path.mkdir()
    if os.geteuid() == 0:
        if shutil.which("chattr") is None:
            pytest.skip("chattr is needed to make a folder read-only for root")
        subprocess.run(["chattr", "+i", str(path)], check=True)
    else:
        path.chmod(0o555)
    try:
        if os.access(path, os.W_OK) and os.geteuid() != 0:
            pytest.skip("the folder could not be made read-only")
        yield path
    finally:
        if os.geteuid() == 0:
            subprocess.run(["chattr", "-i", str(path)], check=True)
        else:
            path.chmod(0o755)


BAD_STORES = {
    "folder-is-a-file": ("sqlite:///{tmp}/afile/store.sqlite3", r"storage\.url: cannot open sqlite:///.*/afile/store"),
    "read-only-folder": (
        "sqlite:///{tmp}/ro/store.sqlite3",
        r"storage\.url: cannot open sqlite:///.*/ro/store\.sqlite3",
    ),
    "not-a-database": ("sqlite:///{tmp}/afile", r"storage\.url: cannot open .*: file is not a database"),
    "unknown-dialect": ("mysql://user@127.0.0.1/db", r"storage\.url: the database 'mysql' is not supported"),
    "garbage": ("not a url at all", r"storage\.url: 'not a url at all' is not a database URL"),
    "unreachable": (
        "postgresql://postgres@127.0.0.1:1/x",
        r"storage\.url: cannot open postgresql://postgres@127\.0\.0\.1:1/x: .*",
    ),
}


@pytest.mark.parametrize("case", sorted(BAD_STORES))
def test_a_store_that_cannot_be_opened_is_one_line_from_every_command(tmp_path: Path, case: str) -> None:
    url, message = BAD_STORES[case]
    (tmp_path / "afile").write_text("this is not a database\n" * 100)
    (tmp_path / "seeds").mkdir()
    (tmp_path / "dump.jsonl").write_text("")
    with read_only_folder(tmp_path / "ro"):
        data = config_with(tmp_path, partners=[{"name": "p", "base_url": "http://127.0.0.1:9/oai"}])
        data["storage"] = {"url": url.format(tmp=tmp_path)}
        config = write_config(tmp_path, data)
        for group, args in COMMANDS:
            args = [a.format(seeds=tmp_path / "seeds", tmp=tmp_path, dump=tmp_path / "dump.jsonl") for a in args]
            result = CliRunner().invoke(group, ["-c", str(config), *args])
            shown = f"{group.name} {args}: {result.output!r} {result.exception!r}"
            assert result.exit_code not in (0, None) and isinstance(result.exception, SystemExit), shown
            lines = result.output.strip().splitlines()
            assert len(lines) == 1 and "Traceback" not in result.output, shown
            assert lines[0].startswith("Error: configuration: storage.url"), shown
            assert re.search(message, lines[0]), shown
    assert not (tmp_path / "out.jsonl").exists()


@pytest.mark.parametrize("case", ["unknown-dialect", "garbage"])
def test_serve_refuses_a_storage_url_that_can_never_open(tmp_path: Path, case: str) -> None:
    """A URL that names no store we can use stops `serve` with one line; a store that cannot be
    opened yet is waited for, answering 503 (tests/test_served.py)."""
    url, message = BAD_STORES[case]
    data = config_with(tmp_path)
    data["storage"] = {"url": url}
    result = CliRunner().invoke(oaiserver_main, ["-c", str(write_config(tmp_path, data)), "serve", "--dev"])
    lines = result.output.strip().splitlines()
    assert result.exit_code == 1 and len(lines) == 1 and re.search(message, lines[0]), result.output


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "oaiserver.cli", *args],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
        env={**os.environ, **(env or {})},
    )


def test_a_configuration_file_that_is_not_utf8_is_one_line(tmp_path: Path) -> None:
    text = (ROOT / "config.yaml").read_text(encoding="utf-8").replace("Cold War", "Guerre froide à Genève")
    path = tmp_path / "latin1.yaml"
    path.write_bytes(text.encode("latin-1"))
    offset = text.encode("latin-1").index("à".encode("latin-1"))
    done = run_cli("-c", str(path), "stats")
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert done.stderr.strip().splitlines() == [
        f"Error: configuration: {path}: not UTF-8 text (byte 0xe0 at offset {offset})"
    ]


def test_an_unreachable_store_is_one_line_on_stderr(tmp_path: Path) -> None:
    """The real entry point, as an operator runs it: one line, no traceback, exit code 1."""
    done = run_cli("-c", str(ROOT / "config.yaml"), "stats", env={"OAI_STORAGE_URL": "postgresql://u:pw@127.0.0.1:1/x"})
    assert done.returncode == 1 and "Traceback" not in done.stderr and "pw" not in done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(
        "Error: configuration: storage.url (from $OAI_STORAGE_URL): cannot open postgresql://u:***@127.0.0.1:1/x: "
    ), lines


# ---- the harvester's section and each partner's connection settings ----------------------------


def test_the_harvester_section_has_defaults_for_two_cores(tmp_path: Path) -> None:
    """Four partners at once (harvests wait on the network far more than they compute), two requests
    at once to one host, and a User-Agent that names the software, its version and a contact."""
    harvester = from_mapping(config_with(tmp_path)).harvester
    assert (harvester.jobs, harvester.per_host) == (4, 2)
    assert re.fullmatch(r"oai-repository-harvester/\d+\.\d+\S* \(OAI-PMH 2\.0; mailto:admin@test\.example\.org\)",
                        harvester.user_agent)  # fmt: skip


def test_the_harvester_section_is_read(tmp_path: Path) -> None:
    data = config_with(tmp_path, harvester={"jobs": 12, "per_host": 3, "user_agent": "Aggregator/2 (+mailto:a@b.org)"})
    harvester = from_mapping(data).harvester
    assert (harvester.jobs, harvester.per_host, harvester.user_agent) == (12, 3, "Aggregator/2 (+mailto:a@b.org)")


BAD_HARVESTER: dict[str, tuple[Any, str]] = {
    "not a mapping": (4, r"^harvester: expected a mapping, got 4$"),
    "an unknown key": ({"job": 4}, r"^harvester\.job: unknown key \(known: jobs, per_host, user_agent\)$"),
    "jobs not a number": ({"jobs": "4"}, r"^harvester\.jobs: expected int, got '4'$"),
    "jobs true": ({"jobs": True}, r"^harvester\.jobs: expected int, got True$"),
    "no jobs": ({"jobs": 0}, r"^harvester\.jobs: must be between 1 and 64, got 0$"),
    "per_host too many": ({"per_host": 65}, r"^harvester\.per_host: must be between 1 and 64, got 65$"),
    "an empty user_agent": ({"user_agent": ""}, r"^harvester\.user_agent: at least 1 character"),
    "a long user_agent": ({"user_agent": "a" * 501}, r"^harvester\.user_agent: at most 500 characters, got 501$"),
    "a user_agent with a newline": (
        {"user_agent": "a\r\nX-Injected: 1"},
        r"^harvester\.user_agent: only printable ASCII \(no control characters\), got 'a\\r\\nX-Injected: 1'$",
    ),
    "a user_agent not ASCII": ({"user_agent": "Agrégateur"}, r"^harvester\.user_agent: only printable ASCII"),
}


@pytest.mark.parametrize("case", sorted(BAD_HARVESTER))
def test_a_bad_harvester_setting_is_refused_by_name(tmp_path: Path, case: str) -> None:
    value, message = BAD_HARVESTER[case]
    with pytest.raises(ConfigError, match=message):
        from_mapping(config_with(tmp_path, harvester=value))


def test_a_partner_has_connection_defaults(tmp_path: Path) -> None:
    """Unset timeout and retries are the harvester's own (its --timeout and --retries)."""
    partner = from_mapping(config_with(tmp_path, partners=[P])).partners[0]
    assert (partner.request_interval, partner.timeout, partner.retries) == (0.0, None, None)
    assert (partner.headers, partner.auth, partner.mode) == ({}, None, "auto")
    assert (partner.deletion_sweep.interval, partner.deletion_sweep.max_drop) == (None, 0.15)


def test_a_partners_connection_settings_are_read(tmp_path: Path) -> None:
    item = {
        **P,
        "request_interval": 0.5,
        "timeout": 30,
        "retries": 0,
        "headers": {"Accept-Language": "en", "X-Api-Key": "k1"},
        "auth": {"username": "harvest", "password_env": "P_PASSWORD"},
        "mode": "identifiers",
        "deletion_sweep": {"interval": {"days": 7}, "max_drop": 0.05},
    }
    partner = from_mapping(config_with(tmp_path, partners=[item])).partners[0]
    assert (partner.request_interval, partner.timeout, partner.retries) == (0.5, 30.0, 0)
    assert isinstance(partner.timeout, float)
    assert partner.headers == {"Accept-Language": "en", "X-Api-Key": "k1"}
    assert partner.auth is not None and (partner.auth.username, partner.auth.password_env) == ("harvest", "P_PASSWORD")
    assert partner.mode == "identifiers"
    assert (partner.deletion_sweep.interval, partner.deletion_sweep.max_drop) == (7 * 86400.0, 0.05)


def test_a_partners_password_is_read_from_the_environment_when_asked(tmp_path: Path) -> None:
    """Never from the file, and only when the harvest starts: a missing variable is that partner's error."""
    item = {**P, "auth": {"username": "harvest", "password_env": "P_PASSWORD"}}
    partner = from_mapping(config_with(tmp_path, partners=[item, {**P, "name": "q"}])).partners[0]
    assert partner.credentials({"P_PASSWORD": "s3cret:x"}) == ("harvest", "s3cret:x")
    with pytest.raises(
        ConfigError, match=r"^partners\.p\.auth\.password_env: the environment variable P_PASSWORD is not set$"
    ):
        partner.credentials({})
    assert from_mapping(config_with(tmp_path, partners=[P])).partners[0].credentials({}) is None


BAD_CONNECTIONS: dict[str, tuple[dict[str, Any], str]] = {
    "a negative interval": (
        {"request_interval": -1},
        r"^partners\.p\.request_interval: must be between 0 and 3600 seconds, got -1$",
    ),
    "an interval of an hour and more": (
        {"request_interval": 3601},
        r"^partners\.p\.request_interval: must be between 0 and 3600",
    ),
    "an interval in words": (
        {"request_interval": "1s"},
        r"^partners\.p\.request_interval: expected a number of seconds, got '1s'$",
    ),
    "an interval true": (
        {"request_interval": True},
        r"^partners\.p\.request_interval: expected a number of seconds, got True$",
    ),
    "no timeout": ({"timeout": 0}, r"^partners\.p\.timeout: must be between 0.1 and 600 seconds, got 0$"),
    "an endless timeout": ({"timeout": 10**22}, r"^partners\.p\.timeout: must be between 0.1 and 600 seconds"),
    "a timeout not a number": (
        {"timeout": float("nan")},
        r"^partners\.p\.timeout: must be between 0.1 and 600 seconds, got nan$",
    ),
    "negative retries": ({"retries": -1}, r"^partners\.p\.retries: expected a whole number from 0 to 20, got -1$"),
    "retries in halves": ({"retries": 1.5}, r"^partners\.p\.retries: expected a whole number from 0 to 20, got 1.5$"),
    "headers a list": (
        {"headers": ["Accept: x"]},
        r"^partners\.p\.headers: expected a mapping of header names to values$",
    ),
    "a header Host": (
        {"headers": {"host": "x"}},
        r"^partners\.p\.headers\.host: the harvester sets this header itself",
    ),
    "a header Content-Length": (
        {"headers": {"Content-Length": "1"}},
        r"^partners\.p\.headers\.Content-Length: the harvester sets",
    ),
    "a hop-by-hop header": (
        {"headers": {"Connection": "close"}},
        r"^partners\.p\.headers\.Connection: a hop-by-hop header",
    ),
    "Transfer-Encoding": (
        {"headers": {"Transfer-Encoding": "x"}},
        r"^partners\.p\.headers\.Transfer-Encoding: a hop-by-hop",
    ),
    "a bad header name": ({"headers": {"X Key": "1"}}, r"^partners\.p\.headers: 'X Key' is not a header name"),
    "a header name not ASCII": ({"headers": {"X-Clé": "1"}}, r"^partners\.p\.headers: 'X-Clé' is not a header name"),
    "a value with CR LF": (
        {"headers": {"X-Key": "1\r\nHost: evil"}},
        r"^partners\.p\.headers\.X-Key: only printable ASCII \(no control characters\)",
    ),
    "a value not ASCII": ({"headers": {"X-Key": "clé"}}, r"^partners\.p\.headers\.X-Key: only printable ASCII"),
    "a value not text": ({"headers": {"X-Key": 1}}, r"^partners\.p\.headers\.X-Key: expected text, got 1$"),
    "a long value": ({"headers": {"X-Key": "k" * 4001}}, r"^partners\.p\.headers\.X-Key: at most 4000 characters"),
    "a header twice": ({"headers": {"X-Key": "1", "x-key": "2"}}, r"^partners\.p\.headers\.x-key: given twice"),
    "too many headers": (
        {"headers": {f"X-{i}": "1" for i in range(51)}},
        r"^partners\.p\.headers: at most 50 items, got 51$",
    ),
    "Authorization beside auth": (
        {"headers": {"Authorization": "Bearer x"}, "auth": {"username": "u", "password_env": "V"}},
        r"^partners\.p\.headers\.Authorization: given twice \(auth sets it\)$",
    ),
    "auth not a mapping": ({"auth": "u:p"}, r"^partners\.p\.auth: expected a mapping with username and password_env$"),
    "a password in the file": (
        {"auth": {"username": "u", "password": "p"}},
        r"^partners\.p\.auth\.password: unknown key \(known: password_env, username\)$",
    ),
    "no password_env": (
        {"auth": {"username": "u"}},
        r"^partners\.p\.auth\.password_env: expected the name of an environment variable",
    ),
    "a bad variable name": (
        {"auth": {"username": "u", "password_env": "$PASS"}},
        r"^partners\.p\.auth\.password_env: expected the name of an environment variable "
        r"\(letters, digits, _\), got '\$PASS'$",
    ),
    "a username with a colon": (
        {"auth": {"username": "a:b", "password_env": "V"}},
        r"^partners\.p\.auth\.username: expected text without ':' or control characters, got 'a:b'$",
    ),
    "no username": (
        {"auth": {"username": "", "password_env": "V"}},
        r"^partners\.p\.auth\.username: at least 1 character",
    ),
    "a long username": (
        {"auth": {"username": "u" * 201, "password_env": "V"}},
        r"^partners\.p\.auth\.username: at most 200",
    ),
    "an unknown mode": (
        {"mode": "ListRecords"},
        r"^partners\.p\.mode: expected one of auto, list_records, identifiers, got 'ListRecords'$",
    ),
    "a sweep not a mapping": (
        {"deletion_sweep": 7},
        r"^partners\.p\.deletion_sweep: expected a mapping with interval and max_drop$",
    ),
    "a sweep with an unknown key": (
        {"deletion_sweep": {"every": 7}},
        r"^partners\.p\.deletion_sweep\.every: unknown key",
    ),
    "a sweep every second": (
        {"deletion_sweep": {"interval": {"seconds": 1}}},
        r"^partners\.p\.deletion_sweep\.interval: must be between 60 and 31622400 seconds, got 1$",
    ),
    "a sweep in days as text": (
        {"deletion_sweep": {"interval": "7d"}},
        r"^partners\.p\.deletion_sweep\.interval: expected a mapping of weeks, days, hours, minutes, seconds",
    ),
    "a share over one": (
        {"deletion_sweep": {"max_drop": 15}},
        r"^partners\.p\.deletion_sweep\.max_drop: must be between 0 and 1 \(a share\), got 15$",
    ),
    "a share in words": (
        {"deletion_sweep": {"max_drop": "15%"}},
        r"^partners\.p\.deletion_sweep\.max_drop: expected a number",
    ),
}


@pytest.mark.parametrize("case", sorted(BAD_CONNECTIONS))
def test_a_bad_connection_setting_is_refused_by_name(tmp_path: Path, case: str) -> None:
    settings, message = BAD_CONNECTIONS[case]
    with pytest.raises(ConfigError, match=message):
        from_mapping(config_with(tmp_path, partners=[{**P, **settings}]))
