"""The usage history: each account's sends of a UTC day, kept after the log is purged
(SPEC §8; seed "Email System & Cron Jobs": the nightly snapshot before the counter
resets).

``reconcile`` counts the day's attempts in ``email_log`` per account, message type and
outcome (``sent``, ``retry``, ``failed``, ``deferred``, ``unknown``) and writes one
``usage_history`` row per (account, day, type, outcome). A rerun brings the day up to
date in place -- a total that changed is updated, a combination that is gone (its
messages were deleted: their attempts now count as type UNKNOWN) is removed -- so the
snapshot is idempotent and any number of reruns or concurrent runs leave the same rows.

An account's day is never made smaller: once ``email_log`` holds fewer of its attempts
than the stored snapshot counts, its log was purged (or the clock is behind, reading
a day long gone), and the stored rows are kept as they are.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

import sqlalchemy as sa

from schedctl.db import dialect
from schedctl.db.database import Database
from schedctl.db.schema import email_log, messages, usage_history
from schedctl.errors import ValidationError

log = logging.getLogger("schedctl.usage")

UNKNOWN_TYPE = "UNKNOWN"  # the type of an attempt whose message was deleted since
Key = tuple[int, str, str]  # (account_id, message_type, outcome)


def snapshot_days(now: datetime, requested: date | None, log_retention: timedelta) -> list[date]:
    """The UTC days a snapshot covers: ``requested``, else yesterday and today so far.

    A requested day after today, or older than ``email_log`` is kept (its attempts
    are purged: the snapshot would count too few), is refused (exit 2).
    """
    today = now.astimezone(UTC).date()
    if requested is None:
        return [today - timedelta(days=1), today]
    if requested > today:
        raise ValidationError(f"--date {requested.isoformat()} is after today ({today} UTC)")
    oldest = (now - log_retention).astimezone(UTC).date() + timedelta(days=1)
    if requested < oldest:
        raise ValidationError(
            f"--date {requested.isoformat()} is older than the email_log retention"
            f" (its oldest whole day is {oldest}): its attempts are purged"
        )
    return [requested]


@dataclass(frozen=True)
class DayChange:
    """How one day's stored snapshot must change: rows to write, keys to remove."""

    write: dict[Key, int] = field(default_factory=dict)
    remove: set[Key] = field(default_factory=set)
    kept_accounts: set[int] = field(default_factory=set)  # their log shrank: left alone

    @property
    def rows(self) -> int:
        return len(self.write) + len(self.remove)


def plan_day(stored: Mapping[Key, int], counted: Mapping[Key, int]) -> DayChange:
    """What turns a day's ``stored`` totals into the ``counted`` ones (pure).

    An account whose counted attempts add up to less than its stored ones keeps its
    stored rows: attempts are only ever added to a day's log, so fewer means purged.
    """

    def per_account(totals: Mapping[Key, int]) -> dict[int, int]:
        sums: dict[int, int] = {}
        for (account, _, _), total in totals.items():
            sums[account] = sums.get(account, 0) + total
        return sums

    had, has = per_account(stored), per_account(counted)
    kept = {account for account, total in had.items() if has.get(account, 0) < total}
    write = {
        key: total
        for key, total in counted.items()
        if key[0] not in kept and stored.get(key) != total
    }
    remove = {key for key in stored if key[0] not in kept and key not in counted}
    return DayChange(write, remove, kept)


def _bounds(day: date) -> tuple[datetime, datetime]:
    start = datetime.combine(day, time(), tzinfo=UTC)
    return start, start + timedelta(days=1)


def count_day(conn: sa.Connection, day: date) -> dict[Key, int]:
    """The day's attempts in ``email_log`` per (account, message type, outcome)."""
    start, end = _bounds(day)
    kind = sa.func.coalesce(messages.c.type, UNKNOWN_TYPE)
    query = (
        sa.select(email_log.c.account_id, kind, email_log.c.outcome, sa.func.count())
        .select_from(email_log.outerjoin(messages, messages.c.id == email_log.c.message_id))
        .where(email_log.c.attempted_at >= start, email_log.c.attempted_at < end)
        .group_by(email_log.c.account_id, kind, email_log.c.outcome)
    )
    return {(int(a), str(t), str(o)): int(n) for a, t, o, n in conn.execute(query)}


def stored_day(conn: sa.Connection, day: date) -> dict[Key, int]:
    """The day's snapshot as stored."""
    u = usage_history.c
    query = sa.select(u.account_id, u.message_type, u.outcome, u.total).where(u.day == day)
    return {(int(a), str(t), str(o)): int(n) for a, t, o, n in conn.execute(query)}


def _write(conn: sa.Connection, day: date, change: DayChange, now: datetime) -> int:
    rows: list[dict[str, Any]] = [
        {
            "account_id": account,
            "day": day,
            "message_type": kind,
            "outcome": outcome,
            "total": total,
            "created_at": now,
            "updated_at": now,
        }
        for (account, kind, outcome), total in sorted(change.write.items())
    ]
    written = dialect.upsert_changed(
        conn,
        usage_history,
        rows,
        ["account_id", "day", "message_type", "outcome"],
        compare=["total"],
        also=["updated_at"],
    )
    u = usage_history.c
    for account, kind, outcome in sorted(change.remove):
        written += conn.execute(
            usage_history.delete().where(
                u.day == day, u.account_id == account, u.message_type == kind, u.outcome == outcome
            )
        ).rowcount
    return written


@dataclass(frozen=True)
class Snapshot:
    """What a snapshot did (or, dry, would do)."""

    days: tuple[date, ...]
    rows: int  # usage_history rows written: inserted, updated or removed
    accounts: int  # accounts with attempts on those days
    kept: int  # account-days left as stored (their log shrank)


def take_snapshot(db: Database, now: datetime, days: list[date], *, dry_run: bool) -> Snapshot:
    """Bring the usage history of ``days`` up to date, one transaction per day."""
    rows = kept = 0
    accounts: set[int] = set()
    for day in days:

        def work(conn: sa.Connection, day: date = day) -> tuple[int, set[int], set[int]]:
            counted = count_day(conn, day)
            change = plan_day(stored_day(conn, day), counted)
            written = change.rows if dry_run else _write(conn, day, change, now)
            return written, {key[0] for key in counted}, change.kept_accounts

        written, seen, left = db.transaction(work, read_only=dry_run)
        for account in sorted(left):
            log.warning(
                "usage of account %s on %s: email_log has fewer attempts than the snapshot"
                " (purged, or a clock behind): the snapshot is kept",
                account,
                day,
            )
        rows += written
        accounts |= seen
        kept += len(left)
    return Snapshot(tuple(days), rows, len(accounts), kept)
