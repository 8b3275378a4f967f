"""Claim throughput of `tick` on PostgreSQL, beside a raw-SQL baseline.

N schedules are all due at once. Three figures, each the median of --repeat rounds
on the same database (reset between rounds):

- raw SQL: the materialise loop written directly with psycopg --
  the same claim (FOR UPDATE SKIP LOCKED, batches of 50), run insert (ON CONFLICT
  DO NOTHING RETURNING, executemany) and schedule update (executemany) statements,
  the next slot computed inline as slot + 1 day;
- schedctl core: `runs.materialise_due` (the same work, through
  SQLAlchemy, the cadence rules and the catch-up policy);
- schedctl tick: K concurrent `schedctl tick` processes, end to end: start-up,
  materialise, then execute every run (a one-row `sql` report, one message each);
  left out with --no-cli.

The raw loop and materialise_due each run in a fresh child process, alternating round
by round, timed from after connecting; the child gives materialise_due's peak memory
(VmHWM).
The ratios are what to read; absolute numbers depend on the machine.

    .venv/bin/python bench/bench_tick.py [--schedules 2000] [--processes 4] [--repeat 3]
        [--no-cli] [--json-out FILE]

--json-out appends one JSON line (see benchlib.workload_row) for `bench/run.py`.

Creates its own database on $PGHOST:$PGPORT (default 127.0.0.1:5432), drops it after.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg

from benchlib import Samples, peak_kb, rss_kb, run_child, workload_row
from schedctl.db.database import Database
from schedctl.db.migrations import upgrade
from schedctl.schedules import runs
from schedctl.zones import tzdata_version

SCHEDCTL = str(Path(sys.executable).with_name("schedctl"))
HOST = os.environ.get("PGHOST", "127.0.0.1")
PORT = int(os.environ.get("PGPORT", "5432"))
CREATED = datetime(2026, 6, 1, 8, 0, tzinfo=UTC)
SLOT = datetime(2026, 6, 1, 9, 0, tzinfo=UTC)
NOW = SLOT + timedelta(seconds=30)
BATCH = runs.MATERIALISE_BATCH
CONFIG = """
[reports.queries.one]
sql = "select 1 as one"

[messages]
enabled = false  # dispatch is another benchmark's business
"""


def admin() -> psycopg.Connection:
    return psycopg.connect(host=HOST, port=PORT, dbname="postgres", autocommit=True)


def seed(dsn: str, count: int) -> None:
    # next_run_at as this schedctl's zone data computed it: a tick's steady state (an
    # older release's would first be recomputed, once).
    with psycopg.connect(dsn) as conn, conn.cursor() as cur:
        cur.executemany(
            "INSERT INTO schedules (account_id, name, kind, cadence, at_time, tz, recipients,"
            " params, active, catchup, next_run_at, tzdata_version, created_at, updated_at)"
            " VALUES (1, %s, 'sql', 'daily', '09:00', 'UTC', '[\"ops@example.com\"]',"
            " '{\"query\": \"one\"}', true, 'latest', %s, %s, %s, %s)",
            [(f"bench-{n:05d}", SLOT, tzdata_version(), CREATED, CREATED) for n in range(count)],
        )


def reset(dsn: str) -> None:
    with psycopg.connect(dsn) as conn:
        conn.execute("TRUNCATE email_log, messages, schedule_runs CASCADE")
        conn.execute(
            "UPDATE schedules SET next_run_at = %s, tzdata_version = %s, last_run_at = NULL",
            (SLOT, tzdata_version()),
        )


def check(dsn: str, count: int, label: str) -> None:
    with psycopg.connect(dsn) as conn:
        made = conn.execute("SELECT count(DISTINCT schedule_id) FROM schedule_runs").fetchone()
        due = conn.execute("SELECT count(*) FROM schedules WHERE next_run_at <= %s", (NOW,))
        left = due.fetchone()
    if made != (count,) or left != (0,):
        raise SystemExit(f"{label}: expected {count} runs and none due, got {made} and {left}")


def raw_claim_loop(conn: psycopg.Connection) -> None:
    """The materialise loop with nothing but psycopg: claim, insert runs, advance."""
    while True:
        with conn.transaction(), conn.cursor() as cur:
            due = cur.execute(
                "SELECT id, account_id, next_run_at FROM schedules"
                " WHERE active = true AND next_run_at <= %s ORDER BY next_run_at, id"
                " LIMIT %s FOR UPDATE SKIP LOCKED",
                (NOW, BATCH),
            ).fetchall()
            if due:
                cur.executemany(
                    "INSERT INTO schedule_runs (account_id, schedule_id, slot, manual,"
                    " status, attempt, created_at) VALUES (%s, %s, %s, false, 'queued', 0, %s)"
                    " ON CONFLICT (schedule_id, slot) WHERE NOT manual DO NOTHING"
                    " RETURNING status",
                    [(account_id, schedule_id, slot, NOW) for schedule_id, account_id, slot in due],
                    returning=True,
                )
                cur.executemany(
                    "UPDATE schedules SET next_run_at = %s, last_run_at = %s WHERE id = %s",
                    [(slot + timedelta(days=1), slot, schedule_id) for schedule_id, _, slot in due],
                )
        if len(due) < BATCH:
            return


def child(kind: str, target: str) -> dict[str, Any]:
    """One measured round in this (fresh) process, timed from after connecting."""
    if kind == "raw":
        with psycopg.connect(target) as conn:
            conn.execute("SELECT 1")
            conn.commit()
            before = rss_kb()
            start = time.perf_counter()
            raw_claim_loop(conn)
            elapsed = time.perf_counter() - start
    else:
        with Database(target, environ={}) as db:
            db.now()
            before = rss_kb()
            start = time.perf_counter()
            runs.materialise_due(db, NOW)
            elapsed = time.perf_counter() - start
    return {"seconds": elapsed, "before_kb": before, "peak_kb": peak_kb()}


def round_child(kind: str, target: str, dsn: str, count: int) -> dict[str, Any]:
    """One round of `kind` in a fresh process on the reset database, checked."""
    reset(dsn)
    result = run_child(__file__, "--child", kind, target)
    check(dsn, count, kind)
    return result


class TickDatabase:
    """A fresh, migrated PostgreSQL database holding `count` due schedules."""

    def __init__(self, count: int, tag: str = "tick") -> None:
        self.name = f"schedctl_bench_{tag}_{os.getpid()}"
        self.dsn = f"host={HOST} port={PORT} dbname={self.name}"
        self.url = f"postgresql+psycopg://{HOST}:{PORT}/{self.name}"
        with admin() as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')  # type: ignore[arg-type]
            conn.execute(f'CREATE DATABASE "{self.name}"')  # type: ignore[arg-type]
        with Database(self.url, environ={}) as db:
            upgrade(db)
        seed(self.dsn, count)

    def drop(self) -> None:
        with admin() as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')  # type: ignore[arg-type]


def cli_ticks(url: str, processes: int, config: str) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SCHEDCTL_")}
    env.update(
        SCHEDCTL_DATABASE_URL=url,
        SCHEDCTL_CONFIG=config,
        SCHEDCTL_NOW=NOW.isoformat(),
        SCHEDCTL_MAIL_BACKEND="memory",
    )
    started = [
        subprocess.Popen(
            [SCHEDCTL, "--quiet", "tick"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        for _ in range(processes)
    ]
    for process in started:
        _, err = process.communicate()
        if process.returncode != 0:
            raise SystemExit(f"schedctl tick failed: {err.decode(errors='replace')}")


def measure(label: str, work: Callable[[], None], dsn: str, count: int, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        reset(dsn)
        start = time.perf_counter()
        work()
        times.append(time.perf_counter() - start)
        check(dsn, count, label)
    return count / statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--schedules", type=int, default=2000)
    parser.add_argument("--processes", type=int, default=4)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--no-cli", action="store_true", help="skip the end-to-end ticks")
    parser.add_argument("--json-out", help="append machine-readable rows to this file")
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(*args.child)))
        return
    n, k, r = args.schedules, args.processes, args.repeat
    database = TickDatabase(n)
    try:
        raw_samples, core_samples = Samples(), Samples()
        for _ in range(r):  # alternating, so that a change in the machine's load hits both
            raw_samples.add(round_child("raw", database.dsn, database.dsn, n))
            core_samples.add(round_child("core", database.url, database.dsn, n))
        raw, core = raw_samples.summary(n), core_samples.summary(n)
        tick = None
        if not args.no_cli:
            with tempfile.NamedTemporaryFile("w", suffix=".toml", delete=False) as config:
                config.write(CONFIG)
            try:
                tick = measure(
                    "tick", lambda: cli_ticks(database.url, k, config.name), database.dsn, n, r
                )
            finally:
                Path(config.name).unlink()
    finally:
        database.drop()
    print(f"{n} due schedules on PostgreSQL, median of {r} rounds")
    print(f"  raw SQL claim loop (psycopg, 1 process)       {raw['rate']:9.0f} schedules/s")
    print(f"  schedctl materialise_due (1 process)          {core['rate']:9.0f} schedules/s"
          f"   {core['rate'] / raw['rate']:5.2f}x raw"
          f"   peak {core['peak_kb'] / 1024:.1f} MiB")  # fmt: skip
    if tick is not None:
        print(f"  schedctl tick, {k} processes, end to end        {tick:9.0f} schedules/s"
              f"   {tick / raw['rate']:5.2f}x raw")  # fmt: skip
    workload_row(
        args.json_out,
        workload="tick: runs.materialise_due, PostgreSQL",
        size=n,
        unit="schedules",
        rate=core["rate"],
        baseline_rate=raw["rate"],
        peak_kb=core["peak_kb"],
        work_kb=core["work_kb"],
        note=RAW_NOTE,
    )


RAW_NOTE = (
    f"raw psycopg loop, a transaction per batch: SELECT due FOR UPDATE SKIP LOCKED LIMIT"
    f" {BATCH}; executemany INSERT runs ON CONFLICT DO NOTHING; executemany UPDATE"
    " next_run_at (= slot + 1 day)"
)


if __name__ == "__main__":
    main()
