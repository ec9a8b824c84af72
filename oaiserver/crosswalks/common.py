"""What the crosswalks share: names of elements, their text and language, identifiers."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from typing import TypeAlias

from lxml import etree

Element: TypeAlias = etree._Element
# One statement before it is checked: (element, value, xml:lang or None).
Statement: TypeAlias = tuple[str, str, str | None]
Walker: TypeAlias = Callable[[Element, str], Iterator[Statement]]

MARC_NS = "http://www.loc.gov/MARC21/slim"
MODS_NS = "http://www.loc.gov/mods/v3"
DATACITE_NS_PREFIX = "http://datacite.org/schema/kernel-"
DATACITE_NS = DATACITE_NS_PREFIX + "4"
OAI_DATACITE_NS = "http://schema.datacite.org/oai/oai-1.1/"
OAI_DATACITE_NS_10 = "http://schema.datacite.org/oai/oai-1.0/"  # the wrapper's first version, same shape
OAI_METADATA = "{http://www.openarchives.org/OAI/2.0/}metadata"
XML_LANG = "{http://www.w3.org/XML/1998/namespace}lang"
XLINK_HREF = "{http://www.w3.org/1999/xlink}href"
_LANGUAGE = re.compile(r"[a-zA-Z]{1,8}(-[a-zA-Z0-9]{1,8})*")  # xs:language, as xml:lang requires


def local_name(tag: object) -> str:
    """An element's name without its namespace; "" for a comment or processing instruction."""
    if not isinstance(tag, str):
        return ""
    return tag.rsplit("}", 1)[-1]


def namespace_of(tag: object) -> str:
    """The namespace of a tag ("" if none). A tag the lenient parser kept with an undeclared
    prefix (`marc:record`) has no namespace."""
    if isinstance(tag, str) and tag.startswith("{"):
        return tag[1 : tag.find("}")]
    return ""


def text_of(el: Element) -> str:
    """An element's text, nested markup included, whitespace folded."""
    raw = (el.text or "") if len(el) == 0 else "".join(el.itertext())
    return " ".join(raw.split())


def lang_of(el: Element) -> str | None:
    return el.get(XML_LANG)


def language_tag(value: str | None) -> str | None:
    """`value` as a valid xml:lang (xs:language), `en_US` read as `en-US`; None if it is not one."""
    if not value:
        return None
    value = value.strip()
    if _LANGUAGE.fullmatch(value):
        return value
    fixed = value.replace("_", "-")
    return fixed if _LANGUAGE.fullmatch(fixed) else None


_DOI = re.compile(r"(?:doi:|(?:https?://)?(?:dx\.)?doi\.org/)?\s*(10\.\S+)", re.IGNORECASE)
_HANDLE = re.compile(r"(?:hdl:)?\s*(\d[\w.]*/\S+)", re.IGNORECASE)
_ISBN = re.compile(r"(?:ISBN[:\s]*)?([0-9][0-9\-]{8,15}[0-9Xx])(?![0-9Xx\-])", re.IGNORECASE)
_ISSN = re.compile(r"(?:ISSN[:\s]*)?([0-9]{4}-?[0-9]{3}[0-9Xx])(?![0-9Xx\-])", re.IGNORECASE)


def _doi(value: str) -> str:
    found = _DOI.fullmatch(value)
    return f"https://doi.org/{found.group(1)}" if found else value


def _handle(value: str) -> str:
    found = _HANDLE.fullmatch(value)
    return f"https://hdl.handle.net/{found.group(1)}" if found else value


def _isbn(value: str) -> str:
    found = _ISBN.match(value)
    return f"URN:ISBN:{found.group(1)}" if found else value


def _issn(value: str) -> str:
    found = _ISSN.match(value)
    return f"URN:ISSN:{found.group(1)}" if found else value


_IDENTIFIER_FORMS: dict[str, Callable[[str], str]] = {
    "doi": _doi,
    "handle": _handle,
    "hdl": _handle,
    "isbn": _isbn,
    "issn": _issn,
    "eissn": _issn,
    "issn-l": _issn,
}


def identifier(kind: str | None, value: str) -> str:
    """An identifier of a declared kind (DOI, Handle, ISBN, ISSN...) in a self-describing form;
    one of another kind, or one that does not look like its kind, as it is."""
    value = " ".join(value.split())
    form = _IDENTIFIER_FORMS.get((kind or "").strip().lower())
    return form(value) if form is not None and value else value


def payload_of(metadata: Element | None) -> Element | None:
    """The payload itself: the first element inside an OAI `<metadata>`, or the element given."""
    if metadata is None or not isinstance(metadata.tag, str):
        return None
    return first_child(metadata) if metadata.tag == OAI_METADATA else metadata


def first_child(el: Element) -> Element | None:
    """The first child that is an element (not a comment or processing instruction)."""
    return next((child for child in el if isinstance(child.tag, str)), None)
