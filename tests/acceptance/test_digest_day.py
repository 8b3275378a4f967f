"""A whole UTC day of `schedctl digest`, checked against the mail a real SMTP server got.

Issue 8, "Done when" (SPEC §5, §10): users across 20 IANA zones (UTC-12 to UTC+14,
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

import email
import email.policy
import json
import os
import random
import re
import signal
import subprocess
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from datetime import time as clock
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import sqlalchemy as sa

from clock_oracle import due_instant
from conftest import SCHEDCTL, _admin
from smtp_server import SmtpServer

SOAK = os.environ.get("SOAK_DIGEST") == "1"

# 20 zones, UTC-12 .. UTC+14; the ones marked * change their clocks on a test day.
ZONES = [
    "Etc/GMT+12",  # -12, no DST
    "Pacific/Pago_Pago",  # -11
    "Pacific/Honolulu",  # -10
    "America/Anchorage",
    "America/Los_Angeles",
    "America/New_York",
    "America/Santiago",
    "America/St_Johns",  # -03:30 / -02:30
    "America/Sao_Paulo",
    "Atlantic/Azores",  # * 2027-03-28: -01 → +00
    "Europe/London",  # * 2027-03-28: +00 → +01
    "Europe/Berlin",  # * 2027-03-28: +01 → +02
    "Asia/Tehran",  # +03:30
    "Asia/Kolkata",  # +05:30
    "Asia/Kathmandu",  # +05:45
    "Asia/Tokyo",
    "Australia/Sydney",  # * 2027-04-03 16:00 UTC: +11 → +10
    "Pacific/Chatham",  # * 2027-04-03 14:00 UTC: +13:45 → +12:45
    "Pacific/Kiritimati",  # +14
    "UTC",
]
# Each dialect walks a different day, so both a spring-forward gap and a fall-back
# overlap are walked (by one dialect each).
DAYS = {
    "postgresql": (date(2027, 3, 28), ["Europe/Berlin", "Europe/London", "Atlantic/Azores"]),
    "sqlite": (date(2027, 4, 3), ["Australia/Sydney", "Pacific/Chatham"]),
}
# Local digest times every zone gets at least once: midnight, inside the spring gap
# (02:00-02:59) or the repeated hour, the hour after, noon, the day's last step, a
# minute no 5-minute step ever reaches (so never due: a missed day is not sent late).
EDGE_TIMES = ["00:00", "02:00", "02:30", "02:45", "02:59", "03:00", "12:00", "23:55", "23:59"]
DIGEST_KEYS = [None, "billing", "security", "comments", "mentions"]
MAX_PER_USER = 40  # below max_items (50): every digest lists all it carries
WAVE_TWO_AT = timedelta(hours=12)  # more notifications arrive at noon UTC
TITLE = re.compile(r"\bN(\d{7})\b")
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


# --------------------------------------------------------------------------- world


@dataclass
class User:
    n: int
    email: str
    tz: str
    at: str
    enabled: bool
    id: int = 0


@dataclass
class Note:
    n: int
    user: int  # User.n
    priority: str
    key: str | None
    read: bool
    wave: int  # 1: before the day; 2: at noon
    id: int = 0

    @property
    def title(self) -> str:
        return f"N{self.n:07d}"

    @property
    def digestible(self) -> bool:
        return self.priority == "normal" and not self.read


@dataclass
class World:
    day: date
    users: list[User]
    notes: list[Note]
    start: datetime = field(init=False)

    def __post_init__(self) -> None:
        self.start = datetime.combine(self.day, clock(0), UTC)

    def wave(self, number: int) -> list[Note]:
        return [note for note in self.notes if note.wave == number]


def make_world(day: date, users: int, notifications: int, seed: int) -> World:
    rng = random.Random(seed)
    people = []
    for n in range(users):
        zone = ZONES[n % len(ZONES)]
        rank = n // len(ZONES)
        at = (
            EDGE_TIMES[rank]
            if rank < len(EDGE_TIMES)
            else f"{rng.randrange(24):02d}:{rng.randrange(60):02d}"
        )
        enabled = rank < len(EDGE_TIMES) or rng.random() >= 0.1
        people.append(User(n, f"u{n:05d}@example.org", zone, at, enabled))
    # ~15 % of the users have nothing to read at all.
    readers = [u.n for u in people if rng.random() >= 0.15]
    counts: Counter[int] = Counter()
    notes = []
    for n in range(notifications):
        while True:
            owner = rng.choice(readers)
            if counts[owner] < MAX_PER_USER:
                break
        counts[owner] += 1
        critical = rng.random() < 0.03
        notes.append(
            Note(
                n=n,
                user=owner,
                priority="critical" if critical else "normal",
                key=rng.choice(DIGEST_KEYS),
                read=rng.random() < 0.1,
                wave=2 if rng.random() < 0.2 else 1,
            )
        )
    return World(day, people, notes)


# --------------------------------------------------------------------------- model


@dataclass
class Expected:
    """(user n, local date) -> the notification numbers its digest holds (empty set:
    recorded as skipped), filled step by step."""

    days: dict[tuple[int, date], frozenset[int]] = field(default_factory=dict)
    pending: dict[int, set[int]] = field(default_factory=lambda: defaultdict(set))
    _due: dict[tuple[int, date], datetime] = field(default_factory=dict)

    def arrive(self, notes: list[Note]) -> None:
        for note in notes:
            if note.digestible:
                self.pending[note.user].add(note.n)

    def step(self, world: World, now: datetime) -> None:
        zones = {tz: ZoneInfo(tz) for tz in ZONES}
        today = {tz: now.astimezone(zone).date() for tz, zone in zones.items()}
        for user in world.users:
            if not user.enabled:
                continue
            zone, local = zones[user.tz], today[user.tz]
            if (user.n, local) in self.days:
                continue
            due = self._due.get((user.n, local))
            if due is None:
                due = self._due[(user.n, local)] = due_instant(zone, local, user.at)
            if now >= due:
                self.days[(user.n, local)] = frozenset(self.pending.pop(user.n, set()))

    @property
    def sent(self) -> dict[tuple[int, date], frozenset[int]]:
        return {key: notes for key, notes in self.days.items() if notes}


# --------------------------------------------------------------------------- database


def _instant(dialect: str, value: datetime | None) -> Any:
    """An instant as an application writes it: timestamptz on PostgreSQL, schedctl's
    fixed-width UTC text on SQLite (README, the notifications table)."""
    if value is None or dialect == "postgresql":
        return value
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")


def insert_users(engine: sa.Engine, world: World) -> None:
    dialect = engine.dialect.name
    with engine.begin() as conn:
        account = conn.execute(sa.text("SELECT id FROM accounts WHERE name = 'default'")).scalar()
        created = _instant(dialect, world.start - timedelta(days=30))
        conn.execute(
            sa.text(
                "INSERT INTO users (account_id, email, tz, digest_enabled, digest_time,"
                " created_at, updated_at) VALUES (:account, :email, :tz, :enabled, :at,"
                " :created, :created)"
            ),
            [
                {"account": account, "email": u.email, "tz": u.tz, "enabled": u.enabled,
                 "at": u.at, "created": created}
                for u in world.users
            ],
        )  # fmt: skip
        ids = {r[0]: r[1] for r in conn.execute(sa.text("SELECT email, id FROM users"))}
    for user in world.users:
        user.id = int(ids[user.email])


def insert_notes(engine: sa.Engine, world: World, notes: list[Note], created: datetime) -> None:
    dialect = engine.dialect.name
    by_n = {u.n: u for u in world.users}
    body = "Line one of the body,\nand & <line> two."
    with engine.begin() as conn:
        account = conn.execute(sa.text("SELECT id FROM accounts WHERE name = 'default'")).scalar()
        conn.execute(
            sa.text(
                "INSERT INTO notifications (account_id, user_id, priority, digest_key, title,"
                " body, created_at, read_at) VALUES (:account, :user, :priority, :key, :title,"
                " :body, :created, :read)"
            ),
            [
                {"account": account, "user": by_n[n.user].id, "priority": n.priority,
                 "key": n.key, "title": n.title, "body": body,
                 "created": _instant(dialect, created),
                 "read": _instant(dialect, created + timedelta(minutes=1)) if n.read else None}
                for n in notes
            ],
        )  # fmt: skip
        wanted = {n.title for n in notes}
        ids = {
            title: id_
            for title, id_ in conn.execute(sa.text("SELECT title, id FROM notifications"))
            if title in wanted
        }
    for note in notes:
        note.id = int(ids[note.title])


@dataclass
class Tables:
    digests: list[Any]
    notifications: list[Any]
    messages: list[Any]


def read_tables(engine: sa.Engine) -> Tables:
    with engine.connect() as conn:
        return Tables(
            digests=list(
                conn.execute(
                    sa.text(
                        "SELECT id, user_id, local_date, status, items, message_id FROM digests"
                    )
                )
            ),
            notifications=list(
                conn.execute(
                    sa.text(
                        "SELECT id, user_id, priority, read_at, digest_id, message_id,"
                        " consumed_at FROM notifications"
                    )
                )
            ),
            messages=list(
                conn.execute(
                    sa.text("SELECT id, type, recipient, status, message_id FROM messages")
                )
            ),
        )


def _date(value: Any) -> date:
    return value if isinstance(value, date) else date.fromisoformat(str(value))


def check_consistent(
    world: World, expected: Expected, tables: Tables, *, complete: bool, final: bool = False
) -> None:
    """What the tables say agrees with itself and with the model, at any moment; with
    `complete` (a step's runs have all ended), every day the model has decided by now
    is there, decided the same way; with `final`, every digest has been sent too."""
    user_n = {u.id: u.n for u in world.users}
    note_n = {n.id: n.n for n in world.notes}
    notes = {n.n: n for n in world.notes}
    messages = {m.id: m for m in tables.messages}
    carried: dict[int, set[int]] = defaultdict(set)
    for row in tables.notifications:
        note = notes[note_n[row.id]]
        if row.digest_id is not None:
            carried[row.digest_id].add(note.n)
            assert note.digestible, f"{note} was digested"
            assert row.message_id is None, f"{note} consumed twice: {row}"
        if row.digest_id is not None or row.message_id is not None:
            assert row.consumed_at is not None, row
        else:
            assert row.consumed_at is None, row

    seen: set[tuple[int, date]] = set()
    for row in tables.digests:
        key = (user_n[row.user_id], _date(row.local_date))
        assert key not in seen
        seen.add(key)
        assert key in expected.days, f"digest row the model does not expect: {row} {key}"
        want = expected.days[key]
        if want:
            assert row.status == "completed", (row, sorted(want))
            assert carried.get(row.id, set()) == want, (row, sorted(want))
            assert row.items == len(want), row
            message = messages[row.message_id]
            assert message.type == "DIGEST", message
            assert message.recipient == world.users[key[0]].email, message
        else:
            assert row.status == "skipped", row
            assert row.message_id is None, row
            assert not carried.get(row.id), row
    if complete:
        assert seen == set(expected.days), sorted(set(expected.days) - seen)[:10]
        digested = {n for want in expected.days.values() for n in want}
        for row in tables.notifications:
            note = notes[note_n[row.id]]
            if note.digestible:
                assert (row.digest_id is not None) == (note.n in digested), (row, note)
            else:
                assert row.digest_id is None, (row, note)
    if final:
        digest_messages = [m for m in tables.messages if m.type == "DIGEST"]
        assert len(digest_messages) == len(expected.sent)
        assert {m.status for m in digest_messages} <= {"sent"}, Counter(
            m.status for m in digest_messages
        )


def check_days(world: World, expected: Expected, engine: sa.Engine) -> None:
    """The cheap per-step check: the digests rows are the days the model decided."""
    user_n = {u.id: u.n for u in world.users}
    with engine.connect() as conn:
        rows = conn.execute(sa.text("SELECT user_id, local_date, status FROM digests")).all()
    got = {(user_n[r.user_id], _date(r.local_date)): r.status for r in rows}
    want = {key: "completed" if notes else "skipped" for key, notes in expected.days.items()}
    assert len(rows) == len(got)
    assert got == want, sorted(set(got.items()) ^ set(want.items()))[:10]


# --------------------------------------------------------------------------- mail


@dataclass(frozen=True)
class Mail:
    message_id: str
    recipient: str
    tokens: frozenset[int]  # the notification numbers its text lists
    html_tokens: frozenset[int]


def received(smtp: SmtpServer) -> list[Mail]:
    mails = []
    for envelope in list(smtp.accepted):
        msg = email.message_from_bytes(
            envelope.original_content or b"", policy=email.policy.default
        )
        text = msg.get_body(("plain",))
        html = msg.get_body(("html",))
        assert text is not None, msg["Subject"]
        tokens = frozenset(int(t) for t in TITLE.findall(text.get_content()))
        html_tokens = frozenset(
            int(t) for t in TITLE.findall(html.get_content() if html is not None else "")
        )
        [recipient] = envelope.rcpt_tos
        mails.append(Mail(str(msg["Message-ID"]).strip(), recipient, tokens, html_tokens))
    return mails


def check_mail(
    world: World, expected: Expected, tables: Tables, smtp: SmtpServer, *, interrupted: int
) -> dict[str, int]:
    """What the SMTP server received: exactly one digest per expected (user, local day)
    holding exactly its notifications, and one message per critical notification.

    A process killed (or cut off from the database) after the server accepted a
    message but before the outcome was recorded sends it again after its lease: the
    same Message-ID (dispatch.py's documented window). Such repeats are counted, and
    there may be at most one per interrupted process; everything else is exact.
    """
    mails = received(smtp)
    copies = Counter(m.message_id for m in mails)
    repeats = sum(c - 1 for c in copies.values())
    assert repeats <= interrupted, copies.most_common(5)
    unique: dict[str, Mail] = {}
    for mail in mails:
        first = unique.setdefault(mail.message_id, mail)
        assert first == mail, f"two different messages with one Message-ID: {first} {mail}"

    kinds = {m.message_id: m.type for m in tables.messages}
    digests = [m for m in unique.values() if kinds.get(m.message_id) == "DIGEST"]
    others = [m for m in unique.values() if kinds.get(m.message_id) != "DIGEST"]

    by_user = {u.email: u for u in world.users}
    got: dict[tuple[int, frozenset[int]], int] = Counter()
    for mail in digests:
        user = by_user[mail.recipient]
        assert mail.tokens == mail.html_tokens, mail
        got[(user.n, mail.tokens)] += 1
    want = Counter((user, notes) for (user, _), notes in expected.sent.items())
    missing = want - got
    extra = got - want
    summary = f"{len(digests)} digests received, {len(expected.sent)} expected"
    assert not missing, f"{summary}; missing {list(missing)[:3]}"
    assert not extra, f"{summary}; unexpected {list(extra)[:3]}"
    everywhere = Counter(n for mail in digests for n in mail.tokens)
    assert max(everywhere.values(), default=1) == 1, everywhere.most_common(3)

    # Critical notifications (unread) each came once, on their own, to their user.
    critical = {n.n: n for n in world.notes if n.priority == "critical" and not n.read}
    delivered: Counter[int] = Counter()
    for mail in others:
        for number in mail.tokens:
            note = critical.get(number)
            assert note is not None, f"non-critical N{number:07d} outside a digest: {mail}"
            assert world.users[note.user].email == mail.recipient, mail
            delivered[number] += 1
    assert set(delivered) == set(critical), sorted(set(critical) - set(delivered))[:10]
    assert set(delivered.values()) <= {1}
    return {
        "digests": len(digests),
        "critical": len(delivered),
        "repeats": repeats,
        "mails": len(mails),
    }


# --------------------------------------------------------------------------- processes


@dataclass
class Outcome:
    code: int
    counts: dict[str, int] | None
    stderr: str


class Runner:
    """Starts `schedctl` processes the way cron would, with the test's clock."""

    def __init__(self, env: dict[str, str]) -> None:
        self.env = env
        self.interrupted = 0
        self.outcomes: list[Outcome] = []

    def start(self, command: str, now: datetime, count: int) -> list[subprocess.Popen[str]]:
        env = {**self.env, "SCHEDCTL_NOW": now.isoformat()}
        return [
            subprocess.Popen(
                [str(SCHEDCTL), command, "--json"],
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for _ in range(count)
        ]

    def finish(self, processes: list[subprocess.Popen[str]]) -> list[Outcome]:
        outcomes = []
        for process in processes:
            out, err = process.communicate(timeout=600)
            counts = json.loads(out) if process.returncode == 0 else None
            outcomes.append(Outcome(process.returncode, counts, err))
        self.outcomes.extend(outcomes)
        return outcomes

    def run(self, command: str, now: datetime, count: int) -> list[Outcome]:
        outcomes = self.finish(self.start(command, now, count))
        for outcome in outcomes:
            assert outcome.code == 0, outcome.stderr
        return outcomes


def wait_until(
    condition: Callable[[], bool], processes: list[subprocess.Popen[str]], timeout: float = 120
) -> bool:
    """Poll `condition` until it holds (True) or every process has ended (False)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        if all(p.poll() is not None for p in processes):
            return condition()
        time.sleep(0.005)  # a polling interval, not a synchronisation
    pytest.fail("timed out waiting for the digest processes")


def count_rows(engine: sa.Engine, sql: str) -> Callable[[], int]:
    def count() -> int:
        with engine.connect() as conn:
            return int(conn.execute(sa.text(sql)).scalar_one())

    return count


# --------------------------------------------------------------------------- fixtures


@pytest.fixture
def smtp() -> Iterator[SmtpServer]:
    with SmtpServer() as server:
        yield server


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

    when: str  # "planning": digests rows appeared; "sending": mail arrived; "random"
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


def run_with_kill(
    engine: sa.Engine, runner: Runner, smtp: SmtpServer, now: datetime, processes: int, kill: Kill
) -> None:
    digests_before = count_rows(engine, "SELECT count(*) FROM digests")()
    mail_before = len(smtp.accepted)
    started = runner.start("digest", now, processes)
    if kill.when == "planning":
        count = count_rows(engine, "SELECT count(*) FROM digests")
        reached = wait_until(lambda: count() > digests_before, started)
    elif kill.when == "sending":
        reached = wait_until(lambda: len(smtp.accepted) > mail_before, started)
    else:
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
    world = make_world(DAYS["postgresql"][0], 800, 6000, seed=31)
    insert_users(engine, world)
    insert_notes(engine, world, world.wave(1), world.start + NOTE_CREATED)
    runner = Runner(environment(db_url, smtp, tmp_path, SCHEDCTL_DB_RETRY_SECONDS="2"))
    expected = Expected()
    expected.arrive(world.wave(1))
    now = world.start  # the busiest step: every user whose time has passed is due
    expected.step(world, now)
    due = len(expected.days)
    name = _database_name(db_url)

    started = runner.start("digest", now, 4)
    count = count_rows(engine, "SELECT count(*) FROM digests")
    reached = wait_until(lambda: count() >= due // 4, started)
    assert reached, f"the digest finished before it could be cut off ({count()} of {due})"
    with _admin() as admin:
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
        with _admin() as admin:
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
