"""The outbox: every e-mail schedctl sends is first a row in `messages`.

Producers (schedule runs, digests, events, alerts) call :func:`enqueue` inside their
own transaction, so a message exists exactly when the work that produced it
committed. The idempotency key is unique: enqueueing the same key twice is a no-op,
which is what makes a rerun after a crash safe.
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

import sqlalchemy as sa

from schedctl.db import dialect
from schedctl.db.schema import messages
from schedctl.delivery.message import make_message_id

Priority = Literal["normal", "critical"]
STATUSES = ("scheduled", "paused", "blocked", "retrying", "sent", "failed", "skipped")


@dataclass(frozen=True)
class Attachment:
    filename: str
    content_type: str
    content: bytes

    def as_json(self) -> dict[str, str]:
        return {
            "filename": self.filename,
            "content_type": self.content_type,
            "content_b64": base64.b64encode(self.content).decode("ascii"),
        }

    @classmethod
    def from_json(cls, data: dict[str, str]) -> Attachment:
        return cls(data["filename"], data["content_type"], base64.b64decode(data["content_b64"]))


@dataclass(frozen=True)
class NewMessage:
    """A message to put in the outbox."""

    account_id: int
    type: str
    recipient: str | None
    subject: str
    body_text: str
    send_at: datetime
    idempotency_key: str
    body_html: str | None = None
    priority: Priority = "normal"
    attachments: Sequence[Attachment] = field(default_factory=tuple)
    subscription: bool = False
    schedule_run_id: int | None = None
    event_id: int | None = None
    status: str = "scheduled"
    reason_code: str | None = None


def mail_domain(mail_from: str) -> str:
    """The domain Message-IDs are minted under: that of the sender address."""
    address = mail_from.rsplit("<", 1)[-1].rstrip(">").strip()
    return address.rsplit("@", 1)[-1] if "@" in address else "localhost"


def enqueue(
    conn: sa.Connection, items: Sequence[NewMessage], *, now: datetime, domain: str
) -> list[int]:
    """Insert messages, skipping idempotency keys that exist; return the new ids."""
    rows: list[dict[str, Any]] = [
        {
            "account_id": m.account_id,
            "type": m.type,
            "priority": m.priority,
            "recipient": m.recipient,
            "subject": m.subject,
            "body_text": m.body_text,
            "body_html": m.body_html,
            "attachments": [a.as_json() for a in m.attachments] or None,
            "subscription": m.subscription,
            "send_at": m.send_at,
            "status": m.status,
            "reason_code": m.reason_code,
            "attempts": 0,
            "idempotency_key": m.idempotency_key,
            "message_id": make_message_id(m.idempotency_key, domain),
            "schedule_run_id": m.schedule_run_id,
            "event_id": m.event_id,
            "created_at": now,
            "updated_at": now,
        }
        for m in items
    ]
    inserted = dialect.insert_ignore(
        conn, messages, rows, ["idempotency_key"], returning=[messages.c.id]
    )
    return [int(row.id) for row in inserted]
