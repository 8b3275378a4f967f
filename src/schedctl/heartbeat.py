"""Heartbeats: every command that writes records its run; `schedctl heartbeat` judges
their age.

A row is inserted as ``running`` with a command's first write (in that
transaction, so input refused before anything is written leaves no row) and
completed with its outcome, exit code and counts when it ends, so a killed process
leaves a visible ``running`` row behind; a command that writes nothing gets its
complete row when it ends. Commands that only read (`commands.READ_ONLY`) record
none. Status is the age of the last *successful* run measured against per-command
thresholds (SPEC §9): green, yellow, red, or unknown if never.

Rows carry the database server's clock, never SCHEDCTL_NOW (which is recorded beside
it, in ``simulated_now``), and are judged on that clock: a run under a simulated
clock is a real run, now. What is judged is what the deployment runs: the commands
named in ``[heartbeat] commands``, or by default the scheduled jobs (those with
thresholds) that have run at least once. A timestamp in the future (a row written
before heartbeats kept the database's clock) is not trusted: it never makes a command
green.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal

import sqlalchemy as sa

from schedctl import __version__
from schedctl.commands import COMMAND_NAMES, READ_ONLY, only_reads
from schedctl.config import Settings
from schedctl.db.database import Database
from schedctl.db.schema import heartbeats
from schedctl.errors import ValidationError
from schedctl.vocabulary import CHECK_EXIT as CHECK_EXIT  # monitoring exit codes

Status = Literal["green", "yellow", "red", "unknown"]
Outcome = Literal["running", "success", "failed", "error", "temporary"]

# How bad each status is, for the overall one.
_SEVERITY = {"green": 0, "unknown": 1, "yellow": 2, "red": 3}

# How far ahead of now a recorded time may be before it is suspect (clock skew).
FUTURE_SKEW = timedelta(minutes=1)
NOTHING_TO_JUDGE = (
    "nothing to judge: no scheduled job has run yet;"
    " [heartbeat] commands names the jobs to judge before their first run"
)


_OUTCOMES: dict[int, Outcome] = {0: "success", 1: "failed", 75: "temporary"}


def outcome_for_exit(code: int) -> Outcome:
    return _OUTCOMES.get(code, "error")


def insert_run(
    conn: sa.Connection,
    command: str,
    started_at: datetime,
    simulated_now: datetime | None = None,
) -> int:
    """Insert the ``running`` row of `command` in the caller's transaction; its id.

    ``started_at`` is the database's clock; ``simulated_now`` the SCHEDCTL_NOW instant
    the command runs under, if any.
    """
    statement = (
        heartbeats.insert()
        .values(
            command=command,
            host=socket.gethostname(),
            pid=os.getpid(),
            version=__version__,
            started_at=started_at,
            simulated_now=simulated_now,
            outcome="running",
        )
        .returning(heartbeats.c.id)
    )
    return int(conn.execute(statement).scalar_one())


def start_run(
    db: Database, command: str, started_at: datetime, simulated_now: datetime | None = None
) -> int:
    """Record that `command` started; returns the heartbeat row id."""
    return db.transaction(lambda conn: insert_run(conn, command, started_at, simulated_now))


def record_run(db: Database, command: str, started_at: datetime, counts: dict[str, Any]) -> None:
    """Record a whole successful run of `command` that began at ``started_at`` (the
    database's clock) and ends now, in one go (`db upgrade`, the demo's jobs)."""
    row = start_run(db, command, started_at, db.simulated_now)
    finish_run(db, row, finished_at=db.server_now(), exit_code=0, counts=counts)


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


def check_command_names(names: Iterable[str], origin: str) -> None:
    """Refuse a name that is not a schedctl command, or one that records no heartbeat
    because it only reads (exit 2)."""
    for name in names:
        if name not in COMMAND_NAMES:
            raise ValidationError(
                f"{origin}: unknown command {name[:60]!r}"
                " (a command as `schedctl --help` names it, e.g. 'tick' or 'schedules create')"
            )
        problem = only_reads(name)
        if problem:
            raise ValidationError(f"{origin}: {problem}: there is nothing to judge")


@dataclass(frozen=True)
class CommandHealth:
    command: str
    last_success_at: datetime | None
    age_s: int | None
    # None: shown because it ran, but not judged.
    status: Status | None
    last_outcome: str | None
    last_started_at: datetime | None
    monitored: bool
    # Why the status is what it is, when the age alone does not say it.
    note: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "command": self.command,
            "last_success_at": self.last_success_at.isoformat() if self.last_success_at else None,
            "age_s": self.age_s,
            "status": self.status,
            "last_outcome": self.last_outcome,
            "last_started_at": (self.last_started_at.isoformat() if self.last_started_at else None),
            "monitored": self.monitored,
            "note": self.note,
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
    statuses = [h.status for h in health if h.monitored and h.status is not None]
    if not statuses:
        return "unknown"
    return max(statuses, key=lambda s: _SEVERITY[s])


def worst(commands: Iterable[Mapping[str, Any]]) -> Mapping[str, Any] | None:
    """Of judged commands (`CommandHealth.as_dict`), the first in the worst status that
    is not green, or None."""
    bad = [c for c in commands if c["status"] not in (None, "green")]
    return max(bad, key=lambda c: _SEVERITY[c["status"]], default=None)


def overall_note(health: list[CommandHealth]) -> str | None:
    """Why the overall status is unknown when there was nothing to judge."""
    return None if any(h.monitored for h in health) else NOTHING_TO_JUDGE


@dataclass(frozen=True)
class _Future:
    """A command's runs dated after now: a clock ahead, or SCHEDCTL_NOW in the future."""

    runs: int
    latest: datetime
    hosts: tuple[str, str]

    def note(self) -> str:
        runs = "1 run" if self.runs == 1 else f"{self.runs} runs"
        host = self.hosts[0] if self.hosts[0] == self.hosts[1] else "several hosts"
        return (
            f"{runs} dated in the future (latest {self.latest.isoformat()}, host {host}):"
            " clock ahead? not counted as a success"
        )


def report(
    db: Database, settings: Settings, now: datetime, only: list[str] | None = None
) -> list[CommandHealth]:
    """Health of each judged command, plus (not judged) any other command that has run.

    ``only`` judges exactly those commands; otherwise the configured ones or, by
    default, the scheduled jobs that have run at least once. A time after
    ``now + FUTURE_SKEW`` is suspect: it never counts as a success and caps the
    command's status at yellow, with a note saying why.
    """
    horizon = now + FUTURE_SKEW
    last_success = (
        sa.select(heartbeats.c.command, sa.func.max(heartbeats.c.finished_at).label("at"))
        .where(heartbeats.c.outcome == "success", heartbeats.c.finished_at <= horizon)
        .group_by(heartbeats.c.command)
    )
    # The latest run is the latest row written, whatever clock stamped it.
    latest_id = (
        sa.select(sa.func.max(heartbeats.c.id).label("id"))
        .group_by(heartbeats.c.command)
        .subquery()
    )
    last_run = sa.select(heartbeats.c.command, heartbeats.c.outcome, heartbeats.c.started_at).join(
        latest_id, heartbeats.c.id == latest_id.c.id
    )
    future = (
        sa.select(
            heartbeats.c.command,
            sa.func.count().label("runs"),
            sa.func.max(heartbeats.c.started_at).label("started"),
            sa.func.max(heartbeats.c.finished_at).label("finished"),
            sa.func.min(heartbeats.c.host).label("first_host"),
            sa.func.max(heartbeats.c.host).label("last_host"),
        )
        .where(sa.or_(heartbeats.c.started_at > horizon, heartbeats.c.finished_at > horizon))
        .group_by(heartbeats.c.command)
    )

    def work(conn: sa.Connection) -> tuple[dict[str, Any], dict[str, Any], dict[str, _Future]]:
        successes = {row.command: row.at for row in conn.execute(last_success)}
        runs = {row.command: row for row in conn.execute(last_run)}
        futures = {
            row.command: _Future(
                row.runs,
                max(t for t in (row.started, row.finished) if t is not None),
                (row.first_host, row.last_host),
            )
            for row in conn.execute(future)
        }
        return successes, runs, futures

    successes, runs, futures = db.transaction(work, read_only=True)
    if only:
        judged = list(dict.fromkeys(only))
    elif settings.heartbeat_commands is not None:
        # A command that only reads never records a run (`config check` warns of it).
        judged = [name for name in settings.heartbeat_commands if name not in READ_ONLY]
    else:
        judged = [n for n in settings.heartbeat_thresholds if n in runs and n not in READ_ONLY]
    # Rows of commands that only read are from versions that recorded them: not listed.
    shown = [] if only else sorted(set(runs) - set(judged) - READ_ONLY)

    health = []
    for name in [*judged, *shown]:
        success_at = successes.get(name)
        age = max(0, int((now - success_at).total_seconds())) if success_at else None
        run = runs.get(name)
        status: Status | None = None
        note: str | None = "not monitored"
        if name in judged:
            status = classify(age, name, settings)
            note = "never ran" if run is None else "never succeeded" if age is None else None
            if name in futures:
                status = "yellow" if status == "green" else status
                note = futures[name].note()
        health.append(
            CommandHealth(
                command=name,
                last_success_at=success_at,
                age_s=age,
                status=status,
                last_outcome=run.outcome if run else None,
                last_started_at=run.started_at if run else None,
                monitored=name in judged,
                note=note,
            )
        )
    return health


def report_now(
    db: Database, settings: Settings, only: list[str] | None = None
) -> list[CommandHealth]:
    """:func:`report` judged now, on the database's clock the rows are stamped with
    (never SCHEDCTL_NOW): what `heartbeat` shows and `metrics` exports."""
    return report(db, settings, db.server_now(), only=only)
