"""A faulty repository: our own app behind a WSGI layer that breaks one named rule of OAI-PMH.

`FAULTS` names each fault, what it does, and the rules `oaiserver validate` must report for it
(FAIL, or WARN for a SHOULD); every rule of the validator is broken by at least one fault. With no
fault the layer passes everything through, and the repository is correct.

A fault rewrites the request before the app sees it (`before`) and/or the response after
(`after`); a request rewritten gets its original arguments echoed back in <request>, so only the
rule meant is broken. The layer keeps a little state for the faults that break one list of many
(the chain of the main ListIdentifiers, the set asked for), which is sound because the validator
sends its requests one at a time.
"""

from __future__ import annotations

import gzip
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, unquote_to_bytes, urlencode
from xml.sax.saxutils import quoteattr

from conftest import Clock, make_record

from oaiserver.store import Store
from oaiserver.validate import ERROR_CASES, FAIL, WARN

T0 = 1_700_000_000  # the clock when the first records are written: 2023-11-14T22:13:20Z
RECORDS = 24  # written at T0 (16) and T0+1 (8); 3 of the second batch deleted at T0+2
SET_CYCLE: tuple[tuple[str, ...], ...] = (("a:b",), ("a",), ("c",), ())
DELETED = (17, 18, 19)
PAGE_SIZE = 5

DC_PAYLOAD = (
    '<metadata><oai_dc:dc xmlns:oai_dc="http://www.openarchives.org/OAI/2.0/oai_dc/" '
    'xmlns:dc="http://purl.org/dc/elements/1.1/"><dc:title>gone</dc:title></oai_dc:dc></metadata>'
)
TOOLKIT = (
    '<description><toolkit xmlns="http://oai.dlib.vt.edu/OAI/metadata/toolkit">'
    "<title>pyoai</title><version>2.5</version></toolkit></description>"
)


@dataclass
class Exchange:
    """One request through the layer, and its response once the app has answered."""

    environ: dict[str, Any]
    pairs: list[tuple[str, str]]  # as sent (GET query or POST form)
    state: dict[str, Any]
    status: str = "200 OK"
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: bytes = b""
    echo: list[tuple[str, str]] | None = None  # the arguments to echo when the request was rewritten
    answered: bool = False  # `before` answered by itself; the app is not called
    gzipped: bool = False  # the app compressed the body (the layer works on it uncompressed)

    @property
    def args(self) -> dict[str, str]:
        return dict(self.pairs)

    @property
    def is_xml(self) -> bool:
        return any(k.lower() == "content-type" and "xml" in v for k, v in self.headers)

    @property
    def verb(self) -> str:
        return self.args.get("verb", "")

    def rewrite(self, pairs: list[tuple[str, str]]) -> None:
        """Send the app other arguments; the original ones are echoed back."""
        self.echo = self.echo if self.echo is not None else list(self.pairs)
        self.environ["QUERY_STRING"] = urlencode(pairs)

    def answer(self, status: str, body: bytes, content_type: str = "text/plain") -> None:
        self.status, self.body, self.answered = status, body, True
        self.headers = [("Content-Type", content_type)]

    def sub(self, pattern: str, repl: str | Callable[[re.Match[str]], str], count: int = 0) -> None:
        self.body = re.sub(pattern, repl, self.body.decode(), count=count, flags=re.S).encode()


Hook = Callable[[Exchange], None]


@dataclass(frozen=True)
class Fault:
    name: str
    what: str
    breaks: dict[str, str]  # rule -> the status the validator must give it
    before: Hook | None = None
    after: Hook | None = None


def main_listing(ex: Exchange) -> bool:
    """Whether this request belongs to the plain ListIdentifiers chain (no from, until or set)."""
    if ex.verb != "ListIdentifiers":
        return False
    if "resumptionToken" not in ex.args:
        ex.state["main"] = set(ex.args) == {"verb", "metadataPrefix"}
        ex.state["page"] = 1
    else:
        ex.state["page"] = ex.state.get("page", 1) + 1
    return bool(ex.state.get("main"))


def bogus_token(ex: Exchange) -> None:
    ex.rewrite([("verb", ex.verb), ("resumptionToken", "faultyrepo-no-such-token")])


# ---- the faults -----------------------------------------------------------------------------------


def errors_http_400(ex: Exchange) -> None:
    if b'code="badVerb"' in ex.body and all(value.isprintable() for _, value in ex.pairs):
        ex.status = "400 BAD REQUEST"


def no_post(ex: Exchange) -> None:
    if ex.environ["REQUEST_METHOD"] == "POST":
        ex.answer("405 METHOD NOT ALLOWED", b"GET only\n")


def html_content_type(ex: Exchange) -> None:
    ex.headers = [(k, "text/html; charset=utf-8" if k.lower() == "content-type" else v) for k, v in ex.headers]


def truncate_formats(ex: Exchange) -> None:
    if ex.verb == "ListMetadataFormats":
        ex.body = ex.body[:-30]


def on_verb(verb: str, pattern: str, repl: str) -> Hook:
    def hook(ex: Exchange) -> None:
        if ex.verb == verb:
            ex.sub(pattern, repl)

    return hook


def everywhere(pattern: str, repl: str) -> Hook:
    def hook(ex: Exchange) -> None:
        ex.sub(pattern, repl)

    return hook


def echo_day_as_seconds(ex: Exchange) -> None:
    ex.sub(r'(<request[^>]*? from=")(\d{4}-\d\d-\d\d)(")', r"\g<1>\g<2>T00:00:00Z\g<3>")


def echo_unescaped(ex: Exchange) -> None:
    def unescape(m: re.Match[str]) -> str:
        return m.group(0).replace("&amp;", "&").replace("&apos;", "'").replace("&#39;", "'")

    ex.sub(r"<request[^>]*>", unescape)


def echo_on_bad_argument(ex: Exchange) -> None:
    if b'code="badArgument"' in ex.body and ex.verb in ("Identify", "ListRecords", "ListIdentifiers"):
        ex.sub(r"<request>", f'<request verb="{ex.verb}">')


def echo_nothing_on_error(ex: Exchange) -> None:
    """pyoai's way: an error other than badVerb and badArgument echoes only the base URL."""
    if b"<error " in ex.body and b'code="badVerb"' not in ex.body and b'code="badArgument"' not in ex.body:
        ex.sub(r"<request [^>]*>", "<request>")


def overlap_pages(ex: Exchange) -> None:
    if not main_listing(ex):
        return
    first = re.search(r"<identifier>([^<]*)</identifier>", ex.body.decode())
    if ex.state["page"] == 1 and first:
        ex.state["first"] = first.group(1)
    elif ex.state["page"] == 2:
        ex.sub(r"<identifier>[^<]*</identifier>", f"<identifier>{ex.state['first']}</identifier>", count=1)


def identifier_with_space(ex: Exchange) -> None:
    if main_listing(ex) and ex.state["page"] == 2:
        ex.sub(r"<identifier>([^<]*)</identifier>", r"<identifier>\1 copy</identifier>", count=1)


def cursor_off_by_one(ex: Exchange) -> None:
    if main_listing(ex) and ex.state["page"] == 2:
        ex.sub(r'cursor="(\d+)"', lambda m: f'cursor="{int(m.group(1)) - 1}"')


def size_plus_one(ex: Exchange) -> None:
    if main_listing(ex):
        ex.sub(r'completeListSize="(\d+)"', lambda m: f'completeListSize="{int(m.group(1)) + 1}"')


def refuse_second_token(ex: Exchange) -> None:
    if main_listing(ex) and ex.state["page"] == 3:
        bogus_token(ex)


EMPTY_TOKEN = r"<resumptionToken([^>]*?)(?:/>|></resumptionToken>)"


def token_to_nothing_before(ex: Exchange) -> None:
    if ex.args.get("resumptionToken") == "faultyrepo-more":
        bogus_token(ex)
        ex.state["nothing"] = True


def token_to_nothing_after(ex: Exchange) -> None:
    if ex.state.pop("nothing", False):
        ex.sub(r'code="badResumptionToken"', 'code="noRecordsMatch"')
    elif main_listing(ex):
        ex.sub(EMPTY_TOKEN, r"<resumptionToken\1>faultyrepo-more</resumptionToken>")


def ghost_record(ex: Exchange) -> None:
    if ex.verb == "ListRecords" and "resumptionToken" not in ex.args:
        ids = re.findall(r"<identifier>([^<]*)</identifier>", ex.body.decode())
        if ids:
            ex.sub(
                f"<identifier>{re.escape(ids[-1])}</identifier>", "<identifier>oai:test.example.org:ghost</identifier>"
            )


def deleted_with_metadata(ex: Exchange) -> None:
    if ex.verb in ("ListRecords", "GetRecord"):
        ex.sub(r'(<header status="deleted">.*?</header>)', r"\1" + DC_PAYLOAD)


def ignore_from(ex: Exchange) -> None:
    if re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", ex.args.get("from", "")):
        ex.rewrite([(k, v) for k, v in ex.pairs if k != "from"])


def until_day_exclusive(ex: Exchange) -> None:
    until = ex.args.get("until", "")
    if re.fullmatch(r"\d{4}-\d\d-\d\d", until):
        from datetime import date, timedelta

        before = (date.fromisoformat(until) - timedelta(days=1)).isoformat()
        ex.rewrite([(k, before if k == "until" else v) for k, v in ex.pairs])


def refuse_until_alone(ex: Exchange) -> None:
    """django-oai-pmh's way: until without from is refused (badArgument, echoing nothing)."""
    if ex.verb == "ListIdentifiers" and "until" in ex.args and "from" not in ex.args:
        ex.rewrite([(k, "never" if k == "until" else v) for k, v in ex.pairs])


def set_without_descendants_before(ex: Exchange) -> None:
    token = ex.args.get("resumptionToken", "")
    if token.startswith("set~"):
        _, spec, real = token.split("~", 2)
        ex.state["set"] = spec
        ex.rewrite([("verb", ex.verb), ("resumptionToken", real)])
    else:
        ex.state["set"] = ex.args.get("set")


def set_without_descendants_after(ex: Exchange) -> None:
    spec = ex.state.get("set")
    if not spec or ex.verb != "ListIdentifiers":
        return
    ex.sub(
        r"<header>(?:(?!</header>).)*</header>\n?",
        lambda m: m.group(0) if f"<setSpec>{spec}</setSpec>" in m.group(0) else "",
    )
    ex.sub(r"(<resumptionToken[^>]*>)([^<]+)(</resumptionToken>)", rf"\1set~{spec}~\2\3")


CONTROL = re.compile(rb"[\x00-\x08\x0b\x0c\x0e-\x1f]")


def crash_on_control(ex: Exchange) -> None:
    raw = unquote_to_bytes(ex.environ.get("QUERY_STRING", "").replace("+", " "))
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError:
        ex.answer("500 INTERNAL SERVER ERROR", b"Traceback (most recent call last): UnicodeDecodeError\n")
        return
    if CONTROL.search(raw):
        ex.answer("500 INTERNAL SERVER ERROR", b"Traceback (most recent call last): ValueError\n")


def strip_accept_encoding(ex: Exchange) -> None:
    ex.environ.pop("HTTP_ACCEPT_ENCODING", None)


def one_later_second(ex: Exchange) -> None:
    ex.sub(
        r"<earliestDatestamp>[^<]*</earliestDatestamp>", "<earliestDatestamp>2023-11-14T22:13:21Z</earliestDatestamp>"
    )


SWAP = {
    "badVerb": "badArgument",
    "badArgument": "badVerb",
    "badResumptionToken": "idDoesNotExist",
    "idDoesNotExist": "cannotDisseminateFormat",
    "cannotDisseminateFormat": "idDoesNotExist",
}


def wrong_code(pairs: tuple[tuple[str, str], ...], code: str) -> Hook:
    """Answer exactly this request with another error code (one that echoes alike)."""

    def hook(ex: Exchange) -> None:
        if ex.environ["REQUEST_METHOD"] == "GET" and tuple(ex.pairs) == pairs:
            ex.sub(f'code="{code}"', f'code="{SWAP[code]}"')

    return hook


# fmt: off
FAULTS: tuple[Fault, ...] = (
    Fault("errors-http-400", "badVerb answered with HTTP 400", {"http-200": FAIL}, after=errors_http_400),
    Fault("no-post", "POST answered 405", {"http-post": FAIL, "http-200": FAIL}, before=no_post),
    Fault("content-type-html", "responses served as text/html", {"content-type": FAIL}, after=html_content_type),
    Fault("ill-formed", "ListMetadataFormats cut short", {"well-formed": FAIL, "formats.oai_dc": FAIL},
          after=truncate_formats),
    Fault("schema-invalid", "adminEmail not an address", {"schema-valid": FAIL},
          after=on_verb("Identify", r"<adminEmail>[^<]*<", "<adminEmail>webmaster<")),
    Fault("request-other-url", "<request> names another base URL", {"request-element": FAIL},
          after=everywhere(r"(<request[^>]*>)[^<]*(</request>)", r"\1http://elsewhere.example.org/oai\2")),
    Fault("echo-reformatted", "<request> echoes from=YYYY-MM-DD as a time", {"request-echo": FAIL},
          after=echo_day_as_seconds),
    # Arguments left out of <request> (3.2 limits its attributes to the arguments and their values, but
    # does not say every argument must be there): a WARN, never a FAIL.
    Fault("echo-nothing-on-error", "errors other than badVerb and badArgument echo no arguments (pyoai)",
          {"request-echo": WARN}, after=echo_nothing_on_error),
    Fault("echo-no-verb", "<request> never echoes the verb (oai-repo)", {"request-echo": WARN},
          after=everywhere(r'(<request[^>]*?) verb="[^"]*"', r"\1")),
    Fault("echo-unescaped", "<request> echoes & unescaped", {"request-echo": FAIL, "well-formed": FAIL},
          after=echo_unescaped),
    Fault("response-date-offset", "responseDate with +00:00", {"response-date": FAIL},
          after=on_verb("ListMetadataFormats", r"Z</responseDate>", "+00:00</responseDate>")),
    Fault("datestamp-fraction", "datestamps with fractions of a second", {"datestamps": FAIL},
          after=everywhere(r"Z</datestamp>", ".5Z</datestamp>")),
    Fault("deleted-with-metadata", "deleted records carry metadata", {"records.deleted-no-metadata": FAIL},
          after=deleted_with_metadata),
    Fault("echo-on-bad-argument", "badArgument echoes the verb", {"error.request-attributes": FAIL},
          after=echo_on_bad_argument),
    Fault("protocol-version", "protocolVersion 1.1", {"identify.required": FAIL, "schema-valid": FAIL},
          after=on_verb("Identify", r"<protocolVersion>2.0<", "<protocolVersion>1.1<")),
    Fault("baseurl-spelling", "Identify's baseURL with a trailing slash", {"identify.baseURL": FAIL},
          after=on_verb("Identify", r"</baseURL>", "/</baseURL>")),
    Fault("granularity", "granularity YYYY-MM-DDThh:mm:ss", {"identify.granularity": FAIL, "schema-valid": FAIL},
          after=on_verb("Identify", r"<granularity>[^<]*<", "<granularity>YYYY-MM-DDThh:mm:ss<")),
    Fault("earliest-late", "earliestDatestamp a second after the oldest record",
          {"identify.earliestDatestamp": FAIL}, after=one_later_second),
    Fault("deleted-policy", "deletedRecord no, with deletions listed", {"identify.deletedRecord": FAIL},
          after=on_verb("Identify", r"<deletedRecord>[^<]*<", "<deletedRecord>no<")),
    Fault("sample-identifier", "sampleIdentifier of another repository", {"identify.oai-identifier": FAIL},
          after=on_verb("Identify", r"<sampleIdentifier>[^<]*<", "<sampleIdentifier>oai:other.example.org:1<")),
    Fault("gzip-ignored", "gzip declared but never served", {"identify.compression": WARN},
          before=strip_accept_encoding),
    Fault("no-oai_dc", "ListMetadataFormats without oai_dc", {"formats.oai_dc": FAIL},
          after=on_verb("ListMetadataFormats", r"<metadataPrefix>oai_dc<", "<metadataPrefix>oai_dx<")),
    Fault("set-twice", "ListSets lists a set twice", {"sets": FAIL},
          after=on_verb("ListSets", r"(<set>.*?</set>)", r"\1\1")),
    Fault("undeclared-set", "headers name a set ListSets does not declare", {"sets.declared": FAIL},
          after=everywhere(r"</header>", "<setSpec>nowhere</setSpec></header>")),
    Fault("page-overlap", "page 2 repeats an identifier of page 1", {"list.unique": FAIL}, after=overlap_pages),
    Fault("identifier-space", "an identifier with a space", {"list.identifiers-uri": FAIL},
          after=identifier_with_space),
    Fault("cursor-off", "page 2's cursor off by one", {"list.cursor": FAIL}, after=cursor_off_by_one),
    Fault("size-plus-one", "completeListSize one too many", {"list.complete-size": FAIL}, after=size_plus_one),
    Fault("token-refused", "the second token refused", {"list.tokens-accepted": FAIL}, before=refuse_second_token),
    Fault("token-to-nothing", "the last page's token leads to noRecordsMatch",
          {"list.no-empty-page": FAIL, "list.last-token": FAIL},
          before=token_to_nothing_before, after=token_to_nothing_after),
    Fault("no-final-token", "the last page has no empty resumptionToken", {"list.last-token": FAIL},
          after=everywhere(EMPTY_TOKEN, "")),
    Fault("records-ghost", "ListRecords lists a record ListIdentifiers does not", {"records.first-page": FAIL},
          after=ghost_record),
    Fault("getrecord-datestamp", "GetRecord gives another datestamp", {"getrecord.match": FAIL},
          after=on_verb("GetRecord", r"<datestamp>2023-", "<datestamp>2024-")),
    Fault("getrecord-metadata", "GetRecord's title differs from ListRecords'", {"getrecord.metadata": FAIL},
          after=on_verb("GetRecord", r"<dc:title>", "<dc:title>Changed: ")),
    Fault("from-ignored", "from in seconds ignored", {"selective.from-until": FAIL}, before=ignore_from),
    Fault("until-day-exclusive", "until=YYYY-MM-DD leaves out that day", {"selective.day-inclusive": FAIL},
          before=until_day_exclusive),
    Fault("until-alone-refused", "until without from answered badArgument", {"selective.day-inclusive": FAIL},
          before=refuse_until_alone),
    Fault("set-without-descendants", "set=X leaves out X's descendant sets", {"selective.set": FAIL},
          before=set_without_descendants_before, after=set_without_descendants_after),
    Fault("crash-on-control", "HTTP 500 on control characters or invalid UTF-8", {"robust.arguments": FAIL},
          before=crash_on_control),
    *(
        Fault(f"wrong-code:{case.name}", f"{case.what} answered {SWAP[case.code]}", {case.name: FAIL},
              after=wrong_code(case.pairs, case.code))
        for case in ERROR_CASES
    ),
)
# fmt: on
FAULT = {fault.name: fault for fault in FAULTS}
# Not a fault: content the validator has no schema for (pyoai's toolkit description) must not fail it.
FOREIGN_DESCRIPTION = Fault(
    "foreign-description",
    "a toolkit description",
    {},
    after=on_verb("Identify", r"</Identify>", TOOLKIT + "</Identify>"),
)


def day_granularity(ex: Exchange) -> None:
    """Identify declares YYYY-MM-DD and every datestamp is a day (our app reads day bounds as whole days)."""
    ex.sub(r"<granularity>[^<]*<", "<granularity>YYYY-MM-DD<")
    ex.sub(r"<(earliestDatestamp|datestamp)>(\d{4}-\d\d-\d\d)T[^<]*<", r"<\1>\2<")


# Not a fault: a repository of day granularity must pass every rule.
DAY_GRANULARITY = Fault("day-granularity", "a repository of day granularity", {}, after=day_granularity)


def newest_first(ex: Exchange) -> None:
    """ListRecords' first page holds the newest records (the last of ListIdentifiers' order)."""
    if ex.verb == "ListRecords" and "resumptionToken" not in ex.args:
        ex.rewrite([*ex.pairs, ("from", "2023-11-14T22:13:21Z")])  # T0 + 1: the second batch


# Not a fault: ListRecords in another order than ListIdentifiers (the spec asks for none).
NEWEST_FIRST = Fault("newest-first", "ListRecords ordered newest first", {}, before=newest_first)


def busy_once(ex: Exchange) -> None:
    """The first ListRecords is answered 503 with Retry-After: 1, as a repository under load may."""
    if ex.verb == "ListRecords" and not ex.state.get("busy"):
        ex.state["busy"] = True
        ex.answer("503 Service Unavailable", b"busy")
        ex.headers.append(("Retry-After", "1"))


# Not a fault: 503 with Retry-After is 3.1.2.2's flow control.
BUSY_ONCE = Fault("busy-once", "503 Retry-After: 1 once", {}, before=busy_once)


class FaultyRepository:
    """A WSGI app: `app` with `fault` (None: none) applied to every exchange."""

    def __init__(self, app: Any, fault: Fault | None) -> None:
        self.app = app
        self.fault = fault
        self.state: dict[str, Any] = {}

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        if self.fault is None:
            return self.app(environ, start_response)  # type: ignore[no-any-return]
        ex = Exchange(environ, self._pairs(environ), self.state)
        if self.fault.before:
            self.fault.before(ex)
        if not ex.answered:
            self._call_app(ex)
            if ex.echo is not None:
                self._restore_echo(ex)
            if self.fault.after and ex.is_xml:
                self.fault.after(ex)
        headers = [(k, v) for k, v in ex.headers if k.lower() not in ("content-length", "content-encoding")]
        body = ex.body
        if ex.gzipped:
            body = gzip.compress(body)
            headers.append(("Content-Encoding", "gzip"))
        headers.append(("Content-Length", str(len(body))))
        start_response(ex.status, headers)
        return [body]

    @staticmethod
    def _pairs(environ: dict[str, Any]) -> list[tuple[str, str]]:
        if environ["REQUEST_METHOD"] == "POST":
            length = int(environ.get("CONTENT_LENGTH") or 0)
            raw = environ["wsgi.input"].read(length)
            from io import BytesIO

            environ["wsgi.input"] = BytesIO(raw)
            return parse_qsl(raw.decode("utf-8", "replace"), keep_blank_values=True)
        return parse_qsl(environ.get("QUERY_STRING", ""), keep_blank_values=True)

    def _call_app(self, ex: Exchange) -> None:
        def start(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> None:
            ex.status, ex.headers = status, list(headers)

        chunks = self.app(ex.environ, start)
        try:
            ex.body = b"".join(chunks)
        finally:
            if hasattr(chunks, "close"):
                chunks.close()
        if any(k.lower() == "content-encoding" and v == "gzip" for k, v in ex.headers):
            ex.body = gzip.decompress(ex.body)
            ex.gzipped = True

    @staticmethod
    def _restore_echo(ex: Exchange) -> None:
        assert ex.echo is not None
        attrs = "".join(f" {k}={quoteattr(v)}" for k, v in ex.echo)
        ex.sub(r"<request [^>]*>", lambda _m: f"<request{attrs}>")


def seeded_store(url: str) -> Store:
    """The repository every fault is made from: RECORDS records written at T0 and T0 + 1 across
    the sets of SET_CYCLE, those of DELETED deleted at T0 + 2, the store's clock left at T0 + 3."""
    clock = Clock(T0)
    store = Store(url, clock=clock)
    records = [make_record(f"{i:03d}", f"Title {i}", sets=SET_CYCLE[i % 4]) for i in range(RECORDS)]
    store.write(records[:16])
    clock.tick()
    store.write(records[16:])
    clock.tick()
    store.delete(records[i].identifier for i in DELETED)
    clock.tick()
    return store
