"""What both peers' apps share (bench/peer_app.py, bench/peer_oairepo.py): the WSGI glue around a
library's request handler, gunicorn's lazily made entry point, and the Dublin Core as oaiserver's
store writes it. Standard library only: it runs in the peers' venv (bench/.peer-venv)."""

from __future__ import annotations

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
