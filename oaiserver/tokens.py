"""Stateless, signed resumption tokens.

A token carries everything the next page needs (the list's arguments, its frozen `until`,
the last key served, the record that came next, the cursor and the list size), signed so it
cannot be forged, and its expiry, fixed when it is issued. Nothing is stored on the server:
tokens survive restarts and work on every instance that shares the secret.

What a token carries is checked again when it comes back, type by type and range by range:
anyone who holds the secret (or a bug) could sign a payload no server issued, and such a
token must be a badResumptionToken, never a failed query or a schema-invalid response.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from collections.abc import Callable
from typing import NamedTuple

from oaiserver.config import RANGES, SPEC_RE
from oaiserver.errors import BadResumptionToken
from oaiserver.records import has_forbidden_chars

_SALT = b"oai-pmh-resumption-token"


class ListState(NamedTuple):
    """Where a list stands after a page: enough to produce the next one.

    A token's payload is this row as a JSON array, field by field in this order (the key
    `last` as a two-element array); `_CHECKS` below holds one check per field."""

    verb: str
    prefix: str
    start: int | None
    end: int | None
    set_spec: str | None
    last: tuple[int, str] | None
    cursor: int
    total: int
    # The identifier of the record after `last` when the token was issued (the look-ahead that
    # showed the list goes on): served, as it is now, if every other record has left the list.
    next: str | None = None


MIN_EPOCH = -62135596800  # 0001-01-01T00:00:00Z and 9999-12-31T23:59:59Z: the datestamps
MAX_EPOCH = 253402300799  # OAI-PMH's syntax can write
MAX_COUNT = 10**15  # cursors and list sizes beyond any store
MAX_TEXT = 4096  # an identifier in a token: no request can carry a longer one
MAX_LIFETIME = RANGES["server.token_lifetime"][1]


def _epoch(value: object) -> bool:
    return type(value) is int and MIN_EPOCH <= value <= MAX_EPOCH


def _count(value: object) -> bool:
    return type(value) is int and 0 <= value <= MAX_COUNT


def _text(value: object) -> bool:
    return isinstance(value, str) and len(value) <= MAX_TEXT and not has_forbidden_chars(value)


def _spec(value: object) -> bool:
    return isinstance(value, str) and SPEC_RE.fullmatch(value) is not None


def _key(value: object) -> bool:
    return isinstance(value, list) and len(value) == 2 and _epoch(value[0]) and _text(value[1])


def _optional(check: Callable[[object], bool]) -> Callable[[object], bool]:
    return lambda value: value is None or check(value)


_CHECKS: dict[str, Callable[[object], bool]] = {
    "verb": _text,
    "prefix": _text,
    "start": _optional(_epoch),
    "end": _optional(_epoch),
    "set_spec": _optional(_spec),
    "last": _optional(_key),
    "cursor": _count,
    "total": _count,
    "next": _optional(_text),
}
# In the order of the fields; a field without a check fails here, when the module is imported.
_FIELD_CHECKS = tuple(_CHECKS[name] for name in ListState._fields)
_LAST = ListState._fields.index("last")


def _state(fields: object) -> ListState | None:
    """The state a token's payload describes, if every field has its type and range."""
    if not isinstance(fields, list) or len(fields) != len(_FIELD_CHECKS):
        return None
    for check, value in zip(_FIELD_CHECKS, fields, strict=True):
        if not check(value):
            return None
    if fields[_LAST] is not None:
        fields[_LAST] = tuple(fields[_LAST])  # JSON gave a list
    return ListState._make(fields)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class Tokens:
    """`payload.issued.signature`: compact JSON, the issue time, and an HMAC-SHA256 (128 bits)
    of both under a key derived from the secret. URL-safe characters only.

    The standard library's hmac, with the key schedule computed once: a page pays a few
    microseconds for its token, not the tenths of a millisecond a general serializer costs.
    """

    def __init__(self, secret: str, lifetime: int) -> None:
        """`lifetime`: seconds the tokens issued from now on stay valid; each token carries its
        own expiry, so a change of lifetime leaves the tokens already issued as they were."""
        self.lifetime = lifetime
        key = hashlib.sha256(_SALT + b"\x00" + secret.encode()).digest()
        self._mac = hmac.new(key, digestmod=hashlib.sha256)

    def _sign(self, message: str) -> str:
        mac = self._mac.copy()
        mac.update(message.encode("ascii"))
        return _b64(mac.digest()[:16])

    def issue(self, state: ListState) -> tuple[str, int]:
        """The token and its expiration time (epoch seconds), which the token carries."""
        expires = int(time.time()) + self.lifetime
        payload = json.dumps(state, separators=(",", ":"), ensure_ascii=False)  # a tuple: a JSON array
        body = f"{_b64(payload.encode())}.{expires}"
        return f"{body}.{self._sign(body)}", expires

    def read(self, token: str, verb: str) -> ListState:
        """The state a token carries, or BadResumptionToken if it is garbage, forged,
        expired or minted for another verb."""
        foreign = BadResumptionToken("The resumptionToken is not one this repository issued.")
        body, _, signature = token.rpartition(".")
        given = signature.encode("ascii", "replace")
        if not body.isascii() or not hmac.compare_digest(given, self._sign(body).encode()):
            raise foreign
        try:
            encoded, stamp = body.split(".")
            fields = json.loads(_unb64(encoded))
        except (TypeError, ValueError, RecursionError):
            raise foreign from None
        state = _state(fields)
        if state is None or not stamp.isdigit() or len(stamp) > 12:
            raise foreign
        expires = int(stamp)
        now = time.time()
        if expires > now + MAX_LIFETIME:
            raise foreign  # no server issues a token that lives longer
        if expires < now:
            raise BadResumptionToken("The resumptionToken has expired.")
        if state.verb != verb:
            raise BadResumptionToken(f"The resumptionToken belongs to {state.verb}, not {verb}.")
        return state
