"""Shared helpers for the delivery tests: outbox rows, and `tick` processes started at once."""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from schedctl.config import Settings, load_settings
from schedctl.db.database import Database
from schedctl.db.schema import email_log, messages
from schedctl.delivery.outbox import NewMessage, enqueue
from support.cli import SCHEDCTL
from support.processes import Schedctl

T0 = datetime(2026, 11, 18, 9, 0, tzinfo=UTC)  # a Wednesday
DOMAIN = "example.com"


def message(n: int, **overrides: Any) -> NewMessage:
    values: dict[str, Any] = {
        "account_id": 1,
        "type": "REPORT",
        "recipient": f"user{n}@example.org",
        "subject": f"Report {n}",
        "body_text": f"Hello {n}",
        "body_html": f"<p>Hello {n}</p>",
        "send_at": T0,
        "idempotency_key": f"test:{n}",
    }
    values.update(overrides)
    return NewMessage(**values)


def enqueue_all(db_url: str, items: Iterable[NewMessage], now: datetime = T0) -> list[int]:
    batch = list(items)
    with Database(db_url) as db:
        return db.transaction(lambda conn: enqueue(conn, batch, now=now, domain=DOMAIN))


def bulk_insert(db_url: str, count: int, **overrides: Any) -> None:
    """Insert many due messages with one executemany (enqueue inserts row by row)."""
    from schedctl.delivery.message import make_message_id
    from schedctl.delivery.outbox import installation_id

    with Database(db_url) as db:
        install = db.transaction(installation_id, read_only=True)
    rows = []
    for n in range(count):
        key = f"bulk:{n}"
        rows.append(
            {
                "account_id": 1, "type": "REPORT", "priority": "normal",
                "recipient": f"user{n}@example.org", "subject": f"Bulk {n}",
                "body_text": f"Hello {n}", "body_html": None, "attachments": None,
                "subscription": False, "send_at": T0, "status": "scheduled",
                "attempts": 0, "idempotency_key": key,
                "message_id": make_message_id(key, DOMAIN, installation=install),
                "created_at": T0, "updated_at": T0, **overrides,
            }
        )  # fmt: skip
    with Database(db_url) as db:
        db.transaction(lambda conn: conn.execute(messages.insert(), rows))


def all_messages(db_url: str) -> list[Any]:
    with Database(db_url) as db:
        return db.transaction(
            lambda conn: list(conn.execute(sa.select(messages).order_by(messages.c.id))),
            read_only=True,
        )


def one(db_url: str, message_id: int) -> Any:
    return next(m for m in all_messages(db_url) if m.id == message_id)


def log_rows(db_url: str) -> list[Any]:
    with Database(db_url) as db:
        return db.transaction(
            lambda conn: list(conn.execute(sa.select(email_log).order_by(email_log.c.id))),
            read_only=True,
        )


@dataclass
class Tick:
    """One finished `schedctl tick --json` process."""

    returncode: int
    counts: dict[str, int]
    stderr: str


def start_ticks(
    count: int, db_url: str, env: dict[str, str], now: datetime = T0, timeout: float = 120
) -> list[Tick]:
    """Start `count` tick processes at once at ``now``; wait for all (exit codes unchecked)."""
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("SCHEDCTL_")}
    full_env.update(SCHEDCTL_NOW=now.isoformat(), SCHEDCTL_DATABASE_URL=db_url, NO_COLOR="1")
    full_env.update(env)
    processes = [
        Schedctl(
            [str(SCHEDCTL), "tick", "--json"],
            env=full_env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(count)
    ]
    results = []
    for process in processes:
        out, err = process.communicate(timeout=timeout)
        counts = json.loads(out) if out.strip().startswith("{") else {}
        results.append(Tick(process.returncode, counts, err))
    return results


def run_ticks(count: int, db_url: str, env: dict[str, str]) -> list[dict[str, int]]:
    """Start `count` tick processes at once (SCHEDCTL_NOW T0 unless ``env`` says);
    wait for all; each must exit 0; return their JSON counts."""
    results = start_ticks(count, db_url, env)
    for result in results:
        assert result.returncode == 0, result.stderr
    return [r.counts for r in results]


def load_with(tables: Mapping[str, Any], **flags: Any) -> Settings:
    """Settings as `load_settings` makes them from a config file holding ``tables`` (and
    ``flags``), every value checked against the schema."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "schedctl.toml"
        path.write_text("".join(f"{name} = {_toml(value)}\n" for name, value in tables.items()))
        return load_settings({**flags, "config_path": str(path)}, environ={})


def _toml(value: Any) -> str:
    """A TOML value (tables inline) of plain strings, numbers, booleans, lists, tables."""
    if isinstance(value, Mapping):
        return "{" + ", ".join(f"{json.dumps(str(k))} = {_toml(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    return json.dumps(value)
