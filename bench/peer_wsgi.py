"""What both peers' apps share (bench/peer_app.py, bench/peer_oairepo.py): the WSGI glue around a
library's request handler, gunicorn's lazily made entry point, and the Dublin Core as oaiserver's
store writes it. Standard library only: it runs in the peers' venv (bench/.peer-venv)."""

from __future__ import annotations

import calendar
import datetime as dt
import json
import os
from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import parse_qs

Handle = Callable[[dict[str, str]], bytes]  # OAI-PMH arguments -> the response's bytes
App = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


def wsgi_app(handle: Handle) -> App:
    """A WSGI app answering GET and POST (form) requests with `handle`'s bytes as text/xml."""

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        query = environ.get("QUERY_STRING", "")
        if environ.get("REQUEST_METHOD") == "POST":
            length = int(environ.get("CONTENT_LENGTH") or 0)
            query = "&".join(p for p in (query, environ["wsgi.input"].read(length).decode("utf-8")) if p)
        args = {k: v[0] for k, v in parse_qs(query, keep_blank_values=True).items()}
        body = handle(args)
        start_response("200 OK", [("Content-Type", "text/xml; charset=utf-8"), ("Content-Length", str(len(body)))])
        return [body]

    return app


def lazy_entry(make_app: Callable[[str, str, int], App]) -> App:
    """gunicorn's entry point, made at the first request from PEER_DB, PEER_BASE_URL and PEER_PAGE_SIZE."""
    made: list[App] = []

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        if not made:
            made.append(
                make_app(
                    os.environ["PEER_DB"], os.environ["PEER_BASE_URL"], int(os.environ.get("PEER_PAGE_SIZE", "100"))
                )
            )
        return made[0](environ, start_response)

    return app


def dc_statements(dc: str) -> list[tuple[str, str]]:
    """(element, value) of a record's Dublin Core as the store keeps it: `element US lang US value`
    joined by RS, or JSON `[[element, value, lang], ...]` in older stores."""
    if dc.startswith("["):
        return [(e, v) for e, v, _lang in json.loads(dc)]
    return [(e, v) for e, _lang, v in (item.split("\x1f", 2) for item in dc.split("\x1e") if item)]


def epoch(value: dt.datetime | None) -> int | None:
    """A peer's UTC datetime (naive for pyoai, aware for oai-repo) as the store's epoch seconds."""
    return None if value is None else calendar.timegm(value.utctimetuple())


def list_filter(
    spec: str | None, start: dt.datetime | None, end: dt.datetime | None, alias: str = ""
) -> tuple[str, list[object]]:
    """A list's WHERE clause over `records` (its set, from and until; "" for the whole list) and
    its parameters; `alias` is the records table's, with its dot ("r.") or none."""
    where: list[str] = []
    params: list[object] = []
    if spec is not None:
        where.append(f"{alias}id IN (SELECT record_id FROM set_members WHERE spec = ?)")
        params.append(spec)
    for op, value in ((">=", start), ("<=", end)):
        if value is not None:
            where.append(f"{alias}datestamp {op} ?")
            params.append(epoch(value))
    return (" WHERE " + " AND ".join(where) if where else ""), params
