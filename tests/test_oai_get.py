"""GET /oai is answered without Flask's request machinery (web.OaiGet): the same response as
the `oai` view gives a POST of the same arguments, its log line and metrics, and Flask's
answer whenever it fails."""

from __future__ import annotations

import gzip
import logging
import re
from typing import Any

import pytest
import sqlalchemy as sa
from conftest import Clock, make_record, validate

from oaiserver.store import Store

QUERIES = [
    "verb=Identify",
    "verb=GetRecord&metadataPrefix=oai_dc&identifier=oai:test.example.org:1",
    "verb=ListRecords&metadataPrefix=oai_dc",
    "verb=ListIdentifiers&metadataPrefix=oai_dc&set=nonsense",
    "verb=Nonsense&x=%3Cscript%3E",
]
CLIENTS = [
    {},  # python-requests and most harvesters
    {"Accept-Encoding": "gzip;q=0"},  # refuses gzip
    {"Accept-Encoding": "*"},
    {"Sec-Fetch-Dest": "document", "Accept-Encoding": "gzip, deflate, br"},  # a browser's tab
]


@pytest.fixture
def flask_calls(app: Any, store: Store, clock: Clock) -> list[str]:
    """The methods of the requests that went through Flask's request machinery."""
    store.write([make_record(str(i), f"Title {i} " + "words " * 40) for i in range(1, 4)])
    clock.tick()
    calls: list[str] = []
    app.before_request(lambda: calls.append(__import__("flask").request.method))
    return calls


def body_of(response: Any) -> bytes:
    """The document, its responseDate (the clock's, a second apart perhaps) left out."""
    data: bytes = response.data
    assert response.headers["Content-Length"] == str(len(data))
    document = gzip.decompress(data) if response.headers.get("Content-Encoding") == "gzip" else data
    return re.sub(rb"<responseDate>[^<]*</responseDate>", b"", document)


def headers_of(response: Any) -> list[tuple[str, str]]:
    return sorted((k, v) for k, v in response.headers.items() if k != "Content-Length")


@pytest.mark.parametrize("headers", CLIENTS)
@pytest.mark.parametrize("query", QUERIES)
def test_a_get_is_answered_as_the_view_answers_a_post(
    app: Any, flask_calls: list[str], query: str, headers: dict[str, str]
) -> None:
    """The same status, headers and document; only the POST passes through Flask."""
    client = app.test_client()
    got = client.get(f"/oai?{query}", headers=headers)
    posted = client.post("/oai", data=query, content_type="application/x-www-form-urlencoded", headers=headers)
    assert got.status_code == posted.status_code == 200
    validate(gzip.decompress(got.data) if got.headers.get("Content-Encoding") else got.data)
    assert body_of(got) == body_of(posted)
    assert headers_of(got) == headers_of(posted)
    assert flask_calls == ["POST"]


def served_count(metrics: str, name: str) -> float:
    return next((float(line.split()[-1]) for line in metrics.splitlines() if line.startswith(name + " ")), 0.0)


def test_a_get_logs_one_line_and_counts(app: Any, flask_calls: list[str], caplog: pytest.LogCaptureFixture) -> None:
    client = app.test_client()
    served = 'oai_records_served_total{verb="GetRecord"}'
    before = served_count(client.get("/metrics").data.decode(), served)
    with caplog.at_level(logging.INFO, logger="oaiserver"):
        client.get(
            "/oai?verb=GetRecord&metadataPrefix=oai_dc&identifier=oai:test.example.org:2",
            environ_base={"REMOTE_ADDR": "192.0.2.7", "HTTP_USER_AGENT": 'evil"\nua'},
        )
    lines = [r.getMessage() for r in caplog.records if r.name == "oaiserver.web"]
    assert len(lines) == 1, lines
    assert lines[0].startswith("oai client=192.0.2.7 verb=GetRecord args=metadataPrefix=oai_dc&identifier=")
    assert "status=200 errors=- records=1 ms=" in lines[0] and lines[0].endswith('ua="evil\\"\\nua"')
    assert served_count(client.get("/metrics").data.decode(), served) == before + 1
    assert flask_calls == ["GET", "GET"]  # the scrapes


def test_a_failing_get_is_answered_by_flask(
    app: Any, store: Store, flask_calls: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A store that fails answers 503 with Retry-After, as on every path (and is logged once)."""

    def down(*_: object, **__: object) -> None:
        raise sa.exc.OperationalError("SELECT 1", {}, Exception("connection refused"))

    monkeypatch.setattr(store, "freeze", down)
    response = app.test_client().get("/oai?verb=ListRecords&metadataPrefix=oai_dc")
    assert response.status_code == 503 and response.headers["Retry-After"].isdigit()
    assert flask_calls == ["GET"]
