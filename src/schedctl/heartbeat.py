"""Heartbeats: every command records its run; `schedctl heartbeat` judges their age.

A row is inserted as ``running`` when a command starts and completed with its
outcome, exit code and counts when it ends, so a killed process leaves a visible
``running`` row behind. Status is the age of the last *successful* run measured
against per-command thresholds (SPEC §9): green, yellow, red, or unknown if never.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

import sqlalchemy as sa

from schedctl import __version__
from schedctl.config import Settings
from schedctl.db.database import Database
from schedctl.db.schema import heartbeats

Status = Literal["green", "yellow", "red", "unknown"]
Outcome = Literal["running", "success", "failed", "error", "temporary"]

# Monitoring-plugin exit codes for `heartbeat --check`.
CHECK_EXIT = {"green": 0, "yellow": 1, "red": 2, "unknown": 3}
_SEVERITY = {"green": 0, "unknown": 1, "yellow": 2, "red": 3}


_OUTCOMES: dict[int, Outcome] = {0: "success", 1: "failed", 75: "temporary"}


def outcome_for_exit(code: int) -> Outcome:
    return _OUTCOMES.get(code, "error")


def start_run(db: Database, command: str, started_at: datetime) -> int:
    """Record that `command` started; returns the heartbeat row id."""

    def work(conn: sa.Connection) -> int:
        statement = (
            heartbeats.insert()
            .values(
                command=command,
                host=socket.gethostname(),
                pid=os.getpid(),
                version=__version__,
                started_at=started_at,
                outcome="running",
            )
            .returning(heartbeats.c.id)
        )
        return int(conn.execute(statement).scalar_one())

    return db.transaction(work)


def finish_run(
    db: Database,
    heartbeat_id: int,
    *,
    finished_at: datetime,
    exit_code: int,
    counts: dict[str, Any] | None,
) -> None:
    """Complete a heartbeat row with the command's outcome."""
    statement = (
        heartbeats.update()
        .where(heartbeats.c.id == heartbeat_id)
        .values(
            finished_at=finished_at,
            outcome=outcome_for_exit(exit_code),
            exit_code=exit_code,
            counts=counts,
        )
    )
    db.transaction(lambda conn: conn.execute(statement))


def discard_run(db: Database, heartbeat_id: int) -> None:
    """Remove a started row: the command was refused as bad input and wrote nothing."""
    db.transaction(
        lambda conn: conn.execute(heartbeats.delete().where(heartbeats.c.id == heartbeat_id))
    )


@dataclass(frozen=True)
class CommandHealth:
    command: str
    last_success_at: datetime | None
    age_s: int | None
    status: Status
    last_outcome: str | None
    last_started_at: datetime | None
    monitored: bool

    def as_dict(self) -> dict[str, Any]:
        return {
            "command": self.command,
            "last_success_at": self.last_success_at.isoformat() if self.last_success_at else None,
            "age_s": self.age_s,
            "status": self.status,
            "last_outcome": self.last_outcome,
            "last_started_at": (self.last_started_at.isoformat() if self.last_started_at else None),
            "monitored": self.monitored,
        }


def classify(age_s: int | None, command: str, settings: Settings) -> Status:
    if age_s is None:
        return "unknown"
    limits = settings.thresholds_for(command)
    if age_s < limits.yellow_after.total_seconds():
        return "green"
    if age_s <= limits.red_after.total_seconds():
        return "yellow"
    return "red"


def overall(health: list[CommandHealth]) -> Status:
    """The worst status among monitored commands (red > yellow > unknown > green)."""
    statuses = [h.status for h in health if h.monitored]
    if not statuses:
        return "unknown"
    return max(statuses, key=lambda s: _SEVERITY[s])


def report(
    db: Database, settings: Settings, now: datetime, only: list[str] | None = None
) -> list[CommandHealth]:
    """Health of each monitored command, plus any other command that has run."""
    last_success = (
        sa.select(heartbeats.c.command, sa.func.max(heartbeats.c.finished_at).label("at"))
        .where(heartbeats.c.outcome == "success")
        .group_by(heartbeats.c.command)
    )
    latest_start = (
        sa.select(heartbeats.c.command, sa.func.max(heartbeats.c.started_at).label("at"))
        .group_by(heartbeats.c.command)
        .subquery()
    )
    last_run = sa.select(heartbeats.c.command, heartbeats.c.outcome, heartbeats.c.started_at).join(
        latest_start,
        sa.and_(
            heartbeats.c.command == latest_start.c.command,
            heartbeats.c.started_at == latest_start.c.at,
        ),
    )

    def work(conn: sa.Connection) -> tuple[dict[str, Any], dict[str, Any]]:
        successes = {row.command: row.at for row in conn.execute(last_success)}
        runs = {row.command: row for row in conn.execute(last_run)}
        return successes, runs

    successes, runs = db.transaction(work, read_only=True)
    monitored = list(settings.heartbeat_commands)
    # `heartbeat` itself is the observer: listed only when asked for by name.
    others = sorted(set(runs) - set(monitored) - {"heartbeat"})
    names = only or monitored + others
    health = []
    for name in names:
        success_at = successes.get(name)
        age = max(0, int((now - success_at).total_seconds())) if success_at else None
        run = runs.get(name)
        started = run.started_at if run else None
        health.append(
            CommandHealth(
                command=name,
                last_success_at=success_at,
                age_s=age,
                status=classify(age, name, settings),
                last_outcome=run.outcome if run else None,
                last_started_at=started,
                monitored=bool(only) or name in monitored,
            )
        )
    return health
