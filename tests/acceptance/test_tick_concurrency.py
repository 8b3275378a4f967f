"""Concurrent `schedctl tick` processes, and ones killed mid-batch (SPEC §4, §10).

Every due slot must get exactly one run and every run exactly one message per
recipient, however many ticks race for them and wherever one is killed.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections import Counter
from pathlib import Path

import pytest
import sqlalchemy as sa

from schedctl.cadence import parse_instant
from schedctl.config import Settings, report_queries
from schedctl.db.database import Database
from schedctl.db.schema import messages, schedule_runs, schedules
from schedctl.schedules import runs
from schedctl.schedules.model import ScheduleOptions
from schedctl.schedules.store import create_schedule
from support.cli import SCHEDCTL
from support.processes import Schedctl

SCHEDULES = 200
RECIPIENTS = ["a@example.com", "b@example.com"]
CREATED = "2026-06-01T08:00:00Z"
DUE = "2026-06-01T09:00:30Z"  # every schedule's 09:00 slot is due
SLOT = parse_instant("2026-06-01T09:00:00Z")
# Dispatch is off: the outbox rows are what is counted, not what a backend got.
CONFIG = '[reports.queries.ping]\nsql = "select 1 as one"\n\n[messages]\nenabled = false\n'


@pytest.fixture
def seeded(db_url: str, tmp_path: Path) -> dict[str, str]:
    """200 due schedules; returns the environment a tick process runs with."""
    config = tmp_path / "schedctl.toml"
    config.write_text(CONFIG)
    settings = Settings(
        database_url=db_url, reports_queries=report_queries({"ping": {"sql": "select 1"}})
    )
    with Database(db_url, environ={}) as db:
        for n in range(SCHEDULES):
            options = ScheduleOptions(
                name=f"report-{n:03d}", kind="sql", cadence="daily", at="09:00",
                to=RECIPIENTS, params=["query=ping"],
            )  # fmt: skip
            create_schedule(db, settings, 1, options, parse_instant(CREATED))
    env = {k: v for k, v in os.environ.items() if not k.startswith("SCHEDCTL_")}
    env.update(
        SCHEDCTL_DATABASE_URL=db_url,
        SCHEDCTL_CONFIG=str(config),
        SCHEDCTL_MAIL_BACKEND="memory",
        NO_COLOR="1",
    )
    return env


def start_ticks(env: dict[str, str], count: int, now: str) -> list[subprocess.Popen[str]]:
    """Start `count` tick processes at once (none waits for another)."""
    return [
        Schedctl(
            [str(SCHEDCTL), "tick", "--json"],
            env={**env, "SCHEDCTL_NOW": now},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(count)
    ]


def finish(processes: list[subprocess.Popen[str]]) -> list[dict[str, int]]:
    outputs = []
    for process in processes:
        out, err = process.communicate(timeout=120)
        assert process.returncode == 0, err
        outputs.append(json.loads(out))
    return outputs


def assert_exactly_once(db_url: str) -> None:
    with Database(db_url, environ={}) as db:

        def read(conn: sa.Connection) -> tuple[list[sa.Row], list[sa.Row], list[sa.Row]]:
            run_rows = conn.execute(
                sa.select(schedule_runs.c.schedule_id, schedule_runs.c.slot, schedule_runs.c.status)
            ).all()
            message_rows = conn.execute(
                sa.select(messages.c.schedule_run_id, messages.c.recipient, messages.c.type)
            ).all()
            next_runs = conn.execute(sa.select(schedules.c.next_run_at)).all()
            return run_rows, message_rows, next_runs

        run_rows, message_rows, next_runs = db.transaction(read)
    assert len(run_rows) == SCHEDULES
    assert len({r.schedule_id for r in run_rows}) == SCHEDULES
    assert {(r.slot, r.status) for r in run_rows} == {(SLOT, "succeeded")}
    assert len(message_rows) == SCHEDULES * len(RECIPIENTS)
    assert len({(m.schedule_run_id, m.recipient) for m in message_rows}) == len(message_rows)
    assert {m.type for m in message_rows} == {"REPORT"}
    assert {n.next_run_at for n in next_runs} == {parse_instant("2026-06-02T09:00:00Z")}


def test_concurrent_ticks_create_each_run_and_message_once(
    dialect: str, db_url: str, seeded: dict[str, str]
) -> None:
    processes = start_ticks(seeded, 6 if dialect == "postgresql" else 3, DUE)
    outputs = finish(processes)
    assert sum(o["due"] for o in outputs) == SCHEDULES
    assert sum(o["runs_created"] for o in outputs) == SCHEDULES
    assert sum(o["runs_succeeded"] for o in outputs) == SCHEDULES
    assert sum(o["messages_enqueued"] for o in outputs) == SCHEDULES * len(RECIPIENTS)
    assert all(o["runs_failed"] == 0 for o in outputs)
    assert_exactly_once(db_url)


# A report query slow enough (~0.1 s a run) that the killed ticks are caught with runs
# in flight: a CPU-bound count on both (pg_sleep, volatile, is refused in a report query).
SLOW_SQL = {
    "postgresql": "select count(*) as counted from generate_series(1, 1500000)",
    "sqlite": "with recursive n(i) as (select 1 union all select i + 1 from n where i < 300000)"
    " select count(*) as counted from n",
}
POLL_TIMEOUT = 30.0


def run_statuses(db: Database) -> Counter[str]:
    query = sa.select(schedule_runs.c.status, sa.func.count()).group_by(schedule_runs.c.status)
    rows = db.transaction(lambda conn: conn.execute(query).all(), read_only=True)
    return Counter({status: int(count) for status, count in rows})


def wait_for_runs_in_flight(
    db_url: str, processes: list[subprocess.Popen[str]], succeeded: int
) -> Counter[str]:
    """Poll until at least ``succeeded`` runs are done and some are running (leased)."""
    deadline = time.monotonic() + POLL_TIMEOUT
    with Database(db_url, environ={}) as db:
        while True:
            statuses = run_statuses(db)
            if statuses["succeeded"] >= succeeded and statuses["running"]:
                return statuses
            if all(p.poll() is not None for p in processes):
                pytest.fail(f"every tick ended before runs were caught in flight: {statuses}")
            if time.monotonic() > deadline:
                pytest.fail(f"no runs in flight after {POLL_TIMEOUT} s: {statuses}")
            time.sleep(0.02)  # a polling interval, not a synchronisation


def test_ticks_killed_with_runs_in_flight_then_rerun_lose_and_double_nothing(
    dialect: str, db_url: str, seeded: dict[str, str], tmp_path: Path
) -> None:
    slow = tmp_path / "slow.toml"
    slow.write_text(CONFIG.replace('"select 1 as one"', json.dumps(SLOW_SQL[dialect])))
    processes = start_ticks(
        {**seeded, "SCHEDCTL_CONFIG": str(slow)}, 6 if dialect == "postgresql" else 3, DUE
    )
    # Kill every tick (SIGKILL: no cleanup) once some runs are done and others are
    # leased: the runs these ticks were executing are orphaned mid-report.
    in_flight = wait_for_runs_in_flight(db_url, processes, succeeded=len(processes))
    for process in processes:
        process.send_signal(signal.SIGKILL)
    for process in processes:
        process.communicate(timeout=60)
    assert [p.returncode for p in processes] == [-signal.SIGKILL] * len(processes), in_flight

    with Database(db_url, environ={}) as db:
        after_kill = run_statuses(db)
        orphaned = set(
            db.transaction(
                lambda c: (
                    c.execute(
                        sa.select(schedule_runs.c.id).where(schedule_runs.c.status == "running")
                    )
                    .scalars()
                    .all()
                )
            )
        )
        enqueued = db.transaction(
            lambda c: c.execute(sa.select(sa.func.count()).select_from(messages)).scalar_one()
        )
    # The crash left work undone: leases held by dead processes, messages missing.
    assert orphaned, after_kill
    assert after_kill["succeeded"] < SCHEDULES, after_kill
    assert enqueued == after_kill["succeeded"] * len(RECIPIENTS) < SCHEDULES * len(RECIPIENTS)

    # Later ticks, past the orphaned leases' expiry, finish the work (with the quick
    # query: the report's speed is not what is tested here).
    after_leases = (parse_instant(DUE) + runs.RUN_LEASE + runs.RETRY_BACKOFF).isoformat()
    outputs = finish(start_ticks(seeded, 2, after_leases))
    assert sum(o["runs_created"] for o in outputs) == SCHEDULES - sum(after_kill.values())
    assert sum(o["runs_succeeded"] for o in outputs) == SCHEDULES - after_kill["succeeded"]
    assert_exactly_once(db_url)
    with Database(db_url, environ={}) as db:
        retried = db.transaction(
            lambda c: (
                c.execute(
                    sa.select(schedule_runs.c.attempt).where(schedule_runs.c.id.in_(orphaned))
                )
                .scalars()
                .all()
            )
        )
    assert retried == [2] * len(orphaned)  # each orphan ran once more, under a new lease
