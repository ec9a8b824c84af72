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
from oaiserver.validate.rules import ERROR_CASES, FAIL, RULES, WARN, Note, Result
from oaiserver.validate.steps import STEPS, check_identify

log = logging.getLogger("oaiserver.validate")

MAX_BYTES = 64 * 1024 * 1024
MAX_RETRY_AFTER = 10
USER_AGENT = "oaiserver-validate/1 (OAI-PMH 2.0 conformance check)"


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

    # -- bookkeeping

    def note(self, rule: str, status: str, reason: str, subject: str = "") -> None:
        self.notes.setdefault(rule, []).append(Note(status, subject, reason))

    def skip(self, rules: Sequence[str], reason: str) -> None:
        for rule in rules:
            self.skipped.setdefault(rule, reason)

    # -- HTTP

    def fetch(self, subject: str, pairs: Sequence[tuple[str, str]], method: str = "GET") -> Fetched:
        """One request (retried on a short 503 Retry-After), parsed and inspected by every-response rules."""
        self.progress(subject)
        f = Fetched(subject, list(pairs), method)
        for attempt in range(3):
            try:
                r, body = self._send(f)
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
            f.location = r.headers.get("Location")
            break
        assert f.body is not None
        try:
            f.doc = parse(f.body)
        except (etree.XMLSyntaxError, ValueError) as exc:
            f.problem = f"not well-formed XML: {one_line(str(exc), 160)}"
        inspect(self, f)
        return f

    def _send(self, f: Fetched) -> tuple[requests.Response, bytes]:
        """The response and its body, read up to MAX_BYTES; redirects are the caller's to judge."""
        if f.method == "GET":
            r = self.session.get(self.url, params=f.pairs, timeout=self.timeout, stream=True, allow_redirects=False)
        else:
            r = self.session.post(self.url, data=f.pairs, timeout=self.timeout, stream=True, allow_redirects=False)
        with r:
            body = bytearray()
            for chunk in r.iter_content(65536):
                body += chunk
                if len(body) > MAX_BYTES:
                    raise ValueError(f"the response is larger than {MAX_BYTES // 2**20} MiB")
        return r, bytes(body)

    def _retry_after(self, r: requests.Response, subject: str) -> bool:
        """Wait out a 503 that asks for at most MAX_RETRY_AFTER seconds; True if the caller should retry."""
        retry_after = r.headers.get("Retry-After", "")
        if r.status_code != 503 or not retry_after.isdigit() or int(retry_after) > MAX_RETRY_AFTER:
            return False
        self.note("http-200", WARN, f"HTTP 503 Retry-After {retry_after}; retried", subject)
        time.sleep(int(retry_after))
        return True

    # -- lists

    def walk(self, verb: str, pairs: Sequence[tuple[str, str]], item: str) -> Chain:
        """Follow a list through its tokens, at most --max-pages pages."""
        chain = Chain()
        k = 1
        f = self.fetch(f"{verb} p1", pairs)
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
            f = self.fetch(f"{verb} p{k}", [("verb", verb), ("resumptionToken", text)])
        return chain

    # -- the run

    def run(self) -> list[Result]:
        """Identify first (nothing else is worth asking of a URL that does not answer), then every step."""
        self.identify = check_identify(self)
        if self.identify.status is None:
            self.skip([name for name, _, _ in RULES] + [c.name for c in ERROR_CASES], "the base URL did not answer")
            return results(self)
        for step in STEPS:
            step(self)
        return results(self)


def _page_ending(f: Fetched, verb: str, k: int) -> str | None:
    """How a list ends at page k when this response is not a page of it at all (None if it is one)."""
    if f.doc is None or (f.part(verb) is None and not f.errors):
        return "unusable" if k > 1 else "error"
    if not f.errors:
        return None
    if k == 1:
        return "no-records" if set(f.codes) == {"noRecordsMatch"} else "error"
    return "empty-page" if "noRecordsMatch" in f.codes else "refused"
