"""`schedctl reconcile` as separate processes (SPEC §8, §10).

A large purge in bounded batches (20,000 digest days here; 1,000,000 with
``SOAK_RECONCILE=1``, `make soak-reconcile`, which prints the time and the largest
batch), a run SIGKILLed in the middle of its purge and rerun, and two processes at
once recovering and purging each item once.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from datetime import date, timedelta
from typing import Any

import sqlalchemy as sa

from schedctl.db.database import Database
from schedctl.db.schema import digests, messages, schedule_runs, usage_history, users
from schedctl.db.types import UTCDateTime
from support.cli import SCHEDCTL
from support.processes import Schedctl
from support.reconcile import Seed, count, now, rows

SOAK = os.environ.get("SOAK_RECONCILE") == "1"
LARGE = 1_000_000 if SOAK else 20_000
LARGE_BATCH = 5_000 if SOAK else 1_000  # 5,000 is the default batch size


def start(db_url: str, *args: str, **env: str) -> subprocess.Popen[str]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("SCHEDCTL_")}
    environ.update(SCHEDCTL_DATABASE_URL=db_url, NO_COLOR="1", **env)
    return Schedctl(
        [str(SCHEDCTL), "reconcile", "--json", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=environ,
    )


def finish(process: subprocess.Popen[str], timeout: float = 600) -> dict[str, Any]:
    out, err = process.communicate(timeout=timeout)
    assert process.returncode == 0, err
    data: dict[str, Any] = json.loads(out)
    return data


def expired_digest_days(db_url: str, how_many: int, per_user: int = 1000) -> None:
    """``how_many`` digest days past retention, made by the database itself (fast)."""
    seed = Seed(db_url)
    users_needed = -(-how_many // per_user)
    seed.bulk(
        users,
        [
            {"account_id": 1, "email": f"bulk{i}@example.com", "created_at": now(),
             "updated_at": now()}
            for i in range(users_needed)
        ],
    )  # fmt: skip
    with Database(db_url) as db:
        first_user = int(db.scalar(sa.select(sa.func.min(users.c.id))))
        days = (
            "SELECT 1, u.id, date('2000-01-01', '+' || d.n || ' days'), 'completed', :expires"
            " FROM users u, (WITH RECURSIVE n(n) AS (SELECT 0 UNION ALL SELECT n + 1 FROM n"
            " WHERE n < :last) SELECT n FROM n) d WHERE u.id - :first < :users"
            " AND (u.id - :first) * :per + d.n < :total"
            if db.dialect == "sqlite"
            else "SELECT 1, u.id, DATE '2000-01-01' + d.n, 'completed', :expires"
            " FROM users u, generate_series(0, :last) AS d(n) WHERE u.id - :first < :users"
            " AND (u.id - :first) * :per + d.n < :total"
        )
        statement = sa.text(
            "INSERT INTO digests (account_id, user_id, local_date, status, expires_at) " + days
        ).bindparams(
            sa.bindparam("expires", now() - timedelta(days=1), type_=UTCDateTime),
            last=per_user - 1,
            first=first_user,
            users=users_needed,
            per=per_user,
            total=how_many,
        )
        db.transaction(lambda conn: conn.execute(statement))
    assert count(db_url, digests) == how_many


def test_a_large_purge_runs_in_bounded_batches(db_url: str) -> None:
    expired_digest_days(db_url, LARGE)
    kept_user = Seed(db_url).user()
    kept = Seed(db_url).digest_day(kept_user, date.today(), now() + timedelta(days=30))

    began = time.monotonic()
    data = finish(start(db_url, SCHEDCTL_RECONCILE_BATCH_SIZE=str(LARGE_BATCH)), timeout=3600)
    took = time.monotonic() - began

    assert data["tracking_purged"] == LARGE
    assert data["largest_batch"] == LARGE_BATCH  # never more in one transaction
    assert data["purge_batches"] == LARGE // LARGE_BATCH
    assert [r.id for r in rows(db_url, digests)] == [kept]
    dialect = db_url.split(":", 1)[0]
    print(
        f"\nreconcile purged {LARGE:,} digest days on {dialect} in {took:.1f} s"
        f" ({LARGE / took:,.0f} rows/s), {data['purge_batches']} batches,"
        f" largest {data['largest_batch']:,}"
    )


def test_a_run_killed_mid_purge_is_finished_by_the_next(db_url: str) -> None:
    total = 20_000
    expired_digest_days(db_url, total)
    kept_user = Seed(db_url).user()
    kept = Seed(db_url).digest_day(kept_user, date.today(), now() + timedelta(days=30))

    process = start(db_url, SCHEDCTL_RECONCILE_BATCH_SIZE="50")
    deadline = time.monotonic() + 120
    while count(db_url, digests) > total - 500:  # some batches are done
        assert process.poll() is None, "the purge ended before it could be killed"
        assert time.monotonic() < deadline
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.communicate()
    left = count(db_url, digests)
    assert 1 < left <= total - 500 + 1

    data = finish(start(db_url, SCHEDCTL_RECONCILE_BATCH_SIZE="1000"))
    assert data["tracking_purged"] == left - 1
    assert [r.id for r in rows(db_url, digests)] == [kept]


def test_two_processes_at_once_recover_and_purge_each_item_once(db_url: str) -> None:
    seed = Seed(db_url)
    t = now()
    expired = {"lease_owner": "gone:1:x", "lease_expires_at": t - timedelta(minutes=1)}
    seed.bulk(
        messages,
        [
            {"account_id": 1, "type": "REPORT", "priority": "normal",
             "recipient": "a@example.com", "subject": "s", "body_text": "b",
             "subscription": False, "send_at": t, "status": "scheduled", "attempts": 0,
             "idempotency_key": f"k{i}", "message_id": f"<k{i}@x>", "created_at": t,
             "updated_at": t, **expired}
            for i in range(300)
        ],
    )  # fmt: skip
    schedule = seed.schedule()
    seed.bulk(
        schedule_runs,
        [
            {"account_id": 1, "schedule_id": schedule, "slot": t - timedelta(minutes=i),
             "manual": False, "status": "running", "attempt": 1, "started_at": t,
             "created_at": t, **expired}
            for i in range(100)
        ],
    )  # fmt: skip
    for message_id in (1, 2, 3):
        seed.attempts(message_id, t - timedelta(minutes=message_id), "sent", n=message_id)
    expired_digest_days(db_url, 5_000)

    env = {"SCHEDCTL_RECONCILE_BATCH_SIZE": "20", "SCHEDCTL_NOW": t.isoformat()}
    first, second = start(db_url, **env), start(db_url, **env)
    a, b = finish(first), finish(second)

    assert a["messages_retrying"] + b["messages_retrying"] == 300
    assert {(m.status, m.attempts) for m in rows(db_url, messages)} == {("retrying", 1)}
    assert a["runs_retryable"] + b["runs_retryable"] == 100
    assert {(r.status, r.lease_owner) for r in rows(db_url, schedule_runs)} == {("failed", None)}
    assert a["tracking_purged"] + b["tracking_purged"] == 5_000
    assert count(db_url, digests) == 0
    history = rows(db_url, usage_history)
    assert {(h.message_type, h.outcome) for h in history} == {("REPORT", "sent")}
    assert sum(h.total for h in history) == 6  # once, though both snapshot the same days


def test_dry_run_leaves_every_table_as_it_was_after_a_kill_too(db_url: str) -> None:
    """A dry run SIGKILLed at any point has nothing to leave behind."""
    expired_digest_days(db_url, 2_000)
    process = start(db_url, "--dry-run")
    time.sleep(0.3)
    process.send_signal(signal.SIGKILL)
    process.communicate()
    assert count(db_url, digests) == 2_000
    assert finish(start(db_url, "--dry-run"))["tracking_purged"] == 2_000
    assert count(db_url, digests) == 2_000
