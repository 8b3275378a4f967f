"""The outbox: every e-mail schedctl sends is first a row in `messages`.

Producers (schedule runs, digests, events, alerts) call :func:`enqueue` inside their
own transaction, so a message exists exactly when the work that produced it
committed. The idempotency key is unique: enqueueing the same key twice is a no-op,
which is what makes a rerun after a crash safe. Each row's Message-ID is minted
once, at enqueue, from the key and the installation's id, and stored: every
attempt sends the same one.
"""

from __future__ import annotations

import base64
import enum
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal, NamedTuple

import sqlalchemy as sa

from schedctl import alerts, leases
from schedctl.db import dialect
from schedctl.db.owned import get_owned
from schedctl.db.schema import email_log, installation, messages
from schedctl.delivery.message import make_message_id
from schedctl.errors import SchemaMismatch, TemporaryError, ValidationError
from schedctl.vocabulary import MESSAGE_STATUSES

Priority = Literal["normal", "critical"]
STATUSES = MESSAGE_STATUSES


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
    expires_at: datetime | None = None  # not sent by then: skipped, EXPIRED (None: never)


def mail_domain(mail_from: str) -> str:
    """The domain Message-IDs are minted under: that of the sender address."""
    address = mail_from.rsplit("<", 1)[-1].rstrip(">").strip()
    return address.rsplit("@", 1)[-1] if "@" in address else "localhost"


def installation_id(conn: sa.Connection) -> str:
    """This database's random id (made by ``db upgrade``), which Message-IDs hash."""
    value = conn.execute(sa.select(installation.c.id)).scalar()
    if not value:
        raise SchemaMismatch("the database has no installation id (table installation is empty)")
    return str(value)


def enqueue(
    conn: sa.Connection, items: Sequence[NewMessage], *, now: datetime, domain: str
) -> list[int]:
    """Insert messages, skipping idempotency keys that exist; return the new ids."""
    if not items:
        return []
    install = installation_id(conn)
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
            "message_id": make_message_id(m.idempotency_key, domain, installation=install),
            "schedule_run_id": m.schedule_run_id,
            "event_id": m.event_id,
            "expires_at": m.expires_at,
            "created_at": now,
            "updated_at": now,
        }
        for m in items
    ]
    inserted = dialect.insert_ignore(
        conn, messages, rows, ["idempotency_key"], returning=[messages.c.id]
    )
    return [int(row.id) for row in inserted]


class AlikeMessages:
    """Enqueue batches of messages that are alike but for their account, recipient,
    subject, bodies and idempotency key -- one per user, nothing attached, sent as
    soon as due (the digest's) -- with one statement per batch, whatever its size
    (``dialect.RowInserter``; build it once per dialect). Message-IDs are minted as
    :func:`enqueue` mints them; an idempotency key that exists is skipped."""

    _COLUMNS = (
        "account_id", "recipient", "subject", "body_text", "body_html", "idempotency_key",
        "message_id",
    )  # fmt: skip
    _SAME = (
        "type", "priority", "subscription", "send_at", "status", "attempts", "created_at",
        "updated_at",
    )  # fmt: skip

    def __init__(
        self, sa_dialect: sa.Dialect, type: str, *, priority: Priority = "normal",
        subscription: bool = False,
    ) -> None:  # fmt: skip
        self.type = type
        self.priority = priority
        self.subscription = subscription
        self.insert = dialect.RowInserter(
            sa_dialect, messages, self._COLUMNS, same=self._SAME,
            conflict=["idempotency_key"], returning=["id", "idempotency_key"],
        )  # fmt: skip

    def __call__(
        self,
        conn: sa.Connection,
        rows: Sequence[tuple[int, str, str, str, str | None, str]],
        *,
        send_at: datetime,
        now: datetime,
        domain: str,
        installation: str,
    ) -> dict[str, int]:
        """Enqueue ``rows`` (account id, recipient, subject, text, html, idempotency
        key); the new messages' ids by key (a key that existed is absent)."""
        minted = [
            (*row, make_message_id(row[5], domain, installation=installation)) for row in rows
        ]
        same = {
            "type": self.type, "priority": self.priority, "subscription": self.subscription,
            "send_at": send_at, "status": "scheduled", "attempts": 0, "created_at": now,
            "updated_at": now,
        }  # fmt: skip
        return {key: int(new_id) for new_id, key in self.insert(conn, minted, same)}


# --- messages whose dispatcher died (SPEC §8) ---------------------------------------

LEASE_EXPIRED = "LEASE_EXPIRED"  # the reason code of a message whose dispatcher died
# The reason code of a message that got no reply after its data: the server may have it.
UNKNOWN_DELIVERY = "UNKNOWN_DELIVERY"
ABANDONED = "the dispatcher sending it stopped (lease expired); outcome unknown"
# The statuses a dispatcher claims (and leases) a message in.
CLAIMED_FROM = ("scheduled", "retrying")


def claimable() -> sa.ColumnElement[bool]:
    """The status condition of the claim, its statuses written into the SQL rather
    than bound: so the planner can prove that the partial index messages_claimable
    (whose predicate names them) applies, as it cannot for a prepared statement's
    generic plan."""
    statuses: sa.BindParameter[list[str]] = sa.bindparam(
        "claimable", list(CLAIMED_FROM), expanding=True, literal_execute=True, unique=True
    )
    return messages.c.status.in_(statuses)


def _after_expiry(expiry: leases.Expiry, now: datetime) -> dict[str, Any]:
    """A message whose dispatcher died holding it: ``retrying`` at once, or ``failed``
    when the lost attempt was its last -- LEASE_EXPIRED either way."""
    return {
        "status": "failed" if expiry.final else "retrying",
        "attempts": expiry.attempts,
        "reason_code": LEASE_EXPIRED,
        "last_error": ABANDONED,
        "next_attempt_at": None,
        "updated_at": now,
    }


# Messages as leased work (leases.recover, from dispatch's claim and reconcile): the
# attempt is counted when its outcome is recorded, so the lost one is counted here; one
# that fails for good is an alert.
LEASED_MESSAGES = leases.LeasedWork(
    messages,
    in_flight=messages.c.status.in_(CLAIMED_FROM),
    attempts=messages.c.attempts,
    counted_at_claim=False,
    after=_after_expiry,
    on_failed=alerts.record_failed_messages,
)


# --- operator commands: list, show, edit, delete (SPEC §7, §12) -----------------------

# Statuses in which a message may still be sent by dispatch or rescheduled.
PENDING = ("scheduled", "retrying", "paused", "blocked")
# How far in the past an operator may set a send time (clock differences, typing).
SEND_AT_GRACE = timedelta(minutes=5)


def validate_status(value: str) -> str:
    """A message status from user input (any case), or ValidationError."""
    status = value.strip().lower()
    if status not in STATUSES:
        raise ValidationError(f"invalid status {value!r} (one of {', '.join(STATUSES)})")
    return status


def message_summary(row: Any) -> dict[str, Any]:
    """The stable JSON shape of one message in `messages list` and `messages edit`."""
    return {
        "id": str(row.id),
        "type": row.type,
        "recipient": row.recipient,
        "subject": row.subject,
        "send_at": row.send_at,
        "status": row.status,
        "reason_code": row.reason_code,
        "attempts": row.attempts,
        "expires_at": row.expires_at,
        "sent_at": row.sent_at,
    }


def message_detail(row: Any, now: datetime) -> dict[str, Any]:
    """One message as `messages show` prints it: the list's keys and the rest of its
    state (whether a dispatcher is sending it at ``now`` included); never its body."""
    return {
        **message_summary(row),
        "priority": row.priority,
        "last_error": row.last_error,
        "next_attempt_at": row.next_attempt_at,
        "being_sent": leases.is_live(row, now),
        "message_id": row.message_id,
        "schedule_run_id": None if row.schedule_run_id is None else str(row.schedule_run_id),
        "event_id": None if row.event_id is None else str(row.event_id),
        "created_at": row.created_at,
        "updated_at": row.updated_at,
    }


def attempts_of(conn: sa.Connection, message_id: int, account_id: int) -> list[dict[str, Any]]:
    """Every recorded attempt to send a message (its ``email_log`` rows), oldest first:
    ``at``, ``outcome`` (sent, retry, failed, deferred, unknown), ``code`` (the
    server's reply code, or None), ``detail`` (the error, None when sent), ``provider``."""
    log = email_log.c
    rows = conn.execute(
        sa.select(log.attempted_at, log.outcome, log.response_code, log.error, log.provider)
        .where(log.message_id == message_id, log.account_id == account_id)
        .order_by(log.attempted_at, log.id)
    )
    return [
        {
            "at": r.attempted_at,
            "outcome": r.outcome,
            "code": r.response_code,
            "detail": r.error,
            "provider": r.provider,
        }
        for r in rows
    ]


def list_messages(
    conn: sa.Connection,
    account_id: int,
    *,
    type: str | None = None,
    status: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    limit: int | None = None,
) -> list[sa.Row[Any]]:
    """An account's messages, nearest ``send_at`` first, optionally filtered."""
    query = sa.select(messages).where(messages.c.account_id == account_id)
    if type is not None:
        query = query.where(messages.c.type == type)
    if status is not None:
        query = query.where(messages.c.status == status)
    if since is not None:
        query = query.where(messages.c.send_at >= since)
    if until is not None:
        query = query.where(messages.c.send_at < until)
    query = query.order_by(messages.c.send_at, messages.c.id)
    if limit is not None:
        query = query.limit(limit)
    return list(conn.execute(query))


def get_message(
    conn: sa.Connection, message_id: int, *, account_id: int | None = None, lock: bool = False
) -> sa.Row[Any]:
    """One message (of ``account_id``, when given), or NotFound."""
    return get_owned(conn, messages, message_id, account_id, "message", lock=lock)


class Keep(enum.Enum):
    """An edit's "leave this value as it is" (where None means "clear it")."""

    KEEP = "keep"


KEEP = Keep.KEEP
EXPIRED = "EXPIRED"  # the reason code of a message not sent by its expires_at
# The reasons of a message skipped because what it was about is gone: its user was
# removed (users.USER_REMOVED: its text is emptied) or its event deleted
# (events.EVENT_DELETED). Nothing sends such a message again, not even `--force`.
SUBJECT_GONE = frozenset({"USER_REMOVED", "EVENT_DELETED"})


def edit_message(
    conn: sa.Connection,
    message_id: int,
    now: datetime,
    *,
    account_id: int | None = None,
    send_at: datetime | None = None,
    status: str | None = None,
    expires_at: datetime | Keep | None = KEEP,
) -> sa.Row[Any]:
    """Change a message's send time, status and/or expiry by hand; returns the new row.

    A send time or expiry more than five minutes in the past is refused; ``expires_at``
    None means the message never expires. A message skipped as EXPIRED whose expiry is
    cleared or moved later is scheduled again (unless ``status`` says otherwise). A
    message that was, or may have been, sent is not scheduled again (ValidationError:
    `send-now --force` resends by name). A message a dispatcher is sending right now
    cannot be edited (TemporaryError: try again in a moment).
    """
    if send_at is None and status is None and expires_at is KEEP:
        raise ValidationError("nothing to change: give --send-at, --status and/or --expires-at")
    if send_at is not None and send_at < now - SEND_AT_GRACE:
        raise ValidationError(
            f"send time {send_at.isoformat()} is in the past (more than 5 minutes before now)"
        )
    if isinstance(expires_at, datetime) and expires_at < now - SEND_AT_GRACE:
        raise ValidationError(
            f"expiry {expires_at.isoformat()} is in the past (more than 5 minutes before now);"
            " to stop a message, set --status skipped"
        )
    status = validate_status(status) if status is not None else None
    row = get_message(conn, message_id, account_id=account_id, lock=True)
    if leases.is_live(row, now):
        raise TemporaryError(f"message {message_id} is being sent right now; try again shortly")
    if status in ("scheduled", "retrying") and status != row.status:
        if row.status == "skipped" and row.reason_code in SUBJECT_GONE:
            gone = "user was removed" if row.reason_code == "USER_REMOVED" else "event was deleted"
            raise ValidationError(
                f"message {message_id} is not scheduled again: its {gone} ({row.reason_code})"
            )
        sent = _may_have_been_sent(conn, row)
        if sent is not None:  # a resend is send-now --force's, asked for by name
            raise ValidationError(
                f"message {message_id} is not scheduled again: {sent}"
                f" (`schedctl send-now {message_id} --force` sends it again)"
            )
    values: dict[str, Any] = {"updated_at": now}
    if send_at is not None:
        # The operator's time replaces any retry or deferral time.
        values.update(send_at=send_at, next_attempt_at=None)
    if expires_at is not KEEP:
        values["expires_at"] = expires_at
        revived = expires_at is None or expires_at > now
        if status is None and revived and (row.status, row.reason_code) == ("skipped", EXPIRED):
            values.update(status="scheduled", reason_code=None, next_attempt_at=None)
    if status is not None and status != row.status:
        values.update(status=status, reason_code="MANUAL")
        if status == "sent" and row.sent_at is None:
            values["sent_at"] = now
        if status in ("scheduled", "retrying"):
            values["next_attempt_at"] = None  # due at send_at again
    conn.execute(messages.update().where(messages.c.id == message_id).values(**values))
    return get_message(conn, message_id)


def _may_have_been_sent(conn: sa.Connection, row: Any) -> str | None:
    """Why a message may have reached its recipient (so it stays in the audit), or None:
    it is sent (or was), its last send got no reply (UNKNOWN_DELIVERY), or its
    dispatcher died during a send (LEASE_EXPIRED, or a lease expired with no outcome)."""
    if row.status == "sent" or row.sent_at is not None:
        return "it was sent"
    # Not live (checked first), so expired: the holder died without an outcome.
    died = row.status in CLAIMED_FROM and row.lease_expires_at is not None
    if row.reason_code in (UNKNOWN_DELIVERY, LEASE_EXPIRED) or died:
        return "the outcome of a send is unknown: it may have been sent"
    handed_over = conn.execute(
        sa.select(email_log.c.id)
        .where(email_log.c.message_id == row.id, email_log.c.outcome.in_(("sent", "unknown")))
        .limit(1)
    ).first()
    if handed_over is not None:
        return "an attempt may have delivered it"
    return None


def delete_message(
    conn: sa.Connection, message_id: int, now: datetime, *, account_id: int
) -> sa.Row[Any]:
    """Delete one unsent message of ``account_id``; returns the row as it was.

    Refused (ValidationError, nothing written) for a message that may have reached its
    recipient: it stays in the audit (`messages edit ID --status skipped` stops one
    still pending). A message a dispatcher is sending right now (live lease) is
    TemporaryError: try again once the send is over. Its ``email_log`` rows, if any,
    are kept (their ``message_id`` becomes NULL) as the record of those attempts.
    """
    row = get_message(conn, message_id, account_id=account_id, lock=True)
    if leases.is_live(row, now):
        raise TemporaryError(
            f"message {message_id} is being sent right now; nothing deleted; try again shortly"
        )
    why = _may_have_been_sent(conn, row)
    if why is not None:
        raise ValidationError(
            f"message {message_id} is not deleted: {why}, so it stays in the audit"
            + ("; to stop it, set --status skipped" if row.status in PENDING else "")
        )
    conn.execute(
        messages.delete().where(messages.c.id == message_id, messages.c.account_id == account_id)
    )
    return row


class DeleteResult(NamedTuple):
    """What `messages delete-all` did: rows deleted, rows left because being sent."""

    deleted: int
    in_flight: int


def delete_messages(
    conn: sa.Connection,
    account_id: int,
    *,
    type: str | None = None,
    now: datetime | None = None,
) -> DeleteResult:
    """Delete an account's messages (of one type), except those being sent right now.

    A message under a live lease is a dispatcher's until it records the outcome (and
    its ``email_log`` row), so it is left alone and counted as ``in_flight``; run the
    command again once the send is over. An expired lease (a dead dispatcher) does not
    protect its message. ``now`` defaults to the wall clock.
    """
    at = now if now is not None else datetime.now(UTC)
    scope = [messages.c.account_id == account_id]
    if type is not None:
        scope.append(messages.c.type == type)
    # PostgreSQL re-checks the condition on a row a concurrent claim just leased.
    deleted = conn.execute(messages.delete().where(*scope, leases.free(messages, at))).rowcount
    in_flight = conn.execute(
        sa.select(sa.func.count()).select_from(messages).where(*scope, leases.live(messages, at))
    ).scalar()
    return DeleteResult(int(deleted or 0), int(in_flight or 0))
