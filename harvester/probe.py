"""`harvester probe URL`: try a new partner and say what its `partners:` entry needs.

A probe is a bounded run of `oaiserver validate` (its HTTP layer, its rules, `--max-pages` 1 and at
most `--max-requests` requests, 30 by default) that also keeps what a configuration needs from the
answers: Identify, the formats, the sets, ListRecords' first page (timed), the announced volume, and
what it detects: whether a `from` with a time is honoured, the tokens' lifetime, gzip, the encoding
the bytes really are, XML faults. It ends with a `partners:` entry that loads with oaiserver.config
(checked before it is printed).

Its requests, in order: Identify, ListMetadataFormats, ListSets, ListIdentifiers and ListRecords
(first pages), ListIdentifiers with a time in `from`; then the validator's other checks while the
cap allows (`LATER`: each runs whole or is skipped with the reason, so no rule is judged on half
its requests). Every answer goes through the validator's every-response rules, so the rule results
printed are the validator's own. Nothing is followed past a first page: a probe stays polite.
"""

from __future__ import annotations

import calendar
import hashlib
import math
import re
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any
from urllib.parse import urlsplit

import yaml
from lxml import etree

from harvester.client import ClientSettings
from oaiserver import config as config_mod
from oaiserver.records import DAY, SECONDS, format_datestamp
from oaiserver.validate import ERROR_CASES, FAIL, WARN, Fetched, Result, Validator, parse, parse_any, rule_names
from oaiserver.validate.core import RequestCap, not_oai_pmh
from oaiserver.validate.errorcases import check_errors
from oaiserver.validate.identify import check_compression, check_identify, check_identify_against_lists, check_post
from oaiserver.validate.lists import check_formats, check_identifiers, check_sets, check_sets_declared
from oaiserver.validate.parsing import OAI, child_text, one_line
from oaiserver.validate.probes import ROBUSTNESS, check_echo_escaped, check_robustness
from oaiserver.validate.records import check_get_record, check_records
from oaiserver.validate.report import counts, results
from oaiserver.validate.rules import DC, LI
from oaiserver.validate.selective import check_selective

__all__ = ["LATER", "MAX_REQUESTS", "Format", "NotOAI", "ProbeReport", "as_json", "best_prefix", "lines"]
__all__ += ["partner_entry", "partner_name", "probe", "rule_names"]

MAX_REQUESTS = 30
USER_AGENT = "oaiserver-harvester-probe/1 (trying an OAI-PMH partner before harvesting it)"
SETS_SHOWN = 5
# Path segments that name the software, not the repository: left out of a derived partner name.
GENERIC_SEGMENTS = frozenset(
    {"oai", "oai2", "oai2d", "oai-pmh", "oai_pmh", "oaipmh", "oaihandler", "request", "index.php", "provider"}
    | {"cgi", "cgi-bin", "servlet", "server", "api", "ws"}
)
# Characters XML 1.0 forbids, raw or as character references.
_FORBIDDEN = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")
_CHAR_REF = re.compile(r"&#(?:x([0-9A-Fa-f]+)|([0-9]+));")
_DECLARED = re.compile(rb"""^(?:\xef\xbb\xbf)?\s*<\?xml[^>]*?encoding\s*=\s*["']([A-Za-z0-9._-]+)["']""")
_CHARSET = re.compile(r"charset\s*=\s*\"?([A-Za-z0-9._-]+)", re.I)
UTF8_NAMES = ("utf-8", "utf8")


class NotOAI(Exception):
    """The URL does not answer OAI-PMH: the message is the one line the command prints."""


@dataclass(frozen=True)
class Step:
    """One of the validator's checks run after the probe's own requests: how many requests it may
    send (with --max-pages 1), and the rules only it decides (SKIPped when it does not fit)."""

    run: Callable[[Validator], None]
    cost: int
    rules: tuple[str, ...]


# What the validator checks beyond the probe's own requests, most useful to a harvester first.
LATER: tuple[Step, ...] = (
    Step(check_get_record, 2, ("getrecord.match", "getrecord.metadata")),
    Step(check_selective, 4, ("selective.from-until", "selective.day-inclusive", "selective.set")),
    Step(check_compression, 2, ("identify.compression",)),
    Step(check_errors, len(ERROR_CASES), tuple(case.name for case in ERROR_CASES)),
    Step(check_echo_escaped, 1, ()),
    Step(check_post, 1, ("http-post",)),
    Step(check_robustness, len(ROBUSTNESS), ("robust.arguments",)),
)
# The validator's checks the probe always runs (its own requests), in the validator's order.
FIRST: tuple[Callable[[Validator], None], ...] = (
    check_formats,
    check_sets,
    check_identifiers,
    check_sets_declared,
    check_records,
)
GRANULARITY_SUBJECT = "ListIdentifiers from with a time"


class _Probing(Validator):
    """The validator, keeping every answer and how long each took to arrive."""

    def __init__(self, url: str, **kwargs: Any) -> None:
        super().__init__(url, **kwargs)
        self.session.headers["User-Agent"] = USER_AGENT
        self.answers: dict[str, Fetched] = {}
        self.seconds: dict[str, float] = {}

    def fetch(self, subject: str, pairs: Any, method: str = "GET", **kwargs: Any) -> Fetched:
        f = super().fetch(subject, pairs, method, **kwargs)
        self.answers[subject] = f
        return f

    def _send(self, f: Fetched, headers: dict[str, str]) -> Any:
        start = time.monotonic()
        try:
            return super()._send(f, headers)
        finally:
            self.seconds[f.subject] = time.monotonic() - start


# ---- what the probe reports ------------------------------------------------------------------


@dataclass
class Identity:
    name: str | None = None
    admin_emails: list[str] = field(default_factory=list)
    granularity: str | None = None
    earliest_datestamp: str | None = None
    deleted_record: str | None = None
    compression: list[str] = field(default_factory=list)
    base_url: str | None = None


@dataclass
class Format:
    prefix: str
    schema: str
    namespace: str


@dataclass
class Sets:
    count: int | None = None  # completeListSize, or the sets listed when the list fit on one page
    first: list[str] = field(default_factory=list)  # "spec (name)"
    depth: int = 0  # 0 no sets, 1 flat, 2+ a hierarchy that deep
    note: str = ""


@dataclass
class Sample:
    """ListRecords oai_dc, first page."""

    records: int | None = None
    deleted: int = 0
    seconds: float | None = None
    bytes: int | None = None
    gzip: bool = False
    problem: str | None = None


@dataclass
class Detected:
    granularity: str | None = None  # what to harvest with: YYYY-MM-DD or YYYY-MM-DDThh:mm:ssZ
    granularity_note: str = ""
    times_refused: bool = False  # Identify says seconds, a from with a time is badArgument
    token_lifetime: int | None = None  # seconds, when an expirationDate is announced
    token_note: str = ""
    gzip_declared: bool = False
    gzip_served: bool | None = None  # None: no answer large enough to tell
    encoding: str = ""
    encoding_faults: list[str] = field(default_factory=list)
    xml_faults: list[str] = field(default_factory=list)  # "subject: fault"


@dataclass
class ProbeReport:
    url: str
    requests: int = 0
    seconds: float = 0.0
    identify: Identity = field(default_factory=Identity)
    formats: list[Format] = field(default_factory=list)
    sets: Sets = field(default_factory=Sets)
    sample: Sample = field(default_factory=Sample)
    volume: int | None = None
    volume_note: str = ""
    detected: Detected = field(default_factory=Detected)
    results: list[Result] = field(default_factory=list)
    not_checked: str = ""  # why some rules were skipped: the request cap
    entry: dict[str, Any] = field(default_factory=dict)
    entry_yaml: str = ""


# ---- the run ---------------------------------------------------------------------------------


def probe(url: str, *, timeout: float = 30.0, max_requests: int = MAX_REQUESTS, name: str | None = None) -> ProbeReport:
    """Probe the base URL; NotOAI when it does not answer OAI-PMH, config.ConfigError when `name` is
    not a partner name."""
    started = time.monotonic()
    v = _Probing(url, max_pages=1, timeout=timeout, max_requests=max_requests)
    out = ProbeReport(url)
    try:
        identify = check_identify(v)
    except RequestCap as exc:
        raise NotOAI(f"{url}: not probed: {exc}") from None
    _must_be_oai(url, identify)
    capped = ""
    try:
        for check in FIRST:
            check(v)
        _probe_granularity(v)
    except RequestCap as exc:
        capped = str(exc)
    capped = _skip_later(v, capped) if capped else _run_later(v)
    check_identify_against_lists(v)  # sends nothing
    out.requests, out.seconds = v.sent, round(time.monotonic() - started, 2)
    out.identify = _identity(identify)
    out.formats = _formats(v.answers.get("ListMetadataFormats"))
    out.sets = _sets(v.answers.get("ListSets p1"))
    out.sample = _sample(v)
    out.volume, out.volume_note = _volume(v)
    out.detected = _detected(v, out.identify)
    out.results = results(v)
    out.not_checked = capped
    out.entry, out.entry_yaml = partner_entry(out, name)
    return out


def _must_be_oai(url: str, identify: Fetched) -> None:
    if identify.status is None:
        raise NotOAI(f"{url} did not answer: {identify.problem}")
    doc = _doc(identify)
    if doc is not None and doc.tag == f"{OAI}OAI-PMH":
        return
    why = not_oai_pmh(identify) or "no OAI-PMH answer"
    if identify.location:
        why += f" (a redirect to {identify.location}: probe that URL if it is the partner's)"
    raise NotOAI(f"{url} is not an OAI-PMH base URL: {why}")


def _run_later(v: _Probing) -> str:
    """The validator's later checks, each whole or skipped: what the cap left out, or ''."""
    left_out: list[str] = []
    for step in LATER:
        if v.max_requests - v.sent < step.cost:
            left_out.append(step.run.__name__.removeprefix("check_"))
            v.skip(step.rules, f"not checked within the probe's --max-requests={v.max_requests}")
            continue
        try:
            step.run(v)
        except RequestCap as exc:  # a retried 503 spent what the step needed
            v.skip(step.rules, f"not checked: {exc}")
            left_out.append(step.run.__name__.removeprefix("check_"))
    if not left_out:
        return ""
    return f"--max-requests={v.max_requests} left out: {', '.join(left_out)} (oaiserver validate checks them)"


def _skip_later(v: _Probing, capped: str) -> str:
    for step in LATER:
        v.skip(step.rules, f"not checked: {capped}")
    return f"{capped}: the probe stopped before its own requests were done"


def _probe_granularity(v: _Probing) -> None:
    """A ListIdentifiers with a time in `from`, when Identify declares seconds: badArgument means
    the partner only takes days. The time is the newest datestamp seen (a short answer)."""
    if v.granularity != SECONDS:
        return
    seen = [w for _, h in v.headers if (w := parse_any(child_text(h, "datestamp"))) is not None]
    when = max(seen) if seen else (v.earliest[1] if v.earliest else None)
    stamp = format_datestamp(calendar.timegm(when.timetuple())) if when else "2000-01-01T00:00:00Z"
    v.fetch(GRANULARITY_SUBJECT, [LI, DC, ("from", stamp)])


# ---- reading the answers -----------------------------------------------------------------------


def _doc(f: Fetched | None) -> Any:
    """The answer's document, or, when its bytes are Windows-1252 declared UTF-8, the document they
    make read as Windows-1252 (the facts are still worth reading; the fault is reported)."""
    if f is None:
        return None
    if f.doc is not None or f.body is None:
        return f.doc
    if _encoding(f)[1] != "looks like Windows-1252":
        return None
    try:
        return parse(f.body.decode("cp1252").encode("utf-8"))
    except (etree.XMLSyntaxError, ValueError):
        return None


def _part(f: Fetched | None, verb: str) -> Any:
    doc = _doc(f)
    return None if doc is None else doc.find(f"{OAI}{verb}")


def _identity(f: Fetched) -> Identity:
    part = _part(f, "Identify")
    if part is None:
        return Identity()

    def text(tag: str) -> str | None:
        el = part.find(f"{OAI}{tag}")
        return None if el is None else (el.text or "").strip()

    return Identity(
        name=text("repositoryName"),
        admin_emails=[(e.text or "").strip() for e in part.findall(f"{OAI}adminEmail")],
        granularity=text("granularity"),
        earliest_datestamp=text("earliestDatestamp"),
        deleted_record=text("deletedRecord"),
        compression=[(c.text or "").strip() for c in part.findall(f"{OAI}compression")],
        base_url=text("baseURL"),
    )


def _formats(f: Fetched | None) -> list[Format]:
    part = _part(f, "ListMetadataFormats")
    if part is None:
        return []
    return [
        Format(child_text(m, "metadataPrefix"), child_text(m, "schema"), child_text(m, "metadataNamespace"))
        for m in part.findall(f"{OAI}metadataFormat")
    ]


def _token(part: Any) -> Any:
    return None if part is None else part.find(f"{OAI}resumptionToken")


def _size(token: Any) -> int | None:
    size = None if token is None else token.get("completeListSize")
    return int(size) if size is not None and size.strip().isdigit() else None


def _sets(f: Fetched | None) -> Sets:
    doc = _doc(f)
    if doc is None:
        return Sets(note="ListSets gave no usable answer")
    codes = [e.get("code") for e in doc.findall(f"{OAI}error")]
    if "noSetHierarchy" in codes:
        return Sets(count=0, note="noSetHierarchy: no sets")
    part = doc.find(f"{OAI}ListSets")
    if part is None:
        return Sets(note=f"ListSets answered {', '.join(c or '?' for c in codes) or 'nothing usable'}")
    listed = [(child_text(s, "setSpec"), child_text(s, "setName")) for s in part.findall(f"{OAI}set")]
    token = _token(part)
    more = token is not None and (token.text or "").strip()
    count = _size(token) if more else len(listed)
    depth = max((spec.count(":") + 1 for spec, _ in listed), default=0)
    note = "" if count is not None else f"{len(listed)} on the first page; more follow, the total is not announced"
    return Sets(count, [f"{spec} ({name})" if name else spec for spec, name in listed[:SETS_SHOWN]], depth, note)


def _sample(v: _Probing) -> Sample:
    f = v.answers.get("ListRecords p1")
    if f is None:
        return Sample(problem="not asked")
    sample = Sample(
        seconds=round(v.seconds.get(f.subject, 0.0), 3),
        bytes=None if f.body is None else len(f.body),
        gzip=f.content_encoding == "gzip",
    )
    doc = _doc(f)
    part = None if doc is None else doc.find(f"{OAI}ListRecords")
    if part is None:
        codes = [] if doc is None else [e.get("code") or "" for e in doc.findall(f"{OAI}error")]
        sample.records = 0 if codes == ["noRecordsMatch"] else None
        sample.problem = "noRecordsMatch" if codes == ["noRecordsMatch"] else f.why()
        return sample
    records = part.findall(f"{OAI}record")
    sample.records = len(records)
    sample.deleted = sum(1 for r in records if r.find(f"{OAI}header[@status='deleted']") is not None)
    return sample


def _volume(v: _Probing) -> tuple[int | None, str]:
    for subject, verb in (("ListRecords p1", "ListRecords"), ("ListIdentifiers p1", "ListIdentifiers")):
        part = _part(v.answers.get(subject), verb)
        if part is None:
            continue
        token = _token(part)
        size = _size(token)
        if size is not None:
            return size, f"completeListSize of {verb}"
        if token is None or not (token.text or "").strip():
            return len(
                part.findall(f"{OAI}{'record' if verb == 'ListRecords' else 'header'}")
            ), f"{verb} fits on one page"
        return None, f"not announced ({verb} has more pages, no completeListSize)"
    return None, "no list could be read"


def _detected(v: _Probing, identity: Identity) -> Detected:
    d = Detected(granularity=identity.granularity if identity.granularity in (DAY, SECONDS) else None)
    _granularity(v, d)
    _token_lifetime(v, d)
    d.gzip_declared = "gzip" in identity.compression
    large = [f for f in v.answers.values() if f.status == 200 and f.body is not None and len(f.body) > 2048]
    if any(f.content_encoding == "gzip" for f in v.answers.values()):
        d.gzip_served = True
    elif large:
        d.gzip_served = False
    _encodings(v, d)
    return d


def _granularity(v: _Probing, d: Detected) -> None:
    if d.granularity is None:
        d.granularity_note = "Identify declares no usable granularity: harvest by days"
        d.granularity = DAY
        return
    if d.granularity == DAY:
        d.granularity_note = "days, as Identify declares"
        return
    f = v.answers.get(GRANULARITY_SUBJECT)
    if f is None:
        d.granularity_note = "seconds declared; a from with a time was not tried (the request cap, or Identify unread)"
    elif "badArgument" in f.codes:
        d.granularity, d.times_refused = DAY, True
        d.granularity_note = (
            f"Identify declares seconds, but a from with a time was answered badArgument: harvest by days "
            f"({f.describe_errors()})"
        )
    elif f.part("ListIdentifiers") is not None or f.codes == ["noRecordsMatch"]:
        d.granularity_note = "seconds, honoured (a from with a time was answered)"
    else:
        d.granularity_note = f"seconds declared; a from with a time got {f.why()}"


def _token_lifetime(v: _Probing, d: Detected) -> None:
    tokens = 0
    for subject, verb in (("ListRecords p1", "ListRecords"), ("ListIdentifiers p1", "ListIdentifiers")):
        f = v.answers.get(subject)
        token = _token(_part(f, verb))
        if token is None or not (token.text or "").strip():
            continue
        tokens += 1
        expires = token.get("expirationDate")
        doc = _doc(f)
        said = parse_any((doc.findtext(f"{OAI}responseDate") or "").strip()) if doc is not None else None
        until = parse_any(expires.strip()) if expires else None
        if until is not None and said is not None:
            d.token_lifetime = int((until - said).total_seconds())
            d.token_note = f"{_span(d.token_lifetime)} (expirationDate {expires.strip()} on {subject})"
            return
    d.token_note = "no expirationDate announced" if tokens else "no resumptionToken on the first pages"


def _span(seconds: int) -> str:
    if seconds < 0:
        return f"{seconds} s: already expired when issued"
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{seconds // size} {unit}" if seconds % size == 0 else f"{seconds / size:.1f} {unit}"
    return f"{seconds} s"


def _encoding(f: Fetched) -> tuple[str, str]:
    """(the encoding the answer declares, what its bytes are: 'valid UTF-8', 'looks like Windows-1252',
    'not UTF-8', or 'as declared' for a declared encoding other than UTF-8)."""
    body = f.body or b""
    m = _DECLARED.match(body)
    charset = _CHARSET.search(f.content_type or "")
    declared = m.group(1).decode() if m else charset.group(1) if charset else "UTF-8"
    if declared.lower() not in UTF8_NAMES:
        return declared, "as declared"
    try:
        body.decode("utf-8")
    except UnicodeDecodeError:
        try:
            body.decode("cp1252")
        except UnicodeDecodeError:
            return declared, "not UTF-8"
        return declared, "looks like Windows-1252"
    return declared, "valid UTF-8"


def _encodings(v: _Probing, d: Detected) -> None:
    seen: dict[tuple[str, str], list[str]] = {}
    for f in v.answers.values():
        if f.status == 200 and f.body:
            seen.setdefault(_encoding(f), []).append(f.subject)
            fault = _xml_fault(f)
            if fault:
                d.xml_faults.append(f"{f.subject}: {fault}")
    faulty = {k: s for k, s in seen.items() if k[1] in ("looks like Windows-1252", "not UTF-8")}
    for (declared, bytes_are), subjects in faulty.items():
        d.encoding_faults.append(f"declared {declared}, bytes {bytes_are}: {', '.join(subjects[:3])}")
    kinds = sorted({f"declared {decl}, {what}" for decl, what in seen})
    d.encoding = "; ".join(kinds) or "no answer read"


def _xml_fault(f: Fetched) -> str:
    """What is wrong with an answer's XML ('' if it parsed): DOCTYPE, characters XML forbids, an
    encoding the bytes do not keep to, or the parser's own message."""
    if f.doc is not None or f.body is None:
        return ""
    problem = f.problem or ""
    if "DOCTYPE" in problem:
        return "declares a DOCTYPE"
    declared, bytes_are = _encoding(f)
    if bytes_are in ("looks like Windows-1252", "not UTF-8"):
        return f"declared {declared}, bytes {bytes_are}"
    text = f.body.decode("utf-8", "replace")
    bad = {f"U+{ord(c):04X}" for c in _FORBIDDEN.findall(text)}
    for hexa, dec in _CHAR_REF.findall(text):
        code = int(hexa, 16) if hexa else int(dec)
        if (code < 0x20 and code not in (9, 10, 13)) or 0xD800 <= code <= 0xDFFF or code in (0xFFFE, 0xFFFF):
            bad.add(f"U+{code:04X}")
    if bad:
        return f"characters XML forbids ({', '.join(sorted(bad)[:3])})"
    return one_line(problem, 160) or "not well-formed"


# ---- the partners: entry ---------------------------------------------------------------------


def partner_name(url: str) -> str:
    """A name from the URL: the host (less www.), a port that is not the default, and the path's
    segments that are not the software's (a journal's path on a shared host keeps its partners apart)."""
    parts = urlsplit(url)
    host = (parts.hostname or "partner").lower().removeprefix("www.")
    words = [host]
    if parts.port and parts.port not in (80, 443):
        words.append(str(parts.port))
    words += [s for s in parts.path.split("/") if s and s.lower() not in GENERIC_SEGMENTS]
    name = re.sub(r"[^A-Za-z0-9\-_.]+", "-", "-".join(words)).strip("-.")
    return name[:100] or "partner"


def best_prefix(formats: list[Format]) -> str:
    """oai_dc when offered (every partner must); else a Dublin Core format (the harvester reads its
    dc: elements); else the first offered."""
    prefixes = [f.prefix for f in formats if f.prefix]
    if not prefixes or "oai_dc" in prefixes:
        return "oai_dc"
    return next((p for p in prefixes if "dc" in p.lower()), prefixes[0])


def quiet_time(url: str) -> str:
    """A daily cron line at a night hour (UTC) spread by the URL's hash, so partners do not all start at once."""
    n = int.from_bytes(hashlib.sha256(url.encode()).digest()[:4], "big")
    return f"{n % 60} {n // 60 % 5 + 1} * * *"


def partner_entry(report: ProbeReport, name: str | None) -> tuple[dict[str, Any], str]:
    """The entry as data and as YAML text with comments; config.ConfigError if it would not load."""
    entry: dict[str, Any] = {
        "name": name or partner_name(report.url),
        "base_url": report.url,
        "metadata_prefix": best_prefix(report.formats),
        "schedule": {"cron": quiet_time(report.url)},
    }
    comments = ["schedule: daily at a quiet hour (UTC)" + _first_run(report)]
    sample_fault = next((x for x in report.detected.xml_faults if x.startswith("ListRecords p1:")), "")
    if sample_fault and "DOCTYPE" not in sample_fault and "bytes" not in sample_fault:
        entry["quirks"] = {"lenient_xml": True}
        comments.append(f"lenient_xml: the sample page is not well-formed ({sample_fault.split(': ', 1)[1]})")
    limit = ClientSettings().max_page_bytes
    if report.sample.bytes and report.sample.bytes * 2 > limit:
        entry["max_page_mb"] = min(config_mod.MAX_PAGE_MB, math.ceil(report.sample.bytes * 2 / 2**20))
        comments.append(f"max_page_mb: the sample page is {report.sample.bytes:,} bytes")
    if report.detected.times_refused:
        comments.append("granularity: Identify declares seconds but a from with a time is refused: harvest by days")
    for fault in report.detected.encoding_faults:
        comments.append(f"encoding: {fault}")
    config_mod.from_mapping({"partners": [entry]})  # what is printed must load
    body = yaml.safe_dump([entry], sort_keys=False, default_flow_style=False, allow_unicode=True)
    lines = ["partners:", *(f"  {line}" for line in body.splitlines())]
    lines += [f"    # {c}" for c in comments]
    return entry, "\n".join(lines) + "\n"


def _first_run(report: ProbeReport) -> str:
    per_page, seconds, volume = report.sample.records, report.sample.seconds, report.volume
    if not (per_page and volume and seconds is not None):
        return ""
    pages = math.ceil(volume / per_page)
    return f"; the first run: {volume:,} records, ~{pages:,} pages, ~{_duration(pages * seconds)} at the sample's pace"


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{math.ceil(seconds)} s"
    if seconds < 7200:
        return f"{math.ceil(seconds / 60)} min"
    return f"{seconds / 3600:.1f} h"


# ---- printing --------------------------------------------------------------------------------


def as_json(report: ProbeReport) -> dict[str, Any]:
    doc = asdict(report)
    doc["results"] = [asdict(r) | {"requests": list(r.requests)} for r in report.results]
    doc["counts"] = counts(report.results)
    return doc


def lines(report: ProbeReport) -> list[str]:
    """The report for people."""
    i, s, d = report.identify, report.sample, report.detected
    out = [f"{report.url}: {report.requests} requests in {report.seconds:.1f} s", "", "Identify"]
    out += [
        f"  name:              {i.name or '-'}",
        f"  admin email:       {', '.join(i.admin_emails) or '-'}",
        f"  granularity:       {i.granularity or '-'}",
        f"  earliestDatestamp: {i.earliest_datestamp or '-'}",
        f"  deletedRecord:     {i.deleted_record or '-'}",
        f"Formats: {len(report.formats)}",
    ]
    width = max((len(f.prefix) for f in report.formats), default=0)
    out += [f"  {f.prefix.ljust(width)}  {f.namespace}  {f.schema}" for f in report.formats]
    sets = report.sets
    shape = {0: "none", 1: "flat"}.get(sets.depth, f"a hierarchy {sets.depth} levels deep")
    count = f"{sets.count:,}" if sets.count is not None else "?"
    out.append(f"Sets: {count} ({shape})" + (f"; {sets.note}" if sets.note else ""))
    if sets.first:
        out.append(f"  first: {', '.join(sets.first)}")
    if s.records is not None and s.problem is None:
        took = f"{s.seconds:.2f} s" if s.seconds is not None else "?"
        size = f"{s.bytes:,} bytes" if s.bytes is not None else "? bytes"
        out.append(
            f"Sample page: ListRecords oai_dc p1: {s.records} records ({s.deleted} deleted) in {took}, "
            f"{size}{' (gzip on the wire)' if s.gzip else ''}"
        )
    else:
        out.append(f"Sample page: ListRecords oai_dc p1: {s.problem}")
    volume = f"{report.volume:,} records" if report.volume is not None else "unknown"
    out.append(f"Volume: {volume} ({report.volume_note})")
    gzip = {True: "served when asked", False: "not served when asked", None: "no answer large enough to tell"}
    out += [
        "Detected",
        f"  granularity:    {d.granularity_note}",
        f"  token lifetime: {d.token_note}",
        f"  gzip:           {gzip[d.gzip_served]}; {'declared' if d.gzip_declared else 'not declared'} in Identify",
        f"  encoding:       {d.encoding}",
    ]
    out += [f"                  {fault}" for fault in d.encoding_faults]
    out.append(f"  XML faults:     {'; '.join(d.xml_faults[:5]) or 'none'}")
    n = counts(report.results)
    out.append(
        f"Validator rules: {n['PASS']} passed, {n[FAIL]} failed, {n[WARN]} warnings, {n['SKIP']} skipped"
        + (f" ({report.not_checked})" if report.not_checked else "")
    )
    width = max((len(r.name) for r in report.results), default=0)
    out += [f"  {r.status}  {r.name.ljust(width)}  {r.reason}" for r in report.results if r.status in (FAIL, WARN)]
    out += ["", "Paste under partners: in config.yaml:", "", report.entry_yaml.rstrip("\n")]
    return out
