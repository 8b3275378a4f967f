"""Cadences: when a schedule is due, as UTC slots (SPEC §3).

A cadence names a set of local wall-clock times in its zone: daily at 07:30, the
matches of a cron expression, and so on. Each wall time ``w`` becomes one slot, the
first UTC instant whose local time is ``>= w``. That one rule gives the DST
behaviour for every kind: a time that occurs twice runs once, at its first
occurrence; a time skipped by a spring-forward gap runs at the first instant after
the gap. Wall times that land on the same instant (several in one gap) are one slot,
because slots are keyed by their UTC instant. The mapping never goes backwards, so
slots come out in the order of their wall times.

cronsim parses cron expressions and enumerates their matches on naive (zone-less)
wall-clock time; its own DST handling is not used because it only partly follows
the rule. For expressions with a fixed minute and hour it behaves like classic
cron, as we do (02:30 on a spring-forward night runs at 03:00, the repeated 02:30
runs once). For expressions whose minute or hour field starts with ``*`` it steps
through real instants instead: ``*/30 * * * *`` fires in both occurrences of the
repeated hour, and ``15 * * * *`` never runs the skipped 02:15. Here each wall time
runs once and the skipped 02:15 runs at 03:00.
"""

from __future__ import annotations

import calendar
import itertools
import math
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Literal, get_args
from zoneinfo import ZoneInfo

from cronsim import CronSim, CronSimError

from schedctl.errors import ValidationError
from schedctl.values import (
    WEEKDAYS,
    check_instant_range,
    parse_day,
    parse_hhmm,
    parse_local_or_instant,
    parse_timezone,
    parse_weekday,
)
from schedctl.vocabulary import MAX_LISTED_SLOTS

Kind = Literal["daily", "weekly", "monthly", "cron"]
Day = int | Literal["last"]

KINDS: tuple[Kind, ...] = get_args(Kind)
_ONE_SECOND = timedelta(seconds=1)
_ONE_MICROSECOND = timedelta(microseconds=1)
_ONE_DAY = timedelta(days=1)
_UTC_ZONE = ZoneInfo("UTC")


# --- instants in a zone -----------------------------------------------------------


def parse_instant(text: str, zone: ZoneInfo | None = None) -> datetime:
    """Parse an ISO 8601 instant; returns aware UTC.

    One without an offset is a wall time in ``zone`` (UTC when there is none), read by
    the DST rule above: a time skipped by a spring-forward gap means the first instant
    after the gap, a repeated one its first occurrence.
    """
    return to_instant(parse_local_or_instant(text), zone or _UTC_ZONE)


def to_instant(value: datetime, zone: ZoneInfo) -> datetime:
    """An aware value as UTC; a naive wall time as its instant in ``zone`` (§3's rule)."""
    if value.tzinfo is not None:
        return value.astimezone(UTC)
    instant = first_instant_at_or_after(value, zone)
    check_instant_range(instant, value.isoformat())
    return instant


def wall_time_note(wall: datetime, zone: ZoneInfo) -> str | None:
    """Why a naive wall time does not name exactly one instant in ``zone``, or None."""
    found = dst_adjustment(wall, zone)
    if found is None:
        return None
    kind, local = found
    if kind == "gap":
        return (
            f"{wall:%Y-%m-%d %H:%M} does not exist in {zone.key} (the clocks go forward);"
            f" using {local:%H:%M %Z}, the first instant after the gap"
        )
    return (
        f"{wall:%Y-%m-%d %H:%M} occurs twice in {zone.key} (the clocks go back);"
        f" using the first, {local:%H:%M %Z}"
    )


def _parse_cron(expr: str) -> str:
    """Check a 5-field cron expression; return it with single spaces."""
    fields = expr.split()
    if len(fields) != 5:
        raise ValidationError(
            f"invalid cron expression {expr!r}: expected 5 fields (minute hour "
            f"day-of-month month day-of-week), got {len(fields)}"
        )
    normalised = " ".join(fields)
    try:
        # cronsim stops after 50 years without a match; such an expression never runs.
        next(CronSim(normalised, datetime(2000, 1, 1)))
    except CronSimError as exc:
        raise ValidationError(f"invalid cron expression {expr!r}: {exc}") from None
    except StopIteration:
        raise ValidationError(f"invalid cron expression {expr!r}: it never matches") from None
    return normalised


# --- the cadence ------------------------------------------------------------------


@dataclass(frozen=True)
class Cadence:
    """When a schedule is due, in its IANA zone ``tz``. Validated on construction."""

    kind: Kind
    tz: str = "UTC"
    at: time | None = None
    weekday: int | None = None
    day: Day | None = None
    cron: str | None = None

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValidationError(
                f"invalid cadence {self.kind!r} (expected daily, weekly, monthly or cron)"
            )
        parse_timezone(self.tz)
        needed = {
            "daily": {"at"},
            "weekly": {"at", "weekday"},
            "monthly": {"at", "day"},
            "cron": {"cron"},
        }[self.kind]
        for option in ("at", "weekday", "day", "cron"):
            given = getattr(self, option) is not None
            if option in needed and not given:
                raise ValidationError(f"a {self.kind} cadence needs --{option}")
            if given and option not in needed:
                raise ValidationError(f"--{option} does not apply to a {self.kind} cadence")
        if self.at is not None and self.at.tzinfo is not None:
            raise ValidationError(f"invalid time {self.at!r} (expected a local time)")
        if self.weekday is not None and self.weekday not in range(7):
            raise ValidationError(f"invalid weekday {self.weekday!r} (expected 0..6)")
        if self.day is not None and self.day != "last" and self.day not in range(1, 32):
            raise ValidationError(f"invalid day {self.day!r} (expected 1..31 or last)")
        if self.cron is not None:
            # Normalised so that equal expressions compare and describe alike.
            object.__setattr__(self, "cron", _parse_cron(self.cron))

    @property
    def zone(self) -> ZoneInfo:
        """The cadence's time zone (zoneinfo caches instances by name)."""
        return ZoneInfo(self.tz)

    def describe(self) -> str:
        """A one-line human description, e.g. ``daily at 07:30 Europe/Berlin``."""
        at = f"at {self.at:%H:%M}" if self.at is not None else ""
        if self.kind == "daily":
            return f"daily {at} {self.tz}"
        if self.kind == "weekly":
            assert self.weekday is not None
            return f"weekly on {WEEKDAYS[self.weekday]} {at} {self.tz}"
        if self.kind == "monthly":
            return f"monthly on day {self.day} {at} {self.tz}"
        return f"cron {self.cron!r} {self.tz}"


def make_cadence(
    kind: str,
    *,
    tz: str = "UTC",
    at: str | None = None,
    weekday: str | None = None,
    day: str | None = None,
    cron: str | None = None,
) -> Cadence:
    """Build a cadence from raw CLI strings, raising ValidationError on bad input."""
    known = [k for k in KINDS if k == kind.strip().lower()]
    if not known:
        raise ValidationError(f"invalid cadence {kind!r} (expected daily, weekly, monthly or cron)")
    return Cadence(
        kind=known[0],
        tz=tz,
        at=None if at is None else parse_hhmm(at),
        weekday=None if weekday is None else parse_weekday(weekday),
        day=None if day is None else parse_day(day),
        cron=cron,
    )


# --- slots ------------------------------------------------------------------------


def slots_after(cadence: Cadence, after: datetime) -> Iterator[tuple[datetime, datetime]]:
    """The slots strictly after ``after`` (aware), oldest first, each with the wall
    time it is the slot of: ``(slot as UTC, wall time)``.

    Wall times that land on one instant (several in a DST gap) are one slot, listed
    with the first of them; :func:`next_slot` is this listing's first slot, so
    `schedules next` shows exactly the slots tick runs.
    """
    after = _as_utc(after, "after")
    zone = cadence.zone
    previous: datetime | None = None
    # A wall time at or before after's own wall time maps to an instant <= after, so
    # the search starts there; walls of a repeated hour may still map back before it.
    try:
        for wall in _walls_after(cadence, _wall_time(after, zone)):
            slot = first_instant_at_or_after(wall, zone)
            if slot > after and slot != previous:
                previous = slot
                yield slot, wall
    except (OverflowError, ValueError):
        return  # past year 9999, the last a datetime holds: there are no more slots


def next_slot(cadence: Cadence, after: datetime) -> datetime:
    """The first slot strictly after ``after`` (aware), as an aware UTC datetime."""
    for slot, _ in slots_after(cadence, after):
        return slot
    raise ValidationError(f"{cadence.describe()} has no slot after {after.isoformat()}")


@dataclass(frozen=True)
class PlannedSlot:
    """A slot as `schedules next` lists it: the instant, its local time in the
    cadence's zone, and the adjustment §3's rules made to reach it (or None)."""

    utc: datetime
    local: datetime
    note: str | None

    def as_dict(self) -> dict[str, object]:
        return {"local": self.local, "utc": self.utc, "note": self.note}


def upcoming_slots(cadence: Cadence, start: datetime, count: int) -> list[PlannedSlot]:
    """The first ``count`` slots at or after ``start`` (aware), oldest first."""
    if not 1 <= count <= MAX_LISTED_SLOTS:
        raise ValidationError(f"invalid count {count} (1 to {MAX_LISTED_SLOTS})")
    zone = cadence.zone
    found = itertools.islice(
        slots_after(cadence, _as_utc(start, "start") - _ONE_MICROSECOND), count
    )
    return [
        PlannedSlot(slot, slot.astimezone(zone), slot_note(cadence, wall)) for slot, wall in found
    ]


def slot_note(cadence: Cadence, wall: datetime) -> str | None:
    """The adjustment §3's rules make to a slot's wall time (from :func:`slots_after`),
    as one sentence, or None: a day past the month's end, a time a DST change skips
    or repeats."""
    notes = []
    if isinstance(cadence.day, int) and wall.day != cadence.day:
        notes.append(
            f"{wall:%Y-%m} has no day {cadence.day}: runs on its last day, {wall:%Y-%m-%d}"
        )
    adjusted = dst_note(wall, cadence.zone)
    if adjusted is not None:
        notes.append(adjusted)
    return "; ".join(notes) or None


def latest_slot_at_or_before(cadence: Cadence, instant: datetime) -> datetime | None:
    """The most recent slot at or before ``instant`` (aware), or None if there is none."""
    instant = _as_utc(instant, "instant")
    zone = cadence.zone
    for wall in _walls_at_or_before(cadence, _wall_bound(instant, zone)):
        slot = first_instant_at_or_after(wall, zone)
        if slot <= instant:
            return slot
    return None


def slots_between(
    cadence: Cadence, after: datetime, until: datetime, limit: int = 100
) -> list[datetime]:
    """All slots ``s`` with ``after < s <= until``, oldest first, as UTC.

    If there are more than ``limit``, only the most recent ``limit`` are returned
    (still oldest first): catching up after a long outage should end at the present,
    not stop ``limit`` slots into the past.
    """
    after = _as_utc(after, "after")
    until = _as_utc(until, "until")
    if limit < 1:
        raise ValueError(f"limit must be positive, got {limit}")
    zone = cadence.zone
    newest_first: list[datetime] = []
    if until <= after:
        return newest_first
    for wall in _walls_at_or_before(cadence, _wall_bound(until, zone)):
        slot = first_instant_at_or_after(wall, zone)
        if slot > until:
            continue
        if slot <= after:
            break
        if newest_first and newest_first[-1] == slot:
            continue  # several wall times in one DST gap share one slot
        newest_first.append(slot)
        if len(newest_first) == limit:
            break
    newest_first.reverse()
    return newest_first


# --- offset changes ------------------------------------------------------------------


@dataclass(frozen=True)
class OffsetChange:
    """A zone's UTC offset changes at ``at`` (UTC) from ``before`` to ``after``."""

    at: datetime
    before: timedelta
    after: timedelta


def offset_changes(zone: ZoneInfo, start: datetime, until: datetime) -> list[OffsetChange]:
    """The changes of ``zone``'s UTC offset in (start, until], oldest first.

    Found by comparing offsets a day apart and bisecting to the second: zones change
    their offset at most a few times a year, never twice within a day.
    """
    start, until = _as_utc(start, "start"), _as_utc(until, "until")
    changes: list[OffsetChange] = []
    low, low_offset = start, _offset(start, zone)
    while low < until:
        high = min(low + _ONE_DAY, until)
        high_offset = _offset(high, zone)
        if high_offset != low_offset:
            first, last = math.floor(low.timestamp()), math.ceil(high.timestamp())
            while last - first > 1:  # the first second showing the new offset
                middle = (first + last) // 2
                if _offset(datetime.fromtimestamp(middle, UTC), zone) == low_offset:
                    first = middle
                else:
                    last = middle
            changes.append(OffsetChange(datetime.fromtimestamp(last, UTC), low_offset, high_offset))
        low, low_offset = high, high_offset
    return changes


def _offset(instant: datetime, zone: ZoneInfo) -> timedelta:
    offset = instant.astimezone(zone).utcoffset()
    assert offset is not None
    return offset


# --- what the DST rule adjusts (SPEC §12) ------------------------------------------

DstKind = Literal["gap", "overlap"]


def dst_adjustment(wall: datetime, zone: ZoneInfo) -> tuple[DstKind, datetime] | None:
    """Whether §3's rule adjusts the naive wall time ``wall`` in ``zone``: ``("gap",
    local)`` when it does not exist (it runs at ``local``, the first instant after the
    gap), ``("overlap", local)`` when it occurs twice (it runs at the first), else None.
    """
    instant = first_instant_at_or_after(wall, zone)
    local = instant.astimezone(zone)
    if _wall_time(instant, zone) != wall:
        return "gap", local
    if wall.replace(tzinfo=zone, fold=1).astimezone(UTC) != instant:
        return "overlap", local
    return None


def dst_note(wall: datetime, zone: ZoneInfo) -> str | None:
    """The adjustment §3's rule makes to a slot's wall time, in one sentence, or None.

    "02:30 does not exist on 2027-03-28 in Europe/Berlin: runs at 03:00 CEST";
    "01:30 occurs twice on 2026-11-01 in America/New_York: runs at the first, EDT".
    """
    found = dst_adjustment(wall, zone)
    if found is None:
        return None
    kind, local = found
    if kind == "gap":
        return (
            f"{wall:%H:%M} does not exist on {wall:%Y-%m-%d} in {zone.key}:"
            f" runs at {local:%H:%M %Z}"
        )
    return (
        f"{wall:%H:%M} occurs twice on {wall:%Y-%m-%d} in {zone.key}: runs at the first, {local:%Z}"
    )


def dst_adjustments(
    cadence: Cadence, start: datetime, until: datetime
) -> Iterator[tuple[DstKind, str]]:
    """The cadence's wall times in (start, until] that a DST change (or any offset
    change) skips ("gap") or repeats ("overlap"), with their notes, oldest first."""
    zone = cadence.zone
    for change in offset_changes(zone, start, until):
        local = change.at.replace(tzinfo=None)
        kind: DstKind = "gap" if change.after > change.before else "overlap"
        # The wall times that do not exist, or that occur twice: a half-open range.
        low = local + min(change.before, change.after)
        high = local + max(change.before, change.after)
        for wall in _walls_after(cadence, low - _ONE_MICROSECOND):
            if wall >= high:
                break
            note = dst_note(wall, zone)
            if note is not None:
                yield kind, note


def dst_warnings(cadence: Cadence, start: datetime, until: datetime) -> list[str]:
    """The first gap note and the first overlap note in (start, until], if any: what
    `schedules create/update` warn about, once per kind."""
    first: dict[DstKind, str] = {}
    for kind, note in dst_adjustments(cadence, start, until):
        first.setdefault(kind, note)
        if len(first) == 2:
            break
    return list(first.values())


# --- zone data changes --------------------------------------------------------------


def reread_slot(cadence: Cadence, slot: datetime) -> datetime:
    """The slot that ``slot``, computed under other zone data, names under the data
    now loaded; ``slot`` itself when it is a slot under this data too.

    A slot is the instant of one of the cadence's wall times. If the zone's offset
    differs between the two releases of the data (Asia/Almaty moved from UTC+6 to
    UTC+5 on 2024-03-01), that instant now shows another local time; the wall time it
    was computed for is the cadence's wall time nearest to that local time (the later
    one on a tie): offsets change by an hour or two, far less than the time between
    two of a daily, weekly or monthly cadence's wall times. Its slot under the
    current data is returned.
    """
    slot = _as_utc(slot, "slot")
    if latest_slot_at_or_before(cadence, slot) == slot:
        return slot
    zone = cadence.zone
    shown = _wall_time(slot, zone)
    before = next(_walls_at_or_before(cadence, shown), None)
    after = next(_walls_after(cadence, shown), None)
    if before is None or (after is not None and after - shown <= shown - before):
        nearest = after
    else:
        nearest = before
    if nearest is None:
        raise ValidationError(f"{cadence.describe()} has no slot near {slot.isoformat()}")
    return first_instant_at_or_after(nearest, zone)


# --- wall-clock arithmetic --------------------------------------------------------


def _as_utc(instant: datetime, name: str) -> datetime:
    if instant.tzinfo is None or instant.utcoffset() is None:
        raise ValueError(f"{name} must be an aware datetime, got {instant!r}")
    return instant.astimezone(UTC)


def _wall_time(instant: datetime, zone: ZoneInfo) -> datetime:
    """The naive local wall-clock time of an instant."""
    return instant.astimezone(zone).replace(tzinfo=None, fold=0)


def _wall_bound(instant: datetime, zone: ZoneInfo) -> datetime:
    """A wall time at or above every wall time shown on the clock up to ``instant``.

    In the second pass of a repeated hour the clock has already shown later wall
    times (the rest of the first pass), so the bound is raised by the fold's length.
    """
    local = instant.astimezone(zone)
    bound = local.replace(tzinfo=None, fold=0)
    if local.fold:
        first_offset = local.replace(fold=0).utcoffset()
        second_offset = local.utcoffset()
        assert first_offset is not None
        assert second_offset is not None
        bound += first_offset - second_offset
    return bound


def first_instant_at_or_after(wall: datetime, zone: ZoneInfo) -> datetime:
    """The first UTC instant whose local time in ``zone`` is at or after ``wall``."""
    # fold=0 is the first occurrence of a repeated time; for a time in a gap it uses
    # the offset before the gap, which lands after the gap.
    earliest = wall.replace(tzinfo=zone, fold=0).astimezone(UTC)
    if _wall_time(earliest, zone) == wall:
        return earliest
    # In a gap: the answer is the transition, between the fold=1 reading (before the
    # gap) and the fold=0 one. Transitions fall on whole seconds.
    low = math.floor(wall.replace(tzinfo=zone, fold=1).timestamp())
    high = math.ceil(earliest.timestamp())
    while high - low > 1:
        middle = (low + high) // 2
        if _wall_time(datetime.fromtimestamp(middle, UTC), zone) >= wall:
            high = middle
        else:
            low = middle
    return datetime.fromtimestamp(high, UTC)


def _walls_after(cadence: Cadence, wall: datetime) -> Iterator[datetime]:
    """The cadence's wall times strictly after ``wall``, ascending."""
    if cadence.cron is not None:
        # A naive start makes cronsim count plain wall-clock time with no DST fix-ups.
        yield from CronSim(cadence.cron, wall.replace(tzinfo=None))
        return
    assert cadence.at is not None
    current = _date_on_or_after(cadence, wall.date())
    while True:
        candidate = datetime.combine(current, cadence.at)
        if candidate > wall:
            yield candidate
        current = _date_on_or_after(cadence, current + timedelta(days=1))


def _walls_at_or_before(cadence: Cadence, wall: datetime) -> Iterator[datetime]:
    """The cadence's wall times at or before ``wall``, descending."""
    if cadence.cron is not None:
        # Reverse cronsim yields times strictly before its start; matches are whole
        # seconds, so starting a second after the truncated wall includes ``wall``.
        start = wall.replace(tzinfo=None, microsecond=0) + _ONE_SECOND
        yield from CronSim(cadence.cron, start, reverse=True)
        return
    assert cadence.at is not None
    current = _date_on_or_before(cadence, wall.date())
    while current is not None:
        candidate = datetime.combine(current, cadence.at)
        if candidate <= wall:
            yield candidate
        if current == date.min:
            return
        current = _date_on_or_before(cadence, current - timedelta(days=1))


def _month_day(cadence: Cadence, year: int, month: int) -> date:
    """The cadence's day in a month; a day past the month's end is its last day."""
    last = calendar.monthrange(year, month)[1]
    day = cadence.day
    return date(year, month, min(day, last) if isinstance(day, int) else last)


def _date_on_or_after(cadence: Cadence, start: date) -> date:
    if cadence.kind == "weekly":
        assert cadence.weekday is not None
        return start + timedelta(days=(cadence.weekday - start.weekday()) % 7)
    if cadence.kind == "monthly":
        candidate = _month_day(cadence, start.year, start.month)
        if candidate >= start:
            return candidate
        year, month = divmod(start.year * 12 + start.month, 12)  # the next month
        return _month_day(cadence, year, month + 1)
    return start


def _date_on_or_before(cadence: Cadence, start: date) -> date | None:
    if cadence.kind == "weekly":
        assert cadence.weekday is not None
        try:
            return start - timedelta(days=(start.weekday() - cadence.weekday) % 7)
        except OverflowError:
            return None
    if cadence.kind == "monthly":
        candidate = _month_day(cadence, start.year, start.month)
        if candidate <= start:
            return candidate
        if start.year == 1 and start.month == 1:
            return None
        year, month = divmod(start.year * 12 + start.month - 2, 12)  # the previous month
        return _month_day(cadence, year, month + 1)
    return start
