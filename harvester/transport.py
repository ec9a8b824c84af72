"""The HTTP transport of the OAI-PMH client: one request's arguments in, its answer read whole
out, under limits a long-running harvester needs and requests and Sickle do not give.

* The request is sent to the public `Sickle` object's endpoint, with its HTTP method and
  requests options (`sickle.endpoint`, `sickle.http_method`, `sickle.request_args`), over one
  keep-alive session; the answer is streamed, not read by `Sickle.harvest()` (see client.py).
* A timeout on every read, and a deadline for the whole request, redirects included, kept by
  a timer that shuts the socket (a status line and headers that drip a byte at a time).
* The body is decompressed as it arrives and refused past the page cap (a gzip bomb, a 2 GiB
  page or an endless stream stop at the cap, never in memory).
* Redirects are followed here, at most MAX_REDIRECTS, and only on the partner's own scheme,
  host and port unless `redirect_origins` names others.
* A partner's extra headers and basic credentials go on every request, `request_interval`
  apart; every request to a host (scheme://host:port) takes one of its `per_host` slots,
  shared by every partner of the process, and a host's Retry-After pauses them all (`Hosts`).

What it raises is requests' and urllib3's own errors, or the client's TransportErrors; the
client (client.py) retries, waits and parses around it, and takes any other function of the
same shape (`Send`) instead, which is how its retries are tested without a server.
"""

from __future__ import annotations

import contextlib
import re
import socket
import threading
import time
import zlib
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC
from email.utils import parsedate_to_datetime
from typing import Any, NamedTuple
from urllib.parse import urljoin, urlsplit

import requests
import requests.adapters
import urllib3
import urllib3.connection
from sickle import Sickle

from harvester import errors as err

MB = 2**20
MAX_REDIRECTS = 5
_REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
_DEFAULT_PORTS = {"http": 80, "https": 443}
_READ_SIZE = 1 << 20  # bytes asked of the socket at a time: one recv, so the deadline is checked often
DEADLINE_TIMES_TIMEOUT = 4  # a whole request may take this many timeouts, unless `deadline` says


class Answer(NamedTuple):
    """An HTTP answer read whole (within the page cap and the deadline): what a transport
    gives the client for one request."""

    status: int
    body: bytes
    headers: Mapping[str, str] = {}  # a transport's own: the client reads it, never writes
    reason: str = ""


# A transport: one request's OAI-PMH arguments in, its answer out (redirects followed, the
# body read whole). HTTPTransport is the real one; tests give a plain function.
Send = Callable[[dict[str, str]], Answer]


class Limits(NamedTuple):
    """What the transport holds a request to (the client's settings for the partner)."""

    timeout: float  # seconds to connect, and to wait for each chunk of the answer
    deadline: float | None  # seconds for a whole request, redirects included (None: 4 timeouts)
    max_page_bytes: int  # a page's size, decompressed
    redirect_origins: tuple[str, ...]  # where redirects may go besides the partner


class Politeness(NamedTuple):
    """How a partner's requests are sent besides the limits: its extra headers and
    credentials, the wait between its requests, and its host's share (Hosts)."""

    headers: tuple[tuple[str, str], ...] = ()
    auth: tuple[str, str] | None = None  # (username, password) for HTTP basic
    request_interval: float = 0.0  # seconds from the end of one request to the start of the next
    per_host: int | None = None  # requests at once to its origin across the process (None: no limit)
    retry_after_cap: float = 900.0  # a longer Retry-After pauses the host this long only

    def __repr__(self) -> str:  # the password is never shown
        shown = None if self.auth is None else (self.auth[0], "***")
        return (
            f"Politeness(headers={self.headers!r}, auth={shown!r}, request_interval={self.request_interval!r}, "
            f"per_host={self.per_host!r}, retry_after_cap={self.retry_after_cap!r})"
        )


class HTTPTransport:
    """The real transport: `transport(params)` sends one request and reads its answer whole.
    `redirects` counts the redirects followed (each one a further HTTP request)."""

    def __init__(
        self,
        base_url: str,
        limits: Limits,
        *,
        user_agent: str,
        stop: threading.Event,
        politeness: Politeness | None = None,
    ) -> None:
        self.base_url = base_url
        self.settings = limits
        self.stop = stop
        self.redirects = 0
        self.polite = politeness or Politeness()
        self.origin = origin_of(base_url)
        self._last_end: float | None = None  # time.monotonic() when the last request ended
        self.session = requests.Session()
        self.session.headers.update(dict(self.polite.headers))
        self.session.headers["User-Agent"] = user_agent
        self.session.headers["Accept-Encoding"] = "gzip, deflate"  # the codings _Inflate reads
        if self.polite.auth is not None:
            self.session.auth = self.polite.auth
        for scheme in ("http://", "https://"):
            self.session.mount(scheme, _Adapter())
        # Sickle holds the partner's request settings (endpoint, method, requests options);
        # `_send` reads them through its public attributes.
        self.sickle = Sickle(base_url, timeout=limits.timeout)

    def close(self) -> None:
        self.session.close()

    def __call__(self, params: dict[str, str]) -> Answer:
        """One request, sent `request_interval` after the partner's last one ended, in one of
        its host's slots once any pause the host asked for is over (Hosts). A 429 or
        5xx with Retry-After pauses every partner on the host."""
        p = self.polite
        if p.request_interval and self._last_end is not None:
            left = self._last_end + p.request_interval - time.monotonic()
            if left > 0 and self.stop.wait(left):
                raise err.Stopped(f"{self.base_url}: stopped while waiting for its request_interval")
        try:
            with HOSTS.slot(self.origin, p.per_host, self.stop):
                answer = self._timed(params)
        finally:
            self._last_end = time.monotonic()
        if answer.status == 429 or answer.status >= 500:
            after = retry_after(answer.headers.get("Retry-After"), time.time())
            if after is not None:
                HOSTS.pause(self.origin, min(after, p.retry_after_cap))
        return answer

    def _timed(self, params: dict[str, str]) -> Answer:
        """One request, its redirects followed (at most MAX_REDIRECTS, each checked), and its
        answer read, all within one deadline."""
        s = self.settings
        total = s.deadline if s.deadline is not None else DEADLINE_TIMES_TIMEOUT * s.timeout
        deadline = time.monotonic() + total
        watch = _Watch()
        timer = threading.Timer(total, watch.expire)
        timer.daemon = True
        timer.start()
        _watching.watch = watch
        try:
            return self._follow(params, deadline, total)
        except (requests.RequestException, urllib3.exceptions.HTTPError, OSError, err.TransportError):
            if watch.expired:
                raise err.DeadlineExceeded(
                    f"{self.base_url} ({params['verb']}): the response did not complete within {total:g} s "
                    "(the request's deadline)"
                ) from None
            raise
        finally:
            watch.finish()
            timer.cancel()
            _watching.watch = None

    def _follow(self, params: dict[str, str], deadline: float, total: float) -> Answer:
        s = self.settings
        url = self.base_url
        query: dict[str, str] | None = params  # None once following a redirect's Location
        for _ in range(MAX_REDIRECTS + 1):
            response = self._send(url, query, deadline, total)
            try:
                location = response.headers.get("Location")
                if response.status_code in _REDIRECT_STATUSES and location:
                    target = urljoin(response.url or url, location.strip())
                    if not redirect_allowed(self.base_url, target, s.redirect_origins):
                        raise err.RedirectError(
                            f"{self.base_url} ({params['verb']}) redirected to {target[:300]}, off the partner's "
                            "scheme, host and port; if that is right, add it to the partner's allow_redirects_to"
                        )
                    url, query = target, None
                    self.redirects += 1
                    continue
                if response.status_code == 429 or response.status_code >= 500:
                    body = b""  # only its status and Retry-After matter
                else:
                    body = self._read(response, deadline, total, f"{self.base_url} ({params['verb']})")
                return Answer(response.status_code, body, response.headers, response.reason or "")
            finally:
                response.close()
        raise err.RedirectError(
            f"{self.base_url} ({params['verb']}): more than {MAX_REDIRECTS} redirects (the last to {url[:300]})"
        )

    def _send(self, url: str, query: dict[str, str] | None, deadline: float, total: float) -> requests.Response:
        left = deadline - time.monotonic()
        if left <= 0:
            raise err.DeadlineExceeded(f"{self.base_url}: no answer within {total:g} s (the request's deadline)")
        timeout = min(self.settings.timeout, left)
        if query is None:  # a redirect's Location, as given
            return self.session.get(url, timeout=timeout, stream=True, allow_redirects=False)
        options = {**self.sickle.request_args, "timeout": timeout, "stream": True, "allow_redirects": False}
        if self.sickle.http_method == "GET":
            return self.session.get(self.sickle.endpoint, params=query, **options)
        return self.session.post(self.sickle.endpoint, data=query, **options)  # pragma: no cover

    def _read(self, response: requests.Response, deadline: float, total: float, where: str) -> bytes:
        """The body, decompressed as it arrives: refused once past the page cap, and abandoned at
        the deadline (each read waits at most what is left of it)."""
        limit = self.settings.max_page_bytes
        inflate = _Inflate(_coding(response.headers, limit, where), where)
        sock = _socket_of(response)
        parts: list[bytes] = []
        size = 0
        while True:
            left = self._time_left(deadline, total, where, size)
            if sock is not None:
                sock.settimeout(min(self.settings.timeout, left))
            try:
                data = response.raw.read1(_READ_SIZE, decode_content=False)
            except urllib3.exceptions.ReadTimeoutError:
                if time.monotonic() < deadline:
                    raise
                continue  # the deadline, reached while waiting: said as such above
            chunk = inflate.feed(data, limit - size + 1) if data else inflate.flush()
            size += len(chunk)
            if size > limit:
                raise err.PageTooLargeError(f"{where}: the page is larger than {page_cap(limit)}; refused")
            if chunk:
                parts.append(chunk)
            if not data:
                return b"".join(parts)

    def _time_left(self, deadline: float, total: float, where: str, size: int) -> float:
        """Seconds left before the deadline, for the next read; Stopped or DeadlineExceeded (with the
        `size` that had arrived) when there are none to wait."""
        if self.stop.is_set():  # SIGTERM: a page still arriving is asked for again by the next run
            raise err.Stopped(f"{where}: stopped while the page was arriving ({size:,} bytes)")
        left = deadline - time.monotonic()
        if left <= 0:
            raise err.DeadlineExceeded(
                f"{where}: the response did not complete within {total:g} s (the request's deadline); "
                f"{size:,} bytes had arrived"
            )
        return left


def _coding(headers: Mapping[str, str], limit: int, where: str) -> str:
    """The response's Content-Encoding; a body sent as is that announces more than `limit` bytes is refused unread."""
    coding = (headers.get("Content-Encoding") or "identity").strip().lower()
    length = (headers.get("Content-Length") or "").strip()
    if coding == "identity" and length.isdigit() and int(length) > limit:
        raise err.PageTooLargeError(
            f"{where}: the response announces {int(length) / MB:,.0f} MB, more than {page_cap(limit)}; refused unread"
        )
    return coding


def redirect_allowed(base_url: str, target: str, allowed: tuple[str, ...] = ()) -> bool:
    """Whether a redirect from the partner at `base_url` may go to `target`: the partner's own
    scheme, host and port, or one of `allowed` (`host`, `host:port` in the partner's scheme, or
    `scheme://host[:port]`; a missing port is the scheme's own)."""
    where = _origin(target)
    own = _origin(base_url)
    if where is None or own is None:
        return False
    return where == own or any(where == _origin(a if "://" in a else f"{own[0]}://{a}") for a in allowed)


def _origin(url: str) -> tuple[str, str, int] | None:
    try:
        parts = urlsplit(url)
        scheme, host = parts.scheme.lower(), (parts.hostname or "").lower()
        port = parts.port
    except ValueError:  # a port that is not a number, or out of range
        return None
    if scheme not in _DEFAULT_PORTS or not host:
        return None
    return scheme, host, port or _DEFAULT_PORTS[scheme]


class _Watch:
    """A request's deadline kept by a timer that shuts the request's socket when it passes: the
    one way to end a read that goes on receiving a byte at a time inside http.client (a status
    line and headers that drip, or a compressed drip that inflates to nothing)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.sock: socket.socket | None = None
        self.expired = self.done = False

    def watch(self, sock: socket.socket | None) -> None:
        with self.lock:
            self.sock, late = sock, self.expired
        if late:
            _shut(sock)

    def expire(self) -> None:
        with self.lock:
            if self.done:
                return
            self.expired, sock = True, self.sock
        _shut(sock)

    def finish(self) -> None:
        with self.lock:
            self.done = True


def _shut(sock: socket.socket | None) -> None:
    if sock is not None:
        with contextlib.suppress(OSError):  # already closed
            sock.shutdown(socket.SHUT_RDWR)


_watching = threading.local()  # .watch: the _Watch of the request this thread is sending


def _watched(sock: socket.socket | None) -> None:
    watch = getattr(_watching, "watch", None)
    if watch is not None:
        watch.watch(sock)


class _WatchedHTTPConnection(urllib3.connection.HTTPConnection):
    def request(self, *args: Any, **kwargs: Any) -> None:
        super().request(*args, **kwargs)
        _watched(self.sock)


class _WatchedHTTPSConnection(urllib3.connection.HTTPSConnection):
    def request(self, *args: Any, **kwargs: Any) -> None:
        super().request(*args, **kwargs)
        _watched(self.sock)


class _WatchedHTTPPool(urllib3.HTTPConnectionPool):
    ConnectionCls = _WatchedHTTPConnection


class _WatchedHTTPSPool(urllib3.HTTPSConnectionPool):
    ConnectionCls = _WatchedHTTPSConnection


class _Adapter(requests.adapters.HTTPAdapter):
    """requests' adapter, whose connections show their socket to the request's _Watch."""

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = {"http": _WatchedHTTPPool, "https": _WatchedHTTPSPool}


# urllib3's errors reach us unwrapped while a streamed body is read.
RETRIED = (
    requests.ConnectionError,
    requests.Timeout,
    requests.exceptions.ChunkedEncodingError,
    urllib3.exceptions.HTTPError,
)


class _Inflate:
    """A Content-Encoding undone as the bytes arrive, never more than asked at a time: a gzip
    bomb inflates only as far as the page cap."""

    def __init__(self, coding: str, where: str) -> None:
        if coding in ("identity", ""):
            self.wbits: int | None = None
        elif coding in ("gzip", "x-gzip"):
            self.wbits = 16 + zlib.MAX_WBITS
        elif coding == "deflate":
            self.wbits = zlib.MAX_WBITS  # zlib-wrapped, as the RFC says; raw deflate is tried too
        else:
            raise err.ResponseError(f"{where}: the response is in Content-Encoding {coding!r}, which was not asked for")
        self.where, self.started = where, False
        self.z = zlib.decompressobj(self.wbits) if self.wbits is not None else None

    def feed(self, data: bytes, most: int) -> bytes:
        """Up to `most` bytes of what `data` inflates to (more means the cap is passed anyway)."""
        if self.z is None:
            return data
        try:
            out = self.z.decompress(data, most)
        except zlib.error as exc:
            if self.wbits == zlib.MAX_WBITS and not self.started:  # raw deflate, as some servers send
                self.wbits, self.z = -zlib.MAX_WBITS, zlib.decompressobj(-zlib.MAX_WBITS)
                return self.feed(data, most)
            raise err.TransportError(f"{self.where}: the compressed response is corrupt ({exc})") from None
        self.started = True
        if self.z.eof and self.z.unused_data and len(out) < most:  # gzip members one after the other
            rest, self.z = self.z.unused_data, zlib.decompressobj(self.wbits or zlib.MAX_WBITS)
            out += self.feed(rest, most - len(out))
        return out

    def flush(self) -> bytes:
        return self.z.flush() if self.z is not None else b""


def _socket_of(response: requests.Response) -> socket.socket | None:
    """The socket a streamed answer is read from, to give each read what is left of the deadline."""
    connection = getattr(response.raw, "_connection", None)
    sock = getattr(connection, "sock", None)
    return sock if isinstance(sock, socket.socket) else None


def page_cap(limit: int) -> str:
    return f"{limit / MB:g} MB decompressed (the partner's max_page_mb)"


def describe(exc: Exception) -> str:
    """A transport error in a few words: the innermost cause's message, without the pool and
    connection reprs urllib3 and requests wrap it in."""
    kind = "timed out" if isinstance(exc, requests.Timeout | urllib3.exceptions.TimeoutError) else None
    if kind is None and isinstance(exc, requests.ConnectionError | urllib3.exceptions.HTTPError):
        kind = "connection failed"
    if kind is None:
        return f"{type(exc).__name__}: {_short(exc)}"
    return f"{kind} ({_short(_innermost(exc))})"


def _causes(exc: BaseException) -> Iterator[BaseException]:
    """`exc`, then what it wraps, innermost last: MaxRetryError's reason, an exception given
    as an argument (requests, ProtocolError), or the exception it was raised from."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen and len(seen) < 10:
        seen.add(id(current))
        yield current
        inner = getattr(current, "reason", None) if isinstance(current, urllib3.exceptions.MaxRetryError) else None
        if not isinstance(inner, BaseException):
            inner = next((a for a in current.args if isinstance(a, BaseException)), None)
        current = inner or current.__cause__


_POOL_PREFIX = re.compile(r"^\w*HTTPS?Connection(?:Pool)?\([^)]*\):\s*")


def _innermost(exc: BaseException) -> str:
    """`ConnectionResetError: Connection reset by peer`: the innermost cause, named."""
    *_, inner = _causes(exc)
    text = inner.strerror if isinstance(inner, OSError) and inner.strerror else _POOL_PREFIX.sub("", str(inner))
    return f"{type(inner).__name__}: {text}" if text else type(inner).__name__


def no_connection(exc: BaseException) -> str | None:
    """Why no connection could be made, when that is what `exc` says (refused, host name
    unknown, no route, network down); None for anything else, a connect timeout included (a
    partner too busy to accept is retried like one too busy to answer). Connections are made
    inside requests, which wraps what fails there: urllib3's errors that come unwrapped were
    raised while a body was read, over a connection that was made."""
    if not isinstance(exc, requests.ConnectionError):
        return None
    for cause in _causes(exc):
        if isinstance(cause, urllib3.exceptions.NameResolutionError):
            host = getattr(cause, "_host", None) or "the partner's host"
            return f"the host name {host} cannot be resolved"
        if isinstance(cause, urllib3.exceptions.NewConnectionError):  # a ConnectTimeoutError too, in name only
            inner = cause.__cause__
            if isinstance(inner, socket.timeout | TimeoutError):
                return None
            if isinstance(inner, OSError) and inner.strerror:
                return inner.strerror[:1].lower() + inner.strerror[1:]
            return "no connection could be made"
    return None


def _short(exc: BaseException | str) -> str:
    text = str(exc)
    return text if len(text) <= 300 else text[:300] + "…"


_STEP = 0.1  # seconds between looks at a stop while waiting for a slot or a pause


_STEP = 0.1  # seconds between looks at a stop while waiting for a slot or a pause


def origin_of(url: str) -> str:
    """`scheme://host:port` of a URL, the port written out (http://a and http://a:80 are one host)."""
    parts = urlsplit(url)
    scheme, host = parts.scheme.lower(), (parts.hostname or "").lower()
    try:
        port = parts.port or _DEFAULT_PORTS.get(scheme, 0)
    except ValueError:
        port = 0
    return f"{scheme}://{host}:{port}"


def retry_after(value: str | None, now: float) -> float | None:
    """Retry-After as seconds from `now` (seconds since the epoch): an integer, or an HTTP date;
    None if absent or garbage."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, when.timestamp() - now)


class Hosts:
    """How hard one host is hit, across every partner harvested in this process. A host is an
    origin, `scheme://host:port`: many partners may share one. Every request of every partner's
    transport takes one of its `per_host` slots first (`slot`), and a Retry-After from the host
    (with 429 or 5xx) pauses every partner on it (`pause`): the host is overloaded, not one
    partner. Process-wide (`HOSTS`): `harvester run` and `harvester schedule` harvest partners
    on threads of one process; several harvester processes each keep their own count.

    Per origin: a semaphore of `per_host` slots, and the time (time.monotonic()) before
    which no request may be sent to it."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._slots: dict[tuple[str, int], threading.BoundedSemaphore] = {}
        self._paused: dict[str, float] = {}

    def _semaphore(self, origin: str, per_host: int) -> threading.BoundedSemaphore:
        with self._lock:
            key = (origin, per_host)
            if key not in self._slots:
                self._slots[key] = threading.BoundedSemaphore(per_host)
            return self._slots[key]

    def pause(self, origin: str, seconds: float) -> None:
        """No request to `origin` for `seconds` from now (a later pause already set stands)."""
        until = time.monotonic() + seconds
        with self._lock:
            if until > self._paused.get(origin, 0.0):
                self._paused[origin] = until

    def paused_for(self, origin: str) -> float:
        """Seconds left of the origin's pause (0 when it is not paused)."""
        with self._lock:
            return max(0.0, self._paused.get(origin, 0.0) - time.monotonic())

    @contextmanager
    def slot(self, origin: str, per_host: int | None, stop: threading.Event) -> Iterator[None]:
        """Hold one of the origin's slots (None: no limit) once its pause is over; a stop while
        waiting raises Stopped."""
        self.wait_pause(origin, stop)
        if per_host is None:
            yield
            return
        semaphore = self._semaphore(origin, per_host)
        while not semaphore.acquire(timeout=_STEP):
            if stop.is_set():
                raise err.Stopped(f"{origin}: stopped while waiting for a free request slot on the host")
        try:
            self.wait_pause(origin, stop)  # a pause set while this request waited for its slot
            yield
        finally:
            semaphore.release()

    def wait_pause(self, origin: str, stop: threading.Event) -> None:
        while (left := self.paused_for(origin)) > 0:
            if stop.wait(min(left, _STEP)):
                raise err.Stopped(f"{origin}: stopped while the host asked to wait (Retry-After)")


HOSTS = Hosts()
