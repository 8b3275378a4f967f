"""The notes that name what §3's DST rule does to a schedule's local time (SPEC §12),
and the warnings `schedules create/update` derive from them: once per kind, within a
window."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from schedctl.cadence import dst_adjustments, dst_note, dst_warnings, make_cadence

SUMMER_2026 = datetime(2026, 6, 1, tzinfo=UTC)
YEAR = timedelta(days=365)


def test_notes_read_as_the_spec_writes_them() -> None:
    assert dst_note(datetime(2027, 3, 28, 2, 30), ZoneInfo("Europe/Berlin")) == (
        "02:30 does not exist on 2027-03-28 in Europe/Berlin: runs at 03:00 CEST"
    )
    assert dst_note(datetime(2026, 11, 1, 1, 30), ZoneInfo("America/New_York")) == (
        "01:30 occurs twice on 2026-11-01 in America/New_York: runs at the first, EDT"
    )
    assert dst_note(datetime(2027, 3, 28, 9, 0), ZoneInfo("Europe/Berlin")) is None


def test_a_time_in_both_a_gap_and_an_overlap_is_warned_once_per_kind() -> None:
    cadence = make_cadence("daily", tz="Europe/Berlin", at="02:30")
    assert dst_warnings(cadence, SUMMER_2026, SUMMER_2026 + YEAR) == [
        "02:30 occurs twice on 2026-10-25 in Europe/Berlin: runs at the first, CEST",
        "02:30 does not exist on 2027-03-28 in Europe/Berlin: runs at 03:00 CEST",
    ]


def test_a_cron_with_many_times_in_the_gap_is_still_warned_once_per_kind() -> None:
    cadence = make_cadence("cron", tz="Europe/Berlin", cron="*/15 * * * *")
    adjustments = list(dst_adjustments(cadence, SUMMER_2026, SUMMER_2026 + YEAR))
    assert [kind for kind, _ in adjustments] == ["overlap"] * 4 + ["gap"] * 4
    assert dst_warnings(cadence, SUMMER_2026, SUMMER_2026 + YEAR) == [
        "02:00 occurs twice on 2026-10-25 in Europe/Berlin: runs at the first, CEST",
        "02:00 does not exist on 2027-03-28 in Europe/Berlin: runs at 03:00 CEST",
    ]


def test_a_time_only_skipped_gets_only_the_gap_warning() -> None:
    # New York moves its clocks at 02:00: 02:30 is skipped in March, never repeated.
    cadence = make_cadence("daily", tz="America/New_York", at="02:30")
    assert dst_warnings(cadence, SUMMER_2026, SUMMER_2026 + YEAR) == [
        "02:30 does not exist on 2027-03-14 in America/New_York: runs at 03:00 EDT"
    ]


@pytest.mark.parametrize(
    ("tz", "at"),
    [("Europe/Berlin", "09:00"), ("America/New_York", "03:30"), ("UTC", "02:30"),
     ("Asia/Tokyo", "02:30")],
)  # fmt: skip
def test_a_time_no_change_touches_gets_no_warning(tz: str, at: str) -> None:
    cadence = make_cadence("daily", tz=tz, at=at)
    assert dst_warnings(cadence, SUMMER_2026, SUMMER_2026 + YEAR) == []


def test_only_changes_inside_the_window_count() -> None:
    cadence = make_cadence("weekly", tz="Europe/Berlin", weekday="sun", at="02:30")
    start = datetime(2026, 11, 1, tzinfo=UTC)
    assert dst_warnings(cadence, start, start + timedelta(days=60)) == []
    assert dst_warnings(cadence, start, start + YEAR) == [
        "02:30 does not exist on 2027-03-28 in Europe/Berlin: runs at 03:00 CEST",
        "02:30 occurs twice on 2027-10-31 in Europe/Berlin: runs at the first, CEST",
    ]
