"""The lists: ListMetadataFormats, ListSets, and the whole ListIdentifiers chain held to the paging
rules (`CHAIN_CHECKS`: unique identifiers, URIs, cursor, completeListSize, tokens, the last page)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from oaiserver.validate.parsing import OAI, OAI_DC_NS, OAI_DC_SCHEMA, URI_RE, child_text, more, one_line
from oaiserver.validate.rules import FAIL, LIST_RULES, PASS, WARN

if TYPE_CHECKING:
    from oaiserver.validate.core import Chain, Fetched, Validator

BROKEN = ("empty-page", "refused", "unusable")  # chain endings where a resumptionToken let the list down


def check_formats(v: Validator) -> None:
    f = v.fetch("ListMetadataFormats", [("verb", "ListMetadataFormats")])
    part = f.part("ListMetadataFormats")
    if part is None:
        v.note("formats.oai_dc", FAIL, f"no usable ListMetadataFormats response: {f.why()}")
        return
    formats = {child_text(fmt, "metadataPrefix"): fmt for fmt in part.findall(f"{OAI}metadataFormat")}
    dc = formats.get("oai_dc")
    if dc is None:
        v.note("formats.oai_dc", FAIL, f"oai_dc is not among {sorted(formats)}")
        return
    ns, schema = child_text(dc, "metadataNamespace"), child_text(dc, "schema")
    if ns != OAI_DC_NS:
        v.note("formats.oai_dc", FAIL, f"oai_dc's metadataNamespace is {ns!r}, not {OAI_DC_NS!r}")
    elif schema != OAI_DC_SCHEMA:
        v.note("formats.oai_dc", WARN, f"oai_dc's schema is {schema!r}, not {OAI_DC_SCHEMA!r}")
    else:
        v.note("formats.oai_dc", PASS, f"{len(formats)} format(s): {', '.join(sorted(formats))}")


def check_sets(v: Validator) -> None:
    chain = v.walk("ListSets", [("verb", "ListSets")], "set")
    last = chain.last
    assert last is not None
    if chain.ending in ("error", "no-records"):
        if last.codes == ["noSetHierarchy"]:
            v.set_specs = set()
            v.note("sets", PASS, "noSetHierarchy: the repository has no sets")
        else:
            v.note("sets", FAIL, f"ListSets answered {last.why()}")
        return
    specs = [child_text(s, "setSpec") for page in chain.pages for s in page.items]
    twice = sorted({s for s in specs if specs.count(s) > 1})
    if chain.ending in BROKEN:
        v.note("sets", FAIL, f"the resumptionToken of ListSets page {len(chain.pages)} led to {last.why()}")
    elif twice:
        v.note("sets", FAIL, f"setSpec listed twice: {', '.join(twice[:5])}")
    elif chain.ending == "max-pages":
        # the validator's limit, not the repository's fault: what was read is judged, the rest is not
        v.note("sets", PASS, f"{len(specs)} set(s) in {v.max_pages} page(s), none twice; stopped at --max-pages")
    else:
        v.set_specs = set(specs)
        v.note("sets", PASS, f"{len(specs)} set(s) in {len(chain.pages)} page(s)")


def check_sets_declared(v: Validator) -> None:
    """2.6: a header's setSpec names a node of the set hierarchy, which ListSets declares."""
    if v.set_specs is None:
        v.skip(["sets.declared"], "ListSets was not read to its end")
        return
    if not v.headers:
        v.skip(["sets.declared"], "no headers listed")
        return
    undeclared: dict[str, str] = {}
    for _, header in v.headers:
        for spec in header.findall(f"{OAI}setSpec"):
            text = (spec.text or "").strip()
            if text not in v.set_specs:
                undeclared.setdefault(text, child_text(header, "identifier"))
    if undeclared:
        shown = ", ".join(f"{spec!r} (e.g. {ident})" for spec, ident in list(undeclared.items())[:3])
        declared = "no sets (noSetHierarchy)" if not v.set_specs else f"{len(v.set_specs)} set(s)"
        v.note("sets.declared", FAIL, f"headers name sets ListSets does not declare ({declared}): {shown}")
    else:
        v.note("sets.declared", PASS, f"every setSpec of {len(v.headers)} header(s) is declared")


@dataclass
class Listing:
    """The ListIdentifiers chain as read: its pages and every header with the number of its page."""

    chain: Chain
    headers: list[tuple[int, Any]]
    identifiers: list[str]

    @property
    def last(self) -> Fetched:
        assert self.chain.last is not None
        return self.chain.last

    @property
    def pages(self) -> int:
        return len(self.chain.pages)


Check = Callable[["Validator", Listing], None]


def check_identifiers(v: Validator) -> None:
    """Follow the whole ListIdentifiers chain and hold it to every paging rule; the headers are
    remembered for ListRecords, GetRecord and the Identify rules that run later."""
    chain = v.walk("ListIdentifiers", [("verb", "ListIdentifiers"), ("metadataPrefix", "oai_dc")], "header")
    if not _has_first_page(v, chain):
        return
    v.headers = [(i, h) for i, page in enumerate(chain.pages, 1) for h in page.items]
    v.identifiers_seen = [child_text(h, "identifier") for _, h in v.headers]
    v.listing_complete = chain.ending == "complete"
    listing = Listing(chain, v.headers, v.identifiers_seen)
    for check in CHAIN_CHECKS:
        check(v, listing)


def _has_first_page(v: Validator, chain: Chain) -> bool:
    """False, with the list rules noted or skipped, when there is no list to check."""
    last = chain.last
    assert last is not None
    if chain.ending == "no-records":
        # An empty repository is a correct one: nothing to check, nothing to warn about.
        v.skip(LIST_RULES, "ListIdentifiers answered noRecordsMatch: the repository lists no records")
        return False
    if chain.ending == "error":
        v.note("list.unique", FAIL, f"ListIdentifiers p1 answered {last.why()}")
        v.skip(LIST_RULES, "no usable first page")
        return False
    return True


def check_unique(v: Validator, listing: Listing) -> None:
    first_page: dict[str, int] = {}
    repeats = []
    for (i, _), ident in zip(listing.headers, listing.identifiers, strict=True):
        if ident in first_page:
            repeats.append(f"{ident} on pages {first_page[ident]} and {i}")
        else:
            first_page[ident] = i
    if repeats:
        v.note("list.unique", FAIL, "; ".join(repeats[:3]) + more(repeats, 3))
    else:
        v.note("list.unique", PASS, f"{len(listing.headers)} identifiers in {listing.pages} page(s), none twice")


def check_identifiers_are_uris(v: Validator, listing: Listing) -> None:
    distinct = list(dict.fromkeys(listing.identifiers))
    not_uri = [i for i in distinct if not URI_RE.fullmatch(i)]
    if not_uri:
        shown = ", ".join(repr(i) for i in not_uri[:3])
        v.note("list.identifiers-uri", FAIL, f"not URIs: {shown}{more(not_uri, 3)}")
    else:
        v.note("list.identifiers-uri", PASS, f"{len(distinct)} identifiers are URIs")


def check_cursor(v: Validator, listing: Listing) -> None:
    before, wrong, cursors = 0, [], 0
    for i, page in enumerate(listing.chain.pages, 1):
        cursor = page.token.get("cursor") if page.token is not None else None
        if cursor is not None:
            cursors += 1
            if cursor != str(before):
                wrong.append(f"page {i} has cursor={cursor}, but {before} items came before it")
        before += len(page.items)
    if wrong:
        v.note("list.cursor", FAIL, "; ".join(wrong[:3]))
    else:
        v.note("list.cursor", PASS, f"{cursors} cursor(s) consistent" if cursors else "no cursor (optional)")


def _declared_sizes(listing: Listing) -> list[tuple[int, int]]:
    """(page number, completeListSize) for each page that declares one; -1 for a size that is not a number."""
    sizes = []
    for i, page in enumerate(listing.chain.pages, 1):
        if page.token is not None and (size := page.token.get("completeListSize")) is not None:
            sizes.append((i, int(size) if size.isdigit() else -1))
    return sizes


def check_complete_size(v: Validator, listing: Listing) -> None:
    sizes = _declared_sizes(listing)
    if not sizes:
        v.note("list.complete-size", PASS, "no completeListSize (optional)")
        return
    declared, n, ending = sizes[-1][1], len(listing.headers), listing.chain.ending
    if len({s for _, s in sizes}) > 1:
        changed = ", ".join(f"p{i}={s}" for i, s in sizes)
        v.note("list.complete-size", WARN, "completeListSize changed across pages: " + changed)
    if ending == "complete" and declared != n:
        v.note(
            "list.complete-size",
            FAIL,
            f"completeListSize={declared}, but the list had {n} items (changed meanwhile? run again)",
        )
    elif ending != "complete" and declared < n:
        v.note("list.complete-size", FAIL, f"completeListSize={declared}, but {n} items already came")
    else:
        v.note("list.complete-size", PASS, f"completeListSize={declared}")


def check_tokens_accepted(v: Validator, listing: Listing) -> None:
    followed = listing.pages - 1
    if listing.chain.ending in ("refused", "unusable"):
        v.note("list.tokens-accepted", FAIL, f"the resumptionToken of page {listing.pages} led to {listing.last.why()}")
    else:
        v.note("list.tokens-accepted", PASS, f"{followed} token(s) followed" if followed else "one page")


def check_no_empty_page(v: Validator, listing: Listing) -> None:
    if listing.chain.ending == "empty-page":
        last = listing.last
        got = last.why() if last.errors else "a ListIdentifiers without headers"
        v.note("list.no-empty-page", FAIL, f"the resumptionToken of page {listing.pages} led to {got}")
    else:
        v.note("list.no-empty-page", PASS, "no token led to an empty page")


def check_last_token(v: Validator, listing: Listing) -> None:
    pages, ending = listing.pages, listing.chain.ending
    final = listing.chain.pages[-1].token
    if ending == "complete" and final is None and pages > 1:
        v.note(
            "list.last-token",
            FAIL,
            f"page {pages} completes the list with no resumptionToken; it must carry an empty one",
            listing.last.subject,
        )
    elif ending == "complete":
        empty = " with an empty token" if final is not None else ""
        v.note("list.last-token", PASS, f"page {pages} ends the list{empty}")
    elif ending == "max-pages":
        v.skip(["list.last-token"], f"stopped after --max-pages={v.max_pages}; the end was not reached")
    elif ending == "empty-page":
        v.note(
            "list.last-token",
            FAIL,
            f"page {pages} was the last page but carried the non-empty token {one_line(final.text, 60)!r}",
        )
    else:
        v.skip(["list.last-token"], "the chain broke before its end")


# The paging rules, each judged on the whole chain.
CHAIN_CHECKS: tuple[Check, ...] = (
    check_unique,
    check_identifiers_are_uris,
    check_cursor,
    check_complete_size,
    check_tokens_accepted,
    check_no_empty_page,
    check_last_token,
)
