"""Digest planning throughput and peak memory, beside a set-based raw-SQL baseline.

N users in 20 zones, every one due (digest time 00:00), each with K unread normal
notifications. "Planning" is everything one `digest` run does before it sends: claim
each (user, local_date), gather the user's notifications, render one DIGEST message
(Jinja2 text + HTML), enqueue it, mark the notifications consumed and the day
completed. Three figures per size, each the median of --repeat rounds (default 1: a
round at 100,000 users takes minutes); a round measures the three one after the
other, each on a fresh copy of the seeded database and in a fresh child process:

- raw SQL: the same inserts and updates as five set-based statements in one
  transaction (psycopg / sqlite3): INSERT digests ... SELECT the due users; INSERT
  messages ... SELECT one row per digest, its body aggregated by the database; UPDATE
  notifications ... FROM digests; UPDATE digests to completed, the rest to skipped.
  No rendering, no Message-ID hashing, no pages: the floor for the bookkeeping;
- render floor: the same five statements in one transaction, plus what any digest
  that sends a rendered mail must also do: after the first statement, one streaming
  SELECT of the claimed users' notifications (title, body, key, creation time) and,
  per user, the items' creation times in the user's zone and schedctl's two digest
  templates (text and HTML, `compose.render_digest`) rendered from them. The floor
  for the whole of the digest's work;
- schedctl: `digest_run.run_digest` as the command calls it, with dispatch disabled
  (``[messages] enabled = false``), so what is timed is the planning alone.

Each is timed from just before its work until its connections are closed (SQLite
copies what its WAL holds back to the database at a commit past 4 MiB and at the
last close: a checkpoint, which is part of the work).

Peak memory is the child's peak RSS (VmHWM) minus its RSS just before the work
(after imports and connecting): schedctl's must not grow with the number of users,
since the digest claims a page of users per transaction. (The raw baseline's is the
driver's and SQLite's own caches.) Read the ratios; absolute numbers depend on the
machine.

    .venv/bin/python bench/bench_digest.py [--sizes 10000x10,100000x2] [--repeat 1]
        [--sqlite] [--postgres postgresql://127.0.0.1:5432/postgres | --postgres none]
        [--json-out FILE]

--json-out appends one JSON line per store and size (see benchlib.workload_row).

Creates its own databases on $PGHOST:$PGPORT (default 127.0.0.1:5432), drops them.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from benchlib import rss_kb, status_kb, workload_row

NOW = datetime(2027, 3, 10, 12, 0, tzinfo=UTC)  # no zone changes its clocks that day
CREATED = NOW - timedelta(days=1)
ZONES = [
    "Etc/GMT+12", "Pacific/Pago_Pago", "Pacific/Honolulu", "America/Anchorage",
    "America/Los_Angeles", "America/New_York", "America/Santiago", "America/St_Johns",
    "America/Sao_Paulo", "Atlantic/Azores", "Europe/London", "Europe/Berlin", "Asia/Tehran",
    "Asia/Kolkata", "Asia/Kathmandu", "Asia/Tokyo", "Australia/Sydney", "Pacific/Chatham",
    "Pacific/Kiritimati", "UTC",
]  # fmt: skip
RAW_NOTE = (
    "5 set-based SQL statements in 1 transaction (digests, messages with bodies"
    " aggregated by the database, mark consumed, complete); no rendering"
)
RENDER_NOTE = (
    "render floor: the same 5 statements in 1 transaction, plus 1 streaming SELECT of the"
    " users' notifications and the 2 digest templates (text, HTML) rendered per user"
)
KEYS = ["billing", "security", "comments", "mentions", None]
BODY = "Something happened that you may want to look at.\nSecond line of the body."


# --------------------------------------------------------------------------- seeding


def _text_instant(value: datetime) -> str:
    """An instant as schedctl stores it in SQLite (fixed-width UTC text)."""
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")


def user_rows(users: int) -> list[tuple[Any, ...]]:
    return [(1, f"user{n:06d}@example.org", ZONES[n % len(ZONES)], True, "00:00")
            for n in range(users)]  # fmt: skip


def note_rows(users: int, per_user: int) -> list[tuple[Any, ...]]:
    return [
        (1, user, "normal", KEYS[(user + k) % len(KEYS)], f"Notification {user}-{k}", BODY)
        for user in range(1, users + 1)
        for k in range(per_user)
    ]


def seed_postgres(dsn: str, users: int, per_user: int) -> None:
    import psycopg

    with psycopg.connect(dsn) as conn, conn.cursor() as cur:
        with cur.copy(
            "COPY users (account_id, email, tz, digest_enabled, digest_time, created_at,"
            " updated_at) FROM STDIN"
        ) as copy:
            for row in user_rows(users):
                copy.write_row((*row, CREATED, CREATED))
        with cur.copy(
            "COPY notifications (account_id, user_id, priority, digest_key, title, body,"
            " created_at) FROM STDIN"
        ) as copy:
            for row in note_rows(users, per_user):
                copy.write_row((*row, CREATED))
        cur.execute("ANALYZE")


def seed_sqlite(path: Path, users: int, per_user: int) -> None:
    import sqlite3

    created = _text_instant(CREATED)
    conn = sqlite3.connect(path)
    with conn:
        conn.executemany(
            "INSERT INTO users (account_id, email, tz, digest_enabled, digest_time, created_at,"
            " updated_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
            [(*row, created, created) for row in user_rows(users)],
        )
        conn.executemany(
            "INSERT INTO notifications (account_id, user_id, priority, digest_key, title, body,"
            " created_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
            [(*row, created) for row in note_rows(users, per_user)],
        )
    conn.execute("ANALYZE")
    conn.close()


# --------------------------------------------------------------------------- the work


def _zone_dates() -> str:
    """CASE users.tz WHEN ... THEN 'local date' END: each zone's date, from Python."""
    whens = " ".join(
        f"WHEN '{tz}' THEN '{NOW.astimezone(ZoneInfo(tz)).date().isoformat()}'" for tz in ZONES
    )
    return f"CASE u.tz {whens} END"


UNDIGESTED = (
    "n.priority = 'normal' AND n.digest_id IS NULL AND n.message_id IS NULL"
    " AND n.read_at IS NULL AND n.consumed_at IS NULL"
)


def raw_statements(dialect: str) -> list[str]:
    """The planning as set-based SQL (named parameters :now, :expires)."""
    day = _zone_dates()
    if dialect == "postgresql":
        day = f"CAST({day} AS DATE)"
        text = "string_agg(n.title || E'\\n' || coalesce(n.body, ''), E'\\n'"
        text += " ORDER BY n.digest_key, n.id)"
        html = "string_agg('<li>' || n.title || '</li>', '' ORDER BY n.digest_key, n.id)"
    else:
        text = "group_concat(n.title || char(10) || coalesce(n.body, ''), char(10))"
        html = "group_concat('<li>' || n.title || '</li>', '')"
    return [
        "INSERT INTO digests (account_id, user_id, local_date, status, items, created_at,"
        f" updated_at, expires_at) SELECT u.account_id, u.id, {day}, 'scheduled', 0, :now,"
        " :now, :expires FROM users u WHERE u.digest_enabled AND u.digest_time <= '23:59'"
        f" AND NOT EXISTS (SELECT 1 FROM digests d WHERE d.user_id = u.id AND d.local_date ="
        f" {day}) ON CONFLICT (user_id, local_date) DO NOTHING",
        "INSERT INTO messages (account_id, type, priority, recipient, subject, body_text,"
        " body_html, subscription, send_at, status, attempts, idempotency_key, message_id,"
        " created_at, updated_at) SELECT d.account_id, 'DIGEST', 'normal', u.email,"
        f" 'Your daily digest: ' || count(*) || ' new notifications', {text}, {html}, true,"
        " :now, 'scheduled', 0, 'digest:' || d.user_id || ':' || d.local_date,"
        " '<digest.' || d.id || '@example.com>', :now, :now"
        " FROM digests d JOIN users u ON u.id = d.user_id"
        f" JOIN notifications n ON n.user_id = d.user_id AND {UNDIGESTED}"
        " WHERE d.status = 'scheduled' GROUP BY d.id, d.account_id, u.email, d.user_id,"
        " d.local_date",
        "UPDATE notifications AS n SET digest_id = d.id, consumed_at = :now FROM digests d"
        f" WHERE d.status = 'scheduled' AND n.user_id = d.user_id AND {UNDIGESTED}",
        "UPDATE digests AS d SET status = 'completed', items = c.items, message_id = m.id,"
        " updated_at = :now FROM (SELECT digest_id, count(*) AS items FROM notifications"
        " WHERE digest_id IS NOT NULL GROUP BY digest_id) AS c, messages AS m"
        " WHERE d.status = 'scheduled' AND c.digest_id = d.id"
        " AND m.idempotency_key = 'digest:' || d.user_id || ':' || d.local_date",
        "UPDATE digests SET status = 'skipped', updated_at = :now WHERE status = 'scheduled'",
    ]


ITEMS = (
    "SELECT d.user_id, u.tz, d.local_date, n.digest_key, n.title, n.body, n.created_at"
    " FROM digests d JOIN users u ON u.id = d.user_id"
    f" JOIN notifications n ON n.user_id = d.user_id AND {UNDIGESTED}"
    " WHERE d.status = 'scheduled' ORDER BY d.user_id, n.id"
)


def render_all(rows: Any, instant: Any) -> int:
    """Render each user's digest from ``rows`` (ITEMS' rows, grouped by user); how
    many were rendered. ``instant``: a created_at value as an aware datetime."""
    from itertools import groupby
    from operator import itemgetter

    from schedctl.digest.compose import Item, render_digest

    zones: dict[str, ZoneInfo] = {}
    rendered = 0
    for _, group in groupby(rows, key=itemgetter(0)):
        user_rows = list(group)
        tz, day = user_rows[0][1], user_rows[0][2]
        zone = zones.get(tz) or zones.setdefault(tz, ZoneInfo(tz))
        items = [
            Item(title, body, f"{instant(created).astimezone(zone):%Y-%m-%d %H:%M}", key)
            for *_, key, title, body, created in user_rows
        ]
        render_digest(day if isinstance(day, date) else date.fromisoformat(day), items, len(items))
        rendered += 1
    return rendered


def _status_kb(field: str) -> int:
    return status_kb(field)


def _rss_kb() -> int:
    return rss_kb()


def child(kind: str, url: str) -> dict[str, Any]:
    """One measured round, in this (fresh) process."""
    params = {"now": NOW, "expires": NOW + timedelta(days=30)}
    rendered = None
    if kind in ("raw", "render"):
        # Templates loaded and compiled before measuring, as for schedctl below.
        from schedctl.digest.compose import render_digest

        render_digest(NOW.date(), [], 0)
    if kind in ("raw", "render") and url.startswith("postgresql"):
        import psycopg

        dsn = url.replace("postgresql+psycopg://", "postgresql://")
        with psycopg.connect(dsn) as conn:
            conn.execute("SELECT 1")
            before = _rss_kb()
            start = time.perf_counter()
            with conn.transaction():
                for number, sql in enumerate(raw_statements("postgresql")):
                    conn.execute(sql.replace(":now", "%(now)s").replace(":expires",
                                 "%(expires)s"), params)  # fmt: skip
                    if number == 0 and kind == "render":
                        with conn.cursor(name="items") as cur:
                            cur.itersize = 5000
                            cur.execute(ITEMS)
                            rendered = render_all(cur, lambda value: value)
        elapsed = time.perf_counter() - start  # connection closed
    elif kind in ("raw", "render"):
        import sqlite3

        conn = sqlite3.connect(url.removeprefix("sqlite:///"), isolation_level=None)
        conn.execute("SELECT 1")
        text = {"now": _text_instant(NOW), "expires": _text_instant(params["expires"])}

        def instant(value: str) -> datetime:
            return datetime.fromisoformat(value).replace(tzinfo=UTC)

        before = _rss_kb()
        start = time.perf_counter()
        conn.execute("BEGIN IMMEDIATE")
        for number, sql in enumerate(raw_statements("sqlite")):
            conn.execute(sql, text)
            if number == 0 and kind == "render":
                rendered = render_all(conn.execute(ITEMS), instant)
        conn.execute("COMMIT")
        conn.close()
        elapsed = time.perf_counter() - start
    else:
        from schedctl.config import Settings
        from schedctl.db.database import Database
        from schedctl.digest import compose as digest_compose
        from schedctl.digest import run as digest_run
        from schedctl.digest.plan import DigestOptions

        settings = Settings(
            database_url=url,
            mail_backend="memory",
            mail_from="bench@example.com",
            messages_enabled=False,  # planning only: nothing is sent
        )
        with Database(url, environ={}) as db:
            db.transaction(lambda conn: None, read_only=True)
            digest_compose.render_digest(NOW.date(), [], 0)  # templates loaded before measuring
            before = _rss_kb()
            start = time.perf_counter()
            counts = digest_run.run_digest(db, settings, NOW, DigestOptions())
            db.close()  # as the command does: SQLite's last close checkpoints the WAL
            elapsed = time.perf_counter() - start
        if counts.get("failed"):
            raise SystemExit(f"digest failed: {counts}")
    # Not ru_maxrss: Linux carries the parent's high-water mark over fork and exec, and
    # the parent holds the seed rows, so ru_maxrss grew with the size seeded.
    peak = _status_kb("VmHWM")
    return {"seconds": elapsed, "before_kb": before, "peak_kb": peak, "rendered": rendered}


# --------------------------------------------------------------------------- harness


def check(url: str, users: int, notes: int, label: str) -> None:
    """Every user got one completed digest holding all their notifications."""
    import sqlalchemy as sa

    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    with engine.connect() as conn:
        completed = conn.execute(
            sa.text(
                "SELECT count(*), coalesce(sum(items), 0) FROM digests"
                " WHERE status = 'completed' AND message_id IS NOT NULL"
            )
        ).one()
        consumed = conn.execute(
            sa.text("SELECT count(*) FROM notifications WHERE digest_id IS NOT NULL")
        ).scalar_one()
        mails = conn.execute(
            sa.text("SELECT count(*) FROM messages WHERE type = 'DIGEST'")
        ).scalar_one()
    engine.dispose()
    if tuple(completed) != (users, notes) or consumed != notes or mails != users:
        raise SystemExit(
            f"{label}: expected {users} digests of {notes} notifications, got {tuple(completed)},"
            f" {consumed} consumed, {mails} messages"
        )


def run_child(kind: str, url: str) -> dict[str, Any]:
    result = subprocess.run(
        [sys.executable, __file__, "--child", kind, "--url", url],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    if result.returncode != 0:
        raise SystemExit(f"{kind} round failed:\n{result.stderr}")
    return dict(json.loads(result.stdout.splitlines()[-1]))


class Postgres:
    label = "PostgreSQL"

    def __init__(self, admin_url: str) -> None:
        self.libpq = admin_url.replace("postgresql+psycopg://", "postgresql://")
        self.base = self.libpq.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://")
        self.prefix = f"schedctl_bench_digest_{os.getpid()}"
        self.names: list[str] = []
        self.counter = 0

    def _admin(self, sql: str) -> None:
        import psycopg

        with psycopg.connect(self.libpq, autocommit=True) as conn:
            conn.execute(sql)  # type: ignore[arg-type]

    def template(self, users: int, per_user: int) -> str:
        from schedctl.db.database import Database
        from schedctl.db.migrations import upgrade

        name = f"{self.prefix}_{users}_tpl"
        self._admin(f'CREATE DATABASE "{name}"')
        self.names.append(name)
        with Database(f"{self.base}/{name}", environ={}) as db:
            upgrade(db)
        seed_postgres(f"{self.libpq.rsplit('/', 1)[0]}/{name}", users, per_user)
        return name

    def copy(self, template: str) -> str:
        self.counter += 1
        name = f"{self.prefix}_{self.counter}"
        self._admin(f'CREATE DATABASE "{name}" TEMPLATE "{template}"')
        self.names.append(name)
        return f"{self.base}/{name}"

    def release(self, url: str) -> None:
        name = url.rsplit("/", 1)[1]
        self._admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        self.names.remove(name)

    def close(self) -> None:
        for name in list(self.names):
            self._admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


class Sqlite:
    label = "SQLite"

    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="schedctl-bench-digest-"))
        self.counter = 0

    def template(self, users: int, per_user: int) -> str:
        from schedctl.db.database import Database
        from schedctl.db.migrations import upgrade

        path = self.dir / f"template_{users}.db"
        with Database(f"sqlite:///{path}", environ={}) as db:
            upgrade(db)
        seed_sqlite(path, users, per_user)
        return str(path)

    def copy(self, template: str) -> str:
        self.counter += 1
        path = self.dir / f"round_{self.counter}.db"
        shutil.copyfile(template, path)
        return f"sqlite:///{path}"

    def release(self, url: str) -> None:
        Path(url.removeprefix("sqlite:///")).unlink()

    def close(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)


KINDS = ("raw", "render", "core")


def measure(store: Any, template: str, users: int, notes: int, repeat: int
            ) -> dict[str, tuple[float, int, int]]:  # fmt: skip
    """For each of KINDS: (median seconds, largest peak RSS growth, largest peak RSS;
    in KB) over `repeat` rounds, each round measuring the kinds one after the other."""
    seconds: dict[str, list[float]] = {kind: [] for kind in KINDS}
    growth: dict[str, list[int]] = {kind: [] for kind in KINDS}
    peaks: dict[str, list[int]] = {kind: [] for kind in KINDS}
    for _ in range(repeat):
        for kind in KINDS:
            url = store.copy(template)
            try:
                result = run_child(kind, url)
                check(url, users, notes, f"{store.label} {kind}")
            finally:
                store.release(url)
            if kind == "render" and result["rendered"] != users:
                raise SystemExit(f"render floor rendered {result['rendered']} of {users}")
            seconds[kind].append(result["seconds"])
            growth[kind].append(result["peak_kb"] - result["before_kb"])
            peaks[kind].append(result["peak_kb"])
    return {
        kind: (statistics.median(seconds[kind]), max(growth[kind]), max(peaks[kind]))
        for kind in KINDS
    }


def figures(label: str, users: int, notes: int, seconds: float, peak_kb: int) -> None:
    print(
        f"      {label:36s} {users / seconds:9.0f} users/s {notes / seconds:10.0f}"
        f" notifications/s   peak +{peak_kb / 1024:6.1f} MiB"
    )


def parse_sizes(text: str) -> list[tuple[int, int]]:
    sizes = []
    for part in text.split(","):
        users, _, per_user = part.partition("x")
        sizes.append((int(users), int(per_user or 10)))
    return sizes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10000x10,100000x2",
                        help="USERSxNOTIFICATIONS_PER_USER, comma-separated")  # fmt: skip
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--postgres", default="postgresql://127.0.0.1:5432/postgres",
                        help="maintenance database URL, or 'none'")  # fmt: skip
    parser.add_argument("--sqlite", action="store_true", help="also measure SQLite")
    parser.add_argument("--json-out", help="append machine-readable rows to this file")
    parser.add_argument("--child", choices=KINDS, help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.url)))
        return

    stores: list[Any] = []
    if args.postgres.lower() != "none":
        stores.append(Postgres(args.postgres))
    if args.sqlite:
        stores.append(Sqlite())
    print(f"digest planning (claim, gather, render, enqueue, mark consumed), every user due,"
          f" median of {args.repeat} rounds; peak = RSS growth during the work")  # fmt: skip
    try:
        for store in stores:
            print(f"\n  {store.label}")
            for users, per_user in parse_sizes(args.sizes):
                notes = users * per_user
                template = store.template(users, per_user)
                measured = measure(store, template, users, notes, args.repeat)
                raw_s, raw_kb, _ = measured["raw"]
                floor_s, floor_kb, _ = measured["render"]
                core_s, core_kb, core_peak = measured["core"]
                print(f"    {users} users x {per_user} notifications")
                figures("raw SQL, set-based (1 transaction)", users, notes, raw_s, raw_kb)
                figures("render floor (raw SQL + templates)", users, notes, floor_s, floor_kb)
                figures("schedctl digest planning", users, notes, core_s, core_kb)
                print(f"      schedctl / raw                       {raw_s / core_s:9.2f}x")
                print(f"      schedctl / render floor              {floor_s / core_s:9.2f}x")
                for suffix, baseline_s, note in (
                    ("", raw_s, RAW_NOTE),
                    (" (render floor)", floor_s, RENDER_NOTE),
                ):
                    workload_row(
                        args.json_out,
                        workload=f"digest: planning, {per_user} notifications/user,"
                        f" {store.label}{suffix}",
                        size=users,
                        unit="users",
                        rate=users / core_s,
                        baseline_rate=users / baseline_s,
                        peak_kb=core_peak,
                        work_kb=core_kb,
                        note=note,
                    )
    finally:
        for store in stores:
            store.close()


if __name__ == "__main__":
    main()
