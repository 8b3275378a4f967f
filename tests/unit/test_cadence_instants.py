"""The one instant parser: a zone for times without an offset, SPEC §3's DST rule, a range."""

from __future__ import annotations

from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import pytest

from schedctl.cadence import parse_instant, wall_time_note
from schedctl.errors import ValidationError
from schedctl.values import parse_local_or_instant

BERLIN = ZoneInfo("Europe/Berlin")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2027-01-10T10:00", datetime(2027, 1, 10, 9, 0, tzinfo=UTC)),  # CET
        ("2027-07-10T10:00", datetime(2027, 7, 10, 8, 0, tzinfo=UTC)),  # CEST
        ("2027-03-28T02:30", datetime(2027, 3, 28, 1, 0, tzinfo=UTC)),  # gap: 03:00 CEST
        ("2027-10-31T02:30", datetime(2027, 10, 31, 0, 30, tzinfo=UTC)),  # first 02:30
        ("2027-01-10T10:00Z", datetime(2027, 1, 10, 10, 0, tzinfo=UTC)),  # offset wins
    ],
)
def test_a_time_without_offset_is_read_in_the_zone(text: str, expected: datetime) -> None:
    assert parse_instant(text, BERLIN) == expected
    assert parse_instant(text, BERLIN).tzinfo is UTC


def test_without_a_zone_it_is_utc() -> None:
    assert parse_instant("2027-01-10T10:00") == datetime(2027, 1, 10, 10, 0, tzinfo=UTC)


def test_wall_time_notes() -> None:
    assert wall_time_note(datetime(2027, 1, 10, 10, 0), BERLIN) is None
    gap = wall_time_note(datetime(2027, 3, 28, 2, 30), BERLIN)
    repeat = wall_time_note(datetime(2027, 10, 31, 2, 30), BERLIN)
    assert gap == (
        "2027-03-28 02:30 does not exist in Europe/Berlin (the clocks go forward);"
        " using 03:00 CEST, the first instant after the gap"
    )
    assert repeat == (
        "2027-10-31 02:30 occurs twice in Europe/Berlin (the clocks go back);"
        " using the first, 02:30 CEST"
    )


@pytest.mark.parametrize(
    "text",
    ["0001-01-01T00:00:00Z", "1969-12-31T23:59:59Z", "9999-01-01", "9999-12-31T23:00-05:00",
     "0001-01-01T00:00+05:00"],
)  # fmt: skip
def test_an_instant_out_of_range_is_refused(text: str) -> None:
    with pytest.raises(ValidationError, match="out of range"):
        parse_local_or_instant(text)
