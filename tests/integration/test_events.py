"""Event message planning: idempotent, INIT rules, rescheduling (real databases)."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa

from schedctl.config import Settings
from schedctl.db.database import Database
from schedctl.db.schema import events, messages
from schedctl.delivery.outbox import delete_messages
from schedctl.events import add_event, plan_event_messages, update_event
from support.delivery import T0, all_messages, load_with

STARTS = T0 + timedelta(days=10)
SETTINGS = Settings(events_reminders=("1d", "2h"))


def add(db_url: str, load_in: datetime | None = None, at: datetime = T0) -> int:
    with Database(db_url) as db:
        event_id, _ = db.transaction(
            lambda conn: add_event(
                conn, SETTINGS, account_id=1, name="Gala", starts_at=STARTS,
                contact="Host@Example.org", now=at, tz="Europe/Berlin", load_in_time=load_in,
            )
        )  # fmt: skip
    return event_id


def update(db_url: str, event_id: int, at: datetime, **changes: Any) -> int:
    with Database(db_url) as db:
        _, changed = db.transaction(
            lambda conn: update_event(
                conn, SETTINGS, account_id=1, event_id=event_id, now=at, **changes
            )
        )
    return changed


def plan(db_url: str, at: datetime = T0) -> int:
    with Database(db_url) as db:
        return plan_event_messages(db, SETTINGS, at)


def by_type(db_url: str) -> dict[str, Any]:
    return {m.type: m for m in all_messages(db_url)}


def test_an_event_gets_an_init_and_its_reminders_once(db_url: str) -> None:
    event_id = add(db_url)

    replanned = plan(db_url)

    planned = by_type(db_url)
    assert replanned == 0
    assert set(planned) == {"INIT", "REMINDER_1D", "REMINDER_2H"}
    assert planned["INIT"].send_at == T0
    assert planned["REMINDER_1D"].send_at == STARTS - timedelta(days=1)
    assert planned["REMINDER_2H"].send_at == STARTS - timedelta(hours=2)
    assert planned["REMINDER_1D"].idempotency_key == f"event:{event_id}:REMINDER_1D"
    assert planned["INIT"].recipient == "host@example.org"
    assert "starts in 1 day" in planned["REMINDER_1D"].subject
    assert all(m.status == "scheduled" and m.event_id == event_id for m in planned.values())


def test_events_written_by_applications_are_planned_by_tick_once(db_url: str) -> None:
    with Database(db_url) as db:
        db.transaction(
            lambda conn: conn.execute(
                events.insert(),
                [
                    {"account_id": 1, "name": f"E{n}", "starts_at": STARTS,
                     "contact": "a@example.org", "tz": "UTC", "created_at": T0, "updated_at": T0}
                    for n in range(3)
                ],
            )
        )  # fmt: skip

    first, second = plan(db_url), plan(db_url)

    assert (first, second) == (9, 0)
    assert len(all_messages(db_url)) == 9


def test_no_init_for_an_event_with_a_load_in_time(db_url: str) -> None:
    add(db_url, load_in=STARTS - timedelta(hours=3))

    assert set(by_type(db_url)) == {"REMINDER_1D", "REMINDER_2H"}


def test_a_pending_init_is_skipped_when_a_load_in_time_is_added(db_url: str) -> None:
    event_id = add(db_url)

    update(db_url, event_id, T0 + timedelta(minutes=1), load_in_time=STARTS - timedelta(hours=3))
    plan(db_url, T0 + timedelta(minutes=2))

    init = by_type(db_url)["INIT"]
    assert (init.status, init.reason_code) == ("skipped", "HAS_LOAD_IN_TIME")


def test_planning_skips_a_pending_init_of_an_event_changed_behind_its_back(db_url: str) -> None:
    event_id = add(db_url)
    later = T0 + timedelta(minutes=1)
    with Database(db_url) as db:
        db.transaction(
            lambda conn: conn.execute(
                events.update()
                .where(events.c.id == event_id)
                .values(load_in_time=STARTS - timedelta(hours=1), updated_at=later)
            )
        )

    assert plan(db_url, later) == 1 + 2  # the INIT skipped, both reminders re-rendered

    assert by_type(db_url)["INIT"].reason_code == "HAS_LOAD_IN_TIME"


def test_a_sent_init_is_left_alone_when_a_load_in_time_is_added(db_url: str) -> None:
    event_id = add(db_url)
    with Database(db_url) as db:
        db.transaction(
            lambda conn: conn.execute(
                messages.update().where(messages.c.type == "INIT").values(status="sent")
            )
        )

    update(db_url, event_id, T0, load_in_time=STARTS - timedelta(hours=3))

    assert by_type(db_url)["INIT"].status == "sent"


def test_moving_the_start_moves_pending_reminders_and_skips_past_ones(db_url: str) -> None:
    event_id = add(db_url)
    now = T0 + timedelta(days=1)

    update(db_url, event_id, now, starts_at=now + timedelta(hours=5))
    moved = by_type(db_url)
    update(db_url, event_id, now, starts_at=now + timedelta(days=3))
    back = by_type(db_url)

    assert (moved["REMINDER_1D"].status, moved["REMINDER_1D"].reason_code) == (
        "skipped", "PAST_DUE"
    )  # fmt: skip
    assert moved["REMINDER_2H"].send_at == now + timedelta(hours=3)
    assert moved["REMINDER_2H"].status == "scheduled"
    assert back["REMINDER_1D"].send_at == now + timedelta(days=2)
    assert (back["REMINDER_1D"].status, back["REMINDER_1D"].reason_code) == ("scheduled", None)


def test_a_deleted_init_is_not_planned_again(db_url: str) -> None:
    add(db_url)
    with Database(db_url) as db:
        db.transaction(lambda conn: delete_messages(conn, 1, type="INIT"))

    assert plan(db_url) == 0
    assert "INIT" not in by_type(db_url)


@pytest.mark.parametrize("dialect", ["sqlite"])
def test_a_bad_reminder_setting_fails_before_writing(db_url: str) -> None:
    from schedctl.errors import ConfigError

    # The settings are refused as they load: nothing is left to plan with.
    with pytest.raises(ConfigError, match=r"\[events\] reminders"):
        load_with({"events": {"reminders": ["soon"]}}, database_url=db_url)
    with Database(db_url) as db:
        assert db.scalar(sa.select(sa.func.count()).select_from(messages)) == 0
