"""Rows for reconcile's tests: runs, messages, logs, digests, heartbeats, counters.

Times are relative to ``now()``: the real clock (reconcile refuses a SCHEDCTL_NOW
ahead of the database's), truncated to the second so SQLite and PostgreSQL agree.
"""

from __future__ import annotations

import itertools
from datetime import UTC, date, datetime, timedelta
from typing import Any

import sqlalchemy as sa

from schedctl.db.database import Database
from schedctl.db.schema import (
    accounts,
    digests,
    email_log,
    heartbeats,
    messages,
    metadata,
    schedule_runs,
    schedules,
    send_counters,
    users,
)

_keys = itertools.count(1)


def now() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)


class Seed:
    """Inserts rows into one database (account 1 is `default`)."""

    def __init__(self, db_url: str) -> None:
        self.db_url = db_url

    def _insert(self, table: sa.Table, rows: list[dict[str, Any]]) -> list[int]:
        with Database(self.db_url) as db:
            return db.transaction(
                lambda conn: [
                    int(conn.execute(table.insert().values(**row).returning(table.c.id)).scalar())
                    for row in rows
                ]
            )

    def bulk(self, table: sa.Table, rows: list[dict[str, Any]]) -> None:
        with Database(self.db_url) as db:
            db.transaction(lambda conn: conn.execute(table.insert(), rows))

    def account(self, name: str) -> int:
        return self._insert(accounts, [{"name": name, "created_at": now()}])[0]

    def schedule(self, account_id: int = 1) -> int:
        at = now()
        return self._insert(
            schedules,
            [
                {
                    "account_id": account_id,
                    "name": f"s{next(_keys)}",
                    "kind": "sql",
                    "cadence": "daily",
                    "at_time": "07:00",
                    "tz": "UTC",
                    "recipients": ["a@example.com"],
                    "params": {"query": "q"},
                    "active": True,
                    "catchup": "latest",
                    "next_run_at": at + timedelta(days=1),
                    "created_at": at,
                    "updated_at": at,
                }
            ],
        )[0]

    def run(self, schedule_id: int, **values: Any) -> int:
        at = now()
        row = {
            "account_id": 1,
            "schedule_id": schedule_id,
            "slot": at - timedelta(minutes=next(_keys)),
            "manual": False,
            "status": "queued",
            "attempt": 0,
            "created_at": at,
            **values,
        }
        return self._insert(schedule_runs, [row])[0]

    def message(self, type: str = "REPORT", account_id: int = 1, **values: Any) -> int:
        at = now()
        key = f"test:{next(_keys)}"
        row = {
            "account_id": account_id,
            "type": type,
            "priority": "normal",
            "recipient": "a@example.com",
            "subject": "s",
            "body_text": "b",
            "subscription": False,
            "send_at": at - timedelta(hours=1),
            "status": "scheduled",
            "attempts": 0,
            "idempotency_key": key,
            "message_id": f"<{key}@example.com>",
            "created_at": at,
            "updated_at": at,
            **values,
        }
        return self._insert(messages, [row])[0]

    def attempts(
        self, message_id: int | None, at: datetime, outcome: str = "sent", n: int = 1,
        account_id: int = 1,
    ) -> None:  # fmt: skip
        self.bulk(
            email_log,
            [
                {
                    "account_id": account_id,
                    "message_id": message_id,
                    "provider": "smtp",
                    "recipients": "a@example.com",
                    "outcome": outcome,
                    "attempted_at": at,
                }
            ]
            * n,
        )

    def user(self) -> int:
        return self._insert(
            users,
            [{"account_id": 1, "email": f"u{next(_keys)}@example.com", "created_at": now(),
              "updated_at": now()}],
        )[0]  # fmt: skip

    def digest_day(self, user_id: int, local_date: date, expires_at: datetime) -> int:
        return self._insert(
            digests,
            [{"account_id": 1, "user_id": user_id, "local_date": local_date,
              "status": "completed", "created_at": now(), "updated_at": now(),
              "expires_at": expires_at}],
        )[0]  # fmt: skip

    def heartbeat(self, command: str, started_at: datetime, outcome: str = "success") -> int:
        return self._insert(
            heartbeats,
            [{"command": command, "host": "h", "pid": 1, "version": "0", "started_at": started_at,
              "finished_at": started_at + timedelta(seconds=5), "outcome": outcome,
              "exit_code": 0 if outcome == "success" else 1}],
        )[0]  # fmt: skip

    def counter(self, day: date, sent: int, reserved: int) -> None:
        self.bulk(send_counters, [{"day": day.isoformat(), "sent": sent, "reserved": reserved}])


def rows(db_url: str, table: sa.Table, *where: Any) -> list[Any]:
    with Database(db_url) as db:
        query = sa.select(table).where(*where).order_by(*table.primary_key.columns)
        return db.transaction(lambda conn: list(conn.execute(query)), read_only=True)


def row(db_url: str, table: sa.Table, id: int) -> Any:
    (found,) = rows(db_url, table, table.c.id == id)
    return found


def count(db_url: str, table: sa.Table) -> int:
    with Database(db_url) as db:
        return int(db.scalar(sa.select(sa.func.count()).select_from(table)))


def dump(db_url: str) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every table, to prove a run wrote nothing."""
    with Database(db_url) as db:

        def work(conn: sa.Connection) -> dict[str, list[tuple[Any, ...]]]:
            return {
                name: sorted(tuple(map(repr, r)) for r in conn.execute(sa.select(table)))
                for name, table in metadata.tables.items()
            }

        return db.transaction(work, read_only=True)
