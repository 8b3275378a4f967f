"""Users: who gets notifications and a daily digest (SPEC §5, §11).

A user belongs to one account and is known there by an e-mail address (normalised,
unique in the account), an IANA zone and the local time of day (``HH:MM``) from which
their daily digest is due. Values are validated with the parsers schedules use
(``values.parse_timezone``, ``values.parse_hhmm``, ``values.validate_email``) before
anything is written. Like the schedules module, every function filters by
``account_id`` itself; on PostgreSQL the caller's Database is also scoped to the
account for row-level security.

Removing a user removes their notifications and digest tracking rows (ON DELETE
CASCADE); their unsent messages (digests, critical notifications) are skipped with
reason USER_REMOVED and emptied of the notifications' text, after any dispatcher
sending one of them right now has finished (it holds the message's lease); sent
messages stay in the audit.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, TypeVar

import sqlalchemy as sa

from schedctl import leases
from schedctl.cadence import PlannedSlot, make_cadence, upcoming_slots
from schedctl.db.database import Database
from schedctl.db.owned import get_owned
from schedctl.db.schema import digests, messages, notifications, users
from schedctl.delivery.outbox import PENDING
from schedctl.errors import ConflictError, TemporaryError, ValidationError
from schedctl.values import parse_hhmm, parse_id, parse_timezone, validate_email

DEFAULT_TZ = "UTC"
DEFAULT_DIGEST_AT = "08:00"
T = TypeVar("T")


@dataclass(frozen=True)
class UserChanges:
    """Validated values for a new user or an update; None means "not given"."""

    email: str | None = None
    tz: str | None = None
    digest_at: str | None = None  # normalised HH:MM
    digest_enabled: bool | None = None

    @property
    def empty(self) -> bool:
        return all(value is None for value in vars(self).values())

    def columns(self) -> dict[str, Any]:
        values = {
            "email": self.email,
            "tz": self.tz,
            "digest_time": self.digest_at,
            "digest_enabled": self.digest_enabled,
        }
        return {key: value for key, value in values.items() if value is not None}


def parse_tz(text: str) -> str:
    """An IANA zone name, validated as schedules' ``--tz`` is."""
    name = text.strip()
    parse_timezone(name)
    return name


def parse_digest_at(text: str) -> str:
    """A local time of day, validated as schedules' ``--at`` is, as ``HH:MM``."""
    return f"{parse_hhmm(text):%H:%M}"


def parse_changes(
    *,
    email: str | None = None,
    tz: str | None = None,
    digest_at: str | None = None,
    digest_enabled: bool | None = None,
) -> UserChanges:
    """Validate raw command-line values (ValidationError, exit 2, on the first bad one)."""
    return UserChanges(
        email=None if email is None else validate_email(email),
        tz=None if tz is None else parse_tz(tz),
        digest_at=None if digest_at is None else parse_digest_at(digest_at),
        digest_enabled=digest_enabled,
    )


def user_condition(ref: str) -> sa.ColumnElement[bool]:
    """The WHERE clause for a user given by id or e-mail address (ValidationError if neither)."""
    text = ref.strip()
    if "@" in text:
        return users.c.email == validate_email(text)
    if text.isdigit():  # out of range, or not ASCII digits: parse_id says so
        return users.c.id == parse_id(text, "user")
    raise ValidationError(f"invalid user {ref!r} (expected an id or an e-mail address)")


def find_user(conn: sa.Connection, account_id: int, ref: str, *, lock: bool = False) -> sa.Row[Any]:
    """The account's user given by id or e-mail address, or NotFound (exit 2)."""
    condition = user_condition(ref)
    return get_owned(conn, users, condition, account_id, "user", label=ref.strip(), lock=lock)


def user_summary(row: Any) -> dict[str, Any]:
    """The keys of `users list` (SPEC §11)."""
    return {
        "id": str(row.id),
        "email": row.email,
        "tz": row.tz,
        "digest_enabled": bool(row.digest_enabled),
        "digest_at": row.digest_time,
    }


def digest_times(
    conn: sa.Connection, account_id: int, ref: str, start: datetime, count: int
) -> tuple[sa.Row[Any], list[PlannedSlot]]:
    """A user and the first ``count`` instants at or after ``start`` from which their
    daily digest is due (none when it is off), each with the adjustment §3's rules
    made to the local time, if any."""
    row = find_user(conn, account_id, ref)
    if not row.digest_enabled:
        return row, []
    try:
        cadence = make_cadence("daily", tz=row.tz, at=row.digest_time)
    except ValidationError as exc:  # a row an application wrote with a bad zone or time
        raise ValidationError(f"user {row.id} cannot be read: {exc.message}") from None
    return row, upcoming_slots(cadence, start, count)


def _email_taken(email: str) -> ValidationError:
    return ValidationError(f"a user with e-mail {email} exists already in this account")


def _check_email_free(conn: sa.Connection, account_id: int, email: str, own_id: int | None) -> None:
    query = sa.select(users.c.id).where(users.c.account_id == account_id, users.c.email == email)
    if own_id is not None:
        query = query.where(users.c.id != own_id)
    if conn.execute(query).first() is not None:
        raise _email_taken(email)


def write(db: Database, work: Callable[[sa.Connection], T], email: str | None) -> T:
    """Run ``work`` (add or update) in a transaction; a concurrent writer of the same
    address (the unique key, after the check above lost the race) is exit 2 too."""
    try:
        return db.transaction(work)
    except ConflictError as exc:
        if email is not None and exc.constraint and "users" in exc.constraint:
            raise _email_taken(email) from None
        raise


def add_user(
    conn: sa.Connection, account_id: int, changes: UserChanges, now: datetime
) -> sa.Row[Any]:
    """Insert a user (defaults: zone UTC, digest on at 08:00); returns the new row."""
    if changes.email is None:
        raise ValidationError("a user needs an e-mail address")
    _check_email_free(conn, account_id, changes.email, None)
    values = {
        "tz": DEFAULT_TZ,
        "digest_time": DEFAULT_DIGEST_AT,
        "digest_enabled": True,
        **changes.columns(),
    }
    statement = (
        users.insert()
        .values(account_id=account_id, created_at=now, updated_at=now, **values)
        .returning(users)
    )
    return conn.execute(statement).one()


def list_users(conn: sa.Connection, account_id: int) -> list[sa.Row[Any]]:
    """The account's users, by e-mail address."""
    query = sa.select(users).where(users.c.account_id == account_id).order_by(users.c.email)
    return list(conn.execute(query))


def update_user(
    conn: sa.Connection, account_id: int, ref: str, changes: UserChanges, now: datetime
) -> sa.Row[Any]:
    """Apply ``changes`` to the user given by id or e-mail; returns the new row."""
    if changes.empty:
        raise ValidationError("nothing to update: give --email, --tz, --digest-at or --[no-]digest")
    existing = find_user(conn, account_id, ref, lock=True)
    if changes.email is not None:
        _check_email_free(conn, account_id, changes.email, existing.id)
    statement = (
        users.update()
        .where(users.c.id == existing.id, users.c.account_id == account_id)
        .values(**changes.columns(), updated_at=now)
        .returning(users)
    )
    return conn.execute(statement).one()


@dataclass(frozen=True)
class Removed:
    id: int
    email: str
    notifications_deleted: int
    digests_deleted: int
    messages_skipped: int  # unsent mail that carried their notifications: skipped


USER_REMOVED = "USER_REMOVED"  # the reason code of a removed user's unsent messages
REMOVED_SUBJECT = "(removed: the user was deleted)"
# How long `users remove` waits for a dispatcher sending one of the user's messages.
REMOVE_WAIT = timedelta(seconds=30)


class UserBusy(TemporaryError):
    """Some of the user's messages are being sent right now."""


def _unsent_messages(conn: sa.Connection, account_id: int, user_id: int) -> list[Any]:
    """The user's unsent messages (their digests and critical notifications), locked."""
    m = messages.c
    carried = sa.union(
        sa.select(digests.c.message_id).where(digests.c.user_id == user_id),
        sa.select(notifications.c.message_id).where(notifications.c.user_id == user_id),
    ).subquery()
    query = sa.select(m.id, m.lease_expires_at).where(
        m.account_id == account_id,
        m.status.in_(PENDING),
        sa.or_(
            m.id.in_(sa.select(carried.c.message_id)),
            # a digest whose tracking row reconcile purged already
            m.idempotency_key.startswith(f"digest:{user_id}:", autoescape=True),
        ),
    )
    return list(conn.execute(query.with_for_update()))


def remove_user(conn: sa.Connection, account_id: int, ref: str, now: datetime) -> Removed:
    """Delete a user, and with it (cascade) their notifications and digest rows; their
    unsent messages are skipped (USER_REMOVED) and emptied of the notifications' text.

    A message of theirs under a live lease is being sent right now: UserBusy, and
    nothing is changed (see :func:`remove_user_waiting`).
    """
    row = find_user(conn, account_id, ref, lock=True)
    # Lock their notifications first: a tick queueing one of them right now commits
    # its message before we look for messages (and one that starts later skips them).
    conn.execute(
        sa.select(notifications.c.id).where(notifications.c.user_id == row.id).with_for_update()
    )
    unsent = _unsent_messages(conn, account_id, int(row.id))
    busy = sum(1 for m in unsent if leases.is_live(m, now))
    if busy:
        raise UserBusy(
            f"user {ref.strip()}: {busy} of their messages are being sent right now;"
            " nothing was removed; try again shortly"
        )

    def count(table: sa.Table) -> int:
        query = sa.select(sa.func.count()).select_from(table).where(table.c.user_id == row.id)
        return int(conn.execute(query).scalar_one())

    if unsent:
        conn.execute(
            messages.update()
            .where(messages.c.id.in_([m.id for m in unsent]))
            .values(
                status="skipped",
                reason_code=USER_REMOVED,
                subject=REMOVED_SUBJECT,
                body_text="",
                body_html=None,
                attachments=None,
                next_attempt_at=None,
                updated_at=now,
                **leases.CLEARED,
            )
        )
    removed = Removed(int(row.id), row.email, count(notifications), count(digests), len(unsent))
    conn.execute(users.delete().where(users.c.id == row.id, users.c.account_id == account_id))
    return removed


def remove_user_waiting(
    db: Database, account_id: int, ref: str, now: datetime, wait: timedelta | None = None
) -> Removed:
    """:func:`remove_user`, waiting up to ``wait`` for a dispatcher sending one of the
    user's messages to record its outcome (then that message is sent, not skipped);
    still busy after that: UserBusy (exit 75, nothing changed). ``wait`` defaults to
    REMOVE_WAIT."""
    return leases.wait_while_held(
        lambda at: db.transaction(lambda conn: remove_user(conn, account_id, ref, at)),
        now,
        REMOVE_WAIT if wait is None else wait,
        UserBusy,
    )
