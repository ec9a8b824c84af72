"""Crosswalks from a record's native format to simple Dublin Core: pure functions, no I/O.

A harvested record without usable oai_dc still gets Dublin Core when its payload is in a
format known here; the result is the same `DCValue` list the harvester reads from oai_dc
(`harvester.convert.dublin_core`), so it is stored, rendered and served the same way.

    crosswalk("marc21", payload)  ->  [DCValue("title", "Arithmetic"), ...]   (None: unknown format)

The format is read from the payload's root namespace; the metadataPrefix or namespace the
caller passes is used only when the root has no known namespace (an unprefixed MARC record
inside OAI-PMH's default namespace, say), and only if the root's name fits that format.

Written here from the formats' public documentation (no code copied):

- MARC 21 slim (http://www.loc.gov/MARC21/slim): Library of Congress, "MARC to Dublin Core
  Crosswalk", unqualified section and its Leader/06 table, https://www.loc.gov/marc/marc2dc.html
  (2008; first version http://www.loc.gov/marc/marc2dc-2001.html).
- MODS 3.x (http://www.loc.gov/mods/v3): Library of Congress, "MODS to Dublin Core Metadata
  Element Set Mapping", version 3, https://www.loc.gov/standards/mods/mods-dcsimple.html (2012).
- DataCite kernel-2, -3 and -4 (http://datacite.org/schema/kernel-N), bare or in the
  oai_datacite wrapper (http://schema.datacite.org/oai/oai-1.1/ or oai-1.0/, its <payload>): DataCite
  Metadata Working Group, "DataCite to Dublin Core Mapping 4.4", https://doi.org/10.14454/qn00-qx85,
  and https://datacite-metadata-schema.readthedocs.io/en/4.5/mappings/dublincore-qualified/
  (each qualified element taken as its unqualified one).

Where we depart from them, and why:

- MARC names: the LoC crosswalk puts every name (1XX, 7XX, 720) in Contributor and leaves
  Creator unused. Harvesters and aggregators look for a creator, and the inverse LoC crosswalk
  (Dublin Core to MARC) puts Creator in 100/110; so 100/110/111 and any 7XX/720 whose relator
  says author or creator ($4 aut/cre, $e author/creator) are creators, the rest contributors.
- MARC 264 (RDA's publication statement, defined after the crosswalk) is read like 260 when its
  second indicator is 1 (publication). 880 fields (other scripts) are read as the field their
  $6 names. The 008 year comes first; a 260/264 $c is added only if it names another year.
- MODS names are built from their namePart elements only ("Family, Given, dates"), not from
  affiliation or role; a name is a creator if its role is creator/author (text or code) or it is
  usage="primary" without a role, else a contributor (the mapping leaves the choice to us).
- DataCite fundingReference and version are not mapped (the simple mapping gives them no element).
- Identifiers are made self-describing: a DOI becomes https://doi.org/..., a Handle
  https://hdl.handle.net/..., an ISBN URN:ISBN:..., an ISSN URN:ISSN:... (RFC 3187, RFC 3044).
- Every value has its whitespace runs folded to one space (the source's indentation is not
  content); empty values and exact repeats are left out; xml:lang is kept only when it is a
  valid language tag (as in oai_dc). The result is in oai_dc's element order.

Robust by construction: any element tree (missing, repeated or misplaced fields, comments,
truncated documents the lenient parser repaired) gives a list, possibly empty, never an error.
"""

from __future__ import annotations

from collections.abc import Iterable

from oaiserver.crosswalks.common import (
    DATACITE_NS,
    DATACITE_NS_PREFIX,
    MARC_NS,
    MODS_NS,
    OAI_DATACITE_NS,
    OAI_DATACITE_NS_10,
    Element,
    Statement,
    Walker,
    language_tag,
    local_name,
    namespace_of,
    payload_of,
)
from oaiserver.crosswalks.datacite import datacite, oai_datacite
from oaiserver.crosswalks.marc import marc
from oaiserver.crosswalks.mods import mods
from oaiserver.records import DC_ELEMENTS, DCValue

_ORDER = {name: i for i, name in enumerate(DC_ELEMENTS)}


def crosswalk(prefix_or_namespace: str, metadata: Element | None) -> list[DCValue] | None:
    """The Dublin Core of a native payload (or of the OAI `<metadata>` holding it); None when
    its format is not one we know. An empty list: a known format from which nothing was read."""
    root = payload_of(metadata)
    if root is None:
        return None
    namespace = namespace_of(root.tag)
    walker = _walker(namespace) or _walker_by_hint(prefix_or_namespace, local_name(root.tag))
    if walker is None:
        return None
    return finish(walker(root, f"{{{namespace}}}" if namespace else ""))


def known(prefix_or_namespace: str) -> bool:
    """Whether a metadataPrefix or namespace names a format crosswalked here."""
    return _walker(_HINTS.get(prefix_or_namespace.lower(), prefix_or_namespace)) is not None


def _walker(namespace: str) -> Walker | None:
    if namespace.startswith(DATACITE_NS_PREFIX):
        return datacite
    return _BY_NAMESPACE.get(namespace)


def _walker_by_hint(hint: str, root_name: str) -> Walker | None:
    """The walker of the format the caller names, if the root's name is one of that format's."""
    namespace = _HINTS.get(hint.lower(), hint)
    walker = _walker(namespace)
    roots = _ROOTS.get(DATACITE_NS if namespace.startswith(DATACITE_NS_PREFIX) else namespace, ())
    return walker if root_name in roots else None


def finish(statements: Iterable[Statement]) -> list[DCValue]:
    """Statements as stored Dublin Core: whitespace folded, empties and exact repeats left out,
    languages checked, in oai_dc's element order (stable within an element)."""
    seen: set[DCValue] = set()
    values: list[DCValue] = []
    for element, value, lang in statements:
        value = " ".join(value.split())
        if not value or element not in _ORDER:
            continue
        dc = DCValue(element, value, language_tag(lang) if lang else None)
        if dc not in seen:
            seen.add(dc)
            values.append(dc)
    values.sort(key=lambda v: _ORDER[v.element])
    return values


# ---- the formats known here -----------------------------------------------------------------

_BY_NAMESPACE: dict[str, Walker] = {
    MARC_NS: marc,
    MODS_NS: mods,
    OAI_DATACITE_NS: oai_datacite,
    OAI_DATACITE_NS_10: oai_datacite,
}
# The root element names each format's payload may have (checked when only the hint names it).
_ROOTS: dict[str, tuple[str, ...]] = {
    MARC_NS: ("record", "collection"),
    MODS_NS: ("mods", "modsCollection"),
    DATACITE_NS: ("resource",),
    OAI_DATACITE_NS: ("oai_datacite",),
}
# The metadataPrefixes repositories commonly give these formats.
_HINTS: dict[str, str] = {
    "marc21": MARC_NS,
    "marcxml": MARC_NS,
    "marc": MARC_NS,
    "mods": MODS_NS,
    "datacite": DATACITE_NS,
    "datacite3": DATACITE_NS,
    "datacite4": DATACITE_NS,
    "oai_datacite": OAI_DATACITE_NS,
    "oai_datacite3": OAI_DATACITE_NS,
}
