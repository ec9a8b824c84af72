"""The validator's state and its HTTP: what was fetched, the notes each rule collected, the facts
learnt along the way (granularity, earliest datestamp, identifiers seen), and the run that calls
the checks in order. The checks themselves live in the modules named for what they look at."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import requests
from lxml import etree

from oaiserver.validate.parsing import OAI, load_schema, one_line, parse
from oaiserver.validate.report import results
from oaiserver.validate.responses import inspect
from oaiserver.validate.rules import FAIL, PASS, Note, Result, rule_names
from oaiserver.validate.steps import STEPS, check_identify

log = logging.getLogger("oaiserver.validate")

MAX_BYTES = 64 * 1024 * 1024
MAX_RETRY_AFTER = 10
USER_AGENT = "oaiserver-validate/1 (OAI-PMH 2.0 conformance check)"
MAX_REQUESTS = 500


class RequestCap(Exception):
    """The run has sent --max-requests requests: the checks still to come are skipped."""


@dataclass
class Fetched:
    """One request and what came back."""

    subject: str
    pairs: list[tuple[str, Any]]  # values are str, or bytes for the probes that send invalid UTF-8
    method: str = "GET"
    url: str = ""
    status: int | None = None
    content_type: str = ""
    content_encoding: str = ""
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

    def why(self) -> str:
        """Why this response is not the answer hoped for: its problem, else its OAI-PMH errors."""
        return self.problem or self.describe_errors()


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


class Validator:
    """One validation of one base URL: the checks read and write its notes and facts, through `fetch`."""

    def __init__(
        self,
        url: str,
        *,
        max_pages: int = 50,
        timeout: float = 30.0,
        max_requests: int = MAX_REQUESTS,
        delay: float = 0.0,
        session: requests.Session | None = None,
        progress: Callable[[str], None] | None = None,
    ) -> None:
        self.url = url
        self.max_pages = max_pages
        self.timeout = timeout
        self.max_requests = max_requests
        self.delay = delay
        self.sent = 0  # requests sent, retries included
        self.urls: dict[str, str] = {}  # subject -> the URL of its request, for the reports' links
        self.not_oai: str | None = None  # why the base URL is not an OAI-PMH one at all
        self.session = session or requests.Session()
        self.session.headers["User-Agent"] = USER_AGENT
        self.progress = progress or (lambda _msg: None)
        self.schema = load_schema()
        self.notes: dict[str, list[Note]] = {}
        self.skipped: dict[str, str] = {}
        # What the checks learn, for the checks that run later.
        self.identify: Fetched | None = None
        self.granularity: str | None = None
        self.deleted_policy: str | None = None
        self.repository_identifier: str | None = None
        self.earliest: tuple[str, datetime] | None = None
        self.earliest_seen: tuple[str, datetime] | None = None  # the oldest datestamp seen
        self.deleted_seen: set[str] = set()
        self.identifiers_seen: list[str] = []
        self.headers: list[tuple[int, Any]] = []  # (page number, header) along ListIdentifiers
        self.listing_complete = False  # whether ListIdentifiers was followed to its end
        self.set_specs: set[str] | None = None  # the sets ListSets declares, when it was read whole
        self.first_records: dict[str, Any] = {}  # identifier -> <record> on ListRecords' first page
        self.unchecked: set[str] = set()  # namespaces met with no schema shipped
        self.shown: Fetched | None = None  # the response a check's next note is about
        self.current = ""  # the URL of the last request sent

    # -- bookkeeping

    def note(self, rule: str, status: str, reason: str, subject: str = "", *, shown_by: Fetched | None = None) -> None:
        """Record an observation. The reports link the request that showed it: `shown_by`, else the
        request named by `subject`, else the request the check made last (`current`)."""
        url = shown_by.url if shown_by is not None else self.urls.get(subject, self.current)
        self.notes.setdefault(rule, []).append(Note(status, subject, reason, url))

    def skip(self, rules: Sequence[str], reason: str) -> None:
        for rule in rules:
            self.skipped.setdefault(rule, reason)

    # -- HTTP

    def fetch(
        self,
        subject: str,
        pairs: Sequence[tuple[str, Any]],
        method: str = "GET",
        *,
        inspected: bool = True,
        headers: dict[str, str] | None = None,
    ) -> Fetched:
        """One request (retried on a short 503 Retry-After), parsed and, unless `inspected` is False
        (the probes judge their own answers), inspected by the every-response rules."""
        self.progress(subject)
        f = Fetched(subject, list(pairs), method)
        for attempt in range(3):
            try:
                r, body = self._send(f, headers or {})
            except (requests.RequestException, ValueError) as exc:
                f.problem = f"no usable HTTP response: {one_line(str(exc), 160)}"
                log.debug("%s %s: %s", method, subject, f.problem)
                self.note("http-200", FAIL, f.problem, subject)
                return f
            log.debug("%s %s -> HTTP %s (%d bytes)", method, r.url, r.status_code, len(body))
            if attempt < 2 and self._retry_after(r, subject):
                continue
            f.status, f.body = r.status_code, body
            f.content_type = r.headers.get("Content-Type", "")
            f.content_encoding = r.headers.get("Content-Encoding", "").strip().lower()
            f.location = r.headers.get("Location")
            break
        assert f.body is not None
        try:
            f.doc = parse(f.body)
        except (etree.XMLSyntaxError, ValueError) as exc:
            f.problem = f"not well-formed XML: {one_line(str(exc), 160)}"
        if inspected:
            inspect(self, f)
        return f

    def _send(self, f: Fetched, headers: dict[str, str]) -> tuple[requests.Response, bytes]:
        """The response and its body, read up to MAX_BYTES; redirects are the caller's to judge. Requests
        are counted against --max-requests and spaced by --delay."""
        if self.sent >= self.max_requests:
            raise RequestCap(f"--max-requests={self.max_requests} reached")
        if self.sent and self.delay:
            time.sleep(self.delay)
        self.sent += 1
        if f.method == "GET":
            r = self.session.get(
                self.url, params=f.pairs, headers=headers, timeout=self.timeout, stream=True, allow_redirects=False
            )
        else:
            r = self.session.post(
                self.url, data=f.pairs, headers=headers, timeout=self.timeout, stream=True, allow_redirects=False
            )
        f.url = r.url if f.method == "GET" else f"{self.url} (POST {one_line(str(f.pairs), 120)})"
        self.urls[f.subject] = self.current = r.url if f.method == "GET" else self.url
        with r:
            body = bytearray()
            for chunk in r.iter_content(65536):
                body += chunk
                if len(body) > MAX_BYTES:
                    raise ValueError(f"the response is larger than {MAX_BYTES // 2**20} MiB")
        return r, bytes(body)

    def _retry_after(self, r: requests.Response, subject: str) -> bool:
        """Wait out a 503 that asks for at most MAX_RETRY_AFTER seconds; True if the caller should retry.
        3.1.2.2 names 503 with Retry-After as the way to make a harvester wait: correct, and said so."""
        retry_after = r.headers.get("Retry-After", "")
        if r.status_code != 503 or not retry_after.isdigit() or int(retry_after) > MAX_RETRY_AFTER:
            return False
        self.note("http-200", PASS, f"HTTP 503 Retry-After {retry_after} waited out and retried", subject)
        time.sleep(int(retry_after))
        return True

    # -- lists

    def walk(self, verb: str, pairs: Sequence[tuple[str, str]], item: str, label: str = "") -> Chain:
        """Follow a list through its tokens, at most --max-pages pages."""
        chain = Chain()
        k = 1
        label = label or verb
        f = self.fetch(f"{label} p1", pairs)
        while True:
            chain.last = f
            ending = _page_ending(f, verb, k)
            if ending is not None:
                chain.ending = ending
                break
            part = f.part(verb)
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
            f = self.fetch(f"{label} p{k}", [("verb", verb), ("resumptionToken", text)])
        return chain

    # -- the run

    def run(self) -> list[Result]:
        """Identify first (nothing else is worth asking of a URL that does not answer), then every step."""
        try:
            self.identify = check_identify(self)
        except RequestCap as exc:
            self.skip(list(rule_names()), str(exc))
            return results(self)
        if self.identify.status is None:
            self.skip(list(rule_names()), "the base URL did not answer")
            return results(self)
        self.not_oai = not_oai_pmh(self.identify)
        if self.not_oai:
            self.skip(list(rule_names()), "the base URL does not answer OAI-PMH")
            return results(self)
        for step in STEPS:
            try:
                step(self)
            except RequestCap as exc:
                self.skip(list(rule_names()), f"not checked: {exc}")
                break
        return results(self)


def not_oai_pmh(identify: Fetched) -> str | None:
    """Why the answer to verb=Identify shows the URL is no OAI-PMH base URL at all (None if it may be one)."""
    if identify.doc is not None and identify.doc.tag == f"{OAI}OAI-PMH":
        return None
    if identify.doc is not None:
        return f"verb=Identify answered XML whose root is {identify.doc.tag}, not OAI-PMH"
    mime = identify.content_type.split(";")[0].strip() or "no Content-Type"
    return f"verb=Identify answered HTTP {identify.status} {mime}, {identify.problem or 'not XML'}"


def _page_ending(f: Fetched, verb: str, k: int) -> str | None:
    """How a list ends at page k when this response is not a page of it at all (None if it is one)."""
    if f.doc is None or (f.part(verb) is None and not f.errors):
        return "unusable" if k > 1 else "error"
    if not f.errors:
        return None
    if k == 1:
        return "no-records" if set(f.codes) == {"noRecordsMatch"} else "error"
    return "empty-page" if "noRecordsMatch" in f.codes else "refused"
