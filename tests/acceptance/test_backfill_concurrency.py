"""`schedules backfill` processes racing each other and `tick` (SPEC §4, §12).

Two backfills of one range and two ticks that materialise part of it, started at once:
each slot gets one run, the processes' counts add up to the runs made (no run counted
twice or lost to a refused insert), and every run is executed once.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections import Counter
from pathlib import Path

import sqlalchemy as sa

from schedctl.db.database import Database
from schedctl.db.schema import messages, schedule_runs
from support.cli import SCHEDCTL, run_cli
from support.processes import Schedctl

CONFIG = (
    '[reports.queries.ping]\nsql = "select 1 as one"\n\n'
    "[messages]\nenabled = false\n"  # the outbox rows are counted, not what was sent
)
CREATED = "2026-06-01T00:00:00Z"
NOW = "2026-06-01T10:00:00Z"
# Every 5 minutes. Tick's catch-up (`all`) looks at the newest 100 slots since the
# schedule's first, 00:05; the backfill at all 121 from 00:00 (a backfill may reach back
# before the schedule was created) to 10:00.
SLOTS = 121
RECIPIENTS = ["a@example.com", "b@example.com"]


def test_concurrent_backfills_and_ticks_create_and_run_each_slot_once(
    db_url: str, tmp_path: Path
) -> None:
    config = tmp_path / "schedctl.toml"
    config.write_text(CONFIG)
    env = {k: v for k, v in os.environ.items() if not k.startswith("SCHEDCTL_")}
    env.update(
        SCHEDCTL_DATABASE_URL=db_url,
        SCHEDCTL_CONFIG=str(config),
        SCHEDCTL_MAIL_BACKEND="memory",
        NO_COLOR="1",
    )
    created = run_cli(
        "schedules", "create", "--name", "five-minutely", "--kind", "sql", "--param",
        "query=ping", "--to", RECIPIENTS[0], "--to", RECIPIENTS[1], "--cadence", "cron",
        "--cron", "*/5 * * * *", "--catchup", "all", "--json",
        db_url=db_url, env={**env, "SCHEDCTL_NOW": CREATED},
    )  # fmt: skip
    assert created.returncode == 0, created.stderr
    sid = created.json["id"]

    backfill = ["schedules", "backfill", sid, "--from", CREATED, "--to", NOW, "--json"]
    # Each tick executes one run (--limit 1): the race is over creating them.
    commands = [backfill, ["tick", "--limit", "1", "--json"]] * 2
    processes = [
        Schedctl(
            [str(SCHEDCTL), *args],
            env={**env, "SCHEDCTL_NOW": NOW},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for args in commands
    ]
    outputs = []
    for process in processes:
        out, err = process.communicate(timeout=120)
        assert process.returncode == 0, err
        outputs.append(json.loads(out))
    backfills, ticks = outputs[0::2], outputs[1::2]

    for done in backfills:
        assert done["slots"] == SLOTS
        assert done["runs_created"] + done["already_recorded"] == SLOTS
    made = sum(b["runs_created"] for b in backfills) + sum(
        t["runs_created"] + t["runs_skipped"] for t in ticks
    )
    assert made == SLOTS

    # A later tick runs the rest; every slot has run once, with one message a recipient.
    rest = run_cli("tick", "--json", db_url=db_url, env={**env, "SCHEDCTL_NOW": NOW})
    assert rest.returncode == 0, rest.stderr
    with Database(db_url, environ={}) as db:
        runs, sent = db.transaction(
            lambda conn: (
                conn.execute(
                    sa.select(schedule_runs.c.slot, schedule_runs.c.status, schedule_runs.c.attempt)
                ).all(),
                conn.execute(sa.select(messages.c.schedule_run_id, messages.c.recipient)).all(),
            )
        )
    assert len(runs) == len({r.slot for r in runs}) == SLOTS
    assert Counter((r.status, r.attempt) for r in runs) == {("succeeded", 1): SLOTS}
    assert len(sent) == len(set(sent)) == SLOTS * len(RECIPIENTS)
