"""The digest world shared by the digest and fault-suite tests: users across IANA
zones with digest times, notifications of every kind, an independent model of
SPEC §5 and §3 (which digest each user gets on which local day, holding which
notifications), the checks of the tables and of the mail a loopback SMTP server
received against it, and a runner of `schedctl` processes with the test's clock.
"""

from __future__ import annotations

import email
import email.policy
import json
import random
import re
import subprocess
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from datetime import time as clock
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import sqlalchemy as sa

from support.cli import SCHEDCTL
from support.clock_oracle import due_instant
from support.processes import Schedctl
from support.smtp_server import SmtpServer

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
# Local digest times every zone gets at least once: midnight, inside the spring gap
# (02:00-02:59) or the repeated hour, the hour after, noon, the day's last step, a
# minute no 5-minute step ever reaches (so never due: a missed day is not sent late).
EDGE_TIMES = ["00:00", "02:00", "02:30", "02:45", "02:59", "03:00", "12:00", "23:55", "23:59"]
DIGEST_KEYS = [None, "billing", "security", "comments", "mentions"]
MAX_PER_USER = 40  # below max_items (50): every digest lists all it carries
TITLE = re.compile(r"\bN(\d{7})\b")


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

    def start(
        self, command: str, now: datetime, count: int, extra: dict[str, str] | None = None
    ) -> list[subprocess.Popen[str]]:
        env = {**self.env, "SCHEDCTL_NOW": now.isoformat(), **(extra or {})}
        return [
            Schedctl(
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
