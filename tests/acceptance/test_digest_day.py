"""A whole UTC day of `schedctl digest`, checked against the mail a real SMTP server got.

The digest's whole-day proof (SPEC §5, §10): users across 20 IANA zones (UTC-12 to UTC+14,
half-hour and 45-minute offsets, zones changing their clocks that very day) with
random digest times, some opted out, some with nothing to read, and notifications of
every kind (critical ones, read ones, several digest keys), inserted straight into
the tables as applications do. `schedctl digest` is driven through the day by
concurrent processes per step (SCHEDCTL_NOW), some of them SIGKILLed mid-run and the
step rerun, or cut off from PostgreSQL half-way (exit 75, then rerun).

The expected outcome is computed independently by a model of §5 and §3: at each step
every opted-in user whose digest time (a time in a DST gap means the first instant
after it; a repeated time its first occurrence) has passed on their current local
date, and who has no digest for that date yet, gets one holding every unread normal
notification not yet digested; with nothing to send, the day is recorded as skipped.
What the loopback SMTP server received (each message parsed; each notification's
unique title maps it back) and what the tables say must match the model exactly.

The default size fits `make test`: a few hundred users and seven steps chosen where the
day is interesting (the first step, when half the users are due at once; a 5-minute
walk across the DST change; just before and at a second wave of notifications at
noon; the last step, where local days end). The model decides whatever steps are
walked, so fewer steps check the same rules exactly. ``SOAK_DIGEST=1`` (``make
soak-digest``) runs the full size: 10,000 users, 100,000 notifications, every 5
minutes of the day, 4 processes per step, a SIGKILL every 37th step.
(``SOAK_DIGEST_USERS``, ``_NOTIFICATIONS`` and ``_SEED`` change it; the variables are
not SCHEDCTL_-prefixed because conftest.py clears those.)
"""

from __future__ import annotations

import os
import random
import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from datetime import time as clock
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
import sqlalchemy as sa

from support.clock_oracle import due_instant
from support.databases import connect_pg
from support.digest_world import (
    Expected,
    Runner,
    World,
    check_consistent,
    check_days,
    check_mail,
    count_rows,
    insert_notes,
    insert_users,
    make_world,
    read_tables,
    wait_until,
)
from support.fault_world import KILLPOINTS
from support.smtp_server import SmtpServer

SOAK = os.environ.get("SOAK_DIGEST") == "1"

# Each dialect walks a different day, so both a spring-forward gap and a fall-back
# overlap are walked (by one dialect each); ZONES (support/digest_world.py) marks the zones
# that change their clocks on these days.
DAYS = {
    "postgresql": (date(2027, 3, 28), ["Europe/Berlin", "Europe/London", "Atlantic/Azores"]),
    "sqlite": (date(2027, 4, 3), ["Australia/Sydney", "Pacific/Chatham"]),
}
WAVE_TWO_AT = timedelta(hours=12)  # more notifications arrive at noon UTC
NOTE_CREATED = timedelta(hours=-6)  # wave one was written before the day began


@dataclass(frozen=True)
class Scale:
    users: int
    notifications: int
    processes: int  # per busy step: the first one, and the one the noon wave meets
    quiet_processes: int  # per other step
    steps: tuple[timedelta, ...]  # offsets into the UTC day, ascending
    check_every_step: bool


def _minutes(*hhmm: str) -> tuple[timedelta, ...]:
    out = []
    for text in hhmm:
        hours, minutes = text.split(":")
        out.append(timedelta(hours=int(hours), minutes=int(minutes)))
    return tuple(sorted(out))


# Steps for `make test`, on the day each dialect walks: the first step (every user
# whose digest time has already passed locally is due at once), a 5-minute walk
# across the DST change, just before and at the noon wave, and the last step.
CI_STEPS = {
    "postgresql": _minutes("00:00", "00:55", "01:00", "01:05", "11:55", "12:00", "23:55"),
    "sqlite": _minutes("00:00", "11:55", "12:00", "15:30", "16:00", "16:05", "23:55"),
}
FULL_DAY = tuple(timedelta(minutes=m) for m in range(0, 24 * 60, 5))


def scale(dialect: str) -> Scale:
    if SOAK:
        return Scale(
            users=int(os.environ.get("SOAK_DIGEST_USERS", "10000")),
            notifications=int(os.environ.get("SOAK_DIGEST_NOTIFICATIONS", "100000")),
            processes=4,
            quiet_processes=4,
            steps=FULL_DAY,
            check_every_step=False,
        )
    return Scale(
        users=300,
        notifications=3000,
        processes=4 if dialect == "postgresql" else 3,
        quiet_processes=2,
        steps=CI_STEPS[dialect],
        check_every_step=True,
    )


# --------------------------------------------------------------------------- fixtures


@pytest.fixture
def engine(db_url: str) -> Iterator[sa.Engine]:
    engine = sa.create_engine(db_url, poolclass=sa.pool.NullPool)
    yield engine
    engine.dispose()


def environment(db_url: str, smtp: SmtpServer, tmp_path: Path, **extra: str) -> dict[str, str]:
    config = tmp_path / "schedctl.toml"
    config.write_text("[digest]\nmax_items = 1000\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("SCHEDCTL_")}
    env.update(smtp.env, NO_COLOR="1", SCHEDCTL_DATABASE_URL=db_url)
    env["SCHEDCTL_CONFIG"] = str(config)
    env.update(extra)
    return env


def seed_for(dialect: str) -> int:
    return int(os.environ.get("SOAK_DIGEST_SEED", "8")) + (dialect == "sqlite")


def check_dst_day(dialect: str) -> None:
    """The walked day really is a DST day in the zones it is chosen for."""
    day, zones = DAYS[dialect]
    start = datetime.combine(day, clock(0), UTC)
    for name in zones:
        zone = ZoneInfo(name)
        assert (
            start.astimezone(zone).utcoffset()
            != (start + timedelta(days=1)).astimezone(zone).utcoffset()
        ), name


# --------------------------------------------------------------------------- the walk


@dataclass
class Kill:
    """At this step, SIGKILL one of the processes once `when` is reached."""

    when: str  # "planning": a page committed; "sending": mail arrived; "random"
    delay: float = 0.0


def walk(
    world: World,
    engine: sa.Engine,
    runner: Runner,
    smtp: SmtpServer,
    steps: tuple[timedelta, ...],
    processes: int,
    *,
    quiet_processes: int | None = None,
    kills: dict[int, Kill] | None = None,
    check_every_step: bool = True,
    expected: Expected | None = None,
) -> Expected:
    """Drive `digest` through `steps` (wave one is in already; wave two arrives at
    noon); returns the model's expectation."""
    kills = kills or {}
    expected = expected or Expected()
    waves = {1}
    for index, offset in enumerate(steps):
        now = world.start + offset
        count = processes if index == 0 or quiet_processes is None else quiet_processes
        if offset >= WAVE_TWO_AT and 2 not in waves:
            count = processes
            waves.add(2)
            arriving = world.wave(2)
            insert_notes(engine, world, arriving, world.start + WAVE_TWO_AT - timedelta(minutes=2))
            expected.arrive(arriving)
            runner.run("tick", now, 1)  # criticals go out with the next tick
        expected.step(world, now)
        kill = kills.get(index)
        if kill is None:
            runner.run("digest", now, count)
        else:
            run_with_kill(engine, runner, smtp, now, count, kill)
        if check_every_step or kill is not None:
            check_consistent(world, expected, read_tables(engine), complete=True)
        else:
            check_days(world, expected, engine)
        if SOAK and index % 24 == 23:
            decided, mails = len(expected.days), len(smtp.accepted)
            print(f"  {now:%H:%M} UTC: {decided} days, {mails} mails", flush=True)
    return expected


PLANNING_KILL = {
    "FAULT_KILL_AT": "schedctl.digest.run:DigestRun._count:after:1",
    "PYTHONPATH": os.pathsep.join(filter(None, [str(KILLPOINTS), os.environ.get("PYTHONPATH")])),
}


PAGE_PAUSE = {
    "FAULT_PAUSE_AT": "schedctl.digest.run:due_page:before:2:5",
    "PYTHONPATH": PLANNING_KILL["PYTHONPATH"],
}


def run_with_kill(
    engine: sa.Engine, runner: Runner, smtp: SmtpServer, now: datetime, processes: int, kill: Kill
) -> None:
    mail_before = len(smtp.accepted)
    if kill.when == "planning":
        # Each process dies once its first page is committed: a kill point, not a
        # moment, since a step with little due can commit its pages and end between
        # two polls (it did, once the digest claimed on two connections).
        started = runner.start("digest", now, processes, extra=PLANNING_KILL)
        reached = False  # (they kill themselves)
    else:
        started = runner.start("digest", now, processes)
    if kill.when == "sending":
        reached = wait_until(lambda: len(smtp.accepted) > mail_before, started)
    elif kill.when == "random":
        time.sleep(kill.delay)
        reached = True
    running = [p for p in started if p.poll() is None]
    if reached and running:
        random.Random(len(runner.outcomes)).choice(running).send_signal(signal.SIGKILL)
    outcomes = runner.finish(started)
    killed = sum(o.code == -signal.SIGKILL for o in outcomes)
    runner.interrupted += killed
    for outcome in outcomes:
        assert outcome.code in (0, -signal.SIGKILL), outcome.stderr
    runner.run("digest", now, processes)  # the step is rerun, as the next cron run would


def finish_day(world: World, runner: Runner) -> None:
    """The next day's first ticks, past every message lease a killed process held:
    whatever a dead process enqueued but never sent goes out now. A tick dispatches
    at most 1,000 messages, so the ticks go on, a minute apart as cron would run
    them, until one finds nothing left to send."""
    for minute in range(20, 20 + 200):
        [outcome] = runner.run("tick", world.start + timedelta(days=1, minutes=minute), 1)
        assert outcome.counts is not None
        if outcome.counts["messages_sent"] == 0:
            return
    pytest.fail("the outbox was still sending after 200 ticks")


def report(label: str, world: World, expected: Expected, mail: dict[str, int], runner: Runner,
           elapsed: float) -> None:  # fmt: skip
    skipped = sum(1 for notes in expected.days.values() if not notes)
    print(
        f"\n{label}: {len(world.users)} users, {len(world.notes)} notifications,"
        f" {len(expected.sent)} digests ({sum(len(n) for n in expected.sent.values())} items),"
        f" {skipped} skipped days, {mail['critical']} critical mails,"
        f" {mail['mails']} mails received ({mail['repeats']} repeated Message-IDs),"
        f" {len(runner.outcomes)} processes, {runner.interrupted} interrupted,"
        f" {elapsed:.0f} s"
    )


# --------------------------------------------------------------------------- tests


def test_a_whole_day_of_concurrent_digests_sends_each_one_exactly_once(
    dialect: str, db_url: str, engine: sa.Engine, smtp: SmtpServer, tmp_path: Path
) -> None:
    check_dst_day(dialect)
    size = scale(dialect)
    world = make_world(DAYS[dialect][0], size.users, size.notifications, seed_for(dialect))
    insert_users(engine, world)
    insert_notes(engine, world, world.wave(1), world.start + NOTE_CREATED)
    runner = Runner(environment(db_url, smtp, tmp_path))
    expected = Expected()
    expected.arrive(world.wave(1))
    started = time.monotonic()
    kills: dict[int, Kill] = {}
    if SOAK:  # the soak also kills a process now and then, in each way
        ways = ["planning", "sending", "random"]
        kills = {
            i: Kill(ways[i // 37 % 3], delay=random.Random(i).uniform(0.5, 3.0))
            for i in range(0, len(size.steps), 37)
        }

    walk(world, engine, runner, smtp, size.steps, size.processes, kills=kills,
         quiet_processes=size.quiet_processes, check_every_step=size.check_every_step,
         expected=expected)  # fmt: skip
    finish_day(world, runner)

    tables = read_tables(engine)
    check_consistent(world, expected, tables, complete=True, final=True)
    mail = check_mail(world, expected, tables, smtp, interrupted=runner.interrupted)
    if not runner.interrupted:
        counts = [o.counts for o in runner.outcomes if o.counts and "digests_sent" in o.counts]
        assert sum(c["digests_sent"] for c in counts) == len(expected.sent)
        assert sum(c["skipped_empty"] for c in counts) == len(expected.days) - len(expected.sent)
        assert sum(c["failed"] + c["deferred_quota"] for c in counts) == 0
    # The day had something of every kind in it.
    assert len(expected.sent) > len(world.users) // 4
    assert any(not notes for notes in expected.days.values())
    report(f"digest day on {dialect}", world, expected, mail, runner, time.monotonic() - started)


def test_digests_killed_mid_run_and_rerun_lose_and_double_nothing(
    dialect: str, db_url: str, engine: sa.Engine, smtp: SmtpServer, tmp_path: Path
) -> None:
    world = make_world(DAYS[dialect][0], 300, 3000, seed_for(dialect) + 100)
    insert_users(engine, world)
    insert_notes(engine, world, world.wave(1), world.start + NOTE_CREATED)
    runner = Runner(environment(db_url, smtp, tmp_path))
    expected = Expected()
    expected.arrive(world.wave(1))
    started = time.monotonic()
    steps = _minutes("00:00", "12:00")
    kills = {0: Kill("planning"), 1: Kill("sending")}

    walk(world, engine, runner, smtp, steps, 2, kills=kills, expected=expected)
    finish_day(world, runner)

    assert runner.interrupted >= 2, [o.code for o in runner.outcomes]
    tables = read_tables(engine)
    check_consistent(world, expected, tables, complete=True, final=True)
    mail = check_mail(world, expected, tables, smtp, interrupted=runner.interrupted)
    report(f"digests killed on {dialect}", world, expected, mail, runner,
           time.monotonic() - started)  # fmt: skip


def _database_name(db_url: str) -> str:
    return sa.engine.make_url(db_url).database or ""


@pytest.mark.parametrize("dialect", [pytest.param("postgresql", marks=pytest.mark.postgres)])
def test_database_unreachable_half_way_exits_75_and_a_rerun_completes(
    db_url: str, engine: sa.Engine, smtp: SmtpServer, tmp_path: Path
) -> None:
    world = make_world(DAYS["postgresql"][0], 1200, 9000, seed=31)
    insert_users(engine, world)
    insert_notes(engine, world, world.wave(1), world.start + NOTE_CREATED)
    runner = Runner(environment(db_url, smtp, tmp_path, SCHEDCTL_DB_RETRY_SECONDS="2"))
    expected = Expected()
    expected.arrive(world.wave(1))
    now = world.start  # the busiest step: every user whose time has passed is due
    expected.step(world, now)
    due = len(expected.days)
    name = _database_name(db_url)

    # Each process stops for 5 s at its second page query (holding the run's page
    # lock, so its other claimer stops after its page too): at most one page of each
    # process is committed when the server cuts them off, however fast they ran.
    started = runner.start("digest", now, 4, extra=PAGE_PAUSE)
    count = count_rows(engine, "SELECT count(*) FROM digests")
    reached = wait_until(lambda: count() >= 1, started)
    assert reached, f"the digest finished before it could be cut off ({count()} of {due})"
    with connect_pg() as admin:
        # The server refuses new connections to this database and drops the open ones:
        # what a failover or a network cut looks like to the processes.
        admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false')  # type: ignore[arg-type]
        admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE datname = %s AND pid <> pg_backend_pid()",
            (name,),
        )
    try:
        outcomes = runner.finish(started)
    finally:
        with connect_pg() as admin:
            admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')  # type: ignore[arg-type]
    codes = [o.code for o in outcomes]
    assert 75 in codes, [(o.code, o.stderr) for o in outcomes]
    assert set(codes) <= {0, 75}, [(o.code, o.stderr) for o in outcomes]
    for outcome in outcomes:
        if outcome.code == 75:
            # One line says why it stopped; a process cut off while sending may also
            # have printed the dispatcher's warnings before it.
            errors = [ln for ln in outcome.stderr.splitlines() if "WARNING" not in ln]
            assert len(errors) == 1, outcome.stderr
            assert errors[0].startswith("schedctl: error: database unavailable"), errors
    runner.interrupted += codes.count(75)

    halfway = read_tables(engine)
    check_consistent(world, expected, halfway, complete=False)
    assert 0 < len(halfway.digests) < due

    runner.run("digest", now, 2)  # the rerun
    walk(world, engine, runner, smtp, _minutes("23:55"), 2, expected=expected)
    finish_day(world, runner)

    tables = read_tables(engine)
    check_consistent(world, expected, tables, complete=True, final=True)
    mail = check_mail(world, expected, tables, smtp, interrupted=runner.interrupted)
    report("digest cut off from PostgreSQL", world, expected, mail, runner, 0)


def test_the_model_knows_the_dst_rules() -> None:
    """The oracle itself: §3's gap and overlap rules."""
    berlin, sydney = ZoneInfo("Europe/Berlin"), ZoneInfo("Australia/Sydney")
    gap = due_instant(berlin, date(2027, 3, 28), "02:30")
    assert gap == datetime(2027, 3, 28, 1, 0, tzinfo=UTC)  # 03:00 CEST, the gap's end
    assert due_instant(berlin, date(2027, 3, 28), "03:00") == gap
    assert due_instant(berlin, date(2027, 3, 28), "01:59") == datetime(2027, 3, 28, 0, 59,
                                                                       tzinfo=UTC)  # fmt: skip
    # 02:30 happens twice in Sydney on 4 April 2027: the first one (AEDT, +11) counts.
    assert due_instant(sydney, date(2027, 4, 4), "02:30") == datetime(2027, 4, 3, 15, 30,
                                                                      tzinfo=UTC)  # fmt: skip
