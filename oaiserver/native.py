"""A partner's record in a further format, served again under our header (OAI-PMH's
`<metadata>` payload is the partner's, byte for byte).

Why a served `formats` row is built when the record is harvested, not when it is asked for:
lists, GetRecord, counts and keyset paging already read one `formats` row per (record,
prefix), so a harvested format is paged exactly like oai_dc, flat, with nothing parsed or
joined on the way out.
"""

from __future__ import annotations

import copy
import re
from typing import NamedTuple

from lxml import etree

from oaiserver.records import OAI_NS
from oaiserver.xmltext import text

_PREFIX = r"(?:[A-Za-z_][\w.-]*:)?"
# The payload: what lies between the `<metadata>` that follows the header and its end tag.
_METADATA = re.compile(
    rf"</{_PREFIX}header\s*>\s*<(?P<p>{_PREFIX})metadata(?:\s[^>]*)?>\s*(?P<payload>.*?)\s*</(?P=p)metadata\s*>",
    re.DOTALL,
)
_PARSER = etree.XMLParser(resolve_entities=False, no_network=True, huge_tree=True)


class Payload(NamedTuple):
    metadata: bytes  # the metadata element, UTF-8
    namespace: str  # its namespace (empty: none)


def payload(raw_record: str) -> Payload | None:
    """The metadata element of a partner's `<record>` (as received), in UTF-8, and its
    namespace; None when it has none (deleted) or it cannot be read.

    The bytes the partner sent when they stand on their own (the element declares the
    namespaces it uses, as partners' payloads do); otherwise the element serialized with the
    declarations it inherited, and those alone."""
    try:
        element = etree.fromstring(raw_record.encode("utf-8"), _PARSER)
    except etree.XMLSyntaxError:
        return None
    found = element.find(f"{{{OAI_NS}}}metadata")
    child = next((c for c in found if isinstance(c.tag, str)), None) if found is not None else None
    if child is None:
        return None
    namespace = etree.QName(child).namespace or ""
    match = _METADATA.search(raw_record)
    if match is not None:
        cut = match.group("payload").encode("utf-8")
        try:
            alone = etree.fromstring(cut, _PARSER)
        except etree.XMLSyntaxError:
            alone = None  # a prefix it uses is declared on an ancestor
        if alone is not None and alone.tag == child.tag:
            return Payload(cut, namespace)
    standalone = copy.deepcopy(child)
    standalone.tail = None
    etree.cleanup_namespaces(standalone)
    return Payload(etree.tostring(standalone, encoding="utf-8"), namespace)


_NAMESPACE = re.compile(r"<metadataNamespace>[^<]*</metadataNamespace>")


def about_in(about: str | None, namespace: str) -> str | None:
    """The provenance `<about>` of a record (as served in its first format), for the record
    served in a further format: its originDescription names that format's `namespace`. Only the
    first metadataNamespace is ours (convert.provenance_container writes it before any nested
    originDescription, which is the partner's own account of where the record came from)."""
    if about is None or not namespace:
        return about
    return _NAMESPACE.sub(f"<metadataNamespace>{text(namespace)}</metadataNamespace>", about, count=1)
