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
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from schedctl.config import Settings
from schedctl.db import dialect
from schedctl.db.database import Database
from schedctl.db.schema import messages, notifications, users
from schedctl.errors import ValidationError
from schedctl.outbox import NewMessage, enqueue, mail_domain
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
    if not title or len(title) > MAX_TITLE:
        raise ValidationError(f"a notification title must be 1-{MAX_TITLE} characters")
    return title


def parse_body(text: str) -> str | None:
    body = text.strip()
    if len(body) > MAX_BODY:
        raise ValidationError(f"a notification body must be at most {MAX_BODY} characters")
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
    return sa.and_(
        notifications.c.priority == "critical",
        notifications.c.message_id.is_(None),
        notifications.c.read_at.is_(None),
        notifications.c.digest_id.is_(None),
        notifications.c.consumed_at.is_(None),
    )


def _subject(title: str) -> str:
    line = " ".join(title.split())
    return line if len(line) <= MAX_SUBJECT else line[: MAX_SUBJECT - 1] + "\u2026"


def _message(row: Any, now: datetime) -> NewMessage:
    from schedctl.delivery.templating import render_pair  # jinja2 on demand

    text, html = render_pair(
        "notification", title=row.title, body=row.body, created_at=row.created_at
    )
    return NewMessage(
        # The user's account: its suppression list is the one that applies.
        account_id=row.user_account_id,
        type=MESSAGE_TYPE,
        priority="critical",
        recipient=row.email,
        subject=_subject(row.title),
        body_text=text,
        body_html=html,
        send_at=now,
        idempotency_key=idempotency_key(row.id),
    )


def _queue_batch(conn: sa.Connection, settings: Settings, now: datetime) -> tuple[int, int]:
    """Claim one batch of pending critical notifications and enqueue their messages:
    (messages queued, notifications claimed)."""
    claim = (
        sa.select(notifications.c.id)
        .where(_pending_critical())
        .order_by(notifications.c.id)
        .limit(QUEUE_BATCH)
    )
    ids = [int(i) for i in conn.execute(dialect.claim(claim, conn)).scalars()]
    if not ids:
        return 0, 0
    query = (
        sa.select(
            notifications.c.id,
            notifications.c.title,
            notifications.c.body,
            notifications.c.created_at,
            users.c.email,
            users.c.account_id.label("user_account_id"),
        )
        .select_from(notifications.join(users, users.c.id == notifications.c.user_id))
        .where(notifications.c.id.in_(ids))
        .order_by(notifications.c.id)
    )
    items = [_message(row, now) for row in conn.execute(query)]
    created = enqueue(conn, items, now=now, domain=mail_domain(settings.mail_from))
    _link(conn, [m.idempotency_key for m in items], now)
    return len(created), len(ids)


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


def queue_critical_notifications(db: Database, settings: Settings, now: datetime) -> int:
    """Turn every pending critical notification into a message; how many were queued."""
    total = 0
    while True:
        queued, claimed = db.transaction(lambda conn: _queue_batch(conn, settings, now))
        total += queued
        if claimed < QUEUE_BATCH:
            return total
