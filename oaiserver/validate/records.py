"""The records behind the identifiers: ListRecords' first page, GetRecord of listed identifiers (one
live, one deleted), its header and its metadata held to the lists'."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from lxml import etree

from oaiserver.validate.parsing import OAI, child_text, header_key, is_oai_dc, payload
from oaiserver.validate.rules import DC, FAIL, PASS, WARN

if TYPE_CHECKING:
    from oaiserver.validate.core import Validator


def check_records(v: Validator) -> None:
    """ListRecords' first page: oai_dc records, all of them listed by ListIdentifiers."""
    headers = v.headers
    f = v.fetch("ListRecords p1", [("verb", "ListRecords"), ("metadataPrefix", "oai_dc")])
    part = f.part("ListRecords")
    if part is None:
        if f.codes == ["noRecordsMatch"] and not headers:
            v.note("records.first-page", PASS, "noRecordsMatch, as ListIdentifiers")
        else:
            v.note("records.first-page", FAIL, f"ListRecords answered {f.why()}; ListIdentifiers listed {len(headers)}")
        return
    problems: list[str] = []
    warnings: list[str] = []
    listed = set(v.identifiers_seen)
    records = part.findall(f"{OAI}record")
    v.first_records = {child_text(r, "header/" + OAI + "identifier"): r for r in records}
    deleted = sum(_record_problems(v, record, listed, problems, warnings) for record in records)
    if problems:
        v.note("records.first-page", FAIL, "; ".join(problems[:3]))
    elif warnings:
        v.note("records.first-page", WARN, "; ".join(warnings[:3]))
    else:
        v.note("records.first-page", PASS, f"{len(records)} records ({deleted} deleted) on the first page")


def _record_problems(v: Validator, record: Any, listed: set[str], problems: list[str], warnings: list[str]) -> bool:
    """Add what is wrong with one record to `problems` and `warnings`; True if it is deleted (and remembered)."""
    header = record.find(f"{OAI}header")
    if header is None:
        return False
    ident = child_text(header, "identifier")
    if listed and ident not in listed and v.listing_complete:  # a list cut at --max-pages may hold it further on
        problems.append(f"{ident} is not in ListIdentifiers")
    if header.get("status") == "deleted":
        v.deleted_seen.add(ident)
        return True
    metadata = payload(record.find(f"{OAI}metadata"))
    if metadata is None:
        warnings.append(f"{ident} is not deleted but has no metadata")
    elif not is_oai_dc(metadata):
        problems.append(f"{ident}'s metadata is {metadata.tag}, not oai_dc:dc")
    return False


def check_get_record(v: Validator) -> None:
    """GetRecord of the first live and the first deleted identifier listed gives the same header."""
    headers = v.headers
    live = next((h for _, h in headers if h.get("status") != "deleted"), None)
    gone = next((h for _, h in headers if h.get("status") == "deleted"), None)
    v.deleted_seen.update(header_key(h)[0] for _, h in headers if h.get("status") == "deleted")
    if live is None and gone is None:
        v.skip(["getrecord.match", "getrecord.metadata"], "no identifiers listed")
        return
    if live is None:
        v.skip(["getrecord.metadata"], "no live record listed")
    if live is not None:
        _get_record_matches(v, live, "live")
    if gone is not None:
        _get_record_matches(v, gone, "deleted")


def _get_record_matches(v: Validator, listed: Any, kind: str) -> None:
    ident = child_text(listed, "identifier")
    f = v.fetch(f"GetRecord {ident}", [("verb", "GetRecord"), ("identifier", ident), DC])
    record = f.part("GetRecord")
    header = None if record is None else record.find(f"{OAI}record/{OAI}header")
    if header is None:
        v.note("getrecord.match", FAIL, f"GetRecord of listed {ident} answered {f.why()}")
        return
    diffs = [
        f"{what} {b!r} in GetRecord, {a!r} in ListIdentifiers"
        for what, a, b in zip(
            ("identifier", "datestamp", "status", "setSpecs"), header_key(listed), header_key(header), strict=True
        )
        if a != b
    ]
    metadata = payload(record.find(f"{OAI}record/{OAI}metadata"))
    if kind == "live" and not is_oai_dc(metadata):
        diffs.append("no oai_dc:dc metadata")
    elif kind == "live":
        _same_metadata(v, ident, metadata, f.subject)
    if diffs:
        v.note("getrecord.match", FAIL, f"{ident}: " + "; ".join(diffs))
    else:
        v.note("getrecord.match", PASS, f"{kind} {ident}")


def _same_metadata(v: Validator, ident: str, metadata: Any, subject: str) -> None:
    """2.5: one record is one (identifier, metadataPrefix, datestamp); GetRecord and ListRecords serve the
    same metadata for it (compared in exclusive canonical XML, so namespace spelling does not count)."""
    listed = v.first_records.get(ident)
    if listed is None:
        v.skip(["getrecord.metadata"], f"{ident} is not on ListRecords' first page")
        return
    theirs = payload(listed.find(f"{OAI}metadata"))
    if theirs is None:
        v.skip(["getrecord.metadata"], f"{ident} has no metadata in ListRecords")
        return
    a, b = (etree.tostring(el, method="c14n", exclusive=True) for el in (theirs, metadata))
    if a == b:
        v.note("getrecord.metadata", PASS, f"{ident}: the same metadata in GetRecord and ListRecords")
        return
    at = next((i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y), min(len(a), len(b)))
    start = max(0, at - 30)
    v.note(
        "getrecord.metadata",
        FAIL,
        f"{ident}: GetRecord's metadata differs from ListRecords' at byte {at}: "
        f"{b[start : at + 40].decode(errors='replace')!r} vs {a[start : at + 40].decode(errors='replace')!r}",
        subject,
    )
