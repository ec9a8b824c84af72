"""DataCite (kernel-2, -3, -4; bare or in the oai_datacite wrapper) to simple Dublin Core: DataCite
Metadata Working Group, "DataCite to Dublin Core Mapping 4.4" (https://doi.org/10.14454/qn00-qx85)."""

from __future__ import annotations

from collections.abc import Callable, Iterator

from oaiserver.crosswalks.common import (
    DATACITE_NS_PREFIX,
    Element,
    Statement,
    first_child,
    identifier,
    lang_of,
    local_name,
    namespace_of,
    text_of,
)


def datacite(root: Element, q: str) -> Iterator[Statement]:
    """The statements of a DataCite <resource>, property by property (the handlers below)."""
    for child in root:
        handler = _DATACITE_HANDLERS.get(local_name(child.tag))
        if handler is not None:
            yield from handler(child, q)


def oai_datacite(root: Element, q: str) -> Iterator[Statement]:
    """The oai_datacite wrapper: the DataCite resource inside its <payload>."""
    payload = next(root.iterchildren(f"{q}payload"), None)
    resource = first_child(payload) if payload is not None else None
    if resource is None:
        return
    namespace = namespace_of(resource.tag)
    if namespace.startswith(DATACITE_NS_PREFIX) or (not namespace and local_name(resource.tag) == "resource"):
        yield from datacite(resource, f"{{{namespace}}}" if namespace else "")


def _dc_identifier(el: Element, q: str) -> Iterator[Statement]:
    yield "identifier", identifier(el.get("identifierType"), text_of(el)), None


def _dc_agents(element: str) -> Callable[[Element, str], Iterator[Statement]]:
    """Creators or contributors: each one's name; each affiliation a contributor (the mapping's 2.5)."""

    def statements(group: Element, q: str) -> Iterator[Statement]:
        for agent in group:
            name = local_name(agent.tag)
            if name in ("creator", "contributor"):
                yield element, _dc_agent_name(agent, name, q), None
                yield from (("contributor", text_of(a), lang_of(a)) for a in agent.iterchildren(f"{q}affiliation"))

    return statements


def _dc_agent_name(agent: Element, kind: str, q: str) -> str:
    name = next(agent.iterchildren(f"{q}{kind}Name"), None)
    if name is not None and text_of(name):
        return text_of(name)
    family, given = (next(agent.iterchildren(f"{q}{part}"), None) for part in ("familyName", "givenName"))
    return ", ".join(text_of(p) for p in (family, given) if p is not None and text_of(p))


def _dc_list(element: str, member: str) -> Callable[[Element, str], Iterator[Statement]]:
    """A list element (`titles`, `subjects`...) whose members map to one Dublin Core element."""

    def statements(group: Element, q: str) -> Iterator[Statement]:
        for el in group.iterchildren(f"{q}{member}"):
            yield element, text_of(el), lang_of(el)

    return statements


def _dc_single(element: str) -> Callable[[Element, str], Iterator[Statement]]:
    def statements(el: Element, q: str) -> Iterator[Statement]:
        yield element, text_of(el), lang_of(el)

    return statements


def _dc_subjects(group: Element, q: str) -> Iterator[Statement]:
    for el in group.iterchildren(f"{q}subject"):
        yield "subject", text_of(el), lang_of(el)
        yield "subject", el.get("classificationCode") or "", None


def _dc_dates(group: Element, q: str) -> Iterator[Statement]:
    for el in group.iterchildren(f"{q}date"):
        yield "date", text_of(el), None
        yield "description", el.get("dateInformation") or "", None


def _dc_resource_type(el: Element, q: str) -> Iterator[Statement]:
    yield "type", el.get("resourceTypeGeneral") or "", None
    yield "type", text_of(el), lang_of(el)


def _dc_identifiers(member: str, element: str) -> Callable[[Element, str], Iterator[Statement]]:
    """alternateIdentifiers (identifier) and relatedIdentifiers (relation), by their type."""

    def statements(group: Element, q: str) -> Iterator[Statement]:
        for el in group.iterchildren(f"{q}{member}"):
            yield element, identifier(el.get(f"{member}Type"), text_of(el)), None

    return statements


def _dc_rights(group: Element, q: str) -> Iterator[Statement]:
    for el in group.iterchildren(f"{q}rights"):
        yield "rights", text_of(el), lang_of(el)
        yield "rights", el.get("rightsURI") or "", None


def _dc_related_items(group: Element, q: str) -> Iterator[Statement]:
    for item in group.iterchildren(f"{q}relatedItem"):
        for el in item.iterchildren(f"{q}relatedItemIdentifier"):
            yield "relation", identifier(el.get("relatedItemIdentifierType"), text_of(el)), None


def _dc_geo_locations(group: Element, q: str) -> Iterator[Statement]:
    """Places by name; points and boxes in the DCMI Point and Box notations."""
    for location in group.iterchildren(f"{q}geoLocation"):
        for el in location:
            name = local_name(el.tag)
            if name == "geoLocationPlace":
                yield "coverage", text_of(el), lang_of(el)
            elif name == "geoLocationPoint":
                yield "coverage", _dcmi_point(el, q), None
            elif name == "geoLocationBox":
                yield "coverage", _dcmi_box(el, q), None


def _coordinates(el: Element, q: str, names: tuple[str, ...]) -> list[str]:
    """Kernel-4 coordinates from child elements, kernel-3 ones from the element's text, in the
    order of `names`; [] if any is missing."""
    if first_child(el) is None:
        text = text_of(el).split()
        return text if len(text) == len(names) else []
    children = {local_name(child.tag): text_of(child) for child in el}
    found = [children.get(name, "") for name in names]
    return found if all(found) else []


def _dcmi_point(el: Element, q: str) -> str:
    values = _coordinates(el, q, ("pointLatitude", "pointLongitude"))
    return f"east={values[1]}; north={values[0]}" if values else ""


def _dcmi_box(el: Element, q: str) -> str:
    names = ("southBoundLatitude", "westBoundLongitude", "northBoundLatitude", "eastBoundLongitude")
    values = _coordinates(el, q, names)
    if not values:
        return ""
    south, west, north, east = values
    return f"northlimit={north}; eastlimit={east}; southlimit={south}; westlimit={west}"


_DATACITE_HANDLERS: dict[str, Callable[[Element, str], Iterator[Statement]]] = {
    "identifier": _dc_identifier,
    "creators": _dc_agents("creator"),
    "titles": _dc_list("title", "title"),
    "publisher": _dc_single("publisher"),
    "publicationYear": _dc_single("date"),
    "subjects": _dc_subjects,
    "contributors": _dc_agents("contributor"),
    "dates": _dc_dates,
    "language": _dc_single("language"),
    "resourceType": _dc_resource_type,
    "alternateIdentifiers": _dc_identifiers("alternateIdentifier", "identifier"),
    "relatedIdentifiers": _dc_identifiers("relatedIdentifier", "relation"),
    "sizes": _dc_list("format", "size"),
    "formats": _dc_list("format", "format"),
    "rightsList": _dc_rights,
    "descriptions": _dc_list("description", "description"),
    "geoLocations": _dc_geo_locations,
    "relatedItems": _dc_related_items,
}
