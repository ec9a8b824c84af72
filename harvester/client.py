"""The OAI-PMH client, the one place that knows how partners misbehave; its HTTP half is
harvester/transport.py, the only module that imports Sickle.

What comes from Sickle, through its public API: the `Sickle` object holds a partner's request
settings (endpoint, HTTP method, requests options such as the timeout), and every request is
sent to `sickle.endpoint` with `sickle.http_method` and `sickle.request_args`.

What does not, and why: `Sickle.harvest()` sends with the module-level `requests.get` (no
keep-alive session, no streaming, so no size cap or deadline while a body arrives; redirects
followed anywhere) and calls `raise_for_status()` before the body is read, so an OAI `<error>`
in a 4xx body is lost; `OAIResponse.xml` parses again on every access, with `recover=True`
(broken XML silently repaired, a truncated page read as a shorter list); the verbs' iterators
(`iterator=`, `class_mapping=`) are built on `harvest()` and `OAIResponse`, so they inherit all
that. tests/test_harvest_client.py pins these quirks against the real Sickle: when a release
mends one, its test fails and the part here can go. So the client sends, reads, parses and
pages itself:

* the transport is injectable: `Client(send=...)` takes a function from a request's arguments
  to its `Answer` (transport.HTTPTransport is the real one), and `clock=`/`sleep=` replace the
  time a Retry-After date is read against and the wait between attempts, so retries are
  tested without a server or a real wait;
* (transport.py) a timeout on every read, and a deadline for each whole request (Sickle has none by default):
  a partner that drips its answer a byte at a time ends at the deadline;
* a cap on each page, counted on the decompressed bytes as they arrive (a gzip bomb, a 2 GiB
  page or an endless stream stop at the cap, never in memory), and on its markup (a page of
  tiny elements would make a tree fifty times its size): `max_page_mb`;
* (transport.py) redirects followed here, at most 5, and only on the partner's own scheme, host and port
  unless its `allow_redirects_to` names others (requests would follow 30, anywhere);
* retries with exponential backoff on broken connections, timeouts, 429 and 5xx, honouring
  `Retry-After` in seconds or as an HTTP date, up to a cap (Sickle retries 503 only); a
  connection that cannot be made at all (refused, unknown host name, no route) is not
  retried: that is an outage, which outlasts a retry's wait (Unreachable);
* an OAI `<error>` is read from any body, 4xx included (Sickle raises `HTTPError` first);
  `noRecordsMatch` is an empty page, not an error;
* each page is parsed once, strictly: no entities, no DTD, no network, no huge trees (Sickle
  re-parses on every `.xml` access and silently repairs broken XML with `recover=True`);
  the `lenient_xml` quirk allows repairs, and they are counted; a DOCTYPE anywhere in the
  prolog refuses the page unread, quirk or not;
* a page declared UTF-8 whose bytes are not is read as the bytes show (Windows-1252 text), and
  the page says so (`Page.recoded`, counted by the harvest), or refused with the byte offset
  and what it declared (EncodingError); see harvester.encodings. Only a page the parser
  objected to is looked at, so a valid page is parsed once and costs nothing more;
* an HTML page where XML was expected is refused with a message that says so;
* a response cut short (the connection closed mid-body: Content-Length or chunked framing
  incomplete, or, for a body delimited by the end of the connection, no closing `</OAI-PMH>`)
  is retried like a connection error, never parsed: the lenient parser would otherwise
  "repair" a truncated page into fewer records and no resumption token, ending the list early;
* the Content-Type header is not trusted: the body decides (some partners label their XML
  text/html or application/octet-stream); a wrong label is logged once per client;
* a resumption token that comes back a second time ends the list instead of looping.
"""

from __future__ import annotations

import bisect
import calendar
import logging
import re
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from functools import cached_property
from typing import Any, NamedTuple

import requests
import requests.structures
from lxml import etree

from harvester import encodings
from harvester import errors as err
from harvester.transport import (
    MB,
    RETRIED,
    Answer,
    HTTPTransport,
    Limits,
    Politeness,
    Send,
    describe,
    no_connection,
    page_cap,
)
from harvester.transport import retry_after as _retry_after
from oaiserver.config import HarvesterConfig, Partner
from oaiserver.records import DAY, DAY_RE, OAI_NS, SECONDS, SECONDS_RE, format_datestamp
from oaiserver.xmltext import attr

log = logging.getLogger(__name__)

_OAI = f"{{{OAI_NS}}}"

# The element each verb's answer is a list of.
ITEMS = {
    "ListRecords": "record",
    "GetRecord": "record",
    "ListIdentifiers": "header",
    "ListSets": "set",
    "ListMetadataFormats": "metadataFormat",
    "Identify": "Identify",
}

# The prolog's parts are matched in an atomic group: with backtracking, a lazy `.*?` would go on
# to the next `?>` or `-->` anywhere in the page (milliseconds a page, and a wrong answer).
_HTML_START = re.compile(rb"^(?:\xef\xbb\xbf)?(?>\s*(?:<!--.*?-->\s*)*)<(?:!doctype\s+html|html[\s>])", re.I | re.S)
# The prolog before a DOCTYPE or the root: a BOM, the XML declaration, comments, processing
# instructions and white space. Atomic, so a long prolog is read once, however long.
_PROLOG = re.compile(rb"(?:\xef\xbb\xbf)?(?>\s*(?:<\?.*?\?>\s*|<!--.*?-->\s*)*)", re.S)
_TITLE = re.compile(rb"<title[^>]*>(.*?)</title>", re.I | re.S)
# The root's start and end tags, with or without a prefix (a cut response has no end tag).
_ROOT_START = re.compile(rb"<(?:[A-Za-z_][\w.-]*:)?OAI-PMH[\s>]")
_ROOT_END = re.compile(rb"</(?:[A-Za-z_][\w.-]*:)?OAI-PMH\s*>")
_XML_TYPE = re.compile(r"^\s*(?:text/xml|application/xml|application/[\w.+-]*\+xml)\s*(?:;|$)", re.I)


# A real page of 500 records is 1 to 5 MB (MARCXML about 2 MB); lxml's tree costs 2 to 8 times a
# page's bytes (50 for bare markup), and its records converted about 4 more: the heaviest pages
# 6 MB allows keep the harvest's two processes together well under 400 MB (140 + 97 MB measured
# on long values, 122 + 110 on many elements; at 12 MB, 207 + 134). A partner whose real pages
# are larger gets its own `max_page_mb`.
DEFAULT_MAX_PAGE_MB = 6
# A page may hold one tag or attribute (`<` or `=`) per this many bytes of its cap: 196,608 for
# 6 MB, which a page of 350 MARCXML records stays under. lxml spends about 120 bytes per element
# and 240 per attribute: this bounds a page's tree (a page of bare `<a/>` is 50 times its size).
BYTES_PER_MARKUP = 32
# And this many records per megabyte of the cap (1,920 for 6 MB; real pages hold 100 to 1,000):
# each record converted costs kilobytes of Python objects, in the worker and again here.
RECORDS_PER_MB = 320
WEIGHT_PER_MARKUP = 200  # estimated bytes of tree per `<` or `=` of a page
# A page's records converted for the store (Prepared, or the worker's tuples for them) weigh
# about this many times the page's bytes (3.7 to 3.9 measured, on long values and on many elements).
CONVERTED_PER_BYTE = 4


@dataclass(frozen=True)
class ClientSettings:
    """How patient the client is. Defaults suit real partners; tests make them tiny."""

    timeout: float = 60.0  # seconds to connect, and to wait for each chunk of the answer
    deadline: float | None = None  # seconds for a whole request, redirects included (None: 4 timeouts)
    max_page_bytes: int = DEFAULT_MAX_PAGE_MB * MB  # a page's size, decompressed (partner: max_page_mb)
    redirect_origins: tuple[str, ...] = ()  # where redirects may go besides the partner (allow_redirects_to)
    retries: int = 5  # further attempts after a broken connection, a timeout, 429 or 5xx (not after Unreachable)
    backoff: float = 2.0  # first wait between attempts; doubles each time
    max_backoff: float = 300.0  # cap for the doubling
    retry_after_cap: float = 900.0  # a longer Retry-After is shortened to this
    lenient_xml: bool = False  # quirk: recover=True parsing
    user_agent: str = HarvesterConfig().user_agent  # the configuration's harvester.user_agent
    headers: tuple[tuple[str, str], ...] = ()  # extra headers on every request (partner: headers)
    auth: tuple[str, str] | None = field(default=None, repr=False)  # HTTP basic (partner: auth)
    request_interval: float = 0.0  # seconds between the partner's requests (partner: request_interval)
    per_host: int | None = None  # requests at once to one host in this process (harvester.per_host)


def settings_for(partner: Partner, base: ClientSettings, credentials: tuple[str, str] | None = None) -> ClientSettings:
    """The settings for one partner: the base ones (the command's), with its quirk switches,
    transport limits and connection settings applied, and `credentials` (read from the
    environment by the caller when its harvest starts: Partner.credentials). The configuration
    checked them when it loaded (config._parse_partners): trusted here."""
    size = partner.max_page_mb * MB if partner.max_page_mb is not None else base.max_page_bytes
    return replace(
        base,
        lenient_xml=bool(partner.quirks.get("lenient_xml", False)),
        max_page_bytes=size,
        redirect_origins=partner.allow_redirects_to,
        timeout=partner.timeout if partner.timeout is not None else base.timeout,
        retries=partner.retries if partner.retries is not None else base.retries,
        headers=tuple(partner.headers.items()),
        auth=credentials,
        request_interval=partner.request_interval,
    )


def xml_parser(*, lenient: bool) -> etree.XMLParser:
    """The parser for a response: no entities, no DTD, no network, no huge trees; `lenient`
    (the quirk lenient_xml) lets it repair what is not well-formed."""
    return etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False, huge_tree=False, recover=lenient)


@dataclass
class Page:
    """One response, parsed once: its items and where the list goes next."""

    verb: str
    params: dict[str, str]
    status: int
    root: etree._Element | None  # None once `shed`
    response_date: str  # UTC, YYYY-MM-DDThh:mm:ssZ
    body: bytes = field(default=b"", repr=False)  # the response as received (empty once `shed`)
    items: list[etree._Element] = field(default_factory=list)  # empty once `shed`
    token: str | None = None  # the next page's token; None when the list is complete
    cursor: int | None = None
    complete_list_size: int | None = None
    no_records: bool = False  # the partner answered noRecordsMatch
    repaired: set[int] = field(default_factory=set)  # indexes of items that held repaired XML
    repairs: list[str] = field(default_factory=list)  # the parser's messages, with line numbers
    recoded: encodings.Recoded | None = field(default=None, repr=False)  # declared UTF-8, was not: `body` is recoded
    started: float = 0.0  # time.monotonic() when the request was first sent
    fetched: float = 0.0  # seconds from then until the page was parsed, retries included
    weight: int = 0  # what the page is estimated to cost in memory: body, tree and converted records

    @cached_property
    def raw(self) -> list[str] | None:
        """Each record exactly as the partner sent it (bytes decoded from UTF-8), when the page
        lets them be cut out with certainty (see `verbatim_items`); None otherwise. Cut when
        first asked for: a page handed to a worker process is cut there."""
        if self.repairs or self.verb not in ("ListRecords", "GetRecord") or self.root is None:
            return None
        return verbatim_items(self.body, self.items, self.root.getroottree().docinfo.encoding)

    def shed(self) -> None:
        """Let go of the body and the tree: a page converted elsewhere (a worker process) needs
        neither here once it is sent, and they weigh three to ten times the page. What is left
        weighs what its converted records will, once they are back."""
        self.weight = CONVERTED_PER_BYTE * len(self.body)
        self.body, self.root, self.items = b"", None, []
        self.__dict__.pop("raw", None)


@dataclass(frozen=True)
class Identity:
    """What Identify says that a harvester needs."""

    name: str
    base_url: str
    granularity: str  # SECONDS or DAY
    earliest: str | None
    deleted_record: str | None


def utc(value: str) -> tuple[str, str] | None:
    """An ISO 8601 date or datetime as (UTC text, granularity); None if it is neither.

    Offsets are converted (some partners send +05:45), fractions dropped, and a datetime
    without zone is taken as UTC, which is what OAI-PMH means.
    """
    value = value.strip()
    if SECONDS_RE.fullmatch(value):  # already as OAI-PMH writes it: only the date's validity to check
        try:
            datetime.fromisoformat(value[:-1])
        except ValueError:
            return None
        return value, SECONDS
    if DAY_RE.fullmatch(value):
        try:
            datetime.strptime(value, "%Y-%m-%d")
        except ValueError:
            return None
        return value, DAY
    try:
        parsed = datetime.fromisoformat(value.replace(" ", "T", 1))
    except ValueError:
        return None
    if parsed.tzinfo is not None:
        parsed = parsed.astimezone(UTC)
    return format_datestamp(calendar.timegm(parsed.timetuple())), SECONDS


class _Retry(NamedTuple):
    """An attempt that failed in a way worth another: why, and how long to wait first."""

    problem: err.HarvestError
    wait: float


class Client:
    """An OAI-PMH client for one partner. Use as a context manager, or call `close()`."""

    def __init__(
        self,
        base_url: str,
        settings: ClientSettings | None = None,
        *,
        stop: threading.Event | None = None,
        send: Send | None = None,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] | None = None,
    ) -> None:
        """`send` replaces HTTP (a handler from a request's arguments to its Answer); `clock`
        (seconds since the epoch) dates a request and reads a Retry-After date; `sleep`
        replaces the wait between attempts (a stop is then seen after it, not during it).
        Tests give all three, to run retries, backoff and Retry-After with no server and no
        real wait."""
        self.base_url = base_url
        self.settings = settings or ClientSettings()
        self.stop = stop or threading.Event()
        s = self.settings
        limits = Limits(s.timeout, s.deadline, s.max_page_bytes, s.redirect_origins)
        # The real transport, unless another is given (then nothing here opens a connection).
        polite = Politeness(s.headers, s.auth, s.request_interval, s.per_host, s.retry_after_cap)
        self.http = (
            HTTPTransport(base_url, limits, user_agent=s.user_agent, stop=self.stop, politeness=polite)
            if send is None
            else None
        )
        self._handler = send
        self.clock = clock
        self._sleep = sleep
        self._attempts = 0
        self._warned_content_type = False

    @property
    def requests(self) -> int:
        """HTTP requests sent: every attempt, retries and redirects included."""
        return self._attempts + (self.http.redirects if self.http is not None else 0)

    def close(self) -> None:
        if self.http is not None:
            self.http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- one request --------------------------------------------------------------------

    def request(self, verb: str, **args: str) -> Page:
        """Send one request (retrying as configured) and parse the answer once."""
        return self._request({"verb": verb, **args}, None)

    def _request(self, params: dict[str, str], cancel: threading.Event | None) -> Page:
        """`request`, also abandoned (Stopped) when `cancel` is set: a page asked for ahead
        that its list no longer wants must not go on retrying."""
        started, clock = self.clock(), time.monotonic()
        answer = self._fetch(params, cancel)
        page = self._parse(answer, params, started)
        page.started, page.fetched = clock, time.monotonic() - clock
        return page

    def _fetch(self, params: dict[str, str], cancel: threading.Event | None = None) -> Answer:
        """The answer to read, after as many attempts as the settings allow."""
        s = self.settings
        attempt = 0
        while True:
            if self.stop.is_set() or (cancel is not None and cancel.is_set()):
                raise err.Stopped("stopped before sending a request")
            outcome = self._attempt(params, attempt)
            if isinstance(outcome, Answer):
                return outcome
            problem, wait = outcome
            if attempt >= s.retries:
                if s.retries:
                    raise type(problem)(*_args(problem, f" (after {s.retries} retries)"))
                raise problem
            attempt += 1
            log.warning("%s; retry %d of %d in %.1f s", problem, attempt, s.retries, wait)
            if self._wait(wait, cancel):
                raise err.Stopped("stopped while waiting to retry")

    def _attempt(self, params: dict[str, str], attempt: int) -> Answer | _Retry:
        """Send once: the answer, or the problem worth another attempt and the wait before it.
        A connection that cannot be made at all, and any other requests error, are raised."""
        self._attempts += 1
        try:
            answer = self.http(params) if self.http is not None else self._handled(params)
        except err.DeadlineExceeded as exc:
            return _Retry(exc, self._backoff(attempt))
        except RETRIED as exc:
            why = no_connection(exc)
            if why is not None:  # refused, unknown host: not worth minutes of retries in a run
                raise err.Unreachable(f"{self.base_url}: cannot connect ({why})") from exc
            return _Retry(err.TransportError(f"{self.base_url}: {describe(exc)}"), self._backoff(attempt))
        except requests.RequestException as exc:
            raise err.TransportError(f"{self.base_url}: {describe(exc)}") from exc
        return self._judged(answer, params, attempt)

    def _judged(self, answer: Answer, params: dict[str, str], attempt: int) -> Answer | _Retry:
        """The answer, unless it asks to be asked again: 429 and 5xx (after their Retry-After,
        if any, up to its cap), or a body cut short."""
        if answer.status == 429 or answer.status >= 500:
            problem = err.HTTPStatusError(
                answer.status, f"{self.base_url} answered HTTP {answer.status} {answer.reason}".rstrip()
            )
            after = _retry_after(answer.headers.get("Retry-After"), self.clock())
            wait = min(after, self.settings.retry_after_cap) if after is not None else self._backoff(attempt)
            return _Retry(problem, wait)
        short = _cut_short(answer.body, answer.status)
        if short is None:
            return answer
        return _Retry(err.TransportError(f"{self.base_url} ({params['verb']}): {short}"), self._backoff(attempt))

    def _handled(self, params: dict[str, str]) -> Answer:
        """The injected transport's answer, its headers made case-insensitive as HTTP's are."""
        assert self._handler is not None
        answer = self._handler(dict(params))
        return answer._replace(headers=requests.structures.CaseInsensitiveDict(answer.headers))

    def _wait(self, seconds: float, cancel: threading.Event | None) -> bool:
        """Sleep, waking early (True) when the client is stopped or `cancel` is set."""
        if self._sleep is not None:
            self._sleep(seconds)
            return self.stop.is_set() or (cancel is not None and cancel.is_set())
        if cancel is None:
            return self.stop.wait(seconds)
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            if self.stop.wait(min(left, 0.1)) or cancel.is_set():
                return True
        return self.stop.is_set() or cancel.is_set()

    def _backoff(self, attempt: int) -> float:
        return float(min(self.settings.backoff * (2**attempt), self.settings.max_backoff))

    def _parse(self, answer: Answer, params: dict[str, str], started: float) -> Page:
        body, status = answer.body, answer.status
        verb = params["verb"]
        where = f"{self.base_url} ({verb}, HTTP {status})"
        markup = self._screen(body, status, where)
        parser = xml_parser(lenient=self.settings.lenient_xml)
        root, body, recoded = self._document(body, status, where, parser)
        self._check_content_type(answer.headers.get("Content-Type"))
        page = Page(verb, params, status, root, self._response_date(root, started), body=body, recoded=recoded)
        page.weight = (1 + CONVERTED_PER_BYTE) * len(body) + WEIGHT_PER_MARKUP * markup
        if self.settings.lenient_xml and len(parser.error_log):
            page.repairs = [f"line {e.line}, column {e.column}: {e.message}" for e in parser.error_log]
        errors = [(e.get("code") or "unknown", " ".join((e.text or "").split())) for e in root.findall(f"{_OAI}error")]
        if errors:
            if all(code == "noRecordsMatch" for code, _ in errors):
                page.no_records = True
                return page
            raise err.partner_error(errors, status)
        if status >= 400:
            raise err.HTTPStatusError(status, f"{where}: an HTTP error status on an OAI-PMH response without <error>")
        self._read_items(page, root, parser)
        return page

    def _screen(self, body: bytes, status: int, where: str) -> int:
        """Refuse, before parsing, a body that cannot be an OAI-PMH page (HTML, something not XML,
        a DOCTYPE) or whose tree would be too large; its count of tags and attributes otherwise."""
        if _HTML_START.match(body[:4096]):
            title = _TITLE.search(body[:65536])
            shown = f" titled {title.group(1).decode('utf-8', 'replace').strip()[:100]!r}" if title else ""
            raise err.HTMLResponseError(
                f"{where} sent an HTML page{shown} instead of OAI-PMH XML: is the baseURL right, "
                "or is the repository down for maintenance?"
            )
        not_xml = _not_xml(body) if status < 400 else None
        if not_xml is not None:
            raise err.NotXMLResponseError(f"{where} sent {not_xml}, not OAI-PMH XML: is the base_url right?")
        if declares_doctype(body):
            raise err.NotOAIResponseError(
                f"{where}: the response declares a DOCTYPE (a DTD or entities); OAI-PMH responses are defined by "
                "XML Schema and carry none, so the page is refused unread (no entity is resolved, no DTD fetched)"
            )
        markup, most = body.count(b"<") + body.count(b"="), self.settings.max_page_bytes // BYTES_PER_MARKUP
        if markup > most:
            raise err.PageTooLargeError(
                f"{where}: the page holds {markup:,} tags and attributes, more than the {most:,} that "
                f"{page_cap(self.settings.max_page_bytes)} allows (one per {BYTES_PER_MARKUP} bytes); refused unparsed"
            )
        return markup

    def _document(
        self, body: bytes, status: int, where: str, parser: etree.XMLParser
    ) -> tuple[etree._Element, bytes, encodings.Recoded | None]:
        """(root, body, how it was recoded) of the page: parsed as it came, or, when the parser
        refused it (or, lenient, reported errors in it) and its bytes are not the UTF-8 it
        declares, parsed again as harvester.encodings reads them. A page that is what it
        declares is parsed once: reading the bytes costs only the pages the parser objected to."""
        try:
            root = self._tree(body, status, where, parser)
        except err.XMLSyntaxError:
            recoded = self._recoded(body, where)
            if recoded is None:
                raise
            return self._tree(recoded.body, status, where, parser), recoded.body, recoded
        if not (self.settings.lenient_xml and len(parser.error_log)):
            return root, body, None
        recoded = self._recoded(body, where)
        if recoded is None:
            return root, body, None
        return self._tree(recoded.body, status, where, parser), recoded.body, recoded

    @staticmethod
    def _recoded(body: bytes, where: str) -> encodings.Recoded | None:
        """The page recoded to UTF-8 (encodings.recode); EncodingError when its bytes are not text."""
        try:
            return encodings.recode(body)
        except encodings.NotText as exc:
            raise err.EncodingError(f"{where}: {exc}; refused") from None

    def _tree(self, body: bytes, status: int, where: str, parser: etree.XMLParser) -> etree._Element:
        """The body parsed, its root an <OAI-PMH> in the OAI-PMH namespace (an HTTP error status
        with any other body is raised as that status)."""
        try:
            root = etree.fromstring(body, parser)
        except etree.XMLSyntaxError as exc:
            if status >= 400:
                raise err.HTTPStatusError(status, f"{where}: an HTTP error without an OAI-PMH body") from None
            hint = (
                ""
                if self.settings.lenient_xml
                else "; if this partner is known to send broken XML, set its quirk lenient_xml: true"
            )
            raise err.XMLSyntaxError(f"{where}: the response is not well-formed XML: {exc}{hint}") from None
        if root is None:
            raise err.XMLSyntaxError(f"{where}: the response is empty")
        if root.getroottree().docinfo.doctype:  # e.g. a UTF-16 body the byte check above cannot read
            raise err.NotOAIResponseError(f"{where}: the response declares a DOCTYPE; refused unread")
        if root.tag != f"{_OAI}OAI-PMH":
            if status >= 400:
                raise err.HTTPStatusError(status, f"{where}: an HTTP error without an OAI-PMH body")
            raise _wrong_root(root, where)
        return root

    def _check_content_type(self, value: str | None) -> None:
        """An OAI-PMH document labelled as something else is read all the same (the body
        decides); the label is logged once per client, so the partner can be told."""
        if self._warned_content_type or (value is not None and _XML_TYPE.match(value)):
            return
        self._warned_content_type = True
        log.warning(
            "%s: the partner labels its OAI-PMH XML as %s; read as XML by its content",
            self.base_url,
            f"Content-Type {value!r}" if value else "nothing (no Content-Type)",
        )

    def _response_date(self, root: etree._Element, started: float) -> str:
        text = root.findtext(f"{_OAI}responseDate")
        parsed = utc(text) if text else None
        if parsed is None:
            # Never later than the request: a `from` too early re-harvests, one too late loses.
            fallback = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started - 1))
            log.warning("%s: responseDate %r is not a date; using the local time %s", self.base_url, text, fallback)
            return fallback
        value, granularity = parsed
        return f"{value}T00:00:00Z" if granularity == DAY else value

    def _read_items(self, page: Page, root: etree._Element, parser: etree.XMLParser) -> None:
        container = root.find(f"{_OAI}{page.verb}")
        if container is None:
            raise err.NotOAIResponseError(
                f"{self.base_url} ({page.verb}): the response has neither <{page.verb}> nor <error>"
            )
        page.items = [container] if page.verb == "Identify" else container.findall(f"{_OAI}{ITEMS.get(page.verb, '*')}")
        most = self.settings.max_page_bytes * RECORDS_PER_MB // MB
        if len(page.items) > most:
            raise err.PageTooLargeError(
                f"{self.base_url} ({page.verb}): the page holds {len(page.items):,} records, more than the "
                f"{most:,} that {page_cap(self.settings.max_page_bytes)} allows ({RECORDS_PER_MB} a megabyte); "
                "refused unconverted"
            )
        token = container.find(f"{_OAI}resumptionToken")
        if token is not None:
            page.token = (token.text or "").strip() or None
            page.cursor = _int(token.get("cursor"))
            page.complete_list_size = _int(token.get("completeListSize"))
        if page.repairs:
            page.repaired = _repaired_items(page.items, parser)

    # ---- what a harvest needs -----------------------------------------------------------

    def identify(self) -> Identity:
        page = self.request("Identify")
        node = page.items[0]
        granularity = (node.findtext(f"{_OAI}granularity") or "").strip()
        return Identity(
            name=(node.findtext(f"{_OAI}repositoryName") or "").strip(),
            base_url=(node.findtext(f"{_OAI}baseURL") or "").strip(),
            granularity=SECONDS if granularity == SECONDS else DAY,
            earliest=(node.findtext(f"{_OAI}earliestDatestamp") or "").strip() or None,
            deleted_record=(node.findtext(f"{_OAI}deletedRecord") or "").strip() or None,
        )

    def pages(
        self, verb: str, *, token: str | None = None, cancel: threading.Event | None = None, **args: str
    ) -> Iterator[Page]:
        """The pages of a list, one after the other, following resumption tokens; start from
        `token` if given. Each is asked for when the one before it has been taken (a harvest
        asks for them ahead: harvester.pipeline); `cancel` abandons the request under way.

        A token the list already used raises RepeatedTokenError before it is sent again:
        a partner that hands out the same token forever would otherwise be harvested forever.
        """
        seen: set[str] = set()
        params = {"verb": verb, **args}
        while True:
            if token is not None:
                if token in seen:
                    raise err.RepeatedTokenError(
                        f"{self.base_url}: the resumption token {token[:200]!r} came back a second time; "
                        "stopped to avoid an endless loop"
                    )
                seen.add(token)
                params = {"verb": verb, "resumptionToken": token}
            page = self._request(params, cancel)
            yield page
            if page.token is None:
                return
            token = page.token


_PROLOG_PART = re.compile(rb"\s*(?:<\?.*?\?>|<!--.*?-->)", re.S)
_TAG_REST = re.compile(rb"""(?:[^<>"']|"[^"<]*"|'[^'<]*')*>""")


def verbatim_items(body: bytes, items: list[etree._Element], encoding: str | None) -> list[str] | None:
    """The items' bytes as sent, one string per item, or None when they cannot be cut out with
    certainty (the caller then keeps the parsed element's serialization, the same infoset).

    Certainty comes from what XML allows: with no comment, CDATA section or processing
    instruction after the prolog, every `<` opens a tag (attribute values cannot hold `<`), so
    counting start and end tags of the items' name finds each item's extent, even around
    payload elements of the same name (MARCXML's `<record>` inside OAI's). Each cut is checked
    against the line lxml saw the item start on.

    The namespace declarations an item inherits from the response (the OAI default namespace,
    and any prefix the partner declared on the root) are added to its start tag, so the cut
    stands alone as XML; everything else is the partner's bytes.
    """
    found = _item_tags(body, items, encoding)
    if found is None:
        return None
    tags, at = found
    cuts = _Cuts(body, items)
    for m in tags.finditer(body, at):
        if not (cuts.end_tag(m) if m.group(1) else cuts.start_tag(m)):
            return None
    return cuts.cuts if cuts.depth == 0 and len(cuts.cuts) == len(items) else None


def _item_tags(body: bytes, items: list[etree._Element], encoding: str | None) -> tuple[re.Pattern[bytes], int] | None:
    """The pattern of the items' own start and end tags, and where the document's element
    starts; None when the items cannot be cut out with certainty (another encoding than UTF-8,
    items of different prefixes, a comment, CDATA section or PI after the prolog)."""
    if not items or (encoding or "UTF-8").upper().replace("-", "") not in ("UTF8", "USASCII", "ASCII"):
        return None
    prefix = items[0].prefix
    if any(item.prefix != prefix for item in items):
        return None
    qname = (f"{prefix}:" if prefix else "") + str(items[0].tag).rpartition("}")[2]
    # Only the items' own tags are visited (a record's payload tags are skipped in C).
    tags = re.compile(rb"<(/?)" + re.escape(qname.encode()) + rb"(?=[\s/>])")
    at = 3 if body.startswith(b"\xef\xbb\xbf") else 0
    while m := _PROLOG_PART.match(body, at):
        at = m.end()
    if body.find(b"<!", at) >= 0 or body.find(b"<?", at) >= 0:  # a comment, CDATA section or PI
        return None
    return tags, at


class _Cuts:
    """`verbatim_items`' walk over the items' own tags: the depth in them, the item being cut
    (where its start tag and its name end, the declarations it inherits), the lines counted so
    far, and the cuts made. A method answers False when the cut cannot be made with certainty."""

    __slots__ = ("body", "counted", "cuts", "depth", "inherited", "items", "line", "name_end", "scopes", "start")

    def __init__(self, body: bytes, items: list[etree._Element]) -> None:
        self.body, self.items = body, items
        self.cuts: list[str] = []
        self.depth, self.start, self.name_end, self.inherited = 0, 0, 0, b""
        self.scopes: dict[etree._Element | None, bytes] = {}
        self.line, self.counted = 1, 0

    def end_tag(self, m: re.Match[bytes]) -> bool:
        self.depth -= 1
        if self.depth < 0:
            return False
        if self.depth == 0:
            end = self.body.find(b">", m.end())
            if end < 0:
                return False
            body, name_end = self.body, self.name_end
            self.cuts.append((body[self.start : name_end] + self.inherited + body[name_end : end + 1]).decode("utf-8"))
        return True

    def start_tag(self, m: re.Match[bytes]) -> bool:
        rest = _TAG_REST.match(self.body, m.end())  # the attributes, quotes respected, up to the tag's '>'
        if rest is None:
            return False
        if self.body[rest.end() - 2 : rest.end() - 1] == b"/":  # <name .../>: opens and closes at once
            return self.depth != 0  # an empty item: nothing an OAI item can be
        if self.depth == 0 and not self.open_item(m, rest.end()):
            return False
        self.depth += 1
        return True

    def open_item(self, m: re.Match[bytes], tag_end: int) -> bool:
        """The start tag of the next item: it must be one of `items`, on the line lxml saw."""
        self.start, self.name_end = m.start(), m.end()
        if len(self.cuts) >= len(self.items):
            return False
        item, attributes = self.items[len(self.cuts)], self.body[m.end() : tag_end]
        self.inherited = self.scope(item, attributes)
        self.line += self.body.count(b"\n", self.counted, self.start)
        self.counted = self.start
        return item.sourceline in (None, self.line)

    def scope(self, item: etree._Element, attributes: bytes) -> bytes:
        """The declarations the item inherits; without declarations of its own, what it
        inherits is its parent's scope: the same for every sibling."""
        if b"xmlns" in attributes:
            return _inherited(item, attributes)
        parent = item.getparent()
        if parent not in self.scopes:
            self.scopes[parent] = _inherited(item, attributes)
        return self.scopes[parent]


_XMLNS = re.compile(rb"""\sxmlns(?::([^\s=/>]+))?\s*=""")


def _inherited(item: etree._Element, attributes: bytes) -> bytes:
    """` xmlns…="…"` for each namespace in scope at `item` that its own start tag (whose
    `attributes` are given) does not declare."""
    declared = {(m.group(1) or b"").decode() for m in _XMLNS.finditer(attributes)}
    missing = sorted(((prefix or ""), uri) for prefix, uri in item.nsmap.items() if (prefix or "") not in declared)
    return "".join(f' xmlns{":" + prefix if prefix else ""}="{attr(uri)}"' for prefix, uri in missing).encode()


def _wrong_root(root: etree._Element, where: str) -> err.HarvestError:
    """The error for a well-formed page whose root is not <OAI-PMH> in the OAI-PMH namespace."""
    # Not etree.QName: under the lenient parser an undeclared prefix stays in the tag
    # ("oai:OAI-PMH"), which QName refuses with a ValueError.
    name = str(root.tag).rpartition("}")[2].rpartition(":")[2]
    if name.lower() == "html":
        return err.HTMLResponseError(f"{where} sent an HTML page instead of OAI-PMH XML")
    if name == "OAI-PMH":
        return err.NotOAIResponseError(
            f"{where}: the root element <OAI-PMH> is not in the OAI-PMH 2.0 namespace {OAI_NS}"
        )
    return err.NotOAIResponseError(
        f"{where}: the root element is <{root.tag}>, not <OAI-PMH> in the namespace {OAI_NS}"
    )


def _repaired_items(items: list[etree._Element], parser: etree.XMLParser) -> set[int]:
    """Which items the parser's repairs fall in. The parser reports lines, elements know only
    the line they start on: a repair belongs to the last item that starts on or before its
    line, or to all the items starting on that line when several do (single-line XML)."""
    starts = [item.sourceline or 0 for item in items]
    hit: set[int] = set()
    for error in parser.error_log:
        last = bisect.bisect_right(starts, error.line) - 1
        if last < 0:
            continue
        hit.update(i for i in range(last + 1) if starts[i] == starts[last])
    return hit


def declares_doctype(body: bytes) -> bool:
    """Whether the prolog, however long, declares a DOCTYPE. The prolog is read once and no
    further than the root's start (a `<!DOCTYPE` quoted later in the page is no declaration).
    UTF-16 is decoded a window at a time, as far as the prolog goes."""
    if body[:2] not in (b"\xff\xfe", b"\xfe\xff") and body[:4] not in (b"<\x00?\x00", b"\x00<\x00?"):
        return body.startswith(b"<!DOCTYPE", _PROLOG.match(body).end())  # type: ignore[union-attr]
    codec = "utf-16" if body[:2] in (b"\xff\xfe", b"\xfe\xff") else "utf-16-le" if body[:1] == b"<" else "utf-16-be"
    size = 1 << 16
    while True:
        text = body[:size].decode(codec, "ignore").encode("utf-8")
        end = _PROLOG.match(text).end()  # type: ignore[union-attr]
        if text.startswith(b"<!DOCTYPE", end):
            return True
        rest = text[end:]
        if size >= len(body) or (len(rest) >= 9 and not rest.startswith((b"<!--", b"<?"))):
            return False
        size *= 4


def _cut_short(body: bytes, status: int) -> str | None:
    """Why `body` looks like an OAI-PMH response cut short, or None if it does not.

    requests already raises when a Content-Length or chunked body ends early; a body delimited
    by the end of the connection (HTTP/1.0 style) cannot be told from a complete one except by
    its content: an OAI-PMH document ends with `</OAI-PMH>` (garbage after it is the parser's
    business, not a cut). Anything that does not start as an OAI-PMH document is left to the
    parser, which says what it is instead.
    """
    if not body.strip():
        if status >= 400:
            return None  # an HTTP error without a body: the parser's caller names it
        return "the response is empty (the connection closed before the body?)"
    text = body
    if body[:2] in (b"\xff\xfe", b"\xfe\xff"):  # UTF-16 (with its BOM): look at it as UTF-8
        text = body.decode("utf-16", "ignore").encode("utf-8")
    if not _ROOT_START.search(text[:65536]) or _ROOT_END.search(text[-65536:]):
        return None
    return f"the response was cut short: {len(body)} bytes and no closing </OAI-PMH> (the connection closed early?)"


# The first character that is not white space (after a UTF-8 BOM): XML starts with `<`.
_FIRST = re.compile(rb"(?:\xef\xbb\xbf)?\s*(\S)")


def _not_xml(body: bytes) -> str | None:
    """What `body` is when it cannot be XML at all (JSON, plain text), or None. Only a first
    character in printable ASCII other than `<` counts: UTF-16 and other encodings are the
    parser's to judge. The lenient parser could not read such a body either."""
    m = _FIRST.match(body[:4096])
    if m is None or not 0x21 <= m.group(1)[0] < 0x7F or m.group(1) == b"<":
        return None
    if m.group(1) in (b"{", b"["):
        return "JSON"
    begins = " ".join(body[m.start(1) : m.start(1) + 200].decode("utf-8", "replace").split())[:60]
    return f"text (it begins {begins!r})"


def _int(value: str | None) -> int | None:
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


def _args(problem: err.HarvestError, suffix: str) -> tuple[Any, ...]:
    if isinstance(problem, err.HTTPStatusError):
        return (problem.status, f"{problem}{suffix}")
    return (f"{problem}{suffix}",)
