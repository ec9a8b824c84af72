"""The data set's second format: each synthetic record as a partner would send it in MARC21 slim
(`marcxml`), about 3 KB a record with its header, written through the store API the harvester uses for a
further format (`write_native_in`, serving it), so the `formats` rows are the ones production has.

Why MARC21 slim: it is the further format aggregators harvest most, and its markup (a
`marc:datafield` and `marc:subfield` per value, fixed fields) makes a record
about twice the bytes of its Dublin Core: a list in it shows what the size of a format costs.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterable, Iterator
from typing import Any
from xml.sax.saxutils import escape, quoteattr

from harness import log
from procfs import self_cpu

from oaiserver.fragments import format_datestamp
from oaiserver.records import OAI_NS, Record

PREFIX = "marcxml"
MARC_NS = "http://www.loc.gov/MARC21/slim"
MARC_SCHEMA = "http://www.loc.gov/standards/marcxml/schema/MARC21slim.xsd"
# The records of the data set are `local` (oaiserver.synthetic): their further format is kept and
# served under that source, as a partner's would be under the partner's name.
SOURCE = "local"


def _field(tag: str, ind: str, *subfields: tuple[str, str]) -> str:
    subs = "".join(f'<marc:subfield code="{code}">{escape(value)}</marc:subfield>' for code, value in subfields)
    return f'\n  <marc:datafield tag="{tag}" ind1="{ind[0]}" ind2="{ind[1]}">{subs}</marc:datafield>'


def marc_payload(record: Record) -> str:
    """The `<marc:record>` of a synthetic record, from its Dublin Core, as catalogues write one."""
    dc = {e: record.dc_values(e) for e in ("title", "creator", "subject", "description", "date", "identifier")}
    local = record.identifier.rsplit(":", 1)[-1]
    date = dc["date"][0] if dc["date"] else "1970-01-01"
    year = date[:4]
    stamp = format_datestamp(record.datestamp or 0)
    fixed = f"{stamp[2:4]}{stamp[5:7]}{stamp[8:10]}s{year}    xx            000 0 eng d"
    creators = dc["creator"] or ["Anonymous"]
    fields = [
        f'<marc:record xmlns:marc="{MARC_NS}" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"'
        f' xsi:schemaLocation="{MARC_NS} {MARC_SCHEMA}">',
        "\n  <marc:leader>00000nam a2200000 i 4500</marc:leader>",
        f'\n  <marc:controlfield tag="001">{escape(local)}</marc:controlfield>',
        f'\n  <marc:controlfield tag="005">{stamp[:4]}{stamp[5:7]}{stamp[8:10]}{stamp[11:13]}'
        f"{stamp[14:16]}{stamp[17:19]}.0</marc:controlfield>",
        f'\n  <marc:controlfield tag="008">{fixed}</marc:controlfield>',
        _field("035", "  ", ("a", f"(SynOAI){local}")),
        _field("040", "  ", ("a", "SynOAI"), ("b", "eng"), ("c", "SynOAI")),
        _field("100", "1 ", ("a", creators[0]), ("e", "author.")),
        _field("245", "10", ("a", dc["title"][0] if dc["title"] else "[Untitled]"), ("c", " ; ".join(creators))),
        _field("264", " 1", ("c", f"{year}.")),
        _field("300", "  ", ("a", "1 online resource (1 document)")),
        *(_field("520", "  ", ("a", d)) for d in dc["description"]),
        *(_field("650", " 4", ("a", s)) for s in dc["subject"]),
        _field("655", " 7", ("a", "Text"), ("2", "local")),
        *(_field("700", "1 ", ("a", c), ("e", "author.")) for c in creators[1:]),
        *(_field("856", "40", ("u", u), ("z", "Landing page")) for u in dc["identifier"]),
        "\n</marc:record>",
    ]
    return "".join(fields)


def partner_record(record: Record) -> Record:
    """The record in MARC21 slim as the harvester hands it to `write_native_in`: the `<record>` as
    received (our datestamp and sets in its header; a deleted one has its header alone)."""
    stamp = format_datestamp(record.datestamp or 0)
    specs = "".join(f"<setSpec>{escape(s)}</setSpec>" for s in record.sets)
    status = ' status="deleted"' if record.deleted else ""
    identifier = f"<identifier>{escape(record.identifier)}</identifier>"
    header = f"<header{status}>{identifier}<datestamp>{stamp}</datestamp>{specs}</header>"
    metadata = "" if record.deleted else f"<metadata>{marc_payload(record)}</metadata>"
    raw = f"<record xmlns={quoteattr(OAI_NS)}>{header}{metadata}</record>"
    return Record(identifier=record.identifier, deleted=record.deleted, source=SOURCE, raw_xml=raw)


def write_second_format(url: str, records: Iterable[Record], batch: int) -> dict[str, Any]:
    """Every record of `records` (already in the store at `url`) written again in MARC21 slim by
    `write_native_in` (serve=True), `batch` records a transaction, after the format's declaration
    (`declare_format_in`, as the harvester makes it on a partner's first page). Timed apart from
    the load: the load's figures are those of oai_dc alone."""
    from oaiserver.store import Store, declare_format_in, write_native_in

    store = Store(url)
    added = 0
    write_s = 0.0
    cpu0 = self_cpu()
    stamp = int(time.time())
    items: Iterator[Record] = iter(records)
    with store.engine.connect().execution_options(sqlite_immediate=True) as conn:
        with conn.begin():
            declare_format_in(conn, SOURCE, PREFIX, MARC_SCHEMA, MARC_NS)
        while chunk := [partner_record(r) for r in itertools.islice(items, batch)]:
            t = time.perf_counter()
            with conn.begin():
                added += write_native_in(conn, stamp, SOURCE, PREFIX, chunk, serve=True).added
            write_s += time.perf_counter() - t
            if added % 100_000 == 0:
                log(f"  {PREFIX}: {added:,} written ({added / write_s:,.0f} records/s in write_native_in)")
    store.close()
    # A list is frozen at the second it starts and runs to the second before (the store's rule: more
    # may still be written within the second), so a walk begun in the second of `stamp` would not
    # see these records: wait for the next second, as a harvester's next run would.
    time.sleep(max(0.0, stamp + 1 - time.time()))
    return {
        "prefix": PREFIX,
        "records": added,
        "write_seconds": round(write_s, 2),
        "records_per_s": round(added / write_s, 1) if write_s else None,
        "process_cpu_s": round(self_cpu() - cpu0, 2),
    }
