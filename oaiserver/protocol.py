"""The rules of OAI-PMH 2.0 for a data provider, as pure functions.

Nothing here does I/O or touches Flask: `parse_pairs` turns raw query bytes into argument
pairs, `check` holds them to the argument table, and `handle` answers a checked request
from a `Repository` (the configuration, a `RecordSource`, the token signer). Results are
plain objects; `render` turns them into XML. The store is reached only through the
`RecordSource` protocol, never imported (tests/test_protocol.py holds this module to that).
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol
from urllib.parse import unquote_to_bytes

from oaiserver import errors as e
from oaiserver.config import SPEC_RE, Config, SetRule
from oaiserver.formats import MetadataFormat
from oaiserver.records import Header, ListQuery, Rendered, has_forbidden_chars, is_identifier, parse_datestamp
from oaiserver.tokens import ListState, Tokens

REQUIRED, OPTIONAL, EXCLUSIVE = "required", "optional", "exclusive"

ARGUMENTS: dict[str, dict[str, str]] = {
    "Identify": {},
    "ListMetadataFormats": {"identifier": OPTIONAL},
    "ListSets": {"resumptionToken": EXCLUSIVE},
    "GetRecord": {"identifier": REQUIRED, "metadataPrefix": REQUIRED},
    "ListIdentifiers": {
        "metadataPrefix": REQUIRED,
        "from": OPTIONAL,
        "until": OPTIONAL,
        "set": OPTIONAL,
        "resumptionToken": EXCLUSIVE,
    },
    "ListRecords": {
        "metadataPrefix": REQUIRED,
        "from": OPTIONAL,
        "until": OPTIONAL,
        "set": OPTIONAL,
        "resumptionToken": EXCLUSIVE,
    },
}

# Syntax of argument values, as the schema types of <request>'s attributes demand.
PREFIX_RE = re.compile(r"[A-Za-z0-9\-_.!~*'()]+")
MAX_VALUE = 4096

GRANULARITY = "YYYY-MM-DDThh:mm:ssZ"
HELD_FOR = 5.0  # seconds a harvested format found held is served without asking the store again


@dataclass(frozen=True)
class Request:
    """A request whose arguments passed the table and the syntax checks."""

    verb: str
    args: dict[str, str]


# ---- results: what a verb answers, before it is XML ------------------------------------------


@dataclass(frozen=True)
class Resumption:
    token: str  # "" on the last page of a list
    cursor: int
    total: int
    expires: int | None


@dataclass(frozen=True)
class IdentifyResult:
    name: str
    base_url: str
    earliest: int
    admin_emails: tuple[str, ...]
    repository_identifier: str
    sample_identifier: str
    description: str


@dataclass(frozen=True)
class FormatsResult:
    formats: tuple[MetadataFormat, ...]


@dataclass(frozen=True)
class SetsResult:
    sets: tuple[SetRule, ...]
    resumption: Resumption | None


@dataclass(frozen=True)
class ListResult:
    headers: Sequence[Header] | Sequence[Rendered]  # Rendered unless the answer is `detailed`
    with_metadata: bool
    resumption: Resumption | None


@dataclass(frozen=True)
class RecordResult:
    header: Header


Result = IdentifyResult | FormatsResult | SetsResult | ListResult | RecordResult


@dataclass
class Answer:
    """A response to render: the result or the errors, and what `<request>` echoes."""

    response_date: int
    request_args: dict[str, str] = field(default_factory=dict)
    result: Result | None = None
    errors: list[e.OAIError] = field(default_factory=list)
    # For people's views: list rows as Header fields rather than the stored XML elements.
    detailed: bool = False


class RecordSource(Protocol):
    """What the protocol needs of the store, and all it knows of it: `store.Store` fits this
    shape without naming it, and a test can answer from memory (tests/memsource.py)."""

    def freeze(self) -> int: ...
    def count(self, query: ListQuery) -> int: ...
    def page_rendered(
        self, query: ListQuery, after: tuple[int, str] | None, limit: int, *, with_metadata: bool
    ) -> list[Rendered]: ...
    def page_headers(
        self, query: ListQuery, after: tuple[int, str] | None, limit: int, *, with_metadata: bool
    ) -> list[Header]: ...
    def row_rendered(self, query: ListQuery, identifier: str, *, with_metadata: bool) -> list[Rendered]: ...
    def row_headers(self, query: ListQuery, identifier: str, *, with_metadata: bool) -> list[Header]: ...
    def header(self, identifier: str, prefix: str) -> Header | None: ...
    def formats_of(self, identifier: str) -> list[str] | None: ...
    def earliest_datestamp(self) -> int | None: ...
    def harvested_sets(self) -> list[tuple[str, str, str | None]]: ...
    def harvested_formats(self) -> list[MetadataFormat]: ...
    def holds_harvested_format(self, prefix: str) -> bool: ...


@dataclass
class Repository:
    """Everything a verb may consult."""

    config: Config
    store: RecordSource
    tokens: Tokens
    formats: dict[str, MetadataFormat]
    sets: tuple[SetRule, ...] = ()
    # Harvested prefixes found held, and until when (time.monotonic) that answer is trusted.
    held: dict[str, float] = field(default_factory=dict, repr=False, compare=False)

    def listed_sets(self) -> tuple[SetRule, ...]:
        """The sets ListSets lists: the configured ones (`sets`, with one per republished
        partner), then the partners' own sets our records are in, as the partner named them
        (`partners:<name>:<its setSpec>`: config.partner_subset), of partners republished now.
        Read from the store at each call: only ListSets and a list or view with a set ask."""
        shown = {p.name for p in self.config.partners if p.republish}
        configured = {s.spec for s in self.sets}
        harvested = tuple(
            SetRule(spec, name or spec.split(":", 2)[2])
            for partner, spec, name in self.store.harvested_sets()
            if partner in shown and spec not in configured
        )
        return self.sets + harvested

    def has_set(self, spec: str) -> bool:
        """Whether ListSets lists `spec`; the store is asked only for one not configured."""
        return any(s.spec == spec for s in self.sets) or any(s.spec == spec for s in self.listed_sets())

    def all_formats(self) -> dict[str, MetadataFormat]:
        """The formats served: the registry's (`formats`), then those partners declared that
        records are held in (harvested natively), read from the store at each call."""
        harvested = {f.prefix: f for f in self.store.harvested_formats() if f.prefix not in self.formats}
        return {**self.formats, **harvested}

    def serves(self, prefix: str) -> bool:
        """Whether `prefix` is a format served; the store is asked only for one not in the
        registry, about that prefix alone, and a yes is trusted for HELD_FOR seconds (each page
        of a list in a harvested format asks; a format stops being served only when no record
        holds it any more, and a page of such a list then finds no record). A no is never kept:
        a format harvested a moment ago is served at once."""
        if prefix in self.formats:
            return True
        now = time.monotonic()
        if self.held.get(prefix, 0.0) > now:
            return True
        if self.store.holds_harvested_format(prefix):
            self.held[prefix] = now + HELD_FOR
            return True
        return False


# ---- parsing and checking ---------------------------------------------------------------------


def parse_pairs(raw: bytes) -> list[tuple[str, str]]:
    """`application/x-www-form-urlencoded` bytes to (name, value) pairs, repeats kept.

    Bytes that are not UTF-8 decode to lone surrogates, which `check` rejects as characters
    XML cannot carry, so nothing undecodable is ever echoed.
    """
    pairs: list[tuple[str, str]] = []
    for part in raw.split(b"&"):
        if not part:
            continue
        name, _, value = part.partition(b"=")
        pairs.append(
            (
                unquote_to_bytes(name.replace(b"+", b" ")).decode("utf-8", "surrogateescape"),
                unquote_to_bytes(value.replace(b"+", b" ")).decode("utf-8", "surrogateescape"),
            )
        )
    return pairs


def _illegal(value: str) -> bool:
    return has_forbidden_chars(value) or len(value) > MAX_VALUE


def _problem(value: str) -> str:
    """Why a value cannot be taken (its length is checked first: a long value may be fine else)."""
    if len(value) > MAX_VALUE:
        return f"is too long (more than {MAX_VALUE} characters)"
    return "contains characters that are not allowed"


def check(pairs: Sequence[tuple[str, str]]) -> Request:
    """Hold the arguments to the table and the syntax rules; raise every problem found."""
    verb = _verb(pairs)
    args = _arguments(pairs, verb)
    if "resumptionToken" in args:
        others = sorted(k for k in args if k != "resumptionToken")
        if others:
            raise e.OAIErrors([e.BadArgument(f"resumptionToken is exclusive; remove {', '.join(others)}.")])
        return Request(verb, args)
    problems: list[e.OAIError] = [
        e.BadArgument(f"The required argument {name!r} is missing.")
        for name, rule in ARGUMENTS[verb].items()
        if rule == REQUIRED and name not in args
    ]
    problems.extend(_syntax_problems(args))
    if problems:
        raise e.OAIErrors(problems)
    return Request(verb, args)


def _verb(pairs: Sequence[tuple[str, str]]) -> str:
    """The one verb of a request, or badVerb."""
    verbs = [v for k, v in pairs if k == "verb"]
    if not verbs:
        raise e.OAIErrors([e.BadVerb("The verb argument is missing.")])
    if len(verbs) > 1:
        raise e.OAIErrors([e.BadVerb("The verb argument is repeated.")])
    if verbs[0] not in ARGUMENTS:
        shown = "an illegal value" if _illegal(verbs[0]) else repr(verbs[0])
        raise e.OAIErrors([e.BadVerb(f"The verb {shown} is not an OAI-PMH verb.")])
    return verbs[0]


def _arguments(pairs: Sequence[tuple[str, str]], verb: str) -> dict[str, str]:
    """The arguments other than the verb, by name, or a badArgument for each name or value that
    cannot be taken. An illegal value is kept, so that a repeat of its name is reported too."""
    problems: list[e.OAIError] = []
    args: dict[str, str] = {}
    for name, value in pairs:
        if name == "verb":
            continue
        problem = _name_problem(name, verb, args)
        if problem is None:
            args[name] = value
            if _illegal(value):
                problem = e.BadArgument(f"The value of {name!r} {_problem(value)}.")
        if problem is not None:
            problems.append(problem)
    if problems:
        raise e.OAIErrors(problems)
    return args


def _name_problem(name: str, verb: str, taken: dict[str, str]) -> e.OAIError | None:
    if _illegal(name):
        return e.BadArgument(f"An argument name {_problem(name)}.")
    if name not in ARGUMENTS[verb]:
        return e.BadArgument(f"{name!r} is not an argument of {verb}.")
    if name in taken:
        return e.BadArgument(f"The argument {name!r} is repeated.")
    return None


def _syntax_problems(args: dict[str, str]) -> list[e.OAIError]:
    problems: list[e.OAIError] = []
    if "metadataPrefix" in args and not PREFIX_RE.fullmatch(args["metadataPrefix"]):
        problems.append(e.BadArgument("The metadataPrefix has an illegal syntax."))
    if "set" in args and not SPEC_RE.fullmatch(args["set"]):
        problems.append(e.BadArgument("The set argument is not a legal setSpec."))
    if "identifier" in args and not is_identifier(args["identifier"]):
        problems.append(e.BadArgument("The identifier is not a legal URI."))
    bounds: dict[str, tuple[int, str]] = {}
    for name in ("from", "until"):
        if name in args:
            try:
                bounds[name] = parse_datestamp(args[name], end_of_day=name == "until")
            except ValueError:
                problems.append(e.BadArgument(f"The {name!r} argument must be YYYY-MM-DD or YYYY-MM-DDThh:mm:ssZ."))
    if "from" in bounds and "until" in bounds:
        if bounds["from"][1] != bounds["until"][1]:
            problems.append(e.BadArgument("The 'from' and 'until' arguments have different granularities."))
        elif bounds["from"][0] > bounds["until"][0]:
            problems.append(e.BadArgument("The 'from' argument is later than the 'until' argument."))
    return problems


def too_long(limit: int, now: int | None = None) -> Answer:
    """The answer to a request whose arguments, together, pass `limit` bytes: a long GET gets
    badArgument for its long value, and a POST that long gets the same kind of answer."""
    problem = e.BadArgument(f"The request is too long (more than {limit} bytes of arguments).")
    return Answer(response_date=int(time.time()) if now is None else now, errors=[problem])


# ---- the verbs ----------------------------------------------------------------------------------


def handle(
    pairs: Sequence[tuple[str, str]], repo: Repository, now: int | None = None, *, detailed: bool = False
) -> Answer:
    """Answer one request. Never raises an OAI error: errors are part of the answer.

    `detailed`: list rows as Header fields (for the HTML view), not as stored XML."""
    answer = Answer(response_date=int(time.time()) if now is None else now, detailed=detailed)
    try:
        request = check(pairs)
    except e.OAIErrors as exc:
        answer.errors = exc.errors
        return answer
    answer.request_args = {"verb": request.verb, **request.args}
    try:
        answer.result = VERBS[request.verb](request.args, repo, answer)
    except e.OAIErrors as exc:
        answer.errors = exc.errors
    except e.OAIError as exc:
        answer.errors = [exc]
    return answer


def identify(args: dict[str, str], repo: Repository, answer: Answer) -> IdentifyResult:
    earliest = repo.store.earliest_datestamp()
    c = repo.config
    return IdentifyResult(
        name=c.name,
        base_url=c.base_url,
        earliest=answer.response_date if earliest is None else earliest,
        admin_emails=c.admin_emails,
        repository_identifier=c.repository_identifier,
        sample_identifier=_sample_identifier(repo),
        description=c.description,
    )


SAMPLE_RE = re.compile(r"oai:[a-zA-Z][a-zA-Z0-9\-]*(\.[a-zA-Z][a-zA-Z0-9\-]*)+:[a-zA-Z0-9\-_.!~*'();/?:@&=+$,%]+")


def _sample_identifier(repo: Repository) -> str:
    """A real identifier when one fits the oai-identifier scheme, else a made-up one."""
    first = repo.store.page_headers(ListQuery("oai_dc"), None, 1, with_metadata=False)
    if first and SAMPLE_RE.fullmatch(first[0].identifier):
        return first[0].identifier
    return f"oai:{repo.config.repository_identifier}:example"


def list_metadata_formats(args: dict[str, str], repo: Repository, answer: Answer) -> FormatsResult:
    if "identifier" not in args:
        return FormatsResult(tuple(repo.all_formats().values()))
    prefixes = repo.store.formats_of(args["identifier"])
    if prefixes is None:
        raise e.IdDoesNotExist()
    served = repo.all_formats() if any(p not in repo.formats for p in prefixes) else repo.formats
    known = tuple(f for p, f in served.items() if p in prefixes)
    if not known:
        raise e.NoMetadataFormats()
    return FormatsResult(known)


def list_sets(args: dict[str, str], repo: Repository, answer: Answer) -> SetsResult:
    sets = repo.listed_sets()
    if not sets:
        raise e.NoSetHierarchy()
    size = repo.config.sets_page_size
    start = 0
    if "resumptionToken" in args:
        state = repo.tokens.read(args["resumptionToken"], "ListSets")
        start = state.cursor
        if start >= len(sets) or state.total != len(sets):
            raise e.BadResumptionToken("The list of sets has changed; start again.")
    page = sets[start : start + size]
    resumption = None
    if start + size < len(sets):
        token, expires = repo.tokens.issue(
            ListState(
                verb="ListSets",
                prefix="",
                start=None,
                end=None,
                set_spec=None,
                last=None,
                cursor=start + size,
                total=len(sets),
            )
        )
        resumption = Resumption(token, start, len(sets), expires)
    elif start > 0:
        resumption = Resumption("", start, len(sets), None)
    return SetsResult(page, resumption)


def get_record(args: dict[str, str], repo: Repository, answer: Answer) -> RecordResult:
    identifier, prefix = args["identifier"], args["metadataPrefix"]
    header = repo.store.header(identifier, prefix) if repo.serves(prefix) else None
    if header is None:
        problems: list[e.OAIError] = []
        if repo.store.formats_of(identifier) is None:
            problems.append(e.IdDoesNotExist())
        if not problems or not repo.serves(prefix):
            problems.append(e.CannotDisseminateFormat())
        raise e.OAIErrors(problems)
    return RecordResult(header)


VIEW_PAGE_SIZE = 50  # records a page for people's views, at most: a page a browser shows at once


def _list(args: dict[str, str], repo: Repository, answer: Answer, verb: str) -> ListResult:
    # Tokens hold a key and a cursor, not a page number: a view and /oai may page one list
    # at different sizes.
    size = min(repo.config.page_size, VIEW_PAGE_SIZE) if answer.detailed else repo.config.page_size
    if "resumptionToken" in args:
        state = _resumed(args["resumptionToken"], repo, verb)
    else:
        state = _started(args, repo, answer, verb)
    query = ListQuery(state.prefix, state.start, state.end, state.set_spec)
    with_metadata = verb == "ListRecords"
    rows = _page(repo, query, state.last, size + 1, with_metadata=with_metadata, detailed=answer.detailed)
    if not rows and state.last is None:  # every record changed between the count and the page
        raise e.NoRecordsMatch()
    if not rows:
        return _last_of_changed(
            repo, query, state.next, state.cursor, state.total, with_metadata, rendered=not answer.detailed
        )
    resumption = None
    if len(rows) > size:
        last = rows[size - 1]
        following = state._replace(
            last=(last.datestamp, last.identifier), cursor=state.cursor + size, next=rows[size].identifier
        )
        token, expires = repo.tokens.issue(following)
        rows = rows[:size]
        resumption = Resumption(token, state.cursor, max(state.total, state.cursor + size + 1), expires)
    elif state.last is not None:
        resumption = Resumption("", state.cursor, max(state.total, state.cursor + len(rows)), None)
    return ListResult(rows, with_metadata, resumption)


def _resumed(token: str, repo: Repository, verb: str) -> ListState:
    """Where the list a token continues stands, if this repository still has its format and set."""
    state = repo.tokens.read(token, verb)
    if not repo.serves(state.prefix) or (state.set_spec is not None and not repo.has_set(state.set_spec)):
        raise e.BadResumptionToken("The resumptionToken names a format or a set this repository does not have.")
    return state


def _started(args: dict[str, str], repo: Repository, answer: Answer, verb: str) -> ListState:
    """A new list, before its first page: its arguments checked against the repository, its
    `until` frozen and its records counted."""
    prefix = args["metadataPrefix"]
    problems: list[e.OAIError] = []
    if not repo.serves(prefix):
        problems.append(e.CannotDisseminateFormat())
    if "set" in args and not (repo.sets or repo.listed_sets()):  # the store read only when no set is configured
        problems.append(e.NoSetHierarchy())
    if problems:
        raise e.OAIErrors(problems)
    start = parse_datestamp(args["from"])[0] if "from" in args else None
    end = parse_datestamp(args["until"], end_of_day=True)[0] if "until" in args else None
    # Freeze the list: every write stamped before `frozen` has committed, and no later
    # write can be stamped at or before `frozen - 1`.
    frozen = repo.store.freeze()
    answer.response_date = frozen
    end = frozen - 1 if end is None else min(end, frozen - 1)
    query = ListQuery(prefix, start, end, args.get("set"))
    total = repo.store.count(query) if start is None or start <= end else 0
    if total == 0:
        raise e.NoRecordsMatch()
    return ListState(
        verb=verb,
        prefix=prefix,
        start=start,
        end=end,
        set_spec=query.set_spec,
        last=None,
        cursor=0,
        total=total,
    )


def _page(
    repo: Repository,
    query: ListQuery,
    after: tuple[int, str] | None,
    limit: int,
    *,
    with_metadata: bool,
    detailed: bool,
) -> list[Header] | list[Rendered]:
    """Up to `limit` rows after the key `after`: Header fields for people's views, stored XML else."""
    if detailed:
        return repo.store.page_headers(query, after, limit, with_metadata=with_metadata)
    return repo.store.page_rendered(query, after, limit, with_metadata=with_metadata)


def _last_of_changed(
    repo: Repository,
    query: ListQuery,
    following: str | None,
    cursor: int,
    total: int,
    with_metadata: bool,
    *,
    rendered: bool,
) -> ListResult:
    """A token's page when every record that remained in its list has changed since the token
    was issued (a change stamps a record after the list's frozen `until`, so it leaves the list).

    A token never leads to an empty page (the schema wants one record at least, and
    noRecordsMatch speaks of the arguments, not of a token): the record that was next when the
    token was issued is served as it is now, its new datestamp, or a tombstone, included, which
    section 3.5.1 of the specification allows a resumed list, and the list ends there. The
    others come with the next incremental harvest. If that record left the set (or the format),
    nothing of the list remains: the token is refused, and the harvester starts the list again.
    """
    rows: list[Header] | list[Rendered] = []
    if following and rendered:
        rows = repo.store.row_rendered(query, following, with_metadata=with_metadata)
    elif following:
        rows = repo.store.row_headers(query, following, with_metadata=with_metadata)
    if not rows:
        raise e.BadResumptionToken(
            "Every record that remained in this list has changed since the previous page; start the list again."
        )
    return ListResult(rows, with_metadata, Resumption("", cursor, max(total, cursor + 1), None))


def list_identifiers(args: dict[str, str], repo: Repository, answer: Answer) -> ListResult:
    return _list(args, repo, answer, "ListIdentifiers")


def list_records(args: dict[str, str], repo: Repository, answer: Answer) -> ListResult:
    return _list(args, repo, answer, "ListRecords")


VERBS: dict[str, Callable[[dict[str, str], Repository, Answer], Result]] = {
    "Identify": identify,
    "ListMetadataFormats": list_metadata_formats,
    "ListSets": list_sets,
    "GetRecord": get_record,
    "ListIdentifiers": list_identifiers,
    "ListRecords": list_records,
}
