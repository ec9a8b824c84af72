"""The metadata formats the repository serves: one registry that ingest, the protocol, the
pages for people and the harvester read, so that adding a format is one entry here (and its
tests), not an edit in each of them.

A format renders a local record from its Dublin Core when it can (`render`); one without a
renderer is served only for records that carry it already (harvested, verbatim).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from oaiserver import oai_dc
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
