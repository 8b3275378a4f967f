"""What each status page shows, read from the database (read-only; SPEC §12).

Every function takes ``account_id``: the one account the pages are limited to
(``[web] account``), or None for every account. Account-owned rows are filtered by
it here; the caller's Database is also scoped to it, so on PostgreSQL row-level
security holds the line as it does for the CLI. Heartbeats, the quota and the
distribution belong to the installation and are shown either way.

Nothing returned carries a secret: error texts pass through the settings'
redaction, a distribution's reason through ``distribute.plan.scrub`` (which masks
anything shaped like a user ID), and no message body is read.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import date, datetime, timedelta
from typing import Any

import sqlalchemy as sa

from schedctl import heartbeat, metrics
from schedctl.config import Settings
from schedctl.db.database import Database
from schedctl.db.owned import get_owned
from schedctl.db.schema import (
    accounts,
    digests,
    distributions,
    events,
    heartbeats,
    messages,
    notifications,
    schedule_runs,
    schedules,
    users,
)
from schedctl.delivery import outbox, quota
from schedctl.distribute.plan import scrub
from schedctl.errors import SchedctlError
from schedctl.schedules.model import Schedule
from schedctl.schedules.runs import RunRecord, run_history
from schedctl.vocabulary import MESSAGE_STATUSES

WINDOW = timedelta(hours=24)  # "failures in the last 24 h"
FAILURES_SHOWN = 20  # of each kind on the front page
PAGE_SIZE = 50  # messages per page
RUNS_SHOWN = 50  # of a schedule's history
FAILED_OUTCOMES = ("failed", "error", "temporary")  # a command run that went wrong


def _own(table: sa.Table, account_id: int | None) -> list[sa.ColumnElement[bool]]:
    return [] if account_id is None else [table.c.account_id == account_id]


def _message_zone() -> sa.ColumnElement[Any]:
    """The zone a message's times are local to: its event's, its schedule's, or its
    user's (a digest or a critical notification); NULL for none of those."""
    m = messages.c
    event_tz = sa.select(events.c.tz).where(events.c.id == m.event_id).scalar_subquery()
    schedule_tz = (
        sa.select(schedules.c.tz)
        .join(schedule_runs, schedule_runs.c.schedule_id == schedules.c.id)
        .where(schedule_runs.c.id == m.schedule_run_id)
        .scalar_subquery()
    )
    digest_tz = (
        sa.select(users.c.tz)
        .join(digests, digests.c.user_id == users.c.id)
        .where(digests.c.message_id == m.id)
        .limit(1)
        .scalar_subquery()
    )
    notified_tz = (
        sa.select(users.c.tz)
        .join(notifications, notifications.c.user_id == users.c.id)
        .where(notifications.c.message_id == m.id)
        .limit(1)
        .scalar_subquery()
    )
    return sa.func.coalesce(event_tz, schedule_tz, digest_tz, notified_tz).label("tz")


# --- the front page ------------------------------------------------------------------


@dataclass(frozen=True)
class FailedRun:
    id: int
    schedule_id: int
    schedule_name: str
    tz: str
    slot: datetime
    finished_at: datetime | None
    error: str | None


@dataclass(frozen=True)
class FailedMessage:
    id: int
    type: str
    recipient: str | None
    reason_code: str | None
    updated_at: datetime
    tz: str | None
    error: str | None


@dataclass(frozen=True)
class FailedCommand:
    command: str
    started_at: datetime
    finished_at: datetime | None
    outcome: str
    exit_code: int | None


@dataclass(frozen=True)
class Distribution:
    business_date: date
    status: str
    reason: str | None
    users: int | None
    campaigns: int
    finished_at: datetime | None


@dataclass(frozen=True)
class Dashboard:
    now: datetime
    health: list[heartbeat.CommandHealth]
    overall: heartbeat.Status
    quota_day: str
    quota_used: int
    quota_limit: int | None
    outbox: dict[str, int]  # every status, 0 included
    failed_runs: list[FailedRun]
    failed_messages: list[FailedMessage]
    failed_commands: list[FailedCommand]
    digests: dict[str, int]  # digests claimed since 00:00 UTC, every status
    distribution: Distribution | None

    @property
    def failures(self) -> int:
        return len(self.failed_runs) + len(self.failed_messages) + len(self.failed_commands)


def dashboard(db: Database, settings: Settings, now: datetime, account_id: int | None) -> Dashboard:
    """The front page: heartbeats, quota, outbox, the last 24 h's failures, today's
    digests and the latest distribution. The counts are `schedctl metrics`' own
    (metrics.collect), so the page and /metrics never disagree."""
    snapshot = metrics.collect(db, settings, now, account_id=account_id)
    outbox = dict.fromkeys(MESSAGE_STATUSES, 0)
    for status, _, count in snapshot.messages:
        outbox[status] = outbox.get(status, 0) + int(count)
    since = now - WINDOW
    m, r = messages.c, schedule_runs.c
    failed_runs = (
        sa.select(r.id, r.schedule_id, r.slot, r.finished_at, r.error, schedules.c.name,
                  schedules.c.tz)
        .join(schedules, schedules.c.id == r.schedule_id)
        .where(r.status == "failed", r.finished_at > since, r.finished_at <= now)
        .where(*_own(schedule_runs, account_id))
        .order_by(r.finished_at.desc(), r.id.desc())
        .limit(FAILURES_SHOWN)
    )  # fmt: skip
    failed_messages = (
        sa.select(m.id, m.type, m.recipient, m.reason_code, m.updated_at, m.last_error,
                  _message_zone())
        .where(m.status == "failed", m.updated_at > since, m.updated_at <= now)
        .where(*_own(messages, account_id))
        .order_by(m.updated_at.desc(), m.id.desc())
        .limit(FAILURES_SHOWN)
    )  # fmt: skip
    h = heartbeats.c
    failed_commands = (
        sa.select(h.command, h.started_at, h.finished_at, h.outcome, h.exit_code)
        .where(h.outcome.in_(FAILED_OUTCOMES), h.started_at > since, h.started_at <= now)
        .order_by(h.started_at.desc(), h.id.desc())
        .limit(FAILURES_SHOWN)
    )
    latest_distribution = (
        sa.select(distributions).order_by(distributions.c.business_date.desc()).limit(1)
    )

    def work(conn: sa.Connection) -> Dashboard:
        dist = conn.execute(latest_distribution).first()
        return Dashboard(
            now=now,
            health=snapshot.health,
            overall=heartbeat.overall(snapshot.health),
            quota_day=quota.quota_day(now),
            quota_used=snapshot.quota_used,
            quota_limit=snapshot.quota_limit,
            outbox=outbox,
            failed_runs=[
                FailedRun(
                    int(row.id), int(row.schedule_id), row.name, row.tz, row.slot,
                    row.finished_at, _shown(settings, row.error),
                )
                for row in conn.execute(failed_runs)
            ],
            failed_messages=[
                FailedMessage(
                    int(row.id), row.type, row.recipient, row.reason_code, row.updated_at,
                    row.tz, _shown(settings, row.last_error),
                )
                for row in conn.execute(failed_messages)
            ],
            failed_commands=[
                FailedCommand(
                    row.command, row.started_at, row.finished_at, row.outcome, row.exit_code
                )
                for row in conn.execute(failed_commands)
            ],
            digests=dict(snapshot.digests),
            distribution=None if dist is None else _distribution(dist),
        )  # fmt: skip

    return db.transaction(work, read_only=True)


def _shown(settings: Settings, text: str | None) -> str | None:
    """An error text as a page may show it: every configured secret masked."""
    return None if text is None else settings.redact(text)


def _distribution(row: Any) -> Distribution:
    plan = row.plan if isinstance(row.plan, dict) else {}
    return Distribution(
        business_date=row.business_date,
        status=row.status,
        reason=None if row.reason is None else scrub(row.reason),
        users=None if row.users is None else int(row.users),
        campaigns=len(plan.get("campaigns") or ()),
        finished_at=row.finished_at,
    )


# --- schedules -----------------------------------------------------------------------


@dataclass(frozen=True)
class ScheduleRow:
    """One schedule as the pages show it; ``schedule`` None when its row cannot be
    decoded (edited by hand), with ``problem`` saying why."""

    id: int
    account: str
    name: str
    tz: str
    active: bool
    next_run_at: datetime | None
    schedule: Schedule | None
    problem: str | None = None
    last_run_slot: datetime | None = None
    last_run_status: str | None = None
    last_run_manual: bool = False

    @property
    def description(self) -> str:
        return self.schedule.cadence.describe() if self.schedule else "cannot be read"


def _schedule_row(row: Any) -> ScheduleRow:
    schedule: Schedule | None = None
    problem = None
    try:
        schedule = Schedule.from_row(row)
    except SchedctlError as exc:
        problem = exc.message
    return ScheduleRow(
        id=int(row.id),
        account=row.account_name,
        name=row.name,
        tz=row.tz,
        active=bool(row.active),
        next_run_at=row.next_run_at,
        schedule=schedule,
        problem=problem,
        last_run_slot=row.last_slot,
        last_run_status=row.last_status,
        last_run_manual=bool(row.last_manual),
    )


def _schedules_query(account_id: int | None) -> sa.Select[Any]:
    r = schedule_runs.c
    # The run of the newest slot, as `schedules list`'s last_run_at is that slot (a
    # backfill made after a manual run adds older slots, not a later run).
    latest = (
        sa.select(r.schedule_id, sa.func.max(r.slot).label("slot"))
        .where(*_own(schedule_runs, account_id))
        .group_by(r.schedule_id)
        .subquery()
    )
    last = schedule_runs.alias("last_run")
    return (
        sa.select(
            schedules,
            accounts.c.name.label("account_name"),
            last.c.slot.label("last_slot"),
            last.c.status.label("last_status"),
            last.c.manual.label("last_manual"),
        )
        .join(accounts, accounts.c.id == schedules.c.account_id)
        .outerjoin(latest, latest.c.schedule_id == schedules.c.id)
        .outerjoin(
            last, sa.and_(last.c.schedule_id == latest.c.schedule_id, last.c.slot == latest.c.slot)
        )
        .where(*_own(schedules, account_id))
    )


def schedule_rows(db: Database, account_id: int | None) -> list[ScheduleRow]:
    """Every schedule (of the account), by account and name, with its latest run."""
    query = _schedules_query(account_id).order_by(accounts.c.name, schedules.c.name, schedules.c.id)
    rows = db.transaction(lambda conn: conn.execute(query).all(), read_only=True)
    return [_schedule_row(row) for row in rows]


@dataclass(frozen=True)
class ScheduleDetail:
    row: ScheduleRow
    recipients: tuple[str, ...]
    catchup: str
    max_lateness_s: int | None
    runs: list[RunRecord] = field(default_factory=list)


def schedule_detail(
    db: Database, settings: Settings, account_id: int | None, schedule_id: int
) -> ScheduleDetail:
    """One schedule and its newest runs; NotFound if it is not (in the account)."""
    query = _schedules_query(account_id).where(schedules.c.id == schedule_id)

    def work(conn: sa.Connection) -> Any:
        get_owned(conn, schedules, schedule_id, account_id, columns=[schedules.c.id])
        return conn.execute(query).one()

    found = db.transaction(work, read_only=True)
    row = _schedule_row(found)
    runs = [
        replace(run, error=_shown(settings, run.error))
        for run in run_history(db, int(found.account_id), schedule_id, RUNS_SHOWN)
    ]
    return ScheduleDetail(
        row=row,
        recipients=tuple(found.recipients or ()),
        catchup=found.catchup,
        max_lateness_s=found.max_lateness_s,
        runs=runs,
    )


# --- messages ------------------------------------------------------------------------


@dataclass(frozen=True)
class MessageRow:
    id: int
    account: str
    type: str
    recipient: str | None
    subject: str
    send_at: datetime
    status: str
    reason_code: str | None
    attempts: int
    sent_at: datetime | None
    expires_at: datetime | None
    tz: str | None


@dataclass(frozen=True)
class MessagePage:
    messages: list[MessageRow]
    total: int
    page: int
    pages: int
    status: str | None
    type: str | None
    types: list[str]  # the types held, for the filter


def _message_columns() -> list[Any]:
    m = messages.c
    return [
        m.id, accounts.c.name.label("account_name"), m.type, m.recipient, m.subject,
        m.send_at, m.status, m.reason_code, m.attempts, m.sent_at, m.expires_at,
        _message_zone(),
    ]  # fmt: skip


def _message_row(row: Any) -> MessageRow:
    return MessageRow(
        id=int(row.id),
        account=row.account_name,
        type=row.type,
        recipient=row.recipient,
        subject=row.subject,
        send_at=row.send_at,
        status=row.status,
        reason_code=row.reason_code,
        attempts=int(row.attempts),
        sent_at=row.sent_at,
        expires_at=row.expires_at,
        tz=row.tz,
    )


def message_page(
    db: Database,
    account_id: int | None,
    *,
    status: str | None = None,
    type: str | None = None,
    page: int = 1,
) -> MessagePage:
    """One page of messages (PAGE_SIZE), newest send time first, optionally filtered."""
    m = messages.c
    where = [*_own(messages, account_id)]
    if status is not None:
        where.append(m.status == status)
    if type is not None:
        where.append(m.type == type)
    count = sa.select(sa.func.count()).select_from(messages).where(*where)
    listing = (
        sa.select(*_message_columns())
        .join(accounts, accounts.c.id == m.account_id)
        .where(*where)
        .order_by(m.send_at.desc(), m.id.desc())
        .limit(PAGE_SIZE)
        .offset((page - 1) * PAGE_SIZE)
    )
    types = sa.select(m.type).where(*_own(messages, account_id)).distinct().order_by(m.type)

    def work(conn: sa.Connection) -> MessagePage:
        total = int(conn.execute(count).scalar_one())
        return MessagePage(
            messages=[_message_row(row) for row in conn.execute(listing)],
            total=total,
            page=page,
            pages=max(1, math.ceil(total / PAGE_SIZE)),
            status=status,
            type=type,
            types=list(conn.execute(types).scalars()),
        )

    return db.transaction(work, read_only=True)


@dataclass(frozen=True)
class MessageDetail:
    message: MessageRow
    priority: str
    last_error: str | None
    created_at: datetime
    updated_at: datetime
    attempts: Sequence[dict[str, Any]]  # outbox.attempts_of's, details masked


def message_detail(
    db: Database, settings: Settings, account_id: int | None, message_id: int
) -> MessageDetail:
    """One message and every attempt to send it (email_log); NotFound if it is not
    (in the account)."""
    m = messages.c
    query = (
        sa.select(*_message_columns(), m.priority, m.last_error, m.created_at, m.updated_at)
        .join(accounts, accounts.c.id == m.account_id)
        .where(m.id == message_id)
    )

    def work(conn: sa.Connection) -> MessageDetail:
        owner = get_owned(conn, messages, message_id, account_id, "message", columns=[m.account_id])
        row = conn.execute(query).one()
        attempts = outbox.attempts_of(conn, message_id, int(owner.account_id))
        return MessageDetail(
            message=_message_row(row),
            priority=row.priority,
            last_error=_shown(settings, row.last_error),
            created_at=row.created_at,
            updated_at=row.updated_at,
            attempts=[{**a, "detail": _shown(settings, a["detail"])} for a in attempts],
        )

    return db.transaction(work, read_only=True)


# --- the badge -----------------------------------------------------------------------


def command_status(db: Database, settings: Settings, command: str) -> heartbeat.Status:
    """One command's heartbeat status, judged as `heartbeat --command C` judges it (on
    the database server's clock)."""
    (health,) = heartbeat.report_now(db, settings, only=[command])
    return health.status or "unknown"
