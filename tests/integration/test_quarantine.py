"""Rows applications wrote that schedctl cannot read or render (schedctl.quarantine).

One such row in `notifications`, `users` or `events` used to make every `digest` and
`tick` fail for every account. Now it is quarantined -- marked with a reason,
counted once in the command's --json summary (exit 1 in that run), warned about
once -- and the run goes on for everyone else; later runs skip it. The rows are
written the way an application could write them: with sqlite3 itself (invalid
UTF-8, BLOBs) or with SQL on PostgreSQL (an instant beyond year 9999, which
PostgreSQL stores and Python cannot represent).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from schedctl.db.database import Database
from schedctl.db.schema import digests, events, notifications, users
from schedctl.delivery import backends
from support.cli import CliRunner, Result
from support.databases import fresh_database

NOW = datetime(2026, 11, 18, 9, 0, tzinfo=UTC)
CREATED = "2026-11-01 00:00:00"


@pytest.fixture
def sqlite_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh SQLite database, for the tests of what only SQLite can store."""
    yield from fresh_database("sqlite", request, tmp_path / "schedctl.db")


@pytest.fixture(autouse=True)
def mailbox() -> list[EmailMessage]:
    backends.clear_outbox()
    return backends.outbox


def run(cli: CliRunner, db_url: str, command: str, now: datetime = NOW) -> Result:
    """`schedctl COMMAND --json` in-process; it must have run (not failed as a whole)."""
    env = {"SCHEDCTL_NOW": now.isoformat(), "SCHEDCTL_MAIL_BACKEND": "memory"}
    result = cli(command, "--json", db_url=db_url, env=env)
    assert "error" not in result.json, result.json["error"]["message"]
    return result


def execute(db_url: str, sql: str, **params: Any) -> Any:
    """SQL as an application would run it (sqlite3 itself on SQLite: no type checks)."""
    if db_url.startswith("sqlite"):
        with sqlite3.connect(db_url.removeprefix("sqlite:///")) as conn:
            return conn.execute(sql, params).lastrowid
    with Database(db_url) as db:
        db.transaction(lambda conn: conn.execute(sa.text(sql), params))
    return None


def add_user(db_url: str, email: str, tz: str = "UTC") -> int:
    with Database(db_url) as db:
        return int(
            db.transaction(
                lambda conn: conn.execute(
                    users.insert()
                    .values(account_id=1, email=email, tz=tz, digest_time="08:00",
                            created_at=NOW - timedelta(days=30),
                            updated_at=NOW - timedelta(days=30))
                    .returning(users.c.id)
                ).scalar_one()
            )
        )  # fmt: skip


def notify(db_url: str, user_id: int, title: str, priority: str = "normal") -> None:
    execute(
        db_url,
        "INSERT INTO notifications (account_id, user_id, title, priority)"
        " VALUES (1, :user, :title, :priority)",
        user=user_id, title=title, priority=priority,
    )  # fmt: skip


def rows(db_url: str, table: sa.Table) -> list[Any]:
    columns = [c for c in table.c if c.name in ("id", "quarantined_at", "quarantine_reason")]
    with Database(db_url) as db:
        return db.transaction(
            lambda conn: list(conn.execute(sa.select(*columns).order_by(table.c.id))),
            read_only=True,
        )


def quarantined(db_url: str, table: sa.Table) -> dict[int, str]:
    return {r.id: r.quarantine_reason for r in rows(db_url, table) if r.quarantined_at}


def recipients(mailbox: list[EmailMessage]) -> list[str]:
    return sorted(str(m["To"]) for m in mailbox)


# --- SQLite: text that is not UTF-8, and BLOBs --------------------------------------------

INVALID_UTF8 = "CAST(x'ff' AS TEXT)"
BLOB = "x'ff'"


@pytest.mark.parametrize(
    ("column", "value", "reason"),
    [
        ("title", INVALID_UTF8, "title is not valid UTF-8 text"),
        ("title", BLOB, "title is not text (bytes)"),
        ("body", BLOB, "body is not text (bytes)"),
        ("digest_key", INVALID_UTF8, "digest_key is not valid UTF-8 text"),
    ],
)
def test_an_unreadable_notification_is_quarantined_and_every_digest_goes_on(
    cli: CliRunner, sqlite_url: str, mailbox: list[EmailMessage], column: str, value: str,
    reason: str,
) -> None:  # fmt: skip
    ann, bob = add_user(sqlite_url, "ann@example.com"), add_user(sqlite_url, "bob@example.com")
    notify(sqlite_url, ann, "ann's readable one")
    notify(sqlite_url, bob, "bob's")
    bad = execute(
        sqlite_url, f"INSERT INTO notifications (account_id, user_id, title) VALUES (1, {ann}, 'x')"
    )
    execute(sqlite_url, f"UPDATE notifications SET {column} = {value} WHERE id = {bad}")

    first = run(cli, sqlite_url, "digest")

    assert first.returncode == 1, first.stderr
    assert first.json["quarantined"] == 1
    assert first.json["digests_sent"] == 2
    assert first.json["notifications_digested"] == 2
    assert recipients(mailbox) == ["ann@example.com", "bob@example.com"]
    assert quarantined(sqlite_url, notifications) == {bad: reason}
    assert first.stderr.count("quarantined 1 row(s)") == 1  # one warning line
    # Recorded: the next day's run does not meet it again.
    second = run(cli, sqlite_url, "digest", NOW + timedelta(days=1))
    assert second.returncode == 0, second.stderr
    assert second.json["quarantined"] == 0
    assert "quarantined" not in second.stderr


@pytest.mark.parametrize(
    ("column", "value", "reason"),
    [
        ("email", INVALID_UTF8, "email is not valid UTF-8 text"),
        ("email", BLOB, "email is not text (bytes)"),
        ("tz", INVALID_UTF8, "tz is not valid UTF-8 text"),
        ("tz", BLOB, "tz is not text (bytes)"),
    ],
)
def test_an_unreadable_user_is_quarantined_and_every_other_digest_goes_on(
    cli: CliRunner, sqlite_url: str, mailbox: list[EmailMessage], column: str, value: str,
    reason: str,
) -> None:  # fmt: skip
    ann, bob = add_user(sqlite_url, "ann@example.com"), add_user(sqlite_url, "bob@example.com")
    notify(sqlite_url, ann, "for ann")
    notify(sqlite_url, bob, "for bob")
    execute(sqlite_url, f"UPDATE users SET {column} = {value} WHERE id = {ann}")

    first = run(cli, sqlite_url, "digest")

    assert first.returncode == 1, first.stderr
    assert first.json["quarantined"] == 1
    assert first.json["digests_sent"] == 1
    assert recipients(mailbox) == ["bob@example.com"]
    assert quarantined(sqlite_url, users) == {ann: reason}
    second = run(cli, sqlite_url, "digest", NOW + timedelta(days=1))
    assert second.returncode == 0, second.stderr
    assert second.json["quarantined"] == 0


def _ann_with_digest_time(url: str, value: str) -> int:
    """ann and bob, a notification each; ann's digest_time set to the SQL ``value``
    as an application would write it. ann's id."""
    ann, bob = add_user(url, "ann@example.com"), add_user(url, "bob@example.com")
    notify(url, ann, "for ann")
    notify(url, bob, "for bob")
    execute(url, f"UPDATE users SET digest_time = {value} WHERE id = {ann}")
    return ann


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("'8:00'", "digest_time '8:00' is not HH:MM (00:00-23:59)"),
        ("'8am'", "digest_time '8am' is not HH:MM (00:00-23:59)"),
        ("'24:00'", "digest_time '24:00' is not HH:MM (00:00-23:59)"),
    ],
)
def test_a_digest_time_not_written_hh_mm_quarantines_its_user(
    cli: CliRunner, db_url: str, mailbox: list[EmailMessage], value: str, reason: str
) -> None:
    # The due query compares digest times as text, so an application's `8:00` was
    # never due (it sorts after every `0x:xx` and `1x:xx`): the user silently got no
    # digest, every day, while `users next` promised one.
    ann = _ann_with_digest_time(db_url, value)

    first = run(cli, db_url, "digest", NOW.replace(hour=23, minute=59))

    assert first.returncode == 1, first.stderr
    assert first.json["quarantined"] == 1
    assert first.json["digests_sent"] == 1
    assert recipients(mailbox) == ["bob@example.com"]
    assert quarantined(db_url, users) == {ann: reason}
    assert first.stderr.count("quarantined 1 row(s)") == 1


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (INVALID_UTF8, "digest_time is not valid UTF-8 text"),
        ("800", "digest_time '800' is not HH:MM (00:00-23:59)"),  # (TEXT affinity)
    ],
)
def test_a_digest_time_sqlite_stores_as_something_else_quarantines_its_user(
    cli: CliRunner, sqlite_url: str, mailbox: list[EmailMessage], value: str, reason: str
) -> None:
    ann = _ann_with_digest_time(sqlite_url, value)

    first = run(cli, sqlite_url, "digest")

    assert first.returncode == 1, first.stderr
    assert recipients(mailbox) == ["bob@example.com"]
    assert quarantined(sqlite_url, users) == {ann: reason}


def test_tick_quarantines_an_unreadable_critical_notification_and_sends_the_rest(
    cli: CliRunner, sqlite_url: str, mailbox: list[EmailMessage]
) -> None:
    ann, bob = add_user(sqlite_url, "ann@example.com"), add_user(sqlite_url, "bob@example.com")
    notify(sqlite_url, bob, "bob's alarm", priority="critical")
    bad = execute(
        sqlite_url,
        f"INSERT INTO notifications (account_id, user_id, title, priority)"
        f" VALUES (1, {ann}, {INVALID_UTF8}, 'critical')",
    )
    blob_user = add_user(sqlite_url, "carol@example.com")
    notify(sqlite_url, blob_user, "carol's alarm", priority="critical")
    execute(sqlite_url, f"UPDATE users SET email = {BLOB} WHERE id = {blob_user}")

    first = run(cli, sqlite_url, "tick")

    assert first.returncode == 1, first.stderr
    assert first.json["quarantined"] == 2
    assert first.json["notifications_queued"] == 1
    assert first.json["messages_sent"] == 1
    assert recipients(mailbox) == ["bob@example.com"]
    assert quarantined(sqlite_url, notifications) == {bad: "title is not valid UTF-8 text"}
    assert quarantined(sqlite_url, users) == {blob_user: "email is not text (bytes)"}
    second = run(cli, sqlite_url, "tick")
    assert second.returncode == 0, second.stderr
    assert second.json["quarantined"] == 0


def test_a_nul_character_in_a_notification_quarantines_it_in_the_digest_and_the_tick(
    cli: CliRunner, sqlite_url: str, mailbox: list[EmailMessage]
) -> None:
    # SQLite stores a NUL inside text (PostgreSQL refuses it), and its substr and
    # length stop at it: the digest listed `a` for the title `a\0b`, put a raw NUL in a
    # 7bit part for a digest_key, and a critical one went out with the subject `crit`.
    people = {name: add_user(sqlite_url, f"{name}@example.com") for name in ("ann", "bob", "cat")}
    people["dan"] = add_user(sqlite_url, "dan@example.com")
    notify(sqlite_url, people["dan"], "dan's own")

    def insert(user: str, **values: str) -> int:
        columns = ", ".join(values)
        marks = ", ".join(f":{name}" for name in values)
        return int(
            execute(
                sqlite_url,
                f"INSERT INTO notifications (account_id, user_id, {columns})"
                f" VALUES (1, {people[user]}, {marks})",
                **values,
            )
        )

    by_title = insert("ann", title="a\x00b")
    by_body = insert("bob", title="fine", body="body\x00x")
    by_key = insert("cat", title="fine too", digest_key="k\x00")
    critical = insert("dan", title="crit\x00ical", priority="critical")

    digest = run(cli, sqlite_url, "digest")
    tick = run(cli, sqlite_url, "tick")

    assert digest.returncode == 1, digest.stderr
    assert tick.returncode == 1, tick.stderr
    assert quarantined(sqlite_url, notifications) == {
        by_title: "title holds a NUL character",
        by_body: "body holds a NUL character",
        by_key: "digest_key holds a NUL character",
        critical: "title holds a NUL character",
    }
    assert recipients(mailbox) == ["dan@example.com"]  # dan's digest of his other one
    assert all(b"\x00" not in m.as_bytes() for m in mailbox)


@pytest.mark.parametrize(
    ("column", "value", "reason"),
    [
        ("name", INVALID_UTF8, "name is not valid UTF-8 text"),
        ("contact", BLOB, "contact is not text (bytes)"),
        ("tz", "'Mars/Olympus'", "its messages cannot be rendered"),
    ],
)
def test_tick_quarantines_an_unusable_event_and_plans_the_others(
    cli: CliRunner, sqlite_url: str, column: str, value: str, reason: str
) -> None:
    for name in ("good", "bad"):
        execute(
            sqlite_url,
            "INSERT INTO events (account_id, name, starts_at, contact, tz, created_at,"
            " updated_at) VALUES (1, :name, '2026-12-01 10:00:00.000000', 'ops@example.com',"
            " 'UTC', :created, :created)",
            name=name, created=CREATED,
        )  # fmt: skip
    execute(sqlite_url, f"UPDATE events SET {column} = {value} WHERE id = 2")

    first = run(cli, sqlite_url, "tick")

    assert first.returncode == 1, first.stderr
    assert first.json["quarantined"] == 1
    assert first.json["messages_planned"] == 3  # the good event's INIT and two reminders
    found = quarantined(sqlite_url, events)
    assert list(found) == [2]
    assert found[2].startswith(reason)
    second = run(cli, sqlite_url, "tick")
    assert second.returncode == 0, second.stderr
    assert second.json["quarantined"] == 0


# --- both dialects: instants Python cannot read or show -------------------------------------


def test_an_instant_python_cannot_read_quarantines_one_notification(
    cli: CliRunner, db_url: str, mailbox: list[EmailMessage]
) -> None:
    # PostgreSQL stores timestamps up to year 294276; Python's datetime ends at 9999
    # (psycopg refuses to load it; SQLite's text does not parse).
    ann = add_user(db_url, "ann@example.com")
    notify(db_url, ann, "readable digest item")
    notify(db_url, ann, "readable alarm", priority="critical")
    far = "20000-01-01 00:00:00+00" if "postgresql" in db_url else "20000-01-01 00:00:00.000000"
    for priority in ("normal", "critical"):
        execute(
            db_url,
            "INSERT INTO notifications (account_id, user_id, title, priority, created_at)"
            " VALUES (1, :user, 'from the far future', :priority, :far)",
            user=ann, priority=priority, far=far,
        )  # fmt: skip

    digest = run(cli, db_url, "digest")
    tick = run(cli, db_url, "tick")

    assert (digest.returncode, tick.returncode) == (1, 1), digest.stderr + tick.stderr
    assert digest.json["quarantined"] == tick.json["quarantined"] == 1
    assert digest.json["digests_sent"] == tick.json["messages_sent"] == 1
    assert len(mailbox) == 2
    reasons = quarantined(db_url, notifications)
    assert len(reasons) == 2
    assert all(r.startswith("a value cannot be read") for r in reasons.values())


def test_an_instant_the_users_zone_cannot_show_quarantines_one_notification(
    cli: CliRunner, db_url: str, mailbox: list[EmailMessage]
) -> None:
    # 0001-01-01 00:00 UTC is still year 0 in New York: the digest cannot render it.
    ann = add_user(db_url, "ann@example.com", tz="America/New_York")
    notify(db_url, ann, "readable")
    execute(
        db_url,
        "INSERT INTO notifications (account_id, user_id, title, created_at)"
        " VALUES (1, :user, 'from year one', :at)",
        user=ann,
        at="0001-01-01 00:00:00+00" if "postgresql" in db_url else "0001-01-01 00:00:00.000000",
    )

    result = run(cli, db_url, "digest", NOW + timedelta(hours=5))  # 09:00 in New York

    assert result.returncode == 1, result.stderr
    assert result.json["quarantined"] == 1
    assert result.json["digests_sent"] == 1
    assert result.json["notifications_digested"] == 1
    [reason] = quarantined(db_url, notifications).values()
    assert reason.startswith("created_at cannot be shown (OverflowError")
    with Database(db_url) as db:
        day = db.transaction(lambda c: c.execute(sa.select(digests)).one(), read_only=True)
    assert (day.status, day.items) == ("completed", 1)


def test_a_notification_the_template_cannot_render_is_quarantined_alone(
    cli: CliRunner, db_url: str, mailbox: list[EmailMessage], monkeypatch: pytest.MonkeyPatch
) -> None:
    # No stored value is known to break the digest template today; a template (or
    # filter) that fails on some content stands in for one that would.
    from schedctl.digest import compose as digest_compose
    from schedctl.digest import run as digest_run

    real = digest_compose.render_digest

    def fragile(local_date: Any, items: Any, total: int, **options: Any) -> Any:
        if any("{{" in item.title for item in items):
            raise RuntimeError("template error")
        return real(local_date, items, total, **options)

    monkeypatch.setattr(digest_run, "render_digest", fragile)
    ann = add_user(db_url, "ann@example.com")
    notify(db_url, ann, "fine")
    notify(db_url, ann, "odd {{ content")
    notify(db_url, ann, "also fine")

    result = run(cli, db_url, "digest")

    assert result.returncode == 1, result.stderr
    assert result.json["quarantined"] == 1
    assert result.json["notifications_digested"] == 2
    assert [str(m["To"]) for m in mailbox] == ["ann@example.com"]
    assert "2 new notifications" in str(mailbox[0]["Subject"])
    [reason] = quarantined(db_url, notifications).values()
    assert reason == "cannot be rendered (RuntimeError: template error)"
