"""`oaiserver validate URL`: our own server passes; a partner that breaks rules is told which.

Everything runs over HTTP on 127.0.0.1: our app on a live server, and `FakePartner`, a small
Flask app serving hand-made OAI-PMH XML that is correct until told to break named rules.
"""

from __future__ import annotations

import hashlib
import io
import re
import socket
import threading
from collections.abc import Iterator
from typing import Any
from xml.sax.saxutils import escape, quoteattr

import pytest
from click.testing import CliRunner
from conftest import SCHEMAS, Clock, LiveServer, make_config, make_record
from flask import Flask, Response, request

from oaiserver import create_app
from oaiserver import validate as v
from oaiserver.cli import main
from oaiserver.store import Store

STATUSES = (v.PASS, v.FAIL, v.WARN, v.SKIP)


def run_validate(url: str, *extra: str) -> tuple[int, dict[str, tuple[str, str]], str]:
    """Run the command; return the exit code, {rule: (status, reason)} and the output."""
    result = CliRunner().invoke(main, ["validate", url, "--timeout", "5", *extra])
    lines: dict[str, tuple[str, str]] = {}
    for line in result.stdout.splitlines():
        status, _, rest = line.partition("  ")
        if status in STATUSES:
            name, _, reason = rest.strip().partition(" ")
            lines[name] = (status, reason.strip())
    return result.exit_code, lines, result.stdout


def failed(lines: dict[str, tuple[str, str]]) -> set[str]:
    return {name for name, (status, _) in lines.items() if status == v.FAIL}


def started(live: LiveServer) -> LiveServer:
    """Start a LiveServer that also stops fast: serve_forever polls for shutdown every 20 ms, not 500."""
    live.thread = threading.Thread(target=live.server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    return live.__enter__()


# ---- our own server --------------------------------------------------------------------------


@pytest.fixture
def ours(store_url: str, store: Store, clock: Clock) -> Iterator[Any]:
    """36 records in sets, 4 of them deleted, 5 to a page; yields start(base_url=None) -> the live URL.

    The configured baseURL is the live URL unless `base_url` says otherwise."""
    records = [make_record(f"{i:03d}", f"Title {i}", sets=(("a:b",), ("c",), ())[i % 3]) for i in range(36)]
    store.write(records[:20])
    clock.tick()
    store.write(records[20:])
    clock.tick()
    store.delete(r.identifier for r in records[3:36:9])
    clock.tick()
    servers: list[LiveServer] = []

    def start(base_url: str | None = None) -> str:
        live = LiveServer(None)
        config = make_config(
            store_url, repository__base_url=base_url or live.url, server__page_size=5, server__sets_page_size=2
        )
        live.server.app = create_app(config, store=store)
        servers.append(started(live))
        return live.url

    yield start
    for live in servers:
        live.__exit__(None, None, None)


def test_our_server_passes_every_check(ours: Any) -> None:
    url = ours()
    code, lines, output = run_validate(url)
    assert code == 0, output
    assert list(lines) == list(v.rule_names()), output  # one line per rule, in order
    assert {status for status, _ in lines.values()} == {v.PASS}, output
    assert "0 failed" in output.splitlines()[-1]
    assert lines["list.unique"][1].startswith("36 identifiers in 8 page(s)"), output
    assert "deleted oai:test.example.org:" in lines["getrecord.match"][1], output
    assert lines["identify.baseURL"][1] == f"baseURL is {url}"


def test_max_pages_bounds_the_chain(ours: Any) -> None:
    code, lines, output = run_validate(ours(), "--max-pages", "3")
    assert code == 0, output
    assert lines["list.last-token"][0] == v.SKIP  # the validator's limit, not the repository's fault
    assert "--max-pages=3" in lines["list.last-token"][1]
    assert lines["list.unique"][1].startswith("15 identifiers in 3 page(s)"), output


def test_a_server_configured_with_another_base_url_fails(ours: Any) -> None:
    """Behind a proxy with base_url left at the public URL: Identify and <request> name another URL."""
    code, lines, output = run_validate(ours("http://repository.example.org/oai"))
    assert code == 1, output
    assert failed(lines) == {"identify.baseURL", "request-element"}, output
    assert "'http://repository.example.org/oai'" in lines["identify.baseURL"][1]


# ---- a partner that breaks rules on request ----------------------------------------------------

NS = (
    'xmlns="http://www.openarchives.org/OAI/2.0/" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" '
    'xsi:schemaLocation="http://www.openarchives.org/OAI/2.0/ http://www.openarchives.org/OAI/2.0/OAI-PMH.xsd"'
)
DC = (
    '<oai_dc:dc xmlns:oai_dc="http://www.openarchives.org/OAI/2.0/oai_dc/" xmlns:dc="http://purl.org/dc/elements/1.1/" '
    'xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" xsi:schemaLocation="http://www.openarchives.org/OAI/2.0/'
    'oai_dc/ http://www.openarchives.org/OAI/2.0/oai_dc.xsd"><dc:title>{}</dc:title></oai_dc:dc>'
)
OAI_ID = (
    '<oai-identifier xmlns="http://www.openarchives.org/OAI/2.0/oai-identifier" '
    'xsi:schemaLocation="http://www.openarchives.org/OAI/2.0/oai-identifier '
    'http://www.openarchives.org/OAI/2.0/oai-identifier.xsd"><scheme>oai</scheme>'
    "<repositoryIdentifier>partner.example.org</repositoryIdentifier><delimiter>:</delimiter>"
    "<sampleIdentifier>oai:partner.example.org:0</sampleIdentifier></oai-identifier>"
)
RESPONSE_DATE = "2024-01-01T12:00:00Z"
ARABIC_INDIC = str.maketrans("0123456789", "٠١٢٣٤٥٦٧٨٩")
IDS = [f"oai:partner.example.org:{i}" for i in range(8)]
STAMPS = {ident: f"2020-01-0{i + 1}T00:00:00Z" for i, ident in enumerate(IDS)}
DELETED = {IDS[2], IDS[5]}
PAGE = 3
CONTROL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffd]")
ARGS = {
    "Identify": set(),
    "ListMetadataFormats": {"identifier"},
    "ListSets": {"resumptionToken"},
    "GetRecord": {"identifier", "metadataPrefix"},
    "ListIdentifiers": {"metadataPrefix", "from", "until", "set", "resumptionToken"},
    "ListRecords": {"metadataPrefix", "from", "until", "set", "resumptionToken"},
}

# What each break does, and the rules the validator must fail for it: exactly these.
BREAKS: dict[str, tuple[str, set[str]]] = {
    "http-422": ("badArgument answered with HTTP 422", {"http-200"}),
    "fraction": ("a datestamp with fractional seconds", {"datestamps"}),
    # \\d matches any script's digits; the datestamp syntax (and our server) wants 0-9.
    "arabic-digits": ("a datestamp in Arabic-Indic digits", {"datestamps", "schema-valid"}),
    "offset": ("a responseDate with a +02:00 offset", {"response-date"}),
    "empty-page": ("the last page's token leads to noRecordsMatch", {"list.no-empty-page", "list.last-token"}),
    "repeat": ("page 2 repeats an identifier of page 1", {"list.unique"}),
    "space-id": ("an identifier with spaces (not a URI)", {"list.identifiers-uri"}),
    "cursor": ("page 2's cursor is off by one", {"list.cursor"}),
    "size": ("completeListSize one too many", {"list.complete-size"}),
    "echo": ("<request> echoes the verb on badVerb and badArgument", {"error.request-attributes"}),
    "baseurl": ("Identify's baseURL is another URL", {"identify.baseURL"}),
    "schema": ("Identify's adminEmail is not an address (schema-invalid)", {"schema-valid"}),
    "earliest": ("earliestDatestamp later than some datestamps", {"identify.earliestDatestamp"}),
    "deleted-metadata": ("deleted records carry metadata", {"records.deleted-no-metadata"}),
    "getrecord": ("GetRecord gives another datestamp than the list", {"getrecord.match"}),
    "from-until": ("from > until answered noRecordsMatch", {"error.from-after-until"}),
    "bad-token": ("a made-up token answered badArgument", {"error.bad-resumptionToken"}),
    "no-oai_dc": ("ListMetadataFormats omits oai_dc", {"formats.oai_dc"}),
    "doctype": ("ListMetadataFormats declares an external entity", {"well-formed", "formats.oai_dc"}),
    "no-post": ("POST answered 405", {"http-post", "http-200"}),
}


class FakePartner:
    """A correct OAI-PMH repository of 8 records (2 deleted), 3 to a page, until `breaks` says otherwise."""

    def __init__(self, breaks: set[str]) -> None:
        self.breaks = breaks
        self.app = Flask(__name__)
        self.app.add_url_rule("/oai", view_func=self.oai, methods=["GET", "POST"])

    def oai(self) -> Response:
        if request.method == "POST" and "no-post" in self.breaks:
            return Response("GET only", status=405, mimetype="text/plain")
        pairs = list(request.args.items(multi=True)) + list(request.form.items(multi=True))
        if any(CONTROL.search(value) for _, value in pairs):  # NUL, controls, undecodable UTF-8
            return self.error("badArgument", None)
        verbs = [value for name, value in pairs if name == "verb"]
        if len(verbs) != 1 or verbs[0] not in ARGS:
            return self.error("badVerb", verbs[0] if verbs and verbs[0] in ARGS else None)
        verb = verbs[0]
        args = [(name, value) for name, value in pairs if name != "verb"]
        names = [name for name, _ in args]
        a = dict(args)
        if any(n not in ARGS[verb] for n in names) or len(set(names)) != len(names):
            return self.error("badArgument", verb)
        if "resumptionToken" in a and len(a) > 1:
            return self.error("badArgument", verb)
        if verb == "Identify":
            return self.identify()
        if verb == "ListMetadataFormats":
            return self.formats(a)
        if verb == "ListSets":
            return self.error("noSetHierarchy", verb, echo=a)
        if verb == "GetRecord":
            return self.get_record(a)
        return self.listing(verb, a)

    # -- building responses

    def envelope(self, body: str, echo: dict[str, str], date: str = RESPONSE_DATE, head: str = "") -> Response:
        attrs = "".join(f" {k}={quoteattr(val)}" for k, val in echo.items())
        xml = (
            f'<?xml version="1.0" encoding="UTF-8"?>\n{head}<OAI-PMH {NS}><responseDate>{date}</responseDate>'
            f"<request{attrs}>{escape(request.base_url)}</request>{body}</OAI-PMH>"
        )
        return Response(xml, content_type="text/xml; charset=utf-8")

    def error(self, code: str, verb: str | None, status: int = 200, echo: dict[str, str] | None = None) -> Response:
        if code in ("badVerb", "badArgument"):  # echo nothing, unless told to break that rule
            attrs = {"verb": verb} if "echo" in self.breaks and verb else {}
        else:
            attrs = {"verb": verb, **(echo or {})} if verb else {}
        resp = self.envelope(f'<error code="{code}">{code}</error>', attrs)
        resp.status_code = status
        return resp

    def header(self, ident: str, verb: str) -> str:
        stamp = STAMPS[ident]
        if "fraction" in self.breaks and ident == IDS[1]:
            stamp = "2020-01-02T00:00:00.5Z"
        if "arabic-digits" in self.breaks and ident == IDS[1]:
            stamp = stamp.translate(ARABIC_INDIC)
        if "getrecord" in self.breaks and verb == "GetRecord":
            stamp = "2021-01-01T00:00:00Z"
        status = ' status="deleted"' if ident in DELETED else ""
        if "space-id" in self.breaks and ident == IDS[7]:
            ident = f"{ident} (copy)"
        return f"<header{status}><identifier>{ident}</identifier><datestamp>{stamp}</datestamp></header>"

    def record(self, ident: str, verb: str) -> str:
        metadata = f"<metadata>{DC.format(ident)}</metadata>"
        if ident in DELETED and "deleted-metadata" not in self.breaks:
            metadata = ""
        return f"<record>{self.header(ident, verb)}{metadata}</record>"

    # -- the verbs

    def identify(self) -> Response:
        base = "http://partner.example.org/oai" if "baseurl" in self.breaks else request.base_url
        email = "webmaster" if "schema" in self.breaks else "admin@partner.example.org"
        earliest = "2020-01-05T00:00:00Z" if "earliest" in self.breaks else "2020-01-01T00:00:00Z"
        return self.envelope(
            f"<Identify><repositoryName>Partner</repositoryName><baseURL>{escape(base)}</baseURL>"
            f"<protocolVersion>2.0</protocolVersion><adminEmail>{email}</adminEmail>"
            f"<earliestDatestamp>{earliest}</earliestDatestamp><deletedRecord>persistent</deletedRecord>"
            f"<granularity>YYYY-MM-DDThh:mm:ssZ</granularity><description>{OAI_ID}</description></Identify>",
            {"verb": "Identify"},
        )

    def formats(self, a: dict[str, str]) -> Response:
        if "identifier" in a and a["identifier"] not in STAMPS:
            return self.error("idDoesNotExist", "ListMetadataFormats", echo=a)
        prefix = "not_dc" if "no-oai_dc" in self.breaks else "oai_dc"
        body = (
            f"<ListMetadataFormats><metadataFormat><metadataPrefix>{prefix}</metadataPrefix>"
            "<schema>http://www.openarchives.org/OAI/2.0/oai_dc.xsd</schema>"
            "<metadataNamespace>http://www.openarchives.org/OAI/2.0/oai_dc/</metadataNamespace>"
            "</metadataFormat></ListMetadataFormats>"
        )
        date = "2024-01-01T14:00:00+02:00" if "offset" in self.breaks else RESPONSE_DATE
        head = ""
        if "doctype" in self.breaks:
            head = '<!DOCTYPE OAI-PMH [<!ENTITY secret SYSTEM "file:///etc/passwd">]>\n'
            body = body.replace("<metadataPrefix>", "<metadataPrefix>&secret;")
        return self.envelope(body, {"verb": "ListMetadataFormats", **a}, date=date, head=head)

    def get_record(self, a: dict[str, str]) -> Response:
        if "identifier" not in a or "metadataPrefix" not in a:
            return self.error("badArgument", "GetRecord")
        if a["metadataPrefix"] != "oai_dc":
            return self.error("cannotDisseminateFormat", "GetRecord", echo=a)
        if a["identifier"] not in STAMPS:
            return self.error("idDoesNotExist", "GetRecord", echo=a)
        return self.envelope(
            f"<GetRecord>{self.record(a['identifier'], 'GetRecord')}</GetRecord>", {"verb": "GetRecord", **a}
        )

    def listing(self, verb: str, a: dict[str, str]) -> Response:
        echo = {"verb": verb, **a}
        tokens = {f"page{k + 1}": k for k in range(1, 4)}
        if "resumptionToken" in a:
            if a["resumptionToken"] not in tokens:
                code = "badArgument" if "bad-token" in self.breaks else "badResumptionToken"
                return self.error(code, verb, echo=a)
            page = tokens[a["resumptionToken"]]
            if page == 3:
                return self.error("noRecordsMatch", verb, echo=a)
            return self.page(verb, page, echo)
        if "metadataPrefix" not in a:
            return self.error("badArgument", verb, status=422 if "http-422" in self.breaks else 200)
        bounds = [a[k] for k in ("from", "until") if k in a]
        if not all(v.parse_any(b) for b in bounds) or len({len(b) for b in bounds}) > 1:
            return self.error("badArgument", verb)
        if len(bounds) == 2 and bounds[0] > bounds[1]:
            return self.error("noRecordsMatch" if "from-until" in self.breaks else "badArgument", verb, echo=a)
        if a["metadataPrefix"] != "oai_dc":
            return self.error("cannotDisseminateFormat", verb, echo=a)
        if bounds:  # a selective list: one page, no token
            start, end = a.get("from", "0000"), a.get("until", "9999")
            chosen = [i for i in IDS if start <= STAMPS[i][: len(start)] and STAMPS[i][: len(end)] <= end]
            if not chosen:
                return self.error("noRecordsMatch", verb, echo=a)
            return self.envelope(self.items(verb, chosen), echo)
        return self.page(verb, 0, echo)

    def items(self, verb: str, chosen: list[str], token: str = "") -> str:
        if verb == "ListRecords":
            return f"<ListRecords>{''.join(self.record(i, verb) for i in chosen)}{token}</ListRecords>"
        return f"<ListIdentifiers>{''.join(self.header(i, verb) for i in chosen)}{token}</ListIdentifiers>"

    def page(self, verb: str, k: int, echo: dict[str, str]) -> Response:
        chosen = IDS[k * PAGE : (k + 1) * PAGE]
        if "repeat" in self.breaks and k == 1:
            chosen = [IDS[3], IDS[1], IDS[5]]
        last = (k + 1) * PAGE >= len(IDS)
        cursor = k * PAGE - (1 if "cursor" in self.breaks and k == 1 else 0)
        size = len(IDS) + (1 if "size" in self.breaks else 0)
        text = "" if last else f"page{k + 2}"
        if last and "empty-page" in self.breaks:
            text = "page4"
        token = f'<resumptionToken cursor="{cursor}" completeListSize="{size}">{text}</resumptionToken>'
        return self.envelope(self.items(verb, chosen, token), echo)


@pytest.fixture
def partner() -> Iterator[Any]:
    """Start a FakePartner with the given breaks; yields a function: breaks -> base URL."""
    servers: list[LiveServer] = []

    def start(*breaks: str) -> str:
        live = LiveServer(FakePartner(set(breaks)).app)
        servers.append(started(live))
        return live.url

    yield start
    for live in servers:
        live.__exit__(None, None, None)


def test_the_fake_partner_is_correct_until_broken(partner: Any) -> None:
    code, lines, output = run_validate(partner())
    assert code == 0, output
    assert failed(lines) == set(), output
    assert lines["sets"] == (v.PASS, "noSetHierarchy: the repository has no sets")
    assert lines["list.unique"][1].startswith("8 identifiers in 3 page(s)")


@pytest.mark.parametrize("name", sorted(BREAKS))
def test_each_broken_rule_is_reported_by_name(partner: Any, name: str) -> None:
    what, expected = BREAKS[name]
    code, lines, output = run_validate(partner(name))
    assert code == 1, f"{what}:\n{output}"
    assert failed(lines) == expected, f"{what}:\n{output}"
    assert output.splitlines()[-1].endswith("FAILED")


def test_a_partner_breaking_many_rules_gets_each_named(partner: Any) -> None:
    breaks = [
        "http-422",
        "fraction",
        "empty-page",
        "repeat",
        "echo",
        "baseurl",
        "schema",
        "offset",
        "deleted-metadata",
        "cursor",
    ]
    code, lines, output = run_validate(partner(*breaks))
    assert code == 1, output
    expected = set().union(*(BREAKS[b][1] for b in breaks))
    assert expected <= failed(lines), output
    reasons = {name: lines[name][1] for name in expected}
    assert "HTTP 422 with an OAI-PMH error body (badArgument)" in reasons["http-200"]
    assert "fractional seconds" in reasons["datestamps"]
    assert "+02:00" in reasons["response-date"] and "offset" in reasons["response-date"]
    assert "led to noRecordsMatch" in reasons["list.no-empty-page"]
    assert "oai:partner.example.org:1 on pages 1 and 2" in reasons["list.unique"]
    assert 'echoes verb="Identify"' in reasons["error.request-attributes"]
    assert "http://partner.example.org/oai" in reasons["identify.baseURL"]
    assert "adminEmail" in reasons["schema-valid"]
    assert "carries <metadata>" in reasons["records.deleted-no-metadata"]
    assert "cursor=2, but 3 items came before it" in reasons["list.cursor"]


# ---- pieces ------------------------------------------------------------------------------------


def test_a_url_that_does_not_answer_fails_fast() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    code, lines, output = run_validate(f"http://127.0.0.1:{port}/oai")
    assert code == 1, output
    assert lines["http-200"][0] == v.FAIL and "no usable HTTP response" in lines["http-200"][1]
    assert failed(lines) == {"http-200", "identify.required"}, output


@pytest.mark.parametrize("url", ["ftp://example.org/oai", "http://127.0.0.1:1/oai?verb=Identify", "oai"])
def test_the_url_must_be_a_base_url(url: str) -> None:
    result = CliRunner().invoke(main, ["validate", url])
    assert result.exit_code == 2
    assert "Invalid value for URL" in result.output


def test_schemas_are_shipped_in_the_package_unchanged() -> None:
    shipped = sorted(p.name for p in v.SCHEMA_DIR.glob("*.xsd"))
    assert shipped == sorted(name for _, name in v.SCHEMA_ORDER)
    for name in shipped:
        ours = hashlib.sha256((v.SCHEMA_DIR / name).read_bytes()).hexdigest()
        assert ours == hashlib.sha256((SCHEMAS / name).read_bytes()).hexdigest(), name
    assert v.load_schema() is v.load_schema()


def test_parsing_refuses_doctypes_and_entities() -> None:
    with pytest.raises(ValueError, match="DOCTYPE"):
        v.parse(b'<!DOCTYPE a [<!ENTITY x SYSTEM "http://127.0.0.1:9/x">]><a>&x;</a>')
    laughs = b'<!DOCTYPE a [<!ENTITY l "lol"><!ENTITY l2 "&l;&l;&l;&l;">]><a>&l2;</a>'
    with pytest.raises(ValueError, match="DOCTYPE"):
        v.parse(laughs)
    assert v.parse(b"<a>ok</a>").text == "ok"


@pytest.mark.parametrize(
    ("text", "granularity", "problem"),
    [
        ("2020-01-02T03:04:05Z", v.SECONDS, None),
        ("2020-01-02", v.DAY, None),
        ("2020-01-02", None, None),
        ("2020-01-02T03:04:05.123Z", v.SECONDS, "fractional seconds"),
        ("2020-01-02T03:04:05+02:00", v.SECONDS, "UTC offset"),
        ("2020-01-02T03:04:05Z", v.DAY, "declared granularity YYYY-MM-DD"),
        ("2020-01-02", v.SECONDS, "declared granularity YYYY-MM-DDThh:mm:ssZ"),
        ("2020-13-02", v.DAY, "is not YYYY-MM-DD"),
        ("yesterday", None, "is not YYYY-MM-DD"),
        ("2020-01-02".translate(ARABIC_INDIC), None, "is not YYYY-MM-DD"),
        ("2020-01-02T03:04:05Z".translate(ARABIC_INDIC), v.SECONDS, "is not YYYY-MM-DD"),
        ("2020-01-02T03:04:05.5Z".translate(ARABIC_INDIC), v.SECONDS, "is not YYYY-MM-DD"),  # not a fraction
    ],
)
def test_date_problems_are_named(text: str, granularity: str | None, problem: str | None) -> None:
    found = v.date_problem(text, granularity)
    assert (found is None) if problem is None else (found is not None and problem in found)


def test_the_validator_holds_dates_to_the_servers_rule(app: Any) -> None:
    """One rule for a datestamp's digits: what the server refuses as `from`, the validator
    refuses in a response (ASCII 0-9 only; Python's \\d matches any script's digits)."""
    client = app.test_client()
    for text in ("2020-01-02".translate(ARABIC_INDIC), "2020-01-02T03:04:05Z".translate(ARABIC_INDIC)):
        r = client.get("/oai", query_string={"verb": "ListIdentifiers", "metadataPrefix": "oai_dc", "from": text})
        assert r.status_code == 200 and b'code="badArgument"' in r.data, text
        assert v.parse_any(text) is None and v.date_problem(text, None) is not None, text


def test_rich_report_prints_the_same_lines() -> None:
    results = [v.Result("http-200", v.PASS, "3 response(s)"), v.Result("list.unique", v.FAIL, "x twice")]
    out = io.StringIO()
    assert v.report(results, out, rich=True) == 1
    text = out.getvalue()
    assert "PASS  http-200     3 response(s)" in text and "FAIL  list.unique  x twice" in text
    assert text.splitlines()[-1].endswith("FAILED")
