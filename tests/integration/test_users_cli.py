"""`schedctl users add | list | update | remove` and `schedctl notify` (SPEC §11).

In-process CLI on both dialects; bad input exits 2 on one line and writes nothing.
"""

from __future__ import annotations

from typing import Any

import pytest
import sqlalchemy as sa

from schedctl.db.database import Database
from schedctl.db.schema import digests, metadata, notifications, users
from support.cli import CliRunner
from support.delivery import T0

NOW = {"SCHEDCTL_NOW": T0.isoformat()}


def row_counts(db_url: str) -> dict[str, int]:
    with Database(db_url) as db:
        return db.transaction(
            lambda conn: {
                name: conn.execute(sa.select(sa.func.count()).select_from(table)).scalar_one()
                for name, table in metadata.tables.items()
            },
            read_only=True,
        )


def rows(db_url: str, table: sa.Table) -> list[Any]:
    with Database(db_url) as db:
        return db.transaction(
            lambda conn: list(conn.execute(sa.select(table).order_by(table.c.id))), read_only=True
        )


def add(cli: CliRunner, db_url: str, *args: str) -> str:
    result = cli("users", "add", *args, "--json", db_url=db_url, env=NOW)
    assert result.returncode == 0, result.stderr
    return str(result.json["id"])


def test_add_list_update_remove(cli: CliRunner, db_url: str) -> None:
    ann = add(cli, db_url, "Ann@Example.COM", "--tz", "Europe/Berlin", "--digest-at", "7:30")
    bob = add(cli, db_url, "bob@example.com", "--no-digest")

    listed = cli("users", "list", "--json", db_url=db_url)
    assert listed.returncode == 0, listed.stderr
    assert listed.json == {
        "users": [
            {"id": ann, "email": "ann@example.com", "tz": "Europe/Berlin",
             "digest_enabled": True, "digest_at": "07:30"},
            {"id": bob, "email": "bob@example.com", "tz": "UTC",
             "digest_enabled": False, "digest_at": "08:00"},
        ],
        "count": 2,
        "account": "default",
    }  # fmt: skip

    by_email = cli("users", "update", "BOB@example.com", "--tz", "Pacific/Kiritimati", "--digest",
                   "--digest-at", "06:05", "--json", db_url=db_url, env=NOW)  # fmt: skip
    by_id = cli("users", "update", ann, "--email", "ann@example.org", "--json",
                db_url=db_url, env=NOW)  # fmt: skip
    assert by_email.returncode == 0, by_email.stderr
    assert by_email.json | {"id": "x"} == {
        "id": "x", "email": "bob@example.com", "tz": "Pacific/Kiritimati",
        "digest_enabled": True, "digest_at": "06:05",
    }  # fmt: skip
    assert by_id.returncode == 0, by_id.stderr
    assert by_id.json["email"] == "ann@example.org"
    assert by_id.json["tz"] == "Europe/Berlin"  # untouched

    human = cli("users", "list", db_url=db_url)
    assert human.returncode == 0
    assert "ann@example.org" in human.stdout
    assert "Pacific/Kiritimati" in human.stdout

    removed = cli("users", "remove", "ann@example.org", "--yes", "--json", db_url=db_url)
    assert removed.returncode == 0, removed.stderr
    assert removed.json["id"] == ann
    assert [u.email for u in rows(db_url, users)] == ["bob@example.com"]


def test_remove_cascades_to_notifications_and_digests(cli: CliRunner, db_url: str) -> None:
    uid = add(cli, db_url, "ann@example.com")
    keep = add(cli, db_url, "bob@example.com")
    for user in (uid, keep):
        result = cli("notify", "--user", user, "--title", "hello", db_url=db_url, env=NOW)
        assert result.returncode == 0, result.stderr
    with Database(db_url) as db:
        db.transaction(
            lambda conn: conn.execute(
                digests.insert().values(
                    account_id=1, user_id=int(uid), local_date=T0.date(),
                    status="skipped", created_at=T0, updated_at=T0, expires_at=T0,
                )
            )
        )  # fmt: skip

    refused = cli("users", "remove", uid, db_url=db_url)
    assert refused.returncode == 2
    assert "--yes" in refused.stderr
    assert len(rows(db_url, users)) == 2

    removed = cli("users", "remove", uid, "--yes", "--json", db_url=db_url)
    assert removed.returncode == 0, removed.stderr
    assert (removed.json["notifications_deleted"], removed.json["digests_deleted"]) == (1, 1)
    assert [n.user_id for n in rows(db_url, notifications)] == [int(keep)]
    assert rows(db_url, digests) == []


def test_notify_by_email_and_by_id(cli: CliRunner, db_url: str) -> None:
    uid = add(cli, db_url, "ann@example.com")

    by_email = cli("notify", "--user", "ANN@example.com", "--title", "Build 12 failed",
                   "--body", "see the log", "--key", "builds", "--json",
                   db_url=db_url, env=NOW)  # fmt: skip
    by_id = cli("notify", "--user", uid, "--title", "Password changed", "--priority",
                "critical", "--json", db_url=db_url, env=NOW)  # fmt: skip

    assert by_email.returncode == 0, by_email.stderr
    assert by_id.returncode == 0, by_id.stderr
    assert isinstance(by_email.json["id"], str)
    stored = rows(db_url, notifications)
    assert [(str(n.id), n.user_id, n.account_id, n.priority, n.digest_key, n.title, n.body)
            for n in stored] == [
        (by_email.json["id"], int(uid), 1, "normal", "builds", "Build 12 failed", "see the log"),
        (by_id.json["id"], int(uid), 1, "critical", None, "Password changed", None),
    ]  # fmt: skip
    assert {n.created_at for n in stored} == {T0}
    assert all(n.message_id is None and n.digest_id is None for n in stored)


def test_notify_says_when_the_notification_goes_out(cli: CliRunner, db_url: str) -> None:
    # To a user with no digest it said "(for the next digest)": the row waits for good.
    add(cli, db_url, "ann@example.com")
    assert cli("users", "add", "bob@example.com", "--no-digest", db_url=db_url).returncode == 0

    def said(*args: str) -> str:
        result = cli("notify", "--title", "t", *args, db_url=db_url, env=NOW)
        assert result.returncode == 0, result.stderr
        return result.stdout.strip()

    assert said("--user", "ann@example.com").endswith("recorded (for the next digest)")
    assert said("--user", "bob@example.com").endswith(
        "recorded (the user gets no digests: it waits until they do)"
    )
    assert said("--user", "bob@example.com", "--priority", "critical").endswith(
        "recorded (the next tick sends it)"
    )


def test_duplicate_email_is_refused(cli: CliRunner, db_url: str) -> None:
    add(cli, db_url, "ann@example.com")
    bob = add(cli, db_url, "bob@example.com")
    before = row_counts(db_url)

    again = cli("users", "add", "ANN@example.com", db_url=db_url, env=NOW)
    clash = cli("users", "update", bob, "--email", "ann@example.com", db_url=db_url, env=NOW)

    for result in (again, clash):
        assert result.returncode == 2, result.stdout
        assert len(result.stderr.strip().splitlines()) == 1, result.stderr
        assert "ann@example.com" in result.stderr
        assert "exists" in result.stderr
    assert row_counts(db_url) == before


def test_another_account_has_its_own_users(cli: CliRunner, db_url: str) -> None:
    assert cli("accounts", "create", "other", db_url=db_url).returncode == 0
    mine = add(cli, db_url, "ann@example.com")
    theirs = add(cli, db_url, "ann@example.com", "--account", "other")  # same address: fine

    listed = cli("users", "list", "--account", "other", "--json", db_url=db_url)
    stolen = cli("notify", "--user", mine, "--title", "x", "--account", "other", db_url=db_url)

    assert [u["id"] for u in listed.json["users"]] == [theirs]
    assert stolen.returncode == 2
    assert f"no user {mine} in account 'other'" in stolen.stderr


BAD = [
    ["users", "add", "not-an-address"],
    ["users", "add", "a@example.com", "--tz", "Mars/Olympus"],
    ["users", "add", "a@example.com", "--digest-at", "25:00"],
    ["users", "add", "a@example.com", "--digest-at", "8am"],
    ["users", "add", "a@example.com", "--account", "nowhere"],
    ["users", "update", "keep@example.com", "--tz", "Mars/Olympus"],
    ["users", "update", "keep@example.com", "--digest-at", "7"],
    ["users", "update", "keep@example.com", "--email", "nope"],
    ["users", "update", "keep@example.com"],
    ["users", "update", "nobody@example.com", "--tz", "UTC"],
    ["users", "update", "99999999999999999999", "--tz", "UTC"],
    ["users", "update", "not-an-id", "--tz", "UTC"],
    ["users", "remove", "keep@example.com"],
    ["users", "remove", "nobody@example.com", "--yes"],
    ["notify", "--user", "nobody@example.com", "--title", "t"],
    ["notify", "--user", "keep@example.com", "--title", "  "],
    ["notify", "--user", "keep@example.com", "--title", "x" * 501],
    ["notify", "--user", "keep@example.com", "--title", "t", "--body", "b" * 20001],
    ["notify", "--user", "keep@example.com", "--title", "t", "--priority", "urgent"],
    ["notify", "--user", "keep@example.com", "--title", "t", "--key", ""],
    ["notify", "--user", "0", "--title", "t"],
]


@pytest.mark.parametrize("args", BAD, ids=lambda a: " ".join(a)[:60])
def test_bad_input_exits_2_on_one_line_and_writes_nothing(
    cli: CliRunner, db_url: str, args: list[str]
) -> None:
    add(cli, db_url, "keep@example.com")
    before = row_counts(db_url)

    result = cli(*args, db_url=db_url, env=NOW)

    assert result.returncode == 2, result.stdout + result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert result.stderr.startswith("schedctl: error: ")
    assert row_counts(db_url) == before
