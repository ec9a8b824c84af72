"""The only XML builder for responses: protocol results to OAI-PMH documents.

Built as strings, not trees: stored records are already XML (bytes, rendered when they were
written) and are copied verbatim; everything else is escaped here. Tests validate every output against the
official schemas.
"""

from __future__ import annotations

from collections.abc import Sequence

from oaiserver import protocol as p
from oaiserver.fragments import header_xml, record_xml
from oaiserver.landing import relocate
from oaiserver.records import OAI_NS, Header, Rendered, format_datestamp
from oaiserver.xmltext import attr, text

_HEAD = (
    '<?xml version="1.0" encoding="UTF-8"?>\n'
    "{stylesheet}"
    f'<OAI-PMH xmlns="{OAI_NS}" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" '
    f'xsi:schemaLocation="{OAI_NS} http://www.openarchives.org/OAI/2.0/OAI-PMH.xsd">\n'
)
OAI_IDENTIFIER_NS = "http://www.openarchives.org/OAI/2.0/oai-identifier"

# What a result renders to: the text before its stored elements, the stored elements themselves
# (`<record>`s as bytes, copied verbatim) and the text after them. The text on each side is
# encoded once, and the elements go into the document's one join as they are, with no pass over
# them (a list page has 500).
Parts = tuple[list[str], Sequence[bytes], list[str]]


def response(
    answer: p.Answer,
    base_url: str,
    stylesheet: str | None = None,
    moved: tuple[str, str] | None = None,
    *,
    stylesheet_type: str = "text/xsl",
) -> bytes:
    """The document. `stylesheet`: the address of an `xml-stylesheet` instruction of type
    `stylesheet_type` (XSLT, or CSS for browsers: web.py). `moved`: (stored site, configured
    site) while the site's move is not yet ingested; the records' landing URLs are rewritten
    (landing.py)."""
    head = _HEAD.format(
        stylesheet=f'<?xml-stylesheet type="{stylesheet_type}" href="{attr(stylesheet)}"?>\n' if stylesheet else ""
    )
    before = [head, f"<responseDate>{format_datestamp(answer.response_date)}</responseDate>\n"]
    stored: Sequence[bytes] = ()
    after: list[str] = []
    if answer.errors:
        # badVerb and badArgument echo no arguments: they may be what was wrong.
        echo = not any(err.code in ("badVerb", "badArgument") for err in answer.errors)
        before.append(_request(answer.request_args if echo else {}, base_url))
        for err in answer.errors:
            before.append(f'<error code="{err.code}">{text(err.message)}</error>\n')
    else:
        before.append(_request(answer.request_args, base_url))
        assert answer.result is not None
        opening, stored, after = _RENDER[type(answer.result)](answer.result)  # type: ignore[operator]
        before += opening
    after.append("</OAI-PMH>\n")
    parts = ["".join(before).encode()]
    parts += stored
    parts.append("".join(after).encode())
    body = b"".join(parts)
    if moved is not None and _carries_metadata(answer):
        body = relocate(body, moved)
    return body


def _carries_metadata(answer: p.Answer) -> bool:
    """Only records hold landing URLs: other answers are never rewritten."""
    r = answer.result
    return isinstance(r, p.RecordResult) or (isinstance(r, p.ListResult) and r.with_metadata)


def _request(args: dict[str, str], base_url: str) -> str:
    attrs = "".join(f' {k}="{attr(v)}"' for k, v in args.items())
    return f"<request{attrs}>{text(base_url)}</request>\n"


def header(h: Header) -> str:
    return h.xml or header_xml(h.identifier, h.datestamp, h.deleted, h.sets)


def record(h: Header) -> bytes:
    if h.rendered is not None:
        return h.rendered
    return record_xml(header(h), None if h.deleted else h.metadata, h.about)


def _resumption(r: p.Resumption | None) -> str:
    if r is None:
        return ""
    expires = f' expirationDate="{format_datestamp(r.expires)}"' if r.expires else ""
    return (
        f'<resumptionToken{expires} completeListSize="{r.total}" cursor="{r.cursor}">'
        f"{text(r.token)}</resumptionToken>\n"
    )


def _identify(r: p.IdentifyResult) -> Parts:
    emails = "".join(f"<adminEmail>{text(m)}</adminEmail>" for m in r.admin_emails)
    oai_id = (
        f'<oai-identifier xmlns="{OAI_IDENTIFIER_NS}" '
        'xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" '
        f'xsi:schemaLocation="{OAI_IDENTIFIER_NS} http://www.openarchives.org/OAI/2.0/oai-identifier.xsd">'
        f"<scheme>oai</scheme><repositoryIdentifier>{text(r.repository_identifier)}</repositoryIdentifier>"
        f"<delimiter>:</delimiter><sampleIdentifier>{text(r.sample_identifier)}</sampleIdentifier>"
        "</oai-identifier>"
    )
    text_parts = [
        "<Identify>\n",
        f"<repositoryName>{text(r.name)}</repositoryName>\n",
        f"<baseURL>{text(r.base_url)}</baseURL>\n",
        "<protocolVersion>2.0</protocolVersion>\n",
        f"{emails}\n",
        f"<earliestDatestamp>{format_datestamp(r.earliest)}</earliestDatestamp>\n",
        "<deletedRecord>persistent</deletedRecord>\n",
        f"<granularity>{p.GRANULARITY}</granularity>\n",
        "<compression>gzip</compression>\n",
        f"<description>{oai_id}</description>\n",
        "</Identify>\n",
    ]
    return text_parts, (), []


def _formats(r: p.FormatsResult) -> Parts:
    items = "".join(
        f"<metadataFormat><metadataPrefix>{text(f.prefix)}</metadataPrefix>"
        f"<schema>{text(f.schema)}</schema><metadataNamespace>{text(f.namespace)}</metadataNamespace>"
        "</metadataFormat>\n"
        for f in r.formats
    )
    return ["<ListMetadataFormats>\n", items, "</ListMetadataFormats>\n"], (), []


_DC_DESCRIPTION = (
    '<oai_dc:dc xmlns:oai_dc="http://www.openarchives.org/OAI/2.0/oai_dc/" '
    'xmlns:dc="http://purl.org/dc/elements/1.1/" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" '
    'xsi:schemaLocation="http://www.openarchives.org/OAI/2.0/oai_dc/ '
    'http://www.openarchives.org/OAI/2.0/oai_dc.xsd"><dc:description>{}</dc:description></oai_dc:dc>'
)


def _sets(r: p.SetsResult) -> Parts:
    parts = ["<ListSets>\n"]
    for s in r.sets:
        desc = (
            f"<setDescription>{_DC_DESCRIPTION.format(text(s.description))}</setDescription>" if s.description else ""
        )
        parts.append(f"<set><setSpec>{text(s.spec)}</setSpec><setName>{text(s.name)}</setName>{desc}</set>\n")
    parts.append(_resumption(r.resumption))
    parts.append("</ListSets>\n")
    return parts, (), []


def _list(r: p.ListResult) -> Parts:
    verb = "ListRecords" if r.with_metadata else "ListIdentifiers"
    opening = [f"<{verb}>\n"]
    stored: Sequence[bytes] = ()
    rows = r.headers
    if rows and isinstance(rows[0], Rendered):
        # The rows go into the one final join: joining them apart first costs twice the time.
        stored = [row.xml for row in rows]  # type: ignore[union-attr,misc]
    elif r.with_metadata:
        stored = [record(h) for h in rows]  # type: ignore[arg-type]
    else:
        opening.extend(header(h) + "\n" for h in rows)  # type: ignore[arg-type]
    return opening, stored, [_resumption(r.resumption), f"</{verb}>\n"]


def _get_record(r: p.RecordResult) -> Parts:
    return ["<GetRecord>\n"], [record(r.header)], ["</GetRecord>\n"]


_RENDER = {
    p.IdentifyResult: _identify,
    p.FormatsResult: _formats,
    p.SetsResult: _sets,
    p.ListResult: _list,
    p.RecordResult: _get_record,
}
