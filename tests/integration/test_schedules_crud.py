"""Schedule create/list/show/update/pause/resume/delete on real databases (SPEC §4, §11)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa

from schedctl.accounts import create_account
from schedctl.config import Settings, report_queries
from schedctl.db.database import Database
from schedctl.db.schema import messages, schedule_runs, schedules
from schedctl.errors import ConfigError, NotFound, ValidationError
from schedctl.schedules import runs
from schedctl.schedules.model import Schedule, ScheduleOptions
from schedctl.schedules.store import (
    create_schedule,
    delete_schedule,
    get_schedule,
    list_schedules,
    set_active,
    update_schedule,
)
from support.delivery import load_with

T0 = datetime(2026, 6, 1, 8, 0, tzinfo=UTC)  # Monday
# Dialect-independent logic: SQLite only, to keep PostgreSQL for the SQL that differs.
sqlite_only = pytest.mark.parametrize("dialect", ["sqlite"])

QUERIES = {"ping": {"sql": "select 1 as one", "accounts": "*"}}
BASE: dict[str, Any] = {
    "name": "sales",
    "kind": "sql",
    "cadence": "daily",
    "at": "09:00",
    "to": ["ops@example.com"],
    "params": ["query=ping"],
}


@pytest.fixture
def settings(db_url: str) -> Settings:
    return Settings(database_url=db_url, reports_queries=report_queries(QUERIES))


def create(db: Database, settings: Settings, account_id: int = 1, **changes: Any) -> Schedule:
    return create_schedule(db, settings, account_id, ScheduleOptions(**{**BASE, **changes}), T0)


def count(db: Database, table: sa.Table) -> int:
    return int(db.scalar(sa.select(sa.func.count()).select_from(table)))


@sqlite_only
@pytest.mark.parametrize(
    ("changes", "expected_next"),
    [
        ({}, datetime(2026, 6, 1, 9, 0, tzinfo=UTC)),
        ({"tz": "Europe/Berlin"}, datetime(2026, 6, 2, 7, 0, tzinfo=UTC)),
        ({"cadence": "weekly", "weekday": "wed"}, datetime(2026, 6, 3, 9, 0, tzinfo=UTC)),
        ({"cadence": "monthly", "day": "last"}, datetime(2026, 6, 30, 9, 0, tzinfo=UTC)),
        (
            {"cadence": "cron", "at": None, "cron": "15 */6 * * *"},
            datetime(2026, 6, 1, 12, 15, tzinfo=UTC),
        ),
    ],
)
def test_create_computes_the_first_slot(
    db: Database, settings: Settings, changes: dict[str, Any], expected_next: datetime
) -> None:
    schedule = create(db, settings, **changes)
    assert schedule.next_run_at == expected_next
    assert get_schedule(db, 1, schedule.id) == schedule
    summary = schedule.summary()
    assert summary["id"] == str(schedule.id)
    assert {"id", "name", "kind", "cadence", "tz", "active", "next_run_at", "last_run_at"} <= set(
        summary
    )


@sqlite_only
def test_create_keeps_every_option(db: Database, settings: Settings) -> None:
    schedule = create(
        db, settings, to=["B@Example.com", "a@example.com"], catchup="all", max_lateness="6h"
    )
    shown = schedule.as_dict()
    assert shown["recipients"] == ["b@example.com", "a@example.com"]
    assert shown["params"] == {"query": "ping"}
    assert (shown["catchup"], shown["max_lateness"], shown["active"]) == ("all", "6h", True)
    assert (shown["at"], shown["weekday"], shown["day"], shown["cron"]) == (
        "09:00",
        None,
        None,
        None,
    )


@sqlite_only
def test_create_paused_has_no_next_run(db: Database, settings: Settings) -> None:
    schedule = create(db, settings, paused=True)
    assert (schedule.active, schedule.next_run_at) == (False, None)


@sqlite_only
@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"tz": "Mars/Olympus_Mons"}, "invalid time zone"),
        ({"tz": "posix/Europe/Berlin"}, "invalid time zone"),
        ({"cadence": "cron", "at": None, "cron": "61 * * * *"}, "invalid cron"),
        ({"cadence": "cron", "at": None, "cron": "* * *"}, "expected 5 fields"),
        ({"cadence": "cron", "at": None, "cron": "0 0 31 2 *"}, "invalid cron"),
        ({"cadence": "weekly", "weekday": "funday"}, "invalid weekday"),
        ({"cadence": "monthly", "day": "32"}, "invalid day"),
        ({"cadence": "monthly", "day": "0"}, "invalid day"),
        ({"at": "25:00"}, "invalid time"),
        ({"at": "9am"}, "invalid time"),
        ({"cadence": "hourly"}, "invalid cadence"),
        ({"cadence": "weekly"}, "needs --weekday"),
        ({"day": "1"}, "--day does not apply"),
        ({"to": ["ops@example.com", "not-an-address"]}, "invalid e-mail"),
        ({"max_lateness": "10x"}, "invalid duration"),
        ({"max_lateness": "0m"}, "invalid duration"),
        ({"catchup": "sometimes"}, "invalid --catchup"),
        ({"kind": "pdf"}, "unknown report kind"),
        ({"params": ["query"]}, "invalid --param"),
        ({"params": ["query=ping", "query=pong"]}, "given twice"),
        ({"params": []}, "needs --param query"),
        ({"params": ["query=nope"]}, "no report query 'nope'"),
        ({"params": ["query=ping", "colour=red"]}, "unknown --param colour"),
        ({"name": "   "}, "invalid schedule name"),
        ({"name": None}, "--name is required"),
        ({"kind": None}, "--kind is required"),
        ({"cadence": None}, "--cadence is required"),
    ],
)
def test_every_invalid_value_is_refused_and_nothing_is_written(
    db: Database, settings: Settings, changes: dict[str, Any], message: str
) -> None:
    with pytest.raises(ValidationError, match=message) as caught:
        create(db, settings, **changes)
    assert caught.value.exit_code == 2
    assert count(db, schedules) == 0


@sqlite_only
def test_a_broken_report_config_is_a_config_error(db: Database, db_url: str) -> None:
    with pytest.raises(ConfigError, match="needs sql") as caught:
        create(db, load_with({"reports": {"queries": {"ping": {}}}}, database_url=db_url))
    assert caught.value.exit_code == 2
    assert count(db, schedules) == 0


def test_names_are_unique_per_account(db: Database, settings: Settings) -> None:
    create(db, settings)
    with pytest.raises(ValidationError, match="exists already"):
        create(db, settings, name=" sales ")
    other = db.transaction(lambda c: create_account(c, "other", T0))
    create(db, settings, account_id=other)
    assert count(db, schedules) == 2


def test_update_with_a_new_cadence_recomputes_next_run_at(db: Database, settings: Settings) -> None:
    schedule = create(db, settings, cadence="weekly", weekday="fri")
    assert schedule.next_run_at == datetime(2026, 6, 5, 9, 0, tzinfo=UTC)
    now = T0 + timedelta(hours=2)  # Monday 10:00
    updated = update_schedule(
        db, settings, 1, schedule.id, ScheduleOptions(cadence="daily", at="11:30"), now
    )
    assert updated.next_run_at == datetime(2026, 6, 1, 11, 30, tzinfo=UTC)
    assert (updated.cadence.kind, updated.cadence.weekday) == ("daily", None)
    assert updated.as_dict()["weekday"] is None
    moved = update_schedule(db, settings, 1, schedule.id, ScheduleOptions(tz="Asia/Tokyo"), now)
    assert moved.next_run_at == datetime(2026, 6, 2, 2, 30, tzinfo=UTC)  # 11:30 JST
    assert moved.updated_at == now


def test_update_without_a_cadence_change_keeps_a_due_slot(db: Database, settings: Settings) -> None:
    schedule = create(db, settings)
    late = T0 + timedelta(hours=1, minutes=1)  # 09:01: the 09:00 slot is due, not ticked
    options = ScheduleOptions(name="renamed", to=["new@example.com"], params=["query=ping"])
    updated = update_schedule(db, settings, 1, schedule.id, options, late)
    assert updated.next_run_at == schedule.next_run_at
    assert (updated.name, updated.recipients) == ("renamed", ("new@example.com",))
    assert runs.materialise_due(db, late).runs_created == 1


def test_an_invalid_update_changes_nothing(db: Database, settings: Settings) -> None:
    schedule = create(db, settings)
    for options in [
        ScheduleOptions(tz="Nowhere/Land"),
        ScheduleOptions(cadence="weekly"),
        ScheduleOptions(to=["broken"]),
        ScheduleOptions(params=["query=missing"]),
    ]:
        with pytest.raises(ValidationError):
            update_schedule(db, settings, 1, schedule.id, options, T0)
    assert get_schedule(db, 1, schedule.id) == schedule


def test_pause_and_resume(db: Database, settings: Settings) -> None:
    schedule = create(db, settings)
    paused = set_active(db, 1, schedule.id, False, T0)
    assert (paused.active, paused.next_run_at) == (False, None)
    assert runs.materialise_due(db, T0 + timedelta(days=3)).due == 0
    resumed_at = T0 + timedelta(days=3, hours=2)  # 10:00 on day 3
    resumed = set_active(db, 1, schedule.id, True, resumed_at)
    # No catch-up for the days it was paused: the next slot is tomorrow's.
    assert resumed.next_run_at == datetime(2026, 6, 5, 9, 0, tzinfo=UTC)
    assert set_active(db, 1, schedule.id, True, resumed_at + timedelta(days=9)) == resumed


@sqlite_only
def test_list_shows_only_the_accounts_schedules(db: Database, settings: Settings) -> None:
    other = db.transaction(lambda c: create_account(c, "other", T0))
    create(db, settings, name="b")
    create(db, settings, name="a")
    create(db, settings, account_id=other, name="theirs")
    assert [s.name for s in list_schedules(db, 1)] == ["a", "b"]
    assert [s.name for s in list_schedules(db, other)] == ["theirs"]


@sqlite_only
def test_another_accounts_schedule_cannot_be_read_or_changed(
    db: Database, settings: Settings
) -> None:
    mine = create(db, settings)
    other = db.transaction(lambda c: create_account(c, "other", T0))
    for attempt in [
        lambda: get_schedule(db, other, mine.id),
        lambda: update_schedule(db, settings, other, mine.id, ScheduleOptions(name="x"), T0),
        lambda: set_active(db, other, mine.id, False, T0),
        lambda: delete_schedule(db, other, mine.id),
        lambda: runs.run_history(db, other, mine.id, 10),
    ]:
        with pytest.raises(NotFound):
            attempt()
    assert get_schedule(db, 1, mine.id) == mine


def test_delete_removes_the_runs_and_keeps_sent_messages(db: Database, settings: Settings) -> None:
    schedule = create(db, settings)
    keep = create(db, settings, name="keep")
    runs.run_schedules(db, settings, T0 + timedelta(days=2, hours=1))
    assert count(db, schedule_runs) == 6  # two schedules x (2 skipped + 1 run)
    assert delete_schedule(db, 1, schedule.id) == 3
    with pytest.raises(NotFound):
        get_schedule(db, 1, schedule.id)
    remaining = db.transaction(
        lambda c: c.execute(sa.select(schedule_runs.c.schedule_id)).scalars().all()
    )
    assert set(remaining) == {keep.id}
    links = db.transaction(
        lambda c: c.execute(sa.select(messages.c.schedule_run_id)).scalars().all()
    )
    assert len(links) == 2
    assert sum(1 for link in links if link is None) == 1


@sqlite_only
def test_run_history_is_newest_first_and_limited(db: Database, settings: Settings) -> None:
    schedule = create(db, settings, catchup="all")
    runs.run_schedules(db, settings, T0 + timedelta(days=4, hours=1))
    history = runs.run_history(db, 1, schedule.id, limit=3)
    assert [r.slot.day for r in history] == [5, 4, 3]
    first = history[0].as_dict()
    assert set(first) >= {"id", "slot", "status", "manual", "started_at", "finished_at", "error"}
    assert (first["id"], first["status"], first["manual"]) == (
        str(history[0].id),
        "succeeded",
        False,
    )
