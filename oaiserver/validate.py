"""`oaiserver validate URL`: hold any OAI-PMH base URL to the OAI-PMH 2.0 specification.

Works on our repository or a partner's: it only speaks HTTP to the URL given. Every response
is parsed safely (no DTD, no entities, no network) and validated against the official
schemas shipped in `oaiserver/schemas/` (loaded offline with a driver schema, see
`load_schema`), then held to the rules the schemas cannot express: Identify, datestamps and
granularity, a whole ListIdentifiers resumption chain, ListRecords, GetRecord, and the errors
that bad arguments must produce (`ERROR_CASES`).

The result is one line per rule (`RULES`, then `ERROR_CASES`): PASS, FAIL, WARN or SKIP with a
short reason. Any FAIL makes the exit code 1.
"""

from __future__ import annotations

import calendar
import functools
import logging
import re
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, TextIO
from urllib.parse import urlsplit

import requests
from lxml import etree

from oaiserver.records import DATESTAMP_RES, DAY, OAI_NS, REPO_ID_RE, SECONDS, format_datestamp, format_day

log = logging.getLogger(__name__)

SCHEMA_DIR = Path(__file__).parent / "schemas"

OAI_DC_NS = "http://www.openarchives.org/OAI/2.0/oai_dc/"
OAI_DC_SCHEMA = "http://www.openarchives.org/OAI/2.0/oai_dc.xsd"
OAI_ID_NS = "http://www.openarchives.org/OAI/2.0/oai-identifier"
OAI = f"{{{OAI_NS}}}"
OAI_ID = f"{{{OAI_ID_NS}}}"

# The driver schema imports every namespace from the local files, xml.xsd and simpledc first:
# a namespace imported first is never fetched again, so the schemas' own network imports are
# skipped (libxml2 only warns). See tests/data/schemas/SOURCES.md.
SCHEMA_ORDER = (
    ("http://www.w3.org/XML/1998/namespace", "xml.xsd"),
    ("http://purl.org/dc/elements/1.1/", "simpledc20021212.xsd"),
    (OAI_NS, "OAI-PMH.xsd"),
    (OAI_DC_NS, "oai_dc.xsd"),
    ("http://www.openarchives.org/OAI/2.0/provenance", "provenance.xsd"),
    (OAI_ID_NS, "oai-identifier.xsd"),
    ("http://www.openarchives.org/OAI/2.0/friends/", "friends.xsd"),
    ("http://www.openarchives.org/OAI/2.0/branding/", "branding.xsd"),
)

PASS, FAIL, WARN, SKIP = "PASS", "FAIL", "WARN", "SKIP"

FORMATS = {DAY: "%Y-%m-%d", SECONDS: "%Y-%m-%dT%H:%M:%SZ"}
DELETED_RECORD = ("no", "transient", "persistent")
# RFC 3986 (IRI: non-ASCII allowed): a scheme, then URI characters or %-escapes; no whitespace.
URI_RE = re.compile(
    r"[A-Za-z][A-Za-z0-9+.\-]*:(?:[A-Za-z0-9\-._~:/?#\[\]@!$&'()*+,;=]|%[0-9A-Fa-f]{2}|[^\x00-\x7f\s])+"
)
MAX_BYTES = 64 * 1024 * 1024
MAX_RETRY_AFTER = 10
USER_AGENT = "oaiserver-validate/1 (OAI-PMH 2.0 conformance check)"

# The rules, in the order they are reported. Rules marked True are checked on every response.
RULES: tuple[tuple[str, bool, str], ...] = (
    ("http-200", True, "every response is HTTP 200, OAI-PMH errors included"),
    ("http-post", False, "the base URL answers POST as well as GET"),
    ("content-type", True, "responses are served as text/xml"),
    ("well-formed", True, "every response is well-formed XML (parsed with no DTD, entities or network)"),
    ("schema-valid", True, "every response is valid against the official schemas, payload included"),
    ("request-element", True, "<request> holds the base URL and, unless in error, the verb asked"),
    ("response-date", True, "responseDate is UTC YYYY-MM-DDThh:mm:ssZ (no fraction, no offset)"),
    ("datestamps", True, "datestamps are in the declared granularity, without fractions or offsets"),
    ("identify.required", False, "Identify has every required element, protocolVersion 2.0"),
    ("identify.baseURL", False, "Identify's baseURL is the URL validated"),
    ("identify.granularity", False, "granularity is YYYY-MM-DD or YYYY-MM-DDThh:mm:ssZ"),
    ("identify.earliestDatestamp", False, "earliestDatestamp is in that granularity and bounds every datestamp"),
    ("identify.deletedRecord", False, "deletedRecord is no, transient or persistent, and true to the lists"),
    ("identify.oai-identifier", False, "an oai-identifier description, if any, agrees with the identifiers"),
    ("formats.oai_dc", False, "ListMetadataFormats includes oai_dc"),
    ("sets", False, "ListSets answers sets (no setSpec twice) or noSetHierarchy"),
    ("list.unique", False, "no identifier twice in the ListIdentifiers chain"),
    ("list.identifiers-uri", False, "every identifier is a URI: a scheme, no spaces, only URI characters"),
    ("list.cursor", False, "each page's cursor is the count of items before it"),
    ("list.complete-size", False, "completeListSize is the size of the list"),
    ("list.tokens-accepted", False, "every resumptionToken issued is accepted"),
    ("list.no-empty-page", False, "no resumptionToken leads to an empty page"),
    ("list.last-token", False, "the last page's resumptionToken is empty (or absent on a one-page list)"),
    ("records.first-page", False, "ListRecords answers oai_dc records consistent with ListIdentifiers"),
    ("records.deleted-no-metadata", True, "deleted records carry no metadata"),
    ("getrecord.match", False, "GetRecord of listed identifiers gives the same header"),
    ("selective.from-until", False, "from/until in the declared granularity select records in range"),
    ("error.request-attributes", True, "<request> has no attributes on badVerb and badArgument"),
)

NOTHING_SEEN = {
    "records.deleted-no-metadata": "no deleted record seen",
    "datestamps": "no datestamp seen",
    "error.request-attributes": "no badVerb or badArgument response",
}


@dataclass(frozen=True)
class ErrorCase:
    """A bad request and the OAI-PMH error it must produce."""

    name: str
    what: str
    pairs: tuple[tuple[str, str], ...]
    code: str


# fmt: off
LI = ("verb", "ListIdentifiers")
DC = ("metadataPrefix", "oai_dc")
ERROR_CASES: tuple[ErrorCase, ...] = (
    ErrorCase("error.bad-verb", "an unknown verb", (("verb", "NoSuchVerb"),), "badVerb"),
    ErrorCase("error.missing-verb", "no verb", (), "badVerb"),
    ErrorCase("error.repeated-verb", "the verb twice", (("verb", "Identify"), ("verb", "Identify")), "badVerb"),
    ErrorCase("error.missing-metadataPrefix", "ListRecords without metadataPrefix", (("verb", "ListRecords"),),
              "badArgument"),
    ErrorCase("error.illegal-argument", "Identify with an argument it does not take",
              (("verb", "Identify"), ("foo", "bar")), "badArgument"),
    ErrorCase("error.repeated-argument", "metadataPrefix twice", (LI, DC, DC), "badArgument"),
    ErrorCase("error.exclusive-token", "resumptionToken with another argument",
              (LI, DC, ("resumptionToken", "x")), "badArgument"),
    ErrorCase("error.bad-date", "from=yesterday", (LI, DC, ("from", "yesterday")), "badArgument"),
    ErrorCase("error.from-after-until", "from later than until",
              (LI, DC, ("from", "2001-01-01"), ("until", "2000-01-01")), "badArgument"),
    ErrorCase("error.mixed-granularity", "from and until in different granularities",
              (LI, DC, ("from", "2000-01-01"), ("until", "2001-01-01T00:00:00Z")), "badArgument"),
    ErrorCase("error.bad-resumptionToken", "a made-up resumptionToken",
              (LI, ("resumptionToken", "oaiserver-validate-no-such-token")), "badResumptionToken"),
    ErrorCase("error.unknown-identifier", "GetRecord of an identifier that does not exist",
              (("verb", "GetRecord"), ("identifier", "oai:validate.invalid:no-such-record"), DC), "idDoesNotExist"),
    ErrorCase("error.unknown-prefix", "ListIdentifiers in a format nobody has",
              (LI, ("metadataPrefix", "no_such_format")), "cannotDisseminateFormat"),
)
# fmt: on
ECHO_FORBIDDEN = ("badVerb", "badArgument")


# ---- schemas and parsing -----------------------------------------------------------------------


@functools.cache
def load_schema(folder: Path = SCHEMA_DIR) -> etree.XMLSchema:
    """The official schemas, offline: one driver schema importing every namespace locally."""
    imports = "".join(
        f'<xs:import namespace="{ns}" schemaLocation="{(folder / name).resolve().as_uri()}"/>'
        for ns, name in SCHEMA_ORDER
    )
    parser = etree.XMLParser(no_network=True, resolve_entities=False)
    driver = etree.fromstring(f'<xs:schema xmlns:xs="http://www.w3.org/2001/XMLSchema">{imports}</xs:schema>', parser)
    return etree.XMLSchema(driver)


def parse(body: bytes) -> Any:
    """Parse a response with no DTD, no entity expansion and no network; refuse any DOCTYPE."""
    parser = etree.XMLParser(no_network=True, resolve_entities=False, load_dtd=False, huge_tree=False)
    doc = etree.fromstring(body, parser)
    if doc.getroottree().docinfo.doctype:
        raise ValueError("it declares a DOCTYPE; OAI-PMH responses must parse without DTDs or entities")
    return doc


def parse_utc(text: str, granularity: str) -> datetime | None:
    """A datestamp in exactly this granularity, or None. The server's syntax (records.py):
    ASCII digits only, which strptime alone would not insist on."""
    if not DATESTAMP_RES[granularity].fullmatch(text):
        return None
    try:
        return datetime.strptime(text, FORMATS[granularity])
    except ValueError:
        return None


def parse_any(text: str) -> datetime | None:
    return parse_utc(text, SECONDS) or parse_utc(text, DAY)


def date_problem(text: str, granularity: str | None) -> str | None:
    """Why `text` is not a legal datestamp in `granularity` (either legal one if None)."""
    if (granularity and parse_utc(text, granularity)) or (granularity is None and parse_any(text)):
        return None
    if re.search(r":[0-9]{2}\.[0-9]", text):
        why = "has fractional seconds"
    elif re.search(r"([+-][0-9]{2}:?[0-9]{2}|[+-][0-9]{2})$", text) and "T" in text:
        why = "has a UTC offset instead of Z"
    elif granularity and parse_any(text):
        why = f"is not in the declared granularity {granularity}"
    else:
        why = "is not YYYY-MM-DD or YYYY-MM-DDThh:mm:ssZ"
    return f"{text!r} {why}"


def one_line(text: str, limit: int = 240) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


# ---- what was fetched ---------------------------------------------------------------------------


@dataclass
class Fetched:
    """One request and what came back."""

    subject: str
    pairs: list[tuple[str, str]]
    method: str = "GET"
    status: int | None = None
    content_type: str = ""
    location: str | None = None
    body: bytes | None = None
    doc: Any = None
    problem: str | None = None  # why there is no doc

    @property
    def errors(self) -> list[tuple[str, str]]:
        if self.doc is None:
            return []
        return [(e.get("code") or "", one_line(e.text or "", 80)) for e in self.doc.findall(f"{OAI}error")]

    @property
    def codes(self) -> list[str]:
        return [code for code, _ in self.errors]

    def part(self, verb: str) -> Any:
        return None if self.doc is None else self.doc.find(f"{OAI}{verb}")

    def describe_errors(self) -> str:
        return ", ".join(f"{c} ({m})" if m else c for c, m in self.errors) or "no error"


@dataclass
class Page:
    fetched: Fetched
    items: list[Any]
    token: Any  # the resumptionToken element, or None


@dataclass
class Chain:
    """A list followed through its resumption tokens."""

    pages: list[Page] = field(default_factory=list)
    ending: str = "complete"  # complete | max-pages | empty-page | refused | unusable | error | no-records
    last: Fetched | None = None  # the response that ended the chain


@dataclass(frozen=True)
class Note:
    status: str
    subject: str
    reason: str


@dataclass(frozen=True)
class Result:
    name: str
    status: str
    reason: str


# ---- the validator --------------------------------------------------------------------------------


class Validator:
    def __init__(
        self,
        url: str,
        *,
        max_pages: int = 50,
        timeout: float = 30.0,
        session: requests.Session | None = None,
        progress: Callable[[str], None] | None = None,
    ) -> None:
        self.url = url
        self.max_pages = max_pages
        self.timeout = timeout
        self.session = session or requests.Session()
        self.session.headers["User-Agent"] = USER_AGENT
        self.progress = progress or (lambda _msg: None)
        self.schema = load_schema()
        self.notes: dict[str, list[Note]] = {}
        self.skipped: dict[str, str] = {}
        self.granularity: str | None = None
        self.deleted_policy: str | None = None
        self.repository_identifier: str | None = None
        self.earliest: tuple[str, datetime] | None = None
        self.earliest_seen: tuple[str, datetime] | None = None  # the oldest datestamp seen
        self.deleted_seen: set[str] = set()
        self.identifiers_seen: list[str] = []

    # -- bookkeeping

    def note(self, rule: str, status: str, reason: str, subject: str = "") -> None:
        self.notes.setdefault(rule, []).append(Note(status, subject, reason))

    def skip(self, rules: Sequence[str], reason: str) -> None:
        for rule in rules:
            self.skipped.setdefault(rule, reason)

    # -- HTTP

    def fetch(self, subject: str, pairs: Sequence[tuple[str, str]], method: str = "GET") -> Fetched:
        self.progress(subject)
        f = Fetched(subject, list(pairs), method)
        for attempt in range(3):
            try:
                if method == "GET":
                    r = self.session.get(
                        self.url, params=f.pairs, timeout=self.timeout, stream=True, allow_redirects=False
                    )
                else:
                    r = self.session.post(
                        self.url, data=f.pairs, timeout=self.timeout, stream=True, allow_redirects=False
                    )
                with r:
                    body = bytearray()
                    for chunk in r.iter_content(65536):
                        body += chunk
                        if len(body) > MAX_BYTES:
                            raise ValueError(f"the response is larger than {MAX_BYTES // 2**20} MiB")
            except (requests.RequestException, ValueError) as exc:
                f.problem = f"no usable HTTP response: {one_line(str(exc), 160)}"
                log.debug("%s %s: %s", method, subject, f.problem)
                self.note("http-200", FAIL, f.problem, subject)
                return f
            log.debug("%s %s -> HTTP %s (%d bytes)", method, r.url, r.status_code, len(body))
            retry_after = r.headers.get("Retry-After", "")
            if r.status_code == 503 and retry_after.isdigit() and int(retry_after) <= MAX_RETRY_AFTER and attempt < 2:
                self.note("http-200", WARN, f"HTTP 503 Retry-After {retry_after}; retried", subject)
                time.sleep(int(retry_after))
                continue
            f.status, f.body = r.status_code, bytes(body)
            f.content_type = r.headers.get("Content-Type", "")
            f.location = r.headers.get("Location")
            break
        assert f.body is not None
        try:
            f.doc = parse(f.body)
        except (etree.XMLSyntaxError, ValueError) as exc:
            f.problem = f"not well-formed XML: {one_line(str(exc), 160)}"
        self.inspect(f)
        return f

    # -- checks on every response

    def inspect(self, f: Fetched) -> None:
        s = f.subject
        if f.status == 200:
            self.note("http-200", PASS, "", s)
        elif f.status is not None and 300 <= f.status < 400:
            self.note("http-200", FAIL, f"HTTP {f.status} redirect to {f.location}: the base URL must answer itself", s)
        elif f.errors:
            self.note(
                "http-200",
                FAIL,
                f"HTTP {f.status} with an OAI-PMH error body ({', '.join(f.codes)}): "
                "OAI-PMH errors must be sent with HTTP 200",
                s,
            )
        else:
            self.note("http-200", FAIL, f"HTTP {f.status}", s)
        mime = f.content_type.split(";")[0].strip().lower()
        if mime in ("text/xml", "application/xml"):
            self.note("content-type", PASS, "", s)
        else:
            self.note("content-type", WARN, f"Content-Type is {f.content_type or 'missing'!r}, not text/xml", s)
        if f.doc is None:
            if f.status == 200:  # a failed status is enough to report for a body that is not XML
                self.note("well-formed", FAIL, f.problem or "no document", s)
            return
        self.note("well-formed", PASS, "", s)
        doc = f.doc
        if self.schema.validate(doc):
            self.note("schema-valid", PASS, "", s)
        else:
            errors = self.schema.error_log.filter_from_errors()
            first = errors[0] if errors else None
            where = f"line {first.line}: {one_line(first.message, 200)}" if first else "invalid"
            more = f" (+{len(errors) - 1} more)" if len(errors) > 1 else ""
            self.note("schema-valid", FAIL, where + more, s)
        self._inspect_request(f)
        self._inspect_dates(f)
        self._inspect_deleted(f)

    def _inspect_request(self, f: Fetched) -> None:
        s, doc = f.subject, f.doc
        request = doc.find(f"{OAI}request")
        if request is None:
            self.note("request-element", FAIL, "no <request> element", s)
            return
        problems = []
        if (request.text or "").strip() != self.url:
            problems.append(f"<request> holds {(request.text or '').strip()!r}, not the base URL {self.url!r}")
        sent = [v for k, v in f.pairs if k == "verb"]
        if not f.errors and sent and request.get("verb") != sent[0]:
            problems.append(f"<request verb={request.get('verb')!r}> for a {sent[0]} request")
        self.note("request-element", FAIL if problems else PASS, "; ".join(problems), s)
        if any(code in ECHO_FORBIDDEN for code in f.codes):
            if request.attrib:
                echoed = " ".join(f'{k}="{v}"' for k, v in request.attrib.items())
                self.note(
                    "error.request-attributes",
                    FAIL,
                    f"{', '.join(sorted(set(f.codes)))} response echoes {echoed}; it must echo no arguments",
                    s,
                )
            else:
                self.note("error.request-attributes", PASS, "", s)

    def _inspect_dates(self, f: Fetched) -> None:
        s, doc = f.subject, f.doc
        rd = doc.find(f"{OAI}responseDate")
        if rd is not None:
            problem = date_problem((rd.text or "").strip(), SECONDS)
            self.note("response-date", FAIL if problem else PASS, f"responseDate {problem}" if problem else "", s)
        problems = []
        checked = 0
        for header in doc.iter(f"{OAI}header"):
            ds = (header.findtext(f"{OAI}datestamp") or "").strip()
            ident = (header.findtext(f"{OAI}identifier") or "").strip()
            checked += 1
            problem = date_problem(ds, self.granularity)
            if problem:
                problems.append(f"{ident}: datestamp {problem}")
                continue
            when = parse_any(ds)
            if when is not None and (self.earliest_seen is None or when < self.earliest_seen[1]):
                self.earliest_seen = (f"{ident} ({ds})", when)
        for token in doc.iter(f"{OAI}resumptionToken"):
            expires = token.get("expirationDate")
            if expires is not None:
                checked += 1
                problem = date_problem(expires, SECONDS)
                if problem:
                    problems.append(f"resumptionToken expirationDate {problem}")
        if problems:
            more = f" (+{len(problems) - 2} more)" if len(problems) > 2 else ""
            self.note("datestamps", FAIL, "; ".join(problems[:2]) + more, s)
        elif checked:
            self.note("datestamps", PASS, "", s)

    def _inspect_deleted(self, f: Fetched) -> None:
        for record in f.doc.iter(f"{OAI}record"):
            header = record.find(f"{OAI}header")
            if header is None or header.get("status") != "deleted":
                continue
            ident = (header.findtext(f"{OAI}identifier") or "").strip()
            if record.find(f"{OAI}metadata") is not None:
                self.note("records.deleted-no-metadata", FAIL, f"deleted record {ident} carries <metadata>", f.subject)
            else:
                self.note("records.deleted-no-metadata", PASS, "", f.subject)

    # -- lists

    def walk(self, verb: str, pairs: Sequence[tuple[str, str]], item: str) -> Chain:
        """Follow a list through its tokens, at most --max-pages pages."""
        chain = Chain()
        k = 1
        f = self.fetch(f"{verb} p1", pairs)
        while True:
            chain.last = f
            part = f.part(verb)
            if f.doc is None or (part is None and not f.errors):
                chain.ending = "unusable" if k > 1 else "error"
                break
            if f.errors:
                if k == 1:
                    chain.ending = "no-records" if set(f.codes) == {"noRecordsMatch"} else "error"
                else:
                    chain.ending = "empty-page" if "noRecordsMatch" in f.codes else "refused"
                break
            items = part.findall(f"{OAI}{item}")
            token = part.find(f"{OAI}resumptionToken")
            if not items and k > 1:
                chain.ending = "empty-page"
                break
            chain.pages.append(Page(f, items, token))
            text = (token.text or "") if token is not None else ""
            if not text.strip():
                chain.ending = "complete"
                break
            if k >= self.max_pages:
                chain.ending = "max-pages"
                break
            k += 1
            f = self.fetch(f"{verb} p{k}", [("verb", verb), ("resumptionToken", text)])
        return chain

    # -- the checks, in the order they run

    def run(self) -> list[Result]:
        identify = self.check_identify()
        if identify.status is None:
            self.skip([name for name, _, _ in RULES] + [c.name for c in ERROR_CASES], "the base URL did not answer")
            return self.results()
        self.check_post()
        self.check_formats()
        self.check_sets()
        headers = self.check_identifiers()
        self.check_records(headers)
        self.check_get_record(headers)
        self.check_selective(identify)
        self.check_errors()
        self.check_identify_against_lists()
        return self.results()

    def check_identify(self) -> Fetched:
        f = self.fetch("Identify", [("verb", "Identify")])
        rules = (
            "identify.required",
            "identify.baseURL",
            "identify.granularity",
            "identify.earliestDatestamp",
            "identify.deletedRecord",
            "identify.oai-identifier",
        )
        part = f.part("Identify")
        if part is None:
            why = f.problem or f"HTTP {f.status}, {f.describe_errors()}"
            self.note("identify.required", FAIL, f"no usable Identify response: {why}")
            self.skip(rules, "no usable Identify response")
            return f

        def text(tag: str) -> str | None:
            el = part.find(f"{OAI}{tag}")
            return None if el is None else (el.text or "").strip()

        required = (
            "repositoryName",
            "baseURL",
            "protocolVersion",
            "adminEmail",
            "earliestDatestamp",
            "deletedRecord",
            "granularity",
        )
        missing = [tag for tag in required if text(tag) is None]
        if missing:
            self.note("identify.required", FAIL, f"missing {', '.join(missing)}")
        elif text("protocolVersion") != "2.0":
            self.note("identify.required", FAIL, f"protocolVersion is {text('protocolVersion')!r}, not '2.0'")
        else:
            self.note("identify.required", PASS, f"repositoryName {text('repositoryName')!r}, protocolVersion 2.0")

        base = text("baseURL")
        if base is None:
            self.skip(["identify.baseURL"], "no baseURL")
        elif base == self.url:
            self.note("identify.baseURL", PASS, f"baseURL is {base}")
        elif _normal_url(base) == _normal_url(self.url):
            self.note("identify.baseURL", WARN, f"baseURL {base!r} differs from {self.url!r} only in spelling")
        else:
            self.note("identify.baseURL", FAIL, f"baseURL is {base!r} but the URL validated is {self.url!r}")

        granularity = text("granularity")
        if granularity in (DAY, SECONDS):
            self.granularity = granularity
            self.note("identify.granularity", PASS, granularity)
        else:
            self.note("identify.granularity", FAIL, f"granularity {granularity!r} is neither {DAY} nor {SECONDS}")

        earliest = text("earliestDatestamp")
        if earliest is not None:
            problem = date_problem(earliest, self.granularity)
            when = None if problem else parse_any(earliest)
            if when is not None:
                self.earliest = (earliest, when)
            else:
                self.note("identify.earliestDatestamp", FAIL, f"earliestDatestamp {problem}")

        policy = text("deletedRecord")
        if policy in DELETED_RECORD:
            self.deleted_policy = policy
        elif policy is not None:
            self.note("identify.deletedRecord", FAIL, f"deletedRecord {policy!r} is not one of {DELETED_RECORD}")

        ids = part.findall(f"{OAI}description/{OAI_ID}oai-identifier")
        if not ids:
            self.note("identify.oai-identifier", PASS, "no oai-identifier description (optional)")
        for desc in ids:
            self.check_oai_identifier(desc)
        return f

    def check_oai_identifier(self, desc: Any) -> None:
        def text(tag: str) -> str:
            return (desc.findtext(f"{OAI_ID}{tag}") or "").strip()

        repo, sample = text("repositoryIdentifier"), text("sampleIdentifier")
        problems = []
        if text("scheme") != "oai":
            problems.append(f"scheme is {text('scheme')!r}, not 'oai'")
        if text("delimiter") != ":":
            problems.append(f"delimiter is {text('delimiter')!r}, not ':'")
        if not REPO_ID_RE.fullmatch(repo):
            problems.append(f"repositoryIdentifier {repo!r} is not a domain name whose labels start with a letter")
        if not sample.startswith(f"oai:{repo}:"):
            problems.append(f"sampleIdentifier {sample!r} does not start with 'oai:{repo}:'")
        if problems:
            self.note("identify.oai-identifier", FAIL, "; ".join(problems))
        else:
            self.repository_identifier = repo
            self.note("identify.oai-identifier", PASS, f"repositoryIdentifier {repo}, sample {sample}")

    def check_post(self) -> None:
        f = self.fetch("Identify (POST)", [("verb", "Identify")], method="POST")
        if f.status == 200 and f.part("Identify") is not None:
            self.note("http-post", PASS, "POST verb=Identify answers Identify")
        else:
            why = f"HTTP {f.status}" if f.status not in (None, 200) else f.problem or f.describe_errors()
            self.note("http-post", FAIL, f"POST verb=Identify: {why}")

    def check_formats(self) -> None:
        f = self.fetch("ListMetadataFormats", [("verb", "ListMetadataFormats")])
        part = f.part("ListMetadataFormats")
        if part is None:
            why = f.problem or f.describe_errors()
            self.note("formats.oai_dc", FAIL, f"no usable ListMetadataFormats response: {why}")
            return
        formats = {
            (fmt.findtext(f"{OAI}metadataPrefix") or "").strip(): fmt for fmt in part.findall(f"{OAI}metadataFormat")
        }
        dc = formats.get("oai_dc")
        if dc is None:
            self.note("formats.oai_dc", FAIL, f"oai_dc is not among {sorted(formats)}")
            return
        ns = (dc.findtext(f"{OAI}metadataNamespace") or "").strip()
        schema = (dc.findtext(f"{OAI}schema") or "").strip()
        if ns != OAI_DC_NS:
            self.note("formats.oai_dc", FAIL, f"oai_dc's metadataNamespace is {ns!r}, not {OAI_DC_NS!r}")
        elif schema != OAI_DC_SCHEMA:
            self.note("formats.oai_dc", WARN, f"oai_dc's schema is {schema!r}, not {OAI_DC_SCHEMA!r}")
        else:
            self.note("formats.oai_dc", PASS, f"{len(formats)} format(s): {', '.join(sorted(formats))}")

    def check_sets(self) -> None:
        chain = self.walk("ListSets", [("verb", "ListSets")], "set")
        last = chain.last
        assert last is not None
        if chain.ending in ("error", "no-records"):
            if last.codes == ["noSetHierarchy"]:
                self.note("sets", PASS, "noSetHierarchy: the repository has no sets")
            else:
                self.note("sets", FAIL, f"ListSets answered {last.problem or last.describe_errors()}")
            return
        specs = [(s.findtext(f"{OAI}setSpec") or "").strip() for page in chain.pages for s in page.items]
        twice = sorted({s for s in specs if specs.count(s) > 1})
        if chain.ending in ("empty-page", "refused", "unusable"):
            why = last.problem or last.describe_errors()
            self.note("sets", FAIL, f"the resumptionToken of ListSets page {len(chain.pages)} led to {why}")
        elif twice:
            self.note("sets", FAIL, f"setSpec listed twice: {', '.join(twice[:5])}")
        elif chain.ending == "max-pages":
            self.note("sets", WARN, f"{len(specs)} sets in {self.max_pages} pages; stopped at --max-pages")
        else:
            self.note("sets", PASS, f"{len(specs)} set(s) in {len(chain.pages)} page(s)")

    def check_identifiers(self) -> list[tuple[int, Any]]:
        """Follow the whole ListIdentifiers chain; return (page number, header) pairs."""
        chain = self.walk("ListIdentifiers", [("verb", "ListIdentifiers"), ("metadataPrefix", "oai_dc")], "header")
        rules = [
            "list.unique",
            "list.identifiers-uri",
            "list.cursor",
            "list.complete-size",
            "list.tokens-accepted",
            "list.no-empty-page",
            "list.last-token",
        ]
        last = chain.last
        assert last is not None
        if chain.ending == "no-records":
            self.note("list.unique", WARN, "ListIdentifiers answered noRecordsMatch: the repository lists nothing")
            self.skip(rules, "the repository lists no records")
            return []
        if chain.ending == "error":
            self.note("list.unique", FAIL, f"ListIdentifiers p1 answered {last.problem or last.describe_errors()}")
            self.skip(rules, "no usable first page")
            return []
        headers = [(i, h) for i, page in enumerate(chain.pages, 1) for h in page.items]
        self.identifiers_seen = [(h.findtext(f"{OAI}identifier") or "").strip() for _, h in headers]
        n, pages = len(headers), len(chain.pages)

        first_page: dict[str, int] = {}
        repeats = []
        for (i, _), ident in zip(headers, self.identifiers_seen, strict=True):
            if ident in first_page:
                repeats.append(f"{ident} on pages {first_page[ident]} and {i}")
            else:
                first_page[ident] = i
        if repeats:
            more = f" (+{len(repeats) - 3} more)" if len(repeats) > 3 else ""
            self.note("list.unique", FAIL, "; ".join(repeats[:3]) + more)
        else:
            self.note("list.unique", PASS, f"{n} identifiers in {pages} page(s), none twice")

        not_uri = [i for i in dict.fromkeys(self.identifiers_seen) if not URI_RE.fullmatch(i)]
        if not_uri:
            shown = ", ".join(repr(i) for i in not_uri[:3])
            more = f" (+{len(not_uri) - 3} more)" if len(not_uri) > 3 else ""
            self.note("list.identifiers-uri", FAIL, f"not URIs: {shown}{more}")
        else:
            self.note("list.identifiers-uri", PASS, f"{len(first_page)} identifiers are URIs")

        before, wrong, cursors = 0, [], 0
        sizes: list[tuple[int, int]] = []
        for i, page in enumerate(chain.pages, 1):
            if page.token is not None and page.token.get("cursor") is not None:
                cursors += 1
                cursor = page.token.get("cursor")
                if cursor != str(before):
                    wrong.append(f"page {i} has cursor={cursor}, but {before} items came before it")
            if page.token is not None and (size := page.token.get("completeListSize")) is not None:
                sizes.append((i, int(size) if size.isdigit() else -1))
            before += len(page.items)
        if wrong:
            self.note("list.cursor", FAIL, "; ".join(wrong[:3]))
        else:
            self.note("list.cursor", PASS, f"{cursors} cursor(s) consistent" if cursors else "no cursor (optional)")

        if not sizes:
            self.note("list.complete-size", PASS, "no completeListSize (optional)")
        else:
            declared = sizes[-1][1]
            if len({s for _, s in sizes}) > 1:
                self.note(
                    "list.complete-size",
                    WARN,
                    "completeListSize changed across pages: " + ", ".join(f"p{i}={s}" for i, s in sizes),
                )
            if chain.ending == "complete" and declared != n:
                self.note(
                    "list.complete-size",
                    FAIL,
                    f"completeListSize={declared}, but the list had {n} items (changed meanwhile? run again)",
                )
            elif chain.ending != "complete" and declared < n:
                self.note("list.complete-size", FAIL, f"completeListSize={declared}, but {n} items already came")
            else:
                self.note("list.complete-size", PASS, f"completeListSize={declared}")

        why = last.problem or last.describe_errors()
        followed = pages - 1
        if chain.ending in ("refused", "unusable"):
            self.note("list.tokens-accepted", FAIL, f"the resumptionToken of page {pages} led to {why}")
        else:
            self.note("list.tokens-accepted", PASS, f"{followed} token(s) followed" if followed else "one page")
        if chain.ending == "empty-page":
            got = why if last.errors else "a ListIdentifiers without headers"
            self.note("list.no-empty-page", FAIL, f"the resumptionToken of page {pages} led to {got}")
        else:
            self.note("list.no-empty-page", PASS, "no token led to an empty page")

        final = chain.pages[-1].token
        if chain.ending == "complete":
            if final is None and pages > 1:
                self.note(
                    "list.last-token",
                    WARN,
                    f"page {pages} ends the list with no resumptionToken; the spec asks for an empty one",
                )
            else:
                self.note(
                    "list.last-token",
                    PASS,
                    f"page {pages} ends the list" + (" with an empty token" if final is not None else ""),
                )
        elif chain.ending == "max-pages":
            self.note("list.last-token", WARN, f"stopped after --max-pages={self.max_pages}; the end was not reached")
        elif chain.ending == "empty-page":
            self.note(
                "list.last-token",
                FAIL,
                f"page {pages} was the last page but carried the non-empty token {one_line(final.text, 60)!r}",
            )
        else:
            self.skip(["list.last-token"], "the chain broke before its end")
        return headers

    def check_records(self, headers: list[tuple[int, Any]]) -> None:
        f = self.fetch("ListRecords p1", [("verb", "ListRecords"), ("metadataPrefix", "oai_dc")])
        part = f.part("ListRecords")
        if part is None:
            if f.codes == ["noRecordsMatch"] and not headers:
                self.note("records.first-page", PASS, "noRecordsMatch, as ListIdentifiers")
            else:
                why = f.problem or f.describe_errors()
                self.note(
                    "records.first-page", FAIL, f"ListRecords answered {why}; ListIdentifiers listed {len(headers)}"
                )
            return
        problems, warnings, deleted = [], [], 0
        listed = set(self.identifiers_seen)
        records = part.findall(f"{OAI}record")
        for record in records:
            header = record.find(f"{OAI}header")
            if header is None:
                continue
            ident = (header.findtext(f"{OAI}identifier") or "").strip()
            if listed and ident not in listed:
                problems.append(f"{ident} is not in ListIdentifiers")
            if header.get("status") == "deleted":
                deleted += 1
                self.deleted_seen.add(ident)
                continue
            payload = _payload(record.find(f"{OAI}metadata"))
            if payload is None:
                warnings.append(f"{ident} is not deleted but has no metadata")
            elif payload.tag != f"{{{OAI_DC_NS}}}dc":
                problems.append(f"{ident}'s metadata is {payload.tag}, not oai_dc:dc")
        if problems:
            self.note("records.first-page", FAIL, "; ".join(problems[:3]))
        elif warnings:
            self.note("records.first-page", WARN, "; ".join(warnings[:3]))
        else:
            self.note("records.first-page", PASS, f"{len(records)} records ({deleted} deleted) on the first page")

    def check_get_record(self, headers: list[tuple[int, Any]]) -> None:
        live = next((h for _, h in headers if h.get("status") != "deleted"), None)
        gone = next((h for _, h in headers if h.get("status") == "deleted"), None)
        self.deleted_seen.update(_header_key(h)[0] for _, h in headers if h.get("status") == "deleted")
        if live is None and gone is None:
            self.skip(["getrecord.match"], "no identifiers listed")
            return
        for listed in (live, gone):
            if listed is None:
                continue
            ident = (listed.findtext(f"{OAI}identifier") or "").strip()
            f = self.fetch(f"GetRecord {ident}", [("verb", "GetRecord"), ("identifier", ident), DC])
            record = f.part("GetRecord")
            header = None if record is None else record.find(f"{OAI}record/{OAI}header")
            if header is None:
                why = f.problem or f.describe_errors()
                self.note("getrecord.match", FAIL, f"GetRecord of listed {ident} answered {why}")
                continue
            diffs = [
                f"{what} {b!r} in GetRecord, {a!r} in ListIdentifiers"
                for what, a, b in zip(
                    ("identifier", "datestamp", "status", "setSpecs"),
                    _header_key(listed),
                    _header_key(header),
                    strict=True,
                )
                if a != b
            ]
            payload = _payload(record.find(f"{OAI}record/{OAI}metadata"))
            if listed is live and (payload is None or payload.tag != f"{{{OAI_DC_NS}}}dc"):
                diffs.append("no oai_dc:dc metadata")
            kind = "live" if listed is live else "deleted"
            if diffs:
                self.note("getrecord.match", FAIL, f"{ident}: " + "; ".join(diffs))
            else:
                self.note("getrecord.match", PASS, f"{kind} {ident}")

    def check_selective(self, identify: Fetched) -> None:
        """from=earliestDatestamp until=Identify's responseDate lists only records in range: in the
        declared granularity, and in days (which every repository must accept)."""
        response_date = identify.doc.findtext(f"{OAI}responseDate") if identify.doc is not None else None
        now = parse_utc((response_date or "").strip(), SECONDS)
        if self.granularity is None or self.earliest is None or now is None:
            self.skip(["selective.from-until"], "no usable granularity, earliestDatestamp or responseDate")
            return
        for granularity in dict.fromkeys((self.granularity, DAY)):
            form = format_day if granularity == DAY else format_datestamp
            start, end = (form(calendar.timegm(d.timetuple())) for d in (self.earliest[1], now))
            what = f"from={start} until={end}"
            f = self.fetch(f"ListIdentifiers {what}", [LI, DC, ("from", start), ("until", end)])
            part = f.part("ListIdentifiers")
            if part is None:
                if f.codes == ["noRecordsMatch"] and not self.identifiers_seen:
                    self.note("selective.from-until", PASS, f"{what}: noRecordsMatch, as ListIdentifiers")
                else:
                    self.note("selective.from-until", FAIL, f"{what} answered {f.problem or f.describe_errors()}")
                continue
            lo, hi = parse_any(start), parse_any(end)
            outside, headers = [], part.findall(f"{OAI}header")
            for header in headers:
                ds = (header.findtext(f"{OAI}datestamp") or "").strip()
                when = parse_any(ds)
                if when is None or lo is None or hi is None:
                    continue
                inside = lo.date() <= when.date() <= hi.date() if granularity == DAY else lo <= when <= hi
                if not inside:
                    outside.append(f"{(header.findtext(f'{OAI}identifier') or '').strip()} ({ds})")
            if outside:
                self.note("selective.from-until", FAIL, f"{what} listed {', '.join(outside[:3])}")
            else:
                self.note("selective.from-until", PASS, f"{what}: {len(headers)} on the first page")

    def check_errors(self) -> None:
        for case in ERROR_CASES:
            f = self.fetch(case.name, case.pairs)
            if f.doc is None:
                self.note(case.name, FAIL, f"{case.what}: {f.problem}")
            elif case.code in f.codes:
                others = sorted(set(f.codes) - {case.code})
                self.note(
                    case.name, PASS, f"{case.what}: {case.code}" + (f" (and {', '.join(others)})" if others else "")
                )
            elif f.codes:
                self.note(case.name, FAIL, f"{case.what}: answered {f.describe_errors()}, expected {case.code}")
            else:
                self.note(case.name, FAIL, f"{case.what}: answered without an error, expected {case.code}")

    def check_identify_against_lists(self) -> None:
        if self.earliest is not None:
            text, when = self.earliest
            seen = self.earliest_seen
            if seen is not None and seen[1] < when:
                self.note(
                    "identify.earliestDatestamp",
                    FAIL,
                    f"earliestDatestamp {text} is later than {seen[0]}: it must bound every datestamp",
                )
            else:
                self.note("identify.earliestDatestamp", PASS, f"{text}")
        if self.deleted_policy is not None:
            if self.deleted_policy == "no" and self.deleted_seen:
                self.note("identify.deletedRecord", FAIL, "deletedRecord is 'no' but deleted records are listed")
            else:
                self.note(
                    "identify.deletedRecord", PASS, f"{self.deleted_policy}; {len(self.deleted_seen)} deleted seen"
                )
        if self.repository_identifier and self.identifiers_seen:
            prefix = f"oai:{self.repository_identifier}:"
            other = [i for i in self.identifiers_seen if not i.startswith(prefix)]
            if other:
                self.note(
                    "identify.oai-identifier",
                    WARN,
                    f"{len(other)} listed identifier(s) outside {prefix}*, e.g. {other[0]}",
                )

    # -- results

    def results(self) -> list[Result]:
        every = {name: each for name, each, _ in RULES}
        return [self._result(name, every.get(name, False)) for name in rule_names()]

    def _result(self, name: str, every: bool) -> Result:
        notes = self.notes.get(name, [])
        if not notes:
            return Result(name, SKIP, self.skipped.get(name, NOTHING_SEEN.get(name, "nothing to check")))
        for status in (FAIL, WARN):
            shown = [n for n in notes if n.status == status]
            if shown:
                more = f" (+{len(shown) - 3} more)" if len(shown) > 3 else ""
                reason = "; ".join(f"{n.subject}: {n.reason}" if n.subject else n.reason for n in shown[:3]) + more
                return Result(name, status, reason)
        if every:
            return Result(name, PASS, f"{len(notes)} response(s)")
        return Result(name, PASS, "; ".join(n.reason for n in notes if n.reason))


def _normal_url(url: str) -> tuple[str, str, str]:
    p = urlsplit(url)
    port = p.port or {"http": 80, "https": 443}.get(p.scheme.lower(), 0)
    return p.scheme.lower(), f"{(p.hostname or '').lower()}:{port}", p.path.rstrip("/") or "/"


def _payload(metadata: Any) -> Any:
    """The element inside <metadata> (comments and processing instructions skipped), or None."""
    if metadata is None:
        return None
    return next((child for child in metadata if isinstance(child.tag, str)), None)


def _header_key(header: Any) -> tuple[str, str, str, list[str]]:
    return (
        (header.findtext(f"{OAI}identifier") or "").strip(),
        (header.findtext(f"{OAI}datestamp") or "").strip(),
        header.get("status") or "",
        sorted((s.text or "").strip() for s in header.findall(f"{OAI}setSpec")),
    )


# ---- the command ------------------------------------------------------------------------------


def url_problem(url: str) -> str | None:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return "give an http:// or https:// base URL"
    if parts.query or parts.fragment:
        return "give the base URL without ?verb=... or #fragment"
    return None


STYLES = {PASS: "green", FAIL: "bold red", WARN: "yellow", SKIP: "dim"}


def report(results: Sequence[Result], out: TextIO, rich: bool = False) -> int:
    """Print one line per rule and a summary; the exit code: 1 if any rule failed."""
    counts = {s: sum(1 for r in results if r.status == s) for s in (PASS, FAIL, WARN, SKIP)}
    width = max(len(r.name) for r in results)
    verdict = "FAILED" if counts[FAIL] else "OK"
    summary = (
        f"{len(results)} checks: {counts[PASS]} passed, {counts[FAIL]} failed, {counts[WARN]} warnings, "
        f"{counts[SKIP]} skipped: {verdict}"
    )
    if rich:
        from rich.console import Console
        from rich.text import Text

        console = Console(file=out, highlight=False, soft_wrap=True)
        for r in results:
            console.print(Text.assemble((r.status, STYLES[r.status]), "  ", r.name.ljust(width), "  ", r.reason))
        console.print(Text(summary, style=STYLES[FAIL] if counts[FAIL] else STYLES[PASS]))
    else:
        for r in results:
            out.write(f"{r.status}  {r.name.ljust(width)}  {r.reason}\n")
        out.write(summary + "\n")
    return 1 if counts[FAIL] else 0


def validate(url: str, *, max_pages: int = 50, timeout: float = 30.0, out: TextIO | None = None) -> int:
    """Validate the base URL, print the report to `out` (stdout), return the exit code."""
    out = out or sys.stdout
    rich = out.isatty()
    status: AbstractContextManager[Any] = nullcontext()
    progress: Callable[[str], None] | None = None
    if rich:
        from rich.console import Console

        spinner = Console(file=out).status(f"validating {url}")
        status = spinner

        def progress(subject: str) -> None:
            spinner.update(f"validating {url}: {subject}")

    with status:
        results = Validator(url, max_pages=max_pages, timeout=timeout, progress=progress).run()
    return report(results, out, rich=rich)


def rule_names() -> Iterator[str]:
    """Every rule in report order: RULES, then the error cases, then the echo rule that goes with them."""
    last = "error.request-attributes"
    yield from (name for name, _, _ in RULES if name != last)
    yield from (c.name for c in ERROR_CASES)
    yield last
