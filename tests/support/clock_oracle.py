"""An independent model of §3's local-time rules and the catch-up policies, for the
tests that drive `tick` and `digest` through time (SCHEDCTL_NOW).

Nothing here calls schedctl's cadence code: a local wall time is turned into its
instant with zoneinfo alone (a repeated time at its first occurrence, a time in a
spring-forward gap at the first instant after the gap), and the catch-up rules are
written from the README ("Schedules and tick").
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from datetime import time as clock
from zoneinfo import ZoneInfo

NONE_GRACE = timedelta(minutes=15)  # README: `none` still runs a slot at most 15 min old
MAX_CATCHUP = 100  # README: `all` runs at most 100 missed slots


def due_instant(zone: ZoneInfo, day: date, at: str) -> datetime:
    """When local `at` on local `day` happens, by §3's rules, independently of
    schedctl's code: a repeated time is due at its first occurrence, a time in a
    spring-forward gap at the first instant after the gap."""
    wall = datetime.combine(day, clock.fromisoformat(at))
    instant = wall.replace(tzinfo=zone, fold=0).astimezone(UTC)
    if instant.astimezone(zone).replace(tzinfo=None) == wall:
        return instant  # exists; fold=0 is the first occurrence of a repeated time
    while (instant - timedelta(minutes=1)).astimezone(zone).replace(tzinfo=None) >= wall:
        instant -= timedelta(minutes=1)
    return instant


@dataclass(frozen=True)
class LocalCadence:
    """``daily`` at HH:MM, or ``hourly`` at minute MM (cron ``MM * * * *``), in a zone."""

    tz: str
    at: str  # HH:MM (daily) or :MM (hourly)

    @property
    def hourly(self) -> bool:
        return self.at.startswith(":")

    def walls(self, day: date) -> list[str]:
        if self.hourly:
            return [f"{hour:02d}{self.at}" for hour in range(24)]
        return [self.at]

    def slots(self, start: datetime, end: datetime) -> list[datetime]:
        """Every slot in [start, end], oldest first, each instant once."""
        zone = ZoneInfo(self.tz)
        first = start.astimezone(zone).date() - timedelta(days=1)
        last = end.astimezone(zone).date() + timedelta(days=1)
        found: set[datetime] = set()
        day = first
        while day <= last:
            for wall in self.walls(day):
                instant = due_instant(zone, day, wall)
                if start <= instant <= end:
                    found.add(instant)
            day += timedelta(days=1)
        return sorted(found)

    def next_after(self, instant: datetime) -> datetime:
        window = timedelta(days=2)
        while True:
            later = [s for s in self.slots(instant, instant + window) if s > instant]
            if later:
                return later[0]
            window *= 2


@dataclass
class ScheduleModel:
    """One schedule's runs as the README's rules decide them, tick by tick."""

    cadence: LocalCadence
    catchup: str  # latest | all | none
    max_lateness: timedelta | None
    created: datetime
    next_run_at: datetime = field(init=False)
    runs: dict[datetime, str] = field(default_factory=dict)  # slot -> succeeded | skipped

    def __post_init__(self) -> None:
        self.next_run_at = self.cadence.next_after(self.created)

    def tick(self, now: datetime) -> None:
        if now < self.next_run_at:
            return  # not due (also after the clock went back)
        missed = self.cadence.slots(self.next_run_at, now)[-MAX_CATCHUP:]
        for slot in missed:
            late = now - slot
            if self.max_lateness is not None and late > self.max_lateness:
                run = False
            elif self.catchup == "all":
                run = True
            elif slot != missed[-1]:
                run = False
            else:
                run = self.catchup == "latest" or late <= NONE_GRACE
            assert slot not in self.runs
            self.runs[slot] = "succeeded" if run else "skipped"
        self.next_run_at = self.cadence.next_after(now)
