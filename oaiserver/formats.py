"""The metadata formats the repository serves: one registry that ingest, the protocol, the
pages for people and the harvester read, so that adding a format is one entry here (and its
tests), not an edit in each of them.

A format renders a local record from its Dublin Core when it can (`render`); one without a
renderer is served only for records that carry it already (harvested, verbatim). A native
format we can read (`NATIVE`: MARC21 slim, MODS, DataCite) gives a harvested record its Dublin
Core by a crosswalk (`dublin_core`), so that the record is served in oai_dc like any other.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from lxml import etree

from oaiserver import crosswalks, oai_dc
from oaiserver.crosswalks.common import DATACITE_NS_PREFIX, MARC_NS, MODS_NS, OAI_DATACITE_NS, OAI_DATACITE_NS_10
from oaiserver.records import DCValue


@dataclass(frozen=True)
class MetadataFormat:
    prefix: str
    schema: str
    namespace: str
    # How a record's Dublin Core is rendered in this format (the fragment inside <metadata>).
    render: Callable[[Sequence[DCValue]], str] | None = field(default=None, compare=False, repr=False)


OAI_DC = MetadataFormat(oai_dc.PREFIX, oai_dc.SCHEMA, oai_dc.NAMESPACE, oai_dc.render)

# Every format, by metadataPrefix, in the order ListMetadataFormats gives them.
REGISTRY: dict[str, MetadataFormat] = {f.prefix: f for f in (OAI_DC,)}

# The format every repository must offer (OAI-PMH 2.0, section 3.4), and a partner's default.
DEFAULT = OAI_DC.prefix


def rendered(dc: Sequence[DCValue], *, deleted: bool = False) -> dict[str, str]:
    """A record's metadata in every format that renders from Dublin Core (empty for a
    deleted record, which is listed in those formats without metadata)."""
    return {f.prefix: "" if deleted else f.render(dc) for f in REGISTRY.values() if f.render is not None}


# Native formats whose records are crosswalked to Dublin Core (oaiserver.crosswalks), by the
# namespace of their root element; DataCite's kernels are one format (kernel-2, -3, -4...).
NATIVE: dict[str, MetadataFormat] = {
    f.namespace: f
    for f in (
        MetadataFormat("marc21", "http://www.loc.gov/standards/marcxml/schema/MARC21slim.xsd", MARC_NS),
        MetadataFormat("mods", "http://www.loc.gov/standards/mods/v3/mods-3-7.xsd", MODS_NS),
        MetadataFormat("datacite", "http://schema.datacite.org/meta/kernel-4/metadata.xsd", DATACITE_NS_PREFIX + "4"),
        MetadataFormat("oai_datacite", "http://schema.datacite.org/oai/oai-1.1/oai.xsd", OAI_DATACITE_NS),
        MetadataFormat("oai_datacite", "http://schema.datacite.org/oai/oai-1.0/oai.xsd", OAI_DATACITE_NS_10),
    )
}


def native(namespace: str) -> MetadataFormat | None:
    """The native format a payload's namespace names, if it is one we crosswalk."""
    if namespace.startswith(DATACITE_NS_PREFIX):
        return NATIVE[DATACITE_NS_PREFIX + "4"]
    return NATIVE.get(namespace)


def dublin_core(payload: etree._Element, prefix: str) -> list[DCValue] | None:
    """The Dublin Core of a native payload by its format's crosswalk; None when the format is
    not one we know. The format is the payload's namespace, or, for a root in no namespace we
    know (MARC elements put in OAI-PMH's own), the `prefix` it was harvested with."""
    namespace = etree.QName(payload).namespace or ""
    return crosswalks.crosswalk(namespace if native(namespace) is not None else prefix, payload)
