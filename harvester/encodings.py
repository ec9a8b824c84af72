"""Text as the partner meant it: bytes that are not in the encoding a page declares, and UTF-8
encoded twice. Pure functions, no I/O.

Two faults common among OAI-PMH partners, neither of which the XML parser can mend:

* **A page declared UTF-8 whose bytes are not** (by its XML declaration, or by default when it
  names no encoding): usually Windows-1252 text from a database or template never converted.
  `recode` reads each byte the UTF-8 decoder refuses as Windows-1252 (ISO-8859-1 when none of
  them lies in 0x80-0x9F, where the two differ), when what that makes is text: characters of
  the encoding (Windows-1252 leaves five bytes undefined, and ISO-8859-1 reads 0x80-0x9F as
  control characters), never more than MAX_RUN of them in a row (Western text has an accented
  letter here and there among ASCII; Windows-1251, ISO-8859-5 or Shift_JIS make every letter
  a byte over 0x7F). Valid UTF-8 in the same page is kept as it is when some of it can only be
  UTF-8 (a plausible character, below): pages mixing both are common (records gathered from
  several sources); a page with none is read whole as Windows-1252, since `«CAFÉ»` in it holds
  `É»`, which is valid UTF-8 by accident. Otherwise the page is refused (NotText), naming the
  byte offset and what the page declared.
* **Valid UTF-8 whose text was encoded twice** (`Ã©` for `é`, `â€™` for `’`): the UTF-8
  bytes of a text read as Windows-1252 (or ISO-8859-1) and encoded in UTF-8 again. `mend`
  undoes it in a value when the value as a whole is such a text: its characters are the bytes
  of UTF-8 in one of the two readings exactly (so the undo round-trips), and what they decode
  to is plausible (below). A value that shows such a sequence but cannot be undone so is kept
  as it is and said to be doubled, so it is counted, never stored silently.

A sequence is `Ã` and one of the characters that stand for bytes 0x80-0xBF (`©`, `¼`, `’`…),
or a lead for three or four bytes and its two or three such characters. Legitimate text
rarely holds one: `São`, `SÃO` and `Ã` alone are not sequences. The exceptions are an
upper-case accented letter just before typographic punctuation (`CAFÉ’S` is valid UTF-8 when
read as bytes: `CAFɒS`), so a two-byte sequence counts only when it decodes to a plausible
character: a letter of Latin-1, Latin Extended-A, Greek or Cyrillic, or one of the Vietnamese and
Romanian letters of Latin Extended-B, the alphabets whose text is found mangled so. Any
character of three or four bytes is plausible.

Costs: the harvest client calls `recode` only after the parser refused a page (or, with the
lenient_xml quirk, reported an error in it), so a page that is valid UTF-8 pays nothing; the
converter calls `mend` only for values that are not ASCII, and a search for one sequence is
all it costs when there is none.
"""

from __future__ import annotations

import re
from typing import NamedTuple

UTF8_NAMES = frozenset({"utf-8", "utf8"})
MAX_RUN = 4  # characters not UTF-8 in a row that can still be Western text
MAX_LEVELS = 3  # text encoded twice, or three or four times, is undone
WINDOWS_1252, LATIN_1 = "Windows-1252", "ISO-8859-1"

_DECLARATION = re.compile(rb"""(?:\xef\xbb\xbf)?\s*<\?xml\s[^>]*?\bencoding\s*=\s*["']([A-Za-z][\w.:-]*)["']""")
_XML_DECLARATION = re.compile(rb"(?:\xef\xbb\xbf)?\s*<\?xml\s")
_UTF16 = (b"\xff\xfe", b"\xfe\xff", b"<\x00?\x00", b"\x00<\x00?")
_STRAY = re.compile("[\udc80-\udcff]+")  # bytes the UTF-8 decoder refused, as `surrogateescape` keeps them


def _cp1252(byte: int) -> str | None:
    try:
        return bytes([byte]).decode("cp1252")
    except UnicodeDecodeError:
        return None  # 0x81, 0x8D, 0x8F, 0x90 and 0x9D


# What Windows-1252 reads 0x80-0x9F as, back to those bytes as ISO-8859-1 reads them, and the
# other way (its five undefined bytes stay the control characters ISO-8859-1 makes of them).
_TO_LATIN1 = {ord(c): chr(b) for b in range(0x80, 0xA0) if (c := _cp1252(b)) is not None}
_TO_CP1252 = {b: c for b, c in ((b, _cp1252(b)) for b in range(0x80, 0xA0)) if c is not None}
# The characters that stand for a continuation byte (0x80-0xBF) in either reading.
_CONTINUATION = "".join(sorted({chr(b) for b in range(0x80, 0xC0)} | set(_TO_CP1252.values())))
_C = f"[{re.escape(_CONTINUATION)}]"
# A lead followed by a continuation: what every sequence starts with, so a value without one is
# clean. A pattern with one leading class is searched three times faster than `_SEQUENCE`'s
# alternatives: callers with many values (harvester.convert) search it before calling `mend`.
SUSPECT = re.compile(f"[\u00c2-\u00f4]{_C}")
_SEQUENCE = re.compile(f"[\u00c2-\u00df]{_C}|[\u00e0-\u00ef]{_C}{{2}}|[\u00f0-\u00f4]{_C}{{3}}")
# What a two-byte sequence must decode to: letters of Latin-1 (and its punctuation and symbols,
# U+00A0-U+00BF: `Â°`, `Â«`, `Â»`, the no-break space), Latin Extended-A, the Vietnamese and
# Romanian letters of Latin Extended-B (`Æ°` for `ư`, `È™` for `ș`), Greek and Cyrillic.
_PLAUSIBLE_TWO = ((0x00A0, 0x017F), (0x01A0, 0x01B0), (0x0218, 0x021B), (0x0386, 0x03CE), (0x0400, 0x045F))
# A character that only UTF-8 explains: a plausible one of two bytes, or one of three or four.
_UTF8_EVIDENCE = re.compile(
    "[" + "".join(f"{chr(low)}-{chr(high)}" for low, high in _PLAUSIBLE_TWO) + "\u0800-\ud7ff\ue000-\U0010ffff]"
)


class Recoded(NamedTuple):
    """A page whose stray bytes were read in another encoding: what it is in UTF-8."""

    body: bytes  # the page, all of it UTF-8 now (its declaration, UTF-8 or none, is now true)
    encoding: str  # what the stray bytes were read as: WINDOWS_1252 or LATIN_1
    characters: int  # how many characters were read so
    first: int  # the byte offset of the first of them in the page as received


class NotText(ValueError):
    """A page declared UTF-8 whose bytes are not, and not Western text either; the message
    says where, and what the page declared."""


def declared_encoding(body: bytes) -> tuple[str, str]:
    """(the encoding an XML document's bytes declare, how it declares it): its XML declaration's,
    or UTF-16 by its byte order or first characters, or else UTF-8 by XML's default."""
    if body[:2] in _UTF16[:2] or body[:4] in _UTF16[2:]:
        return "UTF-16", "by its byte order mark or first characters"
    m = _DECLARATION.match(body, 0, 1024)
    if m is not None:
        return m.group(1).decode("ascii"), "in its XML declaration"
    if _XML_DECLARATION.match(body):
        return "UTF-8", "by default (its XML declaration names no encoding)"
    return "UTF-8", "by default (it has no XML declaration)"


def recode(body: bytes) -> Recoded | None:
    """The page in UTF-8, its bytes that are not UTF-8 read as Windows-1252 (or ISO-8859-1);
    None when it is valid in what it declares, or declares an encoding other than UTF-8 (the
    parser reads those itself). NotText when those bytes do not make text."""
    name, how = declared_encoding(body)
    if name.lower() not in UTF8_NAMES:
        return None
    text = body.decode("utf-8", "surrogateescape")
    first = _STRAY.search(text)
    if first is None:
        return None
    if _UTF8_EVIDENCE.search(text) is None:
        # Nothing in it is UTF-8 but by accident (`«CAFÉ»` in Windows-1252 holds `É»`, the UTF-8 of
        # `ɻ`): every byte over 0x7F is read in the single-byte encoding.
        text = body.decode("ascii", "surrogateescape")
        first = _STRAY.search(text)
        assert first is not None
    parts: list[str] = []
    done = count = 0
    c1 = False
    for m in _STRAY.finditer(text, first.start()):
        raw = bytes(ord(c) - 0xDC00 for c in m.group())
        parts += [text[done : m.start()], _read(raw, text, m.start(), f"declared UTF-8 {how}")]
        done, count = m.end(), count + len(raw)
        c1 = c1 or any(0x80 <= b < 0xA0 for b in raw)
    parts.append(text[done:])
    recoded = "".join(parts).encode("utf-8")
    return Recoded(recoded, WINDOWS_1252 if c1 else LATIN_1, count, _offset(text, first.start()))


def _read(raw: bytes, text: str, at: int, declared: str) -> str:
    """A run of bytes the UTF-8 decoder refused, read as Windows-1252; NotText when that is not text."""
    try:
        read = raw.decode("cp1252")
    except UnicodeDecodeError as exc:
        offset = _offset(text, at) + exc.start
        raise NotText(
            f"the page is {declared}, but byte {offset:,} (0x{raw[exc.start]:02x}) is not UTF-8, "
            "and not a character of Windows-1252 or text in ISO-8859-1 either"
        ) from None
    if len(read) > MAX_RUN:
        offset = _offset(text, at)
        shown = " ".join(f"0x{b:02x}" for b in raw[:8]) + (" …" if len(raw) > 8 else "")
        raise NotText(
            f"the page is {declared}, but bytes {offset:,} to {offset + len(raw) - 1:,} ({shown}) are not UTF-8, "
            f"and read as Windows-1252 ({read[:12]!r}) they are {len(read)} non-ASCII characters in a row, "
            "which Western text is not: another encoding (Windows-1251, ISO-8859-5, Shift_JIS?)"
        )
    return read


def _offset(text: str, at: int) -> int:
    """The byte offset, in the page as received, of the character at `at` of its surrogateescape text."""
    return len(text[:at].encode("utf-8", "surrogateescape"))


# ---- UTF-8 encoded twice -----------------------------------------------------------------------

CLEAN, UNDOUBLED, DOUBLED = "clean", "undoubled", "doubled"


class Mended(NamedTuple):
    """A value, with its double encoding undone where that was exact: `how` says what was found."""

    value: str
    how: str  # CLEAN (nothing found), UNDOUBLED (undone), DOUBLED (found, kept: it could not be undone exactly)
    sample: str = ""  # the first sequence found, for a warning


def mend(value: str) -> Mended:
    """`value` with UTF-8 encoded twice (or more) undone, when the whole value round-trips
    (see the module's docstring); else as it is, DOUBLED when it shows a sequence."""
    sample = _first_sequence(value) if SUSPECT.search(value) is not None else None
    if sample is None:
        return Mended(value, CLEAN)
    mended = value
    for _ in range(MAX_LEVELS):
        undone = _undone(mended)
        if undone is None:
            break
        mended = undone
        if _first_sequence(mended) is None:
            return Mended(mended, UNDOUBLED, sample)
    return Mended(value, DOUBLED, sample)


def _first_sequence(value: str) -> str | None:
    """The first plausible sequence in `value` (a character encoded in UTF-8 and read back as
    Windows-1252 or ISO-8859-1); None if it has none."""
    for m in _SEQUENCE.finditer(value):
        try:
            char = _as_bytes(m.group()).decode("utf-8")
        except UnicodeDecodeError:  # an overlong form, a surrogate: not what UTF-8 writes
            continue
        if _plausible(char):
            return m.group()
    return None


def _undone(value: str) -> str | None:
    """`value` as the UTF-8 its characters are the bytes of, when it is exactly that in one
    reading (Windows-1252, or ISO-8859-1) and decodes to plausible characters; else None."""
    try:
        raw = _as_bytes(value)
        undone = raw.decode("utf-8")
    except UnicodeError:
        return None
    latin1 = raw.decode("latin-1")
    if value not in (latin1, latin1.translate(_TO_CP1252)):
        return None  # the two readings mixed: not one text encoded twice
    return undone if all(_plausible(c) for c in undone if c > "\x7f") else None


def _as_bytes(value: str) -> bytes:
    """The bytes the characters of `value` stand for in Windows-1252 or ISO-8859-1
    (UnicodeEncodeError for a character of neither)."""
    return value.translate(_TO_LATIN1).encode("latin-1")


def _plausible(char: str) -> bool:
    """Whether a character decoded from a sequence is one found in text encoded twice: any of
    three or four bytes in UTF-8; of two, a letter of the alphabets listed above."""
    code = ord(char)
    return code >= 0x800 or any(low <= code <= high for low, high in _PLAUSIBLE_TWO)
