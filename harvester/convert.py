"""A partner's `<record>` elements to records for the store: pure functions, no I/O.

A record keeps the XML received verbatim (`raw_xml`) and its provenance; its Dublin Core is
read from the payload (oai_dc; a native format we know, MARC21 slim, MODS or DataCite, by its
crosswalk, formats.dublin_core; or any `dc:` elements of another format such as nsdl_dc) and
rendered with our own crosswalk, so republished records are served like local ones, with an
OAI provenance container in `<about>`. A record that cannot be read raises RecordError and is
counted by the caller, never dropped silently. Dublin Core text that is UTF-8 encoded twice is
undone where that is exact, and counted either way (harvester.encodings.mend); the verbatim
XML keeps what the partner sent.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from typing import NamedTuple

from lxml import etree

from harvester.client import Page, utc
from harvester.encodings import DOUBLED, SUSPECT, UNDOUBLED, mend
from oaiserver import formats, oai_dc
from oaiserver.config import Partner, partner_set, partner_subset
from oaiserver.crosswalks.common import language_tag
from oaiserver.records import DC_ELEMENTS, OAI_NS, DCValue, Record, parse_datestamp
from oaiserver.rows import Prepared
from oaiserver.xmltext import attr, text

PROVENANCE_NS = "http://www.openarchives.org/OAI/2.0/provenance"
PROVENANCE_SCHEMA = "http://www.openarchives.org/OAI/2.0/provenance.xsd"
_PROV = f"{{{PROVENANCE_NS}}}"
_OAI = f"{{{OAI_NS}}}"
_HEADER, _METADATA, _ABOUT = f"{_OAI}header", f"{_OAI}metadata", f"{_OAI}about"
_IDENTIFIER, _DATESTAMP, _SETSPEC = f"{_OAI}identifier", f"{_OAI}datestamp", f"{_OAI}setSpec"
_DC = f"{{{oai_dc.DC_NAMESPACE}}}"
_OAI_DC_ROOT = f"{{{oai_dc.NAMESPACE}}}dc"
_XML_LANG = "{http://www.w3.org/XML/1998/namespace}lang"
_ELEMENTS = frozenset(DC_ELEMENTS)
MAX_NESTED_ORIGINS = 8
# How a failure of a record without an identifier is named: it cannot be quarantined (asked for again).
_UNNAMED = re.compile(r"(?:record|header) \d+ of the page")


def named(where: str) -> bool:
    """Whether a failure's `where` is the record's identifier (not its place on the page)."""
    return _UNNAMED.fullmatch(where) is None


class RecordError(ValueError):
    """A record that cannot be read; the message says what is wrong."""


@dataclass
class Converted:
    """A page's records, and the ones that failed: (identifier or position, reason)."""

    records: list[Record] = field(default_factory=list)
    failures: list[tuple[str, str]] = field(default_factory=list)
    without_dc: int = 0  # live records whose payload carries no Dublin Core: stored, not republished
    repaired: list[str] = field(default_factory=list)  # identifiers of records the parser repaired
    prepared: list[Prepared] = field(default_factory=list)  # records prepared for the store in a worker
    # The datestamp each of `prepared` was listed at, as the worker read it (see `listed_at`)
    listed: list[int | None] = field(default_factory=list)
    undoubled: list[str] = field(default_factory=list)  # records whose text was UTF-8 encoded twice: undone
    # (identifier, the first sequence seen) of records keeping text that looks UTF-8 encoded twice: not undone exactly
    doubled: list[tuple[str, str]] = field(default_factory=list)

    @property
    def to_write(self) -> list[Record | Prepared]:
        return [*self.records, *self.prepared]

    @property
    def deleted(self) -> int:
        return sum(1 for r in self.records if r.deleted) + sum(1 for p in self.prepared if p.record.deleted)


class Mending(NamedTuple):
    """What `mend` found in a record's Dublin Core: text encoded twice that was undone, and the
    first sequence of such text kept because it could not be undone exactly (empty if none)."""

    undone: bool = False
    doubled: str = ""


@dataclass(frozen=True)
class Origin:
    """One originDescription: where a record came from, and when it was harvested."""

    base_url: str
    identifier: str
    datestamp: str
    namespace: str
    harvest_date: str
    altered: bool
    inner: Origin | None = None


def convert_page(page: Page, partner: Partner) -> Converted:
    """A page's records (see `convert_items`)."""
    return convert_items(page.items, partner, harvest_date=page.response_date, raw=page.raw, repaired=page.repaired)


def convert_items(
    items: list[etree._Element],
    partner: Partner,
    *,
    harvest_date: str,
    raw: list[str] | None = None,
    repaired: Collection[int] = (),
) -> Converted:
    """The `<record>` elements of a page; each one that cannot be read, or whose identifier the
    page lists more than once (which copy is right cannot be known), is a named failure instead.
    `raw`: each item as sent (client.verbatim_items), when the page could be cut; `repaired`:
    the indexes of items the lenient parser repaired."""
    result = Converted()
    converted: list[tuple[int, Record]] = []
    mended: dict[int, Mending] = {}
    for i, element in enumerate(items):
        try:
            sent = raw[i] if raw is not None else None
            record, mended[i] = read_record(element, partner, harvest_date=harvest_date, raw=sent)
            converted.append((i, record))
        except RecordError as exc:
            where = _identifier_of(element) or f"record {i + 1} of the page"
            result.failures.append((where, str(exc)))
    if len({record.identifier for _, record in converted}) < len(converted):
        converted = _without_repeats(converted, result.failures)
    for i, record in converted:
        if not record.deleted and not record.dc:
            result.without_dc += 1
        if i in repaired:
            result.repaired.append(record.identifier)
        _note_mending(result, record.identifier, mended[i])
        result.records.append(record)
    return result


def _note_mending(result: Converted, identifier: str, mending: Mending) -> None:
    if mending.undone:
        result.undoubled.append(identifier)
    if mending.doubled:
        result.doubled.append((identifier, mending.doubled))


def _without_repeats(converted: list[tuple[int, Record]], failures: list[tuple[str, str]]) -> list[tuple[int, Record]]:
    """The records whose identifier is listed once; every copy of the others is a failure."""
    times = Counter(record.identifier for _, record in converted)
    kept = []
    for i, record in converted:
        n = times[record.identifier]
        if n > 1:
            why = f"the identifier is listed {n} times in one page; none of them is stored"
            failures.append((record.identifier, why))
        else:
            kept.append((i, record))
    return kept


def _identifier_of(element: etree._Element) -> str | None:
    value = element.findtext(f"{_OAI}header/{_OAI}identifier")
    return value.strip() if value and value.strip() else None


def _parts(element: etree._Element) -> tuple[etree._Element | None, etree._Element | None, etree._Element | None]:
    """(header, metadata, about) of a `<record>`, in one pass over its children (a path
    search costs lxml more than the whole walk). The schema allows one header and at most one
    metadata: with two, which one the partner meant cannot be known, so the record is refused."""
    header = metadata = about = None
    headers = metadatas = 0
    for child in element:
        tag = child.tag
        if tag == _HEADER:
            headers += 1
            header = header if header is not None else child
        elif tag == _METADATA:
            metadatas += 1
            metadata = metadata if metadata is not None else child
        elif tag == _ABOUT and about is None:
            about = child
    if headers > 1:
        raise RecordError(f"the record has {headers} <header> elements; OAI-PMH allows one")
    if metadatas > 1:
        raise RecordError(f"the record has {metadatas} <metadata> elements; OAI-PMH allows one")
    return header, metadata, about


def convert_record(element: etree._Element, partner: Partner, *, harvest_date: str, raw: str | None = None) -> Record:
    """`raw`: the `<record>` exactly as sent, when the page could be cut (else it is serialized)."""
    return read_record(element, partner, harvest_date=harvest_date, raw=raw)[0]


def read_record(
    element: etree._Element, partner: Partner, *, harvest_date: str, raw: str | None = None
) -> tuple[Record, Mending]:
    """The record (see `convert_record`), and what was found in its Dublin Core's text."""
    header, metadata, about = _parts(element)
    identifier, sent_datestamp, datestamp, specs, deleted = _header(header)
    payload = _payload(metadata)
    if payload is None and not deleted:
        raise RecordError("the record is not deleted but has no metadata")
    namespace = _namespace(payload) if payload is not None else ""
    provenance = {
        "baseURL": partner.base_url,
        "identifier": identifier,
        "datestamp": sent_datestamp,
        "metadataNamespace": namespace,
        "harvestDate": harvest_date,
        "metadataPrefix": partner.metadata_prefix,
        "setSpecs": " ".join(specs),
    }
    record = Record(
        identifier=identifier,
        deleted=deleted,
        source=partner.name,
        raw_xml=raw if raw is not None else etree.tostring(element, encoding="unicode", with_tail=False),
        provenance=provenance,
    )
    if deleted:
        if partner.republish:
            record.metadata = formats.rendered([], deleted=True)
            record.sets = republished_sets(partner.name, specs)
        return record, Mending()
    assert payload is not None
    record.dc, mending = _dublin_core(payload, partner.metadata_prefix)
    if partner.republish and record.dc:
        record.metadata = formats.rendered(record.dc)
        record.sets = republished_sets(partner.name, specs)
        origin = Origin(partner.base_url, identifier, datestamp, namespace, harvest_date, True, _inner_origin(about))
        record.about = provenance_container(origin)
    return record, mending


def listed_at(record: Record) -> int | None:
    """The datestamp the partner listed a converted record at (its provenance keeps it as sent),
    in seconds; None when it is not in OAI-PMH's form (an offset, a fraction): what a take-up
    (harvester.harvest) reads of each record."""
    return seconds((record.provenance or {}).get("datestamp"))


def seconds(datestamp: str | None) -> int | None:
    """A datestamp as a partner sent it, in seconds; None when it is not in OAI-PMH's form."""
    try:
        return parse_datestamp(datestamp or "")[0]
    except ValueError:
        return None


def republished_sets(name: str, specs: list[str]) -> list[str]:
    """The sets a republished record of partner `name` is in: `partners:<name>`, and
    `partners:<name>:<spec>` for each of the partner's setSpecs (config.partner_subset)."""
    subsets = (partner_subset(name, spec) for spec in specs)
    return list(dict.fromkeys([partner_set(name), *(s for s in subsets if s is not None)]))


def _header(header: etree._Element | None) -> tuple[str, str, str, list[str], bool]:
    """(identifier, datestamp as sent, datestamp in UTC, setSpecs, deleted) of a record's header;
    RecordError if it lacks one of the first two or says a status other than deleted."""
    if header is None:
        raise RecordError("the record has no <header>")
    identifier = sent_datestamp = ""
    specs: list[str] = []
    for child in header:
        tag = child.tag
        if tag == _IDENTIFIER and not identifier:
            identifier = (child.text or "").strip()
        elif tag == _DATESTAMP and not sent_datestamp:
            sent_datestamp = (child.text or "").strip()
        elif tag == _SETSPEC:
            specs.append((child.text or "").strip())
    if not identifier:
        raise RecordError("the header has no identifier")
    parsed = utc(sent_datestamp)
    if parsed is None:
        raise RecordError(f"the datestamp {sent_datestamp!r} is not a date")
    status = header.get("status")
    if status is not None and status != "deleted":
        raise RecordError(f'the header\'s status is {status!r}; OAI-PMH allows only status="deleted"')
    return identifier, sent_datestamp, parsed[0], specs, status == "deleted"


def _payload(metadata: etree._Element | None) -> etree._Element | None:
    if metadata is None:
        return None
    for child in metadata:
        if isinstance(child.tag, str):
            return child
    return None


def _namespace(payload: etree._Element) -> str:
    """The payload's namespace. Only the lenient parser lets an undeclared prefix through, as a
    tag like `oai_dc:dc` that lxml cannot name: that record cannot be read, the page still can."""
    try:
        return etree.QName(payload).namespace or ""
    except ValueError:
        raise RecordError(f"the metadata element <{payload.tag}> has an undeclared namespace prefix") from None


def _dublin_core(payload: etree._Element, prefix: str) -> tuple[list[DCValue], Mending]:
    """A payload's Dublin Core: oai_dc read as it is; a native format we know (MARC21 slim,
    MODS, DataCite: formats.NATIVE) crosswalked, unless that gives nothing; any other payload's
    dc:* elements. Crosswalked text is mended like the rest (see `dublin_core`)."""
    if payload.tag != _OAI_DC_ROOT:
        crosswalked = formats.dublin_core(payload, prefix)
        if crosswalked:
            return _mended_values(crosswalked)
    return dublin_core(payload)


def _mended_values(values: list[DCValue]) -> tuple[list[DCValue], Mending]:
    mending = Mending()
    mended = []
    for v in values:
        value = v.value
        if not value.isascii() and SUSPECT.search(value):
            value, mending = _mended(value, mending)
        mended.append(v._replace(value=value) if value != v.value else v)
    return mended, mending


def dublin_core(payload: etree._Element) -> tuple[list[DCValue], Mending]:
    """The Dublin Core statements of a payload: oai_dc's children, or any dc:* element of
    another format. Text of nested markup and CDATA is kept; xml:lang only if it is a valid
    language tag (our responses are schema-valid, so a tag like `en_US` becomes `en-US`).

    Text UTF-8 encoded twice is undone where that is exact (encodings.mend), before white space
    is trimmed (`VoilÃ` + a no-break space is `Voilà`); what was found is said too. Only a
    value that is not ASCII and holds a suspect pair of characters is looked at: the rest cost
    one check, or two (31 us for a page of 100 records whose 100 titles are not ASCII, against
    about 3.4 ms to convert it)."""
    elements = payload.iterchildren(f"{_DC}*") if payload.tag == _OAI_DC_ROOT else payload.iter(f"{_DC}*")
    values: list[DCValue] = []
    mending = Mending()
    skip = len(_DC)
    for el in elements:
        name = el.tag[skip:]
        if name not in _ELEMENTS:
            continue
        # Most elements hold plain text: only nested markup needs the slower itertext.
        value = (el.text or "") if len(el) == 0 else "".join(el.itertext())
        if not value.isascii() and SUSPECT.search(value):
            value, mending = _mended(value, mending)
        value = value.strip()
        if value:
            lang = el.get(_XML_LANG)
            values.append(DCValue(name, value, language_tag(lang) if lang else None))
    return values, mending


def _mended(value: str, mending: Mending) -> tuple[str, Mending]:
    """`value` mended (encodings.mend), and the record's Mending with what that found added."""
    found = mend(value)
    if found.how == UNDOUBLED:
        return found.value, mending._replace(undone=True)
    if found.how == DOUBLED and not mending.doubled:
        return value, mending._replace(doubled=found.sample)
    return value, mending


def _inner_origin(about: etree._Element | None) -> Origin | None:
    """The provenance the partner itself declared (it harvested the record elsewhere)."""
    found = about.find(f"{_PROV}provenance/{_PROV}originDescription") if about is not None else None
    return _origin(found, 0) if found is not None else None


def _origin(node: etree._Element, depth: int) -> Origin | None:
    """An originDescription re-read field by field, so only valid values are passed on."""
    if depth >= MAX_NESTED_ORIGINS:
        return None
    fields = {}
    for name in ("baseURL", "identifier", "datestamp", "metadataNamespace"):
        fields[name] = (node.findtext(f"{_PROV}{name}") or "").strip()
    datestamp, harvest_date = utc(fields["datestamp"]), utc(node.get("harvestDate") or "")
    if not fields["baseURL"] or not fields["identifier"] or datestamp is None or harvest_date is None:
        return None
    nested = node.find(f"{_PROV}originDescription")
    return Origin(
        fields["baseURL"],
        fields["identifier"],
        datestamp[0],
        fields["metadataNamespace"],
        harvest_date[0],
        (node.get("altered") or "").strip() in ("true", "1"),
        _origin(nested, depth + 1) if nested is not None else None,
    )


def provenance_container(origin: Origin) -> str:
    """The `<about>` payload: an OAI provenance container (provenance.xsd)."""
    return (
        f'<provenance xmlns="{PROVENANCE_NS}" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" '
        f'xsi:schemaLocation="{PROVENANCE_NS} {PROVENANCE_SCHEMA}">{_origin_xml(origin)}</provenance>'
    )


def _origin_xml(o: Origin) -> str:
    inner = _origin_xml(o.inner) if o.inner is not None else ""
    return (
        f'<originDescription harvestDate="{attr(o.harvest_date)}" altered="{"true" if o.altered else "false"}">'
        f"<baseURL>{text(o.base_url)}</baseURL><identifier>{text(o.identifier)}</identifier>"
        f"<datestamp>{text(o.datestamp)}</datestamp><metadataNamespace>{text(o.namespace)}</metadataNamespace>"
        f"{inner}</originDescription>"
    )


_KEPT_PARSER = etree.XMLParser(resolve_entities=False, no_network=True, huge_tree=True)


def kept_copy_reader(partners: Collection[Partner]) -> Callable[[str, str, str | None], Record | None]:
    """How a kept copy (a `<record>` as received, and its provenance) of one of `partners` is
    read again when it is to be served (store.promote_kept_in): as its harvest read it, dated
    with the harvest that brought it. A copy of a partner not configured now or not republished,
    or that no longer reads, is not served (None)."""
    by_name = {p.name: p for p in partners}

    def read(source: str, raw: str, provenance: str | None) -> Record | None:
        partner = by_name.get(source)
        if partner is None or not partner.republish or not raw:
            return None
        try:
            harvest_date = str(json.loads(provenance or "{}").get("harvestDate", ""))
            element = etree.fromstring(raw.encode("utf-8"), _KEPT_PARSER)
            return convert_record(element, partner, harvest_date=harvest_date, raw=raw)
        except (RecordError, etree.XMLSyntaxError, ValueError):
            return None

    return read
