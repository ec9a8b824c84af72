"""Helpers for the harvester tests: a second store, a scriptable fake partner on 127.0.0.1,
and small OAI-PMH documents to serve from it."""

from __future__ import annotations

import queue
import re
import socket
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any
from urllib.parse import parse_qsl

import yaml
from click.testing import CliRunner, Result
from conftest import BASE_CONFIG, Threaded, pg_schema
from werkzeug.serving import make_server
from werkzeug.wrappers import Request, Response

from harvester.cli import main as harvester_main
from harvester.client import ClientSettings
from harvester.harvest import HarvestSettings
from oaiserver.store import Store

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIEnvironment
    from fleet import Fleet

OAI_NS = "http://www.openarchives.org/OAI/2.0/"
SECONDS = "YYYY-MM-DDThh:mm:ssZ"

# Tiny waits: a test that retries must not sleep for real.
FAST = ClientSettings(timeout=2.0, retries=2, backoff=0.01, max_backoff=0.05, retry_after_cap=0.05)
# worker_from 0: every list of more than one page goes to the worker process, as big ones do.
FAST_HARVEST = HarvestSettings(client=FAST, lease_ttl=60, worker_from=0)


@contextmanager
def second_store_url(store_url: str, tmp_path: Path) -> Iterator[str]:
    """Another store on the same backend as `store_url`: a second SQLite file, or a second
    PostgreSQL schema."""
    if store_url.startswith("sqlite"):
        yield f"sqlite:///{tmp_path / 'target.sqlite3'}"
        return
    with pg_schema("h") as url:
        yield url


@contextmanager
def second_store(store_url: str, tmp_path: Path, clock: Callable[[], float]) -> Iterator[Store]:
    """A Store on `second_store_url`, closed afterwards: the other end of a harvest."""
    with second_store_url(store_url, tmp_path) as url:
        s = Store(url, clock=clock)
        try:
            yield s
        finally:
            s.close()


Handler = Callable[[dict[str, str], int], Response]


class FakePartner(Threaded):
    """A WSGI app on 127.0.0.1, port 0, answering each request with `handler(params, n)`
    (n counts requests from 0). Every request's arguments are kept in `requests`."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.requests: list[dict[str, str]] = []
        self._lock = threading.Lock()
        self.serve(make_server("127.0.0.1", 0, self._app, threaded=True), 0.05)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/oai"

    def _app(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        """The WSGI app (what `Request.application` would make of a method, which it cannot type)."""
        with Request(environ) as request:
            params = dict(parse_qsl(request.query_string.decode(), keep_blank_values=True))
        with self._lock:
            n = len(self.requests)
            self.requests.append(params)
        return self.handler(params, n)(environ, start_response)


class Switch:
    """A WSGI app whose target can be swapped while a live server runs it; it also keeps
    each request's query string."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.queries: list[str] = []

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Any:
        self.queries.append(environ.get("QUERY_STRING", ""))
        return self.app(environ, start_response)


def xml(
    body: bytes | str, status: int = 200, headers: dict[str, str] | None = None, *, mimetype: str = "text/xml"
) -> Response:
    data = body.encode("utf-8") if isinstance(body, str) else body
    return Response(data, status=status, headers=headers or {}, mimetype=mimetype)


def oai(inner: str, *, response_date: str = "2024-05-01T12:00:00Z", request: str = "") -> str:
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f'<OAI-PMH xmlns="{OAI_NS}"><responseDate>{response_date}</responseDate>'
        f"<request{request}>http://partner.example.org/oai</request>{inner}</OAI-PMH>"
    )


def error(code: str, message: str = "") -> str:
    return oai(f'<error code="{code}">{message}</error>')


def identify(granularity: str = SECONDS) -> str:
    return oai(
        "<Identify><repositoryName>Fake</repositoryName><baseURL>http://partner.example.org/oai</baseURL>"
        "<protocolVersion>2.0</protocolVersion><adminEmail>a@partner.example.org</adminEmail>"
        "<earliestDatestamp>2000-01-01</earliestDatestamp><deletedRecord>persistent</deletedRecord>"
        f"<granularity>{granularity}</granularity></Identify>"
    )


def record(
    identifier: str,
    title: str = "A title",
    *,
    datestamp: str = "2024-04-01T10:00:00Z",
    deleted: bool = False,
    extra: str = "",
    sets: tuple[str, ...] = (),
) -> str:
    status = ' status="deleted"' if deleted else ""
    specs = "".join(f"<setSpec>{spec}</setSpec>" for spec in sets)
    header = f"<header{status}><identifier>{identifier}</identifier><datestamp>{datestamp}</datestamp>{specs}</header>"
    if deleted:
        return f"<record>{header}</record>"
    return (
        f"<record>{header}<metadata>"
        '<oai_dc:dc xmlns:oai_dc="http://www.openarchives.org/OAI/2.0/oai_dc/" '
        'xmlns:dc="http://purl.org/dc/elements/1.1/">'
        f"<dc:title>{title}</dc:title>{extra}</oai_dc:dc></metadata></record>"
    )


def list_records(
    records: list[str],
    token: str | None = None,
    *,
    response_date: str = "2024-05-01T12:00:00Z",
    announce: int | None = None,
) -> str:
    """A ListRecords response; `announce`: the completeListSize its token carries."""
    size = "" if announce is None else f' completeListSize="{announce}"'
    resumption = "" if token is None else f"<resumptionToken{size}>{token}</resumptionToken>"
    return oai(f"<ListRecords>{''.join(records)}{resumption}</ListRecords>", response_date=response_date)


def list_sets(sets: list[tuple[str, str]]) -> str:
    """A ListSets answer of (setSpec, setName) pairs, in one page."""
    listed = "".join(f"<set><setSpec>{spec}</setSpec><setName>{name}</setName></set>" for spec, name in sets)
    return oai(f"<ListSets>{listed}</ListSets>")


class PagedPartner:
    """A well-behaved partner: `pages` (lists of <record> strings) served one after the other
    with tokens `t1`, `t2`, … and an Identify; `faults` maps a request number to the response
    to send instead, once (a fault does not advance the list); `announce`: the completeListSize
    its tokens carry. ListSets lists `sets` ((setSpec, setName) pairs), or answers noSetHierarchy
    without them."""

    def __init__(
        self,
        pages: list[list[str]],
        *,
        granularity: str = SECONDS,
        faults: dict[int, Response] | None = None,
        response_date: str = "2024-05-01T12:00:00Z",
        announce: int | None = None,
        sets: list[tuple[str, str]] | None = None,
    ) -> None:
        self.pages, self.sets = pages, sets
        self.announce = announce
        self.granularity = granularity
        self.faults = faults or {}
        self.response_date = response_date

    def __call__(self, params: dict[str, str], n: int) -> Response:
        if n in self.faults:
            return self.faults.pop(n)
        verb = params.get("verb")
        if verb == "Identify":
            return xml(identify(self.granularity))
        if verb == "ListSets":
            return xml(list_sets(self.sets) if self.sets is not None else error("noSetHierarchy"))
        if verb != "ListRecords":
            return xml(error("badVerb"))
        token = params.get("resumptionToken")
        if token is None:
            index = 0
        elif token.startswith("t") and token[1:].isdigit() and int(token[1:]) < len(self.pages):
            index = int(token[1:])
        else:
            return xml(error("badResumptionToken", "expired"))
        if not self.pages or not self.pages[0]:
            return xml(error("noRecordsMatch"))
        next_token = f"t{index + 1}" if index + 1 < len(self.pages) else None
        if next_token is None and index > 0:
            next_token = ""  # the last page of a multi-page list carries an empty token
        return xml(
            list_records(self.pages[index], next_token, response_date=self.response_date, announce=self.announce)
        )


# ---- a partner on a raw socket: faults an HTTP server library will not produce ---------------


class Raw:
    """What a RawPartner sends for one request: a status, headers and a body, framed by
    Content-Length (`length`), chunked transfer coding (`chunked`), or the end of the
    connection (`close`, HTTP/1.0 style). With `cut_at`, only that many bytes of the body
    (negative: all but that many) are sent before the socket is closed; the headers still
    announce the whole body, and a chunked body lacks its last chunks."""

    def __init__(
        self,
        body: bytes | str,
        *,
        status: int = 200,
        content_type: str | None = "text/xml; charset=utf-8",
        framing: str = "length",
        cut_at: int | None = None,
    ) -> None:
        assert framing in ("length", "chunked", "close"), framing
        self.body = body.encode("utf-8") if isinstance(body, str) else body
        self.status, self.content_type, self.framing, self.cut_at = status, content_type, framing, cut_at

    def wire(self) -> bytes:
        """The bytes to write: the head, then the body (cut short if asked)."""
        head = [f"HTTP/1.1 {self.status} {'OK' if self.status == 200 else 'Error'}"]
        if self.content_type is not None:
            head.append(f"Content-Type: {self.content_type}")
        body = self.body
        if self.cut_at is not None:
            body = body[: self.cut_at if self.cut_at >= 0 else len(body) + self.cut_at]
        if self.framing == "length":
            head.append(f"Content-Length: {len(self.body)}")
        elif self.framing == "chunked":
            head.append("Transfer-Encoding: chunked")
            size = max(1, len(self.body) // 3)
            body = b"".join(
                b"%x\r\n%s\r\n" % (len(body[i : i + size]), body[i : i + size]) for i in range(0, len(body), size)
            )
            if self.cut_at is None:
                body += b"0\r\n\r\n"
        head.append("Connection: close")
        return ("\r\n".join(head) + "\r\n\r\n").encode("ascii") + body


class Streamed:
    """What a RawPartner sends piece by piece: the head, then each of `parts` as it is made, in
    chunked transfer coding or as is (`length` announces a Content-Length whatever follows),
    until the parts end or the client goes away. For partners that send forever, or drip. With
    `head=False` the parts are the whole answer, its status line and headers included."""

    def __init__(
        self,
        parts: Iterable[bytes],
        *,
        headers: dict[str, str] | None = None,
        chunked: bool = False,
        length: int | None = None,
        head: bool = True,
    ) -> None:
        self.parts, self.chunked, self.length, self.head = parts, chunked, length, head
        self.headers = {"Content-Type": "text/xml; charset=utf-8", **(headers or {})}

    def pieces(self) -> Iterator[bytes]:
        if not self.head:  # the parts are the whole answer, status line and headers included
            yield from self.parts
            return
        head = ["HTTP/1.1 200 OK", *(f"{k}: {v}" for k, v in self.headers.items())]
        if self.chunked:
            head.append("Transfer-Encoding: chunked")
        elif self.length is not None:
            head.append(f"Content-Length: {self.length}")
        head.append("Connection: close")
        yield ("\r\n".join(head) + "\r\n\r\n").encode("ascii")
        for part in self.parts:
            yield b"%x\r\n%s\r\n" % (len(part), part) if self.chunked else part
        if self.chunked:
            yield b"0\r\n\r\n"


RawHandler = Callable[[dict[str, str], int], "Raw | Streamed"]


class RawPartner(Threaded):
    """A partner on 127.0.0.1, port 0, that writes each answer byte by byte as `handler(params, n)`
    says (a Raw, or a Streamed made as it is sent), then closes the connection. Requests are kept
    in `requests`, as in FakePartner."""

    def __init__(self, handler: RawHandler) -> None:
        import socketserver

        self.handler = handler
        self.requests: list[dict[str, str]] = []
        self._lock = threading.Lock()
        partner = self

        class Handle(socketserver.StreamRequestHandler):
            def handle(self) -> None:
                line = self.rfile.readline(65537).decode("latin-1")
                while self.rfile.readline(65537) not in (b"\r\n", b"\n", b""):
                    pass
                parts = line.split()
                if len(parts) < 2:
                    return
                query = parts[1].partition("?")[2]
                params = dict(parse_qsl(query, keep_blank_values=True))
                with partner._lock:
                    n = len(partner.requests)
                    partner.requests.append(params)
                answer = partner.handler(params, n)
                if isinstance(answer, Streamed):
                    try:
                        for piece in answer.pieces():
                            self.wfile.write(piece)
                    except OSError:  # the client went away: what a hostile partner hopes not to see
                        pass
                    return
                self.wfile.write(answer.wire())
                self.wfile.flush()

        class Server(socketserver.ThreadingTCPServer):
            daemon_threads = True
            allow_reuse_address = True

        self.serve(Server(("127.0.0.1", 0), Handle), 0.05)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/oai"


# ---- a process's output, and a store that goes away -------------------------------------------


class Lines:
    """A process's output (a pipe), line by line, read on a thread: a test waits for a line, not a time."""

    def __init__(self, stream: IO[bytes] | None) -> None:
        self.lines: queue.SimpleQueue[str | None] = queue.SimpleQueue()
        self.seen: list[str] = []
        assert stream is not None
        stdout = stream

        def read() -> None:
            with stdout:
                for raw in stdout:
                    self.lines.put(raw.decode("utf-8", "replace"))
            self.lines.put(None)

        self.thread = threading.Thread(target=read, daemon=True)
        self.thread.start()

    def wait_for(self, pattern: str, timeout: float = 60) -> re.Match[str]:
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            try:
                line = self.lines.get(timeout=left)
            except queue.Empty:
                break
            if line is None:
                break
            self.seen.append(line)
            if found := re.search(pattern, line):
                return found
        raise AssertionError(f"no line matching {pattern!r} in:\n{''.join(self.seen)}")

    def rest(self) -> str:
        self.thread.join(60)
        while True:
            try:
                line = self.lines.get_nowait()
            except queue.Empty:
                break
            if line is not None:
                self.seen.append(line)
        return "".join(self.seen)


class Relay:
    """A TCP relay on 127.0.0.1, port 0, to `target` (the machine's PostgreSQL): `down()` drops
    every connection through it and refuses new ones until `up()`. An outage of the database
    for the processes that connect through it, and for no one else."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.open = True
        self.sockets: set[socket.socket] = set()
        self.lock = threading.Lock()
        threading.Thread(target=self._accept, name="relay", daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:  # closed
                return
            with self.lock:
                if not self.open:
                    client.close()
                    continue
                try:
                    server = socket.create_connection(self.target, timeout=10)
                except OSError:
                    client.close()
                    continue
                server.settimeout(None)
                self.sockets |= {client, server}
            for a, b in ((client, server), (server, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        for s in (source, sink):
            self._drop(s)

    def _drop(self, s: socket.socket) -> None:
        with self.lock:
            self.sockets.discard(s)
        with suppress(OSError):
            s.shutdown(socket.SHUT_RDWR)
        s.close()

    def down(self) -> None:
        with self.lock:
            self.open = False
            sockets = list(self.sockets)
        for s in sockets:
            self._drop(s)

    def up(self) -> None:
        with self.lock:
            self.open = True

    def close(self) -> None:
        self.listener.close()
        self.down()

    def __enter__(self) -> Relay:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def titles(store: Store, name: str) -> dict[str, str]:
    """The live records of partner `name` we hold: identifier -> title."""
    held = {}
    for identifier in store.identifiers(source=name, live_only=True):
        record = store.get(identifier)
        assert record is not None
        held[identifier] = record.dc_values("title")[0]
    return held


# ---- the harvester's command line, as a user runs it --------------------------------------------


def partners_config(
    tmp_path: Path,
    store_url: str,
    partners: Fleet | dict[str, str],
    own: dict[str, dict[str, Any]] | None = None,
    **section: Any,
) -> Path:
    """A config.yaml harvesting `partners` (a fleet, or name -> base URL) into `store_url`, each
    partner with the keys `own` gives it, and `section` as the `harvester:` section."""
    urls = partners if isinstance(partners, dict) else {name: partners.url(name) for name in sorted(partners.specs)}
    data: dict[str, Any] = {**BASE_CONFIG, "storage": {"url": store_url}}
    if section:
        data["harvester"] = section
    data["partners"] = [{"name": name, "base_url": url, **(own or {}).get(name, {})} for name, url in urls.items()]
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def harvester_cli(config_file: Path, *args: str) -> Result:
    """`harvester -c CONFIG ARGS...`, in this process."""
    return CliRunner().invoke(harvester_main, ["-c", str(config_file), *args], catch_exceptions=False)


def by_partner(result: Result) -> dict[str, str]:
    """Each line of the command's output, by the partner (the text before its first colon)."""
    return {line.split(":", 1)[0]: line for line in result.stdout.splitlines()}
