"""Configuration: `config.yaml`, checked key by key so a mistake is named, not guessed at.

Every key is listed in `KEYS` with its meaning; `docs` tests hold the README to that list.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import yaml

from oaiserver.records import DC_ELEMENTS

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
    "seeds": "folder of seed documents ingested by `make run`",
    "sets": "list of sets: spec, name, description, match",
    "partners": "list of partner repositories to harvest",
}

SPEC_RE = re.compile(r"[A-Za-z0-9\-_.!~*'()]+(:[A-Za-z0-9\-_.!~*'()]+)*")
# oai-identifier.xsd: a domain name whose labels start with a letter, at least one dot.
REPO_ID_RE = re.compile(r"[a-zA-Z][a-zA-Z0-9\-]*(\.[a-zA-Z][a-zA-Z0-9\-]*)+")
EMAIL_RE = re.compile(r"\S+@(\S+\.)+\S+")
MATCH_FIELDS = (*DC_ELEMENTS, "source")


PARTNERS_SET = "partners"


def partner_set(name: str) -> str:
    """The set a partner's republished records are in."""
    return f"{PARTNERS_SET}:{name}"


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


@dataclass(frozen=True)
class Partner:
    name: str
    base_url: str
    metadata_prefix: str = "oai_dc"
    sets: tuple[str, ...] = ()
    schedule: dict[str, Any] = field(default_factory=dict)
    republish: bool = True
    from_date: str | None = None
    quirks: dict[str, Any] = field(default_factory=dict)
    max_page_mb: int | None = None  # None: the harvester's default (harvester.client)
    allow_redirects_to: tuple[str, ...] = ()  # [scheme://]host[:port] a redirect may go to


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
    secret: str | None = None
    seeds: str = "seeds"
    sets: tuple[SetRule, ...] = ()
    partners: tuple[Partner, ...] = ()
    root: Path = Path(".")

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


def _check_known(data: dict[str, Any], prefix: str, allowed: set[str]) -> None:
    for key in data:
        if key not in allowed:
            where = f"{prefix}.{key}" if prefix else str(key)
            raise ConfigError(f"{where}: unknown key (known: {', '.join(sorted(allowed))})")


def from_mapping(data: dict[str, Any] | None, root: Path = Path(".")) -> Config:
    """Build a Config from parsed YAML (or a dict in tests), checking every key."""
    data = data or {}
    if not isinstance(data, dict):
        raise ConfigError("the configuration must be a mapping of keys to values")
    _check_known(data, "", {"repository", "storage", "server", "seeds", "sets", "partners"})
    for section, known in (
        ("repository", {"name", "base_url", "admin_emails", "identifier", "description", "publisher"}),
        ("storage", {"url"}),
        ("server", {"page_size", "sets_page_size", "token_lifetime", "secret", "max_concurrent_lists", "retry_after"}),
    ):
        value = data.get(section)
        if value is not None and not isinstance(value, dict):
            raise ConfigError(f"{section}: expected a mapping, got {value!r}")
        _check_known(value or {}, section, known)

    d = Config()
    emails = _get(data, "repository.admin_emails", (list, str), list(d.admin_emails))
    emails = [emails] if isinstance(emails, str) else emails
    if not emails or not all(isinstance(e, str) and EMAIL_RE.fullmatch(e) for e in emails):
        raise ConfigError(f"repository.admin_emails: expected e-mail addresses, got {emails!r}")
    repo_id = _get(data, "repository.identifier", str, d.repository_identifier)
    if not REPO_ID_RE.fullmatch(repo_id):
        raise ConfigError(
            f"repository.identifier: {repo_id!r} is not a dotted domain name whose labels "
            "start with a letter (e.g. cables.example.org)"
        )
    base_url = _get(data, "repository.base_url", str, d.base_url)
    if not re.fullmatch(r"https?://\S+", base_url):
        raise ConfigError(f"repository.base_url: expected an http(s) URL, got {base_url!r}")
    positive = {}
    for key, default in (
        ("server.page_size", d.page_size),
        ("server.sets_page_size", d.sets_page_size),
        ("server.token_lifetime", d.token_lifetime),
        ("server.max_concurrent_lists", d.max_concurrent_lists),
        ("server.retry_after", d.retry_after),
    ):
        value = _get(data, key, int, default)
        if value < 1:
            raise ConfigError(f"{key}: expected a positive integer, got {value!r}")
        positive[key] = value

    storage_url = os.environ.get(ENV_STORAGE_URL) or _get(data, "storage.url", str, d.storage_url)
    secret = os.environ.get(ENV_SECRET) or _get(data, "server.secret", str, None)
    name = _get(data, "repository.name", str, d.name)
    return Config(
        name=name,
        base_url=base_url,
        admin_emails=tuple(emails),
        repository_identifier=repo_id,
        description=_get(data, "repository.description", str, ""),
        publisher=_get(data, "repository.publisher", str, name),
        storage_url=storage_url,
        page_size=positive["server.page_size"],
        sets_page_size=positive["server.sets_page_size"],
        token_lifetime=positive["server.token_lifetime"],
        max_concurrent_lists=positive["server.max_concurrent_lists"],
        retry_after=positive["server.retry_after"],
        secret=secret,
        seeds=_get(data, "seeds", str, d.seeds),
        sets=_parse_sets(_get(data, "sets", list, [])),
        partners=_parse_partners(_get(data, "partners", list, [])),
        root=root,
    )


def _parse_sets(items: list[Any]) -> tuple[SetRule, ...]:
    rules: list[SetRule] = []
    seen: set[str] = set()
    for i, item in enumerate(items):
        where = f"sets[{i}]"
        if not isinstance(item, dict):
            raise ConfigError(f"{where}: expected a mapping with spec, name, match")
        _check_known(item, where, {"spec", "name", "description", "match"})
        spec = item.get("spec")
        if not isinstance(spec, str) or not SPEC_RE.fullmatch(spec):
            raise ConfigError(f"{where}.spec: {spec!r} is not a setSpec (letters, digits, -_.!~*'() and ':')")
        if spec in seen:
            raise ConfigError(f"{where}.spec: {spec!r} is defined twice")
        seen.add(spec)
        name = item.get("name")
        if not isinstance(name, str) or not name.strip():
            raise ConfigError(f"{where}.name: expected a non-empty string")
        match = item.get("match")
        fld = pattern = None
        if match is not None:
            if not isinstance(match, dict):
                raise ConfigError(f"{where}.match: expected a mapping with field and pattern")
            _check_known(match, f"{where}.match", {"field", "pattern"})
            fld, pattern = match.get("field"), match.get("pattern")
            if fld not in MATCH_FIELDS:
                raise ConfigError(f"{where}.match.field: {fld!r} is not one of {', '.join(MATCH_FIELDS)}")
            if not isinstance(pattern, str):
                raise ConfigError(f"{where}.match.pattern: expected a regular expression")
            try:
                re.compile(pattern)
            except re.error as exc:
                raise ConfigError(f"{where}.match.pattern: invalid regular expression: {exc}") from exc
        description = item.get("description") or ""
        if not isinstance(description, str):
            raise ConfigError(f"{where}.description: expected a string")
        rules.append(SetRule(spec, name.strip(), description, fld, pattern))
    return tuple(rules)


PARTNER_KEYS = {"name", "base_url", "metadata_prefix", "sets", "schedule", "republish", "from", "quirks"}
PARTNER_KEYS |= {"max_page_mb", "allow_redirects_to"}  # the transport's limits: _transport_limits
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


def _parse_partners(items: list[Any]) -> tuple[Partner, ...]:
    partners: list[Partner] = []
    for i, item in enumerate(items):
        where = f"partners[{i}]"
        if not isinstance(item, dict):
            raise ConfigError(f"{where}: expected a mapping with name and base_url")
        _check_known(item, where, PARTNER_KEYS)
        name, url = item.get("name"), item.get("base_url")
        if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z0-9\-_.]+", name):
            raise ConfigError(f"{where}.name: expected letters, digits, '-', '_' or '.', got {name!r}")
        if any(p.name == name for p in partners):
            raise ConfigError(f"{where}.name: {name!r} is used twice")
        if not isinstance(url, str) or not re.fullmatch(r"https?://\S+", url):
            raise ConfigError(f"{where}.base_url: expected an http(s) URL, got {url!r}")
        sets = item.get("sets") or []
        sets = [sets] if isinstance(sets, str) else sets
        if not isinstance(sets, list) or not all(isinstance(s, str) for s in sets):
            raise ConfigError(f"{where}.sets: expected a setSpec or a list of them")
        schedule = item.get("schedule") or {}
        quirks = item.get("quirks") or {}
        if not isinstance(schedule, dict):
            raise ConfigError(f"{where}.schedule: expected a mapping (interval or cron)")
        if not isinstance(quirks, dict):
            raise ConfigError(f"{where}.quirks: expected a mapping of switch names to values")
        republish = item.get("republish", True)
        if not isinstance(republish, bool):
            raise ConfigError(f"{where}.republish: expected true or false")
        from_date = item.get("from")
        if from_date is not None:
            from_date = str(from_date)
        max_page_mb, redirect_targets = _transport_limits(item, where)
        partners.append(
            Partner(
                name=name,
                base_url=url,
                metadata_prefix=str(item.get("metadata_prefix") or "oai_dc"),
                sets=tuple(sets),
                schedule=schedule,
                republish=republish,
                from_date=from_date,
                quirks=quirks,
                max_page_mb=max_page_mb,
                allow_redirects_to=redirect_targets,
            )
        )
    return tuple(partners)


def load(path: str | os.PathLike[str] | None = None) -> Config:
    """Read the configuration file (default: $OAI_CONFIG, else ./config.yaml)."""
    target = Path(path or os.environ.get(ENV_CONFIG) or "config.yaml")
    try:
        text = target.read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise ConfigError(f"{target}: configuration file not found") from exc
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{target}: not valid YAML: {exc}") from exc
    return from_mapping(data, root=target.resolve().parent)
