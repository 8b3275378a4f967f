"""Property tests for schedctl.cadence over many zones and instants in 2024-2030.

Random instants rarely fall in a one-hour DST window, so half of them are drawn near
the zone's real offset changes.
"""

from __future__ import annotations

import itertools
from datetime import UTC, date, datetime, time, timedelta
from functools import cache
from zoneinfo import ZoneInfo

from cronsim import CronSim
from hypothesis import example, given, settings
from hypothesis import strategies as st

from schedctl.cadence import (
    Cadence,
    latest_slot_at_or_before,
    next_slot,
    slots_between,
    upcoming_slots,
)

ZONES = [
    "UTC",
    "Europe/Berlin",
    "Europe/London",
    "America/New_York",
    "America/St_Johns",
    "America/Sao_Paulo",
    "America/Santiago",
    "Australia/Lord_Howe",
    "Australia/Adelaide",
    "Pacific/Chatham",
    "Pacific/Apia",
    "Asia/Kolkata",
    "Asia/Kathmandu",
    "Asia/Tehran",
    "Africa/Cairo",
]
CRONS = [
    "30 2 * * *",
    "*/30 * * * *",
    "15 * * * *",
    "0,30 1-3 * * *",
    "*/20 0-3 * * sun",
    "45 23 * * 5",
    "0 0 1,15 * *",
    "10 2 L * *",
    "0 */6 * * *",
]
START = datetime(2024, 1, 1, tzinfo=UTC)
END = datetime(2030, 12, 31, tzinfo=UTC)
ONE_SECOND = timedelta(seconds=1)

fast = settings(max_examples=200, deadline=None)


@cache
def transitions(tz: str) -> tuple[datetime, ...]:
    """The instants in 2024-2030 at which the zone's UTC offset changes."""
    zone = ZoneInfo(tz)
    found = []
    day = START
    while day < END:
        nxt = day + timedelta(days=1)
        if day.astimezone(zone).utcoffset() != nxt.astimezone(zone).utcoffset():
            low, high = day, nxt
            while high - low > ONE_SECOND:
                middle = low + (high - low) / 2
                if middle.astimezone(zone).utcoffset() == low.astimezone(zone).utcoffset():
                    low = middle
                else:
                    high = middle
            found.append(high.replace(microsecond=0))
        day = nxt
    return tuple(found)


@st.composite
def cadences(
    draw: st.DrawFn, kinds: tuple[str, ...] = ("daily", "weekly", "monthly", "cron")
) -> Cadence:
    kind = draw(st.sampled_from(kinds))
    tz = draw(st.sampled_from(ZONES))
    if kind == "cron":
        return Cadence(kind="cron", tz=tz, cron=draw(st.sampled_from(CRONS)))
    # Hours 0-3 hold most DST changes, so they are drawn more often.
    hour = draw(st.one_of(st.integers(0, 3), st.integers(0, 23)))
    at = time(hour, draw(st.sampled_from([0, 15, 30, 45, draw(st.integers(0, 59))])))
    if kind == "daily":
        return Cadence(kind="daily", tz=tz, at=at)
    if kind == "weekly":
        return Cadence(kind="weekly", tz=tz, at=at, weekday=draw(st.integers(0, 6)))
    day = draw(st.one_of(st.integers(1, 31), st.just("last")))
    return Cadence(kind="monthly", tz=tz, at=at, day=day)


@st.composite
def instants(draw: st.DrawFn, tz: str) -> datetime:
    """An aware UTC instant in 2024-2030, often within a few hours of a DST change."""
    near = transitions(tz)
    use_near = draw(st.booleans())
    if near and use_near:
        base = draw(st.sampled_from(near))
        return base + timedelta(seconds=draw(st.integers(-2 * 3600, 2 * 3600)))
    naive = draw(st.datetimes(START.replace(tzinfo=None), END.replace(tzinfo=None)))
    return naive.replace(tzinfo=UTC)


@st.composite
def cadence_and_instant(draw: st.DrawFn, kinds: tuple[str, ...] = ()) -> tuple[Cadence, datetime]:
    cadence = draw(cadences(kinds) if kinds else cadences())
    return cadence, draw(instants(cadence.tz))


@st.composite
def near_dst_change(draw: st.DrawFn) -> tuple[Cadence, datetime]:
    """A cadence whose wall times fall around a DST change, and an instant near it."""
    tz = draw(st.sampled_from([zone for zone in ZONES if transitions(zone)]))
    change = draw(st.sampled_from(transitions(tz)))
    instant = change + timedelta(seconds=draw(st.integers(-2 * 3600, 2 * 3600)))
    if draw(st.booleans()):
        cron = draw(st.sampled_from(["*/30 * * * *", "15 * * * *", "*/20 0-3 * * sun"]))
        return Cadence(kind="cron", tz=tz, cron=cron), instant
    # A daily time the clock shows (or skips) within a couple of hours of the change.
    near = change + timedelta(minutes=draw(st.integers(-120, 120)))
    at = wall(near, ZoneInfo(tz)).time().replace(second=0, microsecond=0)
    return Cadence(kind="daily", tz=tz, at=at), instant


def wall(instant: datetime, zone: ZoneInfo) -> datetime:
    return instant.astimezone(zone).replace(tzinfo=None, fold=0)


def first_occurrence(local: datetime, zone: ZoneInfo) -> datetime:
    return local.replace(tzinfo=zone, fold=0).astimezone(UTC)


def exists(local: datetime, zone: ZoneInfo) -> bool:
    return wall(first_occurrence(local, zone), zone) == local


def cron_matches(expr: str, local: datetime) -> bool:
    return next(CronSim(expr, local - ONE_SECOND)) == local


def assert_is_slot_for(cadence: Cadence, slot: datetime) -> None:
    """The slot is a configured wall time, or the first instant after a DST gap."""
    zone = cadence.zone
    local = wall(slot, zone)
    after_gap = wall(slot - ONE_SECOND, zone) + ONE_SECOND != local
    if cadence.cron is not None:
        if cron_matches(cadence.cron, local):
            assert slot == first_occurrence(local, zone)
        else:
            assert after_gap, f"{slot} is neither a match nor the end of a gap"
        return
    assert cadence.at is not None
    intended = datetime.combine(local.date(), cadence.at)
    if exists(intended, zone):
        assert local == intended
        assert slot == first_occurrence(intended, zone)
    else:
        # A skipped wall time runs at the first instant after the gap.
        assert after_gap
        assert wall(slot - ONE_SECOND, zone) < intended < local
    if cadence.weekday is not None:
        assert local.weekday() == cadence.weekday
    if cadence.day is not None:
        month_end = (local.date().replace(day=28) + timedelta(days=4)).replace(day=1)
        last = (month_end - timedelta(days=1)).day
        expected_day = last if cadence.day == "last" else min(cadence.day, last)
        assert local.day == expected_day


@fast
@given(cadence_and_instant())
def test_next_slot_is_strictly_later_utc_and_a_real_slot(case: tuple[Cadence, datetime]) -> None:
    cadence, after = case
    slot = next_slot(cadence, after)
    assert slot > after
    assert slot.tzinfo is UTC
    assert_is_slot_for(cadence, slot)
    assert latest_slot_at_or_before(cadence, slot) == slot


@fast
@given(cadence_and_instant())
def test_nothing_between_after_and_next_slot(case: tuple[Cadence, datetime]) -> None:
    cadence, after = case
    slot = next_slot(cadence, after)
    assert slots_between(cadence, after, slot) == [slot]
    assert slots_between(cadence, after, slot - timedelta(microseconds=1)) == []
    latest = latest_slot_at_or_before(cadence, after)
    assert latest is not None
    assert latest <= after
    assert next_slot(cadence, latest) == slot


@fast
@given(near_dst_change())
def test_latest_and_next_slot_around_dst_changes(case: tuple[Cadence, datetime]) -> None:
    cadence, instant = case
    latest = latest_slot_at_or_before(cadence, instant)
    upcoming = next_slot(cadence, instant)
    assert latest is not None
    assert latest <= instant < upcoming
    assert next_slot(cadence, latest) == upcoming
    assert_is_slot_for(cadence, latest)
    assert_is_slot_for(cadence, upcoming)
    day_before = instant - timedelta(days=1)
    expected = []
    slot = next_slot(cadence, day_before)
    while slot <= instant:
        expected.append(slot)
        slot = next_slot(cadence, slot)
    assert slots_between(cadence, day_before, instant) == expected
    assert latest == expected[-1] if expected else latest <= day_before


@fast
@given(st.data())
def test_next_slot_is_monotone(data: st.DataObject) -> None:
    cadence = data.draw(cadences())
    first, second = sorted(data.draw(instants(cadence.tz)) for _ in range(2))
    assert next_slot(cadence, first) <= next_slot(cadence, second)


@fast
@given(cadence_and_instant(), st.integers(60, 4 * 24 * 3600), st.integers(1, 50))
def test_slots_between_agrees_with_repeated_next_slot(
    case: tuple[Cadence, datetime], span_s: int, limit: int
) -> None:
    # ``until`` is the drawn instant, so it often falls in a DST change.
    cadence, until = case
    after = until - timedelta(seconds=span_s)
    expected = []
    slot = next_slot(cadence, after)
    while slot <= until:
        expected.append(slot)
        slot = next_slot(cadence, slot)
    slots = slots_between(cadence, after, until, limit=10_000)
    assert slots == expected
    assert all(earlier < later for earlier, later in itertools.pairwise(slots))
    for each in slots:
        assert_is_slot_for(cadence, each)
    # Over the limit, the most recent ones are kept.
    assert slots_between(cadence, after, until, limit=limit) == expected[-limit:]


@fast
@given(cadence_and_instant(kinds=("daily",)))
def test_daily_slots_fall_on_distinct_consecutive_local_dates(
    case: tuple[Cadence, datetime],
) -> None:
    cadence, after = case
    slots = slots_between(cadence, after, after + timedelta(days=40))
    dates = [wall(slot, cadence.zone).date() for slot in slots]
    assert len(dates) >= 39
    assert all(later - earlier == timedelta(days=1) for earlier, later in itertools.pairwise(dates))


@fast
@given(cadence_and_instant(kinds=("monthly",)))
@example(  # the 02:00 slot of 2027-10-31 is in summer time, 2028's is in winter time
    (
        Cadence(kind="monthly", tz="Europe/Berlin", at=time(2, 0), day=31),
        datetime(2027, 10, 31, 0, 59, 59, tzinfo=UTC),
    )
)
def test_monthly_never_skips_a_month(case: tuple[Cadence, datetime]) -> None:
    cadence, after = case
    # A year of wall time can last 366 days and an hour (a slot in summer time, the
    # next year's in winter time): 367 days hold twelve slots or thirteen.
    slots = slots_between(cadence, after, after + timedelta(days=367))
    months = [(d.year, d.month) for d in (wall(slot, cadence.zone).date() for slot in slots)]
    assert len(months) in (12, 13)
    assert months == sorted(set(months))
    assert all(
        date(*later, 1) - date(*earlier, 1) <= timedelta(days=31)
        for earlier, later in itertools.pairwise(months)
    )


@fast
@given(cadence_and_instant())
def test_upcoming_slots_are_the_slots_tick_materialises(case: tuple[Cadence, datetime]) -> None:
    """`schedules next` lists what tick's catch-up (slots_between) and next_slot give."""
    cadence, start = case
    listed = [slot.utc for slot in upcoming_slots(cadence, start, 12)]
    by_next_slot = [next_slot(cadence, start - timedelta(microseconds=1))]
    while len(by_next_slot) < len(listed):
        by_next_slot.append(next_slot(cadence, by_next_slot[-1]))

    assert listed == by_next_slot
    assert listed == slots_between(cadence, start - timedelta(microseconds=1), listed[-1])


@fast
@given(near_dst_change())
def test_a_slot_has_a_note_exactly_when_its_wall_time_was_adjusted(
    case: tuple[Cadence, datetime],
) -> None:
    cadence, start = case
    zone = cadence.zone
    for slot in upcoming_slots(cadence, start, 6):
        local = wall(slot.utc, zone)
        repeated = local.replace(tzinfo=zone, fold=1).astimezone(UTC) != slot.utc
        gap_start = wall(slot.utc - ONE_SECOND, zone) + ONE_SECOND  # == local: no gap
        if cadence.at is not None:
            intended = datetime.combine(local.date(), cadence.at)
            skipped = gap_start <= intended < local
        else:
            assert cadence.cron is not None
            skipped = next(CronSim(cadence.cron, gap_start - ONE_SECOND)) < local
        assert slot.local == slot.utc.astimezone(zone)
        if skipped:  # a wall time in the gap before it runs at this slot
            assert slot.note is not None
            assert "does not exist" in slot.note
        elif repeated:
            assert slot.note is not None
            assert "occurs twice" in slot.note
        else:
            assert slot.note is None
