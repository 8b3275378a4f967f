"""The digest's claim pages on PostgreSQL run on two connections at once (CLAIMERS):
each page still in one transaction, no two pages sharing a user, every due user's
day claimed once, the first error stopping both, and a page made again never leaving
a user behind. SQLite claims on one connection.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sqlite3
import threading
import time
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
import sqlalchemy as sa

from schedctl.config import Settings
from schedctl.db.database import Database
from schedctl.db.schema import digests, messages, notifications, users
from schedctl.digest import plan as digest_plan
from schedctl.digest import run as digest_run
from schedctl.errors import DatabaseUnavailable

NOW = datetime(2027, 3, 10, 12, 0, tzinfo=UTC)
USERS = 700  # pages of 100, 200, 400, 500 ...: several for each claimer
PER_USER = 2


def _seed(db: Database, count: int = USERS) -> None:
    def seed(conn: sa.Connection) -> None:
        conn.execute(
            users.insert(),
            [
                {"account_id": 1, "email": f"u{n}@example.org", "tz": "UTC",
                 "digest_time": "08:00"}
                for n in range(count)
            ],
        )  # fmt: skip
        ids = conn.execute(sa.select(users.c.id)).scalars().all()
        conn.execute(
            notifications.insert(),
            [
                {"account_id": 1, "user_id": user_id, "title": f"t{user_id}.{k}",
                 "created_at": NOW}
                for user_id in ids
                for k in range(PER_USER)
            ],
        )  # fmt: skip

    db.transaction(seed)


def _settings(url: str) -> Settings:
    return Settings(database_url=url, mail_backend="memory", messages_enabled=False)


def _state(db: Database) -> dict[str, Any]:
    def read(conn: sa.Connection) -> dict[str, Any]:
        per_user = Counter(conn.execute(sa.select(digests.c.user_id)).scalars())
        return {
            "users with a digest": len(per_user),
            "most digests of a user": max(per_user.values(), default=0),
            "completed": conn.execute(
                sa.select(sa.func.count()).where(digests.c.status == "completed")
            ).scalar(),
            "messages": conn.execute(sa.select(sa.func.count()).select_from(messages)).scalar(),
            "consumed": conn.execute(
                sa.select(sa.func.count()).where(notifications.c.digest_id.is_not(None))
            ).scalar(),
        }

    return db.transaction(read, read_only=True)


DONE = {
    "users with a digest": USERS,
    "most digests of a user": 1,
    "completed": USERS,
    "messages": USERS,
    "consumed": USERS * PER_USER,
}


def test_each_due_user_is_claimed_once_over_the_claimers(
    db_url: str, dialect: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    pages: list[tuple[str, list[int]]] = []
    lock = threading.Lock()
    real_due_page = digest_run.due_page

    def due_page(*args: Any, **kwargs: Any) -> list[Any]:
        page = real_due_page(*args, **kwargs)
        with lock:
            pages.append((threading.current_thread().name, [p.user_id for p in page]))
        return page

    monkeypatch.setattr(digest_run, "due_page", due_page)
    with Database(db_url, environ={}) as db:
        _seed(db)
        counts = digest_run.run_digest(db, _settings(db_url), NOW, digest_plan.DigestOptions())
        state = _state(db)

    assert state == DONE
    assert counts["digests_created"] == counts["users_due"] == USERS
    assert counts["notifications_digested"] == USERS * PER_USER
    claimed = [user for _, page in pages for user in page]
    assert len(claimed) == len(set(claimed)) == USERS  # no page shares a user
    claimers = {name for name, page in pages if page}
    if dialect == "postgresql":
        assert claimers == {"MainThread", "digest-2"}
    else:
        assert claimers == {"MainThread"}


def test_the_first_error_stops_every_claimer_and_a_rerun_finishes_once(
    db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = 0
    real_fill = digest_run.DigestRun._fill

    def fill(self: digest_run.DigestRun, *args: Any, **kwargs: Any) -> Any:
        nonlocal calls
        calls += 1
        if calls == 3:
            raise RuntimeError("the third page breaks")
        return real_fill(self, *args, **kwargs)

    with Database(db_url, environ={}) as db:
        _seed(db)
        monkeypatch.setattr(digest_run.DigestRun, "_fill", fill)
        with pytest.raises(RuntimeError, match="the third page breaks"):
            digest_run.run_digest(db, _settings(db_url), NOW, digest_plan.DigestOptions())
        # nobody began another page after the error (the other claimer's page in
        # flight, if any, went on to its end)
        assert 3 <= calls <= 3 + digest_run.CLAIMERS - 1
        halfway = _state(db)
        monkeypatch.setattr(digest_run.DigestRun, "_fill", real_fill)
        counts = digest_run.run_digest(db, _settings(db_url), NOW, digest_plan.DigestOptions())
        state = _state(db)

    assert 100 <= halfway["users with a digest"] < USERS  # pages before the error stayed
    assert halfway["messages"] == halfway["completed"] == halfway["users with a digest"]
    assert state == DONE
    assert counts["digests_created"] == USERS - halfway["completed"]


def test_with_a_limit_one_claimer_takes_exactly_that_many(db_url: str) -> None:
    with Database(db_url, environ={}) as db:
        _seed(db)
        options = digest_plan.DigestOptions(limit=250)
        counts = digest_run.run_digest(db, _settings(db_url), NOW, options)
        state = _state(db)
    assert counts["users_due"] == counts["digests_created"] == 250
    assert state["users with a digest"] == 250


@pytest.mark.postgres
@pytest.mark.parametrize("dialect", ["postgresql"])  # (SQLite claims on one connection)
def test_an_interrupt_waits_for_the_other_claimers_page(
    db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Ctrl-C while the main thread waits for digest-2: the run raises it only once
    # digest-2 has ended its page (committed).
    real_fill = digest_run.DigestRun._fill

    def fill(self: digest_run.DigestRun, *args: Any, **kwargs: Any) -> Any:
        if threading.current_thread().name == "digest-2":
            time.sleep(0.3)  # the main thread's page is done, and it waits
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.3)
        return real_fill(self, *args, **kwargs)

    monkeypatch.setattr(digest_run.DigestRun, "_fill", fill)
    with Database(db_url, environ={}) as db:
        _seed(db, 150)  # a page of 100 and one of 50, one for each claimer
        with pytest.raises(KeyboardInterrupt):
            digest_run.run_digest(db, _settings(db_url), NOW, digest_plan.DigestOptions())
        state = _state(db)
    assert state["users with a digest"] == state["completed"] == 150


def test_a_page_made_again_that_ends_sooner_leaves_nobody_behind(
    db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The first page's transaction fails once, transiently, after its page query moved
    # the cursor past its last user; made again, its query lacks the first attempt's
    # last 5 users (say another run had taken them, and let them go since), whatever
    # its size now (a page the other claimer committed meanwhile doubles it). A pass
    # from the start follows, and meets the same; a third pass claims those 5.
    passes: list[dict[int, list[int]]] = []  # per pass: page start -> its first attempt's users
    failed_in: set[int] = set()  # the passes whose first page failed once
    lock = threading.Lock()  # (both claimers may reach _fill at once)
    shortened = 0
    real_claim_pages = digest_run.DigestRun._claim_pages
    real_fill = digest_run.DigestRun._fill
    real_due_page = digest_run.due_page

    def claim_pages(self: digest_run.DigestRun, *args: Any) -> None:
        passes.append({})
        real_claim_pages(self, *args)

    def fill(self: digest_run.DigestRun, *args: Any, **kwargs: Any) -> Any:
        with lock:
            fails = len(passes) <= 2 and len(passes) not in failed_in
            if fails:
                failed_in.add(len(passes))
        if fails:
            raise sa.exc.OperationalError(
                "UPDATE", {}, sqlite3.OperationalError("database is locked")
            )
        return real_fill(self, *args, **kwargs)

    def due_page(*args: Any, **kwargs: Any) -> list[Any]:  # (under the run's page lock)
        nonlocal shortened
        page = real_due_page(*args, **kwargs)
        first = passes[-1].get(kwargs["after"])
        if first is not None and page:
            shortened += 1
            return [p for p in page if p.user_id not in first[-5:]]
        passes[-1][kwargs["after"]] = [p.user_id for p in page]
        return page

    monkeypatch.setattr(digest_run.DigestRun, "_claim_pages", claim_pages)
    monkeypatch.setattr(digest_run.DigestRun, "_fill", fill)
    monkeypatch.setattr(digest_run, "due_page", due_page)
    with Database(db_url, environ={}) as db:
        _seed(db)
        counts = digest_run.run_digest(db, _settings(db_url), NOW, digest_plan.DigestOptions())
        state = _state(db)

    assert failed_in == {1, 2}
    assert shortened == 2
    assert len(passes) == 3
    assert state == DONE
    assert counts["digests_created"] == USERS


def test_both_claimers_failing_is_told_in_one_line(
    db_url: str, cli: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The database goes away under both claimers: the run exits 75 with the first
    # error as its one line on stderr; the second is told at debug level only.
    def fill(self: digest_run.DigestRun, *args: Any, **kwargs: Any) -> Any:
        time.sleep(0.1)  # (both claimers are in their page by then)
        raise DatabaseUnavailable("database unavailable (gone)")

    with Database(db_url, environ={}) as db:
        _seed(db)
    monkeypatch.setattr(digest_run.DigestRun, "_fill", fill)
    result = cli(
        "digest", db_url=db_url,
        env={"SCHEDCTL_NOW": NOW.isoformat(), "SCHEDCTL_MAIL_BACKEND": "memory"},
    )  # fmt: skip
    assert result.returncode == 75, result.stderr
    assert result.stderr.strip().splitlines() == ["schedctl: error: database unavailable (gone)"]


def test_the_pages_are_claimed_with_fewer_collections(
    db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # heap.fewer_collections is held while the pages are claimed (and only then).
    inside: list[bool] = []
    held = False
    real_block = digest_run.heap.fewer_collections
    real_claim_page = digest_run.DigestRun._claim_page

    @contextlib.contextmanager
    def block() -> Iterator[None]:
        nonlocal held
        with real_block():
            held = True
            try:
                yield
            finally:
                held = False

    def claim_page(self: digest_run.DigestRun, *args: Any, **kwargs: Any) -> Any:
        inside.append(held)
        return real_claim_page(self, *args, **kwargs)

    monkeypatch.setattr(digest_run.heap, "fewer_collections", block)
    monkeypatch.setattr(digest_run.DigestRun, "_claim_page", claim_page)
    with Database(db_url, environ={}) as db:
        _seed(db, 150)
        digest_run.run_digest(db, _settings(db_url), NOW, digest_plan.DigestOptions())
    assert inside
    assert all(inside)
    assert not held
