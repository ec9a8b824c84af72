"""Arguments: one row per rule of OAI-PMH 2.0 section 3.1 and the verb definitions."""

from __future__ import annotations

import pytest
from conftest import NS, Clock, OAIClient, error_codes, make_record

from oaiserver.protocol import MAX_VALUE
from oaiserver.store import Store
from oaiserver.web import MAX_BODY

LR = "verb=ListRecords&metadataPrefix=oai_dc"

BAD_VERB = [
    ("", "the verb is missing"),
    ("metadataPrefix=oai_dc", "the verb is missing, other arguments given"),
    ("verb=", "the verb is empty"),
    ("verb=Frobnicate", "the verb is not an OAI-PMH verb"),
    ("verb=identify", "verbs are case-sensitive"),
    ("verb=Identify&verb=Identify", "the verb is repeated"),
    ("verb=Identify&verb=ListSets", "two verbs"),
    ("verb=%FF%FE", "the verb is not UTF-8"),
    ("verb=%3Cscript%3E", "markup as a verb"),
]


@pytest.mark.parametrize(("query", "why"), BAD_VERB, ids=[w for _, w in BAD_VERB])
def test_bad_verb(oai: OAIClient, query: str, why: str) -> None:
    doc = oai.get(query)
    assert error_codes(doc) == ["badVerb"], why
    assert doc.find("oai:request", NS).attrib == {}, "badVerb echoes no arguments"


BAD_ARGUMENT = [
    ("verb=Identify&foo=bar", 1, "Identify takes no arguments"),
    ("verb=ListRecords", 1, "metadataPrefix is required"),
    ("verb=ListIdentifiers", 1, "metadataPrefix is required"),
    ("verb=GetRecord&identifier=oai:test.example.org:1", 1, "metadataPrefix is required"),
    ("verb=GetRecord&metadataPrefix=oai_dc", 1, "identifier is required"),
    ("verb=GetRecord", 2, "each missing argument is one error"),
    (f"{LR}&metadataPrefix=oai_dc", 1, "repeated argument"),
    (f"{LR}&from=2020-01-01&from=2020-01-02", 1, "repeated from"),
    (f"{LR}&unknown=1", 1, "unknown argument"),
    (f"{LR}&unknown=1&other=2", 2, "one error per unknown argument"),
    (f"{LR}&identifier=x", 1, "identifier is not an argument of ListRecords"),
    ("verb=ListRecords&resumptionToken=x&metadataPrefix=oai_dc", 1, "resumptionToken is exclusive"),
    ("verb=ListIdentifiers&resumptionToken=x&from=2020-01-01", 1, "resumptionToken is exclusive"),
    ("verb=ListSets&resumptionToken=x&set=a", 1, "set is not an argument of ListSets"),
    ("verb=GetRecord&identifier=x&metadataPrefix=oai_dc&resumptionToken=y", 1, "GetRecord has no token"),
    ("verb=ListMetadataFormats&metadataPrefix=oai_dc", 1, "ListMetadataFormats takes identifier only"),
    (f"{LR}&from=2020-01-01T00:00:00", 1, "a datetime without Z"),
    (f"{LR}&from=2020-01-01T00:00:00.5Z", 1, "fractions of a second"),
    (f"{LR}&from=2020-01-01T00:00:00%2B02:00", 1, "offsets are not UTC"),
    (f"{LR}&from=2020-01-01T00:00Z", 1, "minutes granularity is not allowed"),
    (f"{LR}&until=2020-02-30", 1, "an impossible date"),
    (f"{LR}&until=20200101", 1, "a compact date"),
    (f"{LR}&from=yesterday", 1, "words"),
    (f"{LR}&from=", 1, "an empty from"),
    (f"{LR}&from=2020-01-01&until=2020-01-02T00:00:00Z", 1, "from and until of different granularity"),
    (f"{LR}&from=2020-01-02&until=2020-01-01", 1, "from later than until"),
    (f"{LR}&from=2020-01-01T00:00:01Z&until=2020-01-01T00:00:00Z", 1, "from later than until (seconds)"),
    ("verb=ListRecords&metadataPrefix=", 1, "an empty metadataPrefix"),
    ("verb=ListRecords&metadataPrefix=oai%20dc", 1, "a metadataPrefix with a space"),
    (f"{LR}&set=", 1, "an empty set"),
    (f"{LR}&set=a::b", 1, "an illegal setSpec"),
    (f"{LR}&set=a%20b", 1, "a setSpec with a space"),
    ("verb=GetRecord&metadataPrefix=oai_dc&identifier=a%20b", 1, "an identifier that is not a URI"),
    ("verb=GetRecord&metadataPrefix=oai_dc&identifier=%25zz", 1, "a broken percent escape"),
    (f"{LR}&set=%00", 1, "a control character"),
    (f"{LR}&from=%FF", 1, "bytes that are not UTF-8"),
    ("verb=Identify&%FF=1", 1, "an argument name that is not UTF-8"),
    (f"{LR}&set={'a' * 5000}", 1, "an overlong value"),
]


@pytest.mark.parametrize(("query", "count", "why"), BAD_ARGUMENT, ids=[w for *_, w in BAD_ARGUMENT])
def test_bad_argument(oai: OAIClient, query: str, count: int, why: str) -> None:
    doc = oai.get(query)
    assert error_codes(doc) == ["badArgument"] * count, why
    assert doc.find("oai:request", NS).attrib == {}, "badArgument echoes no arguments"


GOOD = [
    ("verb=Identify", "Identify"),
    ("verb=ListMetadataFormats", "ListMetadataFormats"),
    ("verb=ListSets", "ListSets"),
    (LR, "ListRecords"),
    ("verb=ListIdentifiers&metadataPrefix=oai_dc", "ListIdentifiers"),
    (f"{LR}&from=2000-01-01", "ListRecords"),
    (f"{LR}&from=2000-01-01T00:00:00Z&until=2099-12-31T23:59:59Z", "ListRecords"),
    (f"{LR}&from=2000-01-01&until=2099-12-31", "ListRecords"),
    (f"{LR}&set=a", "ListRecords"),
    ("verb=GetRecord&metadataPrefix=oai_dc&identifier=oai:test.example.org:1", "GetRecord"),
    ("metadataPrefix=oai_dc&verb=ListRecords", "ListRecords"),
]


@pytest.mark.parametrize(("query", "element"), GOOD, ids=[q for q, _ in GOOD])
def test_legal_requests_answer(oai: OAIClient, store: Store, clock: Clock, query: str, element: str) -> None:
    store.write([make_record("1", sets=("a",))])
    clock.tick()
    doc = oai.get(query)
    assert error_codes(doc) == []
    assert doc.find(f"oai:{element}", NS) is not None


def test_request_echoes_arguments_as_sent(oai: OAIClient) -> None:
    """Apart from badVerb/badArgument, <request> carries exactly the arguments, escaped."""
    doc = oai.get("verb=GetRecord&metadataPrefix=oai_dc&identifier=oai:x:a%26b'c")
    assert error_codes(doc) == ["idDoesNotExist"]
    assert doc.find("oai:request", NS).attrib == {
        "verb": "GetRecord",
        "metadataPrefix": "oai_dc",
        "identifier": "oai:x:a&b'c",
    }


def test_request_carries_base_url(oai: OAIClient) -> None:
    assert oai.get("verb=Identify").find("oai:request", NS).text == "http://127.0.0.1:5000/oai"


@pytest.mark.parametrize("query", [q for q, _ in GOOD[:5]] + [b for b, _ in BAD_VERB[:3]])
def test_post_answers_like_get(oai: OAIClient, store: Store, clock: Clock, query: str) -> None:
    """Arguments may be sent by POST as application/x-www-form-urlencoded."""
    store.write([make_record("1", sets=("a",))])
    clock.tick()
    by_get, by_post = oai.get(query), oai.post(query)
    assert error_codes(by_get) == error_codes(by_post)
    assert by_get.find("oai:request", NS).attrib == by_post.find("oai:request", NS).attrib


def test_post_with_other_content_type_is_refused_clearly(oai: OAIClient) -> None:
    response = oai.http.post("/oai", data="verb=Identify", content_type="application/json")
    assert response.status_code == 415
    assert b"application/x-www-form-urlencoded" in response.data


def test_post_with_other_content_type_names_the_content_type(oai: OAIClient) -> None:
    """The refusal of a non-form POST is about its content type, whatever its size."""
    response = oai.http.post("/oai", data="verb=Identify", content_type="application/json")
    message = response.data.decode()
    assert "'application/json'" in message
    assert "bytes" not in message and "at most" not in message


@pytest.mark.parametrize("length", [MAX_BODY + 1, 3 * MAX_BODY])
def test_post_over_the_body_limit_is_bad_argument(oai: OAIClient, length: int) -> None:
    """A form body over 64 KiB is answered as a long GET is: HTTP 200, badArgument, valid."""
    head = "verb=GetRecord&metadataPrefix=oai_dc&identifier=oai:x:"
    doc = oai.post(head + "y" * (length - len(head)))
    assert error_codes(doc) == ["badArgument"]
    assert doc.find("oai:request", NS).attrib == {}
    assert "too long" in doc.findtext("oai:error", namespaces=NS)


@pytest.mark.parametrize("send", ["get", "post"])
def test_a_value_over_the_length_limit_is_called_too_long(oai: OAIClient, send: str) -> None:
    query = "verb=GetRecord&metadataPrefix=oai_dc&identifier=oai:x:" + "y" * MAX_VALUE
    doc = oai.get(query) if send == "get" else oai.post(query)
    assert error_codes(doc) == ["badArgument"]
    message = doc.findtext("oai:error", namespaces=NS)
    assert "too long" in message and "not allowed" not in message


def test_a_value_with_forbidden_characters_is_still_called_so(oai: OAIClient) -> None:
    doc = oai.get("verb=GetRecord&metadataPrefix=oai_dc&identifier=oai:x:%01")
    assert "characters that are not allowed" in doc.findtext("oai:error", namespaces=NS)
