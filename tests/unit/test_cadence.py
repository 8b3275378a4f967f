"""Example-based tests for schedctl.cadence: parsing, slots and the DST rules."""

from __future__ import annotations

import re
from datetime import UTC, datetime, time, timedelta

import pytest

from schedctl.cadence import (
    Cadence,
    latest_slot_at_or_before,
    make_cadence,
    next_slot,
    parse_instant,
    slots_between,
    upcoming_slots,
)
from schedctl.errors import ValidationError
from schedctl.values import parse_day, parse_duration, parse_hhmm, parse_timezone, parse_weekday

BERLIN = "Europe/Berlin"
NEW_YORK = "America/New_York"


def utc(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=UTC)


def run(cadence: Cadence, after: datetime, count: int) -> list[datetime]:
    """``count`` consecutive slots after ``after``, by repeated next_slot."""
    slots = []
    for _ in range(count):
        after = next_slot(cadence, after)
        slots.append(after)
    return slots


def local(slots: list[datetime], tz: str) -> list[str]:
    """Slots as local ISO strings with offset, which shows which occurrence ran."""
    zone = parse_timezone(tz)
    return [slot.astimezone(zone).isoformat(timespec="minutes") for slot in slots]


# --- parsing ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [("07:30", time(7, 30)), ("00:00", time(0, 0)), ("23:59", time(23, 59)), ("7:05", time(7, 5))],
)
def test_parse_hhmm(text: str, expected: time) -> None:
    assert parse_hhmm(text) == expected


@pytest.mark.parametrize("text", ["24:00", "7:5x", "12:60", "", "0730", "07:30:00", "-1:30", "7h"])
def test_parse_hhmm_rejects(text: str) -> None:
    with pytest.raises(ValidationError, match=re.escape(f"invalid time '{text}'")):
        parse_hhmm(text)


@pytest.mark.parametrize(
    ("text", "expected"),
    [("mon", 0), ("Tue", 1), ("WEDNESDAY", 2), ("thursday", 3), ("fri", 4), ("sat", 5), ("sun", 6)],
)
def test_parse_weekday(text: str, expected: int) -> None:
    assert parse_weekday(text) == expected


@pytest.mark.parametrize("text", ["funday", "", "mo", "tues", "1", "7"])
def test_parse_weekday_rejects(text: str) -> None:
    with pytest.raises(ValidationError, match=rf"invalid weekday '{text}' \(expected mon..sun\)"):
        parse_weekday(text)


@pytest.mark.parametrize(("text", "expected"), [("1", 1), ("15", 15), ("31", 31), ("LAST", "last")])
def test_parse_day(text: str, expected: int | str) -> None:
    assert parse_day(text) == expected


@pytest.mark.parametrize("text", ["0", "32", "-1", "+5", "1.5", "", "first", "001"])
def test_parse_day_rejects(text: str) -> None:
    with pytest.raises(ValidationError, match=re.escape(f"invalid day '{text}'")):
        parse_day(text)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("90s", timedelta(seconds=90)),
        ("15m", timedelta(minutes=15)),
        ("6h", timedelta(hours=6)),
        ("2d", timedelta(days=2)),
    ],
)
def test_parse_duration(text: str, expected: timedelta) -> None:
    assert parse_duration(text) == expected


@pytest.mark.parametrize(
    "text", ["0m", "-5m", "1.5h", "15", "m", "15M", "2w", "", "1h30m", "99999999999d"]
)
def test_parse_duration_rejects(text: str) -> None:
    with pytest.raises(ValidationError, match=re.escape(f"invalid duration '{text}'")):
        parse_duration(text)


@pytest.mark.parametrize("name", ["UTC", BERLIN, NEW_YORK, "Australia/Lord_Howe", "EST5EDT"])
def test_parse_timezone(name: str) -> None:
    assert parse_timezone(name).key == name


@pytest.mark.parametrize(
    "name",
    [
        "Mars/Base",
        "",
        "local",
        "localtime",
        "posixrules",
        "/etc/localtime",
        "../etc/passwd",
        "europe/berlin",
        "zone.tab",
        "right/Europe/Berlin",
        "posix/Europe/Berlin",
        "Europe/Berlin ",
    ],
)
def test_parse_timezone_rejects(name: str) -> None:
    with pytest.raises(ValidationError, match=re.escape(f"invalid time zone '{name}'")):
        parse_timezone(name)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2026-03-29T02:30:00Z", utc(2026, 3, 29, 2, 30)),
        ("2026-03-29T02:30", utc(2026, 3, 29, 2, 30)),
        ("2026-03-29 04:30:00+02:00", utc(2026, 3, 29, 2, 30)),
        ("2026-03-29", utc(2026, 3, 29)),
    ],
)
def test_parse_instant(text: str, expected: datetime) -> None:
    instant = parse_instant(text)
    assert instant == expected
    assert instant.tzinfo is UTC


@pytest.mark.parametrize("text", ["yesterday", "", "2026-02-30T00:00", "2026-03-29T25:00"])
def test_parse_instant_rejects(text: str) -> None:
    with pytest.raises(ValidationError, match=re.escape(f"invalid instant '{text}'")):
        parse_instant(text)


# --- building cadences ------------------------------------------------------------


def test_make_cadence_parses_raw_strings() -> None:
    assert make_cadence("Weekly", tz=BERLIN, at="07:30", weekday="Friday") == Cadence(
        kind="weekly", tz=BERLIN, at=time(7, 30), weekday=4
    )
    assert make_cadence("monthly", at="09:00", day="last").day == "last"
    assert make_cadence("cron", cron="  */15  *  * * * ").cron == "*/15 * * * *"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"kind": "hourly", "at": "07:30"}, "invalid cadence 'hourly'"),
        ({"kind": "daily"}, "a daily cadence needs --at"),
        ({"kind": "weekly", "at": "07:30"}, "a weekly cadence needs --weekday"),
        ({"kind": "weekly", "weekday": "mon"}, "a weekly cadence needs --at"),
        ({"kind": "monthly", "at": "07:30"}, "a monthly cadence needs --day"),
        ({"kind": "cron"}, "a cron cadence needs --cron"),
        ({"kind": "cron", "cron": "0 * * * *", "at": "07:30"}, "--at does not apply to a cron"),
        ({"kind": "cron", "cron": "0 * * * *", "weekday": "mon"}, "--weekday does not apply"),
        ({"kind": "cron", "cron": "0 * * * *", "day": "1"}, "--day does not apply"),
        ({"kind": "daily", "at": "07:30", "day": "1"}, "--day does not apply to a daily"),
        ({"kind": "daily", "at": "07:30", "cron": "0 * * * *"}, "--cron does not apply"),
        ({"kind": "daily", "at": "24:00"}, "invalid time '24:00'"),
        ({"kind": "daily", "at": "07:30", "tz": "Mars/Base"}, "invalid time zone 'Mars/Base'"),
        ({"kind": "weekly", "at": "07:30", "weekday": "funday"}, "invalid weekday 'funday'"),
        ({"kind": "monthly", "at": "07:30", "day": "32"}, "invalid day '32'"),
    ],
)
def test_make_cadence_rejects(kwargs: dict[str, str], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        make_cadence(**kwargs)


@pytest.mark.parametrize(
    ("expr", "reason"),
    [
        ("61 * * * *", "Bad minute"),
        ("* 24 * * *", "Bad hour"),
        ("0 0 0 * *", "Bad day-of-month"),
        ("0 0 30 2 *", "Bad day-of-month"),
        ("0 0 * 13 *", "Bad month"),
        ("0 0 * * 8", "Bad day-of-week"),
        ("*/0 * * * *", "Bad minute"),
        ("0 0 * *", "expected 5 fields"),
        ("0 0 0 * * *", "expected 5 fields"),
        ("@daily", "expected 5 fields"),
        ("", "expected 5 fields"),
    ],
)
def test_invalid_cron_is_rejected(expr: str, reason: str) -> None:
    with pytest.raises(
        ValidationError, match=re.escape(f"invalid cron expression '{expr}': {reason}")
    ):
        make_cadence("cron", cron=expr)


def test_cadence_validates_direct_construction() -> None:
    with pytest.raises(ValidationError, match="invalid day 0"):
        Cadence(kind="monthly", at=time(9), day=0)
    with pytest.raises(ValidationError, match="invalid weekday 7"):
        Cadence(kind="weekly", at=time(9), weekday=7)
    with pytest.raises(ValidationError, match="invalid cadence 'yearly'"):
        Cadence(kind="yearly", at=time(9))  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("cadence", "text"),
    [
        (make_cadence("daily", tz=BERLIN, at="07:30"), "daily at 07:30 Europe/Berlin"),
        (make_cadence("weekly", at="07:30", weekday="monday"), "weekly on mon at 07:30 UTC"),
        (make_cadence("monthly", at="09:00", day="last"), "monthly on day last at 09:00 UTC"),
        (make_cadence("monthly", at="09:00", day="5"), "monthly on day 5 at 09:00 UTC"),
        (
            make_cadence("cron", tz=NEW_YORK, cron="*/15 * * * *"),
            "cron '*/15 * * * *' America/New_York",
        ),
    ],
)
def test_describe(cadence: Cadence, text: str) -> None:
    assert cadence.describe() == text


# --- basic slots ------------------------------------------------------------------


def test_daily() -> None:
    cadence = make_cadence("daily", tz=BERLIN, at="07:30")
    assert next_slot(cadence, utc(2026, 1, 10, 6)) == utc(2026, 1, 10, 6, 30)
    # Strictly after: a slot is not its own successor.
    assert next_slot(cadence, utc(2026, 1, 10, 6, 30)) == utc(2026, 1, 11, 6, 30)
    assert next_slot(cadence, utc(2026, 7, 10, 6)) == utc(2026, 7, 11, 5, 30)


def test_results_are_utc_whatever_the_input_offset() -> None:
    cadence = make_cadence("daily", tz=BERLIN, at="07:30")
    after = datetime(2026, 1, 10, 7, 0, tzinfo=parse_timezone(BERLIN))
    slot = next_slot(cadence, after)
    assert slot == utc(2026, 1, 10, 6, 30)
    assert slot.tzinfo is UTC


def test_naive_datetimes_are_refused() -> None:
    cadence = make_cadence("daily", at="07:30")
    with pytest.raises(ValueError, match="aware"):
        next_slot(cadence, datetime(2026, 1, 1))
    with pytest.raises(ValueError, match="aware"):
        slots_between(cadence, utc(2026, 1, 1), datetime(2026, 1, 2))


def test_weekly() -> None:
    cadence = make_cadence("weekly", tz=NEW_YORK, at="09:00", weekday="mon")
    # Wednesday 2026-01-07 -> Monday 2026-01-12, 09:00 EST.
    assert run(cadence, utc(2026, 1, 7), 3) == [
        utc(2026, 1, 12, 14),
        utc(2026, 1, 19, 14),
        utc(2026, 1, 26, 14),
    ]
    # On the Monday itself, before and after 09:00.
    assert next_slot(cadence, utc(2026, 1, 12, 13)) == utc(2026, 1, 12, 14)
    assert next_slot(cadence, utc(2026, 1, 12, 14)) == utc(2026, 1, 19, 14)


def test_monthly_31_uses_the_last_day_of_short_months() -> None:
    cadence = make_cadence("monthly", at="09:00", day="31")
    slots = run(cadence, utc(2027, 1, 1), 14)
    assert [slot.date().isoformat() for slot in slots] == [
        "2027-01-31",
        "2027-02-28",
        "2027-03-31",
        "2027-04-30",
        "2027-05-31",
        "2027-06-30",
        "2027-07-31",
        "2027-08-31",
        "2027-09-30",
        "2027-10-31",
        "2027-11-30",
        "2027-12-31",
        "2028-01-31",
        "2028-02-29",
    ]
    assert all(slot.time() == time(9) for slot in slots)


def test_monthly_30_in_february_and_day_29_in_a_leap_year() -> None:
    day_30 = make_cadence("monthly", at="09:00", day="30")
    assert next_slot(day_30, utc(2026, 2, 1)) == utc(2026, 2, 28, 9)
    assert next_slot(day_30, utc(2026, 2, 28, 9)) == utc(2026, 3, 30, 9)
    day_29 = make_cadence("monthly", at="09:00", day="29")
    assert next_slot(day_29, utc(2028, 2, 1)) == utc(2028, 2, 29, 9)


def test_monthly_last() -> None:
    cadence = make_cadence("monthly", tz=BERLIN, at="09:00", day="last")
    slots = run(cadence, utc(2028, 1, 1), 4)
    assert local(slots, BERLIN) == [
        "2028-01-31T09:00+01:00",
        "2028-02-29T09:00+01:00",
        "2028-03-31T09:00+02:00",
        "2028-04-30T09:00+02:00",
    ]


def test_monthly_slot_earlier_in_the_month_rolls_to_next_month() -> None:
    cadence = make_cadence("monthly", at="09:00", day="5")
    assert next_slot(cadence, utc(2026, 12, 5, 9)) == utc(2027, 1, 5, 9)


def test_cron_basics() -> None:
    quarter = make_cadence("cron", cron="*/15 * * * *")
    assert run(quarter, utc(2026, 1, 1, 10, 7), 3) == [
        utc(2026, 1, 1, 10, 15),
        utc(2026, 1, 1, 10, 30),
        utc(2026, 1, 1, 10, 45),
    ]
    weekdays = make_cadence("cron", tz=NEW_YORK, cron="0 9 * * mon-fri")
    # Friday 2026-01-09 10:00 EST -> Monday 09:00 EST.
    assert next_slot(weekdays, utc(2026, 1, 9, 15)) == utc(2026, 1, 12, 14)


def test_cron_last_day_of_month() -> None:
    cadence = make_cadence("cron", cron="0 3 L * *")
    assert run(cadence, utc(2028, 1, 31, 4), 2) == [utc(2028, 2, 29, 3), utc(2028, 3, 31, 3)]


# --- DST: spring forward ----------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "options"),
    [
        ("daily", {"at": "02:30"}),
        ("weekly", {"at": "02:30", "weekday": "sun"}),
        ("cron", {"cron": "30 2 * * *"}),
    ],
)
def test_spring_forward_runs_at_the_end_of_the_gap_berlin(
    kind: str, options: dict[str, str]
) -> None:
    cadence = make_cadence(kind, tz=BERLIN, **options)
    # 2026-03-29 02:00 CET -> 03:00 CEST: 02:30 does not exist, runs at 03:00 = 01:00Z.
    assert next_slot(cadence, utc(2026, 3, 28, 12)) == utc(2026, 3, 29, 1)
    assert local([next_slot(cadence, utc(2026, 3, 29, 1))], BERLIN)[0].endswith("T02:30+02:00")


@pytest.mark.parametrize(
    ("kind", "options"),
    [
        ("daily", {"at": "02:30"}),
        ("weekly", {"at": "02:30", "weekday": "sun"}),
        ("cron", {"cron": "30 2 * * *"}),
    ],
)
def test_spring_forward_runs_at_the_end_of_the_gap_new_york(
    kind: str, options: dict[str, str]
) -> None:
    cadence = make_cadence(kind, tz=NEW_YORK, **options)
    # 2026-03-08 02:00 EST -> 03:00 EDT: 02:30 runs at 03:00 EDT = 07:00Z.
    assert next_slot(cadence, utc(2026, 3, 7, 12)) == utc(2026, 3, 8, 7)


def test_spring_forward_daily_sequence() -> None:
    cadence = make_cadence("daily", tz=BERLIN, at="02:30")
    assert local(run(cadence, utc(2026, 3, 27, 12), 3), BERLIN) == [
        "2026-03-28T02:30+01:00",
        "2026-03-29T03:00+02:00",
        "2026-03-30T02:30+02:00",
    ]


def test_spring_forward_cron_wall_times_in_the_gap_share_one_slot() -> None:
    every_half_hour = make_cadence("cron", tz=BERLIN, cron="*/30 * * * *")
    slots = slots_between(every_half_hour, utc(2026, 3, 28, 23), utc(2026, 3, 29, 2))
    assert local(slots, BERLIN) == [
        "2026-03-29T00:30+01:00",
        "2026-03-29T01:00+01:00",
        "2026-03-29T01:30+01:00",
        "2026-03-29T03:00+02:00",  # 02:00 and 02:30 did not exist
        "2026-03-29T03:30+02:00",
        "2026-03-29T04:00+02:00",
    ]
    both = make_cadence("cron", tz=BERLIN, cron="0,30 2 * * *")
    assert local(slots_between(both, utc(2026, 3, 28, 12), utc(2026, 3, 30, 12)), BERLIN) == [
        "2026-03-29T03:00+02:00",
        "2026-03-30T02:00+02:00",
        "2026-03-30T02:30+02:00",
    ]


def test_spring_forward_hourly_cron_runs_the_skipped_time_after_the_gap() -> None:
    # cronsim alone would skip 02:15; SPEC §3 runs it at the first instant after the gap.
    hourly = make_cadence("cron", tz=BERLIN, cron="15 * * * *")
    slots = slots_between(hourly, utc(2026, 3, 28, 23), utc(2026, 3, 29, 2))
    assert local(slots, BERLIN) == [
        "2026-03-29T00:15+01:00",
        "2026-03-29T01:15+01:00",
        "2026-03-29T03:00+02:00",
        "2026-03-29T03:15+02:00",
    ]


def test_half_hour_dst_lord_howe() -> None:
    zone = "Australia/Lord_Howe"
    # 2026-10-04 02:00 +10:30 -> 02:30 +11:00: 02:15 runs at 02:30.
    spring = make_cadence("daily", tz=zone, at="02:15")
    assert local([next_slot(spring, utc(2026, 10, 3))], zone) == ["2026-10-04T02:30+11:00"]
    # 2026-04-05 02:00 +11:00 -> 01:30 +10:30: 01:45 happens twice, runs once.
    autumn = make_cadence("daily", tz=zone, at="01:45")
    assert local(run(autumn, utc(2026, 4, 4), 2), zone) == [
        "2026-04-05T01:45+11:00",
        "2026-04-06T01:45+10:30",
    ]


# --- DST: fall back ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("tz", "at", "first_utc", "day"),
    [
        (BERLIN, "02:30", utc(2026, 10, 25, 0, 30), 25),  # 02:30 CEST, not 02:30 CET
        (NEW_YORK, "01:30", utc(2026, 11, 1, 5, 30), 1),  # 01:30 EDT, not 01:30 EST
    ],
)
@pytest.mark.parametrize("kind", ["daily", "weekly", "cron"])
def test_fall_back_runs_once_at_the_first_occurrence(
    kind: str, tz: str, at: str, first_utc: datetime, day: int
) -> None:
    hour, minute = at.split(":")
    options = {
        "daily": {"at": at},
        "weekly": {"at": at, "weekday": "sun"},
        "cron": {"cron": f"{int(minute)} {int(hour)} * * *"},
    }[kind]
    cadence = make_cadence(kind, tz=tz, **options)
    window_start = first_utc - timedelta(hours=12)
    slots = slots_between(cadence, window_start, window_start + timedelta(days=1))
    assert slots == [first_utc]
    assert next_slot(cadence, window_start) == first_utc
    # From inside the second pass of the repeated hour, the next slot is another day.
    second_pass = first_utc + timedelta(hours=1)
    assert next_slot(cadence, second_pass).astimezone(parse_timezone(tz)).day != day


@pytest.mark.parametrize(
    ("tz", "start", "expected"),
    [
        (
            BERLIN,
            utc(2026, 10, 24, 23),
            [
                "2026-10-25T01:30+02:00",
                "2026-10-25T02:00+02:00",
                "2026-10-25T02:30+02:00",
                "2026-10-25T03:00+01:00",
                "2026-10-25T03:30+01:00",
                "2026-10-25T04:00+01:00",
            ],
        ),
        (
            NEW_YORK,
            utc(2026, 11, 1, 4),
            [
                "2026-11-01T00:30-04:00",
                "2026-11-01T01:00-04:00",
                "2026-11-01T01:30-04:00",
                "2026-11-01T02:00-05:00",
                "2026-11-01T02:30-05:00",
                "2026-11-01T03:00-05:00",
            ],
        ),
    ],
)
def test_fall_back_wildcard_cron_runs_each_wall_time_once(
    tz: str, start: datetime, expected: list[str]
) -> None:
    cadence = make_cadence("cron", tz=tz, cron="*/30 * * * *")
    # Four real hours hold only six slots: the repeated hour is not run a second time.
    slots = slots_between(cadence, start, start + timedelta(hours=4))
    assert local(slots, tz) == expected
    assert run(cadence, start, 6) == slots


def test_latest_slot_from_inside_the_repeated_hour() -> None:
    cadence = make_cadence("daily", tz=BERLIN, at="02:30")
    # 01:45Z is 02:45 CET, the second pass: the day's slot was the first 02:30.
    assert latest_slot_at_or_before(cadence, utc(2026, 10, 25, 1, 45)) == utc(2026, 10, 25, 0, 30)
    # 01:15Z is 02:15 CET: the clock already showed 02:30 once, at 00:30Z.
    assert latest_slot_at_or_before(cadence, utc(2026, 10, 25, 1, 15)) == utc(2026, 10, 25, 0, 30)
    every_half_hour = make_cadence("cron", tz=BERLIN, cron="*/30 * * * *")
    assert latest_slot_at_or_before(every_half_hour, utc(2026, 10, 25, 1, 45)) == utc(
        2026, 10, 25, 0, 30
    )


# --- latest slot and catch-up windows ---------------------------------------------


def test_latest_slot_at_or_before() -> None:
    cadence = make_cadence("daily", tz=BERLIN, at="07:30")
    assert latest_slot_at_or_before(cadence, utc(2026, 1, 10, 6, 30)) == utc(2026, 1, 10, 6, 30)
    assert latest_slot_at_or_before(cadence, utc(2026, 1, 10, 6, 29)) == utc(2026, 1, 9, 6, 30)
    leap_day = make_cadence("cron", cron="0 0 29 2 *")
    assert latest_slot_at_or_before(leap_day, utc(2030, 6, 1)) == utc(2028, 2, 29)
    monthly = make_cadence("monthly", at="09:00", day="31")
    assert latest_slot_at_or_before(monthly, utc(2026, 3, 15)) == utc(2026, 2, 28, 9)


def test_slots_between_over_a_three_day_outage() -> None:
    cadence = make_cadence("daily", tz=BERLIN, at="07:30")
    # Down from Friday 2026-03-27 08:00Z to Monday 08:00Z, across the DST change.
    slots = slots_between(cadence, utc(2026, 3, 27, 8), utc(2026, 3, 30, 8))
    assert slots == [utc(2026, 3, 28, 6, 30), utc(2026, 3, 29, 5, 30), utc(2026, 3, 30, 5, 30)]
    hourly = make_cadence("cron", tz=BERLIN, cron="0 * * * *")
    missed = slots_between(hourly, utc(2026, 3, 27, 8), utc(2026, 3, 30, 8))
    assert len(missed) == 72
    assert missed == run(hourly, utc(2026, 3, 27, 8), 72)


def test_slots_between_bounds() -> None:
    cadence = make_cadence("daily", at="07:30")
    # Both ends: exclusive of after, inclusive of until.
    assert slots_between(cadence, utc(2026, 1, 1, 7, 30), utc(2026, 1, 3, 7, 30)) == [
        utc(2026, 1, 2, 7, 30),
        utc(2026, 1, 3, 7, 30),
    ]
    assert slots_between(cadence, utc(2026, 1, 2), utc(2026, 1, 1)) == []
    assert slots_between(cadence, utc(2026, 1, 1, 8), utc(2026, 1, 2, 7)) == []


def test_slots_between_keeps_the_most_recent_when_over_the_limit() -> None:
    cadence = make_cadence("cron", cron="*/15 * * * *")
    slots = slots_between(cadence, utc(2026, 1, 1), utc(2026, 1, 3), limit=10)
    assert slots == [utc(2026, 1, 2, 21, 45) + timedelta(minutes=15 * i) for i in range(10)]
    assert len(slots_between(cadence, utc(2026, 1, 1), utc(2026, 1, 3))) == 100
    with pytest.raises(ValueError, match="limit"):
        slots_between(cadence, utc(2026, 1, 1), utc(2026, 1, 3), limit=0)


# --- upcoming slots and their notes (SPEC §12) --------------------------------------


def listed(cadence: Cadence, start: datetime, count: int) -> list[tuple[str, str | None]]:
    return [
        (slot.local.isoformat(timespec="minutes"), slot.note)
        for slot in upcoming_slots(cadence, start, count)
    ]


def test_a_time_in_the_spring_forward_gap_is_named() -> None:
    cadence = make_cadence("daily", tz=BERLIN, at="02:30")

    assert listed(cadence, utc(2027, 3, 27, 0), 3) == [
        ("2027-03-27T02:30+01:00", None),
        ("2027-03-28T03:00+02:00",
         "02:30 does not exist on 2027-03-28 in Europe/Berlin: runs at 03:00 CEST"),
        ("2027-03-29T02:30+02:00", None),
    ]  # fmt: skip


def test_a_time_repeated_by_the_fall_back_is_named() -> None:
    cadence = make_cadence("daily", tz=NEW_YORK, at="01:30")

    assert listed(cadence, utc(2026, 11, 1, 0), 2) == [
        ("2026-11-01T01:30-04:00",
         "01:30 occurs twice on 2026-11-01 in America/New_York: runs at the first, EDT"),
        ("2026-11-02T01:30-05:00", None),
    ]  # fmt: skip


def test_a_day_past_the_month_end_is_named() -> None:
    cadence = make_cadence("monthly", tz="UTC", at="07:00", day="31")
    last = make_cadence("monthly", tz="UTC", at="07:00", day="last")

    assert listed(cadence, utc(2027, 1, 31, 8), 2) == [
        ("2027-02-28T07:00+00:00", "2027-02 has no day 31: runs on its last day, 2027-02-28"),
        ("2027-03-31T07:00+00:00", None),
    ]
    assert [note for _, note in listed(last, utc(2027, 1, 1), 3)] == [None, None, None]


def test_cron_times_sharing_the_gap_are_one_slot_named_once() -> None:
    cadence = make_cadence("cron", tz=BERLIN, cron="*/20 2,3 * * *")

    assert listed(cadence, utc(2027, 3, 28, 0), 3) == [
        ("2027-03-28T03:00+02:00",
         "02:00 does not exist on 2027-03-28 in Europe/Berlin: runs at 03:00 CEST"),
        ("2027-03-28T03:20+02:00", None),
        ("2027-03-28T03:40+02:00", None),
    ]  # fmt: skip


def test_upcoming_slots_start_at_the_start_inclusive() -> None:
    cadence = make_cadence("daily", tz="UTC", at="07:00")

    assert upcoming_slots(cadence, utc(2027, 1, 1, 7), 1)[0].utc == utc(2027, 1, 1, 7)
    assert upcoming_slots(cadence, utc(2027, 1, 1, 7, 1), 1)[0].utc == utc(2027, 1, 2, 7)


@pytest.mark.parametrize("count", [0, -1, 1001])
def test_upcoming_slots_count_is_bounded(count: int) -> None:
    with pytest.raises(ValidationError, match="1 to 1000"):
        upcoming_slots(make_cadence("daily", at="07:00"), utc(2027, 1, 1), count)


@pytest.mark.parametrize(
    "options",
    [
        {"kind": "daily", "at": "07:00"},
        {"kind": "monthly", "at": "07:00", "day": "31"},
        {"kind": "weekly", "at": "07:00", "weekday": "mon"},
        {"kind": "cron", "cron": "0 * * * *"},
        {"kind": "daily", "at": "07:00", "tz": "Pacific/Kiritimati"},
    ],
)
def test_slots_end_with_the_last_year_a_datetime_holds(options: dict[str, str]) -> None:
    # `schedules next --from 9998-12-30` (a start the CLI accepts) crashed with
    # "OverflowError: date value out of range" once the slots reached year 10000.
    kind = options.pop("kind")
    cadence = make_cadence(kind, **options)
    start = datetime(9999, 12, 1, tzinfo=UTC)
    slots = upcoming_slots(cadence, start, 1_000)
    assert 0 < len(slots) < 1_000
    assert all(start <= s.utc < datetime(9999, 12, 31, 23, 59, tzinfo=UTC) for s in slots)
    with pytest.raises(ValidationError, match="has no slot after"):
        next_slot(cadence, datetime(9999, 12, 31, 23, 59, tzinfo=UTC))
