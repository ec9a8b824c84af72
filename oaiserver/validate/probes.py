"""What crawlers send by accident: NUL, control characters and invalid UTF-8 in arguments
(`ROBUSTNESS`), each of which must still get an OAI-PMH answer, and an identifier with XML's special
characters, whose echo in <request> must be escaped (`check_echo_escaped`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from oaiserver.validate.parsing import OAI
from oaiserver.validate.rules import DC, FAIL, LI, PASS

if TYPE_CHECKING:
    from oaiserver.validate.core import Validator

GR = ("verb", "GetRecord")


@dataclass(frozen=True)
class Probe:
    what: str
    pairs: tuple[tuple[str, Any], ...]


ROBUSTNESS: tuple[Probe, ...] = (
    Probe("NUL in identifier", (GR, ("identifier", "oai:validate.invalid:a\x00b"), DC)),
    Probe("a control character in metadataPrefix", (LI, ("metadataPrefix", "oai_dc\x01"))),
    Probe("a control character in the verb", (("verb", "Identify\x1b"),)),
    Probe("invalid UTF-8 in identifier", (GR, ("identifier", b"oai:validate.invalid:\xff\xfe"), DC)),
    Probe("an encoded UTF-16 surrogate in set", (LI, DC, ("set", b"\xed\xa0\x80"))),
    Probe("a 4000-character identifier", (GR, ("identifier", "oai:validate.invalid:" + "x" * 4000), DC)),
)

# A legal URI with '&' and "'", which the echo must escape.
SPECIAL_IDENTIFIER = "oai:validate.invalid:a&b'c"


def check_robustness(v: Validator) -> None:
    for probe in ROBUSTNESS:
        f = v.fetch(f"robustness: {probe.what}", probe.pairs, inspected=False)
        if f.status != 200:
            v.note("robust.arguments", FAIL, f"answered HTTP {f.status or f.why()}", f.subject)
        elif f.doc is None:
            v.note("robust.arguments", FAIL, f"HTTP 200 but {f.problem}", f.subject)
        elif f.doc.tag != f"{OAI}OAI-PMH":
            v.note("robust.arguments", FAIL, f"answered {f.doc.tag}, not OAI-PMH", f.subject)
        else:
            v.note("robust.arguments", PASS, "")
    v.note("robust.arguments", PASS, f"{len(ROBUSTNESS)} probes answered in OAI-PMH")


def check_echo_escaped(v: Validator) -> None:
    """GetRecord of an identifier with '&' and "'": an idDoesNotExist whose <request> echoes it,
    escaped (the echo's exactness is judged with every response)."""
    f = v.fetch("GetRecord with & and ' in identifier", [GR, ("identifier", SPECIAL_IDENTIFIER), DC])
    if f.status == 200 and f.doc is None:
        v.note("request-echo", FAIL, f"echoing {SPECIAL_IDENTIFIER!r} gave {f.problem}: escape the echo", f.subject)
