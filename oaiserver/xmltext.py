"""Escaping for text and attribute values written straight into XML strings."""

from __future__ import annotations

_ATTR = str.maketrans(
    {"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "\t": "&#9;", "\n": "&#10;", "\r": "&#13;"}
)


def text(value: str) -> str:
    """Character data; `\\r` is kept as a reference, since parsers would fold it into `\\n`.

    Chained str.replace: about ten times faster than str.translate on typical values."""
    return value.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace("\r", "&#13;")


def attr(value: str) -> str:
    """An attribute value inside double quotes, whitespace kept as written."""
    return value.translate(_ATTR)
