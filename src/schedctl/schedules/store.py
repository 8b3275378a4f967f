"""Schedules in the database: create, list, show, update, pause, resume, delete
(SPEC §4, §11).

Every value is validated before anything is written (ValidationError, exit 2). Each
function works inside one account; ``next_run_at`` is NULL while a schedule is paused,
resuming starts from the next slot after now, and an edit recomputes it only when the
cadence changed. Each ``next_run_at`` is stored with the tzdata version that computed
it (``tzdata_version``), which a tick running other zone data recomputes.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from schedctl import zones
from schedctl.accounts import account_name
from schedctl.cadence import Cadence, PlannedSlot, next_slot, upcoming_slots
from schedctl.config import Settings
from schedctl.db.database import Database
from schedctl.db.owned import get_owned
from schedctl.db.schema import schedule_runs, schedules
from schedctl.errors import ConflictError, ValidationError
from schedctl.schedules import reports
from schedctl.schedules.model import (
    DEFAULT_CATCHUP,
    Schedule,
    ScheduleOptions,
    merge_cadence,
    parse_catchup,
    parse_max_lateness,
    parse_name,
    parse_params,
    parse_recipients,
)


def resolve_values(
    settings: Settings, options: ScheduleOptions, existing: Schedule | None
) -> tuple[dict[str, Any], Cadence]:
    """Validate ``options`` (over ``existing`` when updating): column values, cadence."""
    if options.name is not None:
        name = parse_name(options.name)
    elif existing is not None:
        name = existing.name
    else:
        raise ValidationError("--name is required")
    if options.kind is not None:
        kind = options.kind.strip()
    elif existing is not None:
        kind = existing.kind
    else:
        raise ValidationError(f"--kind is required ({', '.join(reports.kind_names())})")
    cadence = merge_cadence(options, existing.cadence if existing else None)
    if options.to is not None:
        recipients = parse_recipients(options.to)
    else:
        recipients = existing.recipients if existing else ()
    if options.params is not None:
        params: Mapping[str, str] = parse_params(options.params)
    else:
        params = existing.params if existing else {}
    reports.validate_params(settings, kind, params)
    if not recipients and reports.needs_recipients(kind):
        raise ValidationError(
            f"a schedule of kind {kind} needs at least one recipient (--to EMAIL)"
        )
    if options.catchup is not None:
        catchup = parse_catchup(options.catchup)
    else:
        catchup = existing.catchup if existing else DEFAULT_CATCHUP
    if options.max_lateness is not None:
        max_lateness = parse_max_lateness(options.max_lateness)
    else:
        max_lateness = existing.max_lateness if existing else None
    # --paused pauses; resuming is `schedules resume`, which also recomputes next_run_at.
    active = not options.paused and (existing.active if existing else True)
    return {
        "name": name,
        "kind": kind,
        "cadence": cadence.kind,
        "at_time": None if cadence.at is None else f"{cadence.at:%H:%M}",
        "weekday": cadence.weekday,
        "day_of_month": None if cadence.day is None else str(cadence.day),
        "cron": cadence.cron,
        "tz": cadence.tz,
        "recipients": list(recipients),
        "params": dict(params),
        "catchup": catchup,
        "max_lateness_s": None if max_lateness is None else int(max_lateness.total_seconds()),
        "active": active,
    }, cadence


# --- storage -------------------------------------------------------------------------


def next_run_values(next_run_at: datetime | None) -> dict[str, Any]:
    """The columns of a newly computed ``next_run_at``: it and the zone data's version."""
    version = zones.tzdata_version() if next_run_at is not None else None
    return {"next_run_at": next_run_at, "tzdata_version": version}


def _in_account(account_id: int, schedule_id: int) -> sa.ColumnElement[bool]:
    return sa.and_(schedules.c.id == schedule_id, schedules.c.account_id == account_id)


def _load(
    conn: sa.Connection, account_id: int, schedule_id: int, *, lock: bool = False
) -> Schedule:
    row = get_owned(conn, schedules, schedule_id, account_id, "schedule", lock=lock)
    return Schedule.from_row(row)


def _check_query_allowed(
    conn: sa.Connection, settings: Settings, account_id: int, values: Mapping[str, Any]
) -> None:
    account = account_name(conn, account_id)
    reports.check_account(settings, values["kind"], values["params"], account)


def _check_name_free(conn: sa.Connection, account_id: int, name: str, own_id: int | None) -> None:
    query = sa.select(schedules.c.id).where(
        schedules.c.account_id == account_id, schedules.c.name == name
    )
    if own_id is not None:
        query = query.where(schedules.c.id != own_id)
    if conn.execute(query).first() is not None:
        raise ValidationError(f"a schedule named {name!r} exists already in this account")


def _write(db: Database, work: Any, name: str) -> Schedule:
    try:
        return db.transaction(work)  # type: ignore[no-any-return]
    except ConflictError as exc:
        if exc.constraint and "name" in exc.constraint:
            raise ValidationError(
                f"a schedule named {name!r} exists already in this account"
            ) from None
        raise


def create_schedule(
    db: Database, settings: Settings, account_id: int, options: ScheduleOptions, now: datetime
) -> Schedule:
    """Validate and insert a schedule; its first slot is the next one after ``now``."""
    values, cadence = resolve_values(settings, options, None)

    def work(conn: sa.Connection) -> Schedule:
        _check_query_allowed(conn, settings, account_id, values)
        _check_name_free(conn, account_id, values["name"], None)
        statement = (
            schedules.insert()
            .values(
                **values,
                account_id=account_id,
                **next_run_values(next_slot(cadence, now) if values["active"] else None),
                created_at=now,
                updated_at=now,
            )
            .returning(schedules)
        )
        return Schedule.from_row(conn.execute(statement).one())

    return _write(db, work, values["name"])


def list_schedules(db: Database, account_id: int) -> list[Schedule]:
    """The account's schedules, by name."""
    query = (
        sa.select(schedules)
        .where(schedules.c.account_id == account_id)
        .order_by(schedules.c.name, schedules.c.id)
    )
    rows = db.transaction(lambda conn: conn.execute(query).all(), read_only=True)
    return [Schedule.from_row(row) for row in rows]


def get_schedule(db: Database, account_id: int, schedule_id: int) -> Schedule:
    return db.transaction(lambda conn: _load(conn, account_id, schedule_id), read_only=True)


def upcoming(
    db: Database, account_id: int, schedule_id: int, start: datetime, count: int
) -> tuple[Schedule, list[PlannedSlot]]:
    """A schedule and its first ``count`` slots at or after ``start``: the slots tick
    runs (cadence.slots_after), each with the adjustment §3's rules made, if any. A
    paused schedule's are listed too: they run once it is resumed."""
    schedule = get_schedule(db, account_id, schedule_id)
    return schedule, upcoming_slots(schedule.cadence, start, count)


def update_schedule(
    db: Database,
    settings: Settings,
    account_id: int,
    schedule_id: int,
    options: ScheduleOptions,
    now: datetime,
) -> Schedule:
    """Apply ``options`` to a schedule; recompute ``next_run_at`` if its cadence changed."""
    attempted_name = options.name or ""

    def work(conn: sa.Connection) -> Schedule:
        existing = _load(conn, account_id, schedule_id, lock=True)
        values, cadence = resolve_values(settings, options, existing)
        _check_query_allowed(conn, settings, account_id, values)
        _check_name_free(conn, account_id, values["name"], schedule_id)
        if not values["active"]:
            next_run = next_run_values(None)
        elif cadence == existing.cadence and existing.next_run_at is not None:
            next_run = {}  # unchanged, with the zone data version that computed it
        else:
            next_run = next_run_values(next_slot(cadence, now))
        statement = (
            schedules.update()
            .where(_in_account(account_id, schedule_id))
            .values(**values, **next_run, updated_at=now)
            .returning(schedules)
        )
        return Schedule.from_row(conn.execute(statement).one())

    return _write(db, work, attempted_name)


def set_active(
    db: Database, account_id: int, schedule_id: int, active: bool, now: datetime
) -> Schedule:
    """Pause or resume. Resuming runs from the next slot after ``now``, no catch-up."""

    def work(conn: sa.Connection) -> Schedule:
        existing = _load(conn, account_id, schedule_id, lock=True)
        if existing.active == active:
            return existing
        statement = (
            schedules.update()
            .where(_in_account(account_id, schedule_id))
            .values(
                active=active,
                **next_run_values(next_slot(existing.cadence, now) if active else None),
                updated_at=now,
            )
            .returning(schedules)
        )
        return Schedule.from_row(conn.execute(statement).one())

    return db.transaction(work)


def delete_schedule(db: Database, account_id: int, schedule_id: int) -> int:
    """Delete a schedule and its runs; returns how many runs were deleted.

    Messages already in the outbox stay (their link to the run is cleared).
    """

    def work(conn: sa.Connection) -> int:
        # Not decoded: a row edited by hand into nonsense can still be deleted.
        get_owned(conn, schedules, schedule_id, account_id, "schedule", lock=True)
        deleted_runs = conn.execute(
            schedule_runs.delete().where(
                schedule_runs.c.schedule_id == schedule_id,
                schedule_runs.c.account_id == account_id,
            )
        ).rowcount
        conn.execute(schedules.delete().where(_in_account(account_id, schedule_id)))
        return int(deleted_runs)

    return db.transaction(work)
