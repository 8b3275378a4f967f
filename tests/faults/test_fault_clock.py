"""Clock jumps: `tick` and `digest` driven by SCHEDCTL_NOW through a seeded walk that
goes forwards by minutes, backwards by hours, forwards by days (weeks, months) and
across the spring-forward and fall-back nights of Europe/Berlin and America/New_York.

Each step starts two `tick` and two `digest` processes at once, all at the step's
clock, against one database and a loopback SMTP server. Schedules: daily at a local
time inside the spring gap or the repeated hour, and hourly (cron ``MM * * * *``),
with each catch-up policy; users with digest times inside the gap and the repeated
hour; new notifications before every step.

The expected outcome comes from tests/support/clock_oracle.py, a model of §3 (local times,
DST), the catch-up policies and §5's digest days written independently of
schedctl's code, fed the same steps in the same order.
"""

from __future__ import annotations

import os
import random
import subprocess
from collections import Counter, defaultdict
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import sqlalchemy as sa

from schedctl.config import Settings, report_queries
from schedctl.db.database import Database
from schedctl.db.schema import (
    accounts,
    digests,
    messages,
    notifications,
    schedule_runs,
    schedules,
    users,
)
from schedctl.schedules.model import ScheduleOptions
from schedctl.schedules.store import create_schedule
from support import fault_ledger
from support.cli import SCHEDCTL
from support.clock_oracle import LocalCadence, ScheduleModel, due_instant
from support.fault_world import BATCH, CONNECTIONS
from support.processes import Schedctl
from support.smtp_server import SmtpServer

SEED = 11_2026
CONFIG = (
    '[reports.queries.ping]\nsql = "select 1 as one"\n\n'
    f"[smtp]\nconnections = {CONNECTIONS}\n\n[messages]\nbatch_size = {BATCH}\n"
)

# The UTC instants the clocks change.
NY_SPRING = datetime(2026, 3, 8, 7, 0, tzinfo=UTC)  # New York: 02:00 -> 03:00
BERLIN_SPRING = datetime(2026, 3, 29, 1, 0, tzinfo=UTC)  # Berlin: 02:00 -> 03:00
BERLIN_FALL = datetime(2026, 10, 25, 1, 0, tzinfo=UTC)  # Berlin: 03:00 -> 02:00
NY_FALL = datetime(2026, 11, 1, 6, 0, tzinfo=UTC)  # New York: 02:00 -> 01:00
# The nights walked, in order. In `make test` each dialect walks one spring-forward
# and one fall-back night (months apart: a jump of seven months between them);
# `make soak` walks all four on both.
NIGHTS = {
    "sqlite": [NY_SPRING, BERLIN_FALL],
    "postgresql": [BERLIN_SPRING, NY_FALL],
}
ALL_NIGHTS = [NY_SPRING, BERLIN_SPRING, BERLIN_FALL, NY_FALL]

# name -> (cadence, catch-up policy, max lateness)
SCHEDULES: dict[str, tuple[LocalCadence, str, timedelta | None]] = {
    "berlin daily 02:30": (LocalCadence("Europe/Berlin", "02:30"), "latest", None),
    "berlin hourly :30": (LocalCadence("Europe/Berlin", ":30"), "all", timedelta(hours=5)),
    "new york daily 01:30": (LocalCadence("America/New_York", "01:30"), "all", timedelta(days=3)),
    "new york hourly :00": (LocalCadence("America/New_York", ":00"), "none", None),
}
# (zone, digest time): inside a gap or repeated hour, around it, and elsewhere.
USERS = [
    ("Europe/Berlin", "02:30"),
    ("Europe/Berlin", "03:15"),
    ("Europe/Berlin", "01:45"),
    ("America/New_York", "01:30"),
    ("America/New_York", "02:30"),
    ("America/New_York", "00:10"),
    ("Asia/Tokyo", "10:00"),
]


def walk(rng: random.Random, nights: list[datetime], per_night: int) -> list[datetime]:
    """The steps: for each night, arrive a few hours before the change (a jump of
    days from the previous night), then ``per_night`` steps of 20-90 minutes forward
    (one of them instead 1-3 hours back), ending past the change."""
    steps: list[datetime] = []
    for night in nights:
        now = night - timedelta(hours=rng.randint(2, 4), minutes=rng.randrange(60))
        steps.append(now)
        back = rng.randrange(1, per_night)
        for n in range(per_night):
            if n == back:
                now -= timedelta(hours=rng.randint(1, 3), minutes=rng.randrange(60))
            else:
                now += timedelta(minutes=rng.randint(20, 90))
            steps.append(now)
        steps.append(max(now, night) + timedelta(hours=rng.randint(1, 2)))
    return steps


@dataclass
class DigestModel:
    """§5's digest days: (user index, local date) -> the notifications it holds."""

    days: dict[tuple[int, date], frozenset[int]]
    pending: dict[int, set[int]]

    def step(self, now: datetime) -> None:
        for n, (tz, at) in enumerate(USERS):
            zone = ZoneInfo(tz)
            local = now.astimezone(zone).date()
            if (n, local) not in self.days and now >= due_instant(zone, local, at):
                self.days[(n, local)] = frozenset(self.pending.pop(n, set()))


def start(args: list[str], db_url: str, env: dict[str, str]) -> subprocess.Popen[str]:
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("SCHEDCTL_")}
    full_env.update(SCHEDCTL_DATABASE_URL=db_url, NO_COLOR="1", **env)
    return Schedctl(
        [str(SCHEDCTL), *args],
        env=full_env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_clock_jumps_run_each_slot_and_digest_day_once(
    db_url: str, dialect: str, tmp_path: Path
) -> None:
    """Invariant: across forward, backward and day-long clock jumps and DST nights, with
    two ticks and two digests per step, the (schedule, slot) runs are exactly those the
    cadence and catch-up rules prescribe, each once; a backwards jump creates no run
    and no digest day the rules do not prescribe and re-sends nothing; each digest day
    the rules make due is there once; every mail reaches the server exactly once."""
    rng = random.Random(SEED)
    nights = ALL_NIGHTS if fault_ledger.SOAK else NIGHTS[dialect]
    steps = walk(rng, nights, fault_ledger.soak(2, 8))
    config = tmp_path / "schedctl.toml"
    config.write_text(CONFIG)
    created = steps[0] - timedelta(minutes=1)
    settings = Settings(
        database_url=db_url, reports_queries=report_queries({"ping": {"sql": "select 1"}})
    )
    models = {
        name: ScheduleModel(cadence, policy, lateness, created)
        for name, (cadence, policy, lateness) in SCHEDULES.items()
    }
    digest_model = DigestModel({}, defaultdict(set))
    with Database(db_url, environ={}) as db:
        for name, (cadence, policy, lateness) in SCHEDULES.items():
            timing: dict[str, Any] = (
                {"cadence": "cron", "cron": f"{int(cadence.at[1:])} * * * *"}
                if cadence.hourly
                else {"cadence": "daily", "at": cadence.at}
            )
            options = ScheduleOptions(
                name=name,
                kind="sql",
                params=["query=ping"],
                to=[f"{name.replace(' ', '-').replace(':', '')}@example.com"],
                tz=cadence.tz,
                catchup=policy,
                max_lateness=f"{int(lateness.total_seconds() // 3600)}h" if lateness else None,
                **timing,
            )
            create_schedule(db, settings, 1, options, created)

        def add_users(conn: sa.Connection) -> list[int]:
            account = conn.execute(sa.select(accounts.c.id).where(accounts.c.name == "default"))
            account_id = account.scalar_one()
            ids = []
            for n, (tz, at) in enumerate(USERS):
                row = conn.execute(
                    users.insert()
                    .values(
                        account_id=account_id,
                        email=f"u{n}@example.org",
                        tz=tz,
                        digest_time=at,
                        created_at=created - timedelta(days=1),
                        updated_at=created - timedelta(days=1),
                    )
                    .returning(users.c.id)
                )
                ids.append(int(row.scalar_one()))
            return ids

        user_ids = db.transaction(add_users)

        note_owner: dict[int, int] = {}  # notification id -> user index

        def notify(now: datetime) -> None:
            chosen = [n for n in range(len(USERS)) if rng.random() < 0.7]

            def work(conn: sa.Connection) -> list[tuple[int, int]]:
                made = []
                for n in chosen:
                    row = conn.execute(
                        notifications.insert()
                        .values(
                            account_id=1,
                            user_id=user_ids[n],
                            title=f"note for u{n} at {now:%Y-%m-%d %H:%M}",
                            created_at=now,
                        )
                        .returning(notifications.c.id)
                    )
                    made.append((int(row.scalar_one()), n))
                return made

            for note_id, n in db.transaction(work):
                note_owner[note_id] = n
                digest_model.pending[n].add(note_id)

        with SmtpServer() as smtp:
            env = {**smtp.env, "SCHEDCTL_CONFIG": str(config)}
            exits: Counter[int] = Counter()
            for now in steps:
                notify(now)
                step_env = {**env, "SCHEDCTL_NOW": now.isoformat()}
                processes = [
                    start([command, "--json"], db_url, step_env)
                    for command in ("tick", "digest", "tick", "digest")
                ]
                for process in processes:
                    _out, err = process.communicate(timeout=180)
                    assert process.returncode == 0, (now, process.args, err)
                    exits[process.returncode] += 1
                for model in models.values():
                    model.tick(now)
                digest_model.step(now)
            received = Counter(smtp.message_ids)

        def read(conn: sa.Connection) -> dict[str, list[Any]]:
            runs = sa.select(schedules.c.name, schedule_runs.c.slot, schedule_runs.c.status).join(
                schedules, schedules.c.id == schedule_runs.c.schedule_id
            )
            return {
                "runs": list(conn.execute(runs)),
                "digests": list(conn.execute(sa.select(digests))),
                "messages": list(conn.execute(sa.select(messages))),
                "notifications": list(conn.execute(sa.select(notifications))),
            }

        tables = db.transaction(read, read_only=True)

    # Runs: exactly the slots the rules prescribe, each once, decided the same way.
    got_runs = Counter((r.name, r.slot, r.status) for r in tables["runs"])
    want_runs = Counter(
        (name, slot, status)
        for name, model in models.items()
        for slot, status in model.runs.items()
    )
    run_duplicates = sum(c - 1 for c in Counter((r.name, r.slot) for r in tables["runs"]).values())
    run_losses = sum((want_runs - got_runs).values())
    assert got_runs == want_runs, (
        sorted(want_runs - got_runs)[:5],
        sorted(got_runs - want_runs)[:5],
    )

    # Digest days: exactly those the rules make due, each once, with their notifications.
    index = {user_id: n for n, user_id in enumerate(user_ids)}
    got_days = Counter((index[d.user_id], d.local_date) for d in tables["digests"])
    day_duplicates = sum(c - 1 for c in got_days.values())
    day_losses = sum(1 for key in digest_model.days if key not in got_days)
    assert set(got_days) == set(digest_model.days), sorted(set(got_days) ^ set(digest_model.days))
    carried: dict[int, set[int]] = defaultdict(set)
    for note in tables["notifications"]:
        if note.digest_id is not None:
            carried[note.digest_id].add(note.id)
    for row in tables["digests"]:
        want = digest_model.days[(index[row.user_id], row.local_date)]
        assert carried.get(row.id, set()) == want, row
        assert row.status == ("completed" if want else "skipped"), row

    # Mail: one REPORT per succeeded run, one DIGEST per completed day, each received once.
    kinds = Counter(m.type for m in tables["messages"])
    succeeded = sum(1 for status in want_runs if status[2] == "succeeded")
    completed = sum(1 for notes in digest_model.days.values() if notes)
    assert kinds == Counter({"REPORT": succeeded, "DIGEST": completed}) - Counter()
    assert {m.status for m in tables["messages"]} <= {"sent"}
    ids = {m.message_id for m in tables["messages"]}
    mail_losses = len(ids - set(received))
    mail_duplicates = sum(c - 1 for c in received.values())
    assert set(received) == ids
    assert mail_duplicates == 0, received.most_common(3)

    fault_ledger.record(
        "clock jumps: tick and digest, 2+2 processes/step",
        dialect,
        "runs = cadence + catch-up; one run per slot, one digest per local day; mail once",
        iterations=len(steps),
        losses=run_losses + day_losses + mail_losses,
        duplicates=run_duplicates + day_duplicates + mail_duplicates,
        note=f"seed {SEED}; {sum(want_runs.values())} runs, {len(digest_model.days)} digest days,"
        f" {len(received)} mails",
    )
    assert run_losses + day_losses + mail_losses == 0
