"""The order the checks run in. Identify comes first (the validator gives up if the URL does not
answer); the Identify rules that need the lists come last."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from oaiserver.validate.errorcases import check_errors
from oaiserver.validate.identify import check_identify, check_identify_against_lists, check_post
from oaiserver.validate.lists import check_formats, check_identifiers, check_sets
from oaiserver.validate.records import check_get_record, check_records, check_selective

if TYPE_CHECKING:
    from oaiserver.validate.core import Validator

__all__ = ["STEPS", "check_identify"]

STEPS: tuple[Callable[[Validator], None], ...] = (
    check_post,
    check_formats,
    check_sets,
    check_identifiers,  # remembers the headers the next three read
    check_records,
    check_get_record,
    check_selective,
    check_errors,
    check_identify_against_lists,
)
