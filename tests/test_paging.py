"""Resumption tokens: flow control as section 3.5 of the specification describes it."""

from __future__ import annotations

import re
import time
from typing import Any

import pytest
from conftest import (
    NS,
    Clock,
    OAIClient,
    error_codes,
    identifiers,
    make_config,
    make_record,
    the_token,
    token_of,
    validate,
)

from oaiserver import create_app
from oaiserver.records import format_datestamp
from oaiserver.store import Store

PAGE = 10  # BASE_CONFIG's page size


def harvest(oai: OAIClient, verb: str = "ListIdentifiers", **args: str) -> tuple[list[str], list[Any]]:
    """Follow a list to its end; return the identifiers and every page's token element."""
    doc = oai(verb=verb, metadataPrefix="oai_dc", **args)
    seen, tokens = identifiers(doc), [token_of(doc)]
    while tokens[-1] is not None and tokens[-1].text:
        doc = oai(verb=verb, resumptionToken=tokens[-1].text)
        assert error_codes(doc) == []
        seen += identifiers(doc)
        tokens.append(token_of(doc))
    return seen, tokens


def fill(store: Store, clock: Clock, n: int) -> list[str]:
    store.write([make_record(f"{i:04d}") for i in range(n)])
    clock.tick()
    return [f"oai:test.example.org:{i:04d}" for i in range(n)]


@pytest.mark.parametrize("n", [1, PAGE - 1, PAGE, PAGE + 1, 2 * PAGE, 3 * PAGE + 7])
@pytest.mark.parametrize("verb", ["ListIdentifiers", "ListRecords"])
def test_paging_gives_every_record_once(oai: OAIClient, store: Store, clock: Clock, n: int, verb: str) -> None:
    expected = fill(store, clock, n)
    seen, tokens = harvest(oai, verb)
    assert seen == expected
    pages = -(-n // PAGE)
    if pages == 1:
        assert tokens == [None], "a complete list in one response carries no token"
        return
    assert len(tokens) == pages, "look-ahead: no token ever leads to an empty page"
    assert [int(t.get("cursor")) for t in tokens] == [PAGE * i for i in range(pages)]
    assert {int(t.get("completeListSize")) for t in tokens} == {n}
    assert all(t.text for t in tokens[:-1])
    last = tokens[-1]
    assert last.text is None, "the last page carries an empty resumptionToken"
    assert last.get("expirationDate") is None


def test_token_has_expiration_date(oai: OAIClient, store: Store, clock: Clock) -> None:
    fill(store, clock, PAGE + 1)
    doc = oai(verb="ListRecords", metadataPrefix="oai_dc")
    expires = the_token(doc).get("expirationDate")
    response = doc.findtext("oai:responseDate", namespaces=NS)
    assert expires > response


def test_same_token_same_page(oai: OAIClient, store: Store, clock: Clock) -> None:
    fill(store, clock, 3 * PAGE)
    token = the_token(oai(verb="ListRecords", metadataPrefix="oai_dc")).text
    first, again = oai(verb="ListRecords", resumptionToken=token), oai(verb="ListRecords", resumptionToken=token)
    assert identifiers(first) == identifiers(again) and len(identifiers(first)) == PAGE
    assert the_token(first).get("cursor") == the_token(again).get("cursor") == str(PAGE)


def test_token_survives_a_restart(store_url: str, store: Store, clock: Clock) -> None:
    """Tokens are stateless: a new app over the same store (another worker) accepts them."""
    fill(store, clock, 2 * PAGE + 1)
    cfg = make_config(store_url)
    other = Store(store_url)
    try:
        one, two = create_app(cfg, store=store).test_client(), create_app(cfg, store=other).test_client()
        token = the_token(validate(one.get("/oai?verb=ListIdentifiers&metadataPrefix=oai_dc").data)).text
        doc = validate(two.get(f"/oai?verb=ListIdentifiers&resumptionToken={token}").data)
    finally:
        other.close()
    assert len(identifiers(doc)) == PAGE


@pytest.mark.parametrize(
    "mangle",
    [
        lambda t: "garbage",
        lambda t: t[:-2] + ("AA" if not t.endswith("AA") else "BB"),
        lambda t: t[:20],
        lambda t: t + "x",
        lambda t: "",
    ],
    ids=["garbage", "tampered", "truncated", "extended", "empty"],
)
def test_bad_resumption_token(oai: OAIClient, store: Store, clock: Clock, mangle: Any) -> None:
    fill(store, clock, 2 * PAGE)
    token = the_token(oai(verb="ListRecords", metadataPrefix="oai_dc")).text
    doc = oai(verb="ListRecords", resumptionToken=mangle(token))
    assert error_codes(doc) in (["badResumptionToken"], ["badArgument"])
    if mangle(token):
        assert error_codes(doc) == ["badResumptionToken"]
        assert doc.find("oai:request", NS).get("resumptionToken") == mangle(token)


def test_token_of_another_verb(oai: OAIClient, store: Store, clock: Clock) -> None:
    fill(store, clock, 2 * PAGE)
    token = the_token(oai(verb="ListRecords", metadataPrefix="oai_dc")).text
    assert error_codes(oai(verb="ListIdentifiers", resumptionToken=token)) == ["badResumptionToken"]
    assert error_codes(oai(verb="ListSets", resumptionToken=token)) == ["badResumptionToken"]


def test_expired_token(store_url: str, store: Store, clock: Clock, monkeypatch: pytest.MonkeyPatch) -> None:
    fill(store, clock, 2 * PAGE)
    client = create_app(make_config(store_url, server__token_lifetime=60), store=store).test_client()
    token = the_token(validate(client.get("/oai?verb=ListRecords&metadataPrefix=oai_dc").data)).text
    import oaiserver.tokens

    real = time.time
    monkeypatch.setattr(oaiserver.tokens.time, "time", lambda: real() + 61)
    doc = validate(client.get(f"/oai?verb=ListRecords&resumptionToken={token}").data)
    assert error_codes(doc) == ["badResumptionToken"]
    assert "expired" in doc.findtext("oai:error", namespaces=NS)


def test_token_from_another_secret(store_url: str, store: Store, clock: Clock) -> None:
    fill(store, clock, 2 * PAGE)
    one = create_app(make_config(store_url, server__secret="one"), store=store).test_client()
    two = create_app(make_config(store_url, server__secret="two"), store=store).test_client()
    token = the_token(validate(one.get("/oai?verb=ListRecords&metadataPrefix=oai_dc").data)).text
    assert error_codes(validate(two.get(f"/oai?verb=ListRecords&resumptionToken={token}").data)) == [
        "badResumptionToken"
    ]


def test_page_size_is_configurable(store_url: str, store: Store, clock: Clock) -> None:
    fill(store, clock, 7)
    client = create_app(make_config(store_url, server__page_size=3), store=store).test_client()
    doc = validate(client.get("/oai?verb=ListIdentifiers&metadataPrefix=oai_dc").data)
    assert len(identifiers(doc)) == 3 and the_token(doc).get("completeListSize") == "7"


def test_list_sets_pages(store_url: str, store: Store) -> None:
    sets = [{"spec": f"s{i:02d}", "name": f"Set {i}"} for i in range(25)]
    client = create_app(make_config(store_url, sets=sets, server__sets_page_size=10), store=store).test_client()
    doc = validate(client.get("/oai?verb=ListSets").data)
    specs = [s.text for s in doc.iterfind(".//oai:setSpec", NS)]
    cursors = []
    while (token := token_of(doc)) is not None:
        cursors.append(token.get("cursor"))
        if not token.text:
            break
        doc = validate(client.get(f"/oai?verb=ListSets&resumptionToken={token.text}").data)
        specs += [s.text for s in doc.iterfind(".//oai:setSpec", NS)]
    assert specs == [s["spec"] for s in sets]
    assert cursors == ["0", "10", "20"]


def test_selection_is_kept_across_pages(oai: OAIClient, store: Store, clock: Clock) -> None:
    store.write([make_record(f"a{i:03d}", sets=("a",)) for i in range(25)])
    store.write([make_record(f"c{i:03d}", sets=("c",)) for i in range(25)])
    clock.tick()
    seen, _ = harvest(oai, "ListRecords", set="a")
    assert seen == [f"oai:test.example.org:a{i:03d}" for i in range(25)]


# ---- writes while a list is being paged -------------------------------------------------------


def test_writes_during_paging_neither_repeat_nor_lose(oai: OAIClient, store: Store, clock: Clock) -> None:
    """No identifier is listed twice in one list, and a harvester that uses the first
    responseDate as its next `from` misses no change."""
    before = fill(store, clock, 5 * PAGE)
    first = oai(verb="ListIdentifiers", metadataPrefix="oai_dc")
    response_date = first.findtext("oai:responseDate", namespaces=NS)
    seen = identifiers(first)
    token = the_token(first).text
    # While the list is being paged, in the same second as the first response and later:
    store.write([make_record("0000", "changed, already listed")])  # moves behind the list
    store.write([make_record("0045", "changed, not yet listed")])  # moves out of the window
    store.write([make_record("new-1")])
    store.delete(["oai:test.example.org:0030"])
    clock.tick()
    store.write([make_record("new-2")])
    while token:
        doc = oai(verb="ListIdentifiers", resumptionToken=token)
        seen += identifiers(doc)
        token = (element.text if (element := token_of(doc)) is not None else None) or ""
    clock.tick()
    assert len(seen) == len(set(seen)), "an identifier was listed twice"
    changed = {f"oai:test.example.org:{x}" for x in ("0000", "0045", "0030", "new-1", "new-2")}
    # 0000 was listed before it changed; 0045 and 0030 changed before their page was served.
    assert set(seen) == set(before) - {"oai:test.example.org:0045", "oai:test.example.org:0030"}
    incremental, _ = harvest(oai, "ListIdentifiers", **{"from": response_date})
    assert changed <= set(incremental), "the next incremental harvest must bring every change"
    assert set(seen) | set(incremental) == store.identifiers()


def test_until_is_frozen_at_the_first_request(oai: OAIClient, store: Store, clock: Clock) -> None:
    fill(store, clock, PAGE + 1)
    first = oai(verb="ListIdentifiers", metadataPrefix="oai_dc")
    assert first.findtext("oai:responseDate", namespaces=NS) == format_datestamp(clock.now)
    store.write([make_record("zzzz")])  # sorts last, stamped now
    clock.tick(10)
    rest = oai(verb="ListIdentifiers", resumptionToken=the_token(first).text)
    assert "oai:test.example.org:zzzz" not in identifiers(rest)


def test_people_see_at_most_50_records_a_page_of_the_same_list(store_url: str, store: Store, clock: Clock) -> None:
    """Harvesters get `page_size` records a page; the HTML view of the same list shows at most
    50, and its next-page token (a key and a cursor) is one /oai accepts too."""
    fill(store, clock, 120)
    client = create_app(make_config(store_url, server__page_size=100), store=store).test_client()
    doc = validate(client.get("/oai?verb=ListIdentifiers&metadataPrefix=oai_dc").data)
    assert len(identifiers(doc)) == 100
    page = client.get("/oai/view?verb=ListIdentifiers&metadataPrefix=oai_dc").get_data(as_text=True)
    assert "records 1–50 of 120" in page
    token = re.search(r"resumptionToken=([^\"&]+)", page)
    assert token is not None
    rest = validate(client.get(f"/oai?verb=ListIdentifiers&resumptionToken={token.group(1)}").data)
    assert identifiers(rest) == [f"oai:test.example.org:{i:04d}" for i in range(50, 120)]


@pytest.mark.parametrize(
    "window",
    [{}, {"from": "2023-11-14T22:15:00Z"}, {"until": "2023-11-14T22:20:00Z"}, {"set": "a"}],
    ids=["all", "from", "until", "set"],
)
def test_complete_list_size_counts_what_the_list_holds(
    store_url: str, store: Store, clock: Clock, window: dict[str, str]
) -> None:
    """completeListSize is what paging the list gives: deleted records in, records without the
    format out, the date window and set applied."""
    for i in range(30):
        store.write([make_record(f"{i:04d}", sets=("a",) if i % 3 == 0 else ())])
        clock.tick(60)
    store.delete([f"oai:test.example.org:{i:04d}" for i in range(0, 30, 7)])
    bare = make_record("no-format")
    bare.metadata = {}
    store.write([bare])
    clock.tick()
    client = create_app(make_config(store_url, server__page_size=4), store=store).test_client()

    def oai(**args: str) -> Any:
        return validate(client.get("/oai", query_string=args).data)

    listed: list[str] = []
    sizes = set()
    doc = oai(verb="ListIdentifiers", metadataPrefix="oai_dc", **window)
    while True:
        listed += identifiers(doc)
        token = token_of(doc)
        if token is None or not token.text:
            break
        sizes.add(int(token.get("completeListSize")))
        doc = oai(verb="ListIdentifiers", resumptionToken=token.text)
    assert "oai:test.example.org:no-format" not in listed
    assert len(listed) > 4 and (len(listed) < 31 or window == {})
    assert sizes == {len(listed)}


# ---- tokens never lead to an empty page; forged and old tokens ---------------------------------


def test_a_token_never_leads_to_an_empty_page(store_url: str, store: Store, clock: Clock) -> None:
    """The issue's case: a list from a date holds 236 records at 100 a page; the 136 not on
    page 1 change before the token is sent. The token's page is not empty: it holds the record
    that was next when the token was issued, as it is now (OAI-PMH 3.5.1 lets a resumed list
    carry records whose datestamp changed), and ends the list."""
    clock.tick(86400)
    day = format_datestamp(clock.now)[:10]
    ids = fill(store, clock, 236)
    client = create_app(make_config(store_url, server__page_size=100), store=store).test_client()
    first = validate(client.get(f"/oai?verb=ListRecords&metadataPrefix=oai_dc&from={day}").data)
    assert identifiers(first) == ids[:100] and the_token(first).get("completeListSize") == "236"
    store.write([make_record(i.rsplit(":", 1)[1], "changed") for i in ids[100:]])
    clock.tick()
    doc = validate(client.get(f"/oai?verb=ListRecords&resumptionToken={the_token(first).text}").data)
    assert error_codes(doc) == []
    assert identifiers(doc) == [ids[100]]
    assert doc.findtext(".//dc:title", namespaces=NS) == "changed", "the record as it is now"
    last = token_of(doc)
    assert last is not None and last.text is None, "the list ends with an empty resumptionToken"
    assert (last.get("cursor"), last.get("completeListSize")) == ("100", "236")


@pytest.mark.parametrize("verb", ["ListIdentifiers", "ListRecords"])
def test_records_that_leave_the_window_end_the_list_cleanly(
    oai: OAIClient, store: Store, clock: Clock, verb: str
) -> None:
    fill(store, clock, PAGE + 1)
    token = the_token(oai(verb=verb, metadataPrefix="oai_dc")).text
    store.write([make_record(f"{PAGE:04d}", "changed")])  # the only record left on page 2
    clock.tick()
    doc = oai(verb=verb, resumptionToken=token)
    assert error_codes(doc) == [] and identifiers(doc) == [f"oai:test.example.org:{PAGE:04d}"]
    assert the_token(doc).text is None


def test_a_deleted_record_ends_the_list_as_a_tombstone(oai: OAIClient, store: Store, clock: Clock) -> None:
    fill(store, clock, PAGE + 1)
    token = the_token(oai(verb="ListRecords", metadataPrefix="oai_dc")).text
    store.delete([f"oai:test.example.org:{PAGE:04d}"])
    clock.tick()
    doc = oai(verb="ListRecords", resumptionToken=token)
    assert error_codes(doc) == [] and identifiers(doc) == [f"oai:test.example.org:{PAGE:04d}"]
    assert doc.find(".//oai:header", NS).get("status") == "deleted"


def test_a_record_that_left_the_set_is_not_served_in_the_set(oai: OAIClient, store: Store, clock: Clock) -> None:
    """When what was next has left the set too, nothing of the list remains to serve: the token
    is refused, so the harvester starts the list again (never an empty page or noRecordsMatch)."""
    store.write([make_record(f"{i:04d}", sets=("a",)) for i in range(PAGE + 1)])
    clock.tick()
    token = the_token(oai(verb="ListRecords", metadataPrefix="oai_dc", set="a")).text
    store.write([make_record(f"{PAGE:04d}", "moved", sets=("c",))])
    clock.tick()
    doc = oai(verb="ListRecords", resumptionToken=token)
    assert error_codes(doc) == ["badResumptionToken"]
    assert "start the list again" in doc.findtext("oai:error", namespaces=NS)


def forge(app: Any, payload: Any, middle: str) -> str:
    """A token signed with the repository's real secret, carrying any payload (a str: as JSON text)."""
    import json

    from oaiserver.tokens import _b64

    tokens = app.extensions["oai_live"].repository().tokens
    text = payload if isinstance(payload, str) else json.dumps(payload)
    body = f"{_b64(text.encode())}.{middle}"
    return f"{body}.{tokens._sign(body)}"


FIELDS = ("verb", "prefix", "start", "end", "set", "last", "cursor", "total")  # a token's first fields


def real_token(oai: OAIClient) -> tuple[list[Any], str]:
    """The payload and middle part of the token of page 1 of ListRecords."""
    import json

    from oaiserver.tokens import _unb64

    encoded, middle, _ = the_token(oai(verb="ListRecords", metadataPrefix="oai_dc")).text.split(".")
    return json.loads(_unb64(encoded)), middle


def changed(payload: list[Any], **changes: Any) -> list[Any]:
    out = list(payload)
    for name, value in changes.items():
        out[FIELDS.index(name)] = value
    return out


FORGED: dict[str, Any] = {
    "one-element key": {"last": [1_700_000_000]},
    "three-element key": {"last": [1, "x", 3]},
    "key of strings": {"last": ["1700000000", "oai:x"]},
    "key of a surrogate": {"last": [1_700_000_000, "oai:\ud800"]},
    "end of 10^20": {"end": 10**20},
    "start of -10^20": {"start": -(10**20)},
    "start of a string": {"start": "2020-01-01"},
    "negative cursor": {"cursor": -1},
    "cursor of 10^30": {"cursor": 10**30},
    "boolean cursor": {"cursor": True},
    "negative total": {"total": -5},
    "float total": {"total": 20.5},
    "unknown prefix": {"prefix": "marc21"},
    "prefix not a string": {"prefix": ["oai_dc"]},
    "illegal set": {"set": "a b"},
    "unknown set": {"set": "zzz"},
    "too few fields": "drop",
    "too many fields": "add",
    "not a list": {"verb": "ListRecords"},
    "deep nesting": "[" * 1500 + "]" * 1500,
}


@pytest.mark.parametrize("case", sorted(FORGED))
def test_a_forged_token_signed_with_the_real_secret_is_a_bad_resumption_token(
    app: Any, oai: OAIClient, store: Store, clock: Clock, case: str
) -> None:
    fill(store, clock, 2 * PAGE + 1)
    payload, middle = real_token(oai)
    change = FORGED[case]
    if change == "drop":
        forged: Any = payload[:5]
    elif change == "add":
        forged = [*payload, 1]
    elif case == "not a list" or isinstance(change, str):
        forged = change
    else:
        forged = changed(payload, **change)
    doc = oai(verb="ListRecords", resumptionToken=forge(app, forged, middle))  # validates the response
    assert error_codes(doc) == ["badResumptionToken"]


@pytest.mark.parametrize("middle", ["-1", "1e3", "x", "99999999999999999999999999"])
def test_a_forged_token_with_a_bad_time_is_a_bad_resumption_token(
    app: Any, oai: OAIClient, store: Store, clock: Clock, middle: str
) -> None:
    fill(store, clock, 2 * PAGE + 1)
    payload, _ = real_token(oai)
    assert error_codes(oai(verb="ListRecords", resumptionToken=forge(app, payload, middle))) == ["badResumptionToken"]


def test_the_forged_tokens_baseline_is_accepted(app: Any, oai: OAIClient, store: Store, clock: Clock) -> None:
    """The forging helper makes tokens the server takes, so the refusals above are the checks'."""
    fill(store, clock, 2 * PAGE + 1)
    payload, middle = real_token(oai)
    doc = oai(verb="ListRecords", resumptionToken=forge(app, payload, middle))
    assert error_codes(doc) == [] and identifiers(doc)[0] == f"oai:test.example.org:{PAGE:04d}"


def test_a_tokens_expiry_is_fixed_when_it_is_issued(
    store_url: str, store: Store, clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A server with a shorter token_lifetime does not expire tokens early, and one with a
    longer lifetime does not keep them past the expirationDate they were given."""
    fill(store, clock, 2 * PAGE)
    long = create_app(make_config(store_url, server__token_lifetime=3600, server__secret="s"), store=store)
    short = create_app(make_config(store_url, server__token_lifetime=60, server__secret="s"), store=store)
    long_token = the_token(validate(long.test_client().get("/oai?verb=ListRecords&metadataPrefix=oai_dc").data))
    short_token = the_token(validate(short.test_client().get("/oai?verb=ListRecords&metadataPrefix=oai_dc").data))
    import oaiserver.tokens

    real = time.time
    monkeypatch.setattr(oaiserver.tokens.time, "time", lambda: real() + 120)
    doc = validate(short.test_client().get(f"/oai?verb=ListRecords&resumptionToken={long_token.text}").data)
    assert error_codes(doc) == [], "a token issued for an hour lives an hour"
    doc = validate(long.test_client().get(f"/oai?verb=ListRecords&resumptionToken={short_token.text}").data)
    assert error_codes(doc) == ["badResumptionToken"], "a token issued for a minute lives a minute"
    assert "expired" in doc.findtext("oai:error", namespaces=NS)


def test_a_token_in_the_8_field_format_of_a_development_version_is_a_bad_resumption_token(
    app: Any, oai: OAIClient, store: Store, clock: Clock
) -> None:
    """Development versions before 0.1.0 issued tokens of 8 fields that carried their issue
    time: none was ever released, so such a token, signed and fresh, is not one of ours."""
    fill(store, clock, 2 * PAGE + 1)
    payload, middle = real_token(oai)
    assert error_codes(oai(verb="ListRecords", resumptionToken=forge(app, payload, middle))) == []
    old = forge(app, payload[:8], str(int(time.time())))
    doc = oai(verb="ListRecords", resumptionToken=old)  # validates the response
    assert error_codes(doc) == ["badResumptionToken"]
    assert "not one this repository issued" in (doc.findtext("oai:error", namespaces=NS) or "")
