"""Critical notifications are sent by the next `tick`, exactly once (SPEC §5).

Two concurrent `schedctl tick` processes against the loopback SMTP server: each
critical notification (from `notify --priority critical` or inserted straight into
the table, as applications do) becomes one message, bypasses an exhausted daily
quota, and is still stopped by the suppression list.
"""

from __future__ import annotations

import json
from email import message_from_bytes
from email.policy import default
from typing import Any

import pytest
import sqlalchemy as sa

from schedctl.db.database import Database
from schedctl.db.schema import notifications, send_counters
from support.cli import CliRunner
from support.delivery import T0, all_messages, enqueue_all, message, run_ticks
from support.smtp_server import SmtpServer

NOW = {"SCHEDCTL_NOW": T0.isoformat()}
BY_CLI = 3  # critical notifications from `notify`...
DIRECT = 40  # ... and inserted straight into the table, as applications do


def cli_json(cli: CliRunner, db_url: str, *args: str) -> Any:
    """A set-up command, in this process; the ticks under test are processes."""
    result = cli(*args, "--json", db_url=db_url, env=NOW)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def all_notifications(db_url: str) -> list[Any]:
    with Database(db_url) as db:
        return db.transaction(
            lambda conn: list(conn.execute(sa.select(notifications).order_by(notifications.c.id))),
            read_only=True,
        )


@pytest.mark.parametrize(
    "dialect", ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]
)
def test_two_ticks_send_each_critical_notification_once(
    cli: CliRunner, db_url: str, smtp: SmtpServer
) -> None:
    ann = cli_json(cli, db_url, "users", "add", "ann@example.com")["id"]
    cli_json(cli, db_url, "users", "add", "bob@example.com")
    assert cli("suppressions", "add", "bob@example.com", db_url=db_url).returncode == 0
    for n in range(BY_CLI):
        cli_json(cli, db_url, "notify", "--user", ann, "--title", f"Alert {n}",
                 "--body", "Someone signed in.", "--priority", "critical")  # fmt: skip
    cli_json(cli, db_url, "notify", "--user", "bob@example.com", "--title", "Suppressed",
             "--priority", "critical")  # fmt: skip
    normal = cli_json(cli, db_url, "notify", "--user", ann, "--title", "For the digest")["id"]
    with Database(db_url) as db:
        # As an application would: only the columns it must set.
        direct = [{"user": int(ann), "title": f"Direct {n}"} for n in range(DIRECT)]
        db.transaction(
            lambda conn: conn.execute(
                sa.text(
                    "INSERT INTO notifications (account_id, user_id, priority, title)"
                    " VALUES (1, :user, 'critical', :title)"
                ),
                [*direct, {"user": int(ann), "title": "Already read"}],
            )
        )
        db.transaction(
            lambda conn: conn.execute(
                notifications.update()
                .where(notifications.c.title == "Already read")
                .values(read_at=T0)
            )
        )
        # A daily quota of 1, already used up today: normal mail waits, critical does not.
        db.transaction(
            lambda conn: conn.execute(send_counters.insert().values(day="2026-11-18", sent=1))
        )
    enqueue_all(db_url, [message(1)])
    env = {**smtp.env, "SCHEDCTL_DAILY_QUOTA": "1"}

    results = run_ticks(2, db_url, env)
    again = run_ticks(1, db_url, env)

    sent = [f"Alert {n}" for n in range(BY_CLI)] + [f"Direct {n}" for n in range(DIRECT)]
    assert sum(r["notifications_queued"] for r in results) == len(sent) + 1  # and bob's
    assert again[0]["notifications_queued"] == 0
    assert again[0]["messages_sent"] == 0
    # On the wire: ann's critical notifications, each exactly once; nothing else.
    received = smtp.id_counts()
    assert set(received.values()) == {1}
    assert len(received) == len(sent)
    assert set(smtp.recipients) == {"ann@example.com"}
    subjects = sorted(
        str(message_from_bytes(e.original_content or b"", policy=default)["Subject"])
        for e in smtp.accepted
    )
    assert subjects == sorted(sent)

    rows = {n.title: n for n in all_notifications(db_url)}
    by_id = {m.id: m for m in all_messages(db_url)}
    for title in [*sent, "Suppressed"]:
        row = rows[title]
        carried = by_id[row.message_id]
        assert (carried.type, carried.priority) == ("NOTIFICATION", "critical")
        assert carried.idempotency_key == f"notification:{row.id}"
        assert row.consumed_at is not None
    suppressed = by_id[rows["Suppressed"].message_id]
    assert (suppressed.status, suppressed.reason_code) == ("skipped", "SUPPRESSED")
    assert {m.status for m in by_id.values() if m.type == "NOTIFICATION"} == {"sent", "skipped"}
    # Not for tick: the normal one waits for the digest, the read one is never sent.
    assert str(rows["For the digest"].id) == normal
    assert rows["For the digest"].message_id is None
    assert rows["Already read"].message_id is None
    report = next(m for m in by_id.values() if m.type == "REPORT")
    assert (report.status, report.reason_code) == ("scheduled", "QUOTA_DEFERRED")


def test_a_deleted_message_is_not_sent_again(cli: CliRunner, db_url: str, smtp: SmtpServer) -> None:
    """The notification stays consumed when its message is deleted (message_id SET NULL)."""
    ann = cli_json(cli, db_url, "users", "add", "ann@example.com")["id"]
    cli_json(cli, db_url, "notify", "--user", ann, "--title", "Once", "--priority", "critical")
    env = {**smtp.env, "SCHEDCTL_MAIL_BACKEND": "memory"}
    assert run_ticks(1, db_url, env)[0]["notifications_queued"] == 1
    assert cli("messages", "delete-all", "--confirm", db_url=db_url).returncode == 0

    assert run_ticks(1, db_url, env)[0]["notifications_queued"] == 0
    (row,) = all_notifications(db_url)
    assert row.message_id is None
    assert row.consumed_at is not None
