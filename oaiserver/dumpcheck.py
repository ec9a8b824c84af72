"""The rules an export's lines must meet before anything in them is stored: pure functions.

An import serves what it stores without looking at it again, so each line is checked here
first: its shape and types, the text (only characters XML allows), every fragment that will
be served (well-formed XML, one element, as it will sit inside `<metadata>` or `<about>`),
and the record's content digest (`store.content_hash`, which the export carries as the
store computed it). A line that breaks a rule raises `Refused` with the reason; the caller
adds the file and line number.
"""

from __future__ import annotations

import re
from typing import Any

import sqlalchemy as sa
from lxml import etree

from oaiserver.config import SPEC_RE
from oaiserver.protocol import PREFIX_RE
from oaiserver.records import DCValue, Record, is_identifier, utf8_if_allowed
from oaiserver.store import content_hash, exported_columns

RECORD_KEYS = frozenset(
    {"identifier", "datestamp", "deleted", "source", "sets", "dc", "metadata", "fulltext", "raw_xml", "provenance",
     "about", "content_hash"}
)  # fmt: skip
MAX_DATESTAMP = 253_402_300_799  # 9999-12-31T23:59:59Z: datestamps have four-digit years
_DIGEST_RE = re.compile(r"[0-9a-f]{64}")
# Strict, and blind to anything outside the text: no DTD, no entities, no network.
_PARSER = etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False, huge_tree=True)


class Refused(ValueError):
    """A line that breaks a rule; the message says which."""


def _expect(ok: bool, reason: str) -> None:
    if not ok:
        raise Refused(reason)


def _text_or_none(value: Any) -> bool:
    return value is None or isinstance(value, str)


def _strings(value: Any) -> list[str]:
    """Every string inside a JSON value (keys included)."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [s for k, v in value.items() for s in (k, *_strings(v))]
    if isinstance(value, list):
        return [s for v in value for s in _strings(v)]
    return []


def check_fragment(fragment: str, where: str) -> None:
    """`fragment` is one well-formed element, as it will stand inside an element of a response
    (so no XML declaration or DOCTYPE), with every prefix it uses declared."""
    try:
        wrapper = etree.fromstring(b"<w>" + fragment.encode() + b"</w>", _PARSER)
    except etree.XMLSyntaxError as exc:
        raise Refused(f"{where} is not well-formed XML: {exc}") from None
    elements = [child for child in wrapper if isinstance(child.tag, str)]
    stray = (wrapper.text or "") + "".join(child.tail or "" for child in wrapper)
    _expect(len(elements) == 1 and not stray.strip(), f"{where} is not one XML element")


def record_of(item: dict[str, Any]) -> Record:
    """The record a `{"record": {...}}` line holds, once it meets every rule."""
    r: Any = item.get("record")
    _expect(isinstance(r, dict) and item.keys() == {"record"}, "not a record line")
    _expect(r.keys() == RECORD_KEYS, f"a record has the fields {sorted(RECORD_KEYS)}, this one {sorted(r)}")
    identifier = r["identifier"]
    _expect(isinstance(identifier, str) and len(identifier) <= 1024, "the identifier is not a string")
    where = f"record {identifier!r}"
    _expect(is_identifier(identifier), f"{where}: the identifier is not a URI")
    stamp = r["datestamp"]
    _expect(type(stamp) is int and 0 <= stamp <= MAX_DATESTAMP, f"{where}: the datestamp is not a time")
    _expect(isinstance(r["deleted"], bool), f"{where}: deleted is not true or false")
    _expect(isinstance(r["source"], str) and 0 < len(r["source"]) <= 200, f"{where}: the source is not a name")
    sets = r["sets"]
    _expect(isinstance(sets, list) and all(isinstance(s, str) and len(s) <= 400 and SPEC_RE.fullmatch(s) for s in sets),
            f"{where}: the sets are not a list of setSpecs")  # fmt: skip
    dc = r["dc"]
    _expect(isinstance(dc, list) and all(_is_dc(v) for v in dc),
            f"{where}: dc is not a list of [element, value, language or null]")  # fmt: skip
    metadata = r["metadata"]
    _expect(isinstance(metadata, dict) and all(len(p) <= 100 and PREFIX_RE.fullmatch(p) and isinstance(x, str)
                                               for p, x in metadata.items()),
            f"{where}: metadata is not a mapping of metadataPrefix to XML")  # fmt: skip
    for name in ("fulltext", "raw_xml", "about"):
        _expect(_text_or_none(r[name]), f"{where}: {name} is not a string or null")
    _expect(r["provenance"] is None or isinstance(r["provenance"], dict), f"{where}: provenance is not a mapping")
    _expect(isinstance(r["content_hash"], str) and bool(_DIGEST_RE.fullmatch(r["content_hash"])),
            f"{where}: content_hash is not a SHA-256 digest")  # fmt: skip
    _expect(utf8_if_allowed("".join(_strings(r))) is not None, f"{where}: holds a character XML does not allow")
    record = Record(
        identifier=identifier,
        dc=[DCValue(e, v, lang) for e, v, lang in dc],
        sets=sets,
        deleted=r["deleted"],
        source=r["source"],
        datestamp=stamp,
        metadata=metadata,
        fulltext=r["fulltext"],
        raw_xml=r["raw_xml"],
        provenance=r["provenance"],
        about=r["about"],
    )
    if not record.deleted:  # a tombstone serves its header alone
        for prefix, fragment in metadata.items():
            check_fragment(fragment, f"{where}: its {prefix} metadata")
        if record.about is not None:
            check_fragment(record.about, f"{where}: its about")
    _expect(content_hash(record) == r["content_hash"], f"{where}: its content does not match its content_hash")
    return record


def _is_dc(value: Any) -> bool:
    return (
        isinstance(value, list)
        and len(value) == 3
        and isinstance(value[0], str)
        and isinstance(value[1], str)
        and _text_or_none(value[2])
    )


def row_of(item: dict[str, Any], tables: dict[str, sa.Table]) -> tuple[str, dict[str, Any]]:
    """(table, row) of a `{"table": ..., "row": {...}}` line: the exported columns, each of its type."""
    name: Any = item.get("table")
    row: Any = item.get("row")
    _expect(item.keys() == {"table", "row"} and name in tables and isinstance(row, dict), "not a record or table line")
    columns = {c.name: c for c in exported_columns(tables[name])}
    _expect(row.keys() == columns.keys(), f"a {name} row has the fields {sorted(columns)}, this one {sorted(row)}")
    for key, value in row.items():
        column = columns[key]
        if value is None:
            _expect(bool(column.nullable), f"{name}.{key} is null")
        elif isinstance(column.type, sa.Boolean):
            _expect(isinstance(value, bool), f"{name}.{key} is not true or false")
        elif isinstance(column.type, sa.Integer):
            _expect(type(value) is int and abs(value) < 2**63, f"{name}.{key} is not an integer")
        else:
            length = getattr(column.type, "length", None)
            _expect(isinstance(value, str) and (length is None or len(value) <= length), f"{name}.{key} is not text")
            _expect(utf8_if_allowed(value) is not None, f"{name}.{key} holds a character XML does not allow")
    return name, row
