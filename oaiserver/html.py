"""What the human views need beyond a protocol answer: Dublin Core read back from stored
fragments, errors in words, and links. Pure functions; the templates do the markup and
Jinja's autoescaping keeps record content as text."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import urlencode

from lxml import etree

from oaiserver.config import SetRule
from oaiserver.landing import relocate_text
from oaiserver.oai_dc import DC_NAMESPACE
from oaiserver.protocol import ARGUMENTS
from oaiserver.records import format_datestamp
from oaiserver.tokens import ListState

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


# ---- the view's own arguments ------------------------------------------------------------------

# Arguments of /oai/view that /oai does not take: `deleted` (hide, or show only, the deleted
# records of each page) and `form` (the request comes from the view's form, see view_request).
VIEW_ONLY = ("deleted", "form")
DELETED_MODES = ("hide", "only")


@dataclass(frozen=True)
class ViewRequest:
    """What /oai/view was asked: the pairs /oai takes, and the view's own switches."""

    pairs: list[tuple[str, str]]
    deleted: str  # "" (shown), "hide" or "only"
    from_form: bool

    @property
    def oai_query(self) -> str:
        """The same arguments as a query string for /oai (the raw-XML link)."""
        return urlencode(self.pairs, safe=":", encoding="utf-8", errors="surrogateescape")


def view_request(pairs: list[tuple[str, str]]) -> ViewRequest:
    """The view's arguments split from those of /oai. From the form (`form` is set), an empty
    field is an argument not given, and a field the chosen verb does not take is left out:
    a form cannot hide fields without script, and the pages run none. Typed by hand, the
    arguments go to the protocol as they are, so the view answers what /oai answers."""
    from_form = any(k == "form" for k, _ in pairs)
    deleted = next((v for k, v in pairs if k == "deleted" and v in DELETED_MODES), "")
    kept = [(k, v) for k, v in pairs if k not in VIEW_ONLY]
    if from_form:
        verb = next((v for k, v in kept if k == "verb"), None)
        takes = ARGUMENTS.get(verb or "", {})
        kept = [(k, v) for k, v in kept if v != "" and (k == "verb" or k in takes)]
    return ViewRequest(kept, deleted, from_form)


@dataclass(frozen=True)
class Filters:
    """A list's selection as a person reads it, whether given as arguments or carried by a
    resumption token; empty strings for what is not set."""

    prefix: str = ""
    set_spec: str = ""
    from_: str = ""
    until: str = ""

    def described(self) -> list[tuple[str, str]]:
        shown = [("format", self.prefix), ("set", self.set_spec), ("from", self.from_), ("until", self.until)]
        return [(name, value) for name, value in shown if value]

    def query(self, verb: str, deleted: str = "") -> str:
        """The first page of this list (in the view), with the view's deleted switch."""
        return query(
            verb=verb,
            metadataPrefix=self.prefix or None,
            set=self.set_spec or None,
            **{"from": self.from_ or None, "until": self.until or None},
            deleted=deleted or None,
        )


def filters(args: dict[str, str], state: ListState | None) -> Filters:
    """The selection of a list request: from its token's state when it pages on, else from
    its arguments."""
    if state is not None:
        return Filters(
            state.prefix,
            state.set_spec or "",
            format_datestamp(state.start) if state.start is not None else "",
            format_datestamp(state.end) if state.end is not None else "",
        )
    return Filters(args.get("metadataPrefix", ""), args.get("set", ""), args.get("from", ""), args.get("until", ""))


def set_options(sets: Sequence[SetRule]) -> list[tuple[str, str]]:
    """(spec, label) for the form's set menu, in hierarchy order (a set under its parent,
    indented by its depth), so `a:b` shows as a part of `a`."""
    ordered = sorted(sets, key=lambda s: s.spec.split(":"))
    return [(s.spec, "\u00a0\u00a0\u00a0" * s.spec.count(":") + f"{s.spec} — {s.name}") for s in ordered]


def title_of(fields: list[tuple[str, str]]) -> str | None:
    return next((value for name, value in fields if name == "title" and value), None)
