"""MODS 3.x to simple Dublin Core: the Library of Congress "MODS to Dublin Core Metadata Element
Set Mapping", version 3 (https://www.loc.gov/standards/mods/mods-dcsimple.html)."""

from __future__ import annotations

from collections.abc import Callable, Iterator

from oaiserver.crosswalks.common import XLINK_HREF, Element, Statement, identifier, lang_of, local_name, text_of

_CREATOR_ROLES = frozenset({"creator", "cre", "author", "aut"})
_MODS_DATES = ("dateIssued", "dateCreated", "dateCaptured", "dateOther")
_MODS_SUBJECT_PARTS = frozenset({"topic", "occupation", "genre", "titleInfo", "name"})


def mods(root: Element, q: str) -> Iterator[Statement]:
    """The statements of a <mods> record, or of the first one in a <modsCollection>; only its
    top-level elements are read (a relatedItem's own title or dates are not the record's)."""
    record = root if local_name(root.tag) == "mods" else next(root.iterchildren(f"{q}mods"), None)
    if record is None:
        return
    for child in record:
        handler = _MODS_HANDLERS.get(local_name(child.tag))
        if handler is not None:
            yield from handler(child, q)


def _mods_title(title_info: Element, q: str) -> str:
    """nonSort, title, subTitle, partNumber, partName as one title ("The Title: Sub. 2. Part")."""
    parts = dict.fromkeys(("nonSort", "title", "subTitle", "partNumber", "partName"), "")
    for child in title_info:
        name = local_name(child.tag)
        if name in parts and not parts[name]:
            # nonSort keeps its trailing space or apostrophe ("The ", "L'"), which says how it joins.
            parts[name] = (child.text or "").lstrip() if name == "nonSort" else text_of(child)
    non_sort, title = parts["nonSort"], parts["title"]
    joins_directly = non_sort.endswith((" ", "'", "-"))
    title = (non_sort + title) if joins_directly else " ".join(p for p in (non_sort, title) if p)
    title = ": ".join(p for p in (title.strip(), parts["subTitle"]) if p)
    return ". ".join(p for p in (title, parts["partNumber"], parts["partName"]) if p)


def _mods_titles(title_info: Element, q: str) -> Iterator[Statement]:
    yield "title", _mods_title(title_info, q), lang_of(title_info)


def _mods_name_value(name: Element, q: str) -> str:
    """A name as "Family, Given, terms of address, dates" from its nameParts, or its displayForm."""
    parts: dict[str, list[str]] = {"": [], "family": [], "given": [], "termsOfAddress": [], "date": []}
    for part in name.iterchildren(f"{q}namePart"):
        parts.get(part.get("type") or "", parts[""]).append(text_of(part))
    family_given = ", ".join(p for p in (" ".join(parts["family"]), " ".join(parts["given"])) if p)
    core = " ".join(p for p in (" ".join(parts[""]), family_given) if p)
    text = ", ".join(p for p in (core, *parts["termsOfAddress"], *parts["date"]) if p)
    if text:
        return text
    display = next(name.iterchildren(f"{q}displayForm"), None)
    return text_of(display) if display is not None else ""


def _mods_name(name: Element, q: str) -> Iterator[Statement]:
    roles = {text_of(term).lower() for term in name.iter(f"{q}roleTerm")}
    primary = not roles and name.get("usage") == "primary"
    element = "creator" if roles & _CREATOR_ROLES or primary else "contributor"
    yield element, _mods_name_value(name, q), lang_of(name)


def _mods_subject(subject: Element, q: str) -> Iterator[Statement]:
    """Topics, names, titles, occupations and genres make one subject ("A -- B"); geographic,
    temporal and coordinates are coverage, each on its own."""
    parts = []
    for child in subject:
        name = local_name(child.tag)
        if name in _MODS_SUBJECT_PARTS:
            parts.append(_mods_subject_part(child, name, q))
        elif name in ("geographic", "temporal"):
            yield "coverage", text_of(child), lang_of(child) or lang_of(subject)
        elif name == "hierarchicalGeographic":
            yield "coverage", " -- ".join(text_of(c) for c in child if isinstance(c.tag, str)), lang_of(subject)
        elif name == "cartographics":
            yield from (("coverage", text_of(c), None) for c in child.iterchildren(f"{q}coordinates"))
    yield "subject", " -- ".join(p for p in parts if p), lang_of(subject)


def _mods_subject_part(child: Element, name: str, q: str) -> str:
    if name == "titleInfo":
        return _mods_title(child, q)
    if name == "name":
        return _mods_name_value(child, q)
    return text_of(child)


def _mods_origin(origin: Element, q: str) -> Iterator[Statement]:
    """Publishers, and dates (see `intervals`)."""
    dates: list[tuple[str, str | None, str]] = []
    for child in origin:
        name = local_name(child.tag)
        if name == "publisher":
            yield "publisher", text_of(child), lang_of(child)
        elif name in _MODS_DATES:
            dates.append((name, child.get("point"), text_of(child)))
    yield from (("date", value, None) for value in intervals(dates))


def intervals(dates: list[tuple[str, str | None, str]]) -> list[str]:
    """(element, point, value) dates as values: a start followed by an end of the same element
    become one ISO 8601 interval (`1900/1950`); every other date stays as it is."""
    values: list[str] = []
    i = 0
    while i < len(dates):
        name, point, value = dates[i]
        following = dates[i + 1] if i + 1 < len(dates) else None
        if point == "start" and following is not None and following[:2] == (name, "end"):
            values.append(f"{value}/{following[2]}")
            i += 2
        else:
            values.append(value)
            i += 1
    return values


def _mods_physical(description: Element, q: str) -> Iterator[Statement]:
    for child in description:
        if local_name(child.tag) in ("form", "extent", "internetMediaType"):
            yield "format", text_of(child), lang_of(child)


def _mods_identifier(el: Element, q: str) -> Iterator[Statement]:
    if el.get("invalid") != "yes":
        yield "identifier", identifier(el.get("type"), text_of(el)), None


def _mods_location(location: Element, q: str) -> Iterator[Statement]:
    yield from (("identifier", text_of(url), None) for url in location.iterchildren(f"{q}url"))


def _mods_language(language: Element, q: str) -> Iterator[Statement]:
    """A language's code, or its name when no code is given."""
    terms = list(language.iterchildren(f"{q}languageTerm"))
    codes = [t for t in terms if t.get("type") == "code"]
    for term in codes or terms:
        yield "language", text_of(term), None


def _mods_related(item: Element, q: str) -> Iterator[Statement]:
    """A related item by its title, else its identifier or URL: the original is the source."""
    element = "source" if item.get("type") == "original" else "relation"
    title = next(item.iterchildren(f"{q}titleInfo"), None)
    value = _mods_title(title, q) if title is not None else ""
    if not value:
        found = next(item.iterchildren(f"{q}identifier"), None)
        value = text_of(found) if found is not None else ""
    if not value:
        url = next((u for loc in item.iterchildren(f"{q}location") for u in loc.iterchildren(f"{q}url")), None)
        value = text_of(url) if url is not None else (item.get(XLINK_HREF) or "")
    yield element, value, None


def _mods_text(element: str) -> Callable[[Element, str], Iterator[Statement]]:
    def statements(el: Element, q: str) -> Iterator[Statement]:
        yield element, text_of(el) or (el.get(XLINK_HREF) or ""), lang_of(el)

    return statements


_MODS_HANDLERS: dict[str, Callable[[Element, str], Iterator[Statement]]] = {
    "titleInfo": _mods_titles,
    "name": _mods_name,
    "subject": _mods_subject,
    "classification": _mods_text("subject"),
    "abstract": _mods_text("description"),
    "note": _mods_text("description"),
    "tableOfContents": _mods_text("description"),
    "originInfo": _mods_origin,
    "typeOfResource": _mods_text("type"),
    "genre": _mods_text("type"),
    "physicalDescription": _mods_physical,
    "identifier": _mods_identifier,
    "location": _mods_location,
    "language": _mods_language,
    "relatedItem": _mods_related,
    "accessCondition": _mods_text("rights"),
}
