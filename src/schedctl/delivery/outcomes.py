"""What becomes of one outbox message, before and after its send (SPEC §7).

Pure decisions: dispatch.py reads the facts, calls these functions and writes the row
values they return. Nothing here touches the database or a mail server.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal
from zoneinfo import ZoneInfo

from schedctl.delivery.outbox import EXPIRED, PENDING, SUBJECT_GONE, UNKNOWN_DELIVERY
from schedctl.delivery.policy import DeliveryPolicy, retry_delay, weekend_postponement
from schedctl.delivery.quota import next_day_start
from schedctl.delivery.transport import SendResult

__all__ = [
    "Change",
    "Delivery",
    "Facts",
    "Refusal",
    "Settled",
    "before_dispatch",
    "before_send_now",
    "error_text",
    "expiry",
    "invalid_message",
    "quota_deferral",
    "settle_result",
]

# What one message's turn in a dispatch came to (the tick counts follow from it).
Delivery = Literal[
    "sent",
    "retrying",
    "failed",
    "unknown",
    "invalid",
    "skipped",
    "postponed",
    "quota_deferred",
    "provider_deferred",
    "unavailable",
]


@dataclass(frozen=True)
class Facts:
    """What the decisions before a send need to know about one message."""

    recipient: str | None  # its valid address; None when missing or invalid
    status: str = "scheduled"
    suppressed: bool = False  # the address is on its account's suppression list
    leased: bool = False  # under a live lease: a dispatcher is sending it right now
    expires_at: datetime | None = None  # not sent by then, it never is (None: never)
    weekend_zone: ZoneInfo | None = None  # set when its type postpones weekend sends
    due: datetime | None = None  # when it fell due: its next attempt, else its send time
    reason_code: str | None = None  # why it is as it is (send-now reads a skip's)


@dataclass(frozen=True)
class Change:
    """A message settled without a send: its new row values."""

    delivery: Delivery
    reason_code: str
    status: str | None = None  # None: the status stays (the message only waits)
    send_at: datetime | None = None  # due again at this time (any retry time dropped)
    last_error: str | None = None

    def values(self) -> dict[str, Any]:
        values: dict[str, Any] = {"reason_code": self.reason_code}
        if self.status is not None:
            values["status"] = self.status
        if self.send_at is not None:
            values.update(send_at=self.send_at, next_attempt_at=None)
        if self.last_error is not None:
            values["last_error"] = self.last_error
        return values


@dataclass(frozen=True)
class Refusal:
    """Why `send-now` does not send a message, and what it records on it (if anything)."""

    reason_code: str
    change: Change | None = None


def expiry(expires_at: datetime | None, now: datetime) -> Change | None:
    """A message whose expiry has come is skipped (EXPIRED), never sent; else None."""
    if expires_at is not None and expires_at <= now:
        return Change("skipped", EXPIRED, status="skipped")
    return None


def before_dispatch(facts: Facts, now: datetime) -> Change | None:
    """Dispatch's rules that need no mail server, in order; None: send it.

    A missing recipient fails the message, a suppressed address or an expiry that has
    come skips it, a weekend send of a type that postpones moves to Monday at the same
    local time.
    """
    if facts.recipient is None:
        return Change("failed", "MISSING_RECIPIENT", status="failed")
    if facts.suppressed:
        return Change("skipped", "SUPPRESSED", status="skipped")
    if expired := expiry(facts.expires_at, now):
        return expired
    if facts.weekend_zone is not None and facts.due is not None:
        monday = weekend_postponement(facts.due, facts.weekend_zone)
        if monday is not None:
            return Change("postponed", "WEEKEND_POSTPONED", send_at=monday)
    return None


def before_send_now(facts: Facts, now: datetime, *, force: bool) -> Refusal | None:
    """`send-now`'s checks, in order; None: send it.

    It bypasses the enabled settings, the weekend rule and the send time, never the
    suppression list, nor a skip because its user or event is gone (SUBJECT_GONE); a
    sent or expired message goes only with ``force``. A suppressed address is
    recorded on the message (``skipped``) unless it was sent, an expiry only on a
    message still pending.
    """
    if facts.leased:
        return Refusal("IN_PROGRESS")
    if facts.status == "skipped" and facts.reason_code in SUBJECT_GONE:
        return Refusal(facts.reason_code)
    if facts.status == "sent" and not force:
        return Refusal("ALREADY_SENT")
    if facts.recipient is None:
        return Refusal("MISSING_RECIPIENT")
    if facts.suppressed:
        skip = None if facts.status == "sent" else Change("skipped", "SUPPRESSED", status="skipped")
        return Refusal("SUPPRESSED", skip)
    if not force and (expired := expiry(facts.expires_at, now)):
        return Refusal(EXPIRED, expired if facts.status in PENDING else None)
    return None


def quota_deferral(now: datetime) -> Change:
    """A normal message finding the day's quota used up waits for the next UTC day."""
    return Change("quota_deferred", "QUOTA_DEFERRED", send_at=next_day_start(now))


def invalid_message(detail: str) -> Change:
    """A message that cannot be built into an e-mail fails for good."""
    return Change("invalid", "INVALID_MESSAGE", status="failed", last_error=detail[:1000])


@dataclass(frozen=True)
class Settled:
    """What a send's result makes of the message: its delivery and new row values."""

    delivery: Delivery
    reason_code: str | None
    next_attempt_at: datetime | None
    last_error: str | None
    status: str | None = None  # None: the status stays (a provider deferral)
    attempts: int | None = None  # None: not counted as an attempt
    sent_at: datetime | None = None

    def values(self) -> dict[str, Any]:
        values: dict[str, Any] = {
            "reason_code": self.reason_code,
            "next_attempt_at": self.next_attempt_at,
            "last_error": self.last_error,
        }
        if self.status is not None:
            values["status"] = self.status
        if self.attempts is not None:
            values["attempts"] = self.attempts
        if self.sent_at is not None:
            values["sent_at"] = self.sent_at
        return values


def settle_result(
    result: SendResult, attempts: int, now: datetime, policy: DeliveryPolicy
) -> Settled:
    """The outcome of one send offered to the server, ``attempts`` made before it.

    sent → ``sent``; retry (4xx, connection lost before the end of the data) →
    ``retrying`` after the policy's backoff, ``failed`` RETRIES_EXHAUSTED at its
    ``max_attempts``-th; failed (5xx) → ``failed`` PERMANENT_FAILURE; unknown (no reply
    after the data) → ``failed`` UNKNOWN_DELIVERY, never resent; deferred (the
    provider's own quota) → not an attempt, due again after ``provider_backoff``.
    """
    attempt = attempts + 1
    error = error_text(result)
    if result.outcome == "sent":
        return Settled("sent", None, None, None, status="sent", attempts=attempt, sent_at=now)
    if result.outcome == "deferred":
        backoff = now + policy.provider_backoff
        return Settled("provider_deferred", "PROVIDER_DEFERRED", backoff, error)
    if result.outcome == "retry" and attempt < policy.max_attempts:
        wait = retry_delay(attempt, policy.retry_base, policy.retry_max)
        return Settled(
            "retrying", "TEMPORARY_FAILURE", now + wait, error, status="retrying", attempts=attempt
        )
    delivery: Delivery = "failed"
    if result.outcome == "unknown":
        delivery, reason = "unknown", UNKNOWN_DELIVERY
    elif result.outcome == "retry":
        reason = "RETRIES_EXHAUSTED"
    else:
        reason = "PERMANENT_FAILURE"
    return Settled(delivery, reason, None, error, status="failed", attempts=attempt)


def error_text(result: SendResult) -> str:
    """A send result's error as stored in ``last_error`` and ``email_log`` (capped)."""
    text = result.detail
    if result.refused:
        refused = "; ".join(f"{rcpt}: {code} {msg}" for rcpt, (code, msg) in result.refused.items())
        text = f"{text} (refused: {refused})"
    return text[:1000]
