"""Resumption tokens: flow control as section 3.5 of the specification describes it."""

from __future__ import annotations

import re
import time
from typing import Any

import pytest
from conftest import NS, Clock, OAIClient, error_codes, identifiers, make_config, make_record, token_of, validate

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
    expires = token_of(doc).get("expirationDate")
    response = doc.findtext("oai:responseDate", namespaces=NS)
    assert expires > response


def test_same_token_same_page(oai: OAIClient, store: Store, clock: Clock) -> None:
    fill(store, clock, 3 * PAGE)
    token = token_of(oai(verb="ListRecords", metadataPrefix="oai_dc")).text
    first, again = oai(verb="ListRecords", resumptionToken=token), oai(verb="ListRecords", resumptionToken=token)
    assert identifiers(first) == identifiers(again) and len(identifiers(first)) == PAGE
    assert token_of(first).get("cursor") == token_of(again).get("cursor") == str(PAGE)


def test_token_survives_a_restart(store_url: str, store: Store, clock: Clock) -> None:
    """Tokens are stateless: a new app over the same store (another worker) accepts them."""
    fill(store, clock, 2 * PAGE + 1)
    cfg = make_config(store_url)
    other = Store(store_url)
    try:
        one, two = create_app(cfg, store=store).test_client(), create_app(cfg, store=other).test_client()
        token = token_of(validate(one.get("/oai?verb=ListIdentifiers&metadataPrefix=oai_dc").data)).text
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
    token = token_of(oai(verb="ListRecords", metadataPrefix="oai_dc")).text
    doc = oai(verb="ListRecords", resumptionToken=mangle(token))
    assert error_codes(doc) in (["badResumptionToken"], ["badArgument"])
    if mangle(token):
        assert error_codes(doc) == ["badResumptionToken"]
        assert doc.find("oai:request", NS).get("resumptionToken") == mangle(token)


def test_token_of_another_verb(oai: OAIClient, store: Store, clock: Clock) -> None:
    fill(store, clock, 2 * PAGE)
    token = token_of(oai(verb="ListRecords", metadataPrefix="oai_dc")).text
    assert error_codes(oai(verb="ListIdentifiers", resumptionToken=token)) == ["badResumptionToken"]
    assert error_codes(oai(verb="ListSets", resumptionToken=token)) == ["badResumptionToken"]


def test_expired_token(store_url: str, store: Store, clock: Clock, monkeypatch: pytest.MonkeyPatch) -> None:
    fill(store, clock, 2 * PAGE)
    client = create_app(make_config(store_url, server__token_lifetime=60), store=store).test_client()
    token = token_of(validate(client.get("/oai?verb=ListRecords&metadataPrefix=oai_dc").data)).text
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
    token = token_of(validate(one.get("/oai?verb=ListRecords&metadataPrefix=oai_dc").data)).text
    assert error_codes(validate(two.get(f"/oai?verb=ListRecords&resumptionToken={token}").data)) == [
        "badResumptionToken"
    ]


def test_page_size_is_configurable(store_url: str, store: Store, clock: Clock) -> None:
    fill(store, clock, 7)
    client = create_app(make_config(store_url, server__page_size=3), store=store).test_client()
    doc = validate(client.get("/oai?verb=ListIdentifiers&metadataPrefix=oai_dc").data)
    assert len(identifiers(doc)) == 3 and token_of(doc).get("completeListSize") == "7"


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
    token = token_of(first).text
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
        token = (token_of(doc).text if token_of(doc) is not None else None) or ""
    clock.tick()
    assert len(seen) == len(set(seen)), "an identifier was listed twice"
    changed = {f"oai:test.example.org:{x}" for x in ("0000", "0045", "0030", "new-1", "new-2")}
    # 0000 was listed before it changed; 0045 and 0030 changed before their page was served.
    assert set(seen) == set(before) - {"oai:test.example.org:0045", "oai:test.example.org:0030"}
    incremental, _ = harvest(oai, "ListIdentifiers", **{"from": response_date})
    assert changed <= set(incremental), "the next incremental harvest must bring every change"
    assert set(seen) | set(incremental) == store.identifiers()


def test_records_that_leave_the_window_end_the_list_cleanly(oai: OAIClient, store: Store, clock: Clock) -> None:
    fill(store, clock, PAGE + 1)
    token = token_of(oai(verb="ListIdentifiers", metadataPrefix="oai_dc")).text
    store.write([make_record(f"{PAGE:04d}", "changed")])  # the only record left on page 2
    doc = oai(verb="ListIdentifiers", resumptionToken=token)
    assert error_codes(doc) == ["noRecordsMatch"]


def test_until_is_frozen_at_the_first_request(oai: OAIClient, store: Store, clock: Clock) -> None:
    fill(store, clock, PAGE + 1)
    first = oai(verb="ListIdentifiers", metadataPrefix="oai_dc")
    assert first.findtext("oai:responseDate", namespaces=NS) == format_datestamp(clock.now)
    store.write([make_record("zzzz")])  # sorts last, stamped now
    clock.tick(10)
    rest = oai(verb="ListIdentifiers", resumptionToken=token_of(first).text)
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
