"""A record's rows, prepared for the store: the part of a write that needs no database.

Checked (characters XML forbids removed), hashed (`content_hash`: a datestamp changes only
when this does) and encoded (`encode_dc`, the `<record>` bodies), with the words it is searched
by (`index_text`) when asked. It imports no SQL toolkit:
a harvest prepares records in its worker process (`harvester.worker`), which has no database
to talk to. `oaiserver.store` writes what this prepares and re-exports these names.
"""

from __future__ import annotations

import hashlib
import json
import re
import unicodedata
from collections.abc import Iterable, Sequence
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


INDEXED = ("title", "creator", "identifier")  # Dublin Core elements whose words are searched
_WORD = re.compile(r"[^\W_]+")
_MARKS = re.compile(r"[\u0300-\u036f\u1ab0-\u1aff\u1dc0-\u1dff\u20d0-\u20ff\ufe20-\ufe2f]+")  # combining marks


def words(text: str) -> list[str]:
    """Runs of letters and digits, case and diacritics folded (`Élan_vital` -> elan, vital)."""
    text = text.casefold()
    if not text.isascii():
        text = _MARKS.sub("", unicodedata.normalize("NFKD", text))
    return _WORD.findall(text)


def index_text(identifier: str, dc: str) -> str:
    """What a record is found by: its OAI identifier, and the titles, creators and identifiers
    of its encoded Dublin Core (`encode_dc`), as words separated by spaces. A
    dc:identifier that is the record's own landing page adds nothing the OAI identifier does
    not, but the site's address in every record: it is left out."""
    return _words_of(identifier, dc_elements(dc))


def _words_of(identifier: str, values: Iterable[tuple[str, str] | DCValue]) -> str:
    """`index_text` of (element, value) pairs, or of the DCValues they were encoded from."""
    landing = "/records/" + identifier
    parts = [identifier]
    parts += [v[1] for v in values if v[0] in INDEXED and not (v[0] == "identifier" and v[1].endswith(landing))]
    return " ".join(words("\n".join(parts)))


def dc_elements(dc: str) -> list[tuple[str, str]]:
    """(element, value) of encoded Dublin Core (`encode_dc`; `store.read.decode_dc` gives whole
    DCValues)."""
    if dc.startswith("["):  # JSON: a separator in a name or tag
        return [(element, value) for element, value, _ in json.loads(dc)]
    pairs = []
    for item in dc.split(_VALUE) if dc else ():
        element, _, value = item.split(_FIELD, 2)
        pairs.append((element, value))
    return pairs


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
    words: str | None  # Prepared.words: computed in the worker, so that the write need not


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
    # index_text(identifier, dc), the words it is searched by, when computed where it was
    # prepared (a harvest's worker process); else the write computes them
    words: str | None = None

    def to_wire(self, listed: int | None = None) -> Wire:
        r = self.record
        return Wire(
            r.identifier, r.deleted, r.source, r.datestamp, r.fulltext, r.raw_xml, r.about,
            self.digest, self.setspecs, self.dc, self.provenance, self.specs, self.bodies, listed,
            self.words,
        )  # fmt: skip

    @classmethod
    def from_wire(cls, w: Wire) -> Prepared:
        record = Record(w.identifier, deleted=w.deleted, source=w.source, datestamp=w.datestamp,
                        fulltext=w.fulltext, raw_xml=w.raw_xml, about=w.about)  # fmt: skip
        return cls(record, w.digest, w.setspecs, w.dc, w.provenance, w.specs, w.bodies, w.words)


def prepare(record: Record, *, with_words: bool = False) -> Prepared:
    """`with_words`: its search words computed here too (see `Prepared.words`)."""
    record, encoded = _cleaned(record)
    about = None if record.deleted else record.about
    specs = dict.fromkeys(record.sets)
    setspecs = " ".join(specs)
    dc = encode_dc(record.dc)
    return Prepared(
        record,
        content_hash(record, encoded),
        setspecs,
        dc,
        json.dumps(record.provenance) if record.provenance else None,
        tuple(dict.fromkeys(a for spec in specs for a in ancestors(spec)) if ":" in setspecs else specs),
        tuple((p, record_body(None if record.deleted else xml, about)) for p, xml in encoded.items()),
        _words_of(record.identifier, record.dc) if with_words else None,  # index_text(identifier, dc)
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
