"""What a reverse proxy changes about a request, undone: the path prefix of the public address
(`repository.base_url`), and the client's address (X-Forwarded-For, from trusted proxies only).
And the quoting that keeps what a client sends from forging log lines.

werkzeug's ProxyFix trusts a number of hops, whatever their addresses; here a hop is believed
only when it comes from an address the configuration names (`server.trusted_proxies`).
"""

from __future__ import annotations

import functools
import ipaddress
import json
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlsplit

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Address = ipaddress.IPv4Address | ipaddress.IPv6Address
LOG_TEXT_LIMIT = 200  # characters of a client's text (User-Agent) a log line keeps


def prefix_of(site_url: str) -> str:
    """The path the site is served under, as WSGI spells it: `/repo` for
    https://example.org/repo, '' for http://127.0.0.1:5000."""
    path = unquote(urlsplit(site_url).path).rstrip("/")
    return path.encode().decode("latin-1")  # WSGI: the UTF-8 bytes as latin-1 text


class PrefixMount:
    """The application as mounted under `prefix`: url_for (links, static files) puts the
    prefix in, and a path that still carries it (a proxy that forwards it) has it taken off. A
    path without it (a proxy that strips it, a probe on the host) is served as it is."""

    def __init__(self, app: WSGIApplication, prefix: str) -> None:
        self.app = app
        self.prefix = prefix

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        path: str = environ.get("PATH_INFO", "")
        if path == self.prefix or path.startswith(self.prefix + "/"):
            environ["PATH_INFO"] = path[len(self.prefix) :] or "/"
        environ["SCRIPT_NAME"] = self.prefix
        return self.app(environ, start_response)


def networks(items: Iterable[str]) -> tuple[Network, ...]:
    return tuple(ipaddress.ip_network(item, strict=False) for item in items)


def _address(hop: str) -> Address | None:
    """An X-Forwarded-For entry as an address: bare, or with a port (`1.2.3.4:80`, `[::1]:80`)."""
    if hop.startswith("["):
        hop = hop[1:].partition("]")[0]
    elif hop.count(":") == 1:
        hop = hop.partition(":")[0]
    try:
        return ipaddress.ip_address(hop)
    except ValueError:
        return None


def _trusted(address: Address | None, trusted: tuple[Network, ...]) -> bool:
    return address is not None and any(address in net for net in trusted)


def client_address(peer: str | None, forwarded_for: str | None, trusted: tuple[Network, ...]) -> str:
    """Who sent the request. Each proxy appends the address it was reached from; only entries
    appended by trusted proxies are believed, so the client is the rightmost address that is not
    a trusted proxy's (what is further left is the client's own claim). A request whose every
    hop is trusted comes from the farthest one."""
    if not peer:
        return "-"
    if not trusted or not forwarded_for or not _trusted(_address(peer), trusted):
        return peer
    hops = [hop.strip() for hop in forwarded_for.split(",") if hop.strip()]
    for hop in reversed(hops):
        address = _address(hop)
        if not _trusted(address, trusted):
            return hop if address is None else str(address)
    return str(_address(hops[0])) if hops else peer


# Both are pure and asked about the same few clients on every request (the address parsed,
# the User-Agent JSON-escaped); a bounded cache answers those, whatever a client sends.
@functools.lru_cache(maxsize=1024)
def log_text(value: Any) -> str:
    """A client's text as one log field: quoted, with quotes, backslashes, control and non-ASCII
    characters escaped (JSON's rules), so it can neither end the line nor pose as another field;
    cut to LOG_TEXT_LIMIT characters (then ending in `...`). Absent: `-`."""
    if value is None:
        return "-"
    text = str(value)
    if len(text) > LOG_TEXT_LIMIT:
        return json.dumps(text[:LOG_TEXT_LIMIT])[:-1] + '..."'
    return json.dumps(text)


@functools.lru_cache(maxsize=1024)
def log_address(value: str) -> str:
    """A client address as a log field: bare when it is one, else quoted (`log_text`)."""
    if value == "-" or _address(value) is not None:
        return value
    return log_text(value)
