"""The shared vocabulary: what a record is, and the rules for the text it may hold.

Both packages speak in these terms; the store persists them, the protocol serves them,
the harvester produces them.
"""

from __future__ import annotations

import logging
import re
import time
from dataclasses import dataclass, field
from datetime import date
from typing import NamedTuple

log = logging.getLogger(__name__)

# ---- the protocol's own names: one definition each, for server, validator and harvester -------

OAI_NS = "http://www.openarchives.org/OAI/2.0/"

# oai-identifier.xsd: a repositoryIdentifier is a domain name whose labels start with a letter,
# with at least one dot.
REPO_ID_RE = re.compile(r"[a-zA-Z][a-zA-Z0-9\-]*(\.[a-zA-Z][a-zA-Z0-9\-]*)+")

# The error codes of OAI-PMH 2.0 (section 3.6) and what each means, in the spec's words. The
# server raises them (oaiserver.errors), the harvester receives them (harvester.errors) and the
# validator expects them (oaiserver.validate): three uses, one list.
ERROR_CODES: dict[str, str] = {
    "badArgument": (
        "The request includes illegal arguments, is missing required arguments, includes a repeated "
        "argument, or values for arguments have an illegal syntax."
    ),
    "badResumptionToken": "The value of the resumptionToken argument is invalid or expired.",
    "badVerb": (
        "Value of the verb argument is not a legal OAI-PMH verb, the verb argument is missing, "
        "or the verb argument is repeated."
    ),
    "cannotDisseminateFormat": (
        "The metadata format identified by the value given for the metadataPrefix argument is not "
        "supported by the item or by the repository."
    ),
    "idDoesNotExist": "The value of the identifier argument is unknown or illegal in this repository.",
    "noRecordsMatch": (
        "The combination of the values of the from, until, set and metadataPrefix arguments results in an empty list."
    ),
    "noMetadataFormats": "There are no metadata formats available for the specified item.",
    "noSetHierarchy": "The repository does not support sets.",
}

# The fifteen elements of simple Dublin Core, in the order oai_dc renders them.
DC_ELEMENTS: tuple[str, ...] = (
    "title",
    "creator",
    "subject",
    "description",
    "publisher",
    "contributor",
    "date",
    "type",
    "format",
    "identifier",
    "source",
    "language",
    "relation",
    "coverage",
    "rights",
)

# XML 1.0 `Char` production, inverted: everything a document may not contain.
_FORBIDDEN = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


def clean_text(value: str, *, where: str = "") -> str:
    """Remove characters XML 1.0 forbids, so nothing stored can break a response.

    Logged, because a silent change to someone's data should still leave a trace.
    """
    cleaned, count = _FORBIDDEN.subn("", value)
    if count:
        log.warning("removed %d character(s) XML cannot carry from %s", count, where or "a value")
    return cleaned


# Bytes that can stand in UTF-8 for allowed characters: all but the C0 controls XML forbids.
_ALLOWED_BYTES = bytes([0x09, 0x0A, 0x0D, *range(0x20, 0x100)])


def has_forbidden_chars(value: str) -> bool:
    """Whether `value` holds a character XML 1.0 forbids."""
    return utf8_if_allowed(value) is None


def utf8_if_allowed(value: str) -> bytes | None:
    """`value` in UTF-8, or None if it holds a character XML 1.0 forbids (a writer that needs
    the bytes anyway checks and encodes in one go). U+FFFE and U+FFFF are looked for in the
    string (a search that costs nothing in a string with no character above U+00FF); a lone
    surrogate cannot be encoded; C0 controls are single bytes of the UTF-8 form, found by
    deleting every other byte (translate runs in C, ten times faster than the regex)."""
    if "\ufffe" in value or "\uffff" in value:
        return None
    try:
        data = value.encode()
    except UnicodeEncodeError:  # a lone surrogate
        return None
    return None if data.translate(None, _ALLOWED_BYTES) else data


# An OAI identifier must be a URI (xs:anyURI in the schema): URI characters or %-escapes
# (non-ASCII allowed, as in IRIs), at most one '#', and a colon before the first '/', '?'
# or '#' only after a scheme, which starts with a letter.
_URI_CHAR = r"(?:[A-Za-z0-9\-._~:/?@!$&'()*+,;=]|%[0-9A-Fa-f]{2}|[^\x00-\x7f\s])"
_IDENTIFIER_RE = re.compile(rf"{_URI_CHAR}+(?:#{_URI_CHAR}*)?")
_SCHEME_RE = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*")
_PORT_RE = re.compile(r"[0-9]{1,9}")
# The common shape (`oai:example.org:123`): a scheme, then URI characters without `/ ? # %`,
# so no authority, path or escape is left to check.
_PLAIN_IDENTIFIER_RE = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*:[A-Za-z0-9\-._~:@!$&'()*+,;=]+")


def is_identifier(value: str) -> bool:
    """Whether `value` can be an item identifier: a URI the schema's xs:anyURI accepts."""
    if _PLAIN_IDENTIFIER_RE.fullmatch(value):
        return True
    if not _IDENTIFIER_RE.fullmatch(value) or has_forbidden_chars(value):
        return False
    head = re.split(r"[/?#]", value, maxsplit=1)[0]
    rest = value
    if ":" in head:
        scheme, rest = value.split(":", 1)
        if not _SCHEME_RE.fullmatch(scheme):
            return False
    if rest.startswith("//"):  # an authority: at most one userinfo '@', and a numeric port
        authority = re.split(r"[/?#]", rest[2:], maxsplit=1)[0]
        if authority.count("@") > 1:
            return False
        host_port = authority.rsplit("@", 1)[-1]
        if ":" in host_port and not _PORT_RE.fullmatch(host_port.split(":", 1)[1]):
            return False
    return True


# The one limit on an identifier's length, wherever a record is written (ingest, harvest, import),
# the same on SQLite and PostgreSQL: 1,024 bytes in UTF-8. Real identifiers are far shorter (OAI
# identifiers, handles and DOIs run to tens of characters, rarely a few hundred). A URL escapes
# each byte as at most 3 characters, so the landing page's request line (`GET /records/<3,072
# characters> HTTP/1.1`) and GetRecord's (`GET /oai?verb=GetRecord&metadataPrefix=oai_dc&identifier=
# <3,072 characters> HTTP/1.1`) stay under gunicorn's 4,094-byte limit, with room for a proxy's
# path; a request argument may hold 4,096 characters; and the store's VARCHAR(1024) columns hold
# 1,024 characters, which is at least 1,024 bytes. So anything listed can be fetched.
MAX_IDENTIFIER_BYTES = 1024


def identifier_problem(value: str) -> str | None:
    """Why `value` cannot be a stored record's identifier, in words; None if it can."""
    # Up to 256 characters cannot reach 1,025 bytes: the common case encodes nothing.
    if (
        len(value) > MAX_IDENTIFIER_BYTES // 4
        and (size := len(value.encode("utf-8", "surrogatepass"))) > MAX_IDENTIFIER_BYTES
    ):
        return f"the identifier is longer than {MAX_IDENTIFIER_BYTES} bytes in UTF-8 ({size})"
    if not is_identifier(value):
        return "the identifier is not a URI (xs:anyURI)"
    return None


def shown_identifier(value: str, most: int = 100) -> str:
    """An identifier as messages name it: whole, or its start and its length when it is long."""
    return value if len(value) <= most else f"{value[: most - 20]}… ({len(value)} characters)"


class DCValue(NamedTuple):
    """One Dublin Core statement: element name, value, optional xml:lang.

    A named tuple: records carry dozens, and a harvest creates them by the million."""

    element: str
    value: str
    lang: str | None = None


@dataclass
class Record:
    """A record as the store keeps it.

    `metadata` maps a metadataPrefix to its pre-rendered XML fragment; `datestamp` is
    assigned by the store when exposed content changes (epoch seconds, UTC).
    """

    identifier: str
    dc: list[DCValue] = field(default_factory=list)
    sets: list[str] = field(default_factory=list)
    deleted: bool = False
    source: str = "local"
    datestamp: int | None = None
    metadata: dict[str, str] = field(default_factory=dict)
    fulltext: str | None = None
    raw_xml: str | None = None
    provenance: dict[str, str] | None = None
    about: str | None = None  # pre-rendered <about> payload, e.g. a provenance container

    def dc_values(self, element: str) -> list[str]:
        return [v.value for v in self.dc if v.element == element]


@dataclass(frozen=True, slots=True)
class Header:
    """A record as a list or GetRecord shows it: the header fields and, maybe, its metadata."""

    identifier: str
    datestamp: int
    deleted: bool
    sets: tuple[str, ...]
    metadata: str | None = None
    about: str | None = None
    xml: str = ""  # the pre-rendered <header> element
    rendered: bytes | None = None  # the pre-rendered <record> element, as served


@dataclass(frozen=True)
class ListQuery:
    """A selective list: which format, which window of datestamps, which set.

    Here, not in the store, because the protocol asks for lists in these terms and must not
    import the store to do so."""

    prefix: str
    start: int | None = None
    end: int | None = None
    set_spec: str | None = None


class Rendered(NamedTuple):
    """A list row as served: its key, and its stored `<record>` (or `<header>`) element."""

    datestamp: int
    identifier: str
    xml: bytes


# ---- datestamps: epoch seconds inside, UTC ISO 8601 at the edge ---------------------------

# The two granularities, as Identify names them, and the syntax of each. [0-9], never \\d: \\d
# (and strptime) match any script's digits; the server, the harvester and the validator all
# read dates with these.
DAY, SECONDS = "YYYY-MM-DD", "YYYY-MM-DDThh:mm:ssZ"
DAY_RE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
SECONDS_RE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}Z")
DATESTAMP_RES = {DAY: DAY_RE, SECONDS: SECONDS_RE}


def format_datestamp(epoch: int) -> str:
    # zfill: glibc's %Y writes year 999 as "999"; the datestamp syntax wants four digits.
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(epoch)).zfill(20)


def format_day(epoch: int) -> str:
    return time.strftime("%Y-%m-%d", time.gmtime(epoch)).zfill(10)


def parse_datestamp(text: str, *, end_of_day: bool = False) -> tuple[int, str]:
    """Parse `YYYY-MM-DD` or `YYYY-MM-DDThh:mm:ssZ` into (epoch seconds, granularity).

    A day as an upper bound covers the whole day. Raises ValueError on anything else,
    including offsets, fractions and impossible dates.
    """
    if DAY_RE.fullmatch(text):
        epoch = _epoch(text)
        return (epoch + 86399 if end_of_day else epoch), DAY
    if SECONDS_RE.fullmatch(text):
        hh, mm, ss = int(text[11:13]), int(text[14:16]), int(text[17:19])
        if hh > 23 or mm > 59 or ss > 59:
            raise ValueError(f"not an OAI-PMH UTC datetime: {text!r}")
        return _epoch(text) + hh * 3600 + mm * 60 + ss, SECONDS
    raise ValueError(f"not an OAI-PMH UTC datetime: {text!r}")


_EPOCH_DAY = date(1970, 1, 1).toordinal()


def _epoch(text: str) -> int:
    """Epoch seconds of the day `YYYY-MM-DD` that `text` starts with (its digits checked by the
    caller's pattern); an impossible date raises ValueError. A harvest parses every record's
    datestamp: this is a tenth of what strptime costs."""
    return (date(int(text[0:4]), int(text[5:7]), int(text[8:10])).toordinal() - _EPOCH_DAY) * 86400
