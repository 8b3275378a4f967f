"""Limits on what a notification holds: a title is never blank (the table
refuses it, on both dialects, and so does `notify`), `notify` refuses an oversized
body, and a digest shows at most ``[digest] max_body_chars`` of any body however
large the stored one is (a critical notification's message too)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from typing import Any

import pytest
import sqlalchemy as sa

from schedctl.db import migrations
from schedctl.db.database import Database
from schedctl.db.schema import notifications, users
from schedctl.errors import ConflictError
from support.cli import CliRunner

NOW = datetime(2026, 11, 18, 9, 0, tzinfo=UTC)
BLANK_TITLES = ["", " ", "\t", " \r\n "]


def add_user(db_url: str) -> int:
    with Database(db_url) as db:
        created = NOW - timedelta(days=30)
        statement = (
            users.insert()
            .values(account_id=1, email="ann@example.com", created_at=created, updated_at=created)
            .returning(users.c.id)
        )
        return int(db.transaction(lambda conn: conn.execute(statement).scalar_one()))


def insert(db_url: str, user_id: int, title: str, **values: Any) -> int:
    with Database(db_url) as db:
        statement = (
            notifications.insert()
            .values(account_id=1, user_id=user_id, title=title, **values)
            .returning(notifications.c.id)
        )
        return int(db.transaction(lambda conn: conn.execute(statement).scalar_one()))


def titles(db_url: str) -> list[str]:
    with Database(db_url) as db:
        query = sa.select(notifications.c.title).order_by(notifications.c.id)
        return list(db.transaction(lambda conn: conn.execute(query).scalars(), read_only=True))


# --- blank titles ---------------------------------------------------------------------------


@pytest.mark.parametrize("title", BLANK_TITLES)
def test_the_table_refuses_a_blank_title(db_url: str, title: str) -> None:
    user = add_user(db_url)
    with pytest.raises(ConflictError, match="notifications_title_check"):
        insert(db_url, user, title)
    kept = insert(db_url, user, "a title")
    with Database(db_url) as db, pytest.raises(ConflictError, match="notifications_title_check"):
        db.transaction(
            lambda conn: conn.execute(
                notifications.update().where(notifications.c.id == kept).values(title=title)
            )
        )
    assert titles(db_url) == ["a title"]


def test_the_migration_gives_existing_blank_titles_a_placeholder(
    empty_db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    every = migrations.load_migrations
    with Database(empty_db_url) as db:
        before = [m.name for m in every(db.dialect)].index("data_integrity")
        with monkeypatch.context() as patch:
            patch.setattr(migrations, "load_migrations", lambda name: every(name)[:before])
            migrations.upgrade(db)
    user = add_user(empty_db_url)
    for title in [" \t", "kept"]:
        insert(empty_db_url, user, title)

    with Database(empty_db_url) as db:
        migrations.upgrade(db)

    assert titles(empty_db_url) == ["(no title)", "kept"]


@pytest.mark.parametrize("title", BLANK_TITLES)
def test_notify_refuses_a_blank_title_on_one_line(cli: CliRunner, db_url: str, title: str) -> None:
    add_user(db_url)
    result = cli("notify", "--user", "ann@example.com", "--title", title, db_url=db_url)
    assert result.returncode == 2
    assert result.stderr == "schedctl: error: a notification title must not be blank\n"
    assert titles(db_url) == []


def test_notify_refuses_an_oversized_body_on_one_line(cli: CliRunner, db_url: str) -> None:
    add_user(db_url)
    body = "x" * 20_001
    result = cli("notify", "--user", "ann@example.com", "--title", "t", "--body", body,
                 db_url=db_url)  # fmt: skip
    assert result.returncode == 2
    assert result.stderr == (
        "schedctl: error: a notification body must be at most 20000 characters (got 20001)\n"
    )
    assert titles(db_url) == []


# --- how much of a body a digest shows ----------------------------------------------------


def text_part(mail: EmailMessage) -> str:
    part = mail.get_body(("plain",))
    assert part is not None
    return str(part.get_content())


def run(cli: CliRunner, db_url: str, command: str, **env: str) -> dict[str, Any]:
    env = {"SCHEDCTL_NOW": NOW.isoformat(), "SCHEDCTL_MAIL_BACKEND": "memory", **env}
    result = cli(command, "--json", db_url=db_url, env=env)
    assert result.returncode == 0, result.stderr
    return dict(result.json)


def test_a_huge_body_is_cut_to_max_body_chars_in_the_digest_and_the_critical_message(
    cli: CliRunner, db_url: str, mailbox: list[EmailMessage]
) -> None:
    user = add_user(db_url)
    huge = "b" * 5_000_000  # an application wrote it; notify would refuse it
    insert(db_url, user, "huge digest item", body=huge)
    insert(db_url, user, "small digest item", body="small body")
    insert(db_url, user, "huge alarm", body=huge, priority="critical")

    assert run(cli, db_url, "digest")["digests_sent"] == 1
    assert run(cli, db_url, "tick")["messages_sent"] == 1

    digest, alarm = mailbox
    for mail in (digest, alarm):
        text = text_part(mail)
        assert len(mail.as_bytes()) < 20_000
        assert "b" * 2000 + "\u2026 [truncated: 4998000 more characters]" in text
        assert "b" * 2001 not in text
    assert "small body" in text_part(digest)


def test_max_body_chars_is_a_setting(
    cli: CliRunner, db_url: str, mailbox: list[EmailMessage]
) -> None:
    user = add_user(db_url)
    insert(db_url, user, "item", body="0123456789" * 3)

    run(cli, db_url, "digest", SCHEDCTL_DIGEST_MAX_BODY_CHARS="12")

    assert "012345678901\u2026 [truncated: 18 more characters]" in text_part(mailbox[0])
    bad = cli("digest", db_url=db_url, env={"SCHEDCTL_DIGEST_MAX_BODY_CHARS": "0"})
    assert bad.returncode == 2
    assert "SCHEDCTL_DIGEST_MAX_BODY_CHARS" in bad.stderr
