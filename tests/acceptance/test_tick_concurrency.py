"""Concurrent `schedctl tick` processes, and ones killed mid-batch (SPEC §4, §10).

Every due slot must get exactly one run and every run exactly one message per
recipient, however many ticks race for them and wherever one is killed.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import time
from pathlib import Path

import pytest
import sqlalchemy as sa

from conftest import SCHEDCTL
from schedctl import runs
from schedctl.cadence import parse_instant
from schedctl.config import Settings
from schedctl.db.database import Database
from schedctl.db.schema import messages, schedule_runs, schedules
from schedctl.schedules import ScheduleOptions, create_schedule

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
        database_url=db_url, file_tables={"reports": {"queries": {"ping": {"sql": "select 1"}}}}
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
        subprocess.Popen(
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


def test_ticks_killed_mid_batch_then_rerun_lose_and_double_nothing(
    dialect: str, db_url: str, seeded: dict[str, str]
) -> None:
    seed = random.randrange(1 << 30)
    chaos = random.Random(seed)
    processes = start_ticks(seeded, 6 if dialect == "postgresql" else 3, DUE)
    started = time.monotonic()
    # Kill each at its own random moment: start-up takes most of a second, so these
    # land mostly inside the materialise and execute loops.
    deadlines = sorted(chaos.uniform(0.6, 2.0) for _ in processes)
    for process, deadline in zip(processes, deadlines, strict=True):
        time.sleep(max(0.0, deadline - (time.monotonic() - started)))
        process.send_signal(signal.SIGKILL)
    for process in processes:
        process.communicate(timeout=60)
    killed = sum(1 for p in processes if p.returncode == -signal.SIGKILL)
    assert killed, f"no tick was still running to be killed (seed {seed})"

    # A later tick, after the killed runs' leases expired, finishes the work.
    after_leases = (parse_instant(DUE) + runs.RUN_LEASE + runs.RETRY_BACKOFF).isoformat()
    finish(start_ticks(seeded, 2, after_leases))
    assert_exactly_once(db_url)
