"""Reading responses safely: the official schemas loaded offline, XML parsed with no DTD, entities
or network, and datestamps held to the server's own syntax (`oaiserver.records`)."""

from __future__ import annotations

import functools
import re
from collections.abc import Sized
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from lxml import etree

from oaiserver.records import DATESTAMP_RES, DAY, OAI_NS, SECONDS

SCHEMA_DIR = Path(__file__).parent.parent / "schemas"

OAI_DC_NS = "http://www.openarchives.org/OAI/2.0/oai_dc/"
OAI_DC_SCHEMA = "http://www.openarchives.org/OAI/2.0/oai_dc.xsd"
OAI_ID_NS = "http://www.openarchives.org/OAI/2.0/oai-identifier"
OAI = f"{{{OAI_NS}}}"
OAI_ID = f"{{{OAI_ID_NS}}}"

# The driver schema imports every namespace from the local files, xml.xsd and simpledc first:
# a namespace imported first is never fetched again, so the schemas' own network imports are
# skipped (libxml2 only warns). See tests/data/schemas/SOURCES.md.
SCHEMA_ORDER = (
    ("http://www.w3.org/XML/1998/namespace", "xml.xsd"),
    ("http://purl.org/dc/elements/1.1/", "simpledc20021212.xsd"),
    (OAI_NS, "OAI-PMH.xsd"),
    (OAI_DC_NS, "oai_dc.xsd"),
    ("http://www.openarchives.org/OAI/2.0/provenance", "provenance.xsd"),
    (OAI_ID_NS, "oai-identifier.xsd"),
    ("http://www.openarchives.org/OAI/2.0/friends/", "friends.xsd"),
    ("http://www.openarchives.org/OAI/2.0/branding/", "branding.xsd"),
)

FORMATS = {DAY: "%Y-%m-%d", SECONDS: "%Y-%m-%dT%H:%M:%SZ"}
# RFC 3986 (IRI: non-ASCII allowed): a scheme, then URI characters or %-escapes; no whitespace.
URI_RE = re.compile(
    r"[A-Za-z][A-Za-z0-9+.\-]*:(?:[A-Za-z0-9\-._~:/?#\[\]@!$&'()*+,;=]|%[0-9A-Fa-f]{2}|[^\x00-\x7f\s])+"
)


@functools.cache
def load_schema(folder: Path = SCHEMA_DIR) -> etree.XMLSchema:
    """The official schemas, offline: one driver schema importing every namespace locally."""
    imports = "".join(
        f'<xs:import namespace="{ns}" schemaLocation="{(folder / name).resolve().as_uri()}"/>'
        for ns, name in SCHEMA_ORDER
    )
    parser = etree.XMLParser(no_network=True, resolve_entities=False)
    driver = etree.fromstring(f'<xs:schema xmlns:xs="http://www.w3.org/2001/XMLSchema">{imports}</xs:schema>', parser)
    return etree.XMLSchema(driver)


def parse(body: bytes) -> Any:
    """Parse a response with no DTD, no entity expansion and no network; refuse any DOCTYPE."""
    parser = etree.XMLParser(no_network=True, resolve_entities=False, load_dtd=False, huge_tree=False)
    doc = etree.fromstring(body, parser)
    if doc.getroottree().docinfo.doctype:
        raise ValueError("it declares a DOCTYPE; OAI-PMH responses must parse without DTDs or entities")
    return doc


def parse_utc(text: str, granularity: str) -> datetime | None:
    """A datestamp in exactly this granularity, or None. The server's syntax (records.py):
    ASCII digits only, which strptime alone would not insist on."""
    if not DATESTAMP_RES[granularity].fullmatch(text):
        return None
    try:
        return datetime.strptime(text, FORMATS[granularity])
    except ValueError:
        return None


def parse_any(text: str) -> datetime | None:
    return parse_utc(text, SECONDS) or parse_utc(text, DAY)


def date_problem(text: str, granularity: str | None) -> str | None:
    """Why `text` is not a legal datestamp in `granularity` (either legal one if None)."""
    if (granularity and parse_utc(text, granularity)) or (granularity is None and parse_any(text)):
        return None
    if re.search(r":[0-9]{2}\.[0-9]", text):
        why = "has fractional seconds"
    elif re.search(r"([+-][0-9]{2}:?[0-9]{2}|[+-][0-9]{2})$", text) and "T" in text:
        why = "has a UTC offset instead of Z"
    elif granularity and parse_any(text):
        why = f"is not in the declared granularity {granularity}"
    else:
        why = "is not YYYY-MM-DD or YYYY-MM-DDThh:mm:ssZ"
    return f"{text!r} {why}"


def one_line(text: str, limit: int = 240) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def more(items: Sized, shown: int) -> str:
    """' (+N more)' for the items beyond the first `shown`, or nothing."""
    return f" (+{len(items) - shown} more)" if len(items) > shown else ""


def child_text(element: Any, tag: str) -> str:
    """The stripped text of an OAI-PMH child element; '' when it is absent or empty."""
    return (element.findtext(f"{OAI}{tag}") or "").strip()


def payload(metadata: Any) -> Any:
    """The element inside <metadata> (comments and processing instructions skipped), or None."""
    if metadata is None:
        return None
    return next((child for child in metadata if isinstance(child.tag, str)), None)


def is_oai_dc(element: Any) -> bool:
    return element is not None and element.tag == f"{{{OAI_DC_NS}}}dc"


def header_key(header: Any) -> tuple[str, str, str, list[str]]:
    """What GetRecord and ListIdentifiers must agree on: identifier, datestamp, status, setSpecs."""
    return (
        child_text(header, "identifier"),
        child_text(header, "datestamp"),
        header.get("status") or "",
        sorted((s.text or "").strip() for s in header.findall(f"{OAI}setSpec")),
    )


def normal_url(url: str) -> tuple[str, str, str]:
    """A URL as compared for 'differs only in spelling': scheme, host:port, path without its final slash."""
    p = urlsplit(url)
    port = p.port or {"http": 80, "https": 443}.get(p.scheme.lower(), 0)
    return p.scheme.lower(), f"{(p.hostname or '').lower()}:{port}", p.path.rstrip("/") or "/"
