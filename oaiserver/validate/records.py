"""The records behind the identifiers: ListRecords' first page, GetRecord of listed identifiers (one
live, one deleted), and selective harvesting with from/until."""

from __future__ import annotations

import calendar
from typing import TYPE_CHECKING, Any

from oaiserver.records import DAY, SECONDS, format_datestamp, format_day
from oaiserver.validate.parsing import OAI, child_text, header_key, is_oai_dc, parse_any, parse_utc, payload
from oaiserver.validate.rules import DC, FAIL, LI, PASS, WARN

if TYPE_CHECKING:
    from datetime import datetime

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
    if listed and ident not in listed:
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
        v.skip(["getrecord.match"], "no identifiers listed")
        return
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
    if kind == "live" and not is_oai_dc(payload(record.find(f"{OAI}record/{OAI}metadata"))):
        diffs.append("no oai_dc:dc metadata")
    if diffs:
        v.note("getrecord.match", FAIL, f"{ident}: " + "; ".join(diffs))
    else:
        v.note("getrecord.match", PASS, f"{kind} {ident}")


def check_selective(v: Validator) -> None:
    """from=earliestDatestamp until=Identify's responseDate lists only records in range: in the
    declared granularity, and in days (which every repository must accept)."""
    identify = v.identify
    response_date = identify.doc.findtext(f"{OAI}responseDate") if identify and identify.doc is not None else None
    now = parse_utc((response_date or "").strip(), SECONDS)
    if v.granularity is None or v.earliest is None or now is None:
        v.skip(["selective.from-until"], "no usable granularity, earliestDatestamp or responseDate")
        return
    for granularity in dict.fromkeys((v.granularity, DAY)):
        _select_range(v, granularity, v.earliest[1], now)


def _select_range(v: Validator, granularity: str, first: datetime, now: datetime) -> None:
    form = format_day if granularity == DAY else format_datestamp
    start, end = (form(calendar.timegm(d.timetuple())) for d in (first, now))
    what = f"from={start} until={end}"
    f = v.fetch(f"ListIdentifiers {what}", [LI, DC, ("from", start), ("until", end)])
    part = f.part("ListIdentifiers")
    if part is None:
        if f.codes == ["noRecordsMatch"] and not v.identifiers_seen:
            v.note("selective.from-until", PASS, f"{what}: noRecordsMatch, as ListIdentifiers")
        else:
            v.note("selective.from-until", FAIL, f"{what} answered {f.why()}")
        return
    lo, hi = parse_any(start), parse_any(end)
    headers = part.findall(f"{OAI}header")
    outside = [
        f"{child_text(header, 'identifier')} ({child_text(header, 'datestamp')})"
        for header in headers
        if not _in_range(parse_any(child_text(header, "datestamp")), lo, hi, granularity)
    ]
    if outside:
        v.note("selective.from-until", FAIL, f"{what} listed {', '.join(outside[:3])}")
    else:
        v.note("selective.from-until", PASS, f"{what}: {len(headers)} on the first page")


def _in_range(when: datetime | None, lo: datetime | None, hi: datetime | None, granularity: str) -> bool:
    """Whether a datestamp lies in [lo, hi], compared by day in day granularity; unreadable ones are not judged."""
    if when is None or lo is None or hi is None:
        return True
    return lo.date() <= when.date() <= hi.date() if granularity == DAY else lo <= when <= hi
