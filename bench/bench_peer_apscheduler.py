"""The peer: APScheduler 4's SQLAlchemy data store claiming the same due schedules.

N schedules, all due at the same instant, on PostgreSQL, in two databases made for
this run: schedctl's (the raw psycopg claim loop of bench_tick.py, the same baseline
as the tick row) and APScheduler's (``SQLAlchemyDataStore`` over asyncpg, its tables
made by the store itself). APScheduler (``apscheduler==4.0.0a6``, a pre-release) is
a bench-only dependency: ``pip install -e '.[bench]'``.

What is timed is the work of APScheduler's own schedule-processing loop
(``AsyncScheduler._process_schedules``), driven directly, the way that loop drives
the store: acquire up to 100 due schedules (its batch size), compute each one's next
fire time from its trigger (coalesce "latest"), add one Job per fire time
(``add_job``, one transaction each, as the loop does), release the schedules with
their new next fire time; repeat until nothing is due. (The loop's lease-extension
task only sleeps at this size, and no scheduler/worker runs the jobs.) Each schedule
has an IntervalTrigger of one day whose first fire time is 30 s before the wall clock
(APScheduler reads the real clock; the tick row's schedules are 30 s late too). After
the run, the jobs table must hold exactly one job per schedule and nothing may be due,
or the script fails.

The raw loop and the APScheduler loop each run in a fresh child process, timed from
after connecting; the APScheduler child also gives its peak memory (VmHWM).

    .venv/bin/python bench/bench_peer_apscheduler.py [--schedules 2000] [--repeat 1]
        [--json-out FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from contextlib import AsyncExitStack
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg

from bench_tick import HOST, PORT, TickDatabase, admin, round_child
from benchlib import Samples, peak_kb, rss_kb, run_child, workload_row

BATCH = 100  # AsyncScheduler._process_schedules: acquire_schedules(..., 100)
LEASE = timedelta(seconds=30)  # AsyncScheduler.lease_duration's default
TASK_ID = "bench:noop"
NOTE = (
    "the same raw psycopg loop as tick's row; APScheduler 4.0.0a6 (asyncpg) driven as its"
    f" schedule loop drives it: acquire_schedules({BATCH}), trigger.next(), add_job per"
    " fire time, release_schedules"
)


def noop() -> None:
    """The task's function (never run: no worker runs the jobs)."""


def _store(url: str) -> Any:
    from apscheduler.datastores.sqlalchemy import SQLAlchemyDataStore

    return SQLAlchemyDataStore(url)


async def _started(stack: AsyncExitStack, url: str) -> Any:
    import logging

    from apscheduler.eventbrokers.local import LocalEventBroker

    logger = logging.getLogger("bench.apscheduler")
    broker = LocalEventBroker()
    await broker.start(stack, logger)
    store = _store(url)
    await store.start(stack, broker, logger)
    return store


async def seed(url: str, count: int, due: datetime) -> None:
    """N schedules through the store's own add_schedule, as AsyncScheduler adds them."""
    from apscheduler import ConflictPolicy, Schedule, Task
    from apscheduler.triggers.interval import IntervalTrigger

    async with AsyncExitStack() as stack:
        store = await _started(stack, url)
        await store.add_task(Task(id=TASK_ID, func=f"{__name__}:noop", job_executor="async"))
        for n in range(count):
            trigger = IntervalTrigger(days=1, start_time=due)
            schedule = Schedule(
                id=f"bench-{n:06d}", task_id=TASK_ID, trigger=trigger, job_executor="async"
            )
            schedule.next_fire_time = trigger.next()
            await store.add_schedule(schedule, ConflictPolicy.exception)


async def process_due(store: Any, identity: str) -> int:
    """AsyncScheduler._process_schedules's body, until nothing is due; jobs added."""
    from apscheduler import CoalescePolicy, Job, ScheduleResult

    added = 0
    while True:
        schedules = await store.acquire_schedules(identity, LEASE, BATCH)
        if not schedules:
            return added
        now = datetime.now(UTC)
        results = []
        for schedule in schedules:
            fire_times = [schedule.next_fire_time]
            next_fire_time = None
            while True:
                fire_time = schedule.trigger.next()
                if fire_time is None or fire_time > now:
                    next_fire_time = fire_time
                    break
                if schedule.coalesce is CoalescePolicy.all:
                    fire_times.append(fire_time)
                elif schedule.coalesce is CoalescePolicy.latest:
                    fire_times[0] = fire_time
            for fire_time in fire_times:
                start_deadline = (
                    None
                    if schedule.misfire_grace_time is None
                    else fire_time + schedule.misfire_grace_time
                )
                job = Job(
                    task_id=schedule.task_id,
                    args=schedule.args,
                    kwargs=schedule.kwargs,
                    schedule_id=schedule.id,
                    scheduled_fire_time=fire_time,
                    jitter=timedelta(),
                    start_deadline=start_deadline,
                    executor=schedule.job_executor,
                    result_expiration_time=schedule.job_result_expiration_time,
                    metadata=schedule.metadata.copy(),
                )
                await store.add_job(job)
                added += 1
            results.append(
                ScheduleResult(
                    schedule_id=schedule.id,
                    task_id=schedule.task_id,
                    trigger=schedule.trigger,
                    last_fire_time=fire_times[-1],
                    next_fire_time=next_fire_time,
                )
            )
        await store.release_schedules(identity, results)


async def _child_round(url: str) -> dict[str, Any]:
    async with AsyncExitStack() as stack:
        store = await _started(stack, url)
        await store.get_next_schedule_run_time()  # connected before the clock starts
        before = rss_kb()
        start = time.perf_counter()
        jobs = await process_due(store, f"bench-{os.getpid()}")
        elapsed = time.perf_counter() - start
    return {"seconds": elapsed, "before_kb": before, "peak_kb": peak_kb(), "jobs": jobs}


def check(dsn: str, count: int) -> None:
    """Exactly one job per schedule, and no schedule left due; fail loudly otherwise."""
    with psycopg.connect(dsn) as conn:
        jobs, schedules = conn.execute(
            "SELECT count(*), count(DISTINCT schedule_id) FROM jobs"
        ).fetchone() or (None, None)
        due = conn.execute(
            "SELECT count(*) FROM schedules WHERE next_fire_time <= now()"
        ).fetchone()
        total = conn.execute("SELECT count(*) FROM schedules").fetchone()
    if (jobs, schedules) != (count, count) or due != (0,) or total != (count,):
        raise SystemExit(
            f"APScheduler: expected {count} jobs for {count} schedules and none due, got"
            f" {jobs} jobs for {schedules} schedules, {due} due, {total} schedules"
        )


def peer_round(count: int, n: int) -> dict[str, Any]:
    """One round: a fresh database, N schedules added, processed in a fresh child."""
    import anyio

    name = f"schedctl_bench_apscheduler_{os.getpid()}_{n}"
    with admin() as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')  # type: ignore[arg-type]
        conn.execute(f'CREATE DATABASE "{name}"')  # type: ignore[arg-type]
    try:
        url = f"postgresql+asyncpg://{HOST}:{PORT}/{name}"
        anyio.run(seed, url, count, datetime.now(UTC) - timedelta(seconds=30))
        result = run_child(__file__, "--child", url)
        check(f"host={HOST} port={PORT} dbname={name}", count)
    finally:
        with admin() as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')  # type: ignore[arg-type]
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--schedules", type=int, default=2000)
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--json-out", help="append machine-readable rows to this file")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        import anyio

        print(json.dumps(anyio.run(_child_round, args.child)))
        return
    try:
        import apscheduler  # noqa: F401
    except ImportError:
        sys.exit("bench_peer_apscheduler: APScheduler is not installed: pip install -e '.[bench]'")
    n, r = args.schedules, args.repeat
    database = TickDatabase(n, tag="peer_raw")
    raw_samples, peer_samples = Samples(), Samples()
    try:
        for round_ in range(r):  # alternating, so that a change in load hits both
            raw_samples.add(round_child("raw", database.dsn, database.dsn, n))
            peer_samples.add(peer_round(n, round_))
    finally:
        database.drop()
    raw, peer = raw_samples.summary(n), peer_samples.summary(n)
    print(f"{n} due schedules on PostgreSQL, median of {r} rounds")
    print(f"  raw SQL claim loop (psycopg, 1 process)       {raw['rate']:9.0f} schedules/s")
    print(f"  APScheduler 4 SQLAlchemyDataStore (asyncpg)   {peer['rate']:9.0f} schedules/s"
          f"   {peer['rate'] / raw['rate']:5.2f}x raw"
          f"   peak {peer['peak_kb'] / 1024:.1f} MiB")  # fmt: skip
    workload_row(
        args.json_out,
        workload="peer: APScheduler 4 SQLAlchemyDataStore, PostgreSQL",
        size=n,
        unit="schedules",
        rate=peer["rate"],
        baseline_rate=raw["rate"],
        peak_kb=peer["peak_kb"],
        work_kb=peer["work_kb"],
        note=NOTE,
    )


if __name__ == "__main__":
    main()
