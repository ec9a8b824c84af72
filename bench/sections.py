"""The base of the run's sections: each measures, keeps its results and adds its rows (checks) to
the table, against the targets below."""

from __future__ import annotations

import argparse
from typing import Any

from results import Check, print_report

# Targets, for a 2-core machine.
T_LOAD = 20_000  # records/s into SQLite
T_LOAD_VS_EXECUTEMANY = 2.0  # the bulk load over a plain executemany of the same rows into bare tables
T_CPU = 15.0  # server CPU ms per 1,000 records, full ListRecords harvest
T_FIRST_PAGE = 2.0  # a list's first page (freeze + completeListSize) within this factor of a later page
LATENCY_SET = "history"  # the set whose list the page latency also probes (an eighth of the data set)
T_RSS_MB = 150.0  # peak RSS per worker at N = 1,000,000
T_HARVESTER_VS_SICKLE = 1.5  # the harvester's records/s into SQLite over the plain Sickle loop's
T_HARVESTER_CPU_VS_SICKLE = 1.25  # the harvester's CPU per record (worker included) over the Sickle loop's
T_PG_VS_SQLITE = 0.8  # the harvester's records/s into PostgreSQL over its rate into SQLite
T_VS_PEER_32 = 3.0  # our 32-harvester aggregate over the peer's
T_FLOOR = 1.5  # server CPU per 1,000 records within this factor of the floor (bench/floor.py)
T_VS_PEER_CPU = 10.0  # the best peer's server CPU per 1,000 records over ours
T_SECOND_FORMAT = 1.1  # server CPU of a list in the second format over oai_dc's (per byte: see bench/README.md)


class Sections:
    """What every section shares: the run's arguments, the results for the JSON, the rows for the
    table (checks), what was skipped and why."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.results: dict[str, Any] = {}
        self.checks: list[Check] = []
        self.skipped: dict[str, str] = {}

    def check(self, *a: Any, **kw: Any) -> None:
        self.checks.append(Check(*a, **kw))

    def report(self) -> dict[str, Any]:
        return print_report(self.args, self.checks, self.skipped, self.results)
