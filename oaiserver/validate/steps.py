"""The order the checks run in. Identify comes first (the validator gives up if the URL does not
answer, or does not answer OAI-PMH); the Identify rules that need the lists come last."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from oaiserver.validate.errorcases import check_errors
from oaiserver.validate.identify import check_compression, check_identify, check_identify_against_lists, check_post
from oaiserver.validate.lists import check_formats, check_identifiers, check_sets, check_sets_declared
from oaiserver.validate.probes import check_echo_escaped, check_robustness
from oaiserver.validate.records import check_get_record, check_records
from oaiserver.validate.selective import check_selective

if TYPE_CHECKING:
    from oaiserver.validate.core import Validator

__all__ = ["STEPS", "check_identify"]

STEPS: tuple[Callable[[Validator], None], ...] = (
    check_post,
    check_compression,
    check_formats,
    check_sets,  # remembers the declared sets
    check_identifiers,  # remembers the headers the checks below read
    check_sets_declared,
    check_records,  # remembers ListRecords' first page for GetRecord
    check_get_record,
    check_selective,
    check_errors,
    check_robustness,
    check_echo_escaped,
    check_identify_against_lists,
)
