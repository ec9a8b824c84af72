"""The protocol core, driven directly: `protocol.handle` over a RecordSource in memory.

One test (or one table row) per sentence of the OAI-PMH 2.0 specification, named after its
section: 3.1.1 and 4 (the arguments of each verb), 3.2 (the request echoed), 3.3 (UTCdatetime),
2.7.1 and 2.7.2 (selective harvesting by datestamp and by set), 2.5.1 (deleted records), 3.5
(flow control), 3.6 (errors). No HTTP, no XML, no database: the same rules are tested end to
end, through HTTP, in test_arguments, test_verbs and test_paging. The last tests prove that the
core imports no I/O, and that the memory source lists what the store lists.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from conftest import Clock, make_config, make_record
from memsource import MemorySource

from oaiserver import FORMATS, protocol
from oaiserver.config import Config
from oaiserver.records import Header, ListQuery, format_datestamp
from oaiserver.store import Store
from oaiserver.tokens import Tokens

T0 = 1_700_000_000  # 2023-11-14T22:13:20Z
DAY = 86400
SETS = [{"spec": "a", "name": "Set A"}, {"spec": "a:b", "name": "Set A:B"}, {"spec": "c", "name": "Set C"}]


def repository(
    source: protocol.RecordSource, *, page_size: int = 10, sets: list[Any] | None = None, **config: Any
) -> protocol.Repository:
    """A Repository over `source`; its configuration is read, never its storage URL opened."""
    cfg: Config = make_config(
        "sqlite:///never-opened.sqlite3", server__page_size=page_size, sets=SETS if sets is None else sets, **config
    )
    return protocol.Repository(
        config=cfg, store=source, tokens=Tokens("test secret", 3600), formats=FORMATS, sets=cfg.all_sets
    )


def ask(repo: protocol.Repository, **args: str) -> protocol.Answer:
    return protocol.handle(list(args.items()), repo)


def codes(answer: protocol.Answer) -> list[str]:
    return [e.code for e in answer.errors]


def listed(answer: protocol.Answer) -> list[str]:
    assert isinstance(answer.result, protocol.ListResult), codes(answer)
    return [row.identifier for row in answer.result.headers]


@pytest.fixture
def source() -> MemorySource:
    """Five records one day apart from T0 (0 in set a, 1 in a:b, 2 in c, 3 and 4 in none),
    and the clock a day after the last."""
    mem = MemorySource(now=T0 + 5 * DAY)
    for i, sets in enumerate([("a",), ("a:b",), ("c",), (), ()]):
        mem.add(f"oai:x.org:{i}", T0 + i * DAY, sets=sets)
    return mem


@pytest.fixture
def repo(source: MemorySource) -> protocol.Repository:
    return repository(source)


# ---- 3.1.1 and 4: the arguments each verb takes -----------------------------------------------

ID = "oai:x.org:0"
ARGUMENT_RULES: list[tuple[list[tuple[str, str]], list[str], str]] = [
    ([], ["badVerb"], "3.1.1: the verb argument is required"),
    ([("verb", "Identify"), ("verb", "Identify")], ["badVerb"], "3.1.1: the verb may not be repeated"),
    ([("verb", "identify")], ["badVerb"], "3.1.1: the verb is case-sensitive"),
    ([("verb", "Identify"), ("foo", "bar")], ["badArgument"], "4.2: Identify takes no arguments"),
    ([("verb", "Identify")], [], "4.2: Identify, no arguments"),
    ([("verb", "ListMetadataFormats")], [], "4.4: identifier is optional"),
    ([("verb", "ListMetadataFormats"), ("identifier", ID)], [], "4.4: identifier is optional"),
    ([("verb", "ListMetadataFormats"), ("metadataPrefix", "oai_dc")], ["badArgument"], "4.4: no metadataPrefix"),
    ([("verb", "ListSets")], [], "4.6: ListSets with no arguments"),
    ([("verb", "ListSets"), ("set", "a")], ["badArgument"], "4.6: set is not an argument of ListSets"),
    ([("verb", "GetRecord"), ("identifier", ID), ("metadataPrefix", "oai_dc")], [], "4.1: both required given"),
    ([("verb", "GetRecord"), ("identifier", ID)], ["badArgument"], "4.1: metadataPrefix is required"),
    ([("verb", "GetRecord"), ("metadataPrefix", "oai_dc")], ["badArgument"], "4.1: identifier is required"),
    ([("verb", "GetRecord")], ["badArgument"] * 2, "4.1: one error per missing argument"),
    (
        [("verb", "GetRecord"), ("identifier", ID), ("metadataPrefix", "oai_dc"), ("resumptionToken", "t")],
        ["badArgument"],
        "4.1: GetRecord takes no resumptionToken",
    ),
    ([("verb", "ListRecords")], ["badArgument"], "4.5: metadataPrefix is required"),
    ([("verb", "ListIdentifiers")], ["badArgument"], "4.3: metadataPrefix is required"),
    (
        [("verb", "ListRecords"), ("metadataPrefix", "oai_dc"), ("from", "2023-11-14"), ("until", "2023-11-20")],
        [],
        "4.5: from and until are optional",
    ),
    ([("verb", "ListRecords"), ("metadataPrefix", "oai_dc"), ("set", "a")], [], "4.5: set is optional"),
    (
        [("verb", "ListRecords"), ("resumptionToken", "t"), ("metadataPrefix", "oai_dc")],
        ["badArgument"],
        "4.5: resumptionToken is exclusive",
    ),
    (
        [("verb", "ListIdentifiers"), ("resumptionToken", "t"), ("from", "2023-11-14")],
        ["badArgument"],
        "4.3: resumptionToken is exclusive",
    ),
    ([("verb", "ListSets"), ("resumptionToken", "t")], ["badResumptionToken"], "4.6: a token alone is checked"),
    (
        [("verb", "ListRecords"), ("metadataPrefix", "oai_dc"), ("metadataPrefix", "oai_dc")],
        ["badArgument"],
        "3.1.1: an argument may not be repeated, even with the same value",
    ),
    (
        [("verb", "ListRecords"), ("metadataPrefix", "oai_dc"), ("identifier", ID)],
        ["badArgument"],
        "4.5: identifier is not an argument of ListRecords",
    ),
    (
        [("verb", "ListRecords"), ("metadataPrefix", "oai_dc"), ("unknown", "1"), ("other", "2")],
        ["badArgument"] * 2,
        "3.6: one badArgument per illegal argument",
    ),
    ([("metadataPrefix", "oai_dc"), ("verb", "ListRecords")], [], "3.1.1: arguments come in any order"),
]


@pytest.mark.parametrize(("pairs", "expected", "sentence"), ARGUMENT_RULES, ids=[s for *_, s in ARGUMENT_RULES])
def test_3_1_1_and_4_each_verb_takes_its_arguments(
    repo: protocol.Repository, pairs: list[tuple[str, str]], expected: list[str], sentence: str
) -> None:
    answer = protocol.handle(pairs, repo)
    assert codes(answer) == expected, sentence
    assert (answer.result is None) == bool(expected), sentence


def test_4_the_argument_table_is_the_specifications() -> None:
    """Section 4, verb by verb: which arguments are required, optional or exclusive."""
    r, o, x = protocol.REQUIRED, protocol.OPTIONAL, protocol.EXCLUSIVE
    lists = {"metadataPrefix": r, "from": o, "until": o, "set": o, "resumptionToken": x}
    assert {
        "GetRecord": {"identifier": r, "metadataPrefix": r},
        "Identify": {},
        "ListIdentifiers": lists,
        "ListMetadataFormats": {"identifier": o},
        "ListRecords": lists,
        "ListSets": {"resumptionToken": x},
    } == protocol.ARGUMENTS


def test_3_2_illegal_arguments_echo_no_request(repo: protocol.Repository) -> None:
    """After badVerb or badArgument, <request> carries the base URL only, no attributes."""
    for pairs in ([("verb", "Nope")], [("verb", "ListRecords"), ("foo", "1")]):
        answer = protocol.handle(pairs, repo)
        assert answer.errors and answer.request_args == {}


def test_3_2_a_legal_request_is_echoed(repo: protocol.Repository) -> None:
    answer = ask(repo, verb="ListIdentifiers", metadataPrefix="oai_dc", set="a")
    assert answer.request_args == {"verb": "ListIdentifiers", "metadataPrefix": "oai_dc", "set": "a"}


# ---- 3.3 UTCdatetime, and 2.7.1 selective harvesting by datestamp ------------------------------

LR = {"verb": "ListRecords", "metadataPrefix": "oai_dc"}
MALFORMED_DATES = [
    ("from", "2023-11-14T22:13:20", "a datetime without Z"),
    ("from", "2023-11-14T22:13:20.5Z", "fractions of a second"),
    ("from", "2023-11-14T22:13:20+02:00", "an offset: UTC only"),
    ("from", "2023-11-14T22:13Z", "minutes are not a granularity"),
    ("until", "2023-02-30", "an impossible date"),
    ("until", "20231114", "a compact date"),
    ("from", "yesterday", "words"),
    ("from", "", "an empty value"),
    ("from", "２０２３-11-14", "digits of another script"),
]


@pytest.mark.parametrize(("name", "value", "why"), MALFORMED_DATES, ids=[w for *_, w in MALFORMED_DATES])
def test_3_3_1_a_malformed_datestamp_is_a_bad_argument(
    repo: protocol.Repository, name: str, value: str, why: str
) -> None:
    assert codes(ask(repo, **LR, **{name: value})) == ["badArgument"], why


def test_3_3_1_from_and_until_must_have_the_same_granularity(repo: protocol.Repository) -> None:
    assert codes(ask(repo, **LR, **{"from": "2023-11-14", "until": "2023-11-20T00:00:00Z"})) == ["badArgument"]
    assert codes(ask(repo, **LR, **{"from": "2023-11-14T00:00:00Z", "until": "2023-11-20"})) == ["badArgument"]


def test_2_7_1_from_later_than_until_is_a_bad_argument(repo: protocol.Repository) -> None:
    assert codes(ask(repo, **LR, **{"from": "2023-11-16", "until": "2023-11-15"})) == ["badArgument"]
    later = {"from": format_datestamp(T0 + 1), "until": format_datestamp(T0)}
    assert codes(ask(repo, **LR, **later)) == ["badArgument"]


def test_3_3_1_both_granularities_are_accepted(repo: protocol.Repository) -> None:
    """The repository's granularity is seconds; day granularity must be supported too."""
    assert listed(ask(repo, **LR, **{"from": "2023-11-14"})) == [f"oai:x.org:{i}" for i in range(5)]
    assert listed(ask(repo, **LR, **{"from": format_datestamp(T0)})) == [f"oai:x.org:{i}" for i in range(5)]


WINDOWS = [
    ({"from": format_datestamp(T0)}, [0, 1, 2, 3, 4], "from is inclusive"),
    ({"from": format_datestamp(T0 + 1)}, [1, 2, 3, 4], "a second later leaves the first out"),
    ({"until": format_datestamp(T0 + DAY)}, [0, 1], "until is inclusive"),
    ({"until": format_datestamp(T0 + DAY - 1)}, [0], "a second earlier leaves the second out"),
    ({"from": "2023-11-15", "until": "2023-11-16"}, [1, 2], "a day-granular until covers its whole day"),
    ({"from": "2023-11-14", "until": "2023-11-14"}, [0], "from and until on one day"),
    ({"from": "2023-11-15", "until": "2023-11-15"}, [1], "the day's last second is in"),
]


@pytest.mark.parametrize(("window", "expected", "why"), WINDOWS, ids=[w for *_, w in WINDOWS])
@pytest.mark.parametrize("verb", ["ListIdentifiers", "ListRecords"])
def test_2_7_1_selective_harvesting_by_datestamp(
    repo: protocol.Repository, verb: str, window: dict[str, str], expected: list[int], why: str
) -> None:
    answer = ask(repo, verb=verb, metadataPrefix="oai_dc", **window)
    assert listed(answer) == [f"oai:x.org:{i}" for i in expected], why


def test_2_7_1_the_days_last_second_is_in_a_day_granular_until(source: MemorySource) -> None:
    """until=2023-11-15 takes in a record stamped 2023-11-15T23:59:59Z, not one a second later."""
    source.add("oai:x.org:last-second", 1_700_092_799)  # 2023-11-15T23:59:59Z
    source.add("oai:x.org:next-day", 1_700_092_800)  # 2023-11-16T00:00:00Z
    answer = ask(repository(source), **LR, **{"from": "2023-11-15", "until": "2023-11-15"})
    assert listed(answer) == ["oai:x.org:1", "oai:x.org:last-second"]


@pytest.mark.parametrize(
    "window", [{"until": "2023-11-13"}, {"from": "2030-01-01"}], ids=["before the earliest", "in the future"]
)
def test_2_7_1_a_window_with_no_records_is_no_records_match(repo: protocol.Repository, window: dict[str, str]) -> None:
    assert codes(ask(repo, **LR, **window)) == ["noRecordsMatch"]


def test_2_7_1_a_list_ends_before_the_moment_of_the_request(source: MemorySource) -> None:
    """A record stamped at the instant a list is frozen may still be committing: the list
    stops a second before, and the response date is that instant."""
    source.add("oai:x.org:now", source.now)
    answer = ask(repository(source), **LR)
    assert "oai:x.org:now" not in listed(answer)
    assert answer.response_date == source.now


# ---- 2.7.2 selective harvesting by set -------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "expected"),
    [("a", [0, 1]), ("a:b", [1]), ("c", [2])],
    ids=["a parent set includes its descendants", "a child set holds only its own", "a set alone"],
)
def test_2_7_2_selective_harvesting_by_set(repo: protocol.Repository, spec: str, expected: list[int]) -> None:
    assert listed(ask(repo, **LR, set=spec)) == [f"oai:x.org:{i}" for i in expected]


def test_2_7_2_a_set_no_record_is_in_is_no_records_match(repo: protocol.Repository) -> None:
    """An unknown set, well formed: the list is empty, which is noRecordsMatch (not badArgument)."""
    assert codes(ask(repo, **LR, set="zzz")) == ["noRecordsMatch"]


def test_2_7_2_an_illegal_set_spec_is_a_bad_argument(repo: protocol.Repository) -> None:
    assert codes(ask(repo, **LR, set="a::b")) == ["badArgument"]


def test_3_6_a_repository_without_sets_says_no_set_hierarchy(source: MemorySource) -> None:
    repo = repository(source, sets=[])
    assert codes(ask(repo, verb="ListSets")) == ["noSetHierarchy"]
    assert codes(ask(repo, **LR, set="a")) == ["noSetHierarchy"]


def test_3_6_errors_of_one_request_are_all_reported(source: MemorySource) -> None:
    """An unknown format and a set in a repository without sets: both errors, in one answer."""
    repo = repository(source, sets=[])
    assert codes(ask(repo, verb="ListRecords", metadataPrefix="marc21", set="a")) == [
        "cannotDisseminateFormat",
        "noSetHierarchy",
    ]


def test_4_6_list_sets_lists_the_configured_sets(repo: protocol.Repository) -> None:
    answer = ask(repo, verb="ListSets")
    assert isinstance(answer.result, protocol.SetsResult)
    assert [s.spec for s in answer.result.sets] == ["a", "a:b", "c"]


# ---- 4.1, 4.2, 4.4: single items and the repository; 2.5.1 deleted records ----------------------


@pytest.mark.parametrize(
    ("identifier", "prefix", "expected"),
    [
        ("oai:x.org:0", "oai_dc", []),
        ("oai:x.org:nope", "oai_dc", ["idDoesNotExist"]),
        ("oai:x.org:0", "marc21", ["cannotDisseminateFormat"]),
        ("oai:x.org:nope", "marc21", ["idDoesNotExist", "cannotDisseminateFormat"]),
        ("oai:x.org:bare", "oai_dc", ["cannotDisseminateFormat"]),
    ],
    ids=["a record", "an unknown item", "an unknown format", "both unknown", "an item without the format"],
)
def test_4_1_get_record(source: MemorySource, identifier: str, prefix: str, expected: list[str]) -> None:
    source.add("oai:x.org:bare", T0, formats={})
    answer = ask(repository(source), verb="GetRecord", identifier=identifier, metadataPrefix=prefix)
    assert codes(answer) == expected
    if not expected:
        assert isinstance(answer.result, protocol.RecordResult)
        assert answer.result.header.identifier == identifier


def test_4_2_identify_names_the_earliest_datestamp(repo: protocol.Repository, source: MemorySource) -> None:
    answer = ask(repo, verb="Identify")
    assert isinstance(answer.result, protocol.IdentifyResult)
    assert answer.result.earliest == T0
    assert answer.result.sample_identifier == "oai:x.org:0", "a real identifier that fits oai-identifier"
    source.items.clear()
    empty = ask(repo, verb="Identify")
    assert isinstance(empty.result, protocol.IdentifyResult) and empty.result.earliest == empty.response_date


def test_4_4_list_metadata_formats(source: MemorySource) -> None:
    source.add("oai:x.org:bare", T0, formats={})
    repo = repository(source)
    answer = ask(repo, verb="ListMetadataFormats", identifier="oai:x.org:0")
    assert isinstance(answer.result, protocol.FormatsResult)
    assert [f.prefix for f in answer.result.formats] == ["oai_dc"]
    assert codes(ask(repo, verb="ListMetadataFormats", identifier="oai:x.org:nope")) == ["idDoesNotExist"]
    assert codes(ask(repo, verb="ListMetadataFormats", identifier="oai:x.org:bare")) == ["noMetadataFormats"]


def test_2_5_1_deleted_records_are_listed_as_deleted(source: MemorySource) -> None:
    source.add("oai:x.org:2", T0 + 2 * DAY, sets=("c",), deleted=True)
    answer = protocol.handle([*LR.items(), ("set", "c")], repository(source), detailed=True)
    assert isinstance(answer.result, protocol.ListResult)
    headers = [h for h in answer.result.headers if isinstance(h, Header)]  # detailed: Header fields
    assert [(h.identifier, h.deleted) for h in headers] == [("oai:x.org:2", True)]


# ---- 3.5 flow control ---------------------------------------------------------------------------


def many(n: int, page_size: int = 4) -> tuple[MemorySource, protocol.Repository]:
    mem = MemorySource(now=T0 + n + 1)
    for i in range(n):
        mem.add(f"oai:x.org:{i:03d}", T0 + i, sets=("a",) if i % 2 else ())
    return mem, repository(mem, page_size=page_size)


def pages(repo: protocol.Repository, verb: str = "ListIdentifiers", **args: str) -> list[protocol.ListResult]:
    """Every page of a list, following its tokens."""
    answer = ask(repo, verb=verb, metadataPrefix="oai_dc", **args)
    results = []
    while True:
        assert isinstance(answer.result, protocol.ListResult), codes(answer)
        results.append(answer.result)
        resumption = answer.result.resumption
        if resumption is None or not resumption.token:
            return results
        answer = ask(repo, verb=verb, resumptionToken=resumption.token)


@pytest.mark.parametrize("n", [1, 3, 4, 5, 8, 11])
@pytest.mark.parametrize("verb", ["ListIdentifiers", "ListRecords"])
def test_3_5_a_list_is_paged_and_every_record_comes_once(n: int, verb: str) -> None:
    _, repo = many(n)
    got = [row.identifier for page in pages(repo, verb) for row in page.headers]
    assert got == [f"oai:x.org:{i:03d}" for i in range(n)]


def test_3_5_a_list_on_one_page_has_no_resumption_token() -> None:
    _, repo = many(4)
    assert [p.resumption for p in pages(repo)] == [None]


def test_3_5_cursor_and_complete_list_size() -> None:
    """The cursor counts the records before the page; completeListSize is the whole list;
    the last page carries an empty token, with its cursor and the size."""
    _, repo = many(10)
    shown = [(p.resumption.token != "", p.resumption.cursor, p.resumption.total) for p in pages(repo) if p.resumption]
    assert shown == [(True, 0, 10), (True, 4, 10), (False, 8, 10)]


def test_3_5_complete_list_size_counts_the_selection() -> None:
    _, repo = many(11)
    listed_pages = pages(repo, set="a", **{"from": format_datestamp(T0 + 2)})
    rows = [row.identifier for page in listed_pages for row in page.headers]
    assert rows == [f"oai:x.org:{i:03d}" for i in (3, 5, 7, 9)]
    assert listed_pages[0].resumption is None, "four records fit one page of four"
    assert {p.resumption.total for p in pages(repo, set="a") if p.resumption} == {5}


def test_3_5_a_token_keeps_the_selection_of_the_first_request() -> None:
    """A token is sent alone (it is exclusive), so it carries the set and window it lists."""
    _, repo = many(10)
    rows = [row.identifier for page in pages(repo, set="a") for row in page.headers]
    assert rows == [f"oai:x.org:{i:03d}" for i in (1, 3, 5, 7, 9)]


def test_3_5_1_the_same_token_gives_the_same_page() -> None:
    _, repo = many(10)
    token = pages(repo)[0].resumption
    assert token is not None
    again = [listed(ask(repo, verb="ListIdentifiers", resumptionToken=token.token)) for _ in range(2)]
    assert again[0] == again[1] == [f"oai:x.org:{i:03d}" for i in range(4, 8)]


def test_3_5_records_written_while_paging_neither_repeat_nor_vanish() -> None:
    """The list is frozen at its first request: later records wait for the next harvest."""
    mem, repo = many(6)
    first = ask(repo, verb="ListIdentifiers", metadataPrefix="oai_dc")
    mem.now += 10
    mem.add("oai:x.org:000-late")  # sorts first by identifier, last by datestamp
    assert first.result is not None and isinstance(first.result, protocol.ListResult)
    assert first.result.resumption is not None
    rest = listed(ask(repo, verb="ListIdentifiers", resumptionToken=first.result.resumption.token))
    assert rest == ["oai:x.org:004", "oai:x.org:005"]


def test_3_5_a_token_never_leads_to_an_empty_page() -> None:
    """Every record left in the list changed after the token was issued: the token's page holds
    the record that was next, as it is now, and ends the list (3.5.1 allows changed records)."""
    mem, repo = many(6)
    first = ask(repo, verb="ListIdentifiers", metadataPrefix="oai_dc")
    assert isinstance(first.result, protocol.ListResult) and first.result.resumption is not None
    mem.now += 10
    for i in (4, 5):
        mem.add(f"oai:x.org:{i:03d}")  # changed: stamped after the list's frozen end
    answer = ask(repo, verb="ListIdentifiers", resumptionToken=first.result.resumption.token)
    assert listed(answer) == ["oai:x.org:004"]
    assert isinstance(answer.result, protocol.ListResult) and answer.result.resumption is not None
    assert (answer.result.resumption.token, answer.result.resumption.cursor) == ("", 4)


@pytest.mark.parametrize("token", ["", "garbage", "a.b.c", "x" * 100])
def test_3_6_a_token_this_repository_did_not_issue_is_bad(repo: protocol.Repository, token: str) -> None:
    assert codes(ask(repo, verb="ListRecords", resumptionToken=token)) == ["badResumptionToken"]


def test_3_6_a_token_of_another_verb_is_bad() -> None:
    _, repo = many(10)
    token = pages(repo, "ListIdentifiers")[0].resumption
    assert token is not None
    assert codes(ask(repo, verb="ListRecords", resumptionToken=token.token)) == ["badResumptionToken"]


def test_3_6_a_token_of_another_secret_is_bad() -> None:
    mem, repo = many(10)
    token = pages(repo)[0].resumption
    assert token is not None
    other = repository(mem, page_size=4)
    other.tokens = Tokens("another secret", 3600)
    assert codes(ask(other, verb="ListIdentifiers", resumptionToken=token.token)) == ["badResumptionToken"]


def test_4_6_list_sets_pages_too(source: MemorySource) -> None:
    sets = [{"spec": f"s{i:02d}", "name": f"Set {i}"} for i in range(12)]
    repo = repository(source, sets=sets, server__sets_page_size=5)
    answer = ask(repo, verb="ListSets")
    seen: list[str] = []
    cursors = []
    while True:
        assert isinstance(answer.result, protocol.SetsResult), codes(answer)
        seen += [s.spec for s in answer.result.sets]
        if answer.result.resumption is None:
            break
        cursors.append((answer.result.resumption.cursor, answer.result.resumption.total))
        if not answer.result.resumption.token:
            break
        answer = ask(repo, verb="ListSets", resumptionToken=answer.result.resumption.token)
    assert seen == [s["spec"] for s in sets]
    assert cursors == [(0, 12), (5, 12), (10, 12)]


# ---- the core does no I/O, and the memory source lists as the store does ----------------------

PROBE = """
import json, sys, types
package = types.ModuleType("oaiserver")  # the package's __init__ builds the Flask app: not the core's
package.__path__ = [sys.argv[1]]
sys.modules["oaiserver"] = package
import oaiserver.protocol
print(json.dumps(sorted(sys.modules)))
"""


def test_the_protocol_core_imports_no_web_framework_database_or_store() -> None:
    """`import oaiserver.protocol` loads neither Flask, SQLAlchemy nor the store: the rules can
    be read, tested and reused without them."""
    package = Path(protocol.__file__).parent
    done = subprocess.run(
        [sys.executable, "-c", PROBE, str(package)], capture_output=True, text=True, timeout=60, check=True
    )
    loaded = set(json.loads(done.stdout))
    assert "oaiserver.protocol" in loaded
    heavy = sorted(m for m in loaded if m.split(".")[0] in {"flask", "werkzeug", "sqlalchemy"})
    assert heavy == [], heavy
    assert "oaiserver.store" not in loaded


QUERIES = [
    {},
    {"set": "a"},
    {"set": "a:b"},
    {"set": "c"},
    {"set": "zzz"},
    {"from": format_datestamp(T0 + 3)},
    {"until": format_datestamp(T0 + 5)},
    {"from": format_datestamp(T0 + 2), "until": format_datestamp(T0 + 6), "set": "a"},
]


def harvest(repo: protocol.Repository, query: dict[str, str]) -> tuple[list[str], list[list[str]]]:
    """The error codes of a list request, else its pages of identifiers."""
    errors = codes(ask(repo, **LR, **query))
    if errors:
        return errors, []
    return [], [[row.identifier for row in page.headers] for page in pages(repo, "ListRecords", **query)]


@pytest.mark.parametrize("query", QUERIES, ids=[json.dumps(q) for q in QUERIES])
def test_the_memory_source_lists_as_the_store_does(tmp_path: Path, query: dict[str, str]) -> None:
    """The same records, the same requests: the store and MemorySource give the same pages."""
    clock = Clock(T0)
    store = Store(f"sqlite:///{tmp_path / 'store.sqlite3'}", clock=clock)
    mem = MemorySource()
    try:
        for i, sets in enumerate([("a",), ("a:b",), ("a:b:c",), ("c",), (), ("a", "c"), ("a:b",), ()]):
            store.write([make_record(f"{i}", sets=sets)])
            clock.tick()
        store.delete(["oai:test.example.org:5"])
        bare = make_record("no-format")
        bare.metadata = {}
        store.write([bare])
        clock.tick()
        for h in store.page_headers(ListQuery("oai_dc"), None, 100, with_metadata=False):
            assert not isinstance(h, tuple)
            formats = {p: "<oai_dc:dc/>" for p in store.formats_of(h.identifier) or []}
            mem.add(h.identifier, h.datestamp, sets=h.sets, deleted=h.deleted, formats=formats)
        mem.add("oai:test.example.org:no-format", T0 + 9, formats={})
        mem.now = clock.now
        answers = [harvest(repository(src, page_size=2), query) for src in (store, mem)]
        assert answers[0] == answers[1]
        assert answers[0] != ([], []), "the query lists something or says why not"
    finally:
        store.close()


class Holding(MemorySource):
    """A source holding the harvested format `marcxml` while `holds` says so, counting the asks."""

    def __init__(self) -> None:
        super().__init__()
        self.holds, self.asked = True, 0

    def holds_harvested_format(self, prefix: str) -> bool:
        self.asked += 1
        return self.holds and prefix == "marcxml"


def test_a_harvested_format_found_held_is_trusted_for_a_moment_and_a_no_never(monkeypatch: pytest.MonkeyPatch) -> None:
    now = [1000.0]
    monkeypatch.setattr(protocol.time, "monotonic", lambda: now[0])
    source = Holding()
    repo = repository(source)
    assert [repo.serves("marcxml") for _ in range(3)] == [True, True, True]
    assert source.asked == 1  # a list's pages do not each ask the store
    assert not repo.serves("mods") and not repo.serves("mods") and source.asked == 3  # a no is asked again
    source.holds = False
    now[0] += protocol.HELD_FOR + 0.1
    assert not repo.serves("marcxml") and source.asked == 4
    assert repo.serves("oai_dc") and source.asked == 4  # the registry's formats never ask
