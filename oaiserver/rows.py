"""A record's rows, prepared for the store: the part of a write that needs no database.

Checked (characters XML forbids removed), hashed (`content_hash`: a datestamp changes only
when this does) and encoded (`encode_dc`, the `<record>` bodies). It imports no SQL toolkit:
a harvest prepares records in its worker process (`harvester.worker`), which has no database
to talk to. `oaiserver.store` writes what this prepares and re-exports these names.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from typing import NamedTuple

from oaiserver.fragments import record_body
from oaiserver.records import DCValue, Record, clean_text, has_forbidden_chars, utf8_if_allowed


def ancestors(spec: str) -> list[str]:
    """`a:b:c` is also in `a:b` and `a`: the specs a membership query must find it under."""
    parts = spec.split(":")
    return [":".join(parts[: i + 1]) for i in range(len(parts))]


def content_hash(record: Record, encoded: dict[str, bytes] | None = None) -> str:
    """`encoded`: the metadata fragments in UTF-8, when the caller has them already."""
    parts = [b"D" if record.deleted else b"L"]
    parts += [b"\x00S" + spec.encode() for spec in sorted(set(record.sets))]
    for prefix in sorted(record.metadata):
        parts.append(b"\x00M" + prefix.encode() + b"\x00")
        if not record.deleted:
            parts.append(encoded[prefix] if encoded is not None else record.metadata[prefix].encode())
    return hashlib.sha256(b"".join(parts)).hexdigest()  # the digest of the parts fed one by one


_DC_JSON = json.JSONEncoder(ensure_ascii=False).encode  # one encoder: json.dumps(**options) builds one a call
_FIELD, _VALUE = "\x1f", "\x1e"  # separators no stored value can hold: XML forbids them, _cleaned removes them


def encode_dc(values: Sequence[DCValue]) -> str:
    """Dublin Core statements for `records.dc`: `element US lang US value`, joined by RS
    (a fifth of JSON's cost; an empty lang reads back as None). JSON (`[[element, value,
    lang], ...]`) when a name or tag would be ambiguous: one holding a separator, or a first
    name starting with `[`."""
    text = _VALUE.join([f"{v.element}{_FIELD}{v.lang or ''}{_FIELD}{v.value}" for v in values])
    if (
        text.count(_FIELD) == 2 * len(values)
        and text.count(_VALUE) == max(len(values) - 1, 0)
        and not text.startswith("[")
    ):
        return text
    return _DC_JSON(values)


class Wire(NamedTuple):
    """A prepared record as the harvest's worker process sends it back: plain values, which
    pickle at a fifth of the cost of a Prepared and its Record. Only what a write reads of the
    record travels (its Dublin Core and fragments are encoded in `dc` and `bodies`)."""

    identifier: str
    deleted: bool
    source: str
    datestamp: int | None
    fulltext: str | None
    raw_xml: str | None
    about: str | None
    digest: str
    setspecs: str
    dc: str
    provenance: str | None
    specs: tuple[str, ...]
    bodies: tuple[tuple[str, bytes], ...]
    # The datestamp the partner listed the record at, in seconds (None: not in OAI-PMH's form),
    # beside the row for the harvest's take-up, which then parses nothing of the record.
    listed: int | None


class Prepared(NamedTuple):
    """A record checked and encoded for the store: the part of a write that needs no database
    (a harvest prepares records in a worker process, see `harvester.pipeline`)."""

    record: Record  # with every character XML forbids removed
    digest: str  # content_hash
    setspecs: str
    dc: str  # encode_dc
    provenance: str | None  # JSON
    specs: tuple[str, ...]  # the set memberships to index: each spec and its ancestors
    bodies: tuple[tuple[str, bytes], ...]  # (prefix, what follows the header in the served <record>)

    def to_wire(self, listed: int | None = None) -> Wire:
        r = self.record
        return Wire(
            r.identifier, r.deleted, r.source, r.datestamp, r.fulltext, r.raw_xml, r.about,
            self.digest, self.setspecs, self.dc, self.provenance, self.specs, self.bodies, listed,
        )  # fmt: skip

    @classmethod
    def from_wire(cls, w: Wire) -> Prepared:
        record = Record(w.identifier, deleted=w.deleted, source=w.source, datestamp=w.datestamp,
                        fulltext=w.fulltext, raw_xml=w.raw_xml, about=w.about)  # fmt: skip
        return cls(record, w.digest, w.setspecs, w.dc, w.provenance, w.specs, w.bodies)


def prepare(record: Record) -> Prepared:
    record, encoded = _cleaned(record)
    about = None if record.deleted else record.about
    specs = dict.fromkeys(record.sets)
    setspecs = " ".join(specs)
    return Prepared(
        record,
        content_hash(record, encoded),
        setspecs,
        encode_dc(record.dc),
        json.dumps(record.provenance) if record.provenance else None,
        tuple(dict.fromkeys(a for spec in specs for a in ancestors(spec)) if ":" in setspecs else specs),
        tuple((p, record_body(None if record.deleted else xml, about)) for p, xml in encoded.items()),
    )


def _cleaned(record: Record) -> tuple[Record, dict[str, bytes]]:
    """The record with every character XML forbids removed (logged once per value), and its
    metadata fragments in UTF-8 (checked as they are encoded: they are most of the text)."""
    encoded = {p: utf8_if_allowed(x) for p, x in record.metadata.items()}
    texts = [record.identifier, *record.sets, record.fulltext or "", record.about or ""]
    texts += [v.value for v in record.dc]
    if None not in encoded.values() and not has_forbidden_chars("".join(texts)):
        return record, encoded  # type: ignore[return-value]  # the common case: one scan, no copies
    where = record.identifier
    record.identifier = clean_text(record.identifier, where="an identifier")
    record.dc = [DCValue(v.element, clean_text(v.value, where=where), v.lang) for v in record.dc]
    record.metadata = {p: clean_text(x, where=where) for p, x in record.metadata.items()}
    record.sets = [clean_text(s, where=where) for s in record.sets]
    if record.about is not None:
        record.about = clean_text(record.about, where=where)
    if record.fulltext is not None:
        record.fulltext = clean_text(record.fulltext, where=where)
    return record, {p: x.encode() for p, x in record.metadata.items()}
