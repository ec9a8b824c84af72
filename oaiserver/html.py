"""What the human views need beyond a protocol answer: Dublin Core read back from stored
fragments, errors in words, and links. Pure functions; the templates do the markup and
Jinja's autoescaping keeps record content as text."""

from __future__ import annotations

from urllib.parse import urlencode

from lxml import etree

from oaiserver.landing import relocate_text
from oaiserver.oai_dc import DC_NAMESPACE

EXPLAIN = {
    "badVerb": "The request does not name one of the six OAI-PMH verbs exactly once.",
    "badArgument": "An argument is missing, unknown, repeated, or has a value of the wrong form.",
    "badResumptionToken": "The resumption token is not one this repository issued, or it has expired. "
    "Start the list again from its first page.",
    "cannotDisseminateFormat": "This metadata format is not available here (or not for this record).",
    "idDoesNotExist": "No record has this identifier.",
    "noRecordsMatch": "No record matches this selection of dates, set and format.",
    "noMetadataFormats": "This record cannot be shown in any metadata format.",
    "noSetHierarchy": "This repository does not organise its records in sets.",
}

_PARSER = etree.XMLParser(resolve_entities=False, no_network=True)


def dc_fields(fragment: str | None, moved: tuple[str, str] | None = None) -> list[tuple[str, str]]:
    """(element, value) pairs of an oai_dc fragment, in document order; landing URLs on the
    configured site, as the XML has them (`moved`: see landing.py)."""
    if not fragment:
        return []
    fragment = relocate_text(fragment, moved)
    try:
        root = etree.fromstring(fragment.encode("utf-8"), _PARSER)
    except etree.XMLSyntaxError:
        return [("metadata", "(not readable as XML)")]
    return [(etree.QName(el).localname, (el.text or "").strip()) for el in root.iter(f"{{{DC_NAMESPACE}}}*")]


def query(**args: str | None) -> str:
    """A query string from the arguments that are set."""
    return urlencode({k: v for k, v in args.items() if v is not None})
