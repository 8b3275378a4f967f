"""A page of due users that another `digest` claimed a moment earlier (SPEC §5, §10).

On PostgreSQL the page query's snapshot is taken when the statement starts and its
row locks (SKIP LOCKED) are taken as it reads: a concurrent run that commits in
between leaves this run holding users whose day it already recorded. Every insert of
that page then conflicts, and the run must go on with nothing to do. Found by the
full-size digest day (SOAK_DIGEST=1, 4 processes per step): one process exited 1 with
"A value is required for bind parameter 'b_status'". The race is replayed here
deterministically: the second run is handed the page its query would have returned
before the first run committed.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
import sqlalchemy as sa

from schedctl.config import Settings
from schedctl.db.database import Database
from schedctl.db.schema import digests, messages, notifications, users
from schedctl.digest import plan as digest_plan
from schedctl.digest import run as digest_run

NOW = datetime(2027, 3, 10, 12, 0, tzinfo=UTC)


def test_a_page_claimed_meanwhile_by_another_run_is_left_alone(
    db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = Settings(database_url=db_url, mail_backend="memory", messages_enabled=False)
    with Database(db_url, environ={}) as db:

        def seed(conn: sa.Connection) -> None:
            for n in range(3):
                user_id = conn.execute(
                    users.insert()
                    .values(account_id=1, email=f"u{n}@example.org", tz="UTC", digest_time="08:00")
                    .returning(users.c.id)
                ).scalar_one()
                conn.execute(
                    notifications.insert().values(
                        account_id=1, user_id=user_id, title=f"t{n}", created_at=NOW
                    )
                )

        db.transaction(seed)
        options = digest_plan.DigestOptions()
        zones = db.transaction(lambda c: digest_plan.load_zones(c, NOW, options, 0), read_only=True)
        stale = db.transaction(lambda c: digest_plan.due_page(c, zones, options), read_only=True)
        assert len(stale) == 3

        first = digest_run.run_digest(db, settings, NOW, options)  # the other process
        assert first["digests_created"] == 3

        # This run's page query saw the users before the other run committed.
        pages = iter([stale])
        monkeypatch.setattr(digest_run, "due_page", lambda *a, **k: next(pages, []))
        second = digest_run.run_digest(db, settings, NOW, options)

        def counts(conn: sa.Connection) -> dict[str, Any]:
            return {
                "digests": conn.execute(sa.select(sa.func.count()).select_from(digests)).scalar(),
                "messages": conn.execute(sa.select(sa.func.count()).select_from(messages)).scalar(),
                "consumed": conn.execute(
                    sa.select(sa.func.count()).where(notifications.c.digest_id.is_not(None))
                ).scalar(),
            }

        after = db.transaction(counts, read_only=True)
    assert second["digests_created"] == second["users_due"] == second["failed"] == 0
    assert after == {"digests": 3, "messages": 3, "consumed": 3}
