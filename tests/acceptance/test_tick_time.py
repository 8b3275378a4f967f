"""`schedctl tick` as cron runs it, driven through time by SCHEDCTL_NOW (SPEC §3, §4).

The installed binary ticks every 30 minutes across a spring-forward and a fall-back
night in Europe/Berlin and America/New_York, at month ends for a monthly schedule on
day 31, and around a 3-day outage. Each test asserts the exact UTC slots that got a
run, that each was made by the first tick after its slot, and that each run that
succeeded left one REPORT message per recipient in the outbox (dispatch is off).

SQLite runs every case; PostgreSQL (timestamptz storage, another claim path) runs one
DST night and the outage, to keep the subprocess count modest.
"""

from __future__ import annotations

import calendar
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from schedctl.cadence import parse_instant
from schedctl.config import Settings, report_queries
from schedctl.db.database import Database
from schedctl.db.schema import messages, schedule_runs, schedules
from schedctl.schedules.model import ScheduleOptions
from schedctl.schedules.store import create_schedule

RECIPIENTS = ["a@example.com", "b@example.com"]
CONFIG = '[reports.queries.ping]\nsql = "select 1 as one"\n\n[messages]\nenabled = false\n'
TICK_EVERY = timedelta(minutes=30)
TICKS = 6  # per DST night: 30 minutes apart, from 1 h before the change to 1.5 h after
POSTGRES = pytest.mark.postgres


def utc(text: str) -> datetime:
    return parse_instant(text)


@dataclass(frozen=True)
class Run:
    schedule: str
    slot: datetime
    status: str
    created_at: datetime
    id: int


@dataclass
class Timeline:
    """One database, schedules made in-process, ticks by the installed binary."""

    db: Database
    settings: Settings
    tick_cli: Callable[[datetime], Any]
    ticks: list[datetime] = field(default_factory=list)
    outputs: list[dict[str, int]] = field(default_factory=list)

    def create(self, name: str, now: datetime, **options: Any) -> None:
        values: dict[str, Any] = {"kind": "sql", "to": RECIPIENTS, "params": ["query=ping"]}
        values.update(options)
        create_schedule(self.db, self.settings, 1, ScheduleOptions(name=name, **values), now)

    def tick(self, now: datetime) -> dict[str, int]:
        result = self.tick_cli(now)
        assert result.returncode == 0, (now, result.stderr)
        counts: dict[str, int] = json.loads(result.stdout)
        self.ticks.append(now)
        self.outputs.append(counts)
        return counts

    def runs(self) -> list[Run]:
        query = (
            sa.select(
                schedules.c.name,
                schedule_runs.c.slot,
                schedule_runs.c.status,
                schedule_runs.c.created_at,
                schedule_runs.c.id,
            )
            .join(schedules, schedules.c.id == schedule_runs.c.schedule_id)
            .order_by(schedules.c.name, schedule_runs.c.slot)
        )
        rows = self.db.transaction(lambda c: c.execute(query).all(), read_only=True)
        return [Run(*row) for row in rows]

    def slots(self, status: str = "succeeded") -> dict[str, list[datetime]]:
        found: dict[str, list[datetime]] = {}
        for run in self.runs():
            if run.status == status:
                found.setdefault(run.schedule, []).append(run.slot)
        return found

    def check_runs_and_messages(self) -> None:
        """Each run made by the first tick at or after its slot; one REPORT per
        recipient for each succeeded run, none for others; the ticks' JSON agrees."""
        all_runs = self.runs()
        for run in all_runs:
            first_tick = min(t for t in self.ticks if t >= run.slot)
            assert run.created_at == first_tick, run
        query = sa.select(messages.c.schedule_run_id, messages.c.recipient, messages.c.type)
        rows = self.db.transaction(lambda c: c.execute(query).all(), read_only=True)
        by_run: dict[int, list[str]] = {}
        for row in rows:
            assert row.type == "REPORT"
            by_run.setdefault(row.schedule_run_id, []).append(row.recipient)
        succeeded = {r.id for r in all_runs if r.status == "succeeded"}
        assert set(by_run) == succeeded
        assert all(sorted(recipients) == RECIPIENTS for recipients in by_run.values())
        total = {key: sum(o[key] for o in self.outputs) for key in self.outputs[0]}
        assert total["runs_created"] == total["runs_succeeded"] == len(succeeded)
        assert total["runs_skipped"] == sum(1 for r in all_runs if r.status == "skipped")
        assert total["messages_enqueued"] == len(rows) == len(succeeded) * len(RECIPIENTS)
        assert total["runs_failed"] == total["schedules_invalid"] == 0


@pytest.fixture
def timeline(cli: Any, db_url: str, tmp_path: Path) -> Iterator[Timeline]:
    config = tmp_path / "schedctl.toml"
    config.write_text(CONFIG)

    def tick_cli(now: datetime) -> Any:
        env = {"SCHEDCTL_CONFIG": str(config), "SCHEDCTL_NOW": now.isoformat()}
        return cli("tick", "--json", db_url=db_url, env=env)

    settings = Settings(
        database_url=db_url, reports_queries=report_queries({"ping": {"sql": "select 1"}})
    )
    with Database(db_url, environ={}) as db:
        yield Timeline(db, settings, tick_cli)


# --- DST nights ----------------------------------------------------------------------


@dataclass(frozen=True)
class Night:
    """Schedules created at ``created``; TICKS ticks, 30 minutes apart, from ``first_tick``."""

    tz: str
    created: str
    first_tick: str
    # name -> (options, the UTC slots §3 prescribes within the ticks' window)
    schedules: dict[str, tuple[dict[str, Any], list[str]]]


def _daily(at: str) -> dict[str, Any]:
    return {"cadence": "daily", "at": at}


def _weekly_sunday(at: str) -> dict[str, Any]:
    return {"cadence": "weekly", "weekday": "sun", "at": at}


def _cron(expression: str) -> dict[str, Any]:
    return {"cadence": "cron", "cron": expression}


def _every_30_min(first: str, count: int, *, skip: tuple[str, ...] = ()) -> list[str]:
    start = utc(first)
    instants = [(start + TICK_EVERY * n).strftime("%Y-%m-%dT%H:%MZ") for n in range(count)]
    return [i for i in instants if i[11:16] not in skip]


NIGHTS = {
    # 02:00 CET -> 03:00 CEST (01:00Z): 02:00-02:59 do not exist and run at 03:00 CEST.
    "berlin-spring": Night(
        "Europe/Berlin",
        created="2026-03-28T23:45Z",
        first_tick="2026-03-29T00:01Z",
        schedules={
            "daily 01:30": (_daily("01:30"), ["2026-03-29T00:30Z"]),
            "daily 02:30": (_daily("02:30"), ["2026-03-29T01:00Z"]),
            "daily 03:30": (_daily("03:30"), ["2026-03-29T01:30Z"]),
            "weekly sun 02:00": (_weekly_sunday("02:00"), ["2026-03-29T01:00Z"]),
            "cron 30 2": (_cron("30 2 * * *"), ["2026-03-29T01:00Z"]),
            # Local 02:00, 02:30 and 03:00 are one instant: no UTC half hour is lost.
            "cron */30": (_cron("*/30 * * * *"), _every_30_min("2026-03-29T00:00Z", TICKS)),
        },
    ),
    # 03:00 CEST -> 02:00 CET (01:00Z): 02:00-02:59 happen twice; they run at the first.
    "berlin-fall": Night(
        "Europe/Berlin",
        created="2026-10-24T23:45Z",
        first_tick="2026-10-25T00:01Z",
        schedules={
            "daily 02:00": (_daily("02:00"), ["2026-10-25T00:00Z"]),
            "daily 02:30": (_daily("02:30"), ["2026-10-25T00:30Z"]),
            "daily 03:30": (_daily("03:30"), ["2026-10-25T02:30Z"]),  # CET
            "weekly sun 02:30": (_weekly_sunday("02:30"), ["2026-10-25T00:30Z"]),
            "cron 30 2": (_cron("30 2 * * *"), ["2026-10-25T00:30Z"]),
            # The second 02:00 and 02:30 (01:00Z, 01:30Z) do not run again.
            "cron */30": (
                _cron("*/30 * * * *"),
                _every_30_min("2026-10-25T00:00Z", TICKS, skip=("01:00", "01:30")),
            ),
        },
    ),
    # 02:00 EST -> 03:00 EDT (07:00Z).
    "new-york-spring": Night(
        "America/New_York",
        created="2026-03-08T05:45Z",
        first_tick="2026-03-08T06:01Z",
        schedules={
            "daily 01:30": (_daily("01:30"), ["2026-03-08T06:30Z"]),
            "daily 02:30": (_daily("02:30"), ["2026-03-08T07:00Z"]),
            "daily 03:30": (_daily("03:30"), ["2026-03-08T07:30Z"]),
            "weekly sun 02:00": (_weekly_sunday("02:00"), ["2026-03-08T07:00Z"]),
            "cron 30 2": (_cron("30 2 * * *"), ["2026-03-08T07:00Z"]),
            "cron */30": (_cron("*/30 * * * *"), _every_30_min("2026-03-08T06:00Z", TICKS)),
        },
    ),
    # 02:00 EDT -> 01:00 EST (06:00Z): 01:00-01:59 happen twice.
    "new-york-fall": Night(
        "America/New_York",
        created="2026-11-01T04:45Z",
        first_tick="2026-11-01T05:01Z",
        schedules={
            "daily 01:00": (_daily("01:00"), ["2026-11-01T05:00Z"]),
            "daily 01:30": (_daily("01:30"), ["2026-11-01T05:30Z"]),
            "daily 02:30": (_daily("02:30"), ["2026-11-01T07:30Z"]),
            "weekly sun 01:30": (_weekly_sunday("01:30"), ["2026-11-01T05:30Z"]),
            "cron 30 1": (_cron("30 1 * * *"), ["2026-11-01T05:30Z"]),
            "cron */30": (
                _cron("*/30 * * * *"),
                _every_30_min("2026-11-01T05:00Z", TICKS, skip=("06:00", "06:30")),
            ),
        },
    ),
}
NIGHT_CASES = [
    *(pytest.param("sqlite", name, id=f"sqlite-{name}") for name in NIGHTS),
    pytest.param("postgresql", "berlin-fall", id="postgresql-berlin-fall", marks=POSTGRES),
]


@pytest.mark.parametrize(("dialect", "night_name"), NIGHT_CASES)
def test_ticks_across_dst_nights_run_the_slots_section_3_prescribes(
    timeline: Timeline, night_name: str
) -> None:
    night = NIGHTS[night_name]
    for name, (options, _) in night.schedules.items():
        timeline.create(name, utc(night.created), tz=night.tz, **options)
    for n in range(TICKS):
        timeline.tick(utc(night.first_tick) + TICK_EVERY * n)

    expected = {name: [utc(slot) for slot in slots] for name, (_, slots) in night.schedules.items()}
    assert timeline.slots("succeeded") == expected
    assert [r for r in timeline.runs() if r.status != "succeeded"] == []
    timeline.check_runs_and_messages()


# --- month ends ----------------------------------------------------------------------


@pytest.mark.parametrize("dialect", ["sqlite"])
@pytest.mark.parametrize(("year", "february"), [(2027, 28), (2028, 29)])
def test_monthly_day_31_runs_on_each_months_last_day(
    timeline: Timeline, year: int, february: int
) -> None:
    created = datetime(year, 1, 15, 10, 0, tzinfo=UTC)
    for name, day in [("day 31", "31"), ("day last", "last"), ("day 30", "30")]:
        timeline.create(name, created, cadence="monthly", day=day, at="09:00", tz="Europe/Berlin")
    # One tick at 12:00Z on each month's last day, and one on May 1st.
    for month in range(1, 5):
        last = calendar.monthrange(year, month)[1]
        timeline.tick(created.replace(month=month, day=last, hour=12))
    timeline.tick(created.replace(month=5, day=1, hour=12))

    # 09:00 in Berlin: 08:00Z in winter, 07:00Z from the end of March.
    month_ends = [
        utc(f"{year}-01-31T08:00Z"),
        utc(f"{year}-02-{february}T08:00Z"),
        utc(f"{year}-03-31T07:00Z"),
        utc(f"{year}-04-30T07:00Z"),
    ]
    assert timeline.slots("succeeded") == {
        "day 31": month_ends,
        "day last": month_ends,
        "day 30": [
            utc(f"{year}-01-30T08:00Z"),
            utc(f"{year}-02-{february}T08:00Z"),
            utc(f"{year}-03-30T07:00Z"),
            utc(f"{year}-04-30T07:00Z"),
        ],
    }
    assert timeline.slots("skipped") == {}  # no extra slot was caught up and skipped
    timeline.check_runs_and_messages()


# --- a 3-day outage --------------------------------------------------------------------


def test_catch_up_policies_after_a_three_day_outage(timeline: Timeline) -> None:
    created = utc("2026-06-01T08:00Z")  # a Monday
    policies = {"latest": {}, "all": {}, "none": {}, "all, max 1d": {"max_lateness": "1d"}}
    for name, extra in policies.items():
        catchup = name.split(",")[0]
        timeline.create(name, created, cadence="daily", at="09:00", catchup=catchup, **extra)

    def day(n: int) -> datetime:
        return utc("2026-06-01T09:00Z") + timedelta(days=n)

    on_time = timeline.tick(day(0) + timedelta(seconds=30))
    assert (on_time["due"], on_time["runs_created"]) == (4, 4)
    # No tick for three days; cron comes back at 12:00 on day 3, then on time on day 4.
    back = timeline.tick(day(3) + timedelta(hours=3))
    assert (back["due"], back["runs_created"], back["runs_skipped"]) == (4, 5, 7)
    timeline.tick(day(4) + timedelta(seconds=30))

    assert timeline.slots("succeeded") == {
        "latest": [day(0), day(3), day(4)],  # only the most recent missed slot
        "all": [day(0), day(1), day(2), day(3), day(4)],  # every one, oldest first
        "none": [day(0), day(4)],  # none: waits for the next slot
        "all, max 1d": [day(0), day(3), day(4)],  # older than max-lateness: skipped
    }
    assert timeline.slots("skipped") == {
        "latest": [day(1), day(2)],
        "none": [day(1), day(2), day(3)],
        "all, max 1d": [day(1), day(2)],
    }
    timeline.check_runs_and_messages()
