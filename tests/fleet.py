"""A fleet of partner repositories on 127.0.0.1, each with the misbehaviours its spec names.

One `Fleet` runs one threaded WSGI server per simulated host (a host is scheme://host:port, so
each listener is one host) and serves every partner under its own path, `/p/<name>/oai`, on its
host's port. Each partner is a correct OAI-PMH 2.0 repository over its own small record set,
made from its name and seed alone, until a fault of its `Spec` says otherwise; a spec may name
several faults. Responses validate against the schemas (tests/data/schemas) except where the
fault is the point (a record without datestamp, a page that is not XML).

The fleet keeps what a test asserts on:
* `log`: every request (seconds since start, partner, path, arguments, status, host, headers);
* per host, and per partner, the requests in progress now and the most ever at once (`peak`);
* `expected(name)`: what a perfect harvester stores and quarantines for a partner.

Faults that spoil a ListRecords page, and what a harvester can still get:
* `unparsable`: a record whose metadata is not well-formed, in its ListRecords page and its
  GetRecord alike: truly broken, quarantined (every other record of its page can be had by GetRecord);
* `broken_in_list`: the same, but in ListRecords only: its GetRecord is fine, nothing is lost;
* `garbled_page`: one page of every ListRecords list is not well-formed XML (HTTP 200), whatever
  its records: each of them reads by GetRecord;
* `html_page`: one page of every ListRecords list is an HTML page with HTTP 500;
* `list_records_fails`: every ListRecords answers HTTP 500 or an HTML page, while ListIdentifiers
  and GetRecord work.
`repair(name)` takes a partner's faults away between two harvests (its records stay the same).

A 60-partner run, 40 of them on one host, each page taking half a second::

    specs = crowd(60, hosts=[40, 5, 5, 5, 5], delay=0.5, records=20, page_size=5)
    with Fleet(specs) as fleet:
        ...  # harvest fleet.url(spec.name) for each spec
        assert fleet.peak(host=0) <= 2

Time passes between harvests with `next_run()`: a partner that deletes records quietly (`vanish`:
no tombstone, Identify says deletedRecord "no") serves them in run 0 only, which a deletion sweep
must find. `identifiers_page_fails` breaks a ListIdentifiers list (and only that) at one page.

Nothing is random without a fixed seed; the only clock is the one `delay` sleeps on.
"""

from __future__ import annotations

import random
import threading
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal
from xml.sax.saxutils import escape, quoteattr

import pytest
from werkzeug.serving import WSGIRequestHandler, make_server
from werkzeug.wrappers import Request, Response

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIEnvironment

OAI_NS = "http://www.openarchives.org/OAI/2.0/"
T0 = 1_704_067_200  # 2024-01-01T00:00:00Z: the first record's datestamp
SPACING = 5 * 3600  # two records (`same_stamp`) every five hours: lists cross days, and pairs share a second
RESPONSE_DATE = "2025-01-01T00:00:00Z"  # fixed, so pages compare byte for byte
LONG_IDENTIFIER = 1100  # bytes: more than the 1,024 a stored identifier may have
WORDS = (
    "Études",
    "café",
    "naïve",
    "Müller",
    "façade",
    "œuvre",
    "déjà",
    "São",
    "Zürich",
    "fjörd",
    "señal",
    "coöperation",
)  # every one written in Windows-1252 too, which `cp1252` partners send under a UTF-8 label
TOPICS = ("rivers", "bridges", "letters", "coins", "maps", "songs", "ships", "clocks")

# Why a perfect harvester quarantines a record, by fault.
UNPARSABLE = "unparsable"
LONG = "identifier too long"
NO_DATESTAMP = "no datestamp"
NOT_TEXT = "not text"
# What `not_text` records carry in their title: Windows-1251 bytes, kept as surrogate escapes
# until the page is encoded (`surrogateescape` writes them back as the bytes).
CYRILLIC_1251 = "Привет".encode("cp1251").decode("ascii", "surrogateescape")
MIXED_TAIL = " → kept"  # text no reading of Windows-1252 gives: a value ending so cannot be undone


@dataclass(frozen=True)
class Spec:
    """One partner: its records, its page size, its host, and its faults (none by default).

    Records are numbered from 0; a fault that names records names these numbers. Pages are
    numbered from 0 within one list (one chain of resumption tokens)."""

    name: str
    records: int = 12
    page_size: int = 5
    host: int = 0  # which listener serves it
    seed: int = 0
    deleted: frozenset[int] = frozenset()  # honest tombstones (status="deleted")
    delay: float = 0.0  # seconds every request of this partner takes
    # A record whose metadata is not well-formed: every page holding it (and its GetRecord) is not XML.
    unparsable: frozenset[int] = frozenset()
    long_identifier: frozenset[int] = frozenset()  # an identifier over 1,024 bytes: not storable
    no_datestamp: frozenset[int] = frozenset()  # a header without datestamp (schema-invalid)
    html_page: int | None = None  # this page of every ListRecords list is an HTML 500
    # A record whose metadata is not well-formed in ListRecords only (its GetRecord is fine).
    broken_in_list: frozenset[int] = frozenset()
    garbled_page: int | None = None  # this page of every ListRecords list is not well-formed XML (HTTP 200)
    identifiers_page_fails: int | None = None  # this page of every ListIdentifiers list is an HTML 500
    # Every ListRecords fails ("500": HTTP 500 with HTML; "html": HTTP 200 with an HTML page)
    # while ListIdentifiers and GetRecord work.
    list_records_fails: Literal["500", "html"] | None = None
    repeat_last_token: bool = False  # the last page carries the token that asked for it
    loop_to: int | None = None  # the last page's token leads back to this page
    loop_at: int | None = None  # ... or this page's token does (the pages after it are never reached)
    newest_first: bool = False  # lists give the latest records first (not in datestamp order)
    same_stamp: int = 2  # records sharing each datestamp (one every five hours)
    expire_after: int | None = None  # a token for page K or later is a badResumptionToken
    refuse_times: bool = False  # a time in from/until is a badArgument, though Identify says seconds
    # Served in run 0 only, then gone without a tombstone (a partner that deletes quietly: its
    # Identify says deletedRecord "no"); `Fleet.next_run` starts run 1.
    vanish: frozenset[int] = frozenset()
    announce: int | None = None  # the completeListSize every token claims (more than it has)
    cp1252: bool = False  # pages declared UTF-8 whose bytes are Windows-1252
    doubled: frozenset[int] = frozenset()  # titles UTF-8 encoded twice (`Ã©` for `é`): undone exactly
    doubled_mixed: frozenset[int] = frozenset()  # titles encoded twice, then MIXED_TAIL: kept as sent
    # Titles holding Windows-1251 bytes under the UTF-8 declaration: every page holding one is refused.
    not_text: frozenset[int] = frozenset()
    busy: frozenset[int] = frozenset()  # these requests (numbered from 0 per partner) get 503
    retry_after: int = 1  # the seconds their Retry-After asks for
    basic_auth: tuple[str, str] | None = None  # (username, password) every request must send, else 401


@dataclass(frozen=True)
class Item:
    """One record of a partner as it serves it."""

    number: int
    identifier: str
    datestamp: int  # seconds since the epoch
    title: str
    deleted: bool = False


@dataclass(frozen=True)
class Expected:
    """What a perfect harvester ends with for one partner: live records (identifier -> title),
    tombstones, quarantined identifiers with the reason, and the records that vanished without a
    tombstone (a deletion sweep turns them into tombstones; before one, they are still stored)."""

    live: dict[str, str]
    deleted: frozenset[str]
    quarantined: dict[str, str]
    vanished: frozenset[str]


@dataclass(frozen=True)
class Logged:
    at: float  # seconds since the fleet started
    partner: str
    path: str
    args: dict[str, str]
    status: int
    host: int
    headers: dict[str, str]  # as received (User-Agent, Authorization, a partner's extra headers)


@dataclass
class _Gauge:
    """Requests in progress now, and the most ever at once."""

    now: int = 0
    peak: int = 0


def stamp(seconds: int) -> str:
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_stamp(text: str, *, end: bool) -> int | None:
    """OAI-PMH `from`/`until`, as seconds; a day is its first second, or with `end` its last.
    None when it is not one."""
    for form, whole_day in (("%Y-%m-%dT%H:%M:%SZ", False), ("%Y-%m-%d", True)):
        try:
            moment = int(datetime.strptime(text, form).replace(tzinfo=UTC).timestamp())
        except ValueError:
            continue
        return moment + 86399 if whole_day and end else moment
    return None


def items(spec: Spec, run: int = 0) -> list[Item]:
    """A partner's records as served in `run`, in datestamp order: deterministic in its name and seed."""
    rng = random.Random(f"{spec.seed}:{spec.name}")
    made = []
    for n in range(spec.records):
        title = f"{rng.choice(WORDS)} {rng.choice(TOPICS)} {n}"
        identifier = f"oai:{spec.name}.example.org:rec-{n:05d}"
        if n in spec.long_identifier:
            identifier += "-" + "x" * LONG_IDENTIFIER
        if n in spec.vanish and run > 0:
            continue
        made.append(Item(n, identifier, T0 + (n // spec.same_stamp) * SPACING, title, n in spec.deleted))
    return made


def twice(text: str) -> str:
    """`text` UTF-8 encoded twice: its UTF-8 bytes read as Windows-1252 (the five bytes it leaves
    undefined as Latin-1 reads them, as MySQL does), as a partner's `doubled` titles are sent."""
    return "".join(bytes([b]).decode("cp1252", "ignore") or chr(b) for b in text.encode("utf-8"))


def sent_title(spec: Spec, item: Item) -> str:
    """The title as the partner sends it, its faults included (before XML escaping)."""
    if item.number in spec.doubled:
        return twice(item.title)
    if item.number in spec.doubled_mixed:
        return twice(item.title) + MIXED_TAIL
    if item.number in spec.not_text:
        return f"{item.title} {CYRILLIC_1251}"
    return item.title


def stored_title(spec: Spec, item: Item) -> str:
    """The title a perfect harvester stores: text encoded twice undone where that is exact."""
    return sent_title(spec, item) if item.number in spec.doubled_mixed else item.title


def expected(spec: Spec, run: int = 0) -> Expected:
    everything = items(spec, 0)
    reasons = {
        **{i.identifier: UNPARSABLE for i in everything if i.number in spec.unparsable},
        **{i.identifier: NOT_TEXT for i in everything if i.number in spec.not_text},
        **{i.identifier: LONG for i in everything if i.number in spec.long_identifier},
        **{i.identifier: NO_DATESTAMP for i in everything if i.number in spec.no_datestamp},
    }
    gone = {i.identifier for i in everything if i.number in spec.vanish} if run > 0 else set()
    live = {i.identifier: stored_title(spec, i) for i in everything if not i.deleted and i.identifier not in reasons}
    deleted = {i.identifier for i in everything if i.deleted and i.identifier not in reasons}
    return Expected(live, frozenset(deleted), reasons, frozenset(gone))


def verbs(fleet: Fleet, name: str, since: int = 0) -> Counter[str]:
    """The requests the partner got (from its `since`-th on), by verb."""
    return Counter(entry.args.get("verb", "") for entry in fleet.requests(name)[since:])


def with_specs(*specs: Spec) -> Any:
    """Marks a test to run against one fleet of `specs` (the `fleet` fixture of conftest.py)."""
    return pytest.mark.parametrize("fleet", [list(specs)], indirect=True)


def crowd(count: int, *, hosts: Sequence[int], prefix: str = "p", **spec: object) -> list[Spec]:
    """`count` alike partners spread over hosts: `hosts[h]` of them on host h (they must add up)."""
    if sum(hosts) != count:
        raise ValueError(f"hosts {list(hosts)} hold {sum(hosts)} partners, not {count}")
    placed = [h for h, many in enumerate(hosts) for _ in range(many)]
    return [Spec(f"{prefix}{n:03d}", host=h, **spec) for n, h in enumerate(placed)]  # type: ignore[arg-type]


class Fleet:
    """The partners of `specs`, served on 127.0.0.1 while the fleet is entered."""

    def __init__(self, specs: Iterable[Spec]) -> None:
        self.specs = {spec.name: spec for spec in specs}
        hosts = 1 + max((spec.host for spec in self.specs.values()), default=0)
        self.run = 0  # `next_run` advances it: records in `vanish` are gone from run 1
        self.log: list[Logged] = []
        self._lock = threading.Lock()
        self._hosts = [_Gauge() for _ in range(hosts)]
        self._partners = {name: _Gauge() for name in self.specs}
        self._counts = dict.fromkeys(self.specs, 0)
        self._refusals = [(0, 0)] * hosts  # per host: (requests still to refuse, their Retry-After)
        self._servers = [
            make_server("127.0.0.1", 0, self._app_for(h), threaded=True, request_handler=_Quiet) for h in range(hosts)
        ]
        self._threads = [threading.Thread(target=s.serve_forever, args=(0.05,), daemon=True) for s in self._servers]
        self._start = time.monotonic()

    # ---- what tests read --------------------------------------------------------------------

    def url(self, name: str) -> str:
        """The partner's baseURL."""
        return f"{self.origin(self.specs[name].host)}/p/{name}/oai"

    def origin(self, host: int) -> str:
        return f"http://127.0.0.1:{self._servers[host].server_port}"

    def peak(self, *, host: int | None = None, partner: str | None = None) -> int:
        """The most requests ever in progress at once on a host, or for a partner."""
        with self._lock:
            return (self._hosts[host] if host is not None else self._partners[str(partner)]).peak

    def in_progress(self, *, host: int) -> int:
        with self._lock:
            return self._hosts[host].now

    def requests(self, name: str) -> list[Logged]:
        with self._lock:
            return [entry for entry in self.log if entry.partner == name]

    def expected(self, name: str) -> Expected:
        return expected(self.specs[name], self.run)

    def repair(self, name: str) -> None:
        """Between two harvests: the partner's pages and records are served right from now on
        (its faults of format gone; the records, their identifiers and datestamps unchanged)."""
        self.specs[name] = replace(
            self.specs[name],
            unparsable=frozenset(),
            broken_in_list=frozenset(),
            garbled_page=None,
            html_page=None,
            list_records_fails=None,
            no_datestamp=frozenset(),
        )

    def next_run(self) -> None:
        """Between two harvests: records in `vanish` disappear without a tombstone."""
        self.run += 1

    def refuse(self, host: int, count: int, retry_after: int = 1) -> None:
        """The next `count` requests to `host`, whichever partner they are for, get 503 with
        Retry-After: `retry_after` (a host that is overloaded, not one partner)."""
        with self._lock:
            self._refusals[host] = (count, retry_after)

    def reset_peaks(self) -> None:
        with self._lock:
            for gauge in (*self._hosts, *self._partners.values()):
                gauge.peak = gauge.now

    # ---- serving ------------------------------------------------------------------------------

    def __enter__(self) -> Fleet:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        for server in self._servers:
            server.shutdown()
            server.server_close()
        for thread in self._threads:
            thread.join(10)

    def _app_for(self, host: int):  # type: ignore[no-untyped-def]  # a WSGI callable
        def app(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
            return self._serve(host, environ, start_response)

        return app

    def _serve(self, host: int, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        with Request(environ) as request:
            path = request.path
            pairs = list((request.form if request.method == "POST" else request.args).items(multi=True))
            headers = dict(request.headers.items())
            authorization = request.authorization
            credentials = None if authorization is None else (authorization.username, authorization.password)
        parts = path.strip("/").split("/")
        name = parts[1] if len(parts) == 3 and parts[0] == "p" and parts[2] == "oai" else ""
        spec = self.specs.get(name)
        if spec is None or spec.host != host:
            return Response("no such partner", status=404)(environ, start_response)
        with self._lock:
            number = self._counts[name]
            self._counts[name] += 1
            refusals, retry_after = self._refusals[host]
            if refusals:
                self._refusals[host] = (refusals - 1, retry_after)
            for gauge in (self._hosts[host], self._partners[name]):
                gauge.now += 1
                gauge.peak = max(gauge.peak, gauge.now)
        try:
            if spec.delay:
                time.sleep(spec.delay)
            if refusals:
                response = Response("host busy", status=503, headers={"Retry-After": str(retry_after)})
            elif spec.basic_auth is not None and credentials != spec.basic_auth:
                response = Response("who are you?", status=401, headers={"WWW-Authenticate": 'Basic realm="oai"'})
            else:
                response = _Partner(spec, self.run, f"{self.origin(host)}{path}").answer(pairs, number)
        finally:
            with self._lock:
                self._hosts[host].now -= 1
                self._partners[name].now -= 1
                self.log.append(
                    Logged(time.monotonic() - self._start, name, path, dict(pairs), response.status_code, host, headers)
                )
        return response(environ, start_response)


class _Quiet(WSGIRequestHandler):
    """No line on stderr per request: the fleet keeps its own log."""

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        pass


# ---- one partner's answers -----------------------------------------------------------------------

ARGUMENTS = {
    "Identify": (set(), set()),
    "ListMetadataFormats": (set(), {"identifier"}),
    "ListSets": (set(), set()),
    "GetRecord": ({"identifier", "metadataPrefix"}, set()),
    "ListIdentifiers": ({"metadataPrefix"}, {"from", "until", "set"}),
    "ListRecords": ({"metadataPrefix"}, {"from", "until", "set"}),
}
HTML_500 = "<!DOCTYPE html><html><head><title>500 Internal Server Error</title></head><body>Oops</body></html>"


class _Partner:
    """The answer to one request, from a spec, the run and the request's number."""

    def __init__(self, spec: Spec, run: int, base_url: str) -> None:
        self.spec, self.run, self.base_url = spec, run, base_url

    def answer(self, pairs: list[tuple[str, str]], number: int) -> Response:
        if number in self.spec.busy:
            return Response("busy", status=503, headers={"Retry-After": str(self.spec.retry_after)})
        args = dict(pairs)
        verb = args.get("verb", "")
        if verb not in ARGUMENTS or len(args) != len(pairs):
            return self.xml(self.error("badVerb" if verb not in ARGUMENTS else "badArgument", "bad request"))
        if "resumptionToken" in args and verb in ("ListIdentifiers", "ListRecords"):
            if set(args) != {"verb", "resumptionToken"}:
                return self.xml(self.error("badArgument", "resumptionToken is exclusive"))
        else:
            required, optional = ARGUMENTS[verb]
            if not required <= set(args) - {"verb"} <= required | optional:
                return self.xml(self.error("badArgument", "missing or unknown arguments"))
        if verb == "ListRecords" and self.spec.list_records_fails:
            html = self.spec.list_records_fails == "html"
            return Response(HTML_500, status=200 if html else 500, mimetype="text/html")
        return getattr(self, verb)(args)

    # ---- envelopes

    def xml(self, inner: str, request: str = "") -> Response:
        body = (
            '<?xml version="1.0" encoding="UTF-8"?>\n'
            f'<OAI-PMH xmlns="{OAI_NS}" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" '
            f'xsi:schemaLocation="{OAI_NS} http://www.openarchives.org/OAI/2.0/OAI-PMH.xsd">'
            f"<responseDate>{RESPONSE_DATE}</responseDate><request{request}>{escape(self.base_url)}</request>"
            f"{inner}</OAI-PMH>"
        )
        data = body.encode("cp1252" if self.spec.cp1252 else "utf-8", "surrogateescape")
        return Response(data, content_type="text/xml; charset=utf-8")

    @staticmethod
    def echo(args: dict[str, str]) -> str:
        return "".join(f" {key}={quoteattr(value)}" for key, value in args.items())

    @staticmethod
    def error(code: str, message: str) -> str:
        """An error whose request is echoed without arguments (badVerb, badArgument: 3.6)."""
        return f'<error code="{code}">{escape(message)}</error>'

    def fail(self, code: str, message: str, args: dict[str, str]) -> Response:
        return self.xml(f'<error code="{code}">{escape(message)}</error>', self.echo(args))

    # ---- records

    def header(self, item: Item) -> str:
        status = ' status="deleted"' if item.deleted else ""
        datestamp = "" if item.number in self.spec.no_datestamp else f"<datestamp>{stamp(item.datestamp)}</datestamp>"
        return f"<header{status}><identifier>{escape(item.identifier)}</identifier>{datestamp}</header>"

    def record(self, item: Item, *, listed: bool = False) -> str:
        """`listed`: in a ListRecords page (where `broken_in_list` records are broken)."""
        if item.deleted:
            return f"<record>{self.header(item)}</record>"
        title = escape(sent_title(self.spec, item))
        if item.number in self.spec.unparsable or (listed and item.number in self.spec.broken_in_list):
            title += " & <unclosed"
        return (
            f"<record>{self.header(item)}<metadata>"
            '<oai_dc:dc xmlns:oai_dc="http://www.openarchives.org/OAI/2.0/oai_dc/" '
            'xmlns:dc="http://purl.org/dc/elements/1.1/" '
            'xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" '
            'xsi:schemaLocation="http://www.openarchives.org/OAI/2.0/oai_dc/ '
            'http://www.openarchives.org/OAI/2.0/oai_dc.xsd">'
            f"<dc:title>{title}</dc:title><dc:identifier>{escape(item.identifier)}</dc:identifier>"
            f"<dc:date>{stamp(item.datestamp)[:10]}</dc:date></oai_dc:dc></metadata></record>"
        )

    # ---- verbs

    def Identify(self, args: dict[str, str]) -> Response:  # named as the verb
        deleted = "no" if self.spec.vanish else "persistent"
        return self.xml(
            f"<Identify><repositoryName>Partner {escape(self.spec.name)}</repositoryName>"
            f"<baseURL>{escape(self.base_url)}</baseURL><protocolVersion>2.0</protocolVersion>"
            f"<adminEmail>admin@{escape(self.spec.name)}.example.org</adminEmail>"
            f"<earliestDatestamp>{stamp(T0)}</earliestDatestamp><deletedRecord>{deleted}</deletedRecord>"
            "<granularity>YYYY-MM-DDThh:mm:ssZ</granularity></Identify>",
            self.echo(args),
        )

    def ListMetadataFormats(self, args: dict[str, str]) -> Response:
        if "identifier" in args and self.find(args["identifier"]) is None:
            return self.fail("idDoesNotExist", "no such record", args)
        return self.xml(
            "<ListMetadataFormats><metadataFormat><metadataPrefix>oai_dc</metadataPrefix>"
            "<schema>http://www.openarchives.org/OAI/2.0/oai_dc.xsd</schema>"
            "<metadataNamespace>http://www.openarchives.org/OAI/2.0/oai_dc/</metadataNamespace>"
            "</metadataFormat></ListMetadataFormats>",
            self.echo(args),
        )

    def ListSets(self, args: dict[str, str]) -> Response:
        return self.fail("noSetHierarchy", "this partner has no sets", args)

    def GetRecord(self, args: dict[str, str]) -> Response:
        if args["metadataPrefix"] != "oai_dc":
            return self.fail("cannotDisseminateFormat", "only oai_dc", args)
        item = self.find(args["identifier"])
        if item is None:
            return self.fail("idDoesNotExist", "no such record", args)
        return self.xml(f"<GetRecord>{self.record(item)}</GetRecord>", self.echo(args))

    def find(self, identifier: str) -> Item | None:
        return next((i for i in items(self.spec, self.run) if i.identifier == identifier), None)

    def ListIdentifiers(self, args: dict[str, str]) -> Response:
        return self.listing("ListIdentifiers", args)

    def ListRecords(self, args: dict[str, str]) -> Response:
        return self.listing("ListRecords", args)

    def listing(self, verb: str, args: dict[str, str]) -> Response:
        spec = self.spec
        query = self.query(args)
        if isinstance(query, Response):
            return query
        page, frm, until = query
        failing = spec.html_page if verb == "ListRecords" else spec.identifiers_page_fails
        if failing == page:
            return Response(HTML_500, status=500, mimetype="text/html")
        low = parse_stamp(frm, end=False) if frm else None
        high = parse_stamp(until, end=True) if until else None
        chosen = [
            i
            for i in items(spec, self.run)
            if (low is None or i.datestamp >= low) and (high is None or i.datestamp <= high)
        ]
        if not chosen:
            return self.fail("noRecordsMatch", "no records in this range", args)
        if spec.newest_first:
            chosen.reverse()
        size = spec.page_size
        pages = -(-len(chosen) // size)
        if page >= pages:
            return self.fail("badResumptionToken", "past the end of the list", args)
        shown = chosen[page * size : (page + 1) * size]
        body = "".join(self.record(i, listed=True) if verb == "ListRecords" else self.header(i) for i in shown)
        if verb == "ListRecords" and spec.garbled_page == page:
            body = "<garbled" + body  # well-formed nowhere, yet it ends with </OAI-PMH>: not a page cut short
        total = spec.announce if spec.announce is not None else len(chosen)
        attributes = f'completeListSize="{total}" cursor="{page * size}"'
        following = self.following(page, pages)
        if following is not None:
            body += f"<resumptionToken {attributes}>{_token(following, frm, until)}</resumptionToken>"
        elif page > 0:
            body += f"<resumptionToken {attributes}/>"
        return self.xml(f"<{verb}>{body}</{verb}>", self.echo(args))

    def query(self, args: dict[str, str]) -> tuple[int, str, str] | Response:
        """(page, from, until) of a list request, or the error that answers it."""
        if "resumptionToken" in args:
            query = _read_token(args["resumptionToken"])
            if query is None or (self.spec.expire_after is not None and query[0] >= self.spec.expire_after):
                return self.fail("badResumptionToken", "unknown or expired token", args)
            return query
        frm, until = args.get("from", ""), args.get("until", "")
        if args["metadataPrefix"] != "oai_dc":
            return self.fail("cannotDisseminateFormat", "only oai_dc", args)
        if "set" in args:
            return self.fail("noSetHierarchy", "this partner has no sets", args)
        if self.spec.refuse_times and ("T" in frm or "T" in until):
            return self.xml(self.error("badArgument", "from and until are days here"))
        if frm and until and len(frm) != len(until):
            return self.xml(self.error("badArgument", "from and until differ in granularity"))
        if (frm and parse_stamp(frm, end=False) is None) or (until and parse_stamp(until, end=True) is None):
            return self.xml(self.error("badArgument", "from or until is not a datestamp"))
        return 0, frm, until

    def following(self, page: int, pages: int) -> int | None:
        """The page the token of `page` leads to (None: the list ends), faults included."""
        spec = self.spec
        if spec.loop_at is not None:  # a loop in the middle; a list too short for it ends
            return spec.loop_to if page == spec.loop_at and page + 1 < pages else _next(page, pages)
        if page + 1 < pages:
            return page + 1
        return page if spec.repeat_last_token else spec.loop_to


def _next(page: int, pages: int) -> int | None:
    return page + 1 if page + 1 < pages else None


def _token(page: int, frm: str, until: str) -> str:
    return f"{page}~{frm}~{until}"


def _read_token(token: str) -> tuple[int, str, str] | None:
    parts = token.split("~")
    if len(parts) != 3 or not parts[0].isdigit():
        return None
    if any(part and parse_stamp(part, end=False) is None for part in parts[1:]):
        return None
    return int(parts[0]), parts[1], parts[2]
