"""The oai_dc crosswalk: Dublin Core statements to the fragment served inside `<metadata>`.

Run once, when a record is written; serving only copies the result.
"""

from __future__ import annotations

from collections.abc import Iterable
from urllib.parse import quote

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

# A record's landing page is the site's address + /records/<identifier>. The address belongs to
# the deployment (repository.base_url), not to the record: a stored record holds SITE in its
# place, so a move of the site changes no record (nor its content hash, nor its datestamp), and
# serving puts the configured address in with one bytes.replace on the page (`resolve`).
SITE = "{oaiserver:site}"
_STORED = f"<dc:identifier>{SITE}"
_STORED_BYTES = _STORED.encode()


class Landing(str):
    """A landing URL as the crosswalk writes it (`landing_ref`): the one value whose SITE is
    completed when served. SITE at the start of any other value is kept as written."""


def landing_path(identifier: str) -> str:
    """The landing page's path under the site's address."""
    return f"/records/{quote(identifier, safe=':')}"


def landing_ref(identifier: str) -> Landing:
    """A record's dc:identifier as stored: its landing URL with SITE for the site's address."""
    return Landing(SITE + landing_path(identifier))


def resolve(body: bytes, site_url: str) -> bytes:
    """Stored `<dc:identifier>`s completed with the site's address. `<` is escaped in any
    other text a response holds, so nothing else can match; a body without one is returned
    as it is (bytes.replace copies nothing then)."""
    return body.replace(_STORED_BYTES, b"<dc:identifier>" + text(site_url).encode())


def resolve_text(fragment: str, site_url: str) -> str:
    """`resolve` for a fragment read as text (the views for people)."""
    return fragment.replace(_STORED, "<dc:identifier>" + text(site_url))


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
        escaped = text(value)
        if escaped.startswith(SITE) and type(v.value) is not Landing:  # not ours: never completed
            escaped = "&#123;" + escaped[1:]
        parts.append(f"<dc:{v.element}{lang}>{escaped}</dc:{v.element}>")
    parts.append("</oai_dc:dc>")
    return "".join(parts)
