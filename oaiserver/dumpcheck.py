"""The rules an export's lines must meet before anything in them is stored: pure functions.

An import serves what it stores without looking at it again, so each line is checked here
first: its shape and types, the text (only characters XML allows), every fragment that will
be served (well-formed XML, one element, as it will sit inside `<metadata>` or `<about>`),
and the record's content digest (`store.content_hash`, which the export carries as the
store computed it). A line that breaks a rule raises `Refused` with the reason; the caller
adds the file and line number.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Callable
from typing import Any

import sqlalchemy as sa
from lxml import etree

from oaiserver.config import SPEC_RE
from oaiserver.fragments import record_body
from oaiserver.native import about_in
from oaiserver.protocol import PREFIX_RE
from oaiserver.records import MAX_IDENTIFIER_BYTES, DCValue, Record, identifier_problem, utf8_if_allowed
from oaiserver.store import Prepared, exported_columns, prepare

MAX_DATESTAMP = 253_402_300_799  # 9999-12-31T23:59:59Z: datestamps have four-digit years
_DIGEST_RE = re.compile(r"[0-9a-f]{64}")
# Strict, and blind to anything outside the text: no DTD, no entities, no network.
_PARSER = etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False, huge_tree=True)


class Refused(ValueError):
    """A line that breaks a rule; the message says which."""


def _expect(ok: bool, reason: str) -> None:
    if not ok:
        raise Refused(reason)


def _strings(value: Any) -> list[str]:
    """Every string inside a JSON value (keys included)."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [s for k, v in value.items() for s in (k, *_strings(v))]
    if isinstance(value, list):
        return [s for v in value for s in _strings(v)]
    return []


# How a character XML forbids can hide in a JSON line (the parser refuses raw control bytes):
# as a \uXXXX escape, \b or \f; as U+FFFE or U+FFFF in UTF-8 (EF BF BE, EF BF BF); as a
# surrogate in UTF-8 (ED A0 to ED BF: the parser lets those through). A line with no such
# escape and no byte EF or ED holds none (export writes none of them): a regular expression
# with a literal start and two byte searches cost a few microseconds a line, a fraction of
# walking the strings. Any other line has its strings walked.
_ESCAPE = re.compile(rb"\\[ubf]")


def allowed_text(raw: bytes, value: Any) -> bool:
    """Whether `value`, parsed from the line `raw`, holds only characters XML allows."""
    if b"\xef" not in raw and b"\xed" not in raw and _ESCAPE.search(raw) is None:
        return True
    return utf8_if_allowed("".join(_strings(value))) is not None


def fragment_problem(fragment: str) -> str | None:
    """What keeps `fragment` from being served: it must be one well-formed element as it will
    stand inside an element of a response (so no XML declaration or DOCTYPE), with every
    prefix it uses declared."""
    return _checked(fragment)[0]


def _checked(fragment: str) -> tuple[str | None, str]:
    """`fragment_problem`, and the namespace of the fragment's element ("" when it has a problem
    or none), from one parse."""
    try:
        wrapper = etree.fromstring(b"<w>" + fragment.encode() + b"</w>", _PARSER)
    except etree.XMLSyntaxError as exc:
        return f"is not well-formed XML: {exc}", ""
    elements = [child for child in wrapper if isinstance(child.tag, str)]
    stray = (wrapper.text or "") + "".join(child.tail or "" for child in wrapper)
    if len(elements) != 1 or stray.strip():
        return "is not one XML element", ""
    return None, etree.QName(elements[0]).namespace or ""


def _is_dc(value: Any) -> bool:
    return (
        type(value) is list
        and len(value) == 3
        and type(value[0]) is str
        and type(value[1]) is str
        and (value[2] is None or type(value[2]) is str)
    )


def _is_spec(value: Any) -> bool:
    return type(value) is str and len(value) <= 400 and SPEC_RE.fullmatch(value) is not None


def _is_format(item: tuple[Any, Any]) -> bool:
    prefix, fragment = item
    return len(prefix) <= 100 and PREFIX_RE.fullmatch(prefix) is not None and type(fragment) is str


def _text_or_none(value: Any) -> bool:
    return value is None or type(value) is str


# A record line's fields, each with its rule and what the refusal says when it is broken.
FIELDS: dict[str, tuple[Callable[[Any], bool], str]] = {
    "identifier": (
        lambda v: type(v) is str and identifier_problem(v) is None,
        f"is not a URI of at most {MAX_IDENTIFIER_BYTES} bytes in UTF-8",
    ),
    "datestamp": (lambda v: type(v) is int and 0 <= v <= MAX_DATESTAMP, "is not a time in seconds"),
    "deleted": (lambda v: type(v) is bool, "is not true or false"),
    "source": (lambda v: type(v) is str and 0 < len(v) <= 200, "is not a name"),
    "sets": (lambda v: type(v) is list and all(map(_is_spec, v)), "is not a list of setSpecs"),
    "dc": (lambda v: type(v) is list and all(map(_is_dc, v)), "is not a list of [element, value, language]"),
    "metadata": (lambda v: type(v) is dict and all(map(_is_format, v.items())), "is not metadataPrefix -> XML"),
    "fulltext": (_text_or_none, "is not a string or null"),
    "raw_xml": (_text_or_none, "is not a string or null"),
    "about": (_text_or_none, "is not a string or null"),
    "provenance": (lambda v: v is None or type(v) is dict, "is not a mapping or null"),
    "content_hash": (lambda v: type(v) is str and _DIGEST_RE.fullmatch(v) is not None, "is not a SHA-256 digest"),
}


def _shown(identifier: Any) -> str:
    """An identifier as a message names it: whatever it is, in at most 200 characters."""
    text = repr(identifier)
    return text if len(text) <= 200 else text[:199] + "…"


# A record line's field that only a record served in further formats has (version 3): the
# formats written beside it from its partner's records in them, outside its content hash.
FURTHER = "further"
_FURTHER_RULE = (
    lambda v: type(v) is dict and len(v) > 0 and all(map(_is_format, v.items())),
    "is not metadataPrefix -> XML",
)


def _fields_of(item: dict[str, Any], raw: bytes) -> tuple[dict[str, Any], dict[str, str]]:
    """A record line's fields, each checked by its rule, and its further formats ({} if none)."""
    r: Any = item.get("record")
    if type(r) is not dict or len(item) != 1:
        raise Refused("not a record line")
    if r.keys() - {FURTHER} != FIELDS.keys():
        raise Refused(f"a record has the fields {sorted(FIELDS)} (and maybe {FURTHER}), this one {sorted(r)}")
    for name, (ok, reason) in [*FIELDS.items(), *([(FURTHER, _FURTHER_RULE)] if FURTHER in r else [])]:
        if not ok(r[name]):
            raise Refused(f"record {_shown(r['identifier'])}: {name} {reason}")
    further: dict[str, str] = r.get(FURTHER, {})
    if twice := sorted(further.keys() & r["metadata"].keys()):
        raise Refused(f"record {_shown(r['identifier'])}: {twice[0]} is both in its metadata and further")
    if not allowed_text(raw, r):
        raise Refused(f"record {_shown(r['identifier'])} holds a character XML does not allow")
    return r, further


def record_of(item: dict[str, Any], raw: bytes) -> Prepared:
    """The record a `{"record": {...}}` line (`raw`, parsed into `item`) holds, prepared for
    the store, once it meets every rule."""
    r, further = _fields_of(item, raw)
    record = Record(
        identifier=r["identifier"],
        dc=[DCValue(e, v, lang) for e, v, lang in r["dc"]],
        sets=r["sets"],
        deleted=r["deleted"],
        source=r["source"],
        datestamp=r["datestamp"],
        metadata=r["metadata"],
        fulltext=r["fulltext"],
        raw_xml=r["raw_xml"],
        provenance=r["provenance"],
        about=r["about"],
    )
    namespaces: dict[str, str] = {}  # of the further formats' fragments, for their <about>
    if not record.deleted:  # a tombstone serves its header alone
        served = [
            (prefix, f"its {prefix} metadata", xml) for prefix, xml in [*record.metadata.items(), *further.items()]
        ]
        for prefix, what, fragment in [
            *served,
            *([("", "its about", record.about)] if record.about is not None else []),
        ]:
            problem, namespaces[prefix] = _checked(fragment)
            if problem:
                raise Refused(f"record {record.identifier!r}: {what} {problem}")
    prepared = prepare(record)
    if prepared.digest != r["content_hash"]:
        raise Refused(f"record {record.identifier!r}: its content does not match its content_hash")
    if not further:
        return prepared
    # Served as `write_native_in` serves them: the fragment, with the record's <about> naming
    # the fragment's namespace (`native.about_in`).
    if record.deleted:
        bodies = [(p, record_body(None, None)) for p in sorted(further)]
    else:
        bodies = [
            (p, record_body(x.encode(), about_in(record.about, namespaces[p]))) for p, x in sorted(further.items())
        ]
    return prepared._replace(bodies=(*prepared.bodies, *bodies))


def row_of(item: dict[str, Any], raw: bytes, tables: dict[str, sa.Table]) -> tuple[str, dict[str, Any]]:
    """(table, row) of a `{"table": ..., "row": {...}}` line: the exported columns, each of its type."""
    name: Any = item.get("table")
    row: Any = item.get("row")
    known = isinstance(name, str) and name in tables
    _expect(item.keys() == {"table", "row"} and known and isinstance(row, dict), "not a record or table line")
    columns = {c.name: c for c in exported_columns(tables[name])}
    _expect(row.keys() == columns.keys(), f"a {name} row has the fields {sorted(columns)}, this one {sorted(row)}")
    for key, value in row.items():
        column = columns[key]
        if value is None:
            _expect(bool(column.nullable), f"{name}.{key} is null")
        elif isinstance(column.type, sa.LargeBinary):
            data = bytes_of(value)
            _expect(data is not None, f"{name}.{key} is not UTF-8 text nor {{{BASE64!r}: ...}}")
            row[key] = data
        elif isinstance(column.type, sa.Boolean):
            _expect(isinstance(value, bool), f"{name}.{key} is not true or false")
        elif isinstance(column.type, sa.Integer):
            _expect(type(value) is int and abs(value) < 2**63, f"{name}.{key} is not an integer")
        else:
            length = getattr(column.type, "length", None)
            _expect(isinstance(value, str) and (length is None or len(value) <= length), f"{name}.{key} is not text")
    for key in JSON_OBJECTS.get(name, ()):
        _expect(row[key] is None or _is_json_object(row[key]), f"{name}.{key} is not a JSON object")
    for key, (ok, reason) in COLUMNS.get(name, {}).items():
        _expect(ok(row[key]), f"{name}.{key} {reason}")
    _expect(allowed_text(raw, row), f"a {name} row holds a character XML does not allow")
    return name, row


# Text columns the store reads back as JSON objects (a harvest's checkpoint, a run's counts, a
# kept record's provenance).
JSON_OBJECTS: dict[str, tuple[str, ...]] = {
    "harvest_state": ("checkpoint",),
    "harvest_runs": ("counts",),
    "shadowed_records": ("provenance",),
}

_IDENTIFIER = FIELDS["identifier"]
# Columns with a rule of their own beyond their type: the keys a record is found by again.
COLUMNS: dict[str, dict[str, tuple[Callable[[Any], bool], str]]] = {
    "native_formats": {
        "identifier": _IDENTIFIER,
        "prefix": (lambda v: PREFIX_RE.fullmatch(v) is not None, "is not a metadataPrefix"),
    },
    "shadowed_records": {"identifier": _IDENTIFIER, "content_hash": FIELDS["content_hash"]},
}

# A binary column in a line (the verbatim records of native_formats): its UTF-8 text when the
# bytes are UTF-8 of characters XML allows (as the store writes them), else {"base64": ...}.
BASE64 = "base64"


def text_of(data: bytes) -> str | dict[str, str]:
    """How a line carries the bytes `data` (see BASE64)."""
    try:
        if utf8_if_allowed(text := data.decode()) is not None:
            return text
    except UnicodeDecodeError:
        pass
    return {BASE64: base64.b64encode(data).decode("ascii")}


def bytes_of(value: Any) -> bytes | None:
    """The bytes a line carries as `text_of` wrote them, or None if it is neither form."""
    if type(value) is str:
        return utf8_if_allowed(value)  # the text form holds only what XML allows
    if type(value) is dict and value.keys() == {BASE64} and type(value[BASE64]) is str:
        try:
            return base64.b64decode(value[BASE64], validate=True)
        except (binascii.Error, ValueError):
            return None
    return None


def _is_json_object(text: str) -> bool:
    try:
        return isinstance(json.loads(text), dict)
    except ValueError:
        return False
