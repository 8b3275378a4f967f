"""dispatch_due against a real database and a real SMTP server on loopback."""

from __future__ import annotations

import email
import email.policy
import functools
import logging
import os
import signal
import threading
import time
from collections import Counter
from collections.abc import Callable
from datetime import timedelta
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from aiosmtpd.smtp import SMTP, Envelope, Session

from schedctl import leases
from schedctl.config import Settings
from schedctl.db.database import Database
from schedctl.db.driver import SentAhead
from schedctl.db.schema import events, messages
from schedctl.delivery import outbox
from schedctl.delivery.backends import MemoryBackend
from schedctl.delivery.dispatch import (
    CLAIM_ORDER,
    Dispatcher,
    claim_query,
    dispatch_due,
    due_now,
    send_now,
)
from schedctl.delivery.message import POLICY
from schedctl.delivery.outbox import Attachment, delete_messages
from schedctl.delivery.smtp import SmtpBackend
from schedctl.delivery.suppressions import add_suppression
from schedctl.delivery.tokens import verify_token
from schedctl.delivery.transport import SendResult
from schedctl.errors import MailUnavailable, PermissionDenied
from support.cli import CliRunner
from support.databases import connect_pg, login_role
from support.delivery import (
    T0,
    all_messages,
    enqueue_all,
    load_with,
    log_rows,
    message,
    one,
)
from support.driver_trace import trace_sent_ahead, trace_statements
from support.smtp_server import SmtpServer, slow


def settings_for(server: SmtpServer, messages_table: dict[str, Any] | None = None, **kw: Any):
    tables = {"messages": messages_table} if messages_table is not None else {}
    return load_with(tables, **server.settings(**kw))


def dispatch(db_url: str, settings: Settings, at=T0, limit: int = 1000) -> dict[str, int]:
    with Database(db_url) as db:
        return dispatch_due(db, settings, at, limit)


def test_sends_each_due_message_once_and_logs_it(db_url: str, smtp: SmtpServer) -> None:
    ids = enqueue_all(db_url, [message(1), message(2), message(3, send_at=T0 + timedelta(hours=1))])
    settings = settings_for(smtp)

    counts = dispatch(db_url, settings)
    again = dispatch(db_url, settings)

    assert counts["messages_sent"] == 2
    assert again["messages_sent"] == 0
    rows = {m.id: m for m in all_messages(db_url)}
    assert sorted(smtp.message_ids) == sorted(rows[i].message_id for i in ids[:2])
    assert [rows[i].status for i in ids] == ["sent", "sent", "scheduled"]
    assert rows[ids[0]].attempts == 1
    assert rows[ids[0]].sent_at is not None
    assert rows[ids[0]].lease_owner is None
    assert [(r.outcome, r.response_code) for r in log_rows(db_url)] == [("sent", 250)] * 2


def test_a_451_is_retried_with_backoff_then_delivered_once(db_url: str) -> None:
    with SmtpServer(data_replies=["451 4.3.0 Try again later"]) as smtp:
        [mid] = enqueue_all(db_url, [message(1)])
        settings = settings_for(smtp)

        first = dispatch(db_url, settings)
        retrying = one(db_url, mid)
        too_early = dispatch(db_url, settings, T0 + timedelta(seconds=30))
        later = dispatch(db_url, settings, T0 + timedelta(minutes=2))

    assert first["messages_retrying"] == 1
    assert first["messages_sent"] == 0
    assert (retrying.status, retrying.attempts, retrying.reason_code) == (
        "retrying", 1, "TEMPORARY_FAILURE"
    )  # fmt: skip
    assert retrying.next_attempt_at - T0 >= timedelta(minutes=1)
    assert too_early["messages_sent"] == 0
    assert later["messages_sent"] == 1
    assert smtp.data_commands == 2
    assert len(smtp.message_ids) == 1
    assert (one(db_url, mid).status, one(db_url, mid).attempts) == ("sent", 2)
    assert [r.outcome for r in log_rows(db_url)] == ["retry", "sent"]


def test_a_550_fails_at_once_and_is_never_retried(db_url: str) -> None:
    with SmtpServer(data_replies=["550 5.7.1 Rejected by policy"]) as smtp:
        [mid] = enqueue_all(db_url, [message(1)])
        settings = settings_for(smtp)
        counts = dispatch(db_url, settings)
        dispatch(db_url, settings, T0 + timedelta(days=2))

    row = one(db_url, mid)
    assert counts["messages_failed"] == 1
    assert (row.status, row.reason_code, row.attempts) == ("failed", "PERMANENT_FAILURE", 1)
    assert "550" in row.last_error
    assert smtp.data_commands == 1
    assert smtp.message_ids == []


def test_retries_stop_after_max_attempts(db_url: str) -> None:
    with SmtpServer(data_replies=["421 4.7.0 Busy"] * 5) as smtp:
        [mid] = enqueue_all(db_url, [message(1)])
        settings = settings_for(smtp, {"max_attempts": 2, "retry_base": "1m"})
        dispatch(db_url, settings)
        dispatch(db_url, settings, T0 + timedelta(minutes=5))
        dispatch(db_url, settings, T0 + timedelta(hours=5))

    row = one(db_url, mid)
    assert (row.status, row.reason_code, row.attempts) == ("failed", "RETRIES_EXHAUSTED", 2)
    assert smtp.data_commands == 2


def test_no_reply_after_the_data_is_unknown_and_never_resent(db_url: str) -> None:
    with SmtpServer(hold_data=1) as smtp:
        [mid] = enqueue_all(db_url, [message(1)])
        settings = settings_for(smtp, smtp_timeout=1.0)
        counts = dispatch(db_url, settings)
        smtp.release()
        dispatch(db_url, settings, T0 + timedelta(days=1))

    row = one(db_url, mid)
    assert counts["messages_unknown"] == 1
    assert counts["messages_failed"] == 1
    assert (row.status, row.reason_code, row.attempts) == ("failed", "UNKNOWN_DELIVERY", 1)
    assert smtp.data_commands == 1
    assert [r.outcome for r in log_rows(db_url)] == ["unknown"]


def test_a_provider_quota_reply_defers_without_an_attempt_and_stops(db_url: str) -> None:
    quota_reply = "550 5.4.5 Daily sending quota exceeded"
    with SmtpServer(data_replies=[quota_reply]) as smtp:
        ids = enqueue_all(db_url, [message(n) for n in range(3)])
        counts = dispatch(db_url, settings_for(smtp))

    rows = [one(db_url, i) for i in ids]
    assert counts["messages_deferred"] == 3
    assert counts["messages_sent"] == 0
    assert smtp.data_commands == 1
    assert [(r.status, r.attempts) for r in rows] == [("scheduled", 0)] * 3
    assert rows[0].reason_code == "PROVIDER_DEFERRED"
    # Dispatch's clock is the injected instant plus the time it has run since.
    backoff = [r.next_attempt_at - T0 for r in rows]
    assert all(timedelta(minutes=15) <= b < timedelta(minutes=16) for b in backoff)
    assert all(r.lease_owner is None for r in rows)


def test_an_unreachable_server_releases_the_batch_and_raises(db_url: str, closed_port: int) -> None:
    ids = enqueue_all(db_url, [message(1), message(2)])
    settings = Settings(mail_backend="smtp", smtp_host="127.0.0.1", smtp_port=closed_port)

    with pytest.raises(MailUnavailable, match="mail server unavailable"):
        dispatch(db_url, settings)

    rows = [one(db_url, i) for i in ids]
    assert [(r.status, r.attempts, r.lease_owner) for r in rows] == [("scheduled", 0, None)] * 2


def test_suppressed_and_missing_recipients_are_settled_without_sending(
    db_url: str, smtp: SmtpServer
) -> None:
    ids = enqueue_all(
        db_url, [message(1, recipient="Gone@Example.org"), message(2, recipient=None), message(3)]
    )
    with Database(db_url) as db:
        db.transaction(lambda conn: add_suppression(conn, 1, "gone@example.org", T0))

    counts = dispatch(db_url, settings_for(smtp))

    rows = [one(db_url, i) for i in ids]
    assert [(r.status, r.reason_code) for r in rows] == [
        ("skipped", "SUPPRESSED"), ("failed", "MISSING_RECIPIENT"), ("sent", None)
    ]  # fmt: skip
    assert smtp.recipients == ["user3@example.org"]
    assert (counts["messages_skipped"], counts["messages_failed"]) == (1, 1)


def test_disabled_types_are_held_and_global_switch_stops_everything(
    db_url: str, smtp: SmtpServer
) -> None:
    ids = enqueue_all(db_url, [message(1, type="INIT"), message(2)])

    off = dispatch(db_url, settings_for(smtp, {"enabled": False}))
    init_off = dispatch(db_url, settings_for(smtp, {"types": {"INIT": {"enabled": False}}}))

    assert off["messages_sent"] == 0
    assert init_off["messages_sent"] == 1
    assert [one(db_url, i).status for i in ids] == ["scheduled", "sent"]
    assert one(db_url, ids[0]).reason_code is None


def test_weekend_sends_of_a_postponing_type_move_to_monday_in_the_event_zone(
    db_url: str, smtp: SmtpServer
) -> None:
    saturday = T0 + timedelta(days=3, hours=2)  # Sat 2026-11-21 11:00 UTC = 12:00 Berlin
    with Database(db_url) as db:
        event_id = db.transaction(
            lambda conn: conn.execute(
                events.insert()
                .values(account_id=1, name="Gala", starts_at=saturday + timedelta(days=7),
                        contact="a@example.org", tz="Europe/Berlin", planned_at=T0,
                        created_at=T0, updated_at=T0)
                .returning(events.c.id)
            ).scalar_one()
        )  # fmt: skip
    ids = enqueue_all(
        db_url,
        [
            message(1, type="REMINDER_1D", send_at=saturday, event_id=event_id),
            message(2, type="REPORT", send_at=saturday),
        ],
    )
    settings = settings_for(smtp, {"types": {"REMINDER_1D": {"weekend": "postpone"}}})

    counts = dispatch(db_url, settings, saturday)
    monday = saturday + timedelta(days=2)
    postponed = one(db_url, ids[0])
    on_monday = dispatch(db_url, settings, monday)

    assert (counts["messages_postponed"], counts["messages_sent"]) == (1, 1)
    assert postponed.send_at == monday
    assert (postponed.status, postponed.reason_code) == ("scheduled", "WEEKEND_POSTPONED")
    assert on_monday["messages_sent"] == 1
    assert one(db_url, ids[0]).status == "sent"


def test_a_live_lease_is_respected_and_an_expired_one_is_taken_over(
    db_url: str, smtp: SmtpServer
) -> None:
    ids = enqueue_all(db_url, [message(1), message(2)])
    with Database(db_url) as db:
        for mid, expiry in [
            (ids[0], T0 + timedelta(minutes=5)),
            (ids[1], T0 - timedelta(seconds=1)),
        ]:
            db.transaction(
                lambda conn, mid=mid, expiry=expiry: conn.execute(
                    messages.update()
                    .where(messages.c.id == mid)
                    .values(lease_owner="dead-host:1:abc", lease_expires_at=expiry)
                )
            )

    counts = dispatch(db_url, settings_for(smtp))

    assert counts["messages_sent"] == 1
    assert [one(db_url, i).status for i in ids] == ["scheduled", "sent"]
    assert one(db_url, ids[1]).attempts == 2  # the dead dispatcher's attempt counts


def test_a_message_whose_dispatcher_died_on_its_last_attempt_fails_unsent(
    db_url: str, smtp: SmtpServer
) -> None:
    """tick counts the attempt a dead dispatcher lost, as reconcile does: a message
    that kills every process that sends it stops at max_attempts."""
    ids = enqueue_all(db_url, [message(1), message(2)])
    with Database(db_url) as db:
        for mid, attempts in [(ids[0], 1), (ids[1], 2)]:
            db.transaction(
                lambda conn, mid=mid, attempts=attempts: conn.execute(
                    messages.update()
                    .where(messages.c.id == mid)
                    .values(
                        attempts=attempts,
                        lease_owner="dead-host:1:abc",
                        lease_expires_at=T0 - timedelta(seconds=1),
                    )
                )
            )

    counts = dispatch(db_url, settings_for(smtp, {"max_attempts": 3}))

    assert (counts["messages_sent"], counts["messages_failed"]) == (1, 1)
    sent, failed = one(db_url, ids[0]), one(db_url, ids[1])
    assert (sent.status, sent.attempts) == ("sent", 3)
    assert (failed.status, failed.reason_code, failed.attempts) == ("failed", "LEASE_EXPIRED", 3)
    assert failed.lease_owner is None
    assert smtp.message_ids == [sent.message_id]


def test_a_message_taken_over_from_a_dead_dispatcher_is_recovered_as_reconcile_does(
    db_url: str, closed_port: int
) -> None:
    """tick's claim sends abandoned work back through the one recovery reconcile uses
    (leases.recover): the lost attempt counted, retrying with LEASE_EXPIRED -- which is
    what is left when the mail server cannot be reached to send it again."""
    [mid] = enqueue_all(db_url, [message(1)])
    with Database(db_url) as db:
        db.transaction(
            lambda conn: conn.execute(
                messages.update()
                .where(messages.c.id == mid)
                .values(lease_owner="dead-host:1:abc", lease_expires_at=T0 - timedelta(seconds=1))
            )
        )
    settings = Settings(mail_backend="smtp", smtp_host="127.0.0.1", smtp_port=closed_port)

    with pytest.raises(MailUnavailable):
        dispatch(db_url, settings)

    row = one(db_url, mid)
    assert (row.status, row.attempts, row.reason_code, row.last_error) == (
        "retrying", 1, "LEASE_EXPIRED", outbox.ABANDONED
    )  # fmt: skip
    assert (row.lease_owner, row.lease_expires_at, row.next_attempt_at) == (None, None, None)


def test_the_mail_is_multipart_with_attachments_and_one_click_unsubscribe(
    db_url: str, smtp: SmtpServer
) -> None:
    csv = Attachment("report.csv", "text/csv", b"a,b\n1,2\n")
    [mid] = enqueue_all(db_url, [message(1, subscription=True, attachments=[csv])])
    settings = settings_for(
        smtp, unsubscribe_base_url="https://mail.example.com/u", unsubscribe_secret="k" * 32
    )

    dispatch(db_url, settings)

    raw = smtp.accepted[0].original_content
    assert raw is not None
    received = email.message_from_bytes(raw, policy=POLICY)
    assert received["Message-ID"] == one(db_url, mid).message_id
    assert received["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    link = str(received["List-Unsubscribe"]).strip("<>")
    assert link.startswith("https://mail.example.com/u/unsubscribe?a=1&e=user1%40example.org&t=")
    assert verify_token("k" * 32, "1", "user1@example.org", link.rsplit("t=", 1)[1])
    body = received.get_body(preferencelist=("html",))
    assert body is not None
    assert "<p>Hello 1</p>" in body.get_content()
    [attachment] = list(received.iter_attachments())  # type: ignore[attr-defined]
    assert attachment.get_filename() == "report.csv"
    assert attachment.get_payload(decode=True) == b"a,b\n1,2\n"


CSV = Attachment("report.csv", "text/csv", b"name,total\nacme,3\n")
BINARY = Attachment("Отчёт.bin", "application/octet-stream", bytes(range(256)) * 4)
# What a message carries, whatever its content: each case reads back the same through
# the email package's own parser (email.policy.default) on the receiving side.
MAIL_CASES: dict[str, dict[str, Any]] = {
    "ascii": {"subject": "Report 1", "body_text": "Hello\n.a line with a dot\n",
              "body_html": "<p>Hello</p>"},
    "text only": {"body_html": None, "body_text": "Hello, no HTML"},
    "russian": {"subject": "Отчёт за неделю", "body_text": "Привет, мир\n",
                "body_html": "<p>Привет, мир</p>"},
    "long subject": {"subject": "Weekly report for the northern region " * 6},
    "long russian subject": {"subject": "Еженедельный отчёт по северному региону " * 6},
    "long lines and mostly non-latin": {"body_text": "日本語のテキスト" * 60,
                                        "body_html": "<p>" + "x" * 300 + "</p>\n" * 12},
    "html and attachments": {"attachments": [CSV, BINARY]},
    "text and an attachment": {"body_html": None, "attachments": [CSV]},
    "unsubscribe": {"subscription": True, "subject": "Подписка"},
}  # fmt: skip
# Python 3.11's folder puts the space between two encoded words outside them, where
# RFC 2047 readers drop it ("отчётпо"): CPython gh-144156, the same before and after
# the email writer became one.
_SPACE_LOST = pytest.mark.xfail(strict=True, reason="CPython gh-144156: folding drops a space")


@pytest.mark.parametrize(
    "case",
    [pytest.param(c, marks=_SPACE_LOST) if c == "long russian subject" else c for c in MAIL_CASES],
)
def test_what_the_server_receives_reads_back_as_what_was_queued(
    db_url: str, smtp: SmtpServer, case: str
) -> None:
    fields = MAIL_CASES[case]
    [mid] = enqueue_all(db_url, [message(1, **fields)])
    queued = one(db_url, mid)
    settings = settings_for(
        smtp,
        mail_from="Отдел отчётов <reports@example.com>",
        unsubscribe_base_url="https://mail.example.com/u",
        unsubscribe_secret="k" * 32,
    )

    assert dispatch(db_url, settings)["messages_sent"] == 1

    [envelope] = smtp.accepted
    assert (envelope.mail_from, envelope.rcpt_tos) == ("reports@example.com", [queued.recipient])
    raw = envelope.original_content
    assert raw is not None
    assert raw.isascii()  # 7-bit: no reliance on the server's 8BITMIME
    assert max(len(line) for line in raw.split(b"\r\n")) <= 998
    received = email.message_from_bytes(raw, policy=email.policy.default)
    assert isinstance(received, EmailMessage)
    assert received.defects == []
    assert received["From"] == "Отдел отчётов <reports@example.com>"
    assert received["To"] == queued.recipient
    assert received["Subject"] == " ".join(queued.subject.split())  # one line
    assert received["Message-ID"] == queued.message_id
    assert received["Date"].datetime == T0
    assert received["Auto-Submitted"] == "auto-generated"
    assert received["MIME-Version"] == "1.0"
    unsubscribe = received["List-Unsubscribe"]
    assert (unsubscribe is not None) == bool(fields.get("subscription"))
    if unsubscribe is not None:
        assert str(unsubscribe).startswith("<https://mail.example.com/u/unsubscribe?a=1&e=")
        assert received["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"

    def text_of(subtype: str) -> str | None:
        part = received.get_body(preferencelist=(subtype,))
        return None if part is None else part.get_content().replace("\r\n", "\n")

    def as_set(text: str | None) -> str | None:  # set_content ends the text with a newline
        return None if text is None else text if text.endswith("\n") else text + "\n"

    assert text_of("plain") == as_set(queued.body_text)
    assert text_of("html") == as_set(queued.body_html)
    attachments = [
        (part.get_filename(), part.get_content_type(), part.get_payload(decode=True))
        for part in received.iter_attachments()  # type: ignore[attr-defined]
    ]
    expected = [(a.filename, a.content_type, a.content) for a in fields.get("attachments", [])]
    assert attachments == expected
    for part in received.walk():
        assert part.defects == []
        assert (part["MIME-Version"] is None) == (part is not received)


class _Recording(MemoryBackend):
    def __init__(self) -> None:
        super().__init__()
        self.given: list[object] = []

    def send(
        self,
        msg: EmailMessage,
        meanwhile: Callable[[], object] | None = None,
        *,
        ready: Callable[[], object] | None = None,
    ) -> SendResult:
        self.given.append(msg)
        return super().send(msg, ready=ready)


def test_every_message_is_built_by_the_one_writer(db_url: str) -> None:
    """ASCII and Russian mail alike reach the backend as build_email's EmailMessage."""
    enqueue_all(db_url, [message(1), message(2, subject="Отчёт"), message(3, body_html=None)])
    backend = _Recording()

    with Database(db_url) as db:
        assert dispatch_due(db, Settings(), T0, backend=backend)["messages_sent"] == 3

    assert [type(msg) for msg in backend.given] == [EmailMessage] * 3
    sent = {str(msg["Subject"]): msg for msg in backend.given}  # type: ignore[index]
    assert sent["Report 1"].policy is POLICY  # type: ignore[attr-defined]


def test_limit_bounds_the_number_of_sends(db_url: str, smtp: SmtpServer) -> None:
    enqueue_all(db_url, [message(n) for n in range(5)])

    counts = dispatch(db_url, settings_for(smtp, {"batch_size": 2}), limit=3)

    assert counts["messages_sent"] == 3
    with Database(db_url) as db:
        left = db.scalar(
            sa.select(sa.func.count()).select_from(messages).where(messages.c.status == "scheduled")
        )
    assert left == 2


def test_a_slow_batch_renews_its_leases_and_skips_rows_it_lost(
    db_url: str, smtp: SmtpServer
) -> None:
    from collections import Counter

    from schedctl.delivery.dispatch import Dispatcher, _send_batch, _Share

    ids = enqueue_all(db_url, [message(1), message(2)])
    with Database(db_url) as db:
        dispatcher = Dispatcher(db, settings_for(smtp), T0)
        batch = dispatcher.claim_due(10, Counter())
        # Another dispatcher took message 2 over, and this batch is past half its lease.
        db.transaction(
            lambda conn: conn.execute(
                messages.update().where(messages.c.id == ids[1]).values(lease_owner="other:2:x")
            )
        )
        batch.lease_expires_at -= dispatcher.policy.lease
        counts: Counter[str] = Counter()
        with dispatcher.backend:
            _send_batch(dispatcher, batch, counts, _Share(limit=10, claim_size=10))

    assert counts["messages_sent"] == 1
    assert [one(db_url, i).status for i in ids] == ["sent", "scheduled"]
    assert one(db_url, ids[1]).lease_owner == "other:2:x"
    assert len(smtp.message_ids) == 1


class _DeletingBackend(MemoryBackend):
    """A memory backend that runs ``delete`` once, while it sends the first message."""

    def __init__(self, db_url: str, delete: Callable[[sa.Connection], Any]) -> None:
        super().__init__()
        self.db_url = db_url
        self.delete = delete
        self.deleted: Any = None
        self.sent: list[str] = []

    def send(
        self,
        msg: EmailMessage,
        meanwhile: Callable[[], object] | None = None,
        *,
        ready: Callable[[], object] | None = None,
    ) -> SendResult:
        if ready is not None:
            ready()
        if not self.sent:
            with Database(self.db_url) as db:
                self.deleted = db.transaction(self.delete)
        self.sent.append(str(msg["Message-ID"]))
        return SendResult("sent", 250, "accepted", provider="memory")


def test_delete_all_during_a_send_leaves_the_leased_batch_alone(db_url: str) -> None:
    ids = enqueue_all(db_url, [message(1), message(2), message(3, send_at=T0 + timedelta(days=1))])
    backend = _DeletingBackend(db_url, lambda conn: delete_messages(conn, 1, now=T0))

    with Database(db_url) as db:
        counts = dispatch_due(db, Settings(), T0, backend=backend)

    assert counts["messages_sent"] == 2
    assert tuple(backend.deleted) == (1, 2)  # the future message; two were being sent
    assert [(m.id, m.status) for m in all_messages(db_url)] == [(ids[0], "sent"), (ids[1], "sent")]
    assert [r.message_id for r in log_rows(db_url)] == ids[:2]


def test_a_message_deleted_while_it_is_sent_is_not_recorded_and_the_tick_goes_on(
    db_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    ids = enqueue_all(db_url, [message(1), message(2), message(3)])
    backend = _DeletingBackend(
        db_url, lambda conn: conn.execute(messages.delete().where(messages.c.id == ids[0]))
    )

    with caplog.at_level(logging.INFO, logger="schedctl.delivery.dispatch"), Database(db_url) as db:
        counts = dispatch_due(db, Settings(), T0, backend=backend)

    assert counts["messages_sent"] == 3
    assert len(backend.sent) == 3
    assert [(m.id, m.status) for m in all_messages(db_url)] == [(i, "sent") for i in ids[1:]]
    assert [r.message_id for r in log_rows(db_url)] == ids[1:]
    [gone] = [r for r in caplog.records if "deleted" in r.getMessage()]
    assert gone.levelno == logging.INFO
    assert gone.getMessage().startswith(f"message {ids[0]} was deleted while it was being sent")
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


def test_an_outcome_whose_lease_was_taken_over_is_logged_but_not_recorded(
    db_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """The lease of message 1 passes to another dispatcher while it is sent: its
    outcome is not written (the new holder decides), its attempt is logged, and the
    batch goes on; message 2's outcome and attempt are written as usual."""
    ids = enqueue_all(db_url, [message(1), message(2)])
    backend = _DeletingBackend(
        db_url,
        lambda conn: conn.execute(
            messages.update().where(messages.c.id == ids[0]).values(lease_owner="other:2:x")
        ),
    )

    with caplog.at_level(logging.INFO, logger="schedctl.delivery.dispatch"), Database(db_url) as db:
        counts = dispatch_due(db, Settings(), T0, backend=backend)

    assert counts["messages_sent"] == 2
    first, second = (one(db_url, i) for i in ids)
    assert (first.status, first.lease_owner, first.attempts) == ("scheduled", "other:2:x", 0)
    assert (second.status, second.lease_owner, second.attempts) == ("sent", None, 1)
    assert [(r.message_id, r.outcome) for r in log_rows(db_url)] == [
        (ids[0], "sent"),
        (ids[1], "sent"),
    ]
    [lost] = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert lost.getMessage().startswith(f"message {ids[0]}: its lease was lost")


def test_the_next_message_is_built_while_the_server_reads_this_one(
    db_url: str, smtp: SmtpServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Over SMTP each message but a batch's first is built during its predecessor's
    send, and once: what arrives is what the rows hold, in order."""
    builds: list[tuple[int, bool]] = []  # (row id, built inside a send)
    sending = False
    real_build, real_send = Dispatcher.build, SmtpBackend.send

    def build(self: Dispatcher, row: Any, now: Any) -> EmailMessage:
        builds.append((row.id, sending))
        return real_build(self, row, now)

    def send(
        self: SmtpBackend, msg: EmailMessage, meanwhile: Any = None, *, ready: Any = None
    ) -> SendResult:
        nonlocal sending
        sending = True
        try:
            return real_send(self, msg, meanwhile, ready=ready)
        finally:
            sending = False

    monkeypatch.setattr(Dispatcher, "build", build)
    monkeypatch.setattr(SmtpBackend, "send", send)
    ids = enqueue_all(db_url, [message(n) for n in range(4)])

    counts = dispatch(db_url, settings_for(smtp, smtp_connections=1))

    assert counts["messages_sent"] == 4
    assert builds == [(ids[0], False)] + [(i, True) for i in ids[1:]]
    assert smtp.message_ids == [one(db_url, i).message_id for i in ids]


def test_a_message_that_cannot_be_built_fails_alone_between_two_that_are_sent(
    db_url: str, smtp: SmtpServer
) -> None:
    """Message 2's stored Message-ID was damaged: it fails for good (INVALID_MESSAGE)
    with no attempt, whether its failed build came ahead of it (during message 1's
    send) or not; messages 1 and 3 go out."""
    ids = enqueue_all(db_url, [message(n) for n in range(3)])
    with Database(db_url) as db:
        db.transaction(
            lambda conn: conn.execute(
                messages.update().where(messages.c.id == ids[1]).values(message_id="not-an-id")
            )
        )

    counts = dispatch(db_url, settings_for(smtp, smtp_connections=1))

    assert (counts["messages_sent"], counts["messages_failed"]) == (2, 1)
    broken = one(db_url, ids[1])
    assert (broken.status, broken.reason_code, broken.attempts) == ("failed", "INVALID_MESSAGE", 0)
    assert "invalid Message-ID" in broken.last_error
    assert smtp.message_ids == [one(db_url, i).message_id for i in (ids[0], ids[2])]
    assert [r.message_id for r in log_rows(db_url)] == [ids[0], ids[2]]


def test_a_sent_message_is_recorded_by_one_statement_where_the_dialect_can(
    db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """PostgreSQL: a send's outcome and its email_log row are one statement that
    commits as it runs, sent ahead on libpq (Database.send_alone); elsewhere, one
    transaction of an UPDATE and an INSERT on the driver. Neither goes through
    SQLAlchemy. Either way the row and the log say the same."""
    [mid] = enqueue_all(db_url, [message(1)])
    backend = _DeletingBackend(db_url, lambda conn: None)  # notes what it sent
    through_sqlalchemy: list[str] = []

    def executed(conn: sa.Connection, cursor: object, statement: str, *_: object) -> None:
        if backend.sent:
            through_sqlalchemy.append(" ".join(statement.split()[:3]))

    with Database(db_url) as db:
        driver = trace_statements(db.engine)
        ahead = trace_sent_ahead(monkeypatch)
        sa.event.listen(db.engine, "before_cursor_execute", executed)
        counts = dispatch_due(db, Settings(), T0, backend=backend)

    assert counts["messages_sent"] == 1
    recording = [s for s in driver if s[0].startswith(("WITH", "UPDATE messages", "INSERT"))]
    if db.dialect == "postgresql":
        assert ahead == ["WITH done AS"]
        # (The claim's lease is an UPDATE too, in its transaction: not in autocommit.)
        assert not [s for s in recording if s[1] or s[0].startswith("WITH")]
    else:
        assert ahead == []
        at = driver.index(("UPDATE messages SET", False), driver.index(("COMMIT", False)))
        assert [s for s, _ in driver[at - 1 : at + 3]] == [
            "BEGIN IMMEDIATE",
            "UPDATE messages SET",
            "INSERT INTO email_log",
            "COMMIT",
        ]
    assert not [s for s in through_sqlalchemy if s.startswith(("WITH", "UPDATE", "INSERT"))]
    row = one(db_url, mid)
    assert (row.status, row.attempts, row.lease_owner, row.lease_expires_at) == (
        "sent",
        1,
        None,
        None,
    )
    [log] = log_rows(db_url)
    assert (log.message_id, log.account_id, log.outcome, log.response_code) == (mid, 1, "sent", 250)
    assert (log.provider, log.recipients, log.error) == ("memory", row.recipient, None)
    assert len(backend.sent) == 1
    assert log.attempted_at == row.sent_at


@pytest.mark.parametrize("dialect", ["sqlite"])
@pytest.mark.parametrize(
    ("lease", "env"),
    [("1s", {}), ("3m", {"SCHEDCTL_SMTP_TIMEOUT": "60"})],
    ids=["1s", "3m-with-60s-smtp-timeout"],
)
def test_tick_refuses_a_too_short_lease_before_writing_anything(
    db_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    lease: str,
    env: dict[str, str],
) -> None:
    [mid] = enqueue_all(db_url, [message(1)])
    before = all_messages(db_url)
    config = tmp_path / "schedctl.toml"
    config.write_text(f'[messages]\nlease = "{lease}"\n')
    cli = CliRunner(monkeypatch, capsys)

    result = cli("tick", "--json", db_url=db_url,
                 env={"SCHEDCTL_CONFIG": str(config), "SCHEDCTL_NOW": T0.isoformat(),
                      "SCHEDCTL_MAIL_BACKEND": "memory", **env})  # fmt: skip

    assert result.returncode == 2, result.stderr
    assert "lease" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert all_messages(db_url) == before
    assert one(db_url, mid).lease_owner is None
    assert log_rows(db_url) == []


# --- several connections ([smtp] connections) -----------------------------------------


def test_several_connections_send_each_message_once_and_count_exactly(
    db_url: str, smtp: SmtpServer
) -> None:
    ids = enqueue_all(db_url, [message(n) for n in range(40)])
    settings = settings_for(smtp, {"batch_size": 3}, smtp_connections=4)

    counts = dispatch(db_url, settings)

    assert len(smtp.peers) == 4  # every connection sent some
    assert counts["messages_sent"] == 40
    assert sum(counts.values()) == 40  # nothing counted twice or elsewhere
    rows = all_messages(db_url)
    assert [(r.status, r.attempts, r.lease_owner) for r in rows] == [("sent", 1, None)] * 40
    assert sorted(smtp.message_ids) == sorted(r.message_id for r in rows)
    assert sorted(r.message_id for r in log_rows(db_url)) == ids


def test_an_interrupt_waits_for_the_other_connections_message(
    db_url: str, smtp: SmtpServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ctrl-C while the first connection waits for the second, which is sending: the
    dispatch raises it only once the second has recorded its message and given back
    the rest. (Thread.join, interrupted, would have let it return at once.)"""
    enqueue_all(db_url, [message(n) for n in range(4)])
    real_deliver = Dispatcher.deliver
    second_claimed = threading.Event()
    interrupted = False

    def deliver(self: Dispatcher, *args: Any, **kwargs: Any) -> Any:
        nonlocal interrupted
        if threading.current_thread().name == "dispatch-2" and not interrupted:
            interrupted = True
            second_claimed.set()
            time.sleep(0.3)  # the first connection has sent its two and waits
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.3)
        elif threading.current_thread() is threading.main_thread() and kwargs["following"] is None:
            second_claimed.wait(5)  # (before the first claims again: the second has two)
        return real_deliver(self, *args, **kwargs)

    monkeypatch.setattr(Dispatcher, "deliver", deliver)
    with pytest.raises(KeyboardInterrupt):
        dispatch(db_url, settings_for(smtp, {"batch_size": 2}, smtp_connections=2))

    rows = all_messages(db_url)
    assert interrupted
    assert Counter(r.status for r in rows) == Counter({"sent": 3, "scheduled": 1})
    assert [r.lease_owner for r in rows] == [None] * 4
    assert len(smtp.message_ids) == 3


def test_one_connection_sends_over_one_session(db_url: str, smtp: SmtpServer) -> None:
    enqueue_all(db_url, [message(n) for n in range(6)])

    counts = dispatch(db_url, settings_for(smtp, {"batch_size": 2}, smtp_connections=1))

    assert counts["messages_sent"] == 6
    assert len(smtp.peers) == 1


def test_the_run_limit_holds_over_several_connections(db_url: str, smtp: SmtpServer) -> None:
    enqueue_all(db_url, [message(n) for n in range(30)])

    counts = dispatch(db_url, settings_for(smtp, {"batch_size": 4}, smtp_connections=4), limit=10)

    assert counts["messages_sent"] == 10
    assert len(smtp.message_ids) == 10
    statuses = Counter(r.status for r in all_messages(db_url))
    assert statuses == Counter({"sent": 10, "scheduled": 20})


def test_a_provider_deferral_on_one_connection_stops_them_all(db_url: str) -> None:
    """The provider refuses us on the fourth message, with every connection open: each
    connection stops after the message it is sending, what they claimed waits
    provider_backoff, untouched, and nothing more is claimed. (The first three are
    accepted slowly, so that the connections opened after the first have sent by then.)"""
    quota_reply = "550 5.4.5 Daily sending quota exceeded"
    with SmtpServer(data_replies=[slow("250 OK", 0.2)] * 3 + [quota_reply]) as smtp:
        enqueue_all(db_url, [message(n) for n in range(30)])
        counts = dispatch(db_url, settings_for(smtp, {"batch_size": 3}, smtp_connections=4))

    rows = all_messages(db_url)
    sent = [r for r in rows if r.status == "sent"]
    deferred = [r for r in rows if r.status == "scheduled" and r.next_attempt_at is not None]
    untouched = [r for r in rows if r.status == "scheduled" and r.next_attempt_at is None]
    assert len(smtp.peers) > 1
    assert counts["messages_sent"] == len(sent) == len(smtp.message_ids)
    assert smtp.data_commands == len(sent) + 1  # three before the refusal, a few in flight
    assert 3 <= len(sent) <= 4 * 3
    assert counts["messages_deferred"] == len(deferred) >= 1
    assert [r.reason_code for r in deferred].count("PROVIDER_DEFERRED") == 1
    assert all(r.next_attempt_at >= T0 + timedelta(minutes=15) for r in deferred)
    assert all(r.lease_owner is None and r.attempts == 0 for r in deferred + untouched)
    assert len(untouched) >= 30 - 4 * 3 * 2  # they stopped claiming


def test_an_unreachable_server_is_tried_over_one_connection(db_url: str, closed_port: int) -> None:
    """The other connections open only once the first reached the server: a server
    that is down is tried once (one attempt logged), not once per connection."""
    enqueue_all(db_url, [message(n) for n in range(10)])
    settings = Settings(
        mail_backend="smtp", smtp_host="127.0.0.1", smtp_port=closed_port, smtp_connections=4
    )

    with pytest.raises(MailUnavailable, match="mail server unavailable"):
        dispatch(db_url, settings)

    assert [r.outcome for r in log_rows(db_url)] == ["retry"]
    assert {(r.status, r.attempts, r.lease_owner) for r in all_messages(db_url)} == {
        ("scheduled", 0, None)
    }


def test_connections_the_server_refuses_give_their_messages_to_the_others(
    db_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A provider that serves two connections per client refuses the third and fourth:
    those give back what they claimed, untouched, and stop; the two others send it all
    in the same run, once each, and the counts say so."""
    with SmtpServer(sessions=2) as smtp:
        enqueue_all(db_url, [message(n) for n in range(30)])
        settings = settings_for(smtp, {"batch_size": 3}, smtp_connections=4)
        with caplog.at_level(logging.WARNING, logger="schedctl.delivery.dispatch"):
            counts = dispatch(db_url, settings)
        # What a refused connection gave back after the others had run out of work
        # (a busy machine) waits for the next run, counted deferred.
        sent, deferred = counts["messages_sent"], counts["messages_deferred"]
        assert (sent + deferred, deferred % 3) == (30, 0), counts
        if deferred:  # (over one connection, which the server never refuses)
            again = settings_for(smtp, {"batch_size": 3}, smtp_connections=1)
            assert dispatch(db_url, again)["messages_sent"] == deferred

    assert len(smtp.refused) == 2
    assert sorted(Counter(smtp.message_ids).values()) == [1] * 30
    rows = all_messages(db_url)
    assert {(r.status, r.attempts, r.lease_owner) for r in rows} == {("sent", 1, None)}
    refused = [r for r in log_rows(db_url) if r.outcome == "retry"]
    assert len(refused) == 2  # the message each refused connection tried (not an attempt)
    warnings = [r.getMessage() for r in caplog.records]
    assert len(warnings) == 2
    assert all("the others go on" in w and "Too many concurrent" in w for w in warnings)


@pytest.mark.parametrize("connections", [1, 4])
def test_a_server_that_goes_down_mid_run_ends_the_dispatch_with_exit_75(
    db_url: str, connections: int
) -> None:
    """Found by review: when the server went away after the first messages, every
    connection gave back what it held and the run ended 0, its heartbeat a success,
    with the rest unsent. What they gave back still waits for the next run; the run
    now says the server is unavailable, as when it could not reach it at all."""
    smtp = SmtpServer().__enter__()
    try:
        enqueue_all(db_url, [message(n) for n in range(40)])
        settings = settings_for(smtp, smtp_connections=connections, smtp_max_per_second=40)

        def stop_after_five() -> None:
            while len(smtp.accepted) < 5:
                time.sleep(0.005)
            smtp.controller.stop()

        stopper = threading.Thread(target=stop_after_five)
        stopper.start()
        with pytest.raises(MailUnavailable, match="left for the next run") as caught:
            dispatch(db_url, settings)
        stopper.join()
    finally:
        smtp.release()
    assert caught.value.exit_code == 75
    rows = all_messages(db_url)
    assert {r.lease_owner for r in rows} == {None}
    # Given back untouched, or retrying (a connection cut before the end of its
    # data), for the next run; failed only when cut after it (UNKNOWN_DELIVERY).
    waiting = [r for r in rows if r.status in ("scheduled", "retrying")]
    assert waiting
    assert {r.status for r in rows} <= {"sent", "scheduled", "retrying", "failed"}
    assert len(rows) == 40


def test_what_one_connection_gives_back_is_never_another_connections_claim(
    db_url: str,
) -> None:
    """Connections of one dispatch hold their leases apart: a give-back by one (a
    refused connection hands back its batch) leaves a batch another connection
    claimed meanwhile leased, so nobody claims and sends those messages again."""
    enqueue_all(db_url, [message(n) for n in range(4)])
    settings = load_with({}, mail_backend="memory")
    with Database(db_url) as db:
        first = Dispatcher(db, settings, T0, backend=MemoryBackend())
        second = first.another(MemoryBackend())
        claimed = second.claim_due(4, Counter()).rows
        first.release(claimed)  # e.g. ids it held before and gave back once already
        again = first.another(MemoryBackend()).claim_due(4, Counter()).rows

    assert len(claimed) == 4
    assert again == []
    assert {r.lease_owner for r in all_messages(db_url)} == {second.owner}


@pytest.mark.parametrize("dialect", ["sqlite"])
def test_eight_connections_on_sqlite_never_find_the_database_locked(
    db_url: str, smtp: SmtpServer, caplog: pytest.LogCaptureFixture
) -> None:
    """Eight threads write their outcomes to one SQLite file: they take turns in the
    process, so none waits in SQLite's busy handler, and none is refused."""
    enqueue_all(db_url, [message(n) for n in range(160)])
    settings = settings_for(smtp, {"batch_size": 2}, smtp_connections=8)

    with caplog.at_level(logging.DEBUG):
        counts = dispatch(db_url, settings)

    assert counts["messages_sent"] == 160
    assert len(smtp.peers) == 8
    assert {r.status for r in all_messages(db_url)} == {"sent"}
    text = caplog.text.lower()
    assert "locked" not in text
    assert "transient database error" not in text


def test_max_per_second_paces_each_send_and_nothing_else(
    db_url: str, smtp: SmtpServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every send of every connection takes its turn on one pacer; a message settled
    without a send (here: expired) does not wait."""
    from schedctl.delivery import pacing

    pacers: list[pacing.Pacer] = []
    waits: list[int] = []
    original = pacing.Pacer.wait

    def wait(self: pacing.Pacer) -> float:
        pacers.append(self)
        waits.append(1)
        return original(self)

    monkeypatch.setattr(pacing.Pacer, "wait", wait)
    enqueue_all(
        db_url,
        [message(n) for n in range(12)]
        + [message(99, expires_at=T0 + timedelta(seconds=1), send_at=T0 - timedelta(hours=1))],
    )
    settings = settings_for(smtp, {"batch_size": 2}, smtp_connections=4, smtp_max_per_second=1000.0)

    counts = dispatch(db_url, settings, at=T0 + timedelta(seconds=2))

    assert counts["messages_sent"] == 12
    assert counts["messages_skipped"] == 1
    assert len(waits) == 12
    assert len({id(p) for p in pacers}) == 1  # one pacer for all connections
    assert pacers[0].interval == pytest.approx(0.001)


def test_an_error_on_one_connection_stops_the_others_and_is_raised(
    db_url: str, smtp: SmtpServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A connection fails unexpectedly: the others stop after the message each is
    sending, every claimed message is given back but the one the error struck (its
    outcome is unknown: it keeps its lease, to be recovered as any abandoned send),
    what was sent is recorded sent, and the error is the dispatch's."""
    from schedctl.delivery import dispatch as dispatch_module

    made: list[Any] = []
    real = dispatch_module.mail_backend

    def mail_backend(settings: Settings) -> Any:
        backend = real(settings)
        made.append(backend)
        if len(made) == 3:  # the third connection breaks on its first send

            def send(msg: EmailMessage, meanwhile: object = None, **_: object) -> SendResult:
                raise RuntimeError("the third connection broke")

            backend.send = send  # type: ignore[method-assign]
        return backend

    monkeypatch.setattr(dispatch_module, "mail_backend", mail_backend)
    enqueue_all(db_url, [message(n) for n in range(40)])

    with pytest.raises(RuntimeError, match="third connection broke"):
        dispatch(db_url, settings_for(smtp, {"batch_size": 3}, smtp_connections=4))

    rows = all_messages(db_url)
    assert len([r for r in rows if r.lease_owner is not None]) == 1
    sent = {r.message_id for r in rows if r.status == "sent"}
    assert sent == set(smtp.message_ids)
    assert {(r.status, r.attempts) for r in rows if r.status != "sent"} == {("scheduled", 0)}
    assert len(sent) < 40


class _CheckingRecords(SmtpServer):
    """Before it accepts a message, looks in the database: how many messages it had
    accepted, and how many of them were recorded sent (in another connection)."""

    def __init__(self, db_url: str) -> None:
        super().__init__()
        self.engine = sa.create_engine(db_url.replace("postgresql://", "postgresql+psycopg://"))
        self.seen: list[tuple[int, int]] = []
        self.events: list[str] = []

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        with self.engine.connect() as conn:
            recorded = conn.execute(
                sa.select(sa.func.count()).select_from(messages).where(messages.c.status == "sent")
            ).scalar_one()
        self.seen.append((len(self.accepted), int(recorded)))
        self.events.append("accept")
        return await super().handle_DATA(server, session, envelope)


def test_each_outcome_is_durable_before_the_next_message_can_be_accepted(
    db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The one exception to exactly once is one message per connection: so, before the
    server has the whole of a message, the connection's previous outcome is committed
    (on PostgreSQL it is sent ahead and written while the envelope goes out; its body
    waits for its reply). The server checks, before it accepts each message, that
    every one it accepted before is recorded sent; and on PostgreSQL each reply was
    read between two messages the server accepted."""
    enqueue_all(db_url, [message(n) for n in range(12)])
    with _CheckingRecords(db_url) as smtp:
        real_rows = SentAhead.rows

        def rows(self: SentAhead) -> int:
            written = real_rows(self)
            smtp.events.append("awaited")
            return written

        monkeypatch.setattr(SentAhead, "rows", rows)
        counts = dispatch(db_url, settings_for(smtp, {"batch_size": 5}, smtp_connections=1))
        smtp.engine.dispose()

    assert counts["messages_sent"] == 12
    assert smtp.seen == [(n, n) for n in range(12)]
    if smtp.engine.dialect.name == "postgresql":
        assert smtp.events == ["accept", "awaited"] * 12


def _all(statement: sa.TextClause, conn: sa.Connection) -> list[Any]:
    return list(conn.execute(statement))


def test_the_claim_and_its_recovery_read_indexes_however_large_the_outbox(db_url: str) -> None:
    """Before every claim the dispatcher looks for due messages whose lease ran out,
    then claims the oldest due. With thousands due (none leased): the recovery is
    planned on messages_leased, the index of the leased rows alone, not by reading
    every due message (35-70 ms a claim with 100,000 due, before it existed); and on
    PostgreSQL the claim reads messages_claimable in its order, where it sorted the
    whole backlog (180-390 ms a claim). SQLite plans without statistics, as it
    usually runs, and claims along messages_due; PostgreSQL plans with them, as
    autovacuum keeps them."""
    rows = [
        {
            "account_id": 1, "type": "REPORT", "priority": "normal", "recipient": f"u{n}@ex.org",
            "subject": "s", "body_text": "b", "send_at": T0, "status": "scheduled",
            "attempts": 0, "idempotency_key": f"k{n}", "message_id": f"<{n}@ex.org>",
            "subscription": False, "created_at": T0, "updated_at": T0,
        }
        for n in range(5000)
    ]  # fmt: skip
    now = T0 + timedelta(minutes=1)
    due = due_now(now)
    recovery = leases.expired_rows(
        outbox.LEASED_MESSAGES, now, *due, limit=50, order_by=CLAIM_ORDER
    )
    plans: dict[str, str] = {}
    with Database(db_url) as db:
        db.transaction(lambda conn: conn.execute(messages.insert(), rows))
        explain = "EXPLAIN QUERY PLAN"
        if db.dialect == "postgresql":
            db.transaction(lambda conn: conn.execute(sa.text("ANALYZE messages")))
            explain = "EXPLAIN"
        for name, query in (("recovery", recovery), ("claim", claim_query(due, 50))):
            sql = sa.text(
                f"{explain} {query.compile(db.engine, compile_kwargs={'literal_binds': True})}"
            )
            plans[name] = " ".join(str(r) for r in db.transaction(functools.partial(_all, sql)))

    assert "messages_leased" in plans["recovery"], plans
    if db.dialect == "postgresql":
        assert "messages_claimable" in plans["claim"], plans
        assert "Sort" not in plans["claim"], plans
    else:
        assert "USING INDEX messages_due" in plans["claim"], plans


def test_an_outcome_that_cannot_be_written_gives_the_next_message_back_unsent(
    db_url: str,
) -> None:
    """The first message's outcome cannot be written (a trigger refuses its email_log
    row). On PostgreSQL that shows only when the second message is about to be handed
    over (the outcome was sent ahead); either way the error is the run's, the second
    and third messages were never handed over and go back untouched, with no lease
    and no attempt counted, and the first keeps its lease (its outcome unknown)."""
    ids = enqueue_all(db_url, [message(1), message(2), message(3)])
    with Database(db_url) as db:
        if db.dialect == "postgresql":
            refuse = [
                "CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN"
                f" IF NEW.message_id = {ids[0]} THEN RAISE EXCEPTION 'refused'; END IF;"
                " RETURN NEW; END $$",
                "CREATE TRIGGER refuse BEFORE INSERT ON email_log"
                " FOR EACH ROW EXECUTE FUNCTION refuse()",
            ]
        else:
            refuse = [
                f"CREATE TRIGGER refuse BEFORE INSERT ON email_log WHEN NEW.message_id = {ids[0]}"
                " BEGIN SELECT RAISE(ABORT, 'refused'); END"
            ]
        for statement in refuse:
            db.transaction(lambda c, s=statement: c.execute(sa.text(s)))
    MemoryBackend.clear()

    with Database(db_url) as db, pytest.raises(Exception, match="refused"):
        dispatch_due(db, Settings(db_retry_seconds=0.5), T0, backend=MemoryBackend())

    assert [str(m["Subject"]) for m in MemoryBackend.outbox] == ["Report 1"]  # handed over
    rows = {r.id: r for r in all_messages(db_url)}
    assert rows[ids[0]].lease_owner is not None
    for later in ids[1:]:
        assert (rows[later].status, rows[later].attempts, rows[later].lease_owner) == (
            "scheduled", 0, None,
        )  # fmt: skip


@pytest.mark.parametrize("dialect", [pytest.param("postgresql", marks=pytest.mark.postgres)])
@pytest.mark.parametrize(
    ("revoked", "named"),
    [
        ("INSERT ON email_log", "INSERT on email_log"),
        ("INSERT ON quota_alerts", "INSERT on quota_alerts"),  # (a quota's thresholds)
        ("SELECT ON alerts", "SELECT on alerts"),  # (INSERT ... ON CONFLICT reads it)
    ],
)
def test_a_role_that_may_not_record_what_it_sends_sends_nothing(
    db_url: str, smtp: SmtpServer, revoked: str, named: str
) -> None:
    # It used to send, fail to log the attempt, and send the same mail again each time
    # the lease ran out: five copies of each message before it failed.
    ids = enqueue_all(db_url, [message(1), message(2)])
    settings = settings_for(smtp)
    with login_role(db_url, "schedctl_sender") as url:
        role = sa.engine.make_url(url).username
        with connect_pg(str(sa.engine.make_url(db_url).database)) as admin:
            admin.execute(f'REVOKE {revoked} FROM "{role}"')  # type: ignore[arg-type]
        for at in (T0, T0 + timedelta(hours=1)):  # (past any lease)
            with Database(url) as db, pytest.raises(PermissionDenied) as caught:
                dispatch_due(db, settings, at)
            refused = caught.value.message
            assert f"may not record the mail it sends (no {named})" in refused
            assert caught.value.exit_code == 1
        with Database(url) as db, pytest.raises(PermissionDenied):
            send_now(db, settings, ids[0], T0)
    assert smtp.message_ids == []
    rows = all_messages(db_url)
    assert [(r.status, r.attempts, r.lease_owner) for r in rows] == [("scheduled", 0, None)] * 2


@pytest.mark.parametrize("dialect", [pytest.param("postgresql", marks=pytest.mark.postgres)])
def test_a_privilege_recording_never_uses_is_not_asked_for(db_url: str, smtp: SmtpServer) -> None:
    enqueue_all(db_url, [message(1)])
    with login_role(db_url, "schedctl_sender") as url:
        role = sa.engine.make_url(url).username
        with connect_pg(str(sa.engine.make_url(db_url).database)) as admin:
            admin.execute(f'REVOKE UPDATE, DELETE ON alerts FROM "{role}"')  # type: ignore[arg-type]
        with Database(url) as db:
            assert dispatch_due(db, settings_for(smtp), T0)["messages_sent"] == 1
