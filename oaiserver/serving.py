"""gunicorn as `oaiserver serve` runs it, and the worker that keeps slow clients from holding it.

gunicorn's sync worker gives a whole process to one socket until the request is read: two
clients that stall their headers hold both default workers until the worker timeout. Its
gthread worker waits for a first byte in its event loop, but then reads the rest in a thread,
so a client that sends one byte and stalls still holds a thread, and the thread pool queues
everyone behind it. `RequestBufferingWorker` is gthread with the whole request read in the
event loop, as nginx does: a request without a body is complete at its blank line, and h11
(incremental and exact for Content-Length and chunked framing) says when a body is; only then
does a thread get the request, with every byte already in memory. A request not complete
within `server.request_timeout` is answered 408 and closed, so a trickle is cut too; bodies are
buffered only up to the limit the application reads (`web.MAX_BODY`), whatever their framing,
and the application answers longer ones.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import selectors
import shutil
import socket
import tempfile
import time
from functools import partial
from pathlib import Path
from typing import Any

import h11
from gunicorn import http
from gunicorn.workers.gthread import STOP_KEEPALIVE_LINGER, TConn, ThreadWorker

from oaiserver.config import Config
from oaiserver.web import MAX_BODY

# A request's header block: far above any OAI-PMH request (gunicorn's request line limit is 8190).
HEADER_LIMIT = 16 * 1024
# Body bytes buffered before the application gets a request whose body is too long: more than it
# reads (MAX_BODY + 1, to tell that it is too long) and than gunicorn's reader may ask for beyond
# that (1 KiB), so that no read in a thread waits for the client. And raw bytes, framing included
# (chunks of 64 bytes or more fit): a body framed more thinly is refused. A request being received
# holds at most BUFFER_LIMIT + RECV_SIZE bytes (108 KiB); a worker, 1,000 of them (gunicorn's
# worker_connections).
BODY_LIMIT = MAX_BODY + 1 + 4096
BUFFER_LIMIT = HEADER_LIMIT + BODY_LIMIT + 8 * 1024
RECV_SIZE = 16 * 1024
# A closed connection's unread input is drained for LINGER seconds, at most LINGER_BYTES, so that
# the answer is not reset (closing with unread input sends RST) by a client still sending.
LINGER = 2.0
LINGER_BYTES = 1024 * 1024
CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
HEAD_END = re.compile(rb"\n\r?\n")  # the blank line (a bare LF too: gunicorn then says what is wrong)


def plain_response(status: str, message: str) -> bytes:
    """A whole response the event loop sends itself, then closes the connection."""
    body = f"{message}\n".encode()
    head = f"HTTP/1.1 {status}\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: {len(body)}\r\n"
    return f"{head}Connection: close\r\n\r\n".encode() + body


class Connection(TConn):  # type: ignore[misc]
    """A gthread connection whose request, once complete, waits in its parser's buffer."""

    def __init__(self, *args: Any, worker: RequestBufferingWorker) -> None:
        super().__init__(*args)
        self.worker = worker
        self.ready = False  # the whole request (or all that will be read of it) is buffered
        self.truncated = False  # buffering stopped at the limit: answer, then close
        self.continued = False  # "100 Continue" was sent by the event loop

    def init(self) -> None:
        super().init()
        # Reads in the thread find the request buffered; this bounds the writing of the answer
        # to a client that stops reading it.
        self.sock.settimeout(max(self.worker.request_timeout, self.worker.cfg.timeout))

    def close(self, graceful: bool = False) -> None:
        if graceful and self.worker.alive:
            self.worker.linger(self.sock)  # never blocks the event loop, unlike gunicorn's close
        else:
            super().close(graceful)


class Reading:
    """A request being received: its bytes, its deadline, and once its header block announces
    a body (Content-Length or Transfer-Encoding), h11's view of the body's framing."""

    __slots__ = ("body", "buffer", "continued", "deadline", "parser")

    def __init__(self, deadline: float) -> None:
        self.deadline = deadline
        self.parser: h11.Connection | None = None  # once the header block announces a body
        self.buffer = bytearray()
        self.body = 0
        self.continued = False


class RequestBufferingWorker(ThreadWorker):  # type: ignore[misc]
    """gthread whose threads get only requests that have arrived whole (see the module doc)."""

    request_timeout: int = Config.request_timeout
    # gthread tells the arbiter it is alive (a utime of its heartbeat file) at every turn of its
    # event loop, twice a request; once a HEARTBEAT is enough for a timeout counted in seconds.
    HEARTBEAT = 1.0
    notified = -HEARTBEAT

    def init_process(self) -> None:
        if self.cfg.is_ssl:  # requests are read raw in the event loop, before any TLS wrapping
            raise RuntimeError(
                "RequestBufferingWorker does not terminate TLS: put a TLS proxy in front (see the README)"
            )
        self.reading: dict[Connection, Reading] = {}  # in deadline order: all get the same timeout
        self.lingering: dict[socket.socket, list[float]] = {}  # socket -> [deadline, bytes drained]
        super().init_process()

    def load_wsgi(self) -> None:
        """The application, and its server.request_timeout (as `oaiserver serve` runs it or as
        `gunicorn -k oaiserver.serving.RequestBufferingWorker 'oaiserver:create_app()'` does)."""
        super().load_wsgi()
        live = getattr(self.wsgi, "extensions", {}).get("oai_live")
        if live is not None:
            self.request_timeout = live.config.request_timeout

    def notify(self) -> None:
        now = time.monotonic()
        if now - self.notified >= min(self.HEARTBEAT, self.timeout / 2):  # its timeout: half the arbiter's
            self.notified = now
            super().notify()

    # ---- connections enter here: new, kept alive, or with a pipelined request buffered -----

    def accept(self, listener: socket.socket) -> None:
        try:
            sock, addr = listener.accept()
        except OSError as exc:
            if exc.errno not in (errno.EAGAIN, errno.ECONNABORTED, errno.EWOULDBLOCK):
                raise
            return
        self.nr_conns += 1
        self.read(Connection(self.cfg, sock, addr, listener.getsockname(), worker=self), b"")

    def enqueue_req(self, conn: Connection) -> None:
        if conn.ready:
            conn.ready = False
            super().enqueue_req(conn)
            return
        pending = conn.parser.unreader.take_buffered() if conn.parser is not None else b""
        self.read(conn, pending)

    def read(self, conn: Connection, pending: bytes) -> None:
        """Receive the next request of `conn` in the event loop."""
        conn.sock.setblocking(False)
        self.reading[conn] = Reading(time.monotonic() + self.request_timeout)
        self.poller.register(conn.sock, selectors.EVENT_READ, partial(self.on_request_bytes, conn))
        if pending:
            self.receive(conn, pending)

    def on_client_socket_readable(self, conn: Connection, client: socket.socket) -> None:
        """A kept-alive connection's next request is arriving: its bytes are taken now, where
        `read` alone would wait for the event loop's next turn, whose poll would only report
        again what this one has just reported (a turn is a tenth of a small request's CPU)."""
        super().on_client_socket_readable(conn, client)
        if conn in self.reading:
            self.on_request_bytes(conn, conn.sock)

    def on_request_bytes(self, conn: Connection, sock: socket.socket) -> None:
        try:
            data = sock.recv(RECV_SIZE)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        try:
            if data:
                self.receive(conn, data)
                return
        except Exception:  # a bug here must cost one connection, not the worker and all of its
            self.log.exception("error reading a request")
        if conn in self.reading:  # the client left before its request was complete
            self.forget(conn)
            self.nr_conns -= 1
            conn.close()

    def receive(self, conn: Connection, data: bytes) -> None:
        state = self.reading[conn]
        state.buffer += data
        parser = state.parser
        if parser is None:
            parser = self.start_body(conn, state)
            if parser is None:
                return
            data = bytes(state.buffer)
        parser.receive_data(data)
        try:
            self.follow_body(conn, state, parser)
        except (h11.ProtocolError, OSError) as exc:
            # Refused here, not handed on: a thread would wait on the socket for a body whose end
            # is unknown.
            self.refuse(conn, "400 Bad Request", f"The request's body is not framed correctly: {str(exc)[:200]}")

    def start_body(self, conn: Connection, state: Reading) -> h11.Connection | None:
        """Once the header block is in and announces a body, the h11 parser that will read it;
        None while the block is incomplete, or when the request is refused or has no body (it
        has then been handed on)."""
        blank = HEAD_END.search(state.buffer)
        if blank is None:
            if len(state.buffer) > HEADER_LIMIT:
                self.refuse(
                    conn,
                    "431 Request Header Fields Too Large",
                    f"The request's header block passes {HEADER_LIMIT} bytes.",
                )
            return None
        head = bytes(state.buffer[: blank.start()]).lower()
        if b"\ncontent-length:" not in head and b"\ntransfer-encoding:" not in head:
            self.dispatch(conn, truncated=False)  # no body (RFC 9112, 6.3): every GET, fast
            return None
        state.parser = h11.Connection(h11.SERVER, max_incomplete_event_size=HEADER_LIMIT)
        return state.parser

    def follow_body(self, conn: Connection, state: Reading, parser: h11.Connection) -> None:
        """Take the parser's events until it needs more bytes or the request is handed on."""
        while True:
            event = parser.next_event()
            if event is h11.NEED_DATA:
                if len(state.buffer) > BUFFER_LIMIT:  # the framing, not the content, is large
                    message = f"The request's chunked framing passes {BUFFER_LIMIT} bytes."
                    self.refuse(conn, "400 Bad Request", message)
                return
            if self.take_event(conn, state, parser, event):
                return

    def take_event(self, conn: Connection, state: Reading, parser: h11.Connection, event: Any) -> bool:
        """Act on one event of a request with a body; True once the request is handed on."""
        if isinstance(event, h11.Request) and parser.they_are_waiting_for_100_continue:
            state.continued = True
            conn.sock.send(CONTINUE)  # 25 bytes into an empty send buffer
        elif isinstance(event, h11.Data):
            state.body += len(event.data)
            if state.body >= BODY_LIMIT:
                self.dispatch(conn, truncated=True)
                return True
        elif isinstance(event, h11.EndOfMessage):
            self.dispatch(conn, truncated=False)
            return True
        return False

    def dispatch(self, conn: Connection, *, truncated: bool) -> None:
        """Hand a received request to a thread, its bytes in the parser's buffer."""
        state = self.forget(conn)
        if conn.parser is None:
            conn.parser = http.get_parser(self.cfg, conn.sock, conn.client)
        conn.parser.unreader.unread(bytes(state.buffer))
        conn.truncated, conn.continued = truncated, state.continued
        conn.ready = conn.data_ready = True
        self.enqueue_req(conn)

    def refuse(self, conn: Connection, status: str, message: str) -> None:
        """Answer a request that is not to be read further from the event loop, and close."""
        self.forget(conn)
        self.nr_conns -= 1
        with contextlib.suppress(OSError):
            conn.sock.send(plain_response(status, message))  # a few hundred bytes: they fit
        self.linger(conn.sock)

    def forget(self, conn: Connection) -> Reading:
        with_state = self.reading.pop(conn)
        self.poller.unregister(conn.sock)
        return with_state

    def handle_request(self, req: Any, conn: Connection) -> Any:
        if conn.continued:
            req._expected_100_continue = False  # the event loop has sent it
        if conn.truncated:
            req.force_close()  # the rest of the body is never read
        return super().handle_request(req, conn)

    # ---- deadlines: called by gthread's event loop at least once a second ---------------------

    def murder_pending(self) -> None:
        super().murder_pending()
        now = time.monotonic()
        if not self.alive:  # stopping: as gthread does for kept-alive connections, do not wait long
            for state in self.reading.values():
                state.deadline = min(state.deadline, now + STOP_KEEPALIVE_LINGER if state.buffer else now)
        for conn, state in list(self.reading.items()):
            if state.deadline > now:
                break
            if state.buffer:
                seconds = self.request_timeout
                self.refuse(
                    conn, "408 Request Timeout", f"The request was not received whole within {seconds} seconds."
                )
            else:
                self.forget(conn)
                self.nr_conns -= 1
                conn.close()
        for sock, (deadline, _) in list(self.lingering.items()):
            if deadline > now:
                break
            self.unlinger(sock)

    def linger(self, sock: socket.socket) -> None:
        """Close after the client has read our answer: stop writing, then discard what it still
        sends (LINGER, LINGER_BYTES), never blocking the event loop as gunicorn's close does."""
        try:
            sock.setblocking(False)
            sock.shutdown(socket.SHUT_WR)
            self.poller.register(sock, selectors.EVENT_READ, self.on_lingering_bytes)
        except (OSError, ValueError, KeyError):
            sock.close()
            return
        self.lingering[sock] = [time.monotonic() + LINGER, 0]
        self.nr_conns += 1  # an open socket still: counted, so worker_connections bounds them too

    def on_lingering_bytes(self, sock: socket.socket) -> None:
        try:
            drained = len(sock.recv(65536))
            state = self.lingering[sock]
            state[1] += drained
            if drained and state[1] < LINGER_BYTES:
                return
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            pass
        self.unlinger(sock)

    def unlinger(self, sock: socket.socket) -> None:
        if self.lingering.pop(sock, None) is not None:
            self.nr_conns -= 1
        with contextlib.suppress(KeyError, ValueError):
            self.poller.unregister(sock)
        sock.close()


def control_socket_path(bind: str) -> str:
    """Each instance's own control socket, named after its address, in gunicorn's folder for
    them: one shared path would be taken over, and removed, by whichever instance stops."""
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    folder = Path(runtime) if runtime and os.path.isdir(runtime) else Path.home() / ".gunicorn"
    return str(folder / f"oaiserver-{re.sub(r'[^A-Za-z0-9.-]+', '_', bind)}.ctl")


def run(
    cfg: Config,
    *,
    bind: str,
    workers: int,
    threads: int,
    timeout: int,
    access_log: bool,
    control_socket: str | None,
) -> None:
    """Serve `cfg` with gunicorn until stopped."""
    from gunicorn.app.base import BaseApplication

    from oaiserver import create_app, metrics

    class Application(BaseApplication):  # type: ignore[misc]
        def load_config(self) -> None:
            options: dict[str, Any] = {
                "bind": bind,
                "workers": workers,
                "worker_class": f"{__name__}.RequestBufferingWorker",
                "threads": threads,
                "timeout": timeout,
                # Long arguments get an OAI-PMH badArgument from us, not an HTML 414 from gunicorn
                # (8190 is gunicorn's largest bounded value).
                "limit_request_line": 8190,
                "control_socket": control_socket or control_socket_path(bind),
                "child_exit": lambda _arbiter, worker: metrics.worker_exited(worker.pid),
            }
            if access_log:
                options["accesslog"] = "-"
            for key, value in options.items():
                self.cfg.set(key, value)

        def load(self) -> Any:
            return create_app(cfg)

    # The workers count in a folder of this server's own, made afresh and removed at the end
    # (oaiserver.metrics); one set by the operator is theirs to manage.
    fresh = None if os.environ.get(metrics.ENV) else tempfile.mkdtemp(prefix="oaiserver-metrics-")
    if fresh is not None:
        os.environ[metrics.ENV] = fresh
    master = os.getpid()
    try:
        Application().run()
    finally:
        if fresh is not None and os.getpid() == master:  # workers, forked in run(), exit through here too
            shutil.rmtree(fresh, ignore_errors=True)
