"""Stateless, signed resumption tokens.

A token carries everything the next page needs (the list's arguments, its frozen `until`,
the last key served, the cursor and the list size), signed so it cannot be forged and
timestamped so it expires. Nothing is stored on the server: tokens survive restarts and
work on every instance that shares the secret.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from itsdangerous import BadData, URLSafeTimedSerializer

from oaiserver.errors import BadResumptionToken


@dataclass(frozen=True)
class ListState:
    """Where a list stands after a page: enough to produce the next one."""

    verb: str
    prefix: str
    start: int | None
    end: int | None
    set_spec: str | None
    last: tuple[int, str] | None
    cursor: int
    total: int


class Tokens:
    def __init__(self, secret: str, lifetime: int) -> None:
        self.lifetime = lifetime
        self._serializer = URLSafeTimedSerializer(secret, salt="oai-pmh-resumption-token")

    def issue(self, state: ListState) -> tuple[str, int]:
        """The token and its expiration time (epoch seconds)."""
        last = list(state.last) if state.last else None
        payload = [state.verb, state.prefix, state.start, state.end, state.set_spec, last, state.cursor, state.total]
        return self._serializer.dumps(payload), int(time.time()) + self.lifetime

    def read(self, token: str, verb: str) -> ListState:
        """The state a token carries, or BadResumptionToken if it is garbage, forged,
        expired or minted for another verb."""
        try:
            payload = self._serializer.loads(token, max_age=self.lifetime)
            t_verb, prefix, start, end, set_spec, last, cursor, total = payload
        except BadData as exc:
            expired = "expired" in type(exc).__name__.lower()
            raise BadResumptionToken(
                "The resumptionToken has expired."
                if expired
                else "The resumptionToken is not one this repository issued."
            ) from None
        except (TypeError, ValueError):
            raise BadResumptionToken("The resumptionToken is not one this repository issued.") from None
        if t_verb != verb:
            raise BadResumptionToken(f"The resumptionToken belongs to {t_verb}, not {verb}.")
        return ListState(verb, prefix, start, end, set_spec, (last[0], last[1]) if last else None, cursor, total)
