"""The oai_dc crosswalk: Dublin Core statements to the fragment served inside `<metadata>`.

Run once, when a record is written; serving only copies the result.
"""

from __future__ import annotations

from collections.abc import Iterable

from oaiserver.records import DC_ELEMENTS, DCValue, clean_text, has_forbidden_chars
from oaiserver.xmltext import attr, text

PREFIX = "oai_dc"
NAMESPACE = "http://www.openarchives.org/OAI/2.0/oai_dc/"
SCHEMA = "http://www.openarchives.org/OAI/2.0/oai_dc.xsd"
DC_NAMESPACE = "http://purl.org/dc/elements/1.1/"

_OPEN = (
    f'<oai_dc:dc xmlns:oai_dc="{NAMESPACE}" xmlns:dc="{DC_NAMESPACE}" '
    'xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" '
    f'xsi:schemaLocation="{NAMESPACE} {SCHEMA}">'
)
_ORDER = {name: i for i, name in enumerate(DC_ELEMENTS)}


def render(values: Iterable[DCValue]) -> str:
    """The `<oai_dc:dc>` fragment: elements in the canonical order, empty values left out."""
    ordered = sorted((v for v in values if v.element in _ORDER), key=lambda v: _ORDER[v.element])
    # One scan for characters XML forbids over all values; cleaning value by value only if needed.
    dirty = has_forbidden_chars("".join([v.value for v in ordered]))
    parts = [_OPEN]
    for v in ordered:
        value = (clean_text(v.value) if dirty else v.value).strip()
        if not value:
            continue
        lang = f' xml:lang="{attr(v.lang)}"' if v.lang else ""
        parts.append(f"<dc:{v.element}{lang}>{text(value)}</dc:{v.element}>")
    parts.append("</oai_dc:dc>")
    return "".join(parts)
