"""The per-record path: a list walked with ListIdentifiers, each record asked for by GetRecord.

A partner whose ListRecords cannot be read (HTTP 5xx after retries, an HTML page, pages that do
not parse) is harvested this way (`mode: identifiers`, or `auto` falling back to it); and each
run retries its quarantined records by GetRecord. A record is converted and checked exactly as
on a ListRecords page (harvester.convert), so it is stored the same way; what one record gets
wrong (its GetRecord does not parse, is refused by the checks) is a failure of that record,
named by its identifier, never of the list.

* A deleted header needs no GetRecord: it is a tombstone as it stands.
* A header whose datestamp is the one the copy we hold was harvested with needs none either
  (it is counted unchanged): a list walked again after a page of ListRecords failed asks only
  for the records that page and the ones after it held.
* Requests: the list's pages, and one GetRecord per other live record, no more.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence

from lxml import etree

from harvester import errors as err
from harvester.client import Client, Page
from harvester.convert import Converted, convert_items, convert_page
from harvester.pipeline import Ready
from oaiserver.config import Partner
from oaiserver.records import OAI_NS

_OAI = f"{{{OAI_NS}}}"

# What makes a list's page, or one record's GetRecord, unreadable while the partner answers:
# the page is skipped for the per-record path, the record is quarantined.
PAGE_FAULTS: tuple[type[err.HarvestError], ...] = (
    err.HTTPStatusError,
    err.HTMLResponseError,
    err.NotXMLResponseError,
    err.XMLSyntaxError,
    err.NotOAIResponseError,
    err.PageTooLargeError,
)

# What makes `auto` leave ListRecords for the rest of a run: the same, but a body that is not XML
# at all (JSON, text), which says the baseURL is wrong rather than that ListRecords is.
FALLBACK_FAULTS = tuple(fault for fault in PAGE_FAULTS if fault is not err.NotXMLResponseError)

Known = Callable[[Sequence[str]], dict[str, str]]  # identifiers -> the datestamps we hold them at


def get_record(client: Client, partner: Partner, identifier: str) -> Converted | None:
    """One record by GetRecord, converted as a page's records are, or None when the partner
    says it does not exist (idDoesNotExist). Whatever else keeps it from being read is a failure
    named by `identifier`; no answer at all (TransportError), or a stop, is raised."""
    try:
        page = client.request("GetRecord", identifier=identifier, metadataPrefix=partner.metadata_prefix)
    except err.IdDoesNotExist:
        return None
    except (*PAGE_FAULTS, err.PartnerOAIError) as exc:  # type: ignore[misc]  # a tuple of them
        return Converted(failures=[(identifier, f"GetRecord: {exc}")])
    converted = convert_page(page, partner)
    if not converted.records and not converted.failures:
        converted.failures.append((identifier, "GetRecord answered without the record"))
    return converted


def merged(parts: Sequence[Converted]) -> Converted:
    """Several conversions as one page's."""
    whole = Converted()
    for part in parts:
        whole.records += part.records
        whole.failures += part.failures
        whole.without_dc += part.without_dc
        whole.repaired += part.repaired
        whole.prepared += part.prepared
    return whole


def pages(
    client: Client, partner: Partner, known: Known, *, token: str | None, args: dict[str, str]
) -> Iterator[Ready]:
    """A list's pages (ListIdentifiers with `args`, from `token` if given), each with the records
    its headers name, ready to be written as a ListRecords page's are."""
    for page in client.pages("ListIdentifiers", token=token, cancel=None, **args):
        yield walked(client, partner, page, known)


def walked(client: Client, partner: Partner, page: Page, known: Known) -> Ready:
    """A ListIdentifiers page and the records of its headers (see the module's docstring)."""
    headers, failures = _headers(page.items)
    held = known([identifier for identifier, _, _ in headers])
    deleted = [element for _, _, element in headers if element.get("status") == "deleted"]
    parts = [convert_items([_as_record(h) for h in deleted], partner, harvest_date=page.response_date)]
    skipped = 0
    for identifier, datestamp, element in headers:
        if element.get("status") == "deleted":
            continue
        if datestamp and held.get(identifier) == datestamp:
            skipped += 1
            continue
        fetched = get_record(client, partner, identifier)
        parts += [fetched] if fetched is not None else []  # gone since it was listed
    converted = merged([Converted(failures=failures), *parts])
    listed = [identifier for identifier, _, _ in headers]
    return Ready(page, len(page.items), listed, converted, skipped=skipped, datestamps=[d for _, d, _ in headers])


def _headers(items: list[etree._Element]) -> tuple[list[tuple[str, str, etree._Element]], list[tuple[str, str]]]:
    """(identifier, datestamp, header) of each header, each identifier once; and the headers
    without an identifier, as failures."""
    seen: dict[str, tuple[str, str, etree._Element]] = {}
    failures = []
    for i, header in enumerate(items):
        identifier = (header.findtext(f"{_OAI}identifier") or "").strip()
        if not identifier:
            failures.append((f"header {i + 1} of the page", "the header has no identifier"))
            continue
        seen.setdefault(identifier, (identifier, (header.findtext(f"{_OAI}datestamp") or "").strip(), header))
    return list(seen.values()), failures


def _as_record(header: etree._Element) -> etree._Element:
    """A deleted header as the `<record>` a ListRecords page would carry for it."""
    record = etree.Element(f"{_OAI}record", nsmap={None: OAI_NS})
    record.append(etree.fromstring(etree.tostring(header)))
    return record
