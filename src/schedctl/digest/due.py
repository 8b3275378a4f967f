"""When a user's digest is due, and which local date it is for (pure; SPEC §5, §3)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta
from datetime import time as clock
from zoneinfo import ZoneInfo

from schedctl.cadence import first_instant_at_or_after
from schedctl.errors import ValidationError
from schedctl.values import parse_timezone

# Earliest and latest UTC offsets in use (UTC-12, UTC+14): the bounds of "today".
_WESTMOST = timedelta(hours=-12)
_EASTMOST = timedelta(hours=14)


# --- when a user is due (pure) -------------------------------------------------------


@dataclass(frozen=True)
class ZoneDay:
    """A zone's local day at the run's instant."""

    tz: str
    today: date
    cutoff: str | None  # the latest HH:MM due today; None: none is due yet
    catch_up: date | None  # an earlier local date still owed (catch_up_days), or None
    today_start: datetime  # the first instant of today, UTC


def _wall(day: date, minute: int) -> datetime:
    return datetime.combine(day, clock(minute // 60, minute % 60))


def due_cutoff(zone: ZoneInfo, day: date, now: datetime) -> str | None:
    """The latest ``HH:MM`` whose digest is due on local ``day`` at ``now``, or None.

    A time ``t`` is due once ``first_instant_at_or_after(day t) <= now`` (§3's DST
    rule); that instant never decreases as ``t`` grows, so due times are those up to
    a cutoff, found by binary search over the day's 1440 minutes.
    """
    low, high = -1, 24 * 60 - 1  # invariant: minute `low` is due (-1: none), beyond `high` not
    while low < high:
        middle = (low + high + 1) // 2
        if first_instant_at_or_after(_wall(day, middle), zone) <= now:
            low = middle
        else:
            high = middle - 1
    return None if low < 0 else f"{low // 60:02d}:{low % 60:02d}"


def zone_day(tz: str, now: datetime, catch_up_days: int = 0) -> ZoneDay | None:
    """The local day in zone ``tz`` at ``now``; None for a name zoneinfo cannot load."""
    try:
        zone = parse_timezone(tz)
    except ValidationError:
        return None
    today = now.astimezone(zone).date()
    return ZoneDay(
        tz=tz,
        today=today,
        cutoff=due_cutoff(zone, today, now),
        catch_up=today - timedelta(days=1) if catch_up_days >= 1 else None,
        today_start=first_instant_at_or_after(_wall(today, 0), zone),
    )


def check_date(value: date, now: datetime, catch_up_days: int, tz: str | None = None) -> None:
    """Refuse (exit 2) a --date that is no one's current local date (or, with
    ``catch_up_days``, the day before); with ``tz``, that zone's only."""
    if tz is not None:
        day = zone_day(tz, now, catch_up_days)
        allowed = {day.today, day.catch_up} - {None} if day else set()
        if value not in allowed:
            raise ValidationError(
                f"--date {value.isoformat()} is not the user's current local date"
                + (f" ({day.today.isoformat()} in {tz})" if day else "")
                + _catch_up_hint(catch_up_days)
            )
        return
    first = (now + _WESTMOST).date() - timedelta(days=catch_up_days)
    last = (now + _EASTMOST).date()
    if not first <= value <= last:
        raise ValidationError(
            f"--date {value.isoformat()} is not the current local date in any time zone"
            f" ({first.isoformat()} to {last.isoformat()} now){_catch_up_hint(catch_up_days)}"
        )


def _catch_up_hint(catch_up_days: int) -> str:
    if catch_up_days:
        return " (digests are sent for the current local day and the one before it)"
    return " (digests are sent for the current local day only; see [digest] catch_up_days)"
