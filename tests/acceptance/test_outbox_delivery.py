"""What `tick` and `send-now` hand to the SMTP server: Message-IDs per installation
and stable across retries; an SMTP user against a server without AUTH is a
configuration error.

`schedctl` runs against real databases and a real SMTP server on loopback (aiosmtpd).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from schedctl.db.database import Database
from schedctl.db.schema import send_counters
from support.cli import CliRunner
from support.databases import PostgresDatabases, pg_url
from support.delivery import T0, all_messages, enqueue_all, log_rows, message, one
from support.smtp_server import SmtpServer


@pytest.fixture
def two_fresh_db_urls(
    dialect: str, request: pytest.FixtureRequest, tmp_path: Path
) -> Iterator[list[str]]:
    """Two empty databases (not copies of the migrated template), on each dialect."""
    if dialect == "sqlite":
        yield [f"sqlite:///{tmp_path / name}" for name in ("staging.db", "production.db")]
        return
    databases: PostgresDatabases = request.getfixturevalue("postgres")
    names = [databases.new(migrated=False) for _ in range(2)]
    yield [pg_url(name) for name in names]
    for name in names:
        databases.release(name)


def counters(db_url: str) -> list[tuple[int, int]]:
    """(sent, reserved) of each day's quota counter."""
    with Database(db_url) as db:
        return db.transaction(
            lambda conn: [
                (int(r.sent), int(r.reserved)) for r in conn.execute(sa.select(send_counters))
            ],
            read_only=True,
        )


def tick(
    cli: CliRunner, db_url: str, env: dict[str, str], now: str = T0.isoformat()
) -> dict[str, int]:
    result = cli("tick", "--json", db_url=db_url, env={**env, "SCHEDCTL_NOW": now})
    assert result.returncode == 0, result.stderr
    counts: dict[str, int] = json.loads(result.stdout)
    return counts


# --- 1. Message-IDs are unique per installation, stable across retries -------------


def test_two_installations_send_the_same_message_with_different_message_ids(
    cli: CliRunner, two_fresh_db_urls: list[str]
) -> None:
    with SmtpServer() as smtp:
        for url in two_fresh_db_urls:
            upgraded = cli("db", "upgrade", db_url=url)
            assert upgraded.returncode == 0, upgraded.stderr
            # Same account, same idempotency key: what staging and production (or a
            # database rebuilt from scratch) produce for the same schedule and slot.
            enqueue_all(url, [message(1)])
            assert tick(cli, url, smtp.env)["messages_sent"] == 1
        received = smtp.message_ids

    stored = [all_messages(url)[0].message_id for url in two_fresh_db_urls]
    assert received == stored
    assert len(set(received)) == 2, received


def test_a_retried_message_keeps_its_message_id(cli: CliRunner, db_url: str) -> None:
    [mid] = enqueue_all(db_url, [message(1)])
    minted = one(db_url, mid).message_id
    with SmtpServer(data_replies=["451 4.3.0 Try again later"]) as smtp:
        assert tick(cli, db_url, smtp.env)["messages_sent"] == 0
        retrying = one(db_url, mid)
        assert (retrying.status, retrying.attempts) == ("retrying", 1)
        later = retrying.next_attempt_at.isoformat()
        assert tick(cli, db_url, smtp.env, later)["messages_sent"] == 1
        received = smtp.message_ids

    assert received == [minted]
    assert one(db_url, mid).message_id == minted


# --- 8. An SMTP user against a server without AUTH is a configuration error ---------

PASSWORD = "not-printed-s3cret"


@pytest.mark.parametrize("command", ["tick", "send-now"])
def test_smtp_user_against_a_server_without_auth_exits_2_and_leaves_the_message(
    cli: CliRunner, db_url: str, command: str
) -> None:
    [mid] = enqueue_all(db_url, [message(1)])
    args = ["tick"] if command == "tick" else ["send-now", str(mid)]
    with SmtpServer() as smtp:  # aiosmtpd offers no AUTH without TLS
        env = {**smtp.env, "SCHEDCTL_NOW": T0.isoformat(), "SCHEDCTL_DAILY_QUOTA": "5"}
        refused = cli(
            *args,
            db_url=db_url,
            env={**env, "SCHEDCTL_SMTP_USER": "mailer", "SCHEDCTL_SMTP_PASSWORD": PASSWORD},
        )
        untouched = one(db_url, mid)
        quota_after_refusal = counters(db_url)
        fixed = cli(*args, db_url=db_url, env=env)
        received = smtp.message_ids

    assert refused.returncode == 2, (refused.returncode, refused.stderr)
    lines = refused.stderr.strip().splitlines()
    assert len(lines) == 1, refused.stderr
    assert "SCHEDCTL_SMTP_USER" in lines[0]
    assert "offers no AUTH" in lines[0]
    assert PASSWORD not in refused.stderr + refused.stdout
    # Not an attempt and not a failure: nothing about the message changed ...
    assert (untouched.status, untouched.attempts, untouched.reason_code) == ("scheduled", 0, None)
    assert (untouched.lease_owner, untouched.next_attempt_at) == (None, None)
    assert quota_after_refusal == [(0, 0)]  # (sent, reserved): its unit went back
    # ... so once the configuration is fixed, it goes out.
    assert fixed.returncode == 0, fixed.stderr
    assert received == [untouched.message_id]
    assert [row.outcome for row in log_rows(db_url)] == ["sent"]
    assert counters(db_url) == [(1, 0)]
