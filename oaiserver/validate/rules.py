"""What the validator reports: the statuses, the rules in report order (`RULES`, each with the section of
the OAI-PMH 2.0 specification it comes from and the level that section gives it), and the bad requests
(`ERROR_CASES`) with the OAI-PMH error each must produce.

A check notes FAIL when it sees a rule broken; the rule's level decides what the report says: a MUST
broken is a FAIL, a SHOULD broken a WARN (`report.result_of`)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

PASS, FAIL, WARN, SKIP = "PASS", "FAIL", "WARN", "SKIP"
MUST, SHOULD = "MUST", "SHOULD"
SPEC = "http://www.openarchives.org/OAI/2.0/openarchivesprotocol.htm"


@dataclass(frozen=True)
class Rule:
    """One rule: its name, the spec section, MUST or SHOULD, whether it is checked on every response,
    what it asks, and what to change when it is broken."""

    name: str
    section: str
    level: str
    every: bool
    text: str
    fix: str


# fmt: off
RULES: tuple[Rule, ...] = (
    Rule("http-200", "3.1.2.2", MUST, True, "every response is HTTP 200, OAI-PMH errors included",
         "answer every OAI-PMH request with HTTP 200 and put errors in <error> elements; keep 503 for overload"),
    Rule("http-post", "3.1.1", MUST, False, "the base URL answers POST as well as GET",
         "accept application/x-www-form-urlencoded POST requests at the base URL"),
    Rule("content-type", "3.1.2.1", MUST, True, "responses are served as text/xml",
         "send Content-Type: text/xml (charset=utf-8) with every OAI-PMH response"),
    Rule("well-formed", "3.2", MUST, True,
         "every response is well-formed XML (parsed with no DTD, entities or network)",
         "build responses with an XML library (escape <, & and quotes, no DOCTYPE)"),
    Rule("schema-valid", "3.2.1", MUST, True,
         "every response is valid against the official schemas, payload included (namespaces without a "
         "shipped schema are reported as not checked)",
         "validate your responses against OAI-PMH.xsd and the schemas of the formats you serve"),
    Rule("request-element", "3.2", MUST, True, "<request> holds the base URL; a verb it echoes is the one asked",
         "put the base URL (as in Identify) in <request> and echo the verb"),
    Rule("request-echo", "3.2", MUST, True,
         "<request>'s attributes are arguments sent, each with its value exactly as sent, escaped (none on badVerb "
         "and badArgument); an argument left out is a WARN",
         "echo each argument's value as received, unchanged, as an escaped XML attribute"),
    Rule("response-date", "3.3.2", MUST, True, "responseDate is UTC YYYY-MM-DDThh:mm:ssZ (no fraction, no offset)",
         "write responseDate in UTC as YYYY-MM-DDThh:mm:ssZ"),
    Rule("datestamps", "3.3.2", MUST, True, "datestamps are in the declared granularity, without fractions or offsets",
         "write every datestamp in UTC in the granularity Identify declares"),
    Rule("identify.required", "4.2", MUST, False, "Identify has every required element, protocolVersion 2.0",
         "answer Identify with repositoryName, baseURL, protocolVersion 2.0, adminEmail, earliestDatestamp, "
         "deletedRecord and granularity"),
    Rule("identify.baseURL", "4.2", MUST, False, "Identify's baseURL is the URL validated, spelled the same",
         "configure baseURL as the exact public URL harvesters use (scheme, host, port, path, trailing slash)"),
    Rule("identify.granularity", "4.2", MUST, False, "granularity is YYYY-MM-DD or YYYY-MM-DDThh:mm:ssZ",
         "declare YYYY-MM-DD or YYYY-MM-DDThh:mm:ssZ"),
    Rule("identify.earliestDatestamp", "4.2", MUST, False,
         "earliestDatestamp is in that granularity and bounds every datestamp",
         "declare the oldest datestamp of any record, deleted ones included"),
    Rule("identify.deletedRecord", "4.2", MUST, False,
         "deletedRecord is no, transient or persistent, and true to the lists",
         "declare the deleted-record policy you keep to"),
    Rule("identify.oai-identifier", "4.2", MUST, False,
         "an oai-identifier description, if any, agrees with the identifiers",
         "make the oai-identifier description's repositoryIdentifier and sampleIdentifier match your identifiers"),
    Rule("identify.compression", "3.1.3", SHOULD, False,
         "every compression declared in Identify is served when a client asks for it",
         "compress responses when Accept-Encoding asks for a declared encoding, or stop declaring it"),
    Rule("formats.oai_dc", "3.4", MUST, False, "ListMetadataFormats includes oai_dc",
         "disseminate oai_dc with its official namespace and schema"),
    Rule("sets", "4.6", MUST, False, "ListSets answers sets (no setSpec twice) or noSetHierarchy",
         "list each set once, or answer noSetHierarchy"),
    Rule("sets.declared", "2.6", MUST, False, "every setSpec in a header is a set ListSets declares",
         "declare every set records are put in, or stop putting records in undeclared sets"),
    Rule("list.unique", "3.5", MUST, False, "no identifier twice in the ListIdentifiers chain",
         "order lists by a stable unique key so pages neither overlap nor skip"),
    Rule("list.identifiers-uri", "2.4", MUST, False,
         "every identifier is a URI: a scheme, no spaces, only URI characters",
         "give records identifiers that are URIs (e.g. oai:<repositoryIdentifier>:<local id>)"),
    Rule("list.cursor", "3.5", MUST, False, "each page's cursor is the count of items before it",
         "set cursor to the number of items sent before the page"),
    Rule("list.complete-size", "3.5", MUST, False, "completeListSize is the size of the list",
         "count the whole list for completeListSize, or leave it out"),
    Rule("list.tokens-accepted", "3.5", MUST, False, "every resumptionToken issued is accepted",
         "accept every token you issue for at least its expirationDate"),
    Rule("list.no-empty-page", "3.5", MUST, False, "no resumptionToken leads to an empty page",
         "look ahead one item so that the page that completes a list carries the empty token"),
    Rule("list.last-token", "3.5", MUST, False,
         "the page that completes a list carries an empty resumptionToken (none on a one-page list)",
         "end every list of more than one page with an empty <resumptionToken/>"),
    Rule("records.first-page", "4.5", MUST, False, "ListRecords answers oai_dc records consistent with ListIdentifiers",
         "serve the same records through ListRecords as through ListIdentifiers"),
    Rule("records.deleted-no-metadata", "2.5.1", MUST, True, "deleted records carry no metadata",
         "send deleted records as a header with status=\"deleted\" and nothing else"),
    Rule("getrecord.match", "4.1", MUST, False, "GetRecord of listed identifiers gives the same header",
         "serve GetRecord from the same data as the lists"),
    Rule("getrecord.metadata", "2.5", MUST, False,
         "GetRecord's metadata is the same as that record's metadata in ListRecords",
         "render a record's metadata the same way for GetRecord and ListRecords"),
    Rule("selective.from-until", "2.7.1", MUST, False,
         "from and until in the declared granularity are inclusive bounds: from=until=D lists exactly D's records",
         "select datestamp >= from and datestamp <= until"),
    Rule("selective.day-inclusive", "2.7.1", MUST, False,
         "day-granularity bounds take the whole day: until=D includes records stamped during D, from=D too",
         "read until=YYYY-MM-DD as the end of that day (YYYY-MM-DDT23:59:59Z)"),
    Rule("selective.set", "2.7.2", MUST, False, "set=X lists the records of X and of X's descendant sets, and no other",
         "select records whose setSpec is X or starts with X:"),
    Rule("robust.arguments", "3.1.2.2", MUST, False,
         "NUL, control characters and invalid UTF-8 in arguments get an OAI-PMH answer (HTTP 200, well-formed XML)",
         "refuse unreadable argument values with badArgument before using or echoing them"),
    Rule("error.request-attributes", "3.2", MUST, True, "<request> has no attributes on badVerb and badArgument",
         "echo only the base URL in <request> when answering badVerb or badArgument"),
)
# fmt: on

RULE = {rule.name: rule for rule in RULES}

# Why a rule with no note is skipped, when nothing more specific was said.
NOTHING_SEEN = {
    "records.deleted-no-metadata": "no deleted record seen",
    "datestamps": "no datestamp seen",
    "error.request-attributes": "no badVerb or badArgument response",
    "request-echo": "no response that must echo its arguments",
}


@dataclass(frozen=True)
class Note:
    """One observation for a rule; a rule's result is drawn from all of its notes."""

    status: str
    subject: str
    reason: str
    url: str = ""  # the request that showed it, when the subject does not name one


@dataclass(frozen=True)
class Result:
    """One line of the report, with what the HTML and JSON reports add: the rule's section and level,
    and the requests that showed the reason."""

    name: str
    status: str
    reason: str
    section: str = ""
    level: str = MUST
    requests: tuple[str, ...] = ()


@dataclass(frozen=True)
class ErrorCase:
    """A bad request and the OAI-PMH error it must produce."""

    name: str
    what: str
    pairs: tuple[tuple[str, str], ...]
    code: str
    section: str = "3.6"


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
    ErrorCase("error.bad-date", "from=yesterday", (LI, DC, ("from", "yesterday")), "badArgument", "3.3.1"),
    ErrorCase("error.date-fraction", "from with fractions of a second",
              (LI, DC, ("from", "2000-01-01T00:00:00.5Z")), "badArgument", "3.3.1"),
    ErrorCase("error.date-offset", "from with a UTC offset instead of Z",
              (LI, DC, ("from", "2000-01-01T00:00:00+01:00")), "badArgument", "3.3.1"),
    ErrorCase("error.date-impossible", "from=2000-02-30, a day that does not exist",
              (LI, DC, ("from", "2000-02-30")), "badArgument", "3.3.1"),
    ErrorCase("error.from-after-until", "from later than until",
              (LI, DC, ("from", "2001-01-01"), ("until", "2000-01-01")), "badArgument", "2.7.1"),
    ErrorCase("error.mixed-granularity", "from and until in different granularities",
              (LI, DC, ("from", "2000-01-01"), ("until", "2001-01-01T00:00:00Z")), "badArgument", "3.3.1"),
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
    "identify.compression",
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
    yield from (rule.name for rule in RULES if rule.name != last)
    yield from (c.name for c in ERROR_CASES)
    yield last


def section_and_level(name: str) -> tuple[str, str]:
    """The spec section and level of a rule or an error case."""
    if name in RULE:
        return RULE[name].section, RULE[name].level
    case = next(c for c in ERROR_CASES if c.name == name)
    return case.section, MUST


def fix_for(name: str) -> str:
    if name in RULE:
        return RULE[name].fix
    case = next(c for c in ERROR_CASES if c.name == name)
    return f"answer {case.what} with the OAI-PMH error {case.code}"
