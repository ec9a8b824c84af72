"""`oaiserver validate URL`: hold any OAI-PMH base URL to the OAI-PMH 2.0 specification.

Works on our repository or a partner's: it only speaks HTTP to the URL given, within --max-pages
pages a list, --max-requests requests in all, --delay seconds apart. Every response is parsed
safely (no DTD, no entities, no network) and validated against the official schemas shipped in
`oaiserver/schemas/` (loaded offline with a driver schema, see `load_schema`; content in a
namespace with no schema shipped is reported as not checked), then held to the rules the schemas
cannot express: Identify, datestamps and granularity, the <request> echo, the resumption chains,
ListRecords and GetRecord, selective harvesting, the errors that bad arguments must produce
(`ERROR_CASES`) and robustness to unreadable arguments.

Each rule (`RULES`) names the section of the specification it comes from and its level: a broken
MUST is a FAIL, a broken SHOULD a WARN. The result is one line per rule (or JSON, or an HTML
page): PASS, FAIL, WARN or SKIP with a short reason. Any FAIL makes the exit code 1.

The package, one idea a module (imports go down this list, never up):

    command.py     the command: URL checked, validator run, report printed or written
    core.py        the validator's state, its HTTP (`fetch`, capped and spaced) and list walking (`walk`), the run
    steps.py       the order the checks run in
    identify.py    Identify and what it promises           lists.py    formats, sets, the paging rules
    records.py     ListRecords, GetRecord                  selective.py  from/until and set hierarchy
    errorcases.py  the errors bad requests must produce    probes.py   unreadable arguments, escaped echo
    responses.py   the rules checked on every response     report.py   notes to results, lines and JSON
    htmlreport.py  the results as a page for people
    rules.py       the rules in report order with section and level, statuses, ERROR_CASES
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
    MUST,
    NOTHING_SEEN,
    PASS,
    RULES,
    SHOULD,
    SKIP,
    WARN,
    ErrorCase,
    Note,
    Result,
    Rule,
    rule_names,
)

__all__ = [
    "DAY",
    "ERROR_CASES",
    "FAIL",
    "MUST",
    "NOTHING_SEEN",
    "PASS",
    "RULES",
    "SCHEMA_DIR",
    "SCHEMA_ORDER",
    "SECONDS",
    "SHOULD",
    "SKIP",
    "WARN",
    "Chain",
    "ErrorCase",
    "Fetched",
    "Note",
    "Page",
    "Result",
    "Rule",
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
