"""harvester.encodings: a page's bytes read as the partner meant them, and text UTF-8 encoded
twice undone where that is exact. Pure functions: no server, no store."""

from __future__ import annotations

import pytest

from harvester.encodings import (
    CLEAN,
    DOUBLED,
    LATIN_1,
    MAX_RUN,
    UNDOUBLED,
    WINDOWS_1252,
    Mended,
    NotText,
    declared_encoding,
    mend,
    recode,
)

DECLARED = b'<?xml version="1.0" encoding="UTF-8"?>\n'


def twice(text: str) -> str:
    """`text` encoded in UTF-8, read as Windows-1252 (its five undefined bytes as Latin-1 reads
    them, as MySQL does) and encoded again: what a partner sends."""
    return "".join(bytes([b]).decode("cp1252", "ignore") or chr(b) for b in text.encode("utf-8"))


# ---- what a page declares -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("start", "declared"),
    [
        (DECLARED, ("UTF-8", "in its XML declaration")),
        (b"<?xml version='1.0' encoding='windows-1252'?>", ("windows-1252", "in its XML declaration")),
        (b'\xef\xbb\xbf<?xml version="1.0" encoding="utf8" standalone="yes"?>', ("utf8", "in its XML declaration")),
        (b'<?xml version="1.0"?>', ("UTF-8", "by default (its XML declaration names no encoding)")),
        (b"<OAI-PMH>", ("UTF-8", "by default (it has no XML declaration)")),
        ("<?xml version='1.0'?>".encode("utf-16"), ("UTF-16", "by its byte order mark or first characters")),
    ],
)
def test_the_encoding_a_page_declares(start: bytes, declared: tuple[str, str]) -> None:
    assert declared_encoding(start + b"<a/>") == declared


# ---- bytes that are not the UTF-8 declared ---------------------------------------------------------


def test_a_page_that_is_what_it_declares_is_left_alone() -> None:
    assert recode(DECLARED + "<t>Zürich – œuvre ’</t>".encode()) is None
    assert recode(b"<t>plain</t>") is None


def test_a_page_declaring_another_encoding_is_the_parsers_to_read() -> None:
    assert recode(b'<?xml version="1.0" encoding="ISO-8859-1"?><t>Z\xfcrich</t>') is None
    assert recode(b'<?xml version="1.0" encoding="windows-1252"?><t>\x81</t>') is None


def test_windows_1252_under_a_utf8_declaration_is_read_as_windows_1252() -> None:
    text = "<t>Études, œuvre, “quoted” – déjà, «CAFÉ»</t>"
    body = DECLARED + text.encode("cp1252")
    recoded = recode(body)
    assert recoded is not None
    assert recoded.body == DECLARED + text.encode("utf-8")
    assert recoded.encoding == WINDOWS_1252  # œ, quotes and dash are bytes 0x80-0x9F: controls in Latin-1
    assert recoded.characters == 10
    assert recoded.first == len(DECLARED) + 3  # the É of Études, in the page as received


def test_without_bytes_in_0x80_to_0x9f_the_encoding_is_named_latin_1() -> None:
    recoded = recode("<t>café naïve</t>".encode("latin-1"))
    assert recoded is not None and recoded.encoding == LATIN_1 and recoded.characters == 2
    assert recoded.body == "<t>café naïve</t>".encode()


def test_a_page_mixing_utf8_and_windows_1252_keeps_its_utf8() -> None:
    """Records from several sources: each byte sequence is read as what it is."""
    body = "<a>café</a>".encode("cp1252") + "<b>São – ’</b>".encode()
    recoded = recode(body)
    assert recoded is not None and recoded.body == "<a>café</a><b>São – ’</b>".encode()
    assert recoded.characters == 1


def test_a_byte_windows_1252_does_not_define_is_refused_with_its_offset() -> None:
    with pytest.raises(NotText) as refused:
        recode(DECLARED + b"<t>ok \x81</t>")
    assert str(refused.value) == (
        "the page is declared UTF-8 in its XML declaration, but byte 45 (0x81) is not UTF-8, "
        "and not a character of Windows-1252 or text in ISO-8859-1 either"
    )


def test_bytes_of_another_encoding_are_refused_not_misread() -> None:
    """Windows-1251 makes every letter a byte over 0x7F: read as Windows-1252 it is no text."""
    with pytest.raises(NotText) as refused:
        recode(b"<t>" + "Привет мир".encode("cp1251") + b"</t>")
    message = str(refused.value)
    assert message.startswith("the page is declared UTF-8 by default (it has no XML declaration), but bytes 3 to 8 ")
    assert "(0xcf 0xf0 0xe8 0xe2 0xe5 0xf2) are not UTF-8" in message
    assert "6 non-ASCII characters in a row" in message


@pytest.mark.parametrize("run", [MAX_RUN, MAX_RUN + 1])
def test_runs_up_to_max_run_characters_are_text(run: int) -> None:
    body = b"<t>" + "é".encode("cp1252") * run + b"</t>"
    if run <= MAX_RUN:
        assert recode(body) is not None
    else:
        with pytest.raises(NotText):
            recode(body)


# ---- UTF-8 encoded twice -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "Café",
        "Études",
        "naïve",
        "it’s “quoted” – done…",
        "Zürich",
        "Müller",
        "œuvre",
        "déjà vu",
        "São Paulo",
        "°C ± 5 €",
        "Łódź",
        "Привет",
        "Ελληνικά",
        "și țară",
        "日本語",
        "emoji 😀",
    ],
)
def test_text_encoded_twice_is_undone_exactly(text: str) -> None:
    assert mend(twice(text)).value == text
    assert mend(twice(text)).how == UNDOUBLED
    assert mend(text) == Mended(text, CLEAN), "the right text is left alone"


def test_text_encoded_twice_through_latin_1_is_undone_too() -> None:
    assert mend("Études".encode().decode("latin-1")) == Mended("Études", UNDOUBLED, "Ã\x89")


def test_text_encoded_three_times_is_undone() -> None:
    assert mend(twice(twice("Müller"))) == Mended("Müller", UNDOUBLED, "Ãƒ")


@pytest.mark.parametrize(
    "text",
    [
        "SÃO PAULO",  # Ã before a letter: Portuguese, not a sequence
        "Ã",
        "JOÃO Ã VISTA",
        "CAFÉ’S",  # valid UTF-8 when read as bytes (ɒ), but not a letter of an alphabet mangled so
        "«CAFÉ»",
        "ACCIÓN…",
        "Ǆ ǅ",
        "naïve café",
    ],
)
def test_legitimate_text_is_not_taken_for_text_encoded_twice(text: str) -> None:
    assert mend(text) == Mended(text, CLEAN)


@pytest.mark.parametrize(
    ("text", "sample"),
    [
        (twice("Études") + " — déjà", "Ã‰"),  # one value, two encodings: no reading gives it back whole
        (twice("café") + " → ok", "Ã©"),  # → is no character of Windows-1252
        ("Ã‰tudes \x89", "Ã‰"),  # Windows-1252 and Latin-1 readings mixed
        ("CAFÉ’S " + twice("déjà"), "Ã©"),  # undone whole, it would make CAFɒS
    ],
)
def test_text_that_cannot_be_undone_exactly_is_kept_and_said_to_be_doubled(text: str, sample: str) -> None:
    assert mend(text) == Mended(text, DOUBLED, sample)
