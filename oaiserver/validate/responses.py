"""The rules checked on every response (HTTP status, media type, XML, schema, <request>, dates,
deleted records), as a table of small checks run by `inspect` on each response fetched."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import TYPE_CHECKING

from oaiserver.records import SECONDS
from oaiserver.validate.parsing import OAI, SCHEMA_ORDER, child_text, date_problem, more, one_line, parse_any
from oaiserver.validate.rules import ECHO_FORBIDDEN, FAIL, PASS, WARN

if TYPE_CHECKING:
    from oaiserver.validate.core import Fetched, Validator

Check = Callable[["Validator", "Fetched"], None]


def inspect(v: Validator, f: Fetched) -> None:
    """Every rule that holds for any response: the HTTP ones always, the rest once there is a document."""
    check_http_status(v, f)
    check_content_type(v, f)
    if f.doc is None:
        if f.status == 200:  # a failed status is enough to report for a body that is not XML
            v.note("well-formed", FAIL, f.problem or "no document", f.subject)
        return
    for check in DOCUMENT_CHECKS:
        check(v, f)


def check_http_status(v: Validator, f: Fetched) -> None:
    s = f.subject
    if f.status == 200:
        v.note("http-200", PASS, "", s)
    elif f.status is not None and 300 <= f.status < 400:
        v.note("http-200", FAIL, f"HTTP {f.status} redirect to {f.location}: the base URL must answer itself", s)
    elif f.errors:
        v.note(
            "http-200",
            FAIL,
            f"HTTP {f.status} with an OAI-PMH error body ({', '.join(f.codes)}): "
            "OAI-PMH errors must be sent with HTTP 200",
            s,
        )
    else:
        v.note("http-200", FAIL, f"HTTP {f.status}", s)


def check_content_type(v: Validator, f: Fetched) -> None:
    """3.1.2.1: "The Content-Type returned for all OAI-PMH requests must be text/xml." Judged on the
    responses that are OAI-PMH ones (a 405 page or a proxy's error page is http-200's business)."""
    if f.status != 200:
        return
    mime = f.content_type.split(";")[0].strip().lower()
    if mime == "text/xml":
        v.note("content-type", PASS, "", f.subject)
    else:
        v.note("content-type", FAIL, f"Content-Type is {f.content_type or 'missing'!r}, not text/xml", f.subject)


def check_well_formed(v: Validator, f: Fetched) -> None:
    v.note("well-formed", PASS, "", f.subject)


KNOWN_NAMESPACES = {ns for ns, _ in SCHEMA_ORDER}
# What libxml2 says of an element a strict wildcard admits but no shipped schema declares.
UNDECLARED = re.compile(
    r"Element '\{([^}]*)\}[^']*': No matching global element declaration available, but demanded by the strict wildcard"
)


def check_schema_valid(v: Validator, f: Fetched) -> None:
    """Valid against the shipped schemas; content in a namespace none of them covers (a toolkit
    description, a metadata format of its own) is not checked, and said so, never failed."""
    if v.schema.validate(f.doc):
        v.note("schema-valid", PASS, "", f.subject)
        return
    errors = []
    for error in v.schema.error_log.filter_from_errors():
        m = UNDECLARED.match(error.message)
        if m and m.group(1) not in KNOWN_NAMESPACES:
            v.unchecked.add(m.group(1))
        else:
            errors.append(error)
    if not errors:
        unchecked = ", ".join(sorted(v.unchecked))
        v.note("schema-valid", PASS, f"not checked (no schema shipped): {unchecked}", f.subject)
        return
    first = errors[0]
    where = f"line {first.line}: {one_line(first.message, 200)}"
    v.note("schema-valid", FAIL, where + more(errors, 1), f.subject)


def check_request_element(v: Validator, f: Fetched) -> None:
    request = f.doc.find(f"{OAI}request")
    if request is None:
        v.note("request-element", FAIL, "no <request> element", f.subject)
        return
    problems = []
    if (request.text or "").strip() != v.url:
        problems.append(f"<request> holds {(request.text or '').strip()!r}, not the base URL {v.url!r}")
    sent = [value for key, value in f.pairs if key == "verb"]
    echoed = request.get("verb")  # a verb left out is request-echo's business (a WARN)
    if not f.errors and sent and echoed is not None and echoed != sent[0]:
        problems.append(f"<request verb={echoed!r}> for a {sent[0]} request")
    v.note("request-element", FAIL if problems else PASS, "; ".join(problems), f.subject)


def check_request_echo(v: Validator, f: Fetched) -> None:
    """3.2: "The only valid XML attributes for the request element are the keys of the key=value pairs
    of protocol request. The attribute values must be the corresponding values of those key=value
    pairs", none on badVerb and badArgument. An attribute with another value, or for an argument not
    sent, breaks that MUST; an argument left out does not (the spec limits the attributes, it does
    not list them as required), so it is a WARN: pyoai echoes nothing on its other errors, oai-repo
    never echoes the verb, and harvesters read the request they sent, not the echo."""
    request = f.doc.find(f"{OAI}request")
    if request is None or any(code in ECHO_FORBIDDEN for code in f.codes):
        return
    sent = dict(f.pairs)
    if len(sent) != len(f.pairs) or not all(isinstance(value, str) for value in sent.values()):
        return  # a repeated or undecodable argument: badArgument territory, judged elsewhere
    echoed = dict(request.attrib)
    wrong = [f"{name}={value!r} for {sent[name]!r}" for name, value in echoed.items() if sent.get(name, value) != value]
    wrong += [f"{name}={value!r} was not sent" for name, value in echoed.items() if name not in sent]
    missing = [name for name in sent if name not in echoed]
    if wrong:
        v.note("request-echo", FAIL, "<request> echoes " + "; ".join(wrong[:3]) + more(wrong, 3), f.subject)
    elif missing:
        v.note("request-echo", WARN, f"<request> leaves out {', '.join(missing)}", f.subject)
    else:
        v.note("request-echo", PASS, "", f.subject)


def check_error_echo(v: Validator, f: Fetched) -> None:
    """badVerb and badArgument responses must echo no arguments in <request>."""
    request = f.doc.find(f"{OAI}request")
    if request is None or not any(code in ECHO_FORBIDDEN for code in f.codes):
        return
    if request.attrib:
        echoed = " ".join(f'{k}="{value}"' for k, value in request.attrib.items())
        v.note(
            "error.request-attributes",
            FAIL,
            f"{', '.join(sorted(set(f.codes)))} response echoes {echoed}; it must echo no arguments",
            f.subject,
        )
    else:
        v.note("error.request-attributes", PASS, "", f.subject)


def check_response_date(v: Validator, f: Fetched) -> None:
    rd = f.doc.find(f"{OAI}responseDate")
    if rd is not None:
        problem = date_problem((rd.text or "").strip(), SECONDS)
        v.note("response-date", FAIL if problem else PASS, f"responseDate {problem}" if problem else "", f.subject)


def check_datestamps(v: Validator, f: Fetched) -> None:
    """Header datestamps in the declared granularity (the oldest is remembered) and token expiration dates."""
    problems: list[str] = []
    checked = 0
    for header in f.doc.iter(f"{OAI}header"):
        checked += 1
        _header_datestamp(v, header, problems)
    for token in f.doc.iter(f"{OAI}resumptionToken"):
        expires = token.get("expirationDate")
        if expires is not None:
            checked += 1
            problem = date_problem(expires, SECONDS)
            if problem:
                problems.append(f"resumptionToken expirationDate {problem}")
    if problems:
        v.note("datestamps", FAIL, "; ".join(problems[:2]) + more(problems, 2), f.subject)
    elif checked:
        v.note("datestamps", PASS, "", f.subject)


def _header_datestamp(v: Validator, header: object, problems: list[str]) -> None:
    ds, ident = child_text(header, "datestamp"), child_text(header, "identifier")
    problem = date_problem(ds, v.granularity)
    if problem:
        problems.append(f"{ident}: datestamp {problem}")
        return
    when = parse_any(ds)
    if when is not None and (v.earliest_seen is None or when < v.earliest_seen[1]):
        v.earliest_seen = (f"{ident} ({ds})", when)


def check_deleted_no_metadata(v: Validator, f: Fetched) -> None:
    for record in f.doc.iter(f"{OAI}record"):
        header = record.find(f"{OAI}header")
        if header is None or header.get("status") != "deleted":
            continue
        ident = child_text(header, "identifier")
        if record.find(f"{OAI}metadata") is not None:
            v.note("records.deleted-no-metadata", FAIL, f"deleted record {ident} carries <metadata>", f.subject)
        else:
            v.note("records.deleted-no-metadata", PASS, "", f.subject)


# The checks that read the document, in the order they run (the order matters only for datestamps,
# which remembers the oldest one seen).
DOCUMENT_CHECKS: tuple[Check, ...] = (
    check_well_formed,
    check_schema_valid,
    check_request_element,
    check_request_echo,
    check_error_echo,
    check_response_date,
    check_datestamps,
    check_deleted_no_metadata,
)
