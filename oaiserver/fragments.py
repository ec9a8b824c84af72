"""XML fragments rendered once, when a record is written, and copied into every response.

The header changes only when the record does (its datestamp is part of it), so the store
keeps it ready; `render` falls back to this function for anything it builds afresh.
"""

from __future__ import annotations

from collections.abc import Iterable

from oaiserver.records import format_datestamp
from oaiserver.xmltext import text


def header_xml(identifier: str, datestamp: int, deleted: bool, sets: Iterable[str]) -> str:
    status = ' status="deleted"' if deleted else ""
    specs = "".join(f"<setSpec>{text(s)}</setSpec>" for s in sets)
    return (
        f"<header{status}><identifier>{text(identifier)}</identifier>"
        f"<datestamp>{format_datestamp(datestamp)}</datestamp>{specs}</header>"
    )


def record_xml(header: str, metadata: str | None, about: str | None) -> bytes:
    """A `<record>` as served: the header alone for a deleted record (metadata None)."""
    return with_header(header, record_body(None if metadata is None else metadata.encode(), about))


def record_body(metadata: bytes | None, about: str | None) -> bytes:
    """What follows the header in `record_xml`, from the fragment already in UTF-8: a writer
    builds it before the datestamp (so the header) is known, and encodes nothing twice."""
    if metadata is None:
        return _END
    return b"".join((_METADATA_START, metadata, _metadata_end(about)))


def with_header(header: str, body: bytes) -> bytes:
    """The `<record>` of a `record_body` once its header is known."""
    return b"<record>" + header.encode() + body


_END = b"</record>\n"
_METADATA_START = b"<metadata>"


def _metadata_end(about: str | None) -> bytes:
    return b"</metadata>" + (f"<about>{about}</about>".encode() if about else b"") + _END


_NAMESPACE_START, _NAMESPACE_END = b"<metadataNamespace>", b"</metadataNamespace>"


def metadata_of(record: bytes, about: str | None) -> str | None:
    """The metadata fragment inside a `<record>` that `record_xml` built with this `about`, or
    None for a record without metadata (deleted). The store keeps the fragment only there.

    A record served in a further format carries `about` with its first metadataNamespace
    naming that format (`native.about_in`): the end is then found around that one element,
    whose text holds no `<`, rather than by the length of `about`."""
    start = record.find(b"</header>" + _METADATA_START)  # `</header>` cannot occur in the header's text
    if start < 0:
        return None
    start += len(b"</header>" + _METADATA_START)
    end = _metadata_end(about)
    if record.endswith(end):
        return record[start : len(record) - len(end)].decode()
    at = end.find(_NAMESPACE_START)
    after = end.find(_NAMESPACE_END, at)
    if at < 0 or after < 0 or not record.endswith(end[after:]):
        raise ValueError("a stored <record> does not end with the about it was written with")
    opened = record.rfind(_NAMESPACE_START, start, len(record) - len(end) + after)
    if opened < 0 or record[opened - at : opened] != end[:at]:
        raise ValueError("a stored <record> does not end with the about it was written with")
    return record[start : opened - at].decode()
