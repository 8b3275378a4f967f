"""Notifications: what applications tell a user, by digest or at once (SPEC §5).

Rows come from `schedctl notify` or from applications inserting into the table
directly (a public interface, documented in the README). A ``normal`` notification
waits for the user's daily digest; a ``critical`` one is turned into a message by the
next `tick` (:func:`queue_critical_notifications`): one NOTIFICATION message per
notification, priority critical (so the daily quota does not hold it back; the
suppression list still does), keyed ``notification:{id}`` in the outbox. The
notification's ``message_id`` and ``consumed_at`` are set in the same transaction as
the enqueue, and pending notifications are claimed with SKIP LOCKED (SQLite: its
write lock), so any number of concurrent ticks queue each one exactly once.

A notification the user has already read (``read_at`` set) is never sent.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from schedctl import quarantine
from schedctl.config import Settings
from schedctl.db import dialect
from schedctl.db.database import Database
from schedctl.db.schema import messages, notifications, users
from schedctl.delivery.outbox import NewMessage, enqueue, mail_domain
from schedctl.errors import ValidationError
from schedctl.users import find_user

PRIORITIES = ("normal", "critical")
MAX_TITLE = 500
MAX_BODY = 20_000
MAX_KEY = 200
MAX_SUBJECT = 200
MESSAGE_TYPE = "NOTIFICATION"
QUEUE_BATCH = 100


def idempotency_key(notification_id: int) -> str:
    """The outbox key of a critical notification's message."""
    return f"notification:{notification_id}"


# --- parsing (pure) ------------------------------------------------------------------


def parse_priority(text: str) -> str:
    value = text.strip().lower()
    if value not in PRIORITIES:
        raise ValidationError(f"invalid priority {text!r} (expected normal or critical)")
    return value


def parse_title(text: str) -> str:
    title = text.strip()
    if not title:  # the table refuses it too (notifications_title_check)
        raise ValidationError("a notification title must not be blank")
    if len(title) > MAX_TITLE:
        raise ValidationError(
            f"a notification title must be at most {MAX_TITLE} characters (got {len(title)})"
        )
    return title


def parse_body(text: str) -> str | None:
    body = text.strip()
    if len(body) > MAX_BODY:
        raise ValidationError(
            f"a notification body must be at most {MAX_BODY} characters (got {len(body)})"
        )
    return body or None


def parse_key(text: str) -> str:
    key = text.strip()
    if not key or len(key) > MAX_KEY:
        raise ValidationError(f"a digest key must be 1-{MAX_KEY} characters")
    return key


# --- notify --------------------------------------------------------------------------


def add_notification(
    conn: sa.Connection,
    account_id: int,
    user_ref: str,
    now: datetime,
    *,
    title: str,
    body: str | None = None,
    priority: str = "normal",
    key: str | None = None,
) -> int:
    """Record a notification for the account's user given by id or e-mail; its id."""
    values = {
        "title": parse_title(title),
        "body": None if body is None else parse_body(body),
        "priority": parse_priority(priority),
        "digest_key": None if key is None else parse_key(key),
    }
    user = find_user(conn, account_id, user_ref)
    statement = (
        notifications.insert()
        .values(account_id=user.account_id, user_id=user.id, created_at=now, **values)
        .returning(notifications.c.id)
    )
    return int(conn.execute(statement).scalar_one())


# --- tick: critical notifications ----------------------------------------------------


def _pending_critical() -> sa.ColumnElement[bool]:
    # The index notifications_critical_pending serves all but digest_id; a
    # notification whose message was deleted (message_id SET NULL) stays consumed.
    # A quarantined notification is consumed too; one whose user is quarantined waits.
    return sa.and_(
        notifications.c.priority == "critical",
        notifications.c.message_id.is_(None),
        notifications.c.read_at.is_(None),
        notifications.c.digest_id.is_(None),
        notifications.c.consumed_at.is_(None),
        ~sa.exists().where(users.c.id == notifications.c.user_id, ~quarantine.active(users)),
    )


def _subject(title: str) -> str:
    line = " ".join(title.split())
    return line if len(line) <= MAX_SUBJECT else line[: MAX_SUBJECT - 1] + "\u2026"


def clip(text: str | None, limit: int, length: int | None = None) -> str | None:
    """``text`` (``length`` characters in the database, when only its start was read)
    cut to ``limit`` characters with a visible marker saying how much is left out: the
    body of a notification as a digest or a critical message shows it."""
    if text is None:
        return None
    length = len(text) if length is None else length
    if length <= limit:
        return text
    return text[:limit] + f"\u2026 [truncated: {length - limit} more characters]"


def read_limited(column: sa.ColumnElement[Any], limit: int) -> list[sa.ColumnElement[Any]]:
    """``column`` as read for display: its first ``limit`` characters (a huge body
    never leaves the database in full) and, as ``{name}_length``, its length (-1 for
    a text holding a NUL character: see dialect.text_length)."""
    return [
        sa.func.substr(column, 1, limit).label(column.key),
        dialect.text_length(column).label(f"{column.key}_length"),
    ]


def text_problem(row: Any) -> str | None:
    """What makes a notification row unusable, or None (see schedctl.quarantine)."""
    return quarantine.first_problem(
        quarantine.text_problem(row.title, "title", required=True),
        _nul_problem(row, "title"),
        quarantine.text_problem(row.body, "body"),
        _nul_problem(row, "body"),
        quarantine.text_problem(getattr(row, "digest_key", None), "digest_key"),
    )


def _nul_problem(row: Any, name: str) -> str | None:
    length = getattr(row, f"{name}_length", None)
    return quarantine.NUL_PROBLEM.format(name) if isinstance(length, int) and length < 0 else None


def _message(row: Any, email: str, account_id: int, now: datetime, max_body: int) -> NewMessage:
    from schedctl.render import render_pair  # jinja2 on demand

    text, html = render_pair(
        "notification",
        title=clip(row.title, MAX_TITLE, row.title_length),
        body=clip(row.body, max_body, row.body_length),
        created_at=row.created_at,
    )
    return NewMessage(
        # The user's account: its suppression list is the one that applies.
        account_id=account_id,
        type=MESSAGE_TYPE,
        priority="critical",
        recipient=email,
        subject=_subject(row.title),
        body_text=text,
        body_html=html,
        send_at=now,
        idempotency_key=idempotency_key(row.id),
    )


@dataclass
class _Queued:
    queued: int = 0  # messages enqueued
    claimed: int = 0  # notifications the batch claimed
    found: quarantine.Found = field(default_factory=quarantine.Found)


def _read_users(conn: sa.Connection, user_ids: list[int]) -> tuple[dict[int, Any], dict[int, str]]:
    """The recipients' rows by id, and the users that cannot be read (id: reason)."""
    query = sa.select(users.c.id, users.c.email, users.c.account_id)
    rows, bad = quarantine.read_rows(conn, query, users.c.id, user_ids)
    found = {}
    for row in rows:
        problem = quarantine.text_problem(row.email, "email", required=True)
        if problem:
            bad[int(row.id)] = problem
        else:
            found[int(row.id)] = row
    return found, bad


def _queue_batch(conn: sa.Connection, settings: Settings, now: datetime) -> _Queued:
    """Claim one batch of pending critical notifications and enqueue their messages;
    a notification or user that cannot be read or rendered is quarantined."""
    claim = (
        sa.select(notifications.c.id)
        .where(_pending_critical())
        .order_by(notifications.c.id)
        .limit(QUEUE_BATCH)
    )
    ids = [int(i) for i in conn.execute(claim.with_for_update(skip_locked=True)).scalars()]
    outcome = _Queued(claimed=len(ids))
    if not ids:
        return outcome
    max_body = settings.digest_max_body_chars
    n = notifications.c
    query = sa.select(
        n.id, n.user_id, *read_limited(n.title, MAX_TITLE), *read_limited(n.body, max_body),
        n.created_at,
    ).order_by(n.id)  # fmt: skip
    rows, bad = quarantine.read_rows(conn, query, n.id, ids)
    recipients, bad_users = _read_users(conn, sorted({int(r.user_id) for r in rows}))
    items = []
    for row in rows:
        user = recipients.get(int(row.user_id))
        if user is None:  # the user is quarantined below: the notification waits
            continue
        problem = text_problem(row)
        if problem is None:
            try:
                items.append(_message(row, user.email, int(user.account_id), now, max_body))
            except Exception as exc:  # one notification's content must not stop the tick
                problem = f"cannot be rendered ({type(exc).__name__}: {exc})"
        if problem is not None:
            bad[int(row.id)] = problem
    quarantine.mark(conn, notifications, bad, now)
    quarantine.mark(conn, users, bad_users, now)
    outcome.found.add("notifications", bad)
    outcome.found.add("users", bad_users)
    created = enqueue(conn, items, now=now, domain=mail_domain(settings.mail_from))
    _link(conn, [m.idempotency_key for m in items], now)
    outcome.queued = len(created)
    return outcome


def _link(conn: sa.Connection, keys: Sequence[str], now: datetime) -> None:
    """Record on each notification the message that carries it (in this transaction)."""
    found = conn.execute(
        sa.select(messages.c.id, messages.c.idempotency_key).where(
            messages.c.idempotency_key.in_(keys)
        )
    ).all()
    if not found:
        return
    links = [
        {"nid": int(key.rpartition(":")[2]), "mid": int(message_id)} for message_id, key in found
    ]
    conn.execute(
        notifications.update()
        .where(notifications.c.id == sa.bindparam("nid"))
        .values(message_id=sa.bindparam("mid"), consumed_at=now),
        links,
    )


def queue_critical_notifications(
    db: Database, settings: Settings, now: datetime, found: quarantine.Found | None = None
) -> int:
    """Turn every pending critical notification into a message; how many were queued.
    The rows quarantined on the way are added to ``found``."""
    total = 0
    while True:
        batch = db.transaction(lambda conn: _queue_batch(conn, settings, now))
        total += batch.queued
        if found is not None:
            found.merge(batch.found)
        if batch.claimed < QUEUE_BATCH:
            return total
