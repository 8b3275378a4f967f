"""Concurrent `schedctl digest` processes, and ones SIGKILLed mid-run (SPEC §10).

Each opted-in user gets exactly one digest for the day, holding exactly their
notifications, however many processes race and wherever one is killed: checked in
the tables and in the mail a loopback SMTP server received.
"""

from __future__ import annotations

import email
import email.policy
import json
import os
import re
import signal
import subprocess
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa

from schedctl.db.database import Database
from schedctl.db.schema import digests, notifications, users
from support.cli import SCHEDCTL
from support.fault_world import KILLPOINTS
from support.processes import Schedctl
from support.smtp_server import SmtpServer

NOW = datetime(2026, 11, 18, 12, 0, tzinfo=UTC)
CREATED = datetime(2026, 10, 1, tzinfo=UTC)
ZONES = ["UTC", "Europe/Berlin", "America/New_York", "Asia/Tokyo", "Pacific/Kiritimati"]
TITLE = re.compile(r"\bU(\d+)-N(\d+)\b")


def seed(db_url: str, count: int) -> dict[str, set[str]]:
    """``count`` users due at NOW with 0-4 notifications each: {email: titles}."""
    expected: dict[str, set[str]] = {}
    with Database(db_url) as db:

        def work(conn: sa.Connection) -> None:
            conn.execute(
                users.insert(),
                [
                    {"account_id": 1, "email": f"u{n}@example.org", "tz": ZONES[n % len(ZONES)],
                     "digest_time": "00:00", "created_at": CREATED, "updated_at": CREATED}
                    for n in range(count)
                ],
            )  # fmt: skip
            ids = {r.email: r.id for r in conn.execute(sa.select(users.c.email, users.c.id))}
            rows = []
            for n in range(count):
                address = f"u{n}@example.org"
                titles = {f"U{n}-N{k}" for k in range(n % 5)}
                expected[address] = titles
                rows += [
                    {"account_id": 1, "user_id": ids[address], "title": t,
                     "digest_key": ["a", "b", None][len(t) % 3], "created_at": CREATED}
                    for t in sorted(titles)
                ]  # fmt: skip
            conn.execute(notifications.insert(), rows)

        db.transaction(work)
    return expected


def environment(db_url: str, smtp: SmtpServer, now: datetime = NOW) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SCHEDCTL_")}
    env.update(smtp.env, NO_COLOR="1", SCHEDCTL_DATABASE_URL=db_url)
    env["SCHEDCTL_NOW"] = now.isoformat()
    return env


def start(count: int, env: dict[str, str]) -> list[subprocess.Popen[str]]:
    return [
        Schedctl(
            [str(SCHEDCTL), "digest", "--json"],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(count)
    ]


def finish(processes: list[subprocess.Popen[str]]) -> list[dict[str, Any]]:
    results = []
    for process in processes:
        out, err = process.communicate(timeout=300)
        assert process.returncode == 0, err
        results.append(json.loads(out))
    return results


def digest_rows(db_url: str) -> list[Any]:
    with Database(db_url) as db:
        return db.transaction(lambda c: list(c.execute(sa.select(digests))), read_only=True)


def count_digests(db_url: str) -> int:
    with Database(db_url) as db:
        return int(db.scalar(sa.select(sa.func.count()).select_from(digests)))


def check_exactly_once(db_url: str, smtp: SmtpServer, expected: dict[str, set[str]]) -> None:
    """One digest row per user; one mail per user with notifications, holding exactly
    them; every notification consumed by exactly the digest that mailed it."""
    rows = digest_rows(db_url)
    assert len(rows) == len(expected)
    assert Counter(r.user_id for r in rows).most_common(1)[0][1] == 1
    with_notes = {address for address, titles in expected.items() if titles}
    assert Counter(r.status for r in rows) == {
        "completed": len(with_notes), "skipped": len(expected) - len(with_notes)
    }  # fmt: skip
    assert set(smtp.id_counts().values()) == {1}, smtp.id_counts().most_common(3)
    received: dict[str, set[str]] = {}
    for envelope in smtp.accepted:
        mail = email.message_from_bytes(
            envelope.original_content or b"", policy=email.policy.default
        )
        [recipient] = envelope.rcpt_tos
        body = mail.get_body(("plain",))
        assert body is not None
        titles = {f"U{u}-N{k}" for u, k in TITLE.findall(body.get_content())}
        assert recipient not in received, f"two digests for {recipient}"
        received[recipient] = titles
    assert received == {address: expected[address] for address in with_notes}
    with Database(db_url) as db:
        notes = db.transaction(lambda c: list(c.execute(sa.select(notifications))), read_only=True)
    assert all(n.digest_id is not None and n.consumed_at is not None for n in notes)


@pytest.mark.parametrize(
    ("dialect", "count", "processes"),
    [("sqlite", 150, 2), pytest.param("postgresql", 2000, 4, marks=pytest.mark.postgres)],
)
def test_concurrent_digests_give_each_user_exactly_one_digest(
    db_url: str, smtp: SmtpServer, count: int, processes: int
) -> None:
    expected = seed(db_url, count)

    results = finish(start(processes, environment(db_url, smtp)))

    check_exactly_once(db_url, smtp, expected)
    with_notes = sum(1 for titles in expected.values() if titles)
    assert sum(r["users_due"] for r in results) == count
    assert sum(r["digests_created"] for r in results) == with_notes
    assert sum(r["digests_sent"] for r in results) == with_notes
    assert sum(r["skipped_empty"] for r in results) == count - with_notes
    assert sum(r["failed"] + r["deferred_quota"] for r in results) == 0
    if count >= 1000:
        # The work was really shared: SKIP LOCKED let each process take its own users
        # (pages of 500: enough of them that the others start before one is done).
        assert sum(1 for r in results if r["users_due"]) >= 2, results


def test_a_digest_killed_while_claiming_then_rerun_loses_and_doubles_nothing(
    db_url: str, smtp: SmtpServer
) -> None:
    count = 600
    expected = seed(db_url, count)
    env = environment(db_url, smtp)
    # Killed right before its third claim page (on SQLite after pages of 100 and 200
    # users; on PostgreSQL, whose two claimers begin one each, after one or two), not
    # at a moment: on a fast machine a signal sent once a page was seen came after
    # the last page.
    killed = env | {
        "FAULT_KILL_AT": "schedctl.digest.run:DigestRun._claim_page:before:3",
        "PYTHONPATH": os.pathsep.join(filter(None, [str(KILLPOINTS), env.get("PYTHONPATH")])),
    }
    [victim] = start(1, killed)
    victim.communicate(timeout=300)
    claimed = count_digests(db_url)
    finish(start(1, env))

    assert victim.returncode == -signal.SIGKILL
    assert 0 < claimed < count  # it was killed half-way, with pages committed
    check_exactly_once(db_url, smtp, expected)


def test_a_digest_killed_while_sending_then_rerun_after_the_lease_sends_each_once(
    db_url: str,
) -> None:
    expected = seed(db_url, 40)
    # The server sits on the first message's DATA reply: the process is killed mid-send.
    with SmtpServer(hold_data=1) as smtp:
        [victim] = start(1, environment(db_url, smtp))
        assert smtp.holding.wait(120)
        victim.send_signal(signal.SIGKILL)
        victim.communicate()
        smtp.release()
        built = digest_rows(db_url)
        # The same local day, once the killed process's message leases (10 min) ran out.
        [rerun] = finish(start(1, environment(db_url, smtp, NOW + timedelta(minutes=11))))

        assert victim.returncode == -signal.SIGKILL
        assert len(built) == len(expected)  # every digest was built before sending began
        assert rerun["users_due"] == 0
        assert rerun["digests_sent"] == sum(1 for titles in expected.values() if titles)
        check_exactly_once(db_url, smtp, expected)
