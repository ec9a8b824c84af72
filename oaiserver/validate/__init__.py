"""`oaiserver validate URL`: hold any OAI-PMH base URL to the OAI-PMH 2.0 specification.

Works on our repository or a partner's: it only speaks HTTP to the URL given. Every response
is parsed safely (no DTD, no entities, no network) and validated against the official
schemas shipped in `oaiserver/schemas/` (loaded offline with a driver schema, see
`load_schema`), then held to the rules the schemas cannot express: Identify, datestamps and
granularity, a whole ListIdentifiers resumption chain, ListRecords, GetRecord, and the errors
that bad arguments must produce (`ERROR_CASES`).

The result is one line per rule (`RULES`, then `ERROR_CASES`): PASS, FAIL, WARN or SKIP with a
short reason. Any FAIL makes the exit code 1.

The package, one idea a module (imports go down this list, never up):

    command.py     the command: URL checked, validator run, report printed
    core.py        the validator's state, its HTTP (`fetch`) and list walking (`walk`), the run
    steps.py       the order the checks run in
    identify.py    Identify and what it promises           lists.py    formats, sets, the paging rules
    records.py     ListRecords, GetRecord, from/until      errorcases.py  the errors bad requests must produce
    responses.py   the rules checked on every response     report.py   notes to results to lines
    rules.py       the rules in report order, statuses, ERROR_CASES
    parsing.py     schemas, safe XML, datestamps, small readers of elements
"""

from oaiserver.records import DAY, SECONDS
from oaiserver.validate.command import url_problem, validate
from oaiserver.validate.core import Chain, Fetched, Page, Validator
from oaiserver.validate.parsing import (
    SCHEMA_DIR,
    SCHEMA_ORDER,
    date_problem,
    load_schema,
    one_line,
    parse,
    parse_any,
    parse_utc,
)
from oaiserver.validate.report import report
from oaiserver.validate.rules import (
    ERROR_CASES,
    FAIL,
    NOTHING_SEEN,
    PASS,
    RULES,
    SKIP,
    WARN,
    ErrorCase,
    Note,
    Result,
    rule_names,
)

__all__ = [
    "DAY",
    "ERROR_CASES",
    "FAIL",
    "NOTHING_SEEN",
    "PASS",
    "RULES",
    "SCHEMA_DIR",
    "SCHEMA_ORDER",
    "SECONDS",
    "SKIP",
    "WARN",
    "Chain",
    "ErrorCase",
    "Fetched",
    "Note",
    "Page",
    "Result",
    "Validator",
    "date_problem",
    "load_schema",
    "one_line",
    "parse",
    "parse_any",
    "parse_utc",
    "report",
    "rule_names",
    "url_problem",
    "validate",
]
