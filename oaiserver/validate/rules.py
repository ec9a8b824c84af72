"""What the validator reports: the statuses, the rules in report order, and the bad requests
(`ERROR_CASES`) with the OAI-PMH error each must produce."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

PASS, FAIL, WARN, SKIP = "PASS", "FAIL", "WARN", "SKIP"

# The rules, in the order they are reported. Rules marked True are checked on every response.
RULES: tuple[tuple[str, bool, str], ...] = (
    ("http-200", True, "every response is HTTP 200, OAI-PMH errors included"),
    ("http-post", False, "the base URL answers POST as well as GET"),
    ("content-type", True, "responses are served as text/xml"),
    ("well-formed", True, "every response is well-formed XML (parsed with no DTD, entities or network)"),
    ("schema-valid", True, "every response is valid against the official schemas, payload included"),
    ("request-element", True, "<request> holds the base URL and, unless in error, the verb asked"),
    ("response-date", True, "responseDate is UTC YYYY-MM-DDThh:mm:ssZ (no fraction, no offset)"),
    ("datestamps", True, "datestamps are in the declared granularity, without fractions or offsets"),
    ("identify.required", False, "Identify has every required element, protocolVersion 2.0"),
    ("identify.baseURL", False, "Identify's baseURL is the URL validated"),
    ("identify.granularity", False, "granularity is YYYY-MM-DD or YYYY-MM-DDThh:mm:ssZ"),
    ("identify.earliestDatestamp", False, "earliestDatestamp is in that granularity and bounds every datestamp"),
    ("identify.deletedRecord", False, "deletedRecord is no, transient or persistent, and true to the lists"),
    ("identify.oai-identifier", False, "an oai-identifier description, if any, agrees with the identifiers"),
    ("formats.oai_dc", False, "ListMetadataFormats includes oai_dc"),
    ("sets", False, "ListSets answers sets (no setSpec twice) or noSetHierarchy"),
    ("list.unique", False, "no identifier twice in the ListIdentifiers chain"),
    ("list.identifiers-uri", False, "every identifier is a URI: a scheme, no spaces, only URI characters"),
    ("list.cursor", False, "each page's cursor is the count of items before it"),
    ("list.complete-size", False, "completeListSize is the size of the list"),
    ("list.tokens-accepted", False, "every resumptionToken issued is accepted"),
    ("list.no-empty-page", False, "no resumptionToken leads to an empty page"),
    ("list.last-token", False, "the last page's resumptionToken is empty (or absent on a one-page list)"),
    ("records.first-page", False, "ListRecords answers oai_dc records consistent with ListIdentifiers"),
    ("records.deleted-no-metadata", True, "deleted records carry no metadata"),
    ("getrecord.match", False, "GetRecord of listed identifiers gives the same header"),
    ("selective.from-until", False, "from/until in the declared granularity select records in range"),
    ("error.request-attributes", True, "<request> has no attributes on badVerb and badArgument"),
)

# Why a rule with no note is skipped, when nothing more specific was said.
NOTHING_SEEN = {
    "records.deleted-no-metadata": "no deleted record seen",
    "datestamps": "no datestamp seen",
    "error.request-attributes": "no badVerb or badArgument response",
}


@dataclass(frozen=True)
class Note:
    """One observation for a rule; a rule's result is drawn from all of its notes."""

    status: str
    subject: str
    reason: str


@dataclass(frozen=True)
class Result:
    """One line of the report."""

    name: str
    status: str
    reason: str


@dataclass(frozen=True)
class ErrorCase:
    """A bad request and the OAI-PMH error it must produce."""

    name: str
    what: str
    pairs: tuple[tuple[str, str], ...]
    code: str


# fmt: off
LI = ("verb", "ListIdentifiers")
DC = ("metadataPrefix", "oai_dc")
ERROR_CASES: tuple[ErrorCase, ...] = (
    ErrorCase("error.bad-verb", "an unknown verb", (("verb", "NoSuchVerb"),), "badVerb"),
    ErrorCase("error.missing-verb", "no verb", (), "badVerb"),
    ErrorCase("error.repeated-verb", "the verb twice", (("verb", "Identify"), ("verb", "Identify")), "badVerb"),
    ErrorCase("error.missing-metadataPrefix", "ListRecords without metadataPrefix", (("verb", "ListRecords"),),
              "badArgument"),
    ErrorCase("error.illegal-argument", "Identify with an argument it does not take",
              (("verb", "Identify"), ("foo", "bar")), "badArgument"),
    ErrorCase("error.repeated-argument", "metadataPrefix twice", (LI, DC, DC), "badArgument"),
    ErrorCase("error.exclusive-token", "resumptionToken with another argument",
              (LI, DC, ("resumptionToken", "x")), "badArgument"),
    ErrorCase("error.bad-date", "from=yesterday", (LI, DC, ("from", "yesterday")), "badArgument"),
    ErrorCase("error.from-after-until", "from later than until",
              (LI, DC, ("from", "2001-01-01"), ("until", "2000-01-01")), "badArgument"),
    ErrorCase("error.mixed-granularity", "from and until in different granularities",
              (LI, DC, ("from", "2000-01-01"), ("until", "2001-01-01T00:00:00Z")), "badArgument"),
    ErrorCase("error.bad-resumptionToken", "a made-up resumptionToken",
              (LI, ("resumptionToken", "oaiserver-validate-no-such-token")), "badResumptionToken"),
    ErrorCase("error.unknown-identifier", "GetRecord of an identifier that does not exist",
              (("verb", "GetRecord"), ("identifier", "oai:validate.invalid:no-such-record"), DC), "idDoesNotExist"),
    ErrorCase("error.unknown-prefix", "ListIdentifiers in a format nobody has",
              (LI, ("metadataPrefix", "no_such_format")), "cannotDisseminateFormat"),
)
# fmt: on
ECHO_FORBIDDEN = ("badVerb", "badArgument")

IDENTIFY_RULES = (
    "identify.required",
    "identify.baseURL",
    "identify.granularity",
    "identify.earliestDatestamp",
    "identify.deletedRecord",
    "identify.oai-identifier",
)
LIST_RULES = (
    "list.unique",
    "list.identifiers-uri",
    "list.cursor",
    "list.complete-size",
    "list.tokens-accepted",
    "list.no-empty-page",
    "list.last-token",
)


def rule_names() -> Iterator[str]:
    """Every rule in report order: RULES, then the error cases, then the echo rule that goes with them."""
    last = "error.request-attributes"
    yield from (name for name, _, _ in RULES if name != last)
    yield from (c.name for c in ERROR_CASES)
    yield last
