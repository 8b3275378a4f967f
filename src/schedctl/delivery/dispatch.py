"""Dispatch: send the outbox's due messages exactly once (SPEC §5, §7).

Each round claims a batch in one short transaction (``FOR UPDATE SKIP LOCKED`` on
PostgreSQL; SQLite's write lock serialises claimers), applies the rules that need
no mail server, stamps a lease (leases.py: owner ``host:pid:nonce``, expiry) on what
is left and commits. The batch is then sent outside any transaction over one backend
connection, and each outcome is recorded in its own transaction, guarded by the
lease owner, together with its ``email_log`` row, before the next message is sent.
(The usual outcome -- one that fails nothing and settles no quota -- is written by
Database.write_alone, on the driver itself: on PostgreSQL one statement that commits
as it runs, a round trip per message, not four; on SQLite an UPDATE and an INSERT in
one transaction.)

Connections: with the smtp backend, a dispatch sends over ``[smtp] connections``
SMTP connections at once (default 4; the other backends use one). Each is a thread
with its own SMTP session and its own database connection that claims batches as
above (a claim costs about as much whatever its size, so each takes a whole batch),
sends its messages one at a time and records each outcome before its next send.
Each holds its leases under an owner of its own, so that what one connection gives
back can never be another's claim; they share the clock, the run's ``limit`` and
the quota (whose unit is reserved per message in the database, so the count stays
exact). The first connection starts alone; the others open once it has offered a
message to the server, so a server that is down is tried once (MailUnavailable, as
with one connection). A connection the server refuses later (a provider's limit on
concurrent connections) gives its claimed messages back untouched and stops; the
others go on and may send them in the same run. A provider's deferral
stops every connection (their claimed messages wait ``provider_backoff``), and an
error in one (the database lost, a configuration the server refuses) stops the
others after the message each is sending; the first error is raised. With
``[smtp] max_per_second`` the sends of all connections take turns on one pacer
(pacing.py).

Rules, in order (the decisions are outcomes.py's; this module reads and writes
around them): a global or per-type ``enabled = false`` holds due messages
untouched; a missing recipient fails the message (MISSING_RECIPIENT); a suppressed
address skips it (SUPPRESSED; never bypassed); one whose ``expires_at`` has come is
skipped (EXPIRED; checked again just before its send, so it never uses quota); the
weekend rule postpones it to Monday (WEEKEND_POSTPONED); when a daily quota is
configured, a normal message reserves one unit of it just before its send or is
deferred to the next UTC day (QUOTA_DEFERRED); critical mail skips the quota. The
transaction that records the outcome settles the unit: counted as sent when the
server accepted the message (or may have: ``unknown``), given back otherwise, and
only then are the quota's alerts checked (see quota.py). A message that fails for
good (or ends ``unknown``) is recorded as an alert (schedctl.alerts) by the
transaction that fails it.

Outcomes (see delivery/backends.py):

- sent → ``sent``.
- retry (4xx, timeout before the end of data) → ``retrying`` after
  ``retry_base·2^(n-1)`` (capped at ``retry_max``); the ``max_attempts``-th failure
  makes it ``failed`` (RETRIES_EXHAUSTED).
- failed (5xx) → ``failed`` at once (PERMANENT_FAILURE).
- deferred (the provider's own quota) → not an attempt: left for
  ``provider_backoff`` (PROVIDER_DEFERRED) and the batch stops.
- unknown (no reply after the data) → ``failed`` (UNKNOWN_DELIVERY), never resent
  automatically: the server may have accepted it.
- a connection failure before anything was offered: the claimed messages are
  released untouched; on the call's first send it raises MailUnavailable (exit 75).
- a configuration the server cannot work with (``smtp_user`` set but no AUTH on
  offer): the backend raises ConfigError (exit 2) before offering anything; the
  claimed messages are released untouched, so once it is fixed they go out.

A message whose lease expired (its dispatcher died) is recovered by the claim
before it claims, through the one recovery reconcile uses too (leases.recover,
outbox.LEASED_MESSAGES): the lost attempt counts, and the message is retried at
once, or failed with LEASE_EXPIRED when that was the ``max_attempts``-th. Only a
process that dies after the server accepted the data but before the outcome was
recorded (or a database outage in that same window) can cause a second send: at
most one message per connection, since each connection records an outcome before
the server can accept its next message (on PostgreSQL the outcome is sent ahead and
commits while the next envelope goes out; the next body waits for it:
Database.send_alone and MailBackend.send's ``ready``). The Message-ID is the same
both times, so receivers that de-duplicate by it see one. A dispatcher renews its
leases before they are half spent, so a slow batch is never taken over while it is
still being sent; since renewal happens only between messages, a lease must cover
one slow send and the wait for its turn: at least max(1 minute, 4 * smtp_timeout + 2
* connections / max_per_second) (checked with the other settings when they are
loaded, schedctl.config).

A message deleted while it is being sent (``messages delete-all`` leaves leased
messages alone, but a lease can run out or a row be deleted by hand) has no outcome
to record: the attempt is not logged and the batch goes on.
"""

from __future__ import annotations

import copy
import functools
import logging
import threading
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from email.message import EmailMessage
from typing import TYPE_CHECKING, Any, Literal, NamedTuple, cast
from zoneinfo import ZoneInfo

import sqlalchemy as sa

from schedctl import alerts, leases
from schedctl.config import Settings
from schedctl.db import dialect
from schedctl.db.database import Database
from schedctl.db.schema import alerts as alerts_table
from schedctl.db.schema import (
    email_log,
    events,
    messages,
    quota_alerts,
    schedule_runs,
    schedules,
    send_counters,
)
from schedctl.delivery import outbox, outcomes, quota
from schedctl.delivery.backends import make_backend
from schedctl.delivery.builder import WORTH_AFTER, Builder
from schedctl.delivery.message import build_email
from schedctl.delivery.outbox import Attachment, get_message
from schedctl.delivery.outcomes import Change, Delivery, Facts, error_text
from schedctl.delivery.pacing import Pacer
from schedctl.delivery.policy import DeliveryPolicy
from schedctl.delivery.suppressions import suppressed_among
from schedctl.delivery.tokens import unsubscribe_url
from schedctl.delivery.transport import MailBackend, SendResult, Written, written
from schedctl.errors import ConfigError, MailUnavailable, RecordingRefused, ValidationError
from schedctl.values import validate_email
from schedctl.workers import Worker, wait_for

if TYPE_CHECKING:
    from schedctl.delivery.smtp import SmtpBackend

log = logging.getLogger("schedctl.delivery.dispatch")

COUNT_KEYS = (
    "messages_sent",
    "messages_failed",
    "messages_deferred",
    "messages_retrying",
    "messages_skipped",
    "messages_postponed",
    "messages_unknown",
)


def policy_for(settings: Settings) -> DeliveryPolicy:
    """The delivery policy of the ``[messages]`` settings."""
    return DeliveryPolicy.from_settings(settings)


def mail_backend(settings: Settings) -> MailBackend:
    """The configured mail backend (not yet connected)."""
    return make_backend(
        settings.mail_backend,
        smtp_host=settings.smtp_host,
        smtp_port=settings.smtp_port,
        smtp_user=settings.smtp_user,
        smtp_password=settings.smtp_password,
        smtp_tls=settings.smtp_tls,
        smtp_timeout=settings.smtp_timeout,
        mail_file_dir=settings.mail_file_dir,
        mail_from=settings.mail_from,
    )


def connections_for(settings: Settings) -> int:
    """How many connections a dispatch sends over: ``[smtp] connections`` with the
    smtp backend, one with the others."""
    return settings.smtp_connections if settings.mail_backend == "smtp" else 1


def check_delivery_settings(settings: Settings) -> None:
    """Raise ConfigError (exit 2) for a mail backend that cannot be made.

    `tick` calls this first, so a configuration error stops it before it writes anything.
    (``[messages]`` and ``[events]``, the lease's floor included, were checked when the
    settings were loaded.)
    """
    mail_backend(settings).close()


def _recipient(row: Any) -> str | None:
    try:
        return validate_email(row.recipient) if row.recipient else None
    except ValidationError:
        return None


@dataclass
class _Batch:
    rows: list[Any]  # claimed and leased, still to send
    selected: int  # due rows the claim looked at, including those settled at once
    lease_expires_at: datetime  # of the rows' leases (unused when there are none)
    claims: dict[int, int] = field(default_factory=dict)  # _Share.claimed's numbers


# The order messages are claimed in (and recovered in), oldest due first.
CLAIM_ORDER = (messages.c.send_at, messages.c.id)


def due_now(
    now: datetime, disabled: Iterable[str] = (), types: Sequence[str] | None = None
) -> list[sa.ColumnElement[bool]]:
    """The conditions of a message due at ``now`` (of ``types``, none ``disabled``)."""
    due = [
        messages.c.send_at <= now,
        sa.or_(messages.c.next_attempt_at.is_(None), messages.c.next_attempt_at <= now),
    ]
    if disabled:
        due.append(messages.c.type.not_in(list(disabled)))
    if types is not None:
        due.append(messages.c.type.in_(types))
    return due


def claim_query(due: Sequence[sa.ColumnElement[bool]], size: int) -> sa.Select[Any]:
    """Up to ``size`` claimable messages matching ``due``, oldest first, locked, those
    another transaction holds skipped (read along messages_claimable)."""
    return (
        sa.select(messages)
        .where(outbox.claimable(), leases.unleased(messages), *due)
        .order_by(*CLAIM_ORDER)
        .limit(size)
        .with_for_update(skip_locked=True)
    )


class Dispatcher:
    """One process's delivery session: its lease owner, clock, backend and alerts."""

    def __init__(
        self,
        db: Database,
        settings: Settings,
        now: datetime,
        *,
        backend: MailBackend | None = None,
        policy: DeliveryPolicy | None = None,
    ) -> None:
        self.db = db
        self.settings = settings
        self.policy = policy or policy_for(settings)
        self.backend = backend or mail_backend(settings)
        self.quota_limit = quota.daily_limit(settings)
        self.owner = leases.new_owner()
        self.now = leases.clock_from(now)  # ``now`` advanced by the time run since
        self._alerted: set[tuple[str, int]] = set()  # (day, threshold) claimed by anyone
        self._exhausted_day: str | None = None
        self.offered = 0  # messages that reached the server (any outcome but connect)
        self.types: tuple[str, ...] | None = None  # only these message types (None: all)
        self.only: tuple[sa.ColumnElement[bool], ...] = ()  # and only messages matching these
        # Quota units reserved for given messages by their producer (the digest
        # reserves one per digest it builds); used by their send, else given back.
        self.prepaid: dict[int, quota.Reservation] = {}
        self.pacer: Pacer | None = None  # the turns of sends (None: no pace)
        # The next row's e-mail, built while the server read the last one (see deliver).
        self._prebuilt: tuple[Any, EmailMessage] | None = None
        # Told at once when the provider defers us (its backoff's end), so that the
        # other connections stop before this one has recorded the deferral.
        self.on_deferral: Callable[[datetime], object] | None = None
        # A message deliver() never handed over when an error stopped it (the previous
        # outcome could not be written), with its quota unit: for _send_batch to give back.
        self.unsent: tuple[Any, quota.Reservation | None] | None = None

    def another(self, backend: MailBackend) -> Dispatcher:
        """Another connection of this delivery session, over ``backend``: the same clock,
        policy, prepaid units and alerts already told (shared objects), with its own
        mail session, lease owner and count of messages offered."""
        other = copy.copy(self)
        other.backend = backend
        other.owner = leases.new_owner()
        other.offered = 0
        other._prebuilt = None
        other.unsent = None
        return other

    # ---------------------------------------------------------------- claiming

    def claim_due(self, size: int, counts: Counter[str]) -> _Batch:
        """Claim up to ``size`` due messages; settle those the rules decide at once."""
        disabled = self.policy.disabled_types

        def work(conn: sa.Connection) -> tuple[list[Any], int, Counter[str], datetime]:
            now = self.now()
            due = [*due_now(now, disabled, self.types), *self.only]
            settled: Counter[str] = Counter()
            # A due message whose dispatcher died goes back first, as reconcile sends it.
            dead = self._recover(conn, now, due, CLAIM_ORDER, size, settled)
            rows = list(conn.execute(claim_query(due, size)))
            if not rows:
                return [], dead, settled, now
            sendable = self._settle(conn, rows, now, settled)
            expires_at = self.stamp_lease(conn, [r.id for r in sendable], now)
            return sendable, dead + len(rows), settled, expires_at

        # Counted only once committed: a retried transaction must not count twice.
        rows, selected, settled, expires_at = self.db.transaction(work)
        counts.update(settled)
        return _Batch(rows, selected, expires_at)

    def _recover(
        self,
        conn: sa.Connection,
        now: datetime,
        due: Sequence[sa.ColumnElement[bool]],
        order: Sequence[sa.ColumnElement[Any]],
        size: int,
        counts: Counter[str],
    ) -> int:
        """Recover up to ``size`` due messages whose dispatcher died (leases.recover):
        the lost attempt counted, retrying now, or failed when it was the last one.
        How many failed."""
        recovered = leases.recover(
            conn, outbox.LEASED_MESSAGES, now, *due,
            max_attempts=self.policy.max_attempts, limit=size, order_by=order,
        )  # fmt: skip
        for message_id in recovered.failed:
            log.warning("message %s failed: its dispatcher died on its last attempt", message_id)
        counts["messages_failed"] += len(recovered.failed)
        return len(recovered.failed)

    def stamp_lease(self, conn: sa.Connection, ids: list[int], now: datetime) -> datetime:
        """Lease the claimed messages ``ids`` to this dispatcher; the lease's expiry."""
        expires_at = now + self.policy.lease
        if ids:
            leases.stamp(conn, messages, ids, self.owner, expires_at)
        return expires_at

    def _settle(
        self, conn: sa.Connection, rows: list[Any], now: datetime, counts: Counter[str]
    ) -> list[Any]:
        """Apply the rules that need no mail server; return the rows still to send."""
        by_account: dict[int, set[str]] = {}
        for row in rows:
            address = _recipient(row)
            if address:
                by_account.setdefault(row.account_id, set()).add(address)
        suppressed = {
            (account, email)
            for account, emails in by_account.items()
            for email in suppressed_among(conn, account, emails)
        }
        postponing = [r for r in rows if self.policy.rule(r.type).weekend == "postpone"]
        zones = self._zones(conn, [r.id for r in postponing]) if postponing else {}

        sendable, failed = [], []
        for row in rows:
            address = _recipient(row)
            facts = Facts(
                recipient=address,
                status=row.status,
                suppressed=(row.account_id, address) in suppressed,
                expires_at=row.expires_at,
                weekend_zone=zones.get(row.id),
                due=row.next_attempt_at or row.send_at,
            )
            change = outcomes.before_dispatch(facts, now)
            if change is None:
                sendable.append(row)
                continue
            self.set_fields(conn, row.id, now, **change.values())
            _count(counts, change.delivery)
            if change.status == "failed":
                failed.append(row.id)
            if change.reason_code == "MISSING_RECIPIENT":
                log.info("message %s has no valid recipient: failed", row.id)
        alerts.record_failed_messages(conn, failed, now)
        return sendable

    def _zones(self, conn: sa.Connection, ids: list[int]) -> dict[int, ZoneInfo]:
        """Each message's weekend zone: its event's, else its schedule's, else the policy's."""
        source = messages.outerjoin(events, events.c.id == messages.c.event_id).outerjoin(
            schedule_runs, schedule_runs.c.id == messages.c.schedule_run_id
        )
        source = source.outerjoin(schedules, schedules.c.id == schedule_runs.c.schedule_id)
        query = (
            sa.select(messages.c.id, events.c.tz.label("event_tz"), schedules.c.tz.label("sch_tz"))
            .select_from(source)
            .where(messages.c.id.in_(ids))
        )
        zones = {}
        for row in conn.execute(query):
            name = row.event_tz or row.sch_tz or self.policy.tz
            try:
                zones[row.id] = ZoneInfo(name)
            except (KeyError, ValueError, OSError):  # a zone removed from tzdata since
                zones[row.id] = self.policy.zone
        return zones

    def set_fields(
        self, conn: sa.Connection, message_id: int, now: datetime, **values: Any
    ) -> None:
        """Settle a message in the claim transaction (dropping any expired lease)."""
        conn.execute(
            messages.update()
            .where(messages.c.id == message_id)
            .values(updated_at=now, **leases.CLEARED, **values)
        )

    def renew(self, batch: _Batch) -> list[Any]:
        """Extend the leases of the batch's unsent rows; return those still ours."""
        ids = [r.id for r in batch.rows]

        def work(conn: sa.Connection) -> tuple[set[int], datetime]:
            expires_at = self.now() + self.policy.lease
            return leases.renew(conn, messages, ids, self.owner, expires_at), expires_at

        owned, batch.lease_expires_at = self.db.transaction(work)
        return [r for r in batch.rows if r.id in owned]

    def release(
        self,
        rows: Sequence[Any],
        *,
        next_attempt_at: datetime | None = None,
        reservation: quota.Reservation | None = None,
    ) -> None:
        """Give claimed, unsent messages back untouched (optionally not before a time),
        and the quota unit reserved for one of them, if any."""
        ids = [r.id for r in rows]
        if not ids and reservation is None:
            return
        values: dict[str, Any] = {}
        if next_attempt_at is not None:
            values["next_attempt_at"] = next_attempt_at

        def work(conn: sa.Connection) -> None:
            if ids:
                leases.release(conn, messages, ids, self.owner, **values)
            if reservation is not None:
                quota.release(conn, reservation)

        self.db.transaction(work)

    # ---------------------------------------------------------------- delivering

    def build(self, row: Any, now: datetime) -> EmailMessage:
        """The e-mail for an outbox row (Message-ID from the row, RFC 8058 headers)."""
        return message_for(self.settings, row, now)

    def deliver(
        self,
        row: Any,
        *,
        force: bool = False,
        following: Any = None,
        builder: Builder | None = None,
    ) -> tuple[Delivery, str]:
        """Send one claimed message and record the outcome: (delivery, detail).

        One whose expiry came since it was claimed is skipped instead (EXPIRED), unless
        ``force`` (`send-now --force`). ``following``: the row to be delivered next, if
        any; its e-mail is built while the server reads this one (building is pure),
        and its own delivery then starts from that. ``builder``: the dispatch's helper
        process, which may have written this message already (the SMTP backend then
        sends that; see schedctl.delivery.builder).
        """
        now = self.now()
        expired = None if force else outcomes.expiry(row.expires_at, now)
        prebuilt, self._prebuilt = self._prebuilt, None
        if expired is not None:
            log.info("message %s expired at %s: skipped", row.id, row.expires_at.isoformat())
            return self._settle_unsent(row, now, expired), "expired"
        message: EmailMessage | Written | None = None if builder is None else builder.take(row)
        if message is None:
            try:
                message = prebuilt[1] if prebuilt and prebuilt[0] is row else self.build(row, now)
            except (ValidationError, ValueError, KeyError, TypeError) as exc:
                detail = f"cannot build the message: {exc}"
                return self._settle_unsent(row, now, outcomes.invalid_message(detail)), detail

        reservation = None
        if row.priority != "critical" and self.quota_limit is not None:
            reservation = self._prepaid_for(row.id, quota.quota_day(now))
            if reservation is None:
                reservation = self._reserve(quota.quota_day(now), self.quota_limit, now)
            if reservation is None:
                deferral = outcomes.quota_deferral(now)
                return self._settle_unsent(row, now, deferral), "daily quota exhausted"

        if self.pacer is not None:
            self.pacer.wait()
        meanwhile = None if following is None else functools.partial(self._prebuild, following)
        unready: list[BaseException] = []

        def ready() -> None:
            """The last outcome sent ahead is durable before this message can be accepted."""
            try:
                self.db.await_sent()
            except BaseException as exc:
                unready.append(exc)
                raise

        try:
            if isinstance(message, Written):  # (only an SMTP backend's dispatch has a builder)
                result = cast("SmtpBackend", self.backend).send_written(
                    message, meanwhile, ready=ready
                )
            else:
                result = self.backend.send(message, meanwhile, ready=ready)
        except ConfigError:
            # Raised before anything was offered: not an attempt, and no failure of
            # this message; it goes back untouched (with its unit) until the fix.
            self.release([row], reservation=reservation)
            raise
        except BaseException:
            if unready:
                # The previous outcome could not be written, so this message was never
                # handed over: it goes back with the batch's rest (_send_batch).
                self.unsent = (row, reservation)
            raise
        log.debug("message %s: %s %s", row.id, result.outcome, result.detail)
        if result.outcome == "deferred" and self.on_deferral is not None:
            self.on_deferral(now + self.policy.provider_backoff)
        if result.outcome == "retry" and result.stage == "connect":
            # Never offered to the server: not an attempt; the caller stops the batch.
            self._record(row, now, result, reservation=reservation)
            return "unavailable", result.detail
        self.offered += 1
        return self._settle_result(row, now, result, reservation), result.detail

    def _prebuild(self, row: Any) -> None:
        """Build ``row``'s e-mail ahead of its delivery (none when it cannot be built:
        its delivery then builds it again and settles the error)."""
        try:
            self._prebuilt = (row, self.build(row, self.now()))
        except Exception:
            self._prebuilt = None

    def _prepaid_for(self, message_id: int, day: str) -> quota.Reservation | None:
        """The unit reserved for this message by its producer, if it is for ``day``."""
        reservation = self.prepaid.get(message_id)
        if reservation is None or reservation.day != day:
            return None  # one for another (past) day stays in prepaid: given back at the end
        del self.prepaid[message_id]
        return reservation

    def release_prepaid(self) -> None:
        """Give back the prepaid units no send of this dispatcher used (the message was
        suppressed, postponed, held, sent by another dispatcher, or not reached)."""
        unused, self.prepaid = list(self.prepaid.values()), {}
        if not unused:
            return

        def work(conn: sa.Connection) -> None:
            for reservation in unused:
                quota.release(conn, reservation)

        self.db.transaction(work)

    def _reserve(self, day: str, limit: int, now: datetime) -> quota.Reservation | None:
        """One unit of ``day``'s quota for the next send, or None: the day's is used up."""
        if self._exhausted_day == day:
            return None

        def work(conn: sa.Connection) -> tuple[quota.Reservation | None, int, list[int]]:
            reservation = quota.reserve(conn, day, limit)
            if reservation is not None:
                return reservation, 0, []
            # Used up: the alerts its real count reached (normally already claimed by
            # the sends that reached them; not so when the limit was lowered today).
            count = quota.used(conn, day)
            return None, count, self._claim_alerts(conn, day, count, limit, now)

        reservation, count, owned = self.db.transaction(work)
        self._keep_alerts(day, count, limit, owned)
        if reservation is None:
            self._exhausted_day = day
        return reservation

    def _claim_alerts(
        self, conn: sa.Connection, day: str, count: int, limit: int, now: datetime
    ) -> list[int]:
        """Record the thresholds ``count`` sent of ``limit`` reached, unless already
        recorded, with their alerts; the thresholds this call recorded."""
        due = [t for t in quota.thresholds_reached(count, limit) if (day, t) not in self._alerted]
        if not due:
            return []
        return quota.claim_alerts(conn, day, due, count, limit, now)

    def _keep_alerts(self, day: str, count: int, limit: int, owned: list[int]) -> None:
        """After commit: skip the thresholds ``count`` reached from now on (recorded by
        us or by another dispatcher); say which ones we recorded."""
        self._alerted.update((day, t) for t in quota.thresholds_reached(count, limit))
        if owned:  # one line for thresholds crossed at once (each is still its own alert)
            log.warning("mail quota at %d%%: %d of %d used on %s", max(owned), count, limit, day)

    def _settle_unsent(self, row: Any, now: datetime, change: Change) -> Delivery:
        """Record a claimed message settled without a send (no attempt, no log row).

        A message that is not pending (one sent, failed or skipped, which only `send-now
        --force` offers again) keeps its record: the lease is given back, and nothing
        else is written (found by review: a quota refusal rewrote a sent message's
        reason and send time, and a failed UNKNOWN_DELIVERY's reason)."""
        if row.status not in outbox.PENDING:
            self.release([row])
            return change.delivery
        self._record(row, now, None, **change.values())
        return change.delivery

    def _settle_result(
        self, row: Any, now: datetime, result: SendResult, reservation: quota.Reservation | None
    ) -> Delivery:
        """Record what a send's result makes of the message (outcomes.settle_result)."""
        settled = outcomes.settle_result(result, row.attempts, now, self.policy)
        self._record(row, now, result, reservation=reservation, **settled.values())
        if settled.delivery == "sent":
            log.info("message %s sent", row.id)
        elif settled.delivery == "provider_deferred":
            log.warning("message %s: the mail provider deferred us (%s)", row.id, result.code)
        elif settled.delivery == "retrying":
            wait = (settled.next_attempt_at or now) - now
            log.info("message %s: temporary failure (%s), retry in %s", row.id, result.code, wait)
        else:
            log.info("message %s failed: %s (%s)", row.id, settled.reason_code, result.code)
        return settled.delivery

    def _record(
        self,
        row: Any,
        now: datetime,
        result: SendResult | None,
        *,
        reservation: quota.Reservation | None = None,
        **values: Any,
    ) -> None:
        """Write one outcome, release the lease, log the attempt, settle the quota
        reservation (and claim the alerts a send reached): one transaction (for a
        send's outcome with nothing else to settle, one statement, which may commit a
        moment after this returns: _record_alone).

        The reservation is settled whatever became of the row: it is this send's.
        Mail the server accepted, or may have (``unknown``), counts as sent; any
        other outcome gives the unit back.

        A message deleted while it was being sent (an operator's delete outside the
        lease rules, or after the lease ran out) has nothing left to record: the
        attempt is not logged (``email_log`` must not point at a missing message).
        """
        if result is not None and reservation is None and values.get("status") != "failed":
            self._record_alone(row, now, result, values)
            return
        self._record_in_transaction(row, now, result, reservation, values)

    def _record_in_transaction(
        self,
        row: Any,
        now: datetime,
        result: SendResult | None,
        reservation: quota.Reservation | None,
        values: dict[str, Any],
    ) -> None:
        """_record's transaction: whatever the outcome, and what it finds."""
        handed_over = result is not None and result.outcome in ("sent", "unknown")

        def settle(conn: sa.Connection) -> tuple[int, list[int]]:
            """(the day's sent count, the alerts it reached that we claimed)."""
            if reservation is None:
                return 0, []
            if not handed_over:
                quota.release(conn, reservation)
                return 0, []
            count = quota.use(conn, reservation)
            return count, self._claim_alerts(conn, reservation.day, count, reservation.limit, now)

        def work(
            conn: sa.Connection,
        ) -> tuple[Literal["recorded", "lost", "gone"], tuple[int, list[int]]]:
            updated = leases.finish_one(
                conn, messages, self.owner, row.id, updated_at=now, **values
            )
            # Our UPDATE holds the row until commit; otherwise hold it while we log.
            if not updated and not _still_there(conn, row.id):
                return "gone", settle(conn)
            if result is not None:
                attempt = {"account_id": row.account_id, "message_id": row.id}
                conn.execute(_LOG_ATTEMPT, attempt | self._attempt(row, now, result))
            if updated and values.get("status") == "failed":
                alerts.record_failed_messages(conn, [row.id], now)
            return ("recorded" if updated else "lost"), settle(conn)

        state, (count, owned) = self.db.transaction(work)
        if reservation is not None:
            self._keep_alerts(reservation.day, count, reservation.limit, owned)
        if state == "gone":
            log.info(
                "message %s was deleted while it was being sent; its outcome (%s) is not recorded",
                row.id,
                result.outcome if result is not None else values.get("reason_code"),
            )
        elif state == "lost":
            log.warning(
                "message %s: its lease was lost before the outcome was recorded"
                " (another dispatcher may send it again)",
                row.id,
            )

    def _attempt(self, row: Any, now: datetime, result: SendResult) -> dict[str, Any]:
        """The email_log row of one send's attempt, but for its message's ids
        (_ATTEMPT_BOUND)."""
        return {
            "provider": result.provider or self.backend.name,
            "recipients": row.recipient or "",
            "outcome": result.outcome,
            "response_code": result.code,
            "error": None if result.outcome == "sent" else error_text(result),
            "attempted_at": now,
        }

    def _record_alone(
        self, row: Any, now: datetime, result: SendResult, values: dict[str, Any]
    ) -> None:
        """_record's common case, the outcome of a send that fails nothing and settles
        no quota, with its email_log row, as Database.send_alone writes it (one
        statement committed as it runs where the dialect can, else an UPDATE and an
        INSERT; on the driver). On a pinned PostgreSQL connection it is sent ahead:
        it commits while the next message's envelope is offered, and the next
        message's body waits for it (``ready`` of MailBackend.send). When it wrote
        nothing (the lease was lost, or the row is gone), _record's transaction
        decides what is left to write."""
        params = {
            **leases.finishing_params(self.owner, row.id, {"updated_at": now, **values}),
            "log_account_id": row.account_id,
            "log_message_id": row.id,
            **self._attempt(row, now, result),
        }
        statements = _recording(tuple(values), self.db.capabilities.writing_cte)

        def then(written: int) -> None:
            if written != 1:
                self._record_in_transaction(row, now, result, None, values)

        self.db.send_alone(statements, params, then)


# The columns of an attempt's email_log row that are bound (the rest are its message's).
_ATTEMPT_BOUND = ("provider", "recipients", "outcome", "response_code", "error", "attempted_at")

# One statement for every attempt's email_log row (its values bound per execution);
# inline: nothing to read back (without it PostgreSQL returns the new row's id).
_LOG_ATTEMPT = email_log.insert().inline()


@functools.cache
def _recording(keys: tuple[str, ...], writing_cte: bool) -> tuple[sa.Executable, ...]:
    """The statements that record one send's outcome (``updated_at`` and ``keys`` set,
    leases.finishing_one) and its email_log row, bound by name: where the dialect can,
    one data-modifying WITH that logs from the row it updated; else the guarded UPDATE,
    then the INSERT (which write_alone runs only when the UPDATE wrote the row)."""
    outcome = leases.finishing_one(messages, ("updated_at", *keys))
    attempt = {name: sa.bindparam(name, type_=email_log.c[name].type) for name in _ATTEMPT_BOUND}
    if not writing_cte:
        # (Its ids bound as log_*: a parameter named like a column of messages would
        # be set by the UPDATE too, when SQLAlchemy runs it.)
        ids = {
            name: sa.bindparam(f"log_{name}", type_=email_log.c[name].type)
            for name in ("account_id", "message_id")
        }
        return outcome, email_log.insert().values({**ids, **attempt}).inline()
    done = outcome.returning(messages.c.id, messages.c.account_id).cte("done")
    insert = email_log.insert().from_select(
        ["account_id", "message_id", *attempt],
        sa.select(done.c.account_id, done.c.id, *attempt.values()),
    )
    return (insert,)


def _still_there(conn: sa.Connection, message_id: int) -> bool:
    """Whether the message exists, locked against deletion until commit."""
    query = sa.select(messages.c.id).where(messages.c.id == message_id)
    return conn.execute(query.with_for_update(key_share=True)).first() is not None


def message_for(settings: Settings, row: Any, now: datetime) -> EmailMessage:
    """The e-mail for an outbox row (or a :class:`Draft` of one), dated ``now``:
    Message-ID from the row, the RFC 8058 headers when it is a subscription's."""
    link = None
    base, secret = settings.unsubscribe_base_url, settings.unsubscribe_secret
    # Without them the mail goes out with no link: `config check` and `heartbeat`
    # warn of that, not every run (cron would mail the warning every minute).
    if row.subscription and base and secret:
        link = unsubscribe_url(base, str(row.account_id), row.recipient, secret)
    attachments = [Attachment.from_json(a) for a in row.attachments or []]
    return build_email(
        sender=settings.mail_from,
        recipient=row.recipient,
        subject=row.subject,
        text=row.body_text,
        html=row.body_html,
        message_id=row.message_id,
        attachments=[(a.filename, a.content_type, a.content) for a in attachments],
        unsubscribe_url=link,
        date=now,
    )


class Draft(NamedTuple):
    """What :func:`message_for` reads of an outbox row, as plain values (what a
    dispatch sends its helper process, schedctl.delivery.builder)."""

    id: int
    account_id: int
    recipient: str
    subject: str
    body_text: str
    body_html: str | None
    message_id: str
    attachments: Any
    subscription: bool

    @classmethod
    def of(cls, row: Any) -> Draft:
        return cls(*(getattr(row, name) for name in cls._fields))


def _write_for_smtp(
    settings: Settings, envelope_from: str | None, draft: Draft, now: datetime
) -> Written:
    """In the builder's helper: a draft's message as the SMTP backend writes it."""
    return written(message_for(settings, draft, now), envelope_from)


# What recording a send's outcome needs (_record, quota, alerts): its row read and
# updated, the attempt logged, the day's counter and its alerts written (an INSERT ...
# ON CONFLICT or RETURNING reads the table too). A login role that may claim and send
# but not record would send the same mail again each time its lease ran out, up to
# max_attempts times: so it sends nothing.
_RECORDING_PRIVILEGES = (
    (messages, "SELECT"),
    (messages, "UPDATE"),
    (email_log, "INSERT"),
    (send_counters, "SELECT"),
    (send_counters, "INSERT"),
    (send_counters, "UPDATE"),
    (alerts_table, "SELECT"),
    (alerts_table, "INSERT"),
    (quota_alerts, "SELECT"),
    (quota_alerts, "INSERT"),
)


def check_recording_privileges(db: Database) -> None:
    """RecordingRefused (exit 1), before anything is claimed or sent, when schedctl's
    login role may not record what it sends (where there are grants, PostgreSQL)."""
    if not db.capabilities.grants:
        return
    missing = db.transaction(
        lambda conn: dialect.missing_privileges(conn, _RECORDING_PRIVILEGES), read_only=True
    )
    if missing:
        refusal = f"no {', '.join(missing)}"
        raise RecordingRefused(
            f"database error ({db.target}): schedctl's login role may not record the mail"
            f" it sends ({refusal}): nothing was sent; grant them and rerun",
            refusal=refusal,
        )


def dispatch_due(
    db: Database,
    settings: Settings,
    now: datetime,
    limit: int = 1000,
    *,
    backend: MailBackend | None = None,
    types: Sequence[str] | None = None,
    only: Sequence[sa.ColumnElement[bool]] = (),
    prepaid: dict[int, quota.Reservation] | None = None,
) -> dict[str, int]:
    """Send up to ``limit`` due messages; return counts (``messages_sent``, ...).

    Sends over ``connections_for(settings)`` connections at once, or over ``backend``
    alone when one is given. ``types``: only messages of these types; ``only``: and
    only those matching these conditions on ``messages`` (a command's narrowing: its
    account, its user). ``prepaid``:
    quota units the producer of the given messages reserved for them (by message id);
    a send uses its unit instead of reserving one, and the units not used are given
    back at the end.

    Raises MailUnavailable (exit 75) when the mail server cannot be used at all; the
    claimed messages are released untouched first.
    """
    counts: Counter[str] = Counter({key: 0 for key in COUNT_KEYS})
    dispatcher = Dispatcher(db, settings, now, backend=backend)
    dispatcher.types = None if types is None else tuple(types)
    dispatcher.only = tuple(only)
    dispatcher.prepaid = dict(prepaid or {})
    policy = dispatcher.policy
    if not policy.enabled:
        log.info("dispatch is disabled ([messages] enabled = false)")
        dispatcher.release_prepaid()
        return dict(counts)
    try:
        check_recording_privileges(db)
    except RecordingRefused:
        dispatcher.release_prepaid()
        raise
    connections = 1 if backend is not None else connections_for(settings)
    if settings.mail_backend == "smtp" and settings.smtp_max_per_second:
        dispatcher.pacer = Pacer(settings.smtp_max_per_second)
    share = _Share(limit, policy.batch_size, connections=connections)
    if backend is None and settings.mail_backend == "smtp":
        smtp = cast("SmtpBackend", dispatcher.backend)
        share.write = functools.partial(_write_for_smtp, settings, smtp.envelope_from)
    dispatcher.on_deferral = lambda backoff: share.halt(backoff=backoff)
    others = [dispatcher.another(mail_backend(settings)) for _ in range(connections - 1)]
    tallies = [Counter[str]() for _ in others]
    threads = [
        Worker(functools.partial(_connection, other, share, tally), name=f"dispatch-{n}")
        for n, (other, tally) in enumerate(zip(others, tallies, strict=True), start=2)
    ]

    def open_others() -> None:
        for thread in threads:
            thread.start()

    # The others open once the first connection reached the server (see the module).
    share.on_offered = open_others
    try:
        _send(dispatcher, share, counts)
    except BaseException:
        share.halt()
        raise
    finally:
        try:
            wait_for(threads, lambda _: share.halt())
        finally:
            if share.builder is not None:
                share.builder.close()
            dispatcher.release_prepaid()
    if share.error is not None:
        raise share.error
    for tally in tallies:
        counts.update(tally)
    left = share.still_set_aside()
    if left and not share.answered:
        # The server was lost and no connection reached it since: what was given back
        # waits for a run that reaches it, and this one says so (exit 75), as when it
        # could not reach the server at all. (When another connection still reached it
        # -- a provider refusing extra connections -- what was left is deferred.)
        raise MailUnavailable(
            f"mail server unavailable: {share.lost}; {left} message(s) left for the next run"
        )
    counts["messages_deferred"] += left
    return dict(counts)


@dataclass
class _Share:
    """What the connections of one dispatch share: the run's budget of messages to
    send, the signal to stop, and the first error one of them raised."""

    limit: int  # messages claimed to send, at most, over all connections
    claim_size: int  # one connection's claim
    connections: int = 1
    lost: str = ""  # why the last connection that lost the server stopped
    answered: bool = False  # a message reached the server since (or before) that
    on_offered: Callable[[], object] | None = None  # once, when a first message is offered
    stop: threading.Event = field(default_factory=threading.Event)
    backoff: datetime | None = None  # set with stop: a provider deferred us until then
    error: BaseException | None = None
    opened: bool = False  # a message of this dispatch has reached the server
    taken: int = 0
    claims: Counter[int] = field(default_factory=Counter)  # per message, in this run
    # Given back by a connection that could not reach the server (message id -> the
    # number of the claim it gave back): counted deferred at the end unless claimed
    # again since (once, whoever sends them).
    set_aside: dict[int, int] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)
    # SMTP dispatches: what the builder's helper runs, until the first claim decides
    # whether to start one (schedctl.delivery.builder), and then the builder, if any.
    write: Callable[[Draft, datetime], Written] | None = None
    builder: Builder | None = None

    def write_ahead(self, rows: Sequence[Any], now: datetime) -> None:
        """Have a claim's ``rows`` written by the builder's helper. The first claim of
        the dispatch starts one when it is big enough; it is the first connection's,
        made before the others start, so the helper is forked beside no other thread."""
        write, self.write = self.write, None
        if write is not None and len(rows) >= WORTH_AFTER:
            self.builder = Builder.start(write)
        if self.builder is not None:
            self.builder.submit(rows, now, Draft.of)

    def take(self) -> int:
        """How many messages the next claim may take (0: the run's budget is spent)."""
        with self.lock:
            size = max(0, min(self.claim_size, self.limit - self.taken))
            self.taken += size
            return size

    def give_back(self, unused: int) -> None:
        """Return what a claim took from the budget but did not claim to send."""
        with self.lock:
            self.taken -= unused

    def claimed(self, rows: Sequence[Any]) -> dict[int, int]:
        """Count a connection's claim of ``rows``; the number of this claim, by id."""
        with self.lock:
            self.claims.update(r.id for r in rows)
            return {r.id: self.claims[r.id] for r in rows}

    def put_aside(self, rows: Sequence[Any], claims: dict[int, int], *, lost: str) -> None:
        """``rows`` (claimed as ``claims`` numbers them) were given back unsent by a
        connection that lost the server (``lost``: why) and stops."""
        with self.lock:
            self.set_aside.update((r.id, claims[r.id]) for r in rows)
            self.lost = lost
            self.answered = False

    def still_set_aside(self) -> int:
        """How many messages given back unsent were not claimed again since.

        Compared by claim number, not by order of events: another connection may
        claim a message in the moment between its give-back and :meth:`put_aside`.
        """
        with self.lock:
            return sum(1 for id_, n in self.set_aside.items() if self.claims[id_] == n)

    def reached(self) -> None:
        """A connection reached the server: open the others, once."""
        with self.lock:
            start, self.on_offered = self.on_offered, None
            self.opened = True
        if start is not None:
            start()

    def halt(self, *, backoff: datetime | None = None, error: BaseException | None = None) -> None:
        """Stop every connection after the message each is sending."""
        with self.lock:
            self.backoff = self.backoff or backoff
            self.error = self.error or error
            self.on_offered = None  # connections not opened yet never open
        self.stop.set()


def _connection(dispatcher: Dispatcher, share: _Share, counts: Counter[str]) -> None:
    """One connection of a dispatch, in a thread of its own: its error stops the rest."""
    try:
        _send(dispatcher, share, counts)
    except BaseException as exc:
        share.halt(error=exc)


def _send(dispatcher: Dispatcher, share: _Share, counts: Counter[str]) -> None:
    """One connection's rounds: claim its share, send it; until nothing is due, the
    run's budget is spent or the dispatch stops."""
    with dispatcher.db.pinned(), dispatcher.backend:
        while not share.stop.is_set():
            size = share.take()
            if not size:
                break
            batch = dispatcher.claim_due(size, counts)
            share.give_back(size - len(batch.rows))
            batch.claims = share.claimed(batch.rows)
            share.write_ahead(batch.rows, dispatcher.now())
            if not batch.selected or _send_batch(dispatcher, batch, counts, share):
                break


def _send_batch(dispatcher: Dispatcher, batch: _Batch, counts: Counter[str], share: _Share) -> bool:
    """Send a claimed batch; True when this connection should stop."""
    pending = list(batch.rows)
    lease = dispatcher.policy.lease
    try:
        while pending:
            if share.stop.is_set():
                # Another connection stopped the dispatch: give the rest back (to wait
                # for the provider, when it deferred us).
                dispatcher.release(pending, next_attempt_at=share.backoff)
                counts["messages_deferred"] += len(pending)
                pending = []
                return True
            if leases.half_spent(batch.lease_expires_at, lease, dispatcher.now()):
                batch.rows = pending
                pending = dispatcher.renew(batch)
                continue
            row = pending.pop(0)
            builder = share.builder if share.builder is not None and share.builder.working else None
            following = pending[0] if pending and builder is None else None
            offered = dispatcher.offered
            delivery, detail = dispatcher.deliver(row, following=following, builder=builder)
            if dispatcher.offered > offered:
                share.answered = True
            if delivery == "unavailable":
                # Nothing reached the server: hand everything back untouched (``row``
                # was given back as its connect failure was recorded).
                dispatcher.release(pending)
                given_back, pending = [row, *pending], []
                if not share.opened:
                    share.halt()
                    raise MailUnavailable(f"mail server unavailable: {detail}")
                # A connection refused (or lost) later: another connection may still
                # send what it gave back, in this run.
                share.put_aside(given_back, batch.claims, lost=detail)
                if share.connections > 1:
                    log.warning("an SMTP connection stopped, the others go on: %s", detail)
                return True
            if dispatcher.offered and not share.opened:
                share.reached()
            _count(counts, delivery)
            if delivery == "provider_deferred":
                backoff = dispatcher.now() + dispatcher.policy.provider_backoff
                share.halt(backoff=backoff)  # (already told by on_deferral)
                dispatcher.release(pending, next_attempt_at=backoff)
                counts["messages_deferred"] += len(pending)
                pending = []
                return True
    finally:
        # An unexpected error (or interrupt) must not strand leases until they expire,
        # nor the message it stopped before it was handed over (deliver's ``unsent``).
        unsent, dispatcher.unsent = dispatcher.unsent, None
        reservation = None
        if unsent is not None:
            pending.insert(0, unsent[0])
            reservation = unsent[1]
        if pending:
            try:
                dispatcher.release(pending, reservation=reservation)
            except Exception:  # the original error matters more
                log.debug("could not release %d claimed messages", len(pending))
    return False


_COUNTED: dict[str, Iterable[str]] = {
    "sent": ("messages_sent",),
    "retrying": ("messages_retrying",),
    "failed": ("messages_failed",),
    "invalid": ("messages_failed",),
    "skipped": ("messages_skipped",),
    "postponed": ("messages_postponed",),
    "unknown": ("messages_failed", "messages_unknown"),
    "quota_deferred": ("messages_deferred",),
    "provider_deferred": ("messages_deferred",),
}


def _count(counts: Counter[str], delivery: Delivery) -> None:
    for key in _COUNTED.get(delivery, ()):
        counts[key] += 1


# --- send-now (SPEC §7) ------------------------------------------------------------

SEND_NOW_REASONS = (
    "SENT",
    "MISSING_RECIPIENT",
    "ALREADY_SENT",
    "SUPPRESSED",
    "SEND_FAILED",
    "EXCEPTION",
    "IN_PROGRESS",
    "QUOTA_DEFERRED",
    "EXPIRED",
)


@dataclass(frozen=True)
class SendNowResult:
    ok: bool
    reason_code: str
    detail: str = ""
    temporary: bool = False  # the mail server could not be reached: safe to retry


def send_now(
    db: Database,
    settings: Settings,
    message_id: int,
    now: datetime,
    *,
    force: bool = False,
    account_id: int | None = None,
    backend: MailBackend | None = None,
    grants_checked: bool = False,
) -> SendNowResult:
    """Send one message at once, whatever its send time, type settings or weekday.

    Never bypasses the suppression list; a normal message still needs quota (else it
    is deferred to the next day: QUOTA_DEFERRED). A sent message is resent, and an
    expired one sent (else EXPIRED: recorded skipped), only with ``force``; one a
    dispatcher is sending right now is left alone (IN_PROGRESS). With ``account_id``,
    a message of another account is NotFound.
    """
    if not grants_checked:  # (by a caller sending several: once for all)
        check_recording_privileges(db)
    dispatcher = Dispatcher(db, settings, now, backend=backend)

    def claim(conn: sa.Connection) -> tuple[Any, str | None]:
        row = get_message(conn, message_id, account_id=account_id, lock=True)
        at = dispatcher.now()
        address = _recipient(row)
        facts = Facts(
            recipient=address,
            status=row.status,
            suppressed=bool(address and suppressed_among(conn, row.account_id, [address])),
            leased=leases.is_live(row, at),
            expires_at=row.expires_at,
            reason_code=row.reason_code,
        )
        refusal = outcomes.before_send_now(facts, at, force=force)
        if refusal is not None:
            if refusal.change is not None:
                dispatcher.set_fields(conn, row.id, at, **refusal.change.values())
            return None, refusal.reason_code
        dispatcher.stamp_lease(conn, [row.id], at)
        return row, None

    row, refusal = db.transaction(claim)
    if refusal is not None:
        return SendNowResult(False, refusal)
    try:
        with dispatcher.backend:
            delivery, detail = dispatcher.deliver(row, force=force)
    except ConfigError:
        raise  # exit 2; deliver gave the message back untouched
    except Exception as exc:
        log.debug("send-now of message %s failed", message_id, exc_info=True)
        dispatcher.release([row])
        return SendNowResult(False, "EXCEPTION", f"{type(exc).__name__}: {exc}")
    if delivery == "sent":
        return SendNowResult(True, "SENT", detail)
    if delivery == "unavailable":
        dispatcher.release([row])
        return SendNowResult(False, "SEND_FAILED", detail, temporary=True)
    if delivery == "quota_deferred":
        return SendNowResult(False, "QUOTA_DEFERRED", detail)
    if delivery == "invalid":
        return SendNowResult(False, "EXCEPTION", detail)
    if delivery == "skipped":
        return SendNowResult(False, outbox.EXPIRED, detail)
    return SendNowResult(False, "SEND_FAILED", detail)
