"""The only module that sees `flask.request`: HTTP in, protocol call, XML out."""

from __future__ import annotations

import functools
import logging
import threading
import time
from collections.abc import Iterable, Mapping
from functools import partial
from typing import TYPE_CHECKING, Any, cast

from flask import Blueprint, Flask, Response, abort, current_app, g, render_template, request, url_for
from sqlalchemy.exc import DBAPIError
from werkzeug.http import parse_accept_header

from oaiserver import changes as changes_mod
from oaiserver import errors, formats, html, landing, metrics, partners, protocol, proxy, render
from oaiserver.config import partner_set
from oaiserver.live import Live
from oaiserver.records import Header, format_datestamp, parse_datestamp
from oaiserver.store import Store, StoreUnavailable, harvest_summary
from oaiserver.store.search import COUNT_UP_TO

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIEnvironment

try:  # Intel ISA-L: gzip at level 1 in a fifth of zlib's time, for the same size
    from isal.igzip import compress as gzip_compress
except ImportError:  # pragma: no cover - platforms without a wheel
    from gzip import compress as gzip_compress  # type: ignore[assignment]

log = logging.getLogger(__name__)
bp = Blueprint("oai", __name__)

FORM = "application/x-www-form-urlencoded"
MAX_BODY = 64 * 1024
LIST_VERBS = ("ListRecords", "ListIdentifiers")


def live() -> Live:
    state: Live = current_app.extensions["oai_live"]
    return state


def repository() -> protocol.Repository:
    """This request's Repository (one for the whole request, however the configuration
    changes meanwhile); StoreUnavailable, answered 503, while the store cannot be opened."""
    if "repository" not in g:
        g.repository = live().repository()
    repo: protocol.Repository = g.repository
    return repo


def _raw_arguments() -> bytes | None:
    """The query string, and for POST the form body too; None if the body is over MAX_BODY.

    At most MAX_BODY + 1 bytes are read, whatever the framing (Content-Length, chunked or
    none): a longer body is recognised without being held."""
    raw = request.query_string
    if request.method == "POST":
        if (request.content_length or 0) > MAX_BODY:
            return None
        try:
            body = request.stream.read(MAX_BODY + 1)
        except Exception:  # the server's body reader refused the client's framing, or it left
            abort(400, "The request's body could not be read: its framing is malformed or it ended early.")
        if len(body) > MAX_BODY:
            return None
        raw = b"&".join(part for part in (raw, body) if part)
    return raw


@bp.route("/oai", methods=["GET", "POST"])
def oai() -> Response:
    repo = repository()
    if request.method == "POST" and request.mimetype not in (FORM, ""):
        sent = request.mimetype[:100]
        return Response(
            f"POST requests must send their arguments as {FORM}, not as {sent!r}.\n",
            status=415,
            mimetype="text/plain",
        )
    raw = _raw_arguments()
    if raw is None:  # answered as a long GET is: an OAI-PMH badArgument
        return _xml(protocol.too_long(MAX_BODY), repo)
    answer = _answer(protocol.parse_pairs(raw), repo, current_app.extensions["oai_list_limiter"])
    if answer is None:
        metrics.OVERLOAD.inc()
        return _unavailable("The repository is busy; retry after the delay given in Retry-After.")
    return _xml(answer, repo)


def _answer(
    pairs: list[tuple[str, str]], repo: protocol.Repository, limiter: threading.BoundedSemaphore
) -> protocol.Answer | None:
    """The protocol's answer; None when as many lists as allowed are being answered already."""
    is_list = any(k == "verb" and v in LIST_VERBS for k, v in pairs)
    if is_list and not limiter.acquire(blocking=False):
        return None
    try:
        return protocol.handle(pairs, repo)
    finally:
        if is_list:
            limiter.release()


class OaiGet:
    """GET /oai answered straight from the WSGI environ, by the same steps as the `oai` view
    (`_answer`, `document`, `_observe`) and with the same headers, but without Flask's request
    context, routing, request and response objects and hooks: they cost a GetRecord more CPU
    than the protocol, the store and the XML together. What it does not answer goes to Flask:
    every other request, a POST, a list refused as overload, and any failure (a store that is
    down, a bug), which Flask answers, logs and counts as on every path; a read is repeated then,
    never a write."""

    def __init__(self, app: Flask) -> None:
        self.flask = app.wsgi_app
        self.extensions = app.extensions
        self.live: Live = app.extensions["oai_live"]
        self.limiter: threading.BoundedSemaphore = app.extensions["oai_list_limiter"]

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        if environ.get("REQUEST_METHOD") == "GET" and environ.get("PATH_INFO") == "/oai":
            try:
                answered = self.answer(environ)
            except Exception:  # Flask answers it, as every failure (the docstring)
                answered = None
            if answered is not None:
                body, headers = answered
                start_response("200 OK", headers)
                return [body]
        return self.flask(environ, start_response)

    def answer(self, environ: Mapping[str, Any]) -> tuple[bytes, list[tuple[str, str]]] | None:
        started = time.perf_counter()
        repo = self.live.repository()
        pairs = protocol.parse_pairs(environ.get("QUERY_STRING", "").encode("latin-1"))
        answer = _answer(pairs, repo, self.limiter)
        if answer is None:
            return None
        body, headers = document(
            answer,
            repo,
            navigation=environ.get("HTTP_SEC_FETCH_DEST") in BROWSER_NAVIGATION,
            gzip=accepts_gzip(environ.get("HTTP_ACCEPT_ENCODING")),
            moved=moved_site(self.extensions, repo),
        )
        client = client_field(
            environ.get("REMOTE_ADDR"), environ.get("HTTP_X_FORWARDED_FOR"), self.live.config.trusted_proxies
        )
        _observe(answer, time.perf_counter() - started, client, proxy.log_text(environ.get("HTTP_USER_AGENT")))
        return body, [*headers.items(), ("Content-Length", str(len(body))), *SAFETY_HEADERS.items()]


# Fetch metadata a browser sends when a person opens an address (a page or a frame); no
# harvester sends it, and no script can forge it (it is a forbidden header name in browsers).
BROWSER_NAVIGATION = ("document", "iframe")


def _xml(answer: protocol.Answer, repo: protocol.Repository) -> Response:
    """The OAI-PMH response (`document`) as a Flask response, and its log line."""
    navigation = request.headers.get("Sec-Fetch-Dest") in BROWSER_NAVIGATION
    gzip = accepts_gzip(request.headers.get("Accept-Encoding"))
    body, headers = document(answer, repo, navigation=navigation, gzip=gzip, moved=_moved())
    resp = Response(body, headers=headers)  # all at once: each header set later parses and rewrites
    _observe(answer, time.perf_counter() - g.started, _client(), _user_agent())
    g.logged = True
    return resp


def document(
    answer: protocol.Answer, repo: protocol.Repository, *, navigation: bool, gzip: bool, moved: tuple[str, str] | None
) -> tuple[bytes, dict[str, str]]:
    """The OAI-PMH document and its headers, gzip-compressed when asked.

    Every client gets the same document, with an `xml-stylesheet` instruction as its second
    line: harvesters the XSLT one they always had (/static/oai2.xsl, the bytes unchanged); a
    person who opens /oai in a browser (`navigation`: Sec-Fetch-Dest, never Accept, which
    harvesters send as they please) a CSS one (/static/oai-xml.css), which styles the same XML
    without XSLT, so Chromium shows no deprecation banner, and names the page for people, /oai/view."""
    sheet, kind = ("oai-xml.css", "text/css") if navigation else ("oai2.xsl", "text/xsl")
    stylesheet = f"{repo.config.site_url}/static/{sheet}"
    body = render.response(answer, repo.config.base_url, stylesheet=stylesheet, moved=moved, stylesheet_type=kind)
    headers = {"Content-Type": "text/xml; charset=utf-8", "Vary": "Accept-Encoding, Sec-Fetch-Dest"}
    if gzip and len(body) > 512:
        # Level 1: level 5 cost 2.4x the CPU for a body 22 % smaller (bench/README.md).
        body = gzip_compress(body, compresslevel=1)
        headers["Content-Encoding"] = "gzip"
    return body, headers


@functools.lru_cache(maxsize=256)
def accepts_gzip(accept_encoding: str | None) -> bool:
    """Whether an Accept-Encoding value takes gzip, as werkzeug reads it (q-values, `*`);
    cached, since clients send the same few values on every request."""
    return parse_accept_header(accept_encoding)["gzip"] > 0


def _observe(answer: protocol.Answer, seconds: float, client: str, user_agent: str) -> None:
    """One log line and the metrics for an answered request."""
    verb = answer.request_args.get("verb", "-")
    served = 0
    if isinstance(answer.result, protocol.ListResult):
        served = len(answer.result.headers)
    elif isinstance(answer.result, protocol.RecordResult):
        served = 1
    metrics.answered(verb, seconds, served, [err.code for err in answer.errors])
    args = "&".join(f"{k}={v}" for k, v in answer.request_args.items() if k != "verb") or "-"
    errors = ",".join(err.code for err in answer.errors) or "-"
    what = f"verb={verb} args={args} status=200 errors={errors} records={served}"
    log.info("%s", log_line("oai", what, seconds, client, user_agent))


def request_line(kind: str, what: str, seconds: float) -> str:
    """This request's log line (`log_line`)."""
    return log_line(kind, what, seconds, _client(), _user_agent())


def log_line(kind: str, what: str, seconds: float, client: str, user_agent: str) -> str:
    """A request's one log line: `oai` (an OAI-PMH request) or `http` (anything else), who
    asked, what was asked and answered, how long it took, and the User-Agent (which tells
    one harvester from another), quoted so that no client can forge a line or a field."""
    return f"{kind} client={client} {what} ms={seconds * 1000:.1f} ua={user_agent}"


def _client() -> str:
    return client_field(request.remote_addr, request.headers.get("X-Forwarded-For"), live().config.trusted_proxies)


def client_field(peer: str | None, forwarded_for: str | None, trusted: tuple[proxy.Network, ...]) -> str:
    """The log line's client: behind trusted proxies, the one they name (proxy.client_address)."""
    return proxy.log_address(proxy.client_address(peer, forwarded_for, trusted))


def _user_agent() -> str:
    return proxy.log_text(request.headers.get("User-Agent"))


def _moved() -> tuple[str, str] | None:
    return moved_site(current_app.extensions, repository())


def moved_site(extensions: dict[str, Any], repo: protocol.Repository) -> tuple[str, str] | None:
    """(stored site, configured site) while a move of the site is not yet ingested (landing.py)."""
    stored: landing.StoredSite | None = extensions.get("oai_landing")
    if stored is None:
        stored = extensions.setdefault("oai_landing", landing.StoredSite(cast(Store, repo.store)))
    return stored.moved(repo.config.site_url)


@bp.before_app_request
def _start_clock() -> None:
    g.started = time.perf_counter()


# Pages for people show harvested text: no script, frame or foreign resource may run in them.
# Every response gets these; XML documents keep no CSP, which would stop browsers from loading
# the stylesheet (/static/oai2.xsl) they are rendered with.
SAFETY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
}
PAGE_CSP = (
    "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
)


@bp.after_app_request
def _safety_headers(resp: Response) -> Response:
    resp.headers.update(SAFETY_HEADERS)
    if resp.mimetype != "text/xml":
        resp.headers["Content-Security-Policy"] = PAGE_CSP
    return resp


@bp.after_app_request
def _log_request(resp: Response) -> Response:
    """One line for every request that did not log its own OAI line (pages, 503s, files):
    with these, gunicorn's access log (a fifth of a small request's CPU) is not needed."""
    if not g.get("logged"):
        seconds = time.perf_counter() - g.get("started", time.perf_counter())
        log.info("%s", request_line("http", f"{request.method} {request.path} status={resp.status_code}", seconds))
    return resp


def _unavailable(message: str) -> Response:
    resp = Response(message + "\n", status=503, mimetype="text/plain")
    resp.headers["Retry-After"] = str(live().config.retry_after)
    return resp


@bp.route("/healthz")
def healthz() -> Response:
    """200 when the store answers, 503 otherwise (for load balancers and probes)."""
    store().ping()
    return Response('{"status": "ok"}\n', mimetype="application/json")


@bp.route("/metrics")
def metrics_page() -> Response:
    """Answered while the store is down too: the counts are the server's; the harvest figures,
    read from the store, are left out (and `oai_store_up` says 0)."""
    try:
        harvests = harvest_summary(store())
    except (StoreUnavailable, DBAPIError):
        harvests = None
    body, content_type = metrics.exposition(harvests)
    return Response(body, content_type=content_type)


@bp.app_errorhandler(DBAPIError)
def store_unavailable(exc: DBAPIError) -> Response:
    """The store is down or overloaded: ask the harvester to come back, never a 500."""
    log.error("store error: %s", " ".join(str(exc.orig or exc).split())[:300])  # one line, not a traceback each
    return _unavailable("The repository's store is unavailable; retry after the delay given in Retry-After.")


@bp.app_errorhandler(StoreUnavailable)
def store_not_open(_exc: StoreUnavailable) -> Response:
    """Started while the store was down: 503 until it opens (oaiserver.live logged why)."""
    return _unavailable("The repository's store is unavailable; retry after the delay given in Retry-After.")


# ---- views for people -------------------------------------------------------------------------


def store() -> Store:
    return cast(Store, repository().store)  # a Repository built by oaiserver.live holds a Store


@bp.app_template_filter("datestamp")
def _datestamp(epoch: int) -> str:
    return format_datestamp(epoch)


@bp.app_context_processor
def _helpers() -> dict[str, object]:
    cfg = repository().config
    fields = partial(html.dc_fields, moved=_moved())
    return {"config": cfg, "q": html.query, "dc_fields": fields, "title_of": html.title_of, "explain": html.EXPLAIN}


@bp.route("/oai/view", methods=["GET"])
def view() -> str:
    """The OAI-PMH answer to the same arguments as /oai, as an HTML page; `deleted` and
    `form` are the view's own (html.view_request)."""
    asked = html.view_request(protocol.parse_pairs(request.query_string))
    repo = repository()
    answer = protocol.handle(asked.pairs, repo, detailed=True)
    args = answer.request_args
    verb = args.get("verb")
    state = None
    if verb in LIST_VERBS and "resumptionToken" in args and not answer.errors:
        try:
            state = repo.tokens.read(args["resumptionToken"], verb)
        except errors.OAIError:  # expired since the protocol read it: the filters are unknown
            state = None
    chosen = html.filters(args, state)
    prefix = chosen.prefix or formats.DEFAULT
    result = answer.result
    rows = list(result.headers) if isinstance(result, protocol.ListResult) else []
    first = result.resumption.cursor + 1 if isinstance(result, protocol.ListResult) and result.resumption else 1
    # (position in the list, row): a row keeps its number when the deleted switch hides others
    shown = [(first + i, h) for i, h in enumerate(rows) if _kept(cast(Header, h), asked.deleted)]
    return render_template(
        "view.html",
        answer=answer,
        verb=verb,
        args=args,
        prefix=prefix,
        chosen=chosen,
        deleted=asked.deleted,
        rows=shown,
        hidden=len(rows) - len(shown),
        raw_query=asked.oai_query,
        formats=list(repo.all_formats()),
        set_options=html.set_options(repo.listed_sets()),
        verbs=list(protocol.ARGUMENTS),
        granularity=protocol.GRANULARITY,
    )


def _kept(h: Header, deleted: str) -> bool:
    """Whether the view's deleted switch shows this row."""
    return not (deleted == "hide" and h.deleted) and not (deleted == "only" and not h.deleted)


@bp.route("/")
def home() -> str:
    repo = repository()
    s = store()
    return render_template(
        "home.html",
        counts=s.counts(),
        sets=repo.listed_sets(),
        set_counts=s.set_counts(),
        partners=_partners(s),
    )


def _partners(s: Store) -> list[dict[str, object]]:
    summary = harvest_summary(s)
    shown = []
    for partner in repository().config.partners:
        entry = summary.get(partner.name, {})
        last = entry.get("last_run")
        shown.append(
            {
                "name": partner.name,
                "base_url": partner.base_url,
                "last_run": format_datestamp(last) if last else None,
                "outcome": entry.get("last_outcome"),
                "republish": partner.republish,
                "set": partner_set(partner.name),
            }
        )
    return shown


CHANGES_WINDOW = 7 * 86400  # the changes page's default: what changed in the last week


@bp.route("/changes")
def changes() -> tuple[str, int]:
    """What an aggregator's next incremental harvest (`from` = `since`) would bring: records
    added or changed, and records deleted, since then, counted as ListRecords counts them, in
    all, per set and per partner, each linking to the list itself. `partner=` or `set=` narrows
    the page to one partner's or one set's records (an unknown one: the site's 404)."""
    repo = repository()
    scope = _changes_scope(repo)
    given = request.args.get("since", "").strip()
    since_text = given or format_datestamp(_now(store()) - CHANGES_WINDOW)
    try:
        since, _ = parse_datestamp(since_text)
    except ValueError:
        page = render_template("changes.html", since=given, error=True, scope=scope, sets=[], partners=[])
        return page, 400
    s = store()
    ordered = sorted(repo.sets, key=lambda rule: rule.spec.split(":"))  # one tally each: the configured ones
    per_partner = [
        {**p, "tally": changes_mod.tally(s, since, str(p["set"])) if p["republish"] else None}
        for p in _partners(s)
        if scope is None or (scope.kind == "partner" and p["name"] == scope.name)
    ]
    per_set = [
        (rule, changes_mod.tally(s, since, rule.spec))
        for rule in ordered
        if scope is None or (scope.kind == "set" and rule.spec == scope.name)
    ]
    return render_template(
        "changes.html",
        since=since_text,
        error=False,
        scope=scope,
        total=changes_mod.tally(s, since, scope.spec if scope else None),
        sets=per_set,
        partners=per_partner,
        anchor=changes_mod.anchor,
    ), 200


def _changes_scope(repo: protocol.Repository) -> changes_mod.Scope | None:
    """The partner or set the changes page is asked to narrow to; 404 for one not configured."""
    partner, spec = request.args.get("partner"), request.args.get("set")
    if partner is not None:
        if partner not in {p.name for p in repo.config.partners}:
            abort(404)
        return changes_mod.Scope("partner", partner, partner_set(partner))
    if spec is not None:
        if not repo.has_set(spec):
            abort(404)
        return changes_mod.Scope("set", spec, spec)
    return None


def _now(s: Store) -> int:
    """Now, by the store's clock when it has one (tests set it), else the system's."""
    return int(s.clock() if s.clock is not None else time.time())


@bp.route("/partners/<name>")
def partner(name: str) -> str:
    """A partner's page: its configuration and schedule, its recent runs with their outcome and
    completeness, freshness, last error, the records held from it and those quarantined."""
    found = next((p for p in repository().config.partners if p.name == name), None)
    if found is None:
        abort(404)
    s = store()
    facts = partners.partner_page(s, found, _now(s))
    since = format_datestamp(facts.runs[0].started) if facts.runs else None
    return render_template(
        "partner.html",
        page=facts,
        last_run_since=since,
        age=partners.age_text,
        duration=partners.duration_text,
    )


SEARCH_PAGE = 50  # hits a page
MAX_SEARCH = 500  # characters of a query read (the store reads its first 16 words)


@bp.route("/search")
def search() -> str:
    """Records whose titles, creators or identifiers hold every word typed (see
    oaiserver.store.search), latest added first, 50 a page; `before` is the last hit's row key of the
    previous page. Any text is a query: what is not a word is ignored, never an error."""
    text = request.args.get("q", "")[:MAX_SEARCH]
    before = request.args.get("before", "")
    key = int(before) if before.isdigit() and len(before) < 19 else None
    s = store()
    hits = s.search(text, before=key, limit=SEARCH_PAGE + 1)
    shown = hits[:SEARCH_PAGE]
    more = hits[SEARCH_PAGE - 1].row_id if len(hits) > SEARCH_PAGE else None
    return render_template(
        "search.html",
        text=text,
        asked=bool(text.strip()),
        hits=shown,
        total=s.search_count(text) if shown else 0,
        up_to=COUNT_UP_TO,
        more=more,
        paged=key is not None,
    )


@bp.route("/records/<path:identifier>")
def record_page(identifier: str) -> tuple[str, int]:
    """A record's landing page (dc:identifier points here); a withdrawn record answers 410."""
    record = store().get(identifier)
    if record is None:
        return _not_found(identifier), 404
    fields = html.dc_fields(record.metadata.get("oai_dc"), _moved()) or [(v.element, v.value) for v in record.dc]
    titles = [v for k, v in fields if k == "title"]
    title = titles[0] if titles else record.identifier
    page = render_template("record.html", record=record, fields=fields, title=title)
    return page, 410 if record.deleted else 200


@bp.app_errorhandler(Exception)
def internal_error(exc: Exception) -> Response:
    """A bug: logged with its traceback, answered without one (nor any configuration)."""
    from werkzeug.exceptions import HTTPException

    if isinstance(exc, HTTPException):
        return exc  # type: ignore[return-value]
    log.exception("internal error answering %s", request.path)
    return Response("Internal error; it has been logged.\n", status=500, mimetype="text/plain")


@bp.app_errorhandler(404)
def not_found(_exc: Exception) -> Response:
    return Response(_not_found(None), status=404, mimetype="text/html")


def _not_found(identifier: str | None) -> str:
    """The site's page for an unknown address or record; plain text while the store (which
    the page's layout reads the configuration through) is down."""
    try:
        return render_template("not_found.html", identifier=identifier)
    except (StoreUnavailable, DBAPIError):
        return f"Not found. The OAI-PMH interface is at {url_for('oai.oai')}; people start at {url_for('oai.home')}.\n"
