"""The errors bad requests must produce: each of `ERROR_CASES` sent, and the OAI-PMH error code
it must answer looked for (other codes alongside it are reported, not failed)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from oaiserver.validate.rules import ERROR_CASES, FAIL, PASS, ErrorCase

if TYPE_CHECKING:
    from oaiserver.validate.core import Validator


def check_errors(v: Validator) -> None:
    for case in ERROR_CASES:
        check_error_case(v, case)


def check_error_case(v: Validator, case: ErrorCase) -> None:
    f = v.fetch(case.name, case.pairs)
    if f.doc is None:
        v.note(case.name, FAIL, f"{case.what}: {f.problem}", shown_by=f)
    elif case.code in f.codes:
        others = sorted(set(f.codes) - {case.code})
        also = f" (and {', '.join(others)})" if others else ""
        v.note(case.name, PASS, f"{case.what}: {case.code}{also}")
    elif f.codes:
        v.note(case.name, FAIL, f"{case.what}: answered {f.describe_errors()}, expected {case.code}", shown_by=f)
    else:
        v.note(case.name, FAIL, f"{case.what}: answered without an error, expected {case.code}", shown_by=f)
