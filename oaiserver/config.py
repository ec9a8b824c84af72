"""Configuration: `config.yaml`, checked key by key so a mistake is named, not guessed at.

Every key is listed in `KEYS` with its meaning; `docs` tests hold the README to that list.
"""

from __future__ import annotations

import calendar
import ipaddress
import os
import re
import re._constants as sre_constants  # type: ignore[import-not-found]  # the public sre_* modules warn
import re._parser as sre_parser  # type: ignore[import-not-found]
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import quote

import yaml

from oaiserver import formats
from oaiserver.records import DC_ELEMENTS, REPO_ID_RE, format_datestamp, parse_datestamp

if TYPE_CHECKING:
    from collections.abc import Mapping

    from apscheduler.triggers.base import BaseTrigger

ENV_CONFIG = "OAI_CONFIG"
ENV_STORAGE_URL = "OAI_STORAGE_URL"
ENV_SECRET = "OAI_SECRET"

# key -> what it means. The README documents each of these.
KEYS: dict[str, str] = {
    "repository.name": "repositoryName in Identify",
    "repository.base_url": "baseURL in Identify and in every response; the URL harvesters use",
    "repository.admin_emails": "adminEmail in Identify (one or more)",
    "repository.identifier": "repositoryIdentifier: a dotted domain name, used in oai:<id>:<local>",
    "repository.description": "free text shown in Identify and on the home page",
    "repository.publisher": "dc:publisher given to seed records",
    "storage.url": "SQLAlchemy URL of the record store (env OAI_STORAGE_URL overrides)",
    "server.page_size": "records per ListRecords/ListIdentifiers page",
    "server.sets_page_size": "sets per ListSets page",
    "server.token_lifetime": "seconds a resumption token stays valid",
    "server.secret": "key that signs resumption tokens (env OAI_SECRET overrides)",
    "server.max_concurrent_lists": "list requests one process answers at once; more get HTTP 503",
    "server.retry_after": "seconds a refused request is asked to wait (Retry-After)",
    "server.request_timeout": "seconds a client has to send a whole request; then 408 and closed",
    "server.trusted_proxies": "addresses or networks of reverse proxies whose X-Forwarded-For is believed",
    "seeds": "folder of seed documents `oaiserver ingest` reads when given no PATH",
    "sets": "list of sets: spec, name, description, match",
    "partners": "list of partner repositories to harvest",
    "harvester.jobs": "partners `harvester run` and `harvester schedule` harvest at once",
    "harvester.per_host": "requests at once to one host (scheme://host:port), across all partners",
    "harvester.user_agent": "User-Agent of every harvest request",
}

# key -> (least, most): every number config.yaml holds has a range, so an absurd value is refused
# by name when the file loads rather than failing every request later.
RANGES: dict[str, tuple[int, int]] = {
    "server.page_size": (1, 10_000),
    "server.sets_page_size": (1, 10_000),
    "server.token_lifetime": (60, 366 * 86400),  # a minute to a year
    "server.max_concurrent_lists": (1, 1_000),
    "server.retry_after": (1, 3_600),
    "server.request_timeout": (1, 300),
    "harvester.jobs": (1, 64),
    "harvester.per_host": (1, 64),
}
# key -> (shortest, longest) for text, in characters. Text that goes into the store is held to its
# columns here (the same on SQLite, which has no limits, and PostgreSQL).
LENGTHS: dict[str, tuple[int, int]] = {
    "repository.name": (1, 500),
    "repository.base_url": (1, 2_000),
    "repository.admin_emails": (3, 254),  # each address
    "repository.identifier": (3, 255),  # a domain name
    "repository.description": (0, 10_000),
    "repository.publisher": (0, 500),
    "storage.url": (1, 2_000),
    "server.secret": (1, 1_000),
    "seeds": (1, 4_096),
    "harvester.user_agent": (1, 500),
    "sets.spec": (1, 200),
    "sets.name": (1, 500),
    "sets.description": (0, 10_000),
    "sets.match.pattern": (1, 1_000),
    "partners.name": (1, 100),
    "partners.base_url": (1, 2_000),
    "partners.metadata_prefix": (1, 100),
    "partners.formats": (1, 100),  # each metadataPrefix
    "partners.sets": (1, 200),  # each setSpec
    "partners.headers": (1, 4_000),  # each value
    "partners.auth.username": (1, 200),
    "partners.auth.password_env": (1, 200),
}
# key -> most items a list may hold.
COUNTS: dict[str, int] = {"repository.admin_emails": 100, "sets": 10_000, "partners": 1_000, "partners.sets": 1_000}
COUNTS["partners.headers"] = 50
COUNTS["partners.formats"] = 100
COUNTS["server.trusted_proxies"] = 100
# Schedules: an interval between a minute and a year (a partner asked more often than once a
# minute is being hammered; a longer wait is no schedule).
INTERVAL_UNITS = ("weeks", "days", "hours", "minutes", "seconds")
INTERVAL_RANGE = (60, 366 * 86400)
# Named switches for known partner quirks (config `quirks:`), each true or false, and what each does.
QUIRKS: dict[str, str] = {
    "lenient_xml": "repair XML that is not well-formed (lxml recover) instead of failing the page; "
    "repaired records are counted and logged",
}
STORAGE_BACKENDS = ("sqlite", "postgresql")

SPEC_RE = re.compile(r"[A-Za-z0-9\-_.!~*'()]+(:[A-Za-z0-9\-_.!~*'()]+)*")
EMAIL_RE = re.compile(r"\S+@(\S+\.)+\S+")
# The schema's metadataPrefix: URI unreserved characters.
PREFIX_RE = re.compile(r"[A-Za-z0-9\-_.!~*'()]+")
MATCH_FIELDS = (*DC_ELEMENTS, "source")


PARTNERS_SET = "partners"


def partner_set(name: str) -> str:
    """The set a partner's republished records are in."""
    return f"{PARTNERS_SET}:{name}"


# What a setSpec's part may hold (OAI-PMH.xsd setSpecType) but `~`, which escapes the rest.
_SPEC_KEPT = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.!*'()")
MAX_SET_SPEC = 400  # characters of a stored setSpec (store.schema.set_members)


def partner_subset(name: str, spec: str) -> str | None:
    """The set a partner's record in the partner's set `spec` is in: `partners:<name>:<spec>`,
    its hierarchy kept (`a:b:c` stays three levels). A character the schema's setSpecType does
    not allow, and `~` itself, is escaped as `~` and two hex digits per UTF-8 byte (`a b` is
    `a~20b`, `~` is `~7E`), and an empty part (`a::b`) is `~` alone, so two specs of a partner
    never become one of ours. None for a blank spec, or one too long to store once escaped."""
    spec = spec.strip()
    if not spec:
        return None
    parts = ["".join(c if c in _SPEC_KEPT else _escaped(c) for c in part) or "~" for part in spec.split(":")]
    ours = f"{partner_set(name)}:{':'.join(parts)}"
    return ours if len(ours) <= MAX_SET_SPEC else None


def _escaped(c: str) -> str:
    return "".join(f"~{b:02X}" for b in c.encode("utf-8", "surrogatepass"))


class ConfigError(ValueError):
    """A configuration file that cannot be used; the message names the key."""


@dataclass(frozen=True)
class SetRule:
    """A set and the rule that decides membership: `field` matches the regex `pattern`."""

    spec: str
    name: str
    description: str = ""
    field: str | None = None
    pattern: str | None = None

    def matches(self, values: dict[str, list[str]]) -> bool:
        if self.field is None or self.pattern is None:
            return False
        regex = re.compile(self.pattern, re.IGNORECASE)
        return any(regex.search(v) for v in values.get(self.field, []))


HarvestMode = Literal["auto", "list_records", "identifiers"]
# How a partner's records are listed: `list_records` with ListRecords only, `identifiers` with
# ListIdentifiers and a GetRecord per record, `auto` with ListRecords, falling back to identifiers
# for a partner whose ListRecords fails (5xx, HTML, pages that do not parse) while ListIdentifiers works.
MODES: tuple[HarvestMode, ...] = ("auto", "list_records", "identifiers")
# A deletion sweep that would turn more than this share of a partner's records into tombstones
# applies nothing and waits for a person (`harvester run --sweep --accept-drop PARTNER`).
DEFAULT_MAX_DROP = 0.15


@dataclass(frozen=True)
class BasicAuth:
    """HTTP basic authentication: the password is read from `password_env` when a harvest starts
    (Partner.credentials), never kept in the configuration file."""

    username: str
    password_env: str


@dataclass(frozen=True)
class DeletionSweep:
    """A partner's deletion sweep: list every identifier it still has and turn the vanished ones
    into tombstones, unless they are more than `max_drop` of its records."""

    interval: float | None = None  # seconds between sweeps; None: only when asked (harvester run --sweep)
    max_drop: float = DEFAULT_MAX_DROP  # a share, 0 to 1


@dataclass(frozen=True)
class Partner:
    name: str
    base_url: str
    metadata_prefix: str = formats.DEFAULT  # the format this harvest lists: the first of `formats`
    sets: tuple[str, ...] = ()
    schedule: dict[str, Any] = field(default_factory=dict)
    republish: bool = True
    from_date: str | None = None
    quirks: dict[str, Any] = field(default_factory=dict)
    max_page_mb: int | None = None  # None: the harvester's default (harvester.client)
    allow_redirects_to: tuple[str, ...] = ()  # [scheme://]host[:port] a redirect may go to
    request_interval: float = 0.0  # seconds from one of its requests to the next
    timeout: float | None = None  # None: the harvester's (harvester --timeout)
    retries: int | None = None  # None: the harvester's (harvester --retries)
    headers: dict[str, str] = field(default_factory=dict)  # extra HTTP headers on each request
    auth: BasicAuth | None = None
    mode: HarvestMode = "auto"
    deletion_sweep: DeletionSweep = DeletionSweep()
    # Every format harvested from it, each with its own `from`, checkpoint and history line
    # (empty: `metadata_prefix` alone, which is the one-format shorthand).
    formats: tuple[str, ...] = ()

    @property
    def harvested_formats(self) -> tuple[str, ...]:
        """The formats harvested, in the configured order."""
        return self.formats or (self.metadata_prefix,)

    def credentials(self, environ: Mapping[str, str] | None = None) -> tuple[str, str] | None:
        """(username, password) for HTTP basic authentication, the password read now from its
        environment variable (default: os.environ); None without `auth`. A variable unset or empty
        is a ConfigError naming it: an error of this partner's harvest, not of the configuration."""
        if self.auth is None:
            return None
        variable = self.auth.password_env
        password = (os.environ if environ is None else environ).get(variable)
        if not password:
            state = "is not set" if password is None else "is empty"
            raise ConfigError(f"partners.{self.name}.auth.password_env: the environment variable {variable} {state}")
        return self.auth.username, password


def default_user_agent(contact: str) -> str:
    """The harvester's User-Agent: the software, its version and whom to write to (the
    repository's first adminEmail), as partners' administrators expect of a crawler."""
    try:
        release = version("oai-repository")
    except PackageNotFoundError:  # run from a source tree that was never installed
        release = "0"
    return f"oai-repository-harvester/{release} (OAI-PMH 2.0; mailto:{contact})"


@dataclass(frozen=True)
class HarvesterConfig:
    """The `harvester:` section: how many partners at once, how hard one host is hit, and the
    User-Agent sent."""

    # Partners harvested at once. Four for two cores: a harvest mostly waits on the network
    # (a page takes a partner 0.1 to 5 s to answer, and us about 15 ms to store), and each
    # parses in its own worker process, whose memory (about 250 MB at most with the 6 MB page
    # cap) bounds this more than the cores do.
    jobs: int = 4
    # Requests at once to one host (scheme://host:port), across all partners: two, as crawlers
    # are asked to be (a host serving many partners is one server).
    per_host: int = 2
    user_agent: str = default_user_agent("admin@example.org")


@dataclass(frozen=True)
class Config:
    name: str = "OAI-PMH Repository"
    base_url: str = "http://127.0.0.1:5000/oai"
    admin_emails: tuple[str, ...] = ("admin@example.org",)
    repository_identifier: str = "repository.example.org"
    description: str = ""
    publisher: str = ""
    storage_url: str = "sqlite:///data/oai.sqlite3"
    # Harvesters fetch whole lists: 500 records a page halves the server's CPU per record against
    # 100 (each request has a fixed cost; bench/README.md) at about 15 ms a page.
    page_size: int = 500
    sets_page_size: int = 100
    token_lifetime: int = 86400
    max_concurrent_lists: int = 16
    retry_after: int = 5
    # Seconds to receive a whole request (headers and body) before it is cut with a 408: the
    # time a stalled or trickling client can hold a connection (serving.py).
    request_timeout: int = 20
    secret: str | None = None
    seeds: str = "seeds"
    sets: tuple[SetRule, ...] = ()
    partners: tuple[Partner, ...] = ()
    harvester: HarvesterConfig = HarvesterConfig()
    # Reverse proxies whose X-Forwarded-For names the client (none by default: see proxy.py).
    trusted_proxies: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = ()
    root: Path = Path(".")
    source: Path | None = None  # the file it was read from: the server re-reads its partners when it changes

    @property
    def site_url(self) -> str:
        """The public root of the site: baseURL without its final `/oai` (the app serves `/oai`)."""
        return self.base_url.rsplit("/", 1)[0]

    def landing_url(self, identifier: str) -> str:
        """A record's landing page: what its dc:identifier points to."""
        return f"{self.site_url}/records/{quote(identifier, safe=':')}"

    @property
    def all_sets(self) -> tuple[SetRule, ...]:
        """The configured sets, then one set per republished partner under `partners`."""
        shown = [p for p in self.partners if p.republish]
        if not shown:
            return self.sets
        extra = [SetRule(PARTNERS_SET, "Records harvested from partner repositories")]
        extra += [SetRule(partner_set(p.name), f"Records harvested from {p.name}") for p in shown]
        return self.sets + tuple(r for r in extra if r.spec not in {s.spec for s in self.sets})

    def path(self, relative: str) -> Path:
        p = Path(relative)
        return p if p.is_absolute() else self.root / p


def _get(data: dict[str, Any], key: str, kind: type | tuple[type, ...], default: Any) -> Any:
    node: Any = data
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            return default
        node = node[part]
    if node is None:
        return default
    if not isinstance(node, kind) or (kind is int and isinstance(node, bool)):
        names = kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
        raise ConfigError(f"{key}: expected {names}, got {node!r}")
    return node


def _in_range(key: str, value: int, where: str | None = None) -> int:
    least, most = RANGES[key]
    if not least <= value <= most:
        raise ConfigError(f"{where or key}: must be between {least} and {most}, got {value!r}")
    return value


def _sized(key: str, value: str, where: str | None = None) -> str:
    shortest, longest = LENGTHS[key]
    if len(value) > longest:
        raise ConfigError(f"{where or key}: at most {longest} characters, got {len(value)}")
    if len(value) < shortest:
        raise ConfigError(f"{where or key}: at least {shortest} character(s), got {value!r}")
    return value


def _counted(key: str, items: list[Any], where: str | None = None) -> list[Any]:
    if len(items) > COUNTS[key]:
        raise ConfigError(f"{where or key}: at most {COUNTS[key]} items, got {len(items)}")
    return items


def _text(data: dict[str, Any], key: str, default: str | None) -> Any:
    value = _get(data, key, str, default)
    return value if value is None else _sized(key, value)


def _check_known(data: dict[str, Any], prefix: str, allowed: set[str]) -> None:
    for key in data:
        if key not in allowed:
            where = f"{prefix}.{key}" if prefix else str(key)
            raise ConfigError(f"{where}: unknown key (known: {', '.join(sorted(allowed))})")


def storage_key() -> str:
    """Where the storage URL comes from, as messages name it."""
    return f"storage.url (from ${ENV_STORAGE_URL})" if os.environ.get(ENV_STORAGE_URL) else "storage.url"


def check_storage_url(url: str, key: str = "storage.url") -> str:
    """A URL SQLAlchemy can read, of a database the store supports. Whether it opens is for the
    store to say (`store.open_store`)."""
    # SQLAlchemy here, not at the top: the protocol core and the harvest worker import this module, never a database.
    import sqlalchemy as sa

    _sized("storage.url", url, key)
    try:
        parsed = sa.make_url(url)
    except (sa.exc.ArgumentError, ValueError):
        raise ConfigError(
            f"{key}: {url!r} is not a database URL (sqlite:///path/to/file.sqlite3 or postgresql://user@host/db)"
        ) from None
    backend = parsed.get_backend_name()
    if backend not in STORAGE_BACKENDS:
        raise ConfigError(f"{key}: the database {backend!r} is not supported (use sqlite or postgresql)")
    return url


def sqlite_file(url: str) -> Path | None:
    """The file of a SQLite store, as written in its URL; None for another database, one in
    memory, a `file:` URI or a URL that does not parse."""
    import sqlalchemy as sa

    try:
        parsed = sa.make_url(url)
    except (sa.exc.ArgumentError, ValueError):
        return None
    path = parsed.database
    if parsed.get_backend_name() != "sqlite" or not path or path == ":memory:" or path.startswith("file:"):
        return None
    return Path(path)


def sqlite_relative_to(url: str, root: Path) -> str:
    """A SQLite URL whose file path is relative, made relative to `root` (the configuration
    file's folder), so a command finds the same store from any current directory. A URL from
    $OAI_STORAGE_URL is taken as given: a path typed at a shell is the shell's."""
    import sqlalchemy as sa

    path = sqlite_file(url)
    if path is None or path.is_absolute():
        return url
    return sa.make_url(url).set(database=str(root / path)).render_as_string(hide_password=False)


def from_mapping(data: dict[str, Any] | None, root: Path = Path(".")) -> Config:
    """Build a Config from parsed YAML (or a dict in tests), checking every key."""
    data = data or {}
    if not isinstance(data, dict):
        raise ConfigError("the configuration must be a mapping of keys to values")
    _check_known(data, "", {"repository", "storage", "server", "seeds", "sets", "partners", "harvester"})
    for section, known in (
        ("repository", {"name", "base_url", "admin_emails", "identifier", "description", "publisher"}),
        ("storage", {"url"}),
        (
            "server",
            {
                "page_size",
                "sets_page_size",
                "token_lifetime",
                "secret",
                "max_concurrent_lists",
                "retry_after",
                "request_timeout",
                "trusted_proxies",
            },
        ),
        ("harvester", {"jobs", "per_host", "user_agent"}),
    ):
        value = data.get(section)
        if value is not None and not isinstance(value, dict):
            raise ConfigError(f"{section}: expected a mapping, got {value!r}")
        _check_known(value or {}, section, known)

    d = Config()
    emails = _get(data, "repository.admin_emails", (list, str), list(d.admin_emails))
    emails = [emails] if isinstance(emails, str) else emails
    _counted("repository.admin_emails", emails)
    if not emails or not all(isinstance(e, str) and EMAIL_RE.fullmatch(e) for e in emails):
        raise ConfigError(f"repository.admin_emails: expected e-mail addresses, got {emails!r}")
    for email in emails:
        _sized("repository.admin_emails", email)
    repo_id = _text(data, "repository.identifier", d.repository_identifier)
    if not REPO_ID_RE.fullmatch(repo_id):
        raise ConfigError(
            f"repository.identifier: {repo_id!r} is not a dotted domain name whose labels "
            "start with a letter (e.g. cables.example.org)"
        )
    base_url = _text(data, "repository.base_url", d.base_url)
    if not re.fullmatch(r"https?://\S+", base_url):
        raise ConfigError(f"repository.base_url: expected an http(s) URL, got {base_url!r}")
    numbers = {
        key: _in_range(key, _get(data, key, int, getattr(d, key.split(".")[1])))
        for key in RANGES
        if key.startswith("server.")
    }

    storage_url = os.environ.get(ENV_STORAGE_URL) or _get(data, "storage.url", str, d.storage_url)
    check_storage_url(storage_url, storage_key())
    if not os.environ.get(ENV_STORAGE_URL):
        storage_url = sqlite_relative_to(storage_url, root)
    env_secret = os.environ.get(ENV_SECRET)
    secret = _sized("server.secret", env_secret, f"server.secret (from ${ENV_SECRET})") if env_secret else None
    secret = secret or _text(data, "server.secret", None)
    name = _text(data, "repository.name", d.name)
    return Config(
        name=name,
        base_url=base_url,
        admin_emails=tuple(emails),
        repository_identifier=repo_id,
        description=_text(data, "repository.description", ""),
        publisher=_text(data, "repository.publisher", name),
        storage_url=storage_url,
        page_size=numbers["server.page_size"],
        sets_page_size=numbers["server.sets_page_size"],
        token_lifetime=numbers["server.token_lifetime"],
        max_concurrent_lists=numbers["server.max_concurrent_lists"],
        retry_after=numbers["server.retry_after"],
        request_timeout=numbers["server.request_timeout"],
        secret=secret,
        seeds=_text(data, "seeds", d.seeds),
        sets=_parse_sets(_counted("sets", _get(data, "sets", list, []))),
        partners=_parse_partners(_counted("partners", _get(data, "partners", list, []))),
        harvester=_parse_harvester(data, emails[0]),
        trusted_proxies=trusted_proxies(_get(data, "server.trusted_proxies", (list, str), [])),
        root=root,
    )


def _parse_harvester(data: dict[str, Any], contact: str) -> HarvesterConfig:
    """The `harvester:` section; the default User-Agent names `contact` (the first adminEmail)."""
    d = HarvesterConfig()
    agent = _text(data, "harvester.user_agent", None)
    return HarvesterConfig(
        jobs=_in_range("harvester.jobs", _get(data, "harvester.jobs", int, d.jobs)),
        per_host=_in_range("harvester.per_host", _get(data, "harvester.per_host", int, d.per_host)),
        user_agent=default_user_agent(contact) if agent is None else _header_text(agent, "harvester.user_agent"),
    )


def _header_text(value: str, where: str) -> str:
    """Text that goes into an HTTP header as it is: printable ASCII, so no CR or LF can start
    another header and no server reads it in an encoding it guesses."""
    if not re.fullmatch(r"[\x20-\x7e]*", value):
        raise ConfigError(f"{where}: only printable ASCII (no control characters), got {value!r}")
    return value


def trusted_proxies(items: list[Any] | str) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    """`server.trusted_proxies`: IP addresses and networks (CIDR), one or a list."""
    key = "server.trusted_proxies"
    items = _counted(key, [items] if isinstance(items, str) else items)
    networks = []
    for item in items:
        try:
            if not isinstance(item, str):
                raise ValueError
            networks.append(ipaddress.ip_network(item.strip(), strict=False))
        except ValueError:
            raise ConfigError(
                f"{key}: {item!r} is not an IP address or network (like 127.0.0.1, 10.0.0.0/8 or ::1)"
            ) from None
    return tuple(networks)


# ---- regular expressions that cannot backtrack catastrophically -------------------------------
#
# A set's pattern runs on every value of every record written. A pattern whose matching time can
# grow exponentially with the text (`(a+)+` on "aaaa…b") would stall ingest and harvests, so such
# patterns are refused when the configuration loads. The check reads the parsed pattern (the
# standard library's own parser) and refuses a repetition (`*`, `+`, `{n,}`, `{m,n}` with n > 1)
# whose body can match nothing (`(a?){30}`, `(a|)+`), or holds another unbounded repetition
# (`(a+)+`, `(a*)*`, `(.*x)*`, `(\w+\s)*`), or alternatives that can start with the same character
# or match nothing (`(a|a)*`, `(a|ab)*`, `(ab|a.)+`). It errs on the side of refusing: such a
# pattern can always be rewritten (`(a+)+` is `a+`; `(\w+\s)*` is `[\w\s]*` for membership
# tests). It does not look for polynomial cases such as `.*.*.*x` (slow on long text, not
# exponential).

_REPEATS = {sre_constants.MAX_REPEAT, sre_constants.MIN_REPEAT, getattr(sre_constants, "POSSESSIVE_REPEAT", None)}


def _first_chars(items: Any) -> set[str] | None:
    """The characters a sequence can start with, when that is a plain set of literals; None when
    it can start with anything, a class, or nothing at all."""
    if not items:
        return None
    op, av = items[0]
    if op is sre_constants.LITERAL:
        return {chr(av).lower()}
    if op is sre_constants.SUBPATTERN:
        return _first_chars(av[-1])
    if op is sre_constants.IN and all(o is sre_constants.LITERAL for o, _ in av):
        return {chr(v).lower() for _, v in av}
    return None


def _ambiguous(alternatives: list[Any]) -> bool:
    seen: set[str] = set()
    for alternative in alternatives:
        first = _first_chars(alternative)
        if first is None or first & seen:
            return True
        seen |= first
    return False


# op -> the parsed sequences a node holds, which are checked in turn; other nodes hold none.
_CHILDREN: dict[Any, Any] = {
    sre_constants.BRANCH: lambda av: av[1],
    sre_constants.SUBPATTERN: lambda av: [av[-1]],
    sre_constants.ATOMIC_GROUP: lambda av: [av],
    sre_constants.ASSERT: lambda av: [av[1]],
    sre_constants.ASSERT_NOT: lambda av: [av[1]],
    **{op: lambda av: [av[2]] for op in _REPEATS},  # (least, most, body)
}


def _node_problem(op: Any, av: Any, repeated: bool) -> str | None:
    """Why one parsed node, apart from what it holds, can backtrack catastrophically."""
    if op in _REPEATS:
        _least, most, body = av
        if repeated and most == sre_constants.MAXREPEAT:
            return "a repetition inside a repetition (like (a+)+ or (a*)*)"
        if most > 1 and body.getwidth()[0] == 0:
            return "a repetition of something that can match nothing (like (a?){30} or (a|)+)"
    elif op is sre_constants.BRANCH and repeated and _ambiguous(av[1]):
        return "repeated alternatives that can match the same text (like (a|a)* or (a|ab)+)"
    return None


def _backtracking(items: Any, repeated: bool) -> str | None:
    """Why the parsed `items` can backtrack catastrophically; `repeated`: inside a repetition."""
    for op, av in items:
        if problem := _node_problem(op, av, repeated):
            return problem
        inner = repeated or (op in _REPEATS and av[1] > 1)
        for child in _CHILDREN[op](av) if op in _CHILDREN else ():
            if problem := _backtracking(child, inner):
                return problem
    return None


def check_pattern(pattern: str, where: str) -> str:
    """A regular expression that compiles and cannot backtrack catastrophically."""
    _sized("sets.match.pattern", pattern, where)
    try:
        re.compile(pattern)
        parsed = sre_parser.parse(pattern)
    except (re.error, RecursionError, OverflowError) as exc:
        raise ConfigError(f"{where}: invalid regular expression: {exc}") from None
    problem = _backtracking(parsed.data, False)
    if problem:
        raise ConfigError(f"{where}: {pattern!r} can take exponential time to match: {problem}; rewrite it")
    return pattern


def _parse_sets(items: list[Any]) -> tuple[SetRule, ...]:
    rules: list[SetRule] = []
    seen: set[str] = set()
    for i, item in enumerate(items):
        rules.append(_parse_set(item, f"sets[{i}]", seen))
        seen.add(rules[-1].spec)
    return tuple(rules)


def _parse_set(item: Any, where: str, seen: set[str]) -> SetRule:
    """One set; `seen`: the specs of the sets before it."""
    if not isinstance(item, dict):
        raise ConfigError(f"{where}: expected a mapping with spec, name, match")
    _check_known(item, where, {"spec", "name", "description", "match"})
    spec = item.get("spec")
    if not isinstance(spec, str) or not SPEC_RE.fullmatch(spec):
        raise ConfigError(f"{where}.spec: {spec!r} is not a setSpec (letters, digits, -_.!~*'() and ':')")
    _sized("sets.spec", spec, f"{where}.spec")
    if spec in seen:
        raise ConfigError(f"{where}.spec: {spec!r} is defined twice")
    name = item.get("name")
    if not isinstance(name, str) or not name.strip():
        raise ConfigError(f"{where}.name: expected a non-empty string")
    _sized("sets.name", name.strip(), f"{where}.name")
    fld, pattern = _set_match(item.get("match"), f"{where}.match")
    description = item.get("description") or ""
    if not isinstance(description, str):
        raise ConfigError(f"{where}.description: expected a string")
    _sized("sets.description", description, f"{where}.description")
    return SetRule(spec, name.strip(), description, fld, pattern)


def _set_match(match: Any, where: str) -> tuple[str | None, str | None]:
    """A set's `match`: the field and the pattern its records match, or neither."""
    if match is None:
        return None, None
    if not isinstance(match, dict):
        raise ConfigError(f"{where}: expected a mapping with field and pattern")
    _check_known(match, where, {"field", "pattern"})
    fld, pattern = match.get("field"), match.get("pattern")
    if fld not in MATCH_FIELDS:
        raise ConfigError(f"{where}.field: {fld!r} is not one of {', '.join(MATCH_FIELDS)}")
    if not isinstance(pattern, str):
        raise ConfigError(f"{where}.pattern: expected a regular expression")
    return fld, check_pattern(pattern, f"{where}.pattern")


PARTNER_KEYS = {"name", "base_url", "metadata_prefix", "sets", "schedule", "republish", "from", "quirks"}
PARTNER_KEYS |= {"max_page_mb", "allow_redirects_to"}  # the transport's limits: _transport_limits
PARTNER_KEYS |= {"request_interval", "timeout", "retries", "headers", "auth"}  # the connection: _connection
PARTNER_KEYS |= {"mode", "deletion_sweep", "formats"}
# key -> (least, most) seconds, fractions allowed.
PARTNER_SECONDS: dict[str, tuple[float, float]] = {"request_interval": (0, 3_600), "timeout": (0.1, 600)}
MAX_RETRIES = 20
# Headers a partner's `headers` may not set: the harvester's HTTP client sets these itself, and
# the hop-by-hop ones (RFC 9110 7.6.1) belong to one connection, not to a partner.
HEADERS_SET_BY_CLIENT = {"host", "content-length"}
HOP_BY_HOP_HEADERS = {
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
}
HEADER_NAME_RE = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]{1,100}")  # an RFC 9110 token
ENV_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
MAX_PAGE_MB = 1024
# Where a partner's redirect may go besides its own origin: [http(s)://]host[:port].
REDIRECT_TARGET_RE = re.compile(
    r"(?:https?://)?(?:[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?|\[[0-9A-Fa-f:.]+\])(?::\d{1,5})?"
)


def _transport_limits(item: dict[str, Any], where: str) -> tuple[int | None, tuple[str, ...]]:
    """A partner's `max_page_mb` and `allow_redirects_to`, checked (harvester.client uses them)."""
    size = item.get("max_page_mb")
    if size is not None and (type(size) is not int or not 1 <= size <= MAX_PAGE_MB):
        raise ConfigError(
            f"{where}.max_page_mb: expected a whole number of megabytes from 1 to {MAX_PAGE_MB}, got {size!r}"
        )
    targets = item.get("allow_redirects_to") or []
    if not isinstance(targets, list):
        raise ConfigError(
            f"{where}.allow_redirects_to: expected a list of hosts ([https://]host[:port]), got {targets!r}"
        )
    for target in targets:
        if not isinstance(target, str) or not REDIRECT_TARGET_RE.fullmatch(target):
            raise ConfigError(
                f"{where}.allow_redirects_to: {target!r} is not a host, host:port or http(s)://host[:port]"
            )
    return size, tuple(targets)


def _seconds(item: dict[str, Any], key: str, where: str) -> float | None:
    """A partner's number of seconds `key`, in its range (PARTNER_SECONDS); None when unset."""
    value = item.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(f"{where}.{key}: expected a number of seconds, got {value!r}")
    least, most = PARTNER_SECONDS[key]
    if not least <= value <= most:  # NaN is refused too
        raise ConfigError(f"{where}.{key}: must be between {least:g} and {most:g} seconds, got {value!r}")
    return float(value)


def _connection(item: dict[str, Any], where: str) -> dict[str, Any]:
    """A partner's `request_interval`, `timeout`, `retries`, `auth` and `headers`, checked, as
    Partner's keyword arguments (the harvester's pipeline uses them)."""
    retries = item.get("retries")
    if retries is not None and (type(retries) is not int or not 0 <= retries <= MAX_RETRIES):
        raise ConfigError(f"{where}.retries: expected a whole number from 0 to {MAX_RETRIES}, got {retries!r}")
    auth = _auth(item.get("auth"), f"{where}.auth")
    return {
        "request_interval": _seconds(item, "request_interval", where) or 0.0,
        "timeout": _seconds(item, "timeout", where),
        "retries": retries,
        "auth": auth,
        "headers": _headers(item.get("headers"), f"{where}.headers", has_auth=auth is not None),
    }


def _auth(value: Any, where: str) -> BasicAuth | None:
    """`auth: {username, password_env}`: the password itself is never in the file."""
    if value is None:
        return None
    if not isinstance(value, dict):
        raise ConfigError(f"{where}: expected a mapping with username and password_env")
    _check_known(value, where, {"username", "password_env"})
    username = value.get("username")
    if not isinstance(username, str):
        raise ConfigError(f"{where}.username: expected text, got {username!r}")
    _sized("partners.auth.username", username, f"{where}.username")
    if ":" in username or re.search(r"[\x00-\x1f\x7f]", username):  # RFC 7617: the colon ends the user-id
        raise ConfigError(f"{where}.username: expected text without ':' or control characters, got {username!r}")
    variable = value.get("password_env")
    if not isinstance(variable, str) or not ENV_NAME_RE.fullmatch(variable):
        raise ConfigError(
            f"{where}.password_env: expected the name of an environment variable (letters, digits, _), got {variable!r}"
        )
    _sized("partners.auth.password_env", variable, f"{where}.password_env")
    return BasicAuth(username, variable)


def _headers(value: Any, where: str, *, has_auth: bool) -> dict[str, str]:
    """A partner's extra `headers`: names that are HTTP tokens, each once (in any case), none the
    client sets or that belongs to one connection, values in printable ASCII."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ConfigError(f"{where}: expected a mapping of header names to values")
    _counted("partners.headers", list(value), where)
    seen: set[str] = set()
    for name, text in value.items():
        if not isinstance(name, str) or not HEADER_NAME_RE.fullmatch(name):
            raise ConfigError(f"{where}: {name!r} is not a header name (letters, digits and !#$%&'*+-.^_`|~)")
        lower = name.lower()
        if lower in HEADERS_SET_BY_CLIENT:
            raise ConfigError(f"{where}.{name}: the harvester sets this header itself")
        if lower in HOP_BY_HOP_HEADERS:
            raise ConfigError(f"{where}.{name}: a hop-by-hop header, which belongs to one connection, not to a partner")
        if lower in seen:
            raise ConfigError(f"{where}.{name}: given twice")
        if lower == "authorization" and has_auth:
            raise ConfigError(f"{where}.{name}: given twice (auth sets it)")
        seen.add(lower)
        if not isinstance(text, str):
            raise ConfigError(f"{where}.{name}: expected text, got {text!r}")
        _header_text(_sized("partners.headers", text, f"{where}.{name}"), f"{where}.{name}")
    return dict(value)


def _mode(value: Any, where: str) -> HarvestMode:
    for mode in MODES:
        if value == mode:
            return mode
    raise ConfigError(f"{where}: expected one of {', '.join(MODES)}, got {value!r}")


def _deletion_sweep(value: Any, where: str) -> DeletionSweep:
    """`deletion_sweep: {interval: {days: 7}, max_drop: 0.15}`; either may be left out."""
    if value is None:
        return DeletionSweep()
    if not isinstance(value, dict):
        raise ConfigError(f"{where}: expected a mapping with interval and max_drop")
    _check_known(value, where, {"interval", "max_drop"})
    interval = value.get("interval")
    seconds = None if interval is None else interval_seconds(interval, f"{where}.interval")
    share = value.get("max_drop")
    if share is None:
        return DeletionSweep(seconds)
    if isinstance(share, bool) or not isinstance(share, int | float):
        raise ConfigError(
            f"{where}.max_drop: expected a number from 0 to 1 (a share of the partner's records), got {share!r}"
        )
    if not 0 <= share <= 1:
        raise ConfigError(f"{where}.max_drop: must be between 0 and 1 (a share), got {share!r}")
    return DeletionSweep(seconds, float(share))


def interval_seconds(interval: Any, where: str) -> float:
    """The seconds of an interval such as `{hours: 6}` (weeks to seconds), between a minute and a year."""
    if not isinstance(interval, dict) or not interval or set(interval) - set(INTERVAL_UNITS):
        raise ConfigError(f"{where}: expected a mapping of {', '.join(INTERVAL_UNITS)} to numbers")
    if not all(isinstance(v, int | float) and not isinstance(v, bool) and v >= 0 for v in interval.values()):
        raise ConfigError(f"{where}: expected non-negative numbers, got {interval!r}")
    if not any(interval.values()):
        raise ConfigError(f"{where}: the interval is zero")
    seconds = sum(float(v) * {"weeks": 604800, "days": 86400, "hours": 3600, "minutes": 60, "seconds": 1}[k]
                  for k, v in interval.items())  # fmt: skip
    least, most = INTERVAL_RANGE
    if not least <= seconds <= most:
        raise ConfigError(f"{where}: must be between {least} and {most} seconds, got {seconds:g}")
    return seconds


def schedule_trigger(schedule: Any, where: str) -> BaseTrigger:
    """The APScheduler trigger a partner's `schedule` describes, made by APScheduler's own
    constructors: `{interval: {hours: 6}}` or `{cron: "0 3 * * *"}` (UTC). ConfigError names what
    is wrong. Imported here, not at the top: the server never needs APScheduler."""
    from apscheduler.triggers.cron import CronTrigger
    from apscheduler.triggers.interval import IntervalTrigger

    if not isinstance(schedule, dict) or len(schedule) != 1 or next(iter(schedule)) not in ("interval", "cron"):
        raise ConfigError(f"{where}: expected exactly one of interval or cron, got {schedule!r}")
    if "cron" in schedule:
        line = schedule["cron"]
        if not isinstance(line, str):
            raise ConfigError(f"{where}.cron: expected a crontab line such as '0 3 * * *'")
        try:
            cron = CronTrigger.from_crontab(line, timezone=UTC)
        except (ValueError, TypeError) as exc:
            raise ConfigError(f"{where}.cron: {line!r} is not a crontab line: {exc}") from None
        if cron.get_next_fire_time(None, datetime.now(UTC)) is None:
            raise ConfigError(f"{where}.cron: {line!r} never fires")
        return cron
    interval = schedule["interval"]
    interval_seconds(interval, f"{where}.interval")
    return IntervalTrigger(**interval, timezone=UTC)


def check_quirks(quirks: Any, where: str) -> dict[str, bool]:
    """Known switch names, each true or false."""
    if not isinstance(quirks, dict):
        raise ConfigError(f"{where}: expected a mapping of switch names to true or false")
    unknown = sorted(str(k) for k in set(quirks) - set(QUIRKS))
    if unknown:
        raise ConfigError(f"{where}: unknown quirk(s) {', '.join(unknown)} (known: {', '.join(sorted(QUIRKS))})")
    for key, value in quirks.items():
        if not isinstance(value, bool):
            raise ConfigError(f"{where}.{key}: expected true or false, got {value!r}")
    return dict(quirks)


def from_date(value: Any, where: str) -> str:
    """A partner's `from` in OAI-PMH syntax: `YYYY-MM-DD` or `YYYY-MM-DDThh:mm:ssZ` (a date or
    datetime object, from a mapping made in code, is written so; another offset made UTC)."""
    if isinstance(value, datetime):
        if value.tzinfo is not None:
            value = value.astimezone(UTC)
        return format_datestamp(calendar.timegm(value.timetuple()))
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, str):
        try:
            parse_datestamp(value)
        except ValueError:
            pass
        else:
            return value
    raise ConfigError(f"{where}: {value!r} is not a date (YYYY-MM-DD or YYYY-MM-DDThh:mm:ssZ, in UTC)")


def _parse_partners(items: list[Any]) -> tuple[Partner, ...]:
    """Every partner setting is checked here, by name, when the configuration loads: a mistake
    stops `harvester` at once instead of becoming a failed run at 3 a.m."""
    partners: list[Partner] = []
    for i, item in enumerate(items):
        partners.append(_parse_partner(item, i, {p.name for p in partners}))
    return tuple(partners)


def _parse_partner(item: Any, i: int, taken: set[str]) -> Partner:
    """The partner `partners[i]`; `taken`: the names of the partners before it."""
    name = _partner_name(item, i, taken)
    where = f"partners.{name}"
    url = item.get("base_url")
    if not isinstance(url, str) or not re.fullmatch(r"https?://\S+", url):
        raise ConfigError(f"{where}.base_url: expected an http(s) URL, got {url!r}")
    _sized("partners.base_url", url, f"{where}.base_url")
    prefixes = _partner_formats(item, where)
    sets = _partner_sets(item.get("sets") or [], f"{where}.sets")
    schedule = item.get("schedule") or {}
    if schedule:
        schedule_trigger(schedule, f"{where}.schedule")
    elif not isinstance(schedule, dict):
        raise ConfigError(f"{where}.schedule: expected a mapping (interval or cron)")
    quirks = check_quirks(item.get("quirks") or {}, f"{where}.quirks")
    republish = item.get("republish", True)
    if not isinstance(republish, bool):
        raise ConfigError(f"{where}.republish: expected true or false")
    start = item.get("from")
    max_page_mb, redirect_targets = _transport_limits(item, where)
    connection = _connection(item, where)
    mode = _mode(item.get("mode") or "auto", f"{where}.mode")
    sweep = _deletion_sweep(item.get("deletion_sweep"), f"{where}.deletion_sweep")
    return Partner(
        name=name,
        base_url=url,
        metadata_prefix=prefixes[0],
        formats=prefixes if "formats" in item else (),
        sets=sets,
        schedule=schedule,
        republish=republish,
        from_date=None if start is None else from_date(start, f"{where}.from"),
        quirks=quirks,
        max_page_mb=max_page_mb,
        allow_redirects_to=redirect_targets,
        mode=mode,
        deletion_sweep=sweep,
        **connection,
    )


def _metadata_prefix(prefix: Any, key: str, where: str) -> str:
    if not isinstance(prefix, str) or not PREFIX_RE.fullmatch(prefix):
        raise ConfigError(f"{where}: {prefix!r} is not a metadataPrefix (letters, digits and -_.!~*'())")
    _sized(f"partners.{key}", prefix, where)
    return prefix


def _partner_formats(item: Any, where: str) -> tuple[str, ...]:
    """The partner's formats: `formats` (a list), or `metadata_prefix` (one), not both."""
    if "formats" not in item:
        return (
            _metadata_prefix(
                item.get("metadata_prefix") or formats.DEFAULT, "metadata_prefix", f"{where}.metadata_prefix"
            ),
        )
    if "metadata_prefix" in item:
        raise ConfigError(
            f"{where}: both metadata_prefix and formats are given; formats lists every format "
            "(metadata_prefix is the shorthand for one)"
        )
    given = item["formats"]
    if not isinstance(given, list) or not given:
        raise ConfigError(f"{where}.formats: expected a non-empty list of metadataPrefixes, e.g. [oai_dc, marcxml]")
    _counted("partners.formats", given, f"{where}.formats")
    prefixes = tuple(_metadata_prefix(p, "formats", f"{where}.formats") for p in given)
    twice = sorted({p for p in prefixes if prefixes.count(p) > 1})
    if twice:
        raise ConfigError(f"{where}.formats: {', '.join(twice)} given more than once")
    return prefixes


def _partner_name(item: Any, i: int, taken: set[str]) -> str:
    """A partner's name, checked before anything else: the other keys' messages name it."""
    if not isinstance(item, dict):
        raise ConfigError(f"partners[{i}]: expected a mapping with name and base_url")
    name = item.get("name")
    if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z0-9\-_.]+", name):
        raise ConfigError(f"partners[{i}].name: expected letters, digits, '-', '_' or '.', got {name!r}")
    _sized("partners.name", name, f"partners[{i}].name")
    _check_known(item, f"partners.{name}", PARTNER_KEYS)
    if name in taken:
        raise ConfigError(f"partners[{i}].name: {name!r} is used twice")
    return name


def _partner_sets(sets: Any, where: str) -> tuple[str, ...]:
    """A partner's `sets`: one setSpec or a list of them."""
    sets = [sets] if isinstance(sets, str) else sets
    if not isinstance(sets, list) or not all(isinstance(s, str) for s in sets):
        raise ConfigError(f"{where}: expected a setSpec or a list of them")
    _counted("partners.sets", sets, where)
    for spec in sets:
        if not SPEC_RE.fullmatch(spec):
            raise ConfigError(f"{where}: {spec!r} is not a setSpec (letters, digits, -_.!~*'() and ':')")
        _sized("partners.sets", spec, where)
    return tuple(sets)


class _Loader(yaml.SafeLoader):
    """YAML without its implicit dates: `from: 2020-13-01` reaches the key's own check as text
    (YAML's would raise a bare ValueError), and dates stay in the syntax written."""


_Loader.yaml_implicit_resolvers = {
    first: [(tag, regex) for tag, regex in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


def load(path: str | os.PathLike[str] | None = None) -> Config:
    """Read the configuration file (default: $OAI_CONFIG, else ./config.yaml)."""
    target = Path(path or os.environ.get(ENV_CONFIG) or "config.yaml")
    try:
        text = target.read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise ConfigError(f"{target}: configuration file not found") from exc
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"{target}: not UTF-8 text (byte {exc.object[exc.start]:#04x} at offset {exc.start})"
        ) from None
    except OSError as exc:
        raise ConfigError(f"{target}: cannot be read: {exc.strerror or exc}") from None
    try:
        data = yaml.load(text, Loader=_Loader)  # a SafeLoader, without implicit dates
    except yaml.YAMLError as exc:
        raise ConfigError(f"{target}: not valid YAML: {exc}") from exc
    except (ValueError, OverflowError, RecursionError) as exc:  # a value YAML cannot construct
        raise ConfigError(f"{target}: not valid YAML: {exc or 'nested too deeply'}") from None
    return replace(from_mapping(data, root=target.resolve().parent), source=target.resolve())
