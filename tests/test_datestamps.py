"""Datestamps as the protocol writes them (section 3.3.1): `YYYY-MM-DD` and
`YYYY-MM-DDThh:mm:ssZ`, UTC, read into epoch seconds; anything else is refused."""

from __future__ import annotations

import calendar
import itertools
from datetime import datetime

import pytest

from oaiserver.records import DAY, SECONDS, format_datestamp, parse_datestamp

YEARS = (1, 999, 1969, 1970, 2000, 2024, 9999)


@pytest.mark.parametrize("year", YEARS)
def test_every_valid_time_of_a_year_reads_as_the_calendar_says(year: int) -> None:
    for month, day, hour, minute, second in itertools.product(
        range(1, 13), (1, 28, 29, 30, 31), (0, 23), (0, 59), (0, 59)
    ):
        text = f"{year:04d}-{month:02d}-{day:02d}T{hour:02d}:{minute:02d}:{second:02d}Z"
        try:
            expected = calendar.timegm(datetime(year, month, day, hour, minute, second).timetuple())
        except ValueError:  # 30 February, 31 April...
            with pytest.raises(ValueError):
                parse_datestamp(text)
            continue
        assert parse_datestamp(text) == (expected, SECONDS)
        assert format_datestamp(expected) == text


def test_a_day_is_its_first_second_or_as_an_upper_bound_its_last() -> None:
    assert parse_datestamp("1970-01-01") == (0, DAY)
    assert parse_datestamp("1970-01-01", end_of_day=True) == (86399, DAY)
    assert parse_datestamp("2024-02-29") == (calendar.timegm((2024, 2, 29, 0, 0, 0)), DAY)


@pytest.mark.parametrize(
    "text",
    [
        "2023-02-29",  # not a leap year
        "2024-13-01",
        "2024-00-10",
        "2024-04-31",
        "0000-01-01",  # no year 0
        "2024-05-01T24:00:00Z",
        "2024-05-01T12:60:00Z",
        "2024-05-01T12:00:60Z",  # no leap second
        "2024-05-01T12:00:00",  # no Z
        "2024-05-01T12:00:00+00:00",
        "2024-05-01T12:00:00.5Z",
        "2024-5-01",
        "٢٠٢٤-05-01",  # digits of another script
        "",
    ],
)
def test_anything_else_is_refused(text: str) -> None:
    with pytest.raises(ValueError):
        parse_datestamp(text)
