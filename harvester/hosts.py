"""How hard one host is hit, across every partner harvested in this process.

A host is an origin, `scheme://host:port`: many partners may share one (a journal platform
serves hundreds from one server). Every request of every partner's client on that origin
takes one of its `per_host` slots first (`Hosts.slot`), so the host never sees more than that
many requests at once from this process, however many partners are harvested at once. A
`Retry-After` from the host (with 429 or 5xx) pauses every partner on it until then
(`Hosts.pause`): the host is overloaded, not one partner.

The registry is process-wide (`HOSTS`): the partners of `harvester run` and `harvester
schedule` are harvested on threads of one process. Several harvester processes each keep their
own count.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC
from email.utils import parsedate_to_datetime
from urllib.parse import urlsplit

from harvester import errors as err

_DEFAULT_PORTS = {"http": 80, "https": 443}
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
    """Per origin: a semaphore of `per_host` slots, and the time (time.monotonic()) before
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
