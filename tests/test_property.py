"""Property tests: whatever bytes arrive, the answer is a schema-valid OAI-PMH document.

Requests are built by hand from bytes (so invalid percent-encodings, non-UTF-8 and control
characters reach the server as sent) and go in by GET and by form POST. Expected outcomes
come from an oracle written here from the spec, not from `oaiserver.protocol`.
"""

from __future__ import annotations

import random
import time
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote_to_bytes

import pytest
from conftest import NS, OAI, Clock, backend_store_url, error_codes, make_config, make_record, token_of, validate
from hypothesis import HealthCheck, Phase, event, example, given, settings
from hypothesis import strategies as st
from lxml import etree

from oaiserver import create_app
from oaiserver.protocol import MAX_VALUE  # the server's own limit on a value's length
from oaiserver.records import DCValue, has_forbidden_chars, is_identifier
from oaiserver.store import Store, decode_dc, encode_dc
from oaiserver.web import MAX_BODY

FORM = "application/x-www-form-urlencoded"
# OAI-PMH 2.0, section 4: each verb's arguments, required or optional ("exclusive": resumptionToken).
ARGUMENTS: dict[str, dict[str, str]] = {
    "Identify": {},
    "ListMetadataFormats": {"identifier": "optional"},
    "ListSets": {"resumptionToken": "exclusive"},
    "GetRecord": {"identifier": "required", "metadataPrefix": "required"},
    "ListIdentifiers": {
        "metadataPrefix": "required",
        "from": "optional",
        "until": "optional",
        "set": "optional",
        "resumptionToken": "exclusive",
    },
    "ListRecords": {
        "metadataPrefix": "required",
        "from": "optional",
        "until": "optional",
        "set": "optional",
        "resumptionToken": "exclusive",
    },
}
ERROR_CODES = frozenset(
    {
        "badVerb",
        "badArgument",
        "badResumptionToken",
        "cannotDisseminateFormat",
        "idDoesNotExist",
        "noRecordsMatch",
        "noMetadataFormats",
        "noSetHierarchy",
    }
)
# No "explain" phase: on a failure it replays hundreds of requests to say which lines ran.
PHASES = (Phase.explicit, Phase.reuse, Phase.generate, Phase.target, Phase.shrink)
PROPERTY_SETTINGS = settings(
    max_examples=200,
    deadline=None,
    phases=PHASES,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


# ---- the repository under test: a few records, both backends -----------------------------------


@dataclass
class Served:
    client: Any
    base_url: str
    tokens: dict[str, str]


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def served(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """One app per backend for the whole module: 25 records over a few datestamps, 2 deleted."""
    stack = ExitStack()
    url = stack.enter_context(backend_store_url(request.param, tmp_path_factory.mktemp("property")))
    clock = Clock()
    store = Store(url, clock=clock)
    try:
        set_choices = [(), ("a",), ("a:b",), ("c",), ("a:b", "c")]
        for batch in range(5):
            store.write(
                make_record(str(i), f"Title {i} & <co>", sets=set_choices[i % 5], creator=f"Author {i}")
                for i in range(batch * 5 + 1, batch * 5 + 6)
            )
            clock.tick(3600)
        store.delete(["oai:test.example.org:7", "oai:test.example.org:8"])
        clock.tick()
        config = make_config(url, server__sets_page_size=2)
        app = create_app(config, store=store)
        client = app.test_client()
        tokens = {}
        for verb, extra in (
            ("ListRecords", "&metadataPrefix=oai_dc"),
            ("ListIdentifiers", "&metadataPrefix=oai_dc"),
            ("ListSets", ""),
        ):
            doc = validate(client.get(f"/oai?verb={verb}{extra}").data)
            token = token_of(doc)
            assert token is not None and token.text, f"{verb} should need more than one page"
            tokens[verb] = token.text
        yield Served(client, config.base_url, tokens)
    finally:
        store.close()
        stack.close()


# ---- strategies: verbs, names, values ------------------------------------------------------------

REAL_VERBS = tuple(ARGUMENTS)
NEAR_VERBS = (
    "identify",
    "IDENTIFY",
    "Identify ",
    " Identify",
    "Identify\x00",
    "Identify\t",
    "ListRecord",
    "ListRecordss",
    "listRecords",
    "List Records",
    "ListSet",
    "GetRecords",
    "Get Record",
    "ListIdentifier",
    "ListMetadataFormat",
    "ListMetaDataFormats",
    "verb",
    "",
    "Identify&",
    "<Identify/>",
)
REAL_NAMES = ("identifier", "metadataPrefix", "from", "until", "set", "resumptionToken")
NEAR_NAMES = (
    "Identifier",
    "metadataprefix",
    "MetadataPrefix",
    "from ",
    " until",
    "sets",
    "Set",
    "resumptiontoken",
    "token",
    "Verb",
    "VERB",
    "verb ",
    "foo",
    "",
    "metadataPrefix\x00",
    "set[]",
    "<a>",
    "&",
    "=",
    "é",
)
TOKEN = "\x00token:"  # placeholder, replaced by a real token of the named verb in the test

PREFIXES = ("oai_dc", "oai_DC", "marc21", "oai_dc ", "oai dc", "o'a*i(d)c!~", "oai_dc\x00", "oai_dc&x")
IDENTIFIERS = (
    "oai:test.example.org:1",
    "oai:test.example.org:7",
    "oai:test.example.org:25",
    "oai:test.example.org:nope",
    "oai:other.example.org:1",
    "http://example.org/a?b=c#frag",
    "urn:x:y",
    "not a uri",
    "a#b#c",
    "%zz",
    "x:%C3%A9",
    "x:é",
    "oai:test.example.org:1 ",
    "\toai:test.example.org:1",
)
SPECS = ("a", "a:b", "c", "b", "zz", "a:", ":a", "a::b", "a b", "A", "a:b:c", "~*'()!", "é")
XML_META = ("<", ">", "&", '"', "'", "]]>", "&amp;", "&#0;", "<x/>", "<!--", '"/><evil a="')
DIGIT_SCRIPTS = ("٠١٢٣٤٥٦٧٨٩", "０１２３４５６７８９", "०१२३४५६७८९", "𝟎𝟏𝟐𝟑𝟒𝟓𝟔𝟕𝟖𝟗")
INVALID_DATES = (
    "2000-13-01",
    "2000-02-30",
    "2001-02-29",
    "2000-00-10",
    "2000-01-01T00:00:00",
    "2000-01-01T00:00:00.5Z",
    "2000-01-01T00:00:00+00:00",
    "2000-01-01t00:00:00z",
    "2000-01-01T24:00:00Z",
    "2000-01-01T23:59:60Z",
    "0000-01-01",
    "10000-01-01",
    "2000-1-1",
    "20000101",
    "2000-01-01T00:00Z",
    " 2000-01-01",
    "2000-01-01 ",
    "-2000-01-01",
    "2000-01-01Z",
    "2023-11-14T22:13:20",
    "yesterday",
    "",
)


def weighted(*choices: tuple[int, st.SearchStrategy[Any]]) -> st.SearchStrategy[Any]:
    """One of the strategies, picked with the given weights (`one_of` drops duplicates)."""
    bounds, total = [], 0
    for weight, strategy in choices:
        total += weight
        bounds.append((total, strategy))
    return st.integers(0, total - 1).flatmap(lambda i: next(s for bound, s in bounds if i < bound))


days = st.dates().map(lambda d: f"{d.year:04d}-{d.month:02d}-{d.day:02d}")
seconds = st.datetimes().map(
    lambda t: f"{t.year:04d}-{t.month:02d}-{t.day:02d}T{t.hour:02d}:{t.minute:02d}:{t.second:02d}Z"
)
# Around the records' datestamps (the clock starts at 2023-11-14T22:13:20Z, one hour a batch).
near_records = st.integers(-600, 6 * 3600).map(
    lambda s: time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(1_700_000_000 + s))
)


def _exotic(date: str, script: str, index: int) -> str:
    """The date with one ASCII digit swapped for the same digit of another script."""
    positions = [i for i, ch in enumerate(date) if ch.isascii() and ch.isdigit()]
    i = positions[index % len(positions)]
    return date[:i] + script[int(date[i])] + date[i + 1 :]


exotic_dates = st.builds(_exotic, st.one_of(days, seconds), st.sampled_from(DIGIT_SCRIPTS), st.integers(0, 13))
good_dates = weighted(
    (2, days),
    (2, seconds),
    (3, near_records),
    (1, st.sampled_from(["2023-11-14", "2023-11-15", "2023-11-13"])),
    (2, exotic_dates),
)
long_values = st.one_of(
    st.builds(lambda c, n: c * n, st.characters(codec="utf-8"), st.integers(MAX_VALUE - 2, 5000)),
    st.integers(MAX_VALUE - 40, 5000).map(lambda n: "oai:test.example.org:" + "x" * (n - 21)),
    st.integers(MAX_VALUE - 2, 5000).map(lambda n: "2000-01-01" + " " * (n - 10)),
)
controls = st.text(alphabet=st.characters(max_codepoint=0x1F), min_size=1, max_size=4)
general = st.one_of(
    st.text(max_size=30),
    st.text(alphabet=st.characters(codec="utf-8"), max_size=12),
    controls,
    st.builds(lambda a, b, c: a + b + c, st.text(max_size=5), controls, st.text(max_size=5)),
    st.lists(st.sampled_from(XML_META), min_size=1, max_size=4).map("".join),
    long_values,
)
# URI-like strings, built from RFC 3986's parts with odd pieces mixed in (not from the identifier check,
# so the search does not depend on how that check is written).
URI_CHARS = st.one_of(
    st.sampled_from(list("abcxyzAZ0189-._~!$&'()*+,;=@:/?#[]% ")),
    st.sampled_from(["%41", "%e9", "%C3%A9", "%4", "é", "中", "\u00a0", "\u3000", "\U0001f600", "//", "::"]),
)
uri_text = st.lists(URI_CHARS, max_size=6).map("".join)
uri_parts = st.tuples(
    st.one_of(
        st.just(""),
        st.from_regex(r"[A-Za-z][A-Za-z0-9+.\-]{0,5}:", fullmatch=True),
        st.sampled_from(["oai:", "http:", "urn:", "0:", "-a:", "+:", "a_b:", ":"]),
    ),
    st.one_of(
        st.just(""),
        st.builds(
            lambda user, host, port: f"//{user}{host}{port}",
            st.sampled_from(["", "u@", "u:p@", "@", ":@"]),
            uri_text,
            st.one_of(st.just(""), st.sampled_from([":", ":80", ":abc", ":99999999999", ":-1"]), uri_text),
        ),
    ),
    st.lists(uri_text, max_size=4).map("/".join),
    st.one_of(st.just(""), uri_text.map(lambda q: "?" + q)),
    st.one_of(st.just(""), uri_text.map(lambda f: "#" + f)),
).map("".join)
uri_candidates = st.one_of(uri_parts, st.lists(URI_CHARS, min_size=1, max_size=12).map("".join))
TOKEN_VERBS = ("ListSets", "ListIdentifiers", "ListRecords")
# Per argument: values a harvester might send (most are right), and plainly wrong ones.
GOOD = {
    "identifier": st.one_of(st.sampled_from(IDENTIFIERS[:6]), uri_candidates),
    "metadataPrefix": weighted((5, st.just("oai_dc")), (1, st.just("marc21"))),
    "from": good_dates,
    "until": good_dates,
    "set": st.sampled_from(SPECS[:6]),
    "resumptionToken": st.sampled_from(TOKEN_VERBS).map(lambda v: f"{TOKEN}{v}:"),
}
BAD = {
    "identifier": st.sampled_from(IDENTIFIERS[6:]),
    "metadataPrefix": st.sampled_from(PREFIXES),
    "from": st.sampled_from(INVALID_DATES),
    "until": st.sampled_from(INVALID_DATES),
    "set": st.sampled_from(SPECS),
    "resumptionToken": st.one_of(
        st.sampled_from(TOKEN_VERBS).map(lambda v: f"{TOKEN}{v}:x"),  # forged: a character added
        st.sampled_from(["garbage", "", "eyJh.x.y", "a" * 100, "x\"<y>&z'"]),
        st.lists(st.sampled_from(XML_META), min_size=1, max_size=3).map("".join),  # echoed: must be escaped
        st.integers(MAX_VALUE - 1, 5000).map(lambda n: "t" * n),  # too long from MAX_VALUE + 1 on
    ),
}
VALUES = {name: st.one_of(GOOD[name], BAD[name]) for name in GOOD}


def plausible_value(name: str) -> st.SearchStrategy[str]:
    if name == "verb":
        return st.sampled_from(REAL_VERBS)
    if name == "resumptionToken":  # three real tokens; the ways to get one wrong are many more
        return weighted((6, GOOD[name]), (6, BAD[name]), (1, general))
    return weighted((12, GOOD[name]), (2, BAD[name]), (1, general))


def value_for(name: str) -> st.SearchStrategy[str]:
    if name in VALUES:
        return weighted((3, VALUES[name]), (1, general))
    return general


# A piece of a request is text (sent as UTF-8) or raw bytes (often not UTF-8).
BAD_UTF8 = (b"\xff", b"\xc3", b"\xc3(", b"\xed\xa0\x80", b"\xc0\xaf", b"\xf4\x90\x80\x80", b"\xe2\x82", b"\x80")
Piece = str | bytes


@st.composite
def pieces(draw: st.DrawFn, text: st.SearchStrategy[str], odd: int = 3) -> Piece:
    """Mostly `text`; one time in `odd` raw bytes or text with a bad UTF-8 sequence spliced in."""
    kind = draw(st.integers(0, 2 * odd - 1))
    if kind == 0:
        return draw(st.binary(max_size=16))
    value = draw(text)
    if kind == 1:
        raw = value.encode("utf-8", "surrogatepass")
        at = draw(st.integers(0, len(raw)))
        return raw[:at] + draw(st.sampled_from(BAD_UTF8)) + raw[at:]
    return value


# ---- the wire: percent-encoding by hand -----------------------------------------------------------

UNRESERVED = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")
STRUCTURAL = frozenset(b"&=+%#")  # escaped always, so they keep their meaning out of the data
BROKEN_ESCAPES = (b"%", b"%G1", b"%4", b"%%", b"%zz", b"%-1", b"%\xff")


@dataclass(frozen=True)
class Encoding:
    """How one name or value goes on the wire."""

    style: str  # upper: every byte %XX; lower: %xx but unreserved; raw: bytes as they are; mixed
    seed: int
    broken: bytes = b""  # an invalid escape inserted at `at`
    at: int = 0

    def apply(self, raw: bytes) -> bytes:
        rng = random.Random(self.seed)
        out = bytearray()
        for b in raw:
            if b == 0x20 and self.style != "upper" and rng.random() < 0.5:
                out += b"+"
            elif self.style == "upper" or b in STRUCTURAL:
                out += b"%%%02X" % b
            elif self.style == "lower":
                out += b"%%%02x" % b if b not in UNRESERVED else bytes([b])
            elif self.style == "raw" or rng.random() < 0.5:
                out.append(b)  # non-ASCII and control bytes go on the wire as they are
            else:
                out += (b"%%%02X" if rng.random() < 0.5 else b"%%%02x") % b
        at = self.at % (len(out) + 1)
        return bytes(out[:at]) + self.broken + bytes(out[at:])


styles = st.sampled_from(["upper", "lower", "raw", "mixed"])
encodings = st.builds(
    Encoding,
    style=styles,
    seed=st.integers(0, 2**16),
    broken=weighted((3, st.just(b"")), (1, st.sampled_from(BROKEN_ESCAPES))),
    at=st.integers(0, 2**16),
)
clean_encodings = st.builds(Encoding, style=styles, seed=st.integers(0, 2**16))


@dataclass(frozen=True)
class Part:
    """One `name=value` of a request, before and after encoding."""

    name: Piece
    value: Piece
    name_encoding: Encoding
    value_encoding: Encoding
    with_eq: bool = True  # False: `name` alone, no `=`
    then_empty: bool = False  # an empty part (`&&`) follows

    def wire(self, tokens: dict[str, str]) -> list[bytes]:
        value = self.value
        if isinstance(value, str) and value.startswith(TOKEN):
            verb, _, suffix = value[len(TOKEN) :].partition(":")
            value = tokens[verb] + suffix
        name = self.name.encode("utf-8") if isinstance(self.name, str) else self.name
        raw = value.encode("utf-8") if isinstance(value, str) else value
        wire = self.name_encoding.apply(name)
        if self.with_eq:
            wire += b"=" + self.value_encoding.apply(raw)
        return [wire, b""] if self.then_empty else [wire]


def part(
    name: st.SearchStrategy[Piece], value: st.SearchStrategy[Piece], noisy: bool = False, clean: bool = False
) -> Any:
    """A Part; `clean` ones have no invalid escapes in the name and seldom in the value."""
    return st.builds(
        Part,
        name,
        value,
        clean_encodings if clean else encodings,
        weighted((9, clean_encodings), (1, encodings)) if clean else encodings,
        st.booleans().map(lambda b: b or not noisy),
        st.integers(0, 19).map(lambda n: n == 0),
    )


@st.composite
def plausible_plans(draw: st.DrawFn) -> list[Part]:
    """A real verb with most of its arguments, plausible values, now and then some noise."""
    verb = draw(st.sampled_from(REAL_VERBS))
    plan = [draw(part(st.just("verb"), st.just(verb), clean=True))]
    table = ARGUMENTS[verb]
    use_token = "resumptionToken" in table and draw(st.booleans())
    for name, rule in table.items():
        wanted = (name == "resumptionToken") == use_token and (
            draw(st.integers(0, 9)) > 0 if rule == "required" else draw(st.booleans())
        )
        if wanted:
            plan.append(draw(part(st.just(name), pieces(plausible_value(name), odd=5), clean=True)))
    if draw(st.integers(0, 4)) == 0:
        # A repeated argument (the verb if there is no other): mostly the very same value again.
        again = draw(st.sampled_from(plan[1:] or plan))
        assert isinstance(again.name, str)
        same = draw(st.integers(0, 3)) > 0
        value = again.value if same else draw(pieces(plausible_value(again.name), odd=10))
        plan.append(draw(part(st.just(again.name), st.just(value), clean=True)))
    if draw(st.integers(0, 4)) == 0:
        plan.append(draw(noise_parts))
    return draw(st.permutations(plan))


noise_names = st.one_of(st.sampled_from(REAL_NAMES), st.sampled_from(NEAR_NAMES), pieces(st.text(max_size=8)))
noise_parts = noise_names.flatmap(
    lambda n: part(st.just(n), pieces(value_for(n) if isinstance(n, str) else general), noisy=True)
)


@st.composite
def chaotic_plans(draw: st.DrawFn) -> list[Part]:
    """Zero to three verbs, real or not, and up to five arguments of any kind."""
    verbs = st.one_of(st.sampled_from(REAL_VERBS + NEAR_VERBS), pieces(st.text(max_size=20)))
    plan = draw(st.lists(part(st.sampled_from(["verb"]), verbs), max_size=3))
    plan += draw(st.lists(noise_parts, max_size=5))
    return draw(st.permutations(plan))


plans = weighted((2, plausible_plans()), (1, chaotic_plans()))


def decode(wire: bytes) -> str | None:
    """The form-urlencoded decoding of one name or value; None if it is not UTF-8."""
    try:
        return unquote_to_bytes(wire.replace(b"+", b" ")).decode("utf-8")
    except UnicodeDecodeError:
        return None


def xml_chars_only(value: str) -> bool:
    """XML 1.0's Char production."""
    return all(
        ch in "\t\n\r" or 0x20 <= ord(ch) <= 0xD7FF or 0xE000 <= ord(ch) <= 0xFFFD or 0x10000 <= ord(ch) <= 0x10FFFF
        for ch in value
    )


# ---- the oracle ------------------------------------------------------------------------------------


def check_answer(status: int, body: bytes, parts: list[bytes], base_url: str) -> None:
    """The properties every answer has, given the wire parts of the request."""
    assert status == 200, body[:500]
    doc = validate(body)
    codes = error_codes(doc)
    assert set(codes) <= ERROR_CODES, codes
    req = doc.find("oai:request", NS)
    assert req is not None
    assert req.text == base_url
    if "badVerb" in codes or "badArgument" in codes:
        assert dict(req.attrib) == {}, f"<request> echoes {dict(req.attrib)} along with {codes}"

    pairs = [(decode(n), decode(v)) for n, _, v in (part.partition(b"=") for part in parts if part)]
    verbs = [v for n, v in pairs if n == "verb"]
    if len(verbs) != 1 or verbs[0] not in ARGUMENTS:
        assert codes == ["badVerb"], (pairs, codes)
        return
    verb = verbs[0]
    assert "badVerb" not in codes, (pairs, codes)
    args = [(n, v) for n, v in pairs if n != "verb"]
    names = [n for n, _ in args]
    clean = all(
        n is not None and v is not None and xml_chars_only(n) and xml_chars_only(v) and len(v) <= MAX_VALUE
        for n, v in args
    )
    if not clean or len(set(names)) != len(names) or not set(names) <= set(ARGUMENTS[verb]):
        assert codes and set(codes) == {"badArgument"}, (pairs, codes)
        return
    if "badArgument" not in codes:
        # Nothing wrong with the arguments: <request> echoes them all, exactly.
        assert dict(req.attrib) == {"verb": verb, **dict(args)}, (pairs, dict(req.attrib))
    if not codes:
        assert doc.find(f"oai:{verb}", NS) is not None


def wire_parts(plan: list[Part], served: Served) -> list[bytes]:
    return [w for p in plan for w in p.wire(served.tokens)]


def get(served: Served, query: bytes) -> Any:
    return served.client.get("/oai", environ_overrides={"QUERY_STRING": query.decode("latin-1")})


def post(served: Served, query: bytes, body: bytes, content_type: str = FORM) -> Any:
    return served.client.post(
        "/oai", data=body, content_type=content_type, environ_overrides={"QUERY_STRING": query.decode("latin-1")}
    )


# ---- the properties -------------------------------------------------------------------------------


@PROPERTY_SETTINGS
@given(plan=plans)
def test_any_get_request_gets_a_valid_answer(served: Served, plan: list[Part]) -> None:
    parts = wire_parts(plan, served)
    response = get(served, b"&".join(parts))
    check_answer(response.status_code, response.data, parts, served.base_url)


@PROPERTY_SETTINGS
@given(
    plan=plans,
    in_query=st.one_of(st.just(0), st.integers(0, 12)),
    content_type=st.sampled_from([FORM, FORM + "; charset=UTF-8", FORM.upper()]),
)
def test_any_post_request_gets_a_valid_answer(
    served: Served, plan: list[Part], in_query: int, content_type: str
) -> None:
    """The same by POST, the first `in_query` parts in the query string, the rest in the body."""
    parts = wire_parts(plan, served)
    body = b"&".join(parts[in_query:])
    response = post(served, b"&".join(parts[:in_query]), body, content_type)
    if len(body) > MAX_BODY:
        # Answered as a long GET is: one badArgument, whatever else the arguments hold.
        assert response.status_code == 200
        assert error_codes(validate(response.data)) == ["badArgument"]
        return
    check_answer(response.status_code, response.data, parts, served.base_url)


# Fixed cases the strategies can reach, kept so each one runs every time on both backends.
EDGE_CASES = [
    b"",
    b"verb",
    b"verb=",
    b"verb=Identify&verb=Identify",
    b"verb=Identify&",
    b"&&verb=Identify&&",
    b"verb=Ident%69fy",
    b"verb=Identify%00",
    b"verb=Identify%ff",
    b"verb=%ZZIdentify",
    b"verb=Identify&foo=bar",
    b"verb=Identify&%00=1",
    b"verb=Identify&\xff=1",
    b"verb=ListSets&resumptionToken=%3C%26%3E%22%27",
    b"verb=ListSets&resumptionToken=a%0D%0Ab%09c",
    b"verb=ListSets&resumptionToken=%01",
    b"verb=ListSets&resumptionToken=%ED%A0%80",  # an encoded surrogate: not UTF-8
    b"verb=ListRecords&resumptionToken=abc%C3",
    b"verb=GetRecord&metadataPrefix=oai_dc&identifier=oai:test.example.org:%FF",
    b"verb=GetRecord&metadataPrefix=oai_dc&identifier=oai:test.example.org:\xc3\xa9",  # raw UTF-8: fine
    b"verb=GetRecord&metadataPrefix=oai_dc&identifier=oai:test.example.org:\xe9",  # raw Latin-1: not
    b"verb=GetRecord&metadataPrefix=oai_dc&identifier=oai:test.example.org:1",
    b"verb=GetRecord&metadataPrefix=oai_dc&identifier=oai:test.example.org:7",
    b"verb=GetRecord&metadataPrefix=oai_dc&identifier=oai:test.example.org:1&identifier=oai:test.example.org:1",
    b"verb=GetRecord&metadataPrefix=oai_dc&identifier=oai%3Atest.example.org%3A%E9",
    b"verb=GetRecord&metadataPrefix=marc&identifier=oai:test.example.org:nope",
    b"verb=ListRecords&metadataPrefix=oai_dc&from=2023-11-14&until=2023-11-14T23:00:00Z",
    b"verb=ListRecords&metadataPrefix=oai_dc&from=2024-01-01&until=2023-01-01",
    b"verb=ListRecords&metadataPrefix=oai_dc&from=2000-02-30",
    b"verb=ListRecords&metadataPrefix=oai_dc&set=a:b&from=2023-11-15",
    b"verb=ListRecords&metadataPrefix=oai_dc&set=a:",
    b"verb=ListIdentifiers&metadataPrefix=oai_dc&set=" + b"a" * 5000,
    b"verb=ListIdentifiers&resumptionToken=x&metadataPrefix=oai_dc",
    b"verb=ListMetadataFormats&identifier=oai:test.example.org:nope",
    # Unicode digits pass `\d`: the `from`/`until` values below are not xs:date/xs:dateTime.
    b"verb=ListIdentifiers&metadataPrefix=oai_dc&from=%D9%A2%D9%A0%D9%A0%D9%A0-01-01",
    b"verb=ListRecords&metadataPrefix=oai_dc&until=%EF%BC%92%EF%BC%90%EF%BC%92%EF%BC%93-11-14T22:00:00Z",
    b"verb=ListRecords&metadataPrefix=oai_dc&from=2023-11-14T1%D9%A2:00:00Z",
    # Identifiers xs:anyURI rejects: a ':' in a first segment that is no scheme; a port that is not
    # a number, is empty, or does not fit an int (libxml2's rules).
    b"verb=GetRecord&metadataPrefix=oai_dc&identifier=0:",
    b"verb=ListMetadataFormats&identifier=-a:b",
    b"verb=GetRecord&metadataPrefix=oai_dc&identifier=http://host:abc/x",
    b"verb=GetRecord&metadataPrefix=oai_dc&identifier=http://host:/x",
    b"verb=ListMetadataFormats&identifier=http://host:3000000000/x",
]


@pytest.mark.parametrize("query", EDGE_CASES, ids=[repr(q)[2:-1][:90] for q in EDGE_CASES])
def test_edge_cases(served: Served, query: bytes) -> None:
    parts = query.split(b"&")
    response = get(served, query)
    check_answer(response.status_code, response.data, parts, served.base_url)
    response = post(served, b"", query)
    check_answer(response.status_code, response.data, parts, served.base_url)


# ---- identifier syntax: our check never accepts what xs:anyURI rejects -----------------------------

ANY_URI = etree.XMLSchema(
    etree.fromstring(
        '<xs:schema xmlns:xs="http://www.w3.org/2001/XMLSchema"><xs:element name="u" type="xs:anyURI"/></xs:schema>'
    )
)


@settings(max_examples=800, deadline=None, phases=PHASES)
@given(candidate=uri_candidates)
@example("oai:test.example.org:1")
@example("http://example.org/a?b=c#frag")
@example("0:")
@example("-a:b")
@example("http://host:abc/x")
@example("http://host:/x")
@example("http://host:3000000000/x")
@example("::")
def test_identifier_syntax_agrees_with_any_uri(candidate: str) -> None:
    """What the identifier check (`records.is_identifier`, once `protocol.IDENTIFIER_RE`) lets
    through is echoed in `<request identifier=...>`, so it must be an xs:anyURI."""
    accepted = is_identifier(candidate) and xml_chars_only(candidate)
    event("accepted as an identifier" if accepted else "rejected as an identifier")
    if not accepted:
        return  # (rejected values get badArgument and are never echoed)
    element = etree.Element("u")
    element.text = candidate
    assert ANY_URI.validate(etree.ElementTree(element)), f"{candidate!r}: {ANY_URI.error_log}"
    # And as <request> echoes it: an attribute of type oai:identifierType.
    doc = etree.fromstring(
        f'<OAI-PMH xmlns="{OAI[1:-1]}"><responseDate>2000-01-01T00:00:00Z</responseDate>'
        '<request verb="GetRecord" metadataPrefix="oai_dc"/><error code="idDoesNotExist"/></OAI-PMH>'
    )
    doc.find(f"{OAI}request").set("identifier", candidate)
    validate(etree.tostring(doc))


def test_every_character_outside_xmls_char_production_and_no_other_is_forbidden() -> None:
    """The store removes what `has_forbidden_chars` finds before anything is written: every
    code point is checked against XML 1.0's Char production."""
    wrong = [hex(c) for c in range(0x110000) if has_forbidden_chars(chr(c)) == xml_chars_only(chr(c))]
    assert wrong == []


@settings(max_examples=2000, deadline=None, phases=PHASES)
@given(value=st.text(alphabet=st.characters(exclude_categories=())))  # surrogates included
@example("ok\ufffe")
@example("\x0bok")
@example("ok\ud800ok")
def test_a_forbidden_character_is_found_wherever_it_stands(value: str) -> None:
    assert has_forbidden_chars(value) == (not xml_chars_only(value))


@settings(max_examples=1000, deadline=None, phases=PHASES)
@given(
    values=st.lists(
        st.tuples(
            st.sampled_from(["title", "creator", "[odd", "", "a\x1fb", "x\x1ey"]),
            st.text(alphabet=st.characters(exclude_characters="\x1e\x1f")),  # values are cleaned first
            st.one_of(st.none(), st.sampled_from(["en", "fr-CA", "\x1f", "[", "a\x1eb"])),
        ),
        max_size=6,
    )
)
@example(values=[])
@example(values=[("title", "", None)])
@example(values=[("title", "[not json", "en")])
def test_stored_dublin_core_reads_back_as_written(values: list[tuple[str, str, str | None]]) -> None:
    dc = [DCValue(*v) for v in values]
    assert decode_dc(encode_dc(dc)) == dc
