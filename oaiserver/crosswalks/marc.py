"""MARC 21 slim to simple Dublin Core: the Library of Congress "MARC to Dublin Core Crosswalk"
(https://www.loc.gov/marc/marc2dc.html), unqualified, with the departures the package says."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from typing import NamedTuple

from oaiserver.crosswalks.common import Element, Statement, identifier


class Field(NamedTuple):
    """One MARC data field: tag, indicators and its subfields as (code, value), in order."""

    tag: str
    ind1: str
    ind2: str
    subfields: list[tuple[str, str]]

    def values(self, codes: str) -> list[str]:
        return [value for code, value in self.subfields if code in codes]


class MarcRecord(NamedTuple):
    leader: str
    control: dict[str, str]
    fields: list[Field]


# Subfields that carry control data (linkage, authority numbers, sources, relators), never text.
_CONTROL_CODES = frozenset("0123456789")
# A heading's subdivisions (form, general, chronological, geographic): joined with " -- ".
_SUBDIVISIONS = "vxyz"
_TRAILING = " /:;,=."
_TRAILING_BUT_PERIOD = " /:;,="


def chop(value: str, *, keep_period: bool = False) -> str:
    """A value without the ISBD punctuation that only separated it from the next subfield
    (" /", " :", ";", ",", "=", and, unless kept, "."); "..." is left as it is."""
    value = " ".join(value.split())
    if value.endswith("..."):
        return value
    return value.rstrip(_TRAILING_BUT_PERIOD if keep_period else _TRAILING)


_MARC_ELEMENTS = ("datafield", "subfield", "controlfield", "leader")


def marc_record(root: Element, q: str) -> MarcRecord | None:
    """A MARC record read once into plain tuples; `root` is a record or a collection (its
    first record is read). None if there is no record. Tags are compared whole (a tag's local
    name costs a string split, and this loop runs for every field of every record)."""
    record = root if root.tag == f"{q}record" else next((r for r in root if r.tag == f"{q}record"), None)
    if record is None:
        return None
    datafield, subfield, controlfield, leader_tag = (f"{q}{name}" for name in _MARC_ELEMENTS)
    leader = ""
    control: dict[str, str] = {}
    fields: list[Field] = []
    for el in record:
        tag = el.tag
        if tag == datafield:
            fields.append(_marc_field(el, subfield))
        elif tag == controlfield:
            control.setdefault((el.get("tag") or "").strip(), el.text or "")
        elif tag == leader_tag and not leader:
            leader = el.text or ""
    return MarcRecord(leader, control, fields)


def _marc_field(el: Element, subfield: str) -> Field:
    """A data field; a subfield's text is its own (MARCXML subfields hold no markup)."""
    subfields = [((sf.get("code") or " ")[:1], sf.text or "") for sf in el if sf.tag == subfield]
    attributes = el.attrib
    tag = (attributes.get("tag") or "").strip()
    if tag == "880":  # another script: read as the field its linkage ($6 "245-01/(N") names
        linked = next((value for code, value in subfields if code == "6"), "").strip()
        tag = linked[:3] if linked[:3].isdigit() else tag
    return Field(tag, attributes.get("ind1") or " ", attributes.get("ind2") or " ", subfields)


class Rule(NamedTuple):
    """How one MARC field gives one Dublin Core element: which subfields, joined with spaces
    in record order (`each`: each subfield a value of its own), then `fix`ed."""

    element: str
    codes: str
    each: bool = False
    fix: Callable[[str], str] = chop


def _note(value: str) -> str:
    return chop(value, keep_period=True)


_NOTE_CODES = "abcdefghijklmnopqrstuvwxyz"
_NAME = {"100": "abcdq", "110": "abcdgn", "111": "acdegnq"}
_NAME_TAGS = frozenset({"100", "110", "111", "700", "710", "711", "720"})
_ENTRY = "ot"  # linking entries: the related item's identifier and title

_MARC_RULES: dict[str, tuple[Rule, ...]] = {
    "245": (Rule("title", "abfgknps"),),
    "246": (Rule("title", "abfgnp"),),
    "050": (Rule("subject", "ab"),),
    "060": (Rule("subject", "ab"),),
    "080": (Rule("subject", "ab"),),
    "082": (Rule("subject", "a", each=True),),
    "653": (Rule("subject", "a", each=True),),
    "751": (Rule("coverage", "a"),),
    "260": (Rule("publisher", "ab"),),
    "340": (Rule("format", _NOTE_CODES),),
    "856": (Rule("format", "q", each=True), Rule("identifier", "u", each=True)),
    "020": (Rule("identifier", "a", each=True, fix=lambda v: identifier("isbn", chop(v))),),
    "022": (Rule("identifier", "a", each=True, fix=lambda v: identifier("issn", chop(v))),),
    "546": (Rule("language", "ab", fix=_note),),
    "530": (Rule("relation", _NOTE_CODES, fix=_note),),
    "506": (Rule("rights", _NOTE_CODES, fix=_note),),
    "540": (Rule("rights", _NOTE_CODES, fix=_note),),
    "534": (Rule("source", "t"), Rule("description", _NOTE_CODES, fix=_note)),
    "786": (Rule("source", _ENTRY),),
    **{str(tag): (Rule("relation", _ENTRY),) for tag in (*range(760, 786), 787)},
    **{
        str(tag): (Rule("description", _NOTE_CODES, fix=_note),)
        for tag in range(500, 600)
        if tag not in (506, 530, 534, 540, 546)
    },
}
_HEADINGS = {tag: "subject" for tag in ("600", "610", "611", "630", "650")} | {
    "651": "coverage",
    "655": "type",
    "662": "coverage",
    "752": "coverage",
}
_AUTHOR_CODES = frozenset({"aut", "cre"})
_AUTHOR_TERMS = frozenset({"author", "creator"})
# Leader/06 (type of record) to the DCMI Type Vocabulary, per the crosswalk's Leader table.
_LEADER_TYPES = {**dict.fromkeys("acdt", "Text"), **dict.fromkeys("efgk", "Image"), **dict.fromkeys("ij", "Sound")}
_YEAR = re.compile(r"[0-9]{4}")


def marc(root: Element, q: str) -> Iterator[Statement]:
    record = marc_record(root, q)
    if record is None:
        return
    yield from _marc_control(record)
    for field in record.fields:
        yield from _marc_field_statements(field)
    yield from _marc_dates(record)


def _marc_field_statements(field: Field) -> Iterator[Statement]:
    tag = field.tag
    for rule in _MARC_RULES.get(tag, ()):
        yield from _by_rule(field, rule)
    if tag in _HEADINGS:
        yield _HEADINGS[tag], _heading(field), None
    elif tag in _NAME_TAGS:
        yield from _marc_name(field)
    elif tag == "024":
        yield from _marc_standard_identifier(field)
    elif tag == "041":
        yield from _marc_languages(field)
    elif tag == "264" and field.ind2 == "1":
        yield "publisher", chop(" ".join(field.values("ab"))), None


def _by_rule(field: Field, rule: Rule) -> Iterator[Statement]:
    values = field.values(rule.codes)
    if not rule.each:
        values = [" ".join(values)]
    for value in values:
        yield rule.element, rule.fix(value), None


def _heading(field: Field) -> str:
    """A subject heading: its main part, then each subdivision after " -- " (LCSH's form)."""
    main: list[str] = []
    subdivisions: list[str] = []
    for code, value in field.subfields:
        if code in _CONTROL_CODES or code == "e" or code == "4":
            continue
        (subdivisions if code in _SUBDIVISIONS else main).append(value)
    parts = [chop(" ".join(main))] if main else []
    return " -- ".join([*parts, *(chop(s) for s in subdivisions)])


def _marc_name(field: Field) -> Iterator[Statement]:
    """1XX are creators; 7XX and 720 are creators when their relator says author or creator."""
    codes = _NAME.get("1" + field.tag[1:], "a") if field.tag != "720" else "a"
    name = chop(" ".join(field.values(codes)))
    author = field.tag[0] == "1" or _says_author(field)
    yield ("creator" if author else "contributor"), name, None


def _says_author(field: Field) -> bool:
    """A relator code ($4, or a relator URI ending in one) or term says author or creator. The
    term is in $e, but in $j for meetings (711), whose $e is a subordinate unit."""
    term_code = "j" if field.tag.endswith("11") else "e"
    for code, value in field.subfields:
        term = chop(value).lower()
        if (code == "4" and term.rsplit("/", 1)[-1] in _AUTHOR_CODES) or (code == term_code and term in _AUTHOR_TERMS):
            return True
    return False


def _marc_standard_identifier(field: Field) -> Iterator[Statement]:
    """024: other standard identifiers; one whose source ($2) is doi or hdl is made a URI."""
    source = next((value for code, value in field.subfields if code == "2"), "")
    for value in field.values("a"):
        yield "identifier", identifier(source, chop(value)), None


def _marc_languages(field: Field) -> Iterator[Statement]:
    """041's codes; older records run several together in one subfield (`engfre`)."""
    for value in field.values("abdefghj"):
        code = value.strip()
        if len(code) > 3 and len(code) % 3 == 0 and code.isalpha():
            yield from (("language", code[i : i + 3], None) for i in range(0, len(code), 3))
        else:
            yield "language", chop(code), None


def _marc_control(record: MarcRecord) -> Iterator[Statement]:
    """Type from the Leader, language from 008/35-37."""
    leader = record.leader
    kind = _LEADER_TYPES.get(leader[6:7])
    if kind:
        yield "type", kind, None
    if leader[7:8] == "c" or (leader[6:7] == "p" and leader[7:8] == "s"):
        yield "type", "Collection", None
    language = record.control.get("008", "")[35:38]
    if language.isalpha() and language.islower():
        yield "language", language, None


def _marc_dates(record: MarcRecord) -> Iterator[Statement]:
    """008/07-10 when it is a year, then each 260/264 $c (and 260 $g) that names another one."""
    year = record.control.get("008", "")[7:11]
    years = {year} if _YEAR.fullmatch(year) else set()
    if years:
        yield "date", year, None
    for field in record.fields:
        if field.tag == "260" or (field.tag == "264" and field.ind2 == "1"):
            for value in field.values("cg" if field.tag == "260" else "c"):
                date = chop(value)
                if set(_YEAR.findall(date)) - years or not _YEAR.search(date):
                    yield "date", date, None
