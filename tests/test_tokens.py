"""The resumption token's payload: a named row on the inside, the same JSON array on the wire."""

from __future__ import annotations

import json

from oaiserver.tokens import _CHECKS, ListState, Tokens, _b64, _unb64

# A payload as every release so far writes it: the fields of ListState, in order, as a JSON array.
WIRE = '["ListRecords","oai_dc",1500000000,1700000000,"a:b",[1600000000,"oai:x.org:1"],500,20000,"oai:x.org:2"]'
STATE = ListState(
    verb="ListRecords",
    prefix="oai_dc",
    start=1500000000,
    end=1700000000,
    set_spec="a:b",
    last=(1600000000, "oai:x.org:1"),
    cursor=500,
    total=20000,
    next="oai:x.org:2",
)


def test_a_payload_in_the_wire_order_is_read_field_by_field() -> None:
    tokens = Tokens("secret", 3600)
    _, expires = tokens.issue(STATE)
    body = f"{_b64(WIRE.encode())}.{expires}"
    assert tokens.read(f"{body}.{tokens._sign(body)}", "ListRecords") == STATE


def test_an_issued_payload_is_the_fields_in_order() -> None:
    token, _ = Tokens("secret", 3600).issue(STATE)
    assert _unb64(token.split(".")[0]).decode() == WIRE
    assert json.loads(WIRE) == [*STATE[:5], list(STATE.last or ()), *STATE[6:]]


def test_every_field_has_one_check() -> None:
    assert tuple(_CHECKS) == ListState._fields
