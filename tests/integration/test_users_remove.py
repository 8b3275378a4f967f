"""`users remove` and the user's mail still in the outbox, on both dialects.

A removed user's unsent digest and critical notification used to be sent by the next
tick, with the deleted notification's text. Now they are skipped (USER_REMOVED) and
emptied of that text, the command says how many, and a message a dispatcher is
sending right now (under its live lease) is waited for, never skipped behind its back.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from typing import Any

import pytest
import sqlalchemy as sa

from schedctl import users as users_module
from schedctl.db.database import Database
from schedctl.db.schema import messages, users
from support.cli import CliRunner
from support.delivery import all_messages

NOW = datetime(2026, 11, 18, 9, 0, tzinfo=UTC)
SECRET = "the secret launch date is 12 May"


def env(**extra: str) -> dict[str, str]:
    return {"SCHEDCTL_NOW": NOW.isoformat(), "SCHEDCTL_MAIL_BACKEND": "memory", **extra}


def queue_unsent_mail(cli: CliRunner, db_url: str, closed_port: int) -> None:
    """ann gets a digest and a critical notification, both left `retrying` because
    the mail server was down; bob gets a digest too."""
    for email in ("ann@example.com", "bob@example.com"):
        added = cli("users", "add", email, "--digest-at", "08:00", db_url=db_url, env=env())
        assert added.returncode == 0, added.stderr
    for args in (
        ("--user", "ann@example.com", "--title", "Launch", "--body", SECRET),
        ("--user", "ann@example.com", "--title", f"Alarm: {SECRET}", "--priority", "critical"),
        ("--user", "bob@example.com", "--title", "For bob"),
    ):
        assert cli("notify", *args, db_url=db_url, env=env()).returncode == 0
    down = env(SCHEDCTL_MAIL_BACKEND="smtp", SCHEDCTL_SMTP_HOST="127.0.0.1",
               SCHEDCTL_SMTP_PORT=str(closed_port))  # fmt: skip
    for command in ("digest", "tick"):
        assert cli(command, db_url=db_url, env=down).returncode == 75
    with Database(db_url) as db:
        db.transaction(lambda conn: conn.execute(messages.update().values(status="retrying")))
    assert len(all_messages(db_url)) == 3


def test_removing_a_user_skips_their_unsent_mail_and_its_text(
    cli: CliRunner, db_url: str, closed_port: int, mailbox: list[EmailMessage]
) -> None:
    queue_unsent_mail(cli, db_url, closed_port)

    removed = cli("users", "remove", "ann@example.com", "--yes", "--json", db_url=db_url,
                  env=env())  # fmt: skip
    later = env(SCHEDCTL_NOW=(NOW + timedelta(minutes=1)).isoformat())
    tick = cli("tick", "--json", db_url=db_url, env=later)

    assert removed.returncode == 0, removed.stderr
    assert tick.returncode == 0, tick.stderr
    # The tick sent bob's digest, and nothing of ann's.
    assert [str(m["To"]) for m in mailbox] == ["bob@example.com"], tick.stdout
    assert removed.json["messages_skipped"] == 2
    assert removed.json["notifications_deleted"] == 2
    ann = [m for m in all_messages(db_url) if m.recipient == "ann@example.com"]
    assert {(m.status, m.reason_code) for m in ann} == {("skipped", "USER_REMOVED")}
    for message in ann:
        stored = f"{message.subject} {message.body_text} {message.body_html}"
        assert SECRET not in stored
        assert "Launch" not in stored
    listed = cli("users", "list", "--json", db_url=db_url, env=env())
    assert [u["email"] for u in listed.json["users"]] == ["bob@example.com"]


def test_a_removed_users_mail_is_never_sent_again_by_hand(
    cli: CliRunner, db_url: str, closed_port: int, mailbox: list[EmailMessage]
) -> None:
    # Found by review: `send-now` (no --force needed) and `messages edit --status
    # scheduled` sent the emptied placeholder mail to the removed user's address.
    queue_unsent_mail(cli, db_url, closed_port)
    assert (
        cli("users", "remove", "ann@example.com", "--yes", db_url=db_url, env=env()).returncode == 0
    )
    ann = [m.id for m in all_messages(db_url) if m.recipient == "ann@example.com"]

    for message_id in ann:
        for force in ((), ("--force",)):
            sent = cli("send-now", str(message_id), *force, "--json", db_url=db_url, env=env())
            assert sent.returncode == 1, sent.stderr
            assert sent.json["reason_code"] == "USER_REMOVED", sent.json
        edited = cli("messages", "edit", str(message_id), "--status", "scheduled",
                     db_url=db_url, env=env())  # fmt: skip
        assert edited.returncode == 2, edited.stderr
        assert "its user was removed (USER_REMOVED)" in edited.stderr

    assert mailbox == []
    rows = [m for m in all_messages(db_url) if m.recipient == "ann@example.com"]
    assert {(m.status, m.reason_code) for m in rows} == {("skipped", "USER_REMOVED")}


def test_the_human_line_says_how_many_messages_were_skipped(
    cli: CliRunner, db_url: str, closed_port: int
) -> None:
    queue_unsent_mail(cli, db_url, closed_port)
    removed = cli("users", "remove", "ann@example.com", "--yes", db_url=db_url, env=env())
    assert removed.returncode == 0, removed.stderr
    assert removed.stdout.startswith("removed user ")
    assert "2 unsent message(s) skipped (USER_REMOVED)" in removed.stdout


def lease(db_url: str, recipient: str, expires_at: datetime) -> None:
    """A dispatcher (another process) holds the recipient's messages until ``expires_at``."""
    with Database(db_url) as db:
        db.transaction(
            lambda conn: conn.execute(
                messages.update()
                .where(messages.c.recipient == recipient)
                .values(lease_owner="other-host:1:abc", lease_expires_at=expires_at)
            )
        )


def snapshot(db_url: str) -> list[Any]:
    with Database(db_url) as db:
        return db.transaction(
            lambda conn: [
                *conn.execute(sa.select(users).order_by(users.c.id)),
                *conn.execute(sa.select(messages).order_by(messages.c.id)),
            ],
            read_only=True,
        )


def test_a_message_being_sent_blocks_the_removal_until_its_lease_ends(
    cli: CliRunner, db_url: str, closed_port: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    queue_unsent_mail(cli, db_url, closed_port)
    lease(db_url, "ann@example.com", NOW + timedelta(hours=1))
    before = snapshot(db_url)
    monkeypatch.setattr(users_module, "REMOVE_WAIT", timedelta(seconds=1))

    busy = cli("users", "remove", "ann@example.com", "--yes", db_url=db_url, env=env())

    assert busy.returncode == 75
    assert busy.stderr == (
        "schedctl: error: user ann@example.com: 2 of their messages are being sent right"
        " now; nothing was removed; try again shortly\n"
    )
    assert snapshot(db_url) == before


def test_the_removal_waits_for_a_lease_that_ends(
    cli: CliRunner, db_url: str, closed_port: int
) -> None:
    # The dispatcher's lease runs out a second into the command (its clock starts at
    # SCHEDCTL_NOW): the removal waits for it, then skips the messages.
    queue_unsent_mail(cli, db_url, closed_port)
    lease(db_url, "ann@example.com", NOW + timedelta(seconds=1))

    removed = cli("users", "remove", "ann@example.com", "--yes", "--json", db_url=db_url,
                  env=env())  # fmt: skip

    assert removed.returncode == 0, removed.stderr
    assert removed.json["messages_skipped"] == 2
    ann = [m for m in all_messages(db_url) if m.recipient == "ann@example.com"]
    assert {(m.status, m.lease_owner) for m in ann} == {("skipped", None)}
