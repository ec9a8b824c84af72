"""Identify and what it promises: required elements, baseURL, granularity, earliestDatestamp,
deletedRecord and oai-identifier descriptions (`IDENTIFY_CHECKS`); POST; and, once the lists
have been read, whether those promises held (`check_identify_against_lists`)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from oaiserver.records import DAY, REPO_ID_RE, SECONDS
from oaiserver.validate.parsing import OAI, OAI_ID, date_problem, normal_url, parse_any
from oaiserver.validate.rules import FAIL, IDENTIFY_RULES, PASS, WARN

if TYPE_CHECKING:
    from oaiserver.validate.core import Fetched, Validator

DELETED_RECORD = ("no", "transient", "persistent")
REQUIRED = (
    "repositoryName",
    "baseURL",
    "protocolVersion",
    "adminEmail",
    "earliestDatestamp",
    "deletedRecord",
    "granularity",
)


class Identify:
    """The <Identify> part of a response, read element by element."""

    def __init__(self, part: Any) -> None:
        self.part = part

    def text(self, tag: str) -> str | None:
        """The stripped text of a child element; None when the element is absent."""
        el = self.part.find(f"{OAI}{tag}")
        return None if el is None else (el.text or "").strip()


Check = Callable[["Validator", Identify], None]


def check_identify(v: Validator) -> Fetched:
    f = v.fetch("Identify", [("verb", "Identify")])
    part = f.part("Identify")
    if part is None:
        why = f.problem or f"HTTP {f.status}, {f.describe_errors()}"
        v.note("identify.required", FAIL, f"no usable Identify response: {why}")
        v.skip(IDENTIFY_RULES, "no usable Identify response")
        return f
    identify = Identify(part)
    for check in IDENTIFY_CHECKS:
        check(v, identify)
    return f


def check_required(v: Validator, identify: Identify) -> None:
    missing = [tag for tag in REQUIRED if identify.text(tag) is None]
    version = identify.text("protocolVersion")
    if missing:
        v.note("identify.required", FAIL, f"missing {', '.join(missing)}")
    elif version != "2.0":
        v.note("identify.required", FAIL, f"protocolVersion is {version!r}, not '2.0'")
    else:
        v.note("identify.required", PASS, f"repositoryName {identify.text('repositoryName')!r}, protocolVersion 2.0")


def check_base_url(v: Validator, identify: Identify) -> None:
    base = identify.text("baseURL")
    if base is None:
        v.skip(["identify.baseURL"], "no baseURL")
    elif base == v.url:
        v.note("identify.baseURL", PASS, f"baseURL is {base}")
    elif normal_url(base) == normal_url(v.url):
        v.note(
            "identify.baseURL",
            FAIL,
            f"baseURL {base!r} differs from {v.url!r} in spelling: harvesters compare and sign with the exact "
            "string (if you typed another spelling, validate the baseURL itself)",
        )
    else:
        v.note("identify.baseURL", FAIL, f"baseURL is {base!r} but the URL validated is {v.url!r}")


def check_granularity(v: Validator, identify: Identify) -> None:
    """Remembers the granularity for the datestamp rules."""
    granularity = identify.text("granularity")
    if granularity in (DAY, SECONDS):
        v.granularity = granularity
        v.note("identify.granularity", PASS, granularity)
    else:
        v.note("identify.granularity", FAIL, f"granularity {granularity!r} is neither {DAY} nor {SECONDS}")


def check_earliest(v: Validator, identify: Identify) -> None:
    """Remembers a legal earliestDatestamp; whether it bounds the list is judged after the lists."""
    earliest = identify.text("earliestDatestamp")
    if earliest is None:
        return
    problem = date_problem(earliest, v.granularity)
    when = None if problem else parse_any(earliest)
    if when is not None:
        v.earliest = (earliest, when)
    else:
        v.note("identify.earliestDatestamp", FAIL, f"earliestDatestamp {problem}")


def check_deleted_record(v: Validator, identify: Identify) -> None:
    """Remembers a legal policy; whether the lists keep to it is judged after the lists."""
    policy = identify.text("deletedRecord")
    if policy in DELETED_RECORD:
        v.deleted_policy = policy
    elif policy is not None:
        v.note("identify.deletedRecord", FAIL, f"deletedRecord {policy!r} is not one of {DELETED_RECORD}")


def check_oai_identifiers(v: Validator, identify: Identify) -> None:
    descriptions = identify.part.findall(f"{OAI}description/{OAI_ID}oai-identifier")
    if not descriptions:
        v.note("identify.oai-identifier", PASS, "no oai-identifier description (optional)")
    for desc in descriptions:
        check_oai_identifier(v, desc)


def check_oai_identifier(v: Validator, desc: Any) -> None:
    """One oai-identifier description; a good one's repositoryIdentifier is remembered."""

    def text(tag: str) -> str:
        return (desc.findtext(f"{OAI_ID}{tag}") or "").strip()

    repo, sample = text("repositoryIdentifier"), text("sampleIdentifier")
    problems = []
    if text("scheme") != "oai":
        problems.append(f"scheme is {text('scheme')!r}, not 'oai'")
    if text("delimiter") != ":":
        problems.append(f"delimiter is {text('delimiter')!r}, not ':'")
    if not REPO_ID_RE.fullmatch(repo):
        problems.append(f"repositoryIdentifier {repo!r} is not a domain name whose labels start with a letter")
    if not sample.startswith(f"oai:{repo}:"):
        problems.append(f"sampleIdentifier {sample!r} does not start with 'oai:{repo}:'")
    if problems:
        v.note("identify.oai-identifier", FAIL, "; ".join(problems))
    else:
        v.repository_identifier = repo
        v.note("identify.oai-identifier", PASS, f"repositoryIdentifier {repo}, sample {sample}")


# In this order: earliestDatestamp is read in the granularity found before it.
IDENTIFY_CHECKS: tuple[Check, ...] = (
    check_required,
    check_base_url,
    check_granularity,
    check_earliest,
    check_deleted_record,
    check_oai_identifiers,
)


COMPRESSIONS = ("gzip", "deflate")


def check_compression(v: Validator) -> None:
    """3.1.3: each encoding Identify declares (of those HTTP clients know) is served when asked for."""
    part = v.identify.part("Identify") if v.identify is not None else None
    declared = [(c.text or "").strip() for c in part.findall(f"{OAI}compression")] if part is not None else []
    asked = [c for c in declared if c in COMPRESSIONS]
    if not asked:
        v.note("identify.compression", PASS, f"declares {', '.join(declared) or 'no compression'}")
        return
    for encoding in asked:
        f = v.fetch(f"Identify ({encoding})", [("verb", "Identify")], headers={"Accept-Encoding": encoding})
        if f.status != 200:
            v.note("identify.compression", FAIL, f"Accept-Encoding: {encoding} answered {f.why()}", f.subject)
        elif f.content_encoding != encoding:
            got = f.content_encoding or "identity"
            v.note(
                "identify.compression",
                FAIL,
                f"Identify declares {encoding}, but Accept-Encoding: {encoding} was answered in {got}",
                f.subject,
            )
        else:
            v.note("identify.compression", PASS, f"{encoding} served when asked")


def check_post(v: Validator) -> None:
    f = v.fetch("Identify (POST)", [("verb", "Identify")], method="POST")
    if f.status == 200 and f.part("Identify") is not None:
        v.note("http-post", PASS, "POST verb=Identify answers Identify")
    else:
        why = f"HTTP {f.status}" if f.status not in (None, 200) else f.why()
        v.note("http-post", FAIL, f"POST verb=Identify: {why}")


def check_earliest_bounds(v: Validator) -> None:
    if v.earliest is None:
        return
    text, when = v.earliest
    seen = v.earliest_seen
    if seen is not None and seen[1] < when:
        v.note(
            "identify.earliestDatestamp",
            FAIL,
            f"earliestDatestamp {text} is later than {seen[0]}: it must bound every datestamp",
        )
    else:
        v.note("identify.earliestDatestamp", PASS, f"{text}")


def check_deleted_policy_kept(v: Validator) -> None:
    if v.deleted_policy is None:
        return
    if v.deleted_policy == "no" and v.deleted_seen:
        v.note("identify.deletedRecord", FAIL, "deletedRecord is 'no' but deleted records are listed")
    else:
        v.note("identify.deletedRecord", PASS, f"{v.deleted_policy}; {len(v.deleted_seen)} deleted seen")


def check_identifiers_in_namespace(v: Validator) -> None:
    if not (v.repository_identifier and v.identifiers_seen):
        return
    prefix = f"oai:{v.repository_identifier}:"
    other = [i for i in v.identifiers_seen if not i.startswith(prefix)]
    if other:
        v.note("identify.oai-identifier", WARN, f"{len(other)} listed identifier(s) outside {prefix}*, e.g. {other[0]}")


def check_identify_against_lists(v: Validator) -> None:
    """What Identify promised, held against every response read since."""
    v.current = v.identify.url if v.identify is not None else ""
    check_earliest_bounds(v)
    check_deleted_policy_kept(v)
    check_identifiers_in_namespace(v)
