"""One database with work for every cron command, for the fault suite (tests/faults/).

A ``FaultWorld`` holds, in one schedctl database (SQLite or PostgreSQL):

- hourly report schedules (`tick` materialises and runs their slots, REPORT mail);
- users across IANA zones with notifications, digest times and a few critical ones
  (`digest` sends each due day's digest; `tick` the critical ones), checked against
  the independent §5 model of support/digest_world.py;
- a `distribute` configuration whose source and destination tables live in SQLite
  files (SQLite world) or in the test's own PostgreSQL database (PostgreSQL world),
  checked against the §6 model of support/distribute.py;
- work for `reconcile`: messages and runs whose process died (expired leases), old
  heartbeats and email_log rows past retention.

Every command runs as cron runs it (a separate `schedctl` process, SCHEDCTL_NOW the
test's clock) and mails through a loopback SMTP server. ``check()`` counts, from the
tables and from what the SMTP server received, what was lost and what was done
twice; the scenario records the counts in the fault ledger, then asserts them.

Times: reconcile refuses a SCHEDCTL_NOW ahead of the database's clock, so the world
lives in the recent past: round ``k`` runs at ``start + k hours + 30 s`` (just after
each hourly slot), and everything ends before the real clock.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from schedctl.cadence import parse_instant
from schedctl.config import Settings, report_queries
from schedctl.db.database import Database
from schedctl.db.schema import email_log, heartbeats, schedules
from schedctl.schedules.model import ScheduleOptions
from schedctl.schedules.store import create_schedule
from support import digest_world as dw
from support import fault_ledger
from support.cli import SCHEDCTL
from support.delivery import bulk_insert
from support.distribute import Campaign, destination_toml, expected_rows, seed_table, table_rows
from support.processes import Schedctl
from support.reconcile import Seed
from support.smtp_server import SmtpServer

KILLPOINTS = Path(__file__).resolve().parents[1] / "faults" / "killpoints"
RECIPIENTS = ("ops-a@example.net", "ops-b@example.net")
# Past every lease a dead process can leave (messages and runs 10 min, a run's
# retry backoff 5 min, a distribution day 5 min): the time recovery runs at.
PAST_LEASES = timedelta(minutes=20)
CAMPAIGNS = [
    Campaign("SC00000001", date(2020, 1, 1), date(2035, 12, 31)),
    Campaign("SC00000002", date(2020, 1, 1), date(2035, 12, 31)),
]
OLD = timedelta(days=900)
# Every fault scenario dispatches over this many SMTP connections at once ([smtp]
# connections), each claiming BATCH messages at a time, so that even a small outbox
# is sent over all of them.
CONNECTIONS = 4
BATCH = 2
COMMANDS = ("tick", "digest", "distribute", "reconcile")  # past every default retention


def hour(value: datetime) -> datetime:
    return value.replace(minute=0, second=0, microsecond=0)


@dataclass(frozen=True)
class Size:
    schedules: int = 8
    users: int = 60
    notifications: int = 400
    ids: int = 150  # distinct IDs the distribute source returns
    abandoned: int = 12  # messages left leased by a dead process
    orphans: int = 3  # runs left running by a dead process
    old_heartbeats: int = 12
    old_attempts: int = 12
    batch: int = 20  # distribute's batch size
    message_batch: int = BATCH  # [messages] batch_size: a dispatch's claim


@dataclass
class Proc:
    command: str
    code: int
    stdout: str
    stderr: str

    @property
    def json(self) -> Any:
        return json.loads(self.stdout)


@dataclass
class Counts:
    """What check() counted: lost and duplicated items, by what they are."""

    losses: Counter[str] = field(default_factory=Counter)
    duplicates: Counter[str] = field(default_factory=Counter)
    resent_after_data: int = 0  # the documented window: accepted, killed before recording

    @property
    def lost(self) -> int:
        return sum(self.losses.values())

    @property
    def duplicated(self) -> int:
        return sum(self.duplicates.values())

    def record(self, scenario: str, dialect: str, invariant: str, iterations: int) -> None:
        """Put the counts in the fault ledger, then assert nothing was lost or doubled."""
        fault_ledger.record(
            scenario,
            dialect,
            invariant,
            iterations=iterations,
            losses=self.lost,
            duplicates=self.duplicated,
            note=self.note(),
        )
        assert self.lost == 0, self.losses
        assert self.duplicated == 0, self.duplicates

    def note(self) -> str:
        if not self.resent_after_data:
            return ""
        return (
            f"{self.resent_after_data} resent after DATA: cut off (killed, or the database"
            " lost) after the server accepted it and before the outcome was recorded;"
            " docs/delivery.md's documented exception"
        )


class FaultWorld:
    def __init__(
        self,
        dialect: str,
        db_url: str,
        smtp: SmtpServer,
        tmp_path: Path,
        *,
        size: Size = Size(),
        rounds_back: int = 4,
        seed: int = 11,
    ) -> None:
        self.dialect = dialect
        self.db_url = db_url
        self.smtp = smtp
        self.tmp = tmp_path
        self.size = size
        # Round k at start + k h + 30 s; the last round and recovery stay in the past.
        # The world's hours end before the current one and lie within one UTC day: an
        # interrupted distribute is resumed by a later run for its own date, so rounds
        # across a midnight would leave the first date's copy to no one.
        end = hour(datetime.now(UTC))
        if (end - timedelta(hours=rounds_back)).date() != end.date():
            end = end.replace(hour=0)  # the last hours of yesterday
        self.start = end - timedelta(hours=rounds_back)
        self.engine = sa.create_engine(db_url, poolclass=sa.pool.NullPool)
        self.digest_times: list[datetime] = []  # digest steps the model has taken
        self.tick_slots: set[datetime] = set()  # hourly slots a tick ran at
        self.business_dates: set[date] = set()  # dates a distribute ran for
        self.reconciled = False  # a reconcile ran to its end
        self.after_data: set[str] = set()  # Message-IDs cut off after DATA (see mark_after_data)
        self.extra_slots: set[tuple[int, datetime]] = set()  # orphaned runs' slots
        self.expected = dw.Expected()
        self.seed = seed
        self._build()

    # ------------------------------------------------------------------ building

    def round_time(self, k: int) -> datetime:
        return self.start + timedelta(hours=k, seconds=30)

    def _build(self) -> None:
        self.dist_url = self._distribute_tables()
        config = self.tmp / "schedctl.toml"
        config.write_text(self._config())
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("SCHEDCTL_")}
        self.env.update(self.smtp.env, NO_COLOR="1", SCHEDCTL_DATABASE_URL=self.db_url)
        self.env.update(SCHEDCTL_CONFIG=str(config), SCHEDCTL_RECONCILE_BATCH_SIZE="5")
        self.env.update(SCHEDCTL_DB_RETRY_SECONDS="5")
        self.env.pop("FAULT_KILL_AT", None)
        self._schedules()
        self._digest_world()
        self._reconcile_work()

    def _config(self) -> str:
        control = destination_toml("control", self.dist_url, "sc_control")
        target = destination_toml("target", self.dist_url, "sc_target")
        mirror = destination_toml("mirror", self.mirror_url, "sc_mirror")
        return f"""
[smtp]
connections = {CONNECTIONS}

[messages]
batch_size = {self.size.message_batch}

[digest]
max_items = 1000

[reports.queries.ping]
sql = "select 1 as one"

[distribute]
tz = "UTC"
batch_size = {self.size.batch}
notify = ["distribution@example.net"]
wait = "2s"  # a run finding the day held by a live (or dead) run exits 75 soon

[distribute.source]
database_url = "{self.dist_url}"
query = "select iin, tab1, tab2 from sc_source where count_day = 5"

[distribute.campaigns]
database_url = "{self.dist_url}"
query = "select theory_id, theory_start_date, theory_end_date from theories"
{control}{target}{mirror}
"""

    def _distribute_tables(self) -> str:
        """Source, campaigns and destinations: SQLite files, or the test's PostgreSQL
        database (tables of their own beside schedctl's)."""
        if self.dialect == "sqlite":
            url, self.mirror_url = (
                f"sqlite:///{self.tmp / 'dssb.db'}",
                f"sqlite:///{self.tmp / 'spss.db'}",
            )
        else:
            url = self.mirror_url = self.db_url
        self.dist_engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
        self.mirror_engine = sa.create_engine(self.mirror_url, poolclass=sa.pool.NullPool)
        self.ids = {f"{10**11 + 7919 * n}": (f"t{n % 7}", None) for n in range(self.size.ids)}
        with self.dist_engine.begin() as conn:
            conn.exec_driver_sql(
                "CREATE TABLE sc_source (iin VARCHAR(20), count_day INT, tab1 VARCHAR(20),"
                " tab2 VARCHAR(20))"
            )
            rows = [{"i": i, "a": a, "b": b} for i, (a, b) in self.ids.items()]
            statement = sa.text("INSERT INTO sc_source VALUES (:i, 5, :a, :b)")
            conn.execute(statement, rows + rows[:20])  # some IDs twice
            conn.exec_driver_sql(
                "CREATE TABLE theories (theory_id VARCHAR(20), theory_start_date DATE,"
                " theory_end_date DATE)"
            )
            conn.execute(
                sa.text("INSERT INTO theories VALUES (:i, :s, :e)"),
                [{"i": c.id, "s": c.start, "e": c.end} for c in CAMPAIGNS],
            )
        seed_table(self.dist_engine, "sc_control")
        seed_table(self.dist_engine, "sc_target")
        seed_table(self.mirror_engine, "sc_mirror")
        return url

    def _schedules(self) -> None:
        settings = Settings(
            database_url=self.db_url,
            reports_queries=report_queries({"ping": {"sql": "select 1"}}),
        )
        created = self.start - timedelta(minutes=1)
        with Database(self.db_url, environ={}) as db:
            for n in range(self.size.schedules):
                options = ScheduleOptions(
                    name=f"hourly-{n:03d}", kind="sql", cadence="cron", cron="0 * * * *",
                    tz="UTC", to=list(RECIPIENTS), params=["query=ping"],
                )  # fmt: skip
                create_schedule(db, settings, 1, options, created)

    def _digest_world(self) -> None:
        self.world = dw.make_world(
            self.start.date(), self.size.users, self.size.notifications, self.seed
        )
        for note in self.world.notes:
            note.wave = 1  # all of them are there before the first round
        dw.insert_users(self.engine, self.world)
        dw.insert_notes(self.engine, self.world, self.world.notes, self.start - timedelta(hours=6))
        self.expected.arrive(self.world.notes)

    def _reconcile_work(self) -> None:
        dead = {
            "lease_owner": "dead-host:1:gone",
            "lease_expires_at": self.start - timedelta(minutes=1),
        }
        at = self.start - timedelta(hours=2)
        bulk_insert(
            self.db_url, self.size.abandoned, send_at=at, created_at=at, updated_at=at, **dead
        )
        seed = Seed(self.db_url)
        with Database(self.db_url, environ={}) as db:
            ids = db.transaction(
                lambda c: list(
                    c.execute(sa.select(schedules.c.id).order_by(schedules.c.id)).scalars()
                )
            )
        for schedule_id in ids[: self.size.orphans]:
            slot = self.start - timedelta(hours=1)
            seed.run(schedule_id, slot=slot, status="running", attempt=1, started_at=at, **dead)
            self.extra_slots.add((schedule_id, slot))
        old = self.start - OLD
        self.old_heartbeats = [
            seed.heartbeat("legacy-job", old + timedelta(minutes=n))
            for n in range(self.size.old_heartbeats)
        ]
        seed.attempts(None, old, n=self.size.old_attempts)
        self.kept_attempt = Seed(self.db_url)._insert(
            email_log,
            [{"account_id": 1, "message_id": None, "provider": "smtp",
              "recipients": "k@example.com", "outcome": "sent",
              "attempted_at": self.start - timedelta(days=1)}],
        )[0]  # fmt: skip

    # ------------------------------------------------------------------ processes

    def popen(
        self, command: str, now: datetime, *args: str, kill_at: str | None = None
    ) -> subprocess.Popen[str]:
        env = {**self.env, "SCHEDCTL_NOW": now.isoformat()}
        if kill_at:
            env["FAULT_KILL_AT"] = kill_at
            env["PYTHONPATH"] = os.pathsep.join(
                filter(None, [str(KILLPOINTS), os.environ.get("PYTHONPATH")])
            )
        return Schedctl(
            [str(SCHEDCTL), command, "--json", *args],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    def wait(self, process: subprocess.Popen[str], command: str = "") -> Proc:
        out, err = process.communicate(timeout=300)
        return Proc(command or str(process.args[1]), process.returncode, out, err)  # type: ignore[index]

    def run(
        self,
        command: str,
        now: datetime,
        *args: str,
        kill_at: str | None = None,
        check: bool = True,
    ) -> Proc:
        """Run one command to its end; with ``check`` (and no kill point) it must exit 0.
        Killed, it must leave no process of its own behind (a dispatch's helper)."""
        done = self.wait(self.popen(command, now, *args, kill_at=kill_at), command)
        if kill_at is not None:
            assert not self.left_behind(), f"{kill_at}: processes outlived the killed command"
        if kill_at is None and check:
            assert done.code == 0, (command, done.code, done.stderr)
            self.ran(command, now)
        return done

    def left_behind(self, within: float = 5.0) -> list[int]:
        """Processes of a command started with a kill point that are still running
        ``within`` seconds after it ended: those whose environment names this world's
        configuration and a kill point (a process forked by it inherits both)."""
        marker = f"SCHEDCTL_CONFIG={self.env['SCHEDCTL_CONFIG']}".encode()
        deadline = time.monotonic() + within
        while True:
            found = []
            for entry in Path("/proc").iterdir():
                if not entry.name.isdigit():
                    continue
                try:
                    environ = (entry / "environ").read_bytes().split(b"\0")
                except OSError:  # gone meanwhile, or not ours to read
                    continue
                if marker in environ and any(v.startswith(b"FAULT_KILL_AT=") for v in environ):
                    found.append(int(entry.name))
            if not found or time.monotonic() > deadline:
                return found
            time.sleep(0.05)

    def ran(self, command: str, now: datetime) -> None:
        """A `command` at `now` ended: what the model expects from it."""
        if command == "tick":
            self.tick_slots.add(hour(now))
        elif command == "digest":
            self.digest_times.append(now)
            self.expected.step(self.world, now)
        elif command == "distribute":
            self.business_dates.add(now.date())
        elif command == "reconcile":
            self.reconciled = True

    def concurrently(self, commands: Sequence[str], now: datetime) -> list[Proc]:
        """Start every command at once; each must end 0."""
        started = [(c, self.popen(c, now)) for c in commands]
        done = [self.wait(p, c) for c, p in started]
        for proc in done:
            assert proc.code == 0, (proc.command, proc.code, proc.stderr)
        for command in dict.fromkeys(commands):
            self.ran(command, now)
        return done

    def recover(self, now: datetime, commands: Sequence[str] = COMMANDS) -> None:
        """What cron does next, past every dead lease: ``commands`` again (reconcile
        first), then ticks until the outbox has nothing left to send. (A tick takes
        over expired leases of runs and messages by itself; reconcile need not run.)"""
        for command in ("reconcile", "distribute", "digest"):
            if command in commands:
                self.run(command, now)
        for minute in range(30):
            proc = self.run("tick", now + timedelta(minutes=minute))
            pending = self._rows("SELECT id FROM messages WHERE status <> 'sent'")
            if proc.json["messages_sent"] == 0 or not pending:
                return
        raise AssertionError("the outbox was still sending after 30 ticks")

    # ------------------------------------------------------------------ checking

    def check(self) -> Counts:
        """Count every loss and duplicate, then assert the world's invariants."""
        counts = Counts()
        self._check_runs(counts)
        self._check_outbox(counts)
        self._check_digests(counts)
        self._check_distribution(counts)
        self._check_reconcile(counts)
        return counts

    def _rows(self, query: str) -> list[Any]:
        with self.engine.connect() as conn:
            return list(conn.execute(sa.text(query)))

    def _check_runs(self, counts: Counts) -> None:
        runs = self._rows("SELECT schedule_id, slot, status, attempt FROM schedule_runs")
        ids = [r.schedule_id for r in self._rows("SELECT id AS schedule_id FROM schedules")]
        want = {(s, slot) for s in ids for slot in self.tick_slots} | self.extra_slots
        got = Counter((r.schedule_id, _instant(r.slot)) for r in runs)
        counts.duplicates["slot run twice"] += sum(c - 1 for c in got.values())
        succeeded = {(r.schedule_id, _instant(r.slot)) for r in runs if r.status == "succeeded"}
        counts.losses["slot not run"] += len(want - succeeded)
        assert not set(got) - want, sorted(set(got) - want)[:5]
        assert {r.status for r in runs} <= {"succeeded"}, Counter(r.status for r in runs)
        report = self._rows(
            "SELECT schedule_run_id, recipient FROM messages WHERE type = 'REPORT'"
            " AND schedule_run_id IS NOT NULL"
        )
        per_run = Counter((m.schedule_run_id, m.recipient) for m in report)
        counts.duplicates["report message twice"] += sum(c - 1 for c in per_run.values())
        run_ids = self._rows("SELECT id FROM schedule_runs WHERE status = 'succeeded'")
        want_messages = {(r.id, to) for r in run_ids for to in RECIPIENTS}
        counts.losses["report message missing"] += len(want_messages - set(per_run))

    def _check_outbox(self, counts: Counts) -> None:
        """Every message of the outbox sent, and received by the SMTP server once
        (a repeat only in the documented after-DATA window)."""
        rows = self._rows("SELECT id, type, status, message_id FROM messages")
        received = self.smtp.id_counts()
        unsent = [r for r in rows if r.status != "sent"]
        counts.losses["message not sent"] += len(unsent)
        ours = {r.message_id for r in rows}
        counts.losses["message never received"] += sum(
            1 for r in rows if r.message_id not in received
        )
        counts.duplicates["unknown mail received"] += sum(1 for m in received if m not in ours)
        for message_id, copies in received.items():
            # Only a message cut off in the window may come once more, and only once.
            explained = min(copies - 1, int(message_id in self.after_data))
            counts.resent_after_data += explained
            counts.duplicates["message received twice"] += copies - 1 - explained
        assert not unsent, [(r.id, r.type, r.status) for r in unsent][:5]

    def mark_after_data(self) -> set[str]:
        """After a process was cut off (killed, or its database lost): the messages
        the SMTP server accepted whose outcome the outbox does not hold -- the
        documented after-DATA window; each may be sent once more. Returns them."""
        sent = {
            r.message_id
            for r in self._rows("SELECT message_id FROM messages WHERE status = 'sent'")
        }
        found = {m for m in self.smtp.message_ids if m not in sent}
        self.after_data |= found
        return found

    def _check_digests(self, counts: Counts) -> None:
        tables = dw.read_tables(self.engine)
        sent_keys = dict(self.expected.sent)
        user_n = {u.id: u.n for u in self.world.users}
        days = Counter((user_n[r.user_id], dw._date(r.local_date)) for r in tables.digests)
        counts.duplicates["digest day twice"] += sum(c - 1 for c in days.values())
        mails = dw.received(self.smtp)
        kinds = {m.message_id: m.type for m in tables.messages}
        by_email = {u.email: u.n for u in self.world.users}
        got = Counter(
            (by_email[m.recipient], m.tokens)
            for m in {m.message_id: m for m in mails}.values()
            if kinds.get(m.message_id) == "DIGEST"
        )
        want = Counter((user, notes) for (user, _), notes in sent_keys.items())
        counts.losses["digest missing"] += sum((want - got).values())
        counts.duplicates["digest unexpected or twice"] += sum((got - want).values())
        everywhere = Counter(n for (_, notes) in got.elements() for n in notes)
        counts.duplicates["notification in two digests"] += sum(c - 1 for c in everywhere.values())
        dw.check_consistent(self.world, self.expected, tables, complete=True, final=True)
        dw.check_mail(
            self.world, self.expected, tables, self.smtp, interrupted=len(self.after_data)
        )

    def _check_distribution(self, counts: Counts) -> None:
        want: dict[str, Counter[tuple[Any, ...]]] = {"control": Counter(), "target": Counter()}
        for day in self.business_dates:
            for name, rows in expected_rows(self.ids, day, CAMPAIGNS).items():
                want[name] += rows
        for name, engine, table in (
            ("control", self.dist_engine, "sc_control"),
            ("target", self.dist_engine, "sc_target"),
            ("target", self.mirror_engine, "sc_mirror"),
        ):
            got = Counter(_normal(r) for r in table_rows(engine, table).elements())
            counts.losses[f"{table} row missing"] += sum((want[name] - got).values())
            counts.duplicates[f"{table} row twice"] += sum((got - want[name]).values())
        statuses = self._rows("SELECT business_date, status FROM distributions")
        assert {s.status for s in statuses} <= {"completed"}, statuses
        assert len(statuses) == len(self.business_dates), statuses

    def _check_reconcile(self, counts: Counts) -> None:
        if not self.reconciled:
            return
        with Database(self.db_url, environ={}) as db:
            left = db.transaction(
                lambda c: list(
                    c.execute(
                        sa.select(heartbeats.c.id).where(heartbeats.c.id.in_(self.old_heartbeats))
                    ).scalars()
                )
            )
            attempts = db.transaction(
                lambda c: list(
                    c.execute(
                        sa.select(email_log.c.id).where(email_log.c.message_id.is_(None))
                    ).scalars()
                )
            )
        # The newest heartbeat of a command is kept whatever its age.
        counts.losses["newest heartbeat purged"] += self.old_heartbeats[-1] not in left
        counts.losses["recent email_log row purged"] += self.kept_attempt not in attempts
        assert left == [self.old_heartbeats[-1]], left
        assert attempts == [self.kept_attempt], attempts

    def summary(self) -> str:
        return (
            f"{len(self.tick_slots)} hourly slots x {self.size.schedules} schedules,"
            f" {len(self.expected.sent)} digests, {len(self.business_dates)} distribution"
            f" dates, {self.size.abandoned} abandoned messages, {len(self.smtp.accepted)} mails"
        )

    def close(self) -> None:
        for engine in (self.engine, self.dist_engine, self.mirror_engine):
            engine.dispose()


def _instant(value: Any) -> datetime:
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    return parse_instant(str(value).replace(" ", "T") + ("" if "+" in str(value) else "Z"))


def _normal(row: tuple[Any, ...]) -> tuple[Any, ...]:
    user, group, start, end, *extras = row
    return (user, group, _day(start), _day(end), *extras)


def _day(value: Any) -> date:
    if isinstance(value, datetime):
        return value.date()
    return value if isinstance(value, date) else date.fromisoformat(str(value)[:10])


def ledger_fields(counts: Counts) -> dict[str, Any]:
    return {"losses": counts.lost, "duplicates": counts.duplicated, "note": counts.note()}
