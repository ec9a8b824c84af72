"""The only module that sees `flask.request`: HTTP in, protocol call, XML out."""

from __future__ import annotations

import gzip
import logging
import time

from flask import Blueprint, Response, current_app, request
from sqlalchemy.exc import DBAPIError

from oaiserver import protocol, render

log = logging.getLogger(__name__)
bp = Blueprint("oai", __name__)

FORM = "application/x-www-form-urlencoded"
MAX_BODY = 64 * 1024


def repository() -> protocol.Repository:
    repo: protocol.Repository = current_app.extensions["oai_repository"]
    return repo


def _raw_arguments() -> bytes | None:
    """The query string, and for POST the form body too; None if the body is unusable."""
    raw = request.query_string
    if request.method == "POST":
        if request.content_length and request.content_length > MAX_BODY:
            return None
        if request.mimetype not in (FORM, ""):
            return None
        body = request.get_data(cache=False)
        raw = b"&".join(part for part in (raw, body) if part)
    return raw


@bp.route("/oai", methods=["GET", "POST"])
def oai() -> Response:
    started = time.perf_counter()
    repo = repository()
    raw = _raw_arguments()
    if raw is None:
        return Response(
            f"POST requests must send {FORM} bodies of at most {MAX_BODY} bytes.\n",
            status=415 if request.mimetype not in (FORM, "") else 413,
            mimetype="text/plain",
        )
    answer = protocol.handle(protocol.parse_pairs(raw), repo)
    body = render.response(answer, repo.config.base_url)
    resp = Response(body, content_type="text/xml; charset=utf-8")
    resp.vary.add("Accept-Encoding")
    if request.accept_encodings["gzip"] > 0 and len(body) > 512:
        resp.set_data(gzip.compress(body, compresslevel=5))
        resp.headers["Content-Encoding"] = "gzip"
    log.info(
        "oai verb=%s args=%s errors=%s records=%s ms=%.1f",
        answer.request_args.get("verb", "-"),
        "&".join(f"{k}={v}" for k, v in answer.request_args.items() if k != "verb") or "-",
        ",".join(err.code for err in answer.errors) or "-",
        len(answer.result.headers) if isinstance(answer.result, protocol.ListResult) else "-",
        (time.perf_counter() - started) * 1000,
    )
    return resp


@bp.app_errorhandler(DBAPIError)
def store_unavailable(exc: DBAPIError) -> Response:
    """The store is down or overloaded: ask the harvester to come back, never a 500."""
    log.error("store error: %s", exc.__class__.__name__, exc_info=exc)
    resp = Response("The repository's store is unavailable; retry shortly.\n", status=503, mimetype="text/plain")
    resp.headers["Retry-After"] = "10"
    return resp
