"""The client against a misbehaving partner: retries, Retry-After, timeouts, OAI errors in
4xx bodies, strict parsing, HTML instead of XML, BOMs, repeated tokens, and the error tree."""

from __future__ import annotations

import inspect
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime
from email.utils import format_datetime
from typing import Any

import pytest
import requests
from conftest import make_config, until
from harvestkit import FAST, OAI_NS, FakePartner, error, list_records, oai, record, xml
from sickle import Sickle
from werkzeug.wrappers import Response

from harvester import client as client_module
from harvester import errors as err
from harvester import pipeline
from harvester.client import Answer, Client, Page, settings_for, utc
from oaiserver.config import ConfigError, Partner


class RecordingStop(threading.Event):
    """A stop event whose waits are recorded instead of slept."""

    def __init__(self) -> None:
        super().__init__()
        self.waits: list[float] = []

    def wait(self, timeout: float | None = None) -> bool:
        self.waits.append(float(timeout or 0))
        return self.is_set()


def ok_page(n: int = 1) -> Response:
    return xml(list_records([record(f"oai:p:{i}") for i in range(n)]))


def serve(*responses: Response | Any) -> FakePartner:
    """A partner answering with `responses` in turn (the last one repeats)."""

    def handler(params: dict[str, str], n: int) -> Response:
        answer = responses[min(n, len(responses) - 1)]
        return answer(params) if callable(answer) and not isinstance(answer, Response) else answer

    return FakePartner(handler)


def fetch(partner: FakePartner, stop: threading.Event | None = None, **settings: Any) -> Any:
    with Client(partner.url, replace(FAST, **settings), stop=stop) as client:
        return client.request("ListRecords", metadataPrefix="oai_dc")


# ---- retries, against a scripted transport and a fake clock -----------------------------------


class FakeClock:
    """Time that passes only when the client waits: each wait is recorded, none is slept."""

    def __init__(self, now: float = 1_700_000_000.0) -> None:
        self.now = now
        self.waits: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.waits.append(seconds)
        self.now += seconds


class Script:
    """A transport that answers each request with the next of `answers` (the last repeats); an
    exception among them is raised instead, as a failing connection would."""

    def __init__(self, *answers: Answer | BaseException) -> None:
        self.answers = answers
        self.requests: list[dict[str, str]] = []

    def __call__(self, params: dict[str, str]) -> Answer:
        self.requests.append(params)
        answer = self.answers[min(len(self.requests), len(self.answers)) - 1]
        if isinstance(answer, BaseException):
            raise answer
        return answer


def answer(body: str | bytes, status: int = 200, headers: dict[str, str] | None = None) -> Answer:
    data = body.encode("utf-8") if isinstance(body, str) else body
    return Answer(status, data, {"Content-Type": "text/xml; charset=utf-8", **(headers or {})})


OK = answer(list_records([record("oai:p:0")]))


def scripted(script: Script, clock: FakeClock | None = None, **settings: Any) -> Any:
    """One ListRecords request through `script`, waiting on `clock` (a new one if not given)."""
    clock = clock or FakeClock()
    client = Client(
        "http://partner.example.org/oai", replace(FAST, **settings), send=script, clock=clock, sleep=clock.sleep
    )
    with client:
        return client.request("ListRecords", metadataPrefix="oai_dc")


def test_503_with_retry_after_seconds_is_honoured() -> None:
    clock, script = FakeClock(), Script(answer("busy", 503, {"Retry-After": "7"}), OK)
    page = scripted(script, clock, retry_after_cap=60)
    assert len(page.items) == 1 and len(script.requests) == 2
    assert clock.waits == [7.0], "the wait is what Retry-After asked, not the backoff"
    assert script.requests[0] == {"verb": "ListRecords", "metadataPrefix": "oai_dc"}


def test_retry_after_as_an_http_date() -> None:
    clock = FakeClock()
    when = format_datetime(datetime.fromtimestamp(clock.now + 30, UTC), usegmt=True)
    scripted(Script(answer("busy", 503, {"Retry-After": when}), OK), clock, retry_after_cap=60)
    assert clock.waits == [30.0], "the date is read against the client's clock"


def test_retry_after_in_the_past_is_no_wait() -> None:
    clock = FakeClock()
    when = format_datetime(datetime.fromtimestamp(clock.now - 3600, UTC), usegmt=True)
    scripted(Script(answer("busy", 503, {"Retry-After": when}), OK), clock, retry_after_cap=60)
    assert clock.waits == [0.0]


def test_header_names_are_read_in_any_case() -> None:
    clock = FakeClock()
    scripted(Script(answer("busy", 503, {"retry-after": "7"}), OK), clock, retry_after_cap=60)
    assert clock.waits == [7.0]


def test_retry_after_is_capped() -> None:
    clock = FakeClock()
    scripted(Script(answer("busy", 503, {"Retry-After": "86400"}), OK), clock, retry_after_cap=5)
    assert clock.waits == [5.0]


def test_garbage_retry_after_falls_back_to_backoff() -> None:
    clock = FakeClock()
    scripted(Script(answer("busy", 503, {"Retry-After": "soon"}), OK), clock, backoff=0.5, max_backoff=10)
    assert clock.waits == [0.5]


def test_429_is_retried() -> None:
    script = Script(answer("slow down", 429), OK)
    assert len(scripted(script).items) == 1
    assert len(script.requests) == 2


def test_500s_are_retried_with_exponential_backoff() -> None:
    clock, script = FakeClock(), Script(answer("oops", 500), answer("oops", 502), answer("oops", 500), OK)
    page = scripted(script, clock, retries=3, backoff=1.0, max_backoff=3.0)
    assert len(page.items) == 1
    assert clock.waits == [1.0, 2.0, 3.0], "doubling, capped at max_backoff"


def test_500_forever_fails_after_the_retries() -> None:
    clock, script = FakeClock(), Script(answer("oops", 500))
    with pytest.raises(err.HTTPStatusError, match=r"HTTP 500.*after 2 retries") as info:
        scripted(script, clock, retries=2, backoff=10.0, max_backoff=300.0)
    assert info.value.status == 500
    assert len(script.requests) == 3 and clock.waits == [10.0, 20.0]


def test_a_stop_during_a_retry_wait_ends_the_request() -> None:
    stop = threading.Event()
    script = Script(answer("busy", 503, {"Retry-After": "30"}))
    with (
        Client(
            "http://partner.example.org/oai",
            FAST,
            stop=stop,
            send=script,
            clock=FakeClock(),
            sleep=lambda s: stop.set(),
        ) as client,
        pytest.raises(err.Stopped, match="while waiting to retry"),
    ):
        client.request("Identify")
    assert len(script.requests) == 1


def test_a_request_without_a_readable_response_date_is_dated_by_the_clock_before_it() -> None:
    """Never later than the request: a `from` too early re-harvests, one too late loses."""
    clock = FakeClock(now=1_700_000_000.5)  # 2023-11-14T22:13:20.5Z
    page = scripted(Script(answer(list_records([], response_date="yesterday"))), clock)
    assert page.response_date == "2023-11-14T22:13:19Z"


def test_a_wrong_content_type_is_read_by_the_body_and_logged_once(caplog: pytest.LogCaptureFixture) -> None:
    mislabelled = answer(list_records([record("oai:p:0")]), headers={"Content-Type": "text/html"})
    with Client("http://partner.example.org/oai", FAST, send=Script(mislabelled)) as client:
        pages = [client.request("ListRecords", metadataPrefix="oai_dc") for _ in range(2)]
    assert [len(p.items) for p in pages] == [1, 1]
    said = [r.getMessage() for r in caplog.records if "labels its OAI-PMH XML" in r.getMessage()]
    assert said == [
        "http://partner.example.org/oai: the partner labels its OAI-PMH XML as Content-Type 'text/html'; "
        "read as XML by its content"
    ]


def test_a_slow_response_times_out_and_is_retried() -> None:
    def slow_once(params: dict[str, str], n: int) -> Response:
        if n == 0:
            time.sleep(1.0)
        return ok_page()

    with FakePartner(slow_once) as partner:
        started = time.monotonic()
        page = fetch(partner, timeout=0.2)
    assert len(page.items) == 1 and len(partner.requests) == 2
    assert time.monotonic() - started < 1.0, "the client did not wait for the slow answer"


def test_a_partner_that_is_always_slow_fails_with_a_timeout() -> None:
    def slow(params: dict[str, str], n: int) -> Response:
        time.sleep(0.6)
        return ok_page()

    with FakePartner(slow) as partner, pytest.raises(err.TransportError, match="timed out"):
        fetch(partner, timeout=0.15, retries=1)


def test_a_refused_connection_is_unreachable_and_not_retried() -> None:
    """A partner that is down or misnamed stays so for longer than a retry's wait: one attempt,
    one short line, and the partner's next run tries again."""
    with serve(ok_page()) as partner:
        url = partner.url
    stop = RecordingStop()
    with Client(url, replace(FAST, retries=5), stop=stop) as client, pytest.raises(err.Unreachable) as info:
        client.request("Identify")
    assert str(info.value) == f"{url}: cannot connect (connection refused)"
    assert isinstance(info.value, err.TransportError) and client.requests == 1 and stop.waits == []


def test_a_read_timeout_is_still_retried() -> None:
    def slow(params: dict[str, str], n: int) -> Response:
        time.sleep(0.5 if n == 0 else 0)
        return ok_page()

    with FakePartner(slow) as partner:
        page = fetch(partner, timeout=0.2, retries=1)
    assert len(page.items) == 1 and len(partner.requests) == 2


def _new_connection_error(cause: OSError) -> requests.ConnectionError:
    """What requests raises when urllib3 could not connect, built as urllib3 builds it."""
    import urllib3

    conn = urllib3.connection.HTTPConnection("partner.example.org", 80)
    if isinstance(cause, socket.gaierror):
        inner: Exception = urllib3.exceptions.NameResolutionError("partner.example.org", conn, cause)
    else:
        inner = urllib3.exceptions.NewConnectionError(conn, f"Failed to establish a new connection: {cause}")
    inner.__cause__ = cause
    # urllib3 types `pool` as a ConnectionPool; requests reads only the reason, and a pool is not needed to say it.
    pool_error = urllib3.exceptions.MaxRetryError(None, "/oai", inner)  # type: ignore[arg-type]
    return requests.ConnectionError(pool_error)


@pytest.mark.parametrize(
    ("cause", "said"),
    [
        (ConnectionRefusedError(111, "Connection refused"), "connection refused"),
        (socket.gaierror(-2, "Name or service not known"), "the host name partner.example.org cannot be resolved"),
        (OSError(113, "No route to host"), "no route to host"),
        (OSError(101, "Network is unreachable"), "network is unreachable"),
    ],
)
def test_no_connection_is_said_in_a_few_words(cause: OSError, said: str) -> None:
    clock, script = FakeClock(), Script(_new_connection_error(cause))
    with pytest.raises(err.Unreachable) as info:
        scripted(script, clock, retries=3)
    assert str(info.value) == f"http://partner.example.org/oai: cannot connect ({said})"
    assert len(script.requests) == 1 and clock.waits == []


def test_a_broken_connection_is_retried_and_said_without_urllib3_reprs() -> None:
    import urllib3

    inner = ConnectionResetError(104, "Connection reset by peer")
    clock, script = (
        FakeClock(),
        Script(requests.ConnectionError(urllib3.exceptions.ProtocolError("Connection aborted.", inner))),
    )
    with pytest.raises(err.TransportError) as info:
        scripted(script, clock, retries=2, backoff=1.0, max_backoff=10.0)
    assert type(info.value) is err.TransportError and len(script.requests) == 3 and clock.waits == [1.0, 2.0]
    said = "connection failed (ConnectionResetError: Connection reset by peer) (after 2 retries)"
    assert str(info.value) == f"http://partner.example.org/oai: {said}"


def test_stop_interrupts_a_retry_wait() -> None:
    stop = threading.Event()
    with serve(xml("busy", 503, {"Retry-After": "30"})) as partner:
        threading.Timer(0.2, stop.set).start()
        started = time.monotonic()
        with pytest.raises(err.Stopped):
            fetch(partner, stop, retry_after_cap=30, retries=3)
    assert time.monotonic() - started < 5


# ---- what the body says ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "mimetype", "said"),
    [
        ('{"error": "no such page"}', "application/json", "sent JSON, not OAI-PMH XML"),
        ('\n  [{"id": 1}]', "text/plain", "sent JSON, not OAI-PMH XML"),
        (
            "Service temporarily\nunavailable",
            "text/plain",
            "sent text (it begins 'Service temporarily unavailable'), not",
        ),
    ],
)
def test_a_body_that_is_not_xml_is_named_without_the_lenient_xml_hint(body: str, mimetype: str, said: str) -> None:
    """lenient_xml repairs XML; it cannot read JSON or text, so it is not suggested for them."""
    script = Script(answer(body, headers={"Content-Type": mimetype}))
    with pytest.raises(err.NotXMLResponseError) as info:
        scripted(script, lenient_xml=False)
    assert said in str(info.value) and "is the base_url right?" in str(info.value)
    assert "lenient_xml" not in str(info.value) and len(script.requests) == 1


def test_an_oai_error_in_a_422_body_is_read() -> None:
    script = Script(answer(error("badArgument", "Unknown metadataPrefix oai_xx"), 422))
    with pytest.raises(err.BadArgument, match=r"HTTP 422.*badArgument: Unknown metadataPrefix oai_xx") as info:
        scripted(script)
    assert info.value.code == "badArgument" and info.value.status == 422
    assert len(script.requests) == 1, "an OAI error is an answer: no retry"


def test_no_records_match_is_an_empty_page_even_in_a_4xx_body() -> None:
    for status in (200, 422):
        page = scripted(Script(answer(error("noRecordsMatch"), status)))
        assert page.no_records and page.items == [] and page.token is None


def test_unknown_error_codes_keep_their_code() -> None:
    with pytest.raises(err.PartnerOAIError) as info:
        scripted(Script(answer(error("tooMuchCoffee", "brb"))))
    assert info.value.code == "tooMuchCoffee" and type(info.value) is err.PartnerOAIError


def test_a_4xx_without_oai_body_is_an_http_error() -> None:
    script = Script(answer("not here", 404, {"Content-Type": "text/plain"}))
    with pytest.raises(err.HTTPStatusError, match="404"):
        scripted(script)
    assert len(script.requests) == 1


def test_an_html_page_with_status_200_is_refused_clearly() -> None:
    page = "<!DOCTYPE html>\n<html><head><title>Scheduled maintenance</title></head><body>Back soon</body></html>"
    script = Script(answer(page, headers={"Content-Type": "text/html"}))
    with pytest.raises(err.HTMLResponseError, match="HTML page titled 'Scheduled maintenance' instead of OAI-PMH"):
        scripted(script)


def test_xhtml_is_refused_as_html_too() -> None:
    page = '<?xml version="1.0"?><html xmlns="http://www.w3.org/1999/xhtml"><body>Login</body></html>'
    with pytest.raises(err.HTMLResponseError):
        scripted(Script(answer(page)))


def test_invalid_xml_is_refused_strictly() -> None:
    broken = list_records([record("oai:p:1", "Fish & Chips")])
    with serve(xml(broken)) as partner, pytest.raises(err.XMLSyntaxError, match=r"not well-formed.*lenient_xml"):
        fetch(partner)
    assert len(partner.requests) == 1


def test_the_lenient_quirk_repairs_and_counts() -> None:
    records = [record("oai:p:1", "fine"), "\n" + record("oai:p:2", "Fish & Chips") + "\n", record("oai:p:3", "fine")]
    with serve(xml(list_records(records))) as partner:
        page = fetch(partner, lenient_xml=True)
    assert [i for i in range(len(page.items))] == [0, 1, 2]
    assert page.repaired == {1} and page.repairs


def test_lenient_xml_is_a_partner_quirk() -> None:
    """The client trusts a loaded Partner: a misspelt quirk never gets past the configuration."""
    base = FAST
    assert settings_for(Partner("p", "http://x/oai", quirks={"lenient_xml": True}), base).lenient_xml
    assert not settings_for(Partner("p", "http://x/oai"), base).lenient_xml
    with pytest.raises(ConfigError, match=r"^partners\.p\.quirks: unknown quirk.*lenient_xlm"):
        make_config("sqlite://", partners=[{"name": "p", "base_url": "http://x/oai", "quirks": {"lenient_xlm": True}}])


@pytest.mark.parametrize(
    ("encoding", "bom"), [("utf-8", b"\xef\xbb\xbf"), ("utf-16-le", b"\xff\xfe"), ("utf-16-be", b"\xfe\xff")]
)
def test_a_byte_order_mark_is_fine(encoding: str, bom: bytes) -> None:
    body = list_records([record("oai:p:1", "Zürich")]).replace('encoding="UTF-8"', f'encoding="{encoding[:6].upper()}"')
    with serve(xml(bom + body.encode(encoding))) as partner:
        page = fetch(partner)
    assert page.items[0].findtext(".//{http://purl.org/dc/elements/1.1/}title") == "Zürich"


def test_entities_are_never_resolved(tmp_path: Any) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("TOP-SECRET")
    body = (
        f'<?xml version="1.0"?><!DOCTYPE OAI-PMH [<!ENTITY xxe SYSTEM "{secret.as_uri()}">'
        '<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;">'
        '<!ENTITY c "&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;">'
        '<!ENTITY d "&c;&c;&c;&c;&c;&c;&c;&c;&c;&c;"><!ENTITY e "&d;&d;&d;&d;&d;&d;&d;&d;&d;&d;">]>'
        + list_records([record("oai:p:1", "&xxe; &e;")]).split("\n", 1)[1]
    )
    with serve(xml(body)) as partner, pytest.raises(err.NotOAIResponseError, match="DOCTYPE") as refused:
        fetch(partner)
    assert "TOP-SECRET" not in str(refused.value) and "aaaaaaaaaa" not in str(refused.value)


def test_markup_quoted_in_a_record_is_not_taken_for_a_doctype() -> None:
    """Only the prolog can declare a DOCTYPE: `?>` and `<!DOCTYPE` quoted later in the page
    (here in a CDATA section) do not refuse it."""
    title = "<![CDATA[<?php echo 1; ?><!DOCTYPE html><!-- x -->]]>"
    with serve(xml(list_records([record("oai:p:1", title)]))) as partner:
        page = fetch(partner)
    assert page.items[0].findtext(".//{http://purl.org/dc/elements/1.1/}title") == (
        "<?php echo 1; ?><!DOCTYPE html><!-- x -->"
    )


def test_a_page_quoting_html_after_a_leading_comment_is_not_taken_for_html() -> None:
    body = "<!-- made by the partner -->" + list_records([record("oai:p:1", "<![CDATA[--><html>]]>")]).split("\n", 1)[1]
    with serve(xml(body)) as partner:
        page = fetch(partner)
    assert page.items[0].findtext(".//{http://purl.org/dc/elements/1.1/}title") == "--><html>"


@pytest.mark.parametrize(
    ("prolog", "declares"),
    [
        (b'\xef\xbb\xbf<?xml version="1.0"?>\n<!-- a -->\n<?pi x?>\n<!DOCTYPE OAI-PMH>', True),
        (b"  \n<!--a--><!--b-->\n<!DOCTYPE OAI-PMH>", True),
        (b'<?xml version="1.0"?><OAI-PMH><x><?pi ?></x><!DOCTYPE x>', False),
        (b'<?xml version="1.0"?><OAI-PMH><![CDATA[ ?> <!DOCTYPE x> ]]></OAI-PMH>', False),
    ],
)
def test_only_the_prolog_can_declare_a_doctype(prolog: bytes, declares: bool) -> None:
    """The byte check that refuses a DOCTYPE unread (before lxml sees the page)."""
    assert client_module.declares_doctype(prolog) is declares


@pytest.mark.parametrize(
    ("start", "is_html"),
    [
        (b"<!-- c -->\n<html>", True),
        (b"\xef\xbb\xbf <!DOCTYPE html><html>", True),
        (b'<!-- c --><OAI-PMH a="b"><![CDATA[--><html>]]></OAI-PMH>', False),
    ],
)
def test_only_the_start_of_a_page_marks_it_as_html(start: bytes, is_html: bool) -> None:
    assert bool(client_module._HTML_START.match(start)) is is_html


def test_an_oai_pmh_root_without_its_namespace_is_refused() -> None:
    body = '<?xml version="1.0"?><OAI-PMH><responseDate>2024-01-01T00:00:00Z</responseDate></OAI-PMH>'
    with serve(xml(body)) as partner, pytest.raises(err.NotOAIResponseError, match=r"not in the OAI-PMH 2.0 namespace"):
        fetch(partner)


def test_a_response_without_the_verb_element_is_refused() -> None:
    with (
        serve(xml(oai(""))) as partner,
        pytest.raises(err.NotOAIResponseError, match="neither <ListRecords> nor <error>"),
    ):
        fetch(partner)


def test_response_dates_are_read_in_utc() -> None:
    with serve(xml(list_records([], response_date="2023-03-30T16:02:12+05:45"))) as partner:
        assert fetch(partner).response_date == "2023-03-30T10:17:12Z"
    assert utc("2024-02-30") is None and utc("yesterday") is None
    assert utc("2024-01-01") == ("2024-01-01", "YYYY-MM-DD")
    assert utc("2024-01-01T10:00:00.123Z") == ("2024-01-01T10:00:00Z", "YYYY-MM-DDThh:mm:ssZ")
    assert utc("2024-02-29T23:59:59Z") == ("2024-02-29T23:59:59Z", "YYYY-MM-DDThh:mm:ssZ")
    assert utc("2023-02-29T00:00:00Z") is None and utc("2024-01-01T24:00:00Z") is None
    # Years before 1000 keep four digits, as the datestamp syntax requires.
    assert utc("0001-01-01T00:00:00Z") == ("0001-01-01T00:00:00Z", "YYYY-MM-DDThh:mm:ssZ")
    assert utc("0999-01-01T00:30:00+01:00") == ("0998-12-31T23:30:00Z", "YYYY-MM-DDThh:mm:ssZ")


# ---- lists -----------------------------------------------------------------------------------


def test_tokens_are_followed_to_the_end() -> None:
    def handler(params: dict[str, str], n: int) -> Response:
        token = params.get("resumptionToken")
        if token is None:
            return xml(list_records([record("oai:p:1")], "a"))
        if token == "a":
            return xml(list_records([record("oai:p:2")], "b"))
        return xml(list_records([record("oai:p:3")], ""))

    with FakePartner(handler) as partner, Client(partner.url, FAST) as client:
        pages = list(client.pages("ListRecords", metadataPrefix="oai_dc"))
    assert [len(p.items) for p in pages] == [1, 1, 1] and pages[-1].token is None
    assert partner.requests[1] == {"verb": "ListRecords", "resumptionToken": "a"}


def test_a_repeated_token_ends_the_list() -> None:
    following = {None: "a", "a": "b", "b": "a"}  # a, b, a again…

    def handler(params: dict[str, str], n: int) -> Response:
        token = following[params.get("resumptionToken")] if n < 20 else None  # …until the 20th page
        return xml(list_records([record(f"oai:p:{n}")], token))

    with FakePartner(handler) as partner, Client(partner.url, FAST) as client:
        seen = []
        with pytest.raises(err.RepeatedTokenError, match="came back a second time"):
            for page in client.pages("ListRecords", metadataPrefix="oai_dc"):
                seen.append(page)
    assert len(partner.requests) == 3 and len(seen) == 3


# ---- the error tree --------------------------------------------------------------------------


def _request_exceptions() -> list[type[BaseException]]:
    return [
        cls
        for _, cls in inspect.getmembers(requests.exceptions, inspect.isclass)
        if issubclass(cls, requests.RequestException)
    ]


@pytest.mark.parametrize("exc_type", _request_exceptions(), ids=lambda c: c.__name__)
def test_every_requests_exception_is_mapped(exc_type: type[BaseException]) -> None:
    try:
        exc = exc_type("boom")
    except TypeError:  # JSONDecodeError wants (msg, doc, pos)
        exc = exc_type("boom", "", 0)
    with pytest.raises(err.TransportError, match="boom"):
        scripted(Script(exc), retries=1)


def test_every_oai_error_code_has_a_class() -> None:
    """The protocol's one list of codes (records.ERROR_CODES): every code but noRecordsMatch (an
    empty page to a harvester) has its class here, and the validator expects only codes in it."""
    from oaiserver.records import ERROR_CODES
    from oaiserver.validate import ERROR_CASES

    assert set(ERROR_CODES) - {"noRecordsMatch"} == set(err.OAI_ERRORS)
    assert {case.code for case in ERROR_CASES} <= set(ERROR_CODES)
    for code, cls in err.OAI_ERRORS.items():
        made = err.partner_error([(code, "m")], 200)
        assert type(made) is cls and made.code == code and isinstance(made, err.HarvestError)


def test_a_stop_during_the_page_asked_for_ahead_ends_the_list_with_stopped() -> None:
    """The list is not complete, so it must not look complete: Stopped, not a quiet end."""
    stop = threading.Event()

    def answer(params: dict[str, str], n: int) -> Response:
        if params.get("resumptionToken") == "t2":
            stop.set()
        return xml(list_records([record(f"oai:p:{n}")], f"t{n + 1}"))

    with FakePartner(answer) as partner, Client(partner.url, FAST, stop=stop) as client:
        pages = []
        with pytest.raises(err.Stopped):
            for page in ahead_of(client):
                pages.append(page.token)
                # The page ahead is asked for meanwhile (the one for t2 sets stop as it is answered).
                until(lambda: len(partner.requests) > len(pages) or stop.is_set(), "the page ahead")
    assert pages[:2] == ["t1", "t2"] and len(pages) <= 3


@pytest.mark.parametrize("ahead", [1, 2])
def test_pages_are_asked_for_ahead_as_far_as_asked_and_no_further(ahead: int) -> None:
    def answer(params: dict[str, str], n: int) -> Response:
        return xml(list_records([record(f"oai:p:{n}")], f"t{n + 1}" if n < 9 else None))

    with FakePartner(answer) as partner, Client(partner.url, FAST) as client:
        tokens: list[str | None] = []
        for page in ahead_of(client, ahead):
            if not tokens:
                time.sleep(0.5)  # time enough for any number of pages to be asked for
                assert len(partner.requests) == 1 + ahead, "the page in hand, and `ahead` more"
            tokens.append(page.token)
    assert tokens == [f"t{n}" for n in range(1, 10)] + [None]


def test_the_page_asked_for_ahead_is_abandoned_when_its_list_is(caplog: pytest.LogCaptureFixture) -> None:
    """A caller that leaves the list (an error, a lost lease) leaves no thread retrying behind."""

    def answer(params: dict[str, str], n: int) -> Response:
        if "resumptionToken" in params:
            return xml("busy", 503)
        return xml(list_records([record("oai:p:1")], "t1"))

    settings = replace(FAST, retries=20, backoff=0.2, max_backoff=0.2)
    with FakePartner(answer) as partner, Client(partner.url, settings) as client:
        for _page in ahead_of(client):
            break  # the caller gives up on the list after its first page
        time.sleep(0.3)
        asked = len(partner.requests)
        time.sleep(1.0)
        assert len(partner.requests) == asked <= 3


def ahead_of(client: Client, ahead: int = 1) -> Iterator[Page]:
    """A list's pages asked for ahead on a thread, as a harvest asks for them (harvester.pipeline)."""
    return pipeline.fetched_ahead(
        lambda cancel: client.pages("ListRecords", cancel=cancel, metadataPrefix="oai_dc"),
        ahead=ahead,
        stop=client.stop,
        weight=lambda page: page.weight,
    )


# ---- what Sickle does, and what the client does itself (client.py's docstring) -----------------
# These pin Sickle's behaviour that the client works around: when a release mends one, its test
# fails, and the work-around in client.py can go.


def test_sickle_harvest_loses_an_oai_error_in_a_4xx_body() -> None:
    """Sickle raises HTTPError before reading the body: the client reads it itself."""
    body = xml(error("badArgument", "Unknown metadataPrefix oai_xx"), 422)
    with serve(body) as partner:
        with pytest.raises(requests.HTTPError, match="422"):
            Sickle(partner.url, timeout=2).harvest(verb="ListRecords", metadataPrefix="oai_xx")
        with pytest.raises(err.BadArgument):
            fetch(partner)


def test_sickle_oai_response_repairs_a_cut_page_into_a_shorter_list_silently() -> None:
    """OAIResponse.xml parses with recover=True, anew on each access: a page cut before its
    second record reads as one record and no token, the end of the list. The client refuses it."""
    whole = list_records([record("oai:p:1"), record("oai:p:2")], "next")
    cut = whole[: whole.index("<record>", whole.index("oai:p:1"))]  # the connection closed between records
    with serve(xml(cut)) as partner:
        response = Sickle(partner.url, timeout=2).harvest(verb="ListRecords", metadataPrefix="oai_dc")
        tree = response.xml
        assert len(tree.findall(f".//{{{OAI_NS}}}record")) == 1 and tree.find(f".//{{{OAI_NS}}}resumptionToken") is None
        assert response.xml is not tree, "parsed again on every access"
        with pytest.raises(err.TransportError, match="cut short"):
            fetch(partner, retries=0)


def test_the_client_sends_to_its_sickle_objects_endpoint_with_its_settings() -> None:
    """The request settings live in a public Sickle object; the HTTP transport sends by them."""
    with serve(ok_page()) as first, serve(ok_page(2)) as second, Client(first.url, FAST) as client:
        assert client.http is not None, "no transport given: the client speaks HTTP"
        sickle = client.http.sickle
        assert type(sickle) is Sickle and sickle.endpoint == first.url
        assert sickle.http_method == "GET" and sickle.request_args == {"timeout": FAST.timeout}
        client.http.sickle = Sickle(second.url, timeout=FAST.timeout)
        page = client.request("ListRecords", metadataPrefix="oai_dc")
    assert len(page.items) == 2 and first.requests == []
    assert second.requests == [{"verb": "ListRecords", "metadataPrefix": "oai_dc"}]


def test_a_client_given_a_transport_opens_no_connection() -> None:
    with Client("http://partner.example.org/oai", FAST, send=Script(OK)) as client:
        assert client.http is None and len(client.request("ListRecords", metadataPrefix="oai_dc").items) == 1
    assert client.requests == 1
