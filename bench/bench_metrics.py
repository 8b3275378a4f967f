"""`schedctl metrics` on a large database, beside the same queries by hand.

A database with --messages messages (default 1,000,000: 90 % sent over 30 days, the
rest scheduled, due, retrying, failed or skipped, in five types), a tenth as many
schedule runs over the last 100 hours (1,000 schedules), 10,000 heartbeats (a week of
`tick` every minute and `digest` every five), a twentieth as many users (50,000) with
a digest yesterday and one today, a year of distributions and today's quota counter,
bulk-inserted with set-based SQL (generate_series / a recursive CTE). Then, in one
fresh child process, alternating round by round after one warm-up of each:

- schedctl: `metrics.render_metrics(db, settings)`, what `schedctl metrics` and
  `/metrics` run: heartbeat judging, one query per family, the text format written
  by prometheus_client;
- raw SQL: the same queries written by hand with the driver (psycopg / sqlite3) in
  one transaction, the text joined with f-strings: the floor for this work.

Figures are the median of --repeat rounds (each part goes first in every other round);
the target is an answer in under 0.5 s.

    .venv/bin/python bench/bench_metrics.py [--messages 1000000] [--repeat 7]
        [--sqlite] [--postgres postgresql://127.0.0.1:5432/postgres | --postgres none]
        [--json-out FILE]

--json-out appends one JSON line per store (see benchlib.workload_row).

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
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from benchlib import rss_kb, status_kb, workload_row

# The data is laid out around the current minute: heartbeats are judged on the database
# server's clock whatever SCHEDCTL_NOW says, so a fixed date would make them all "from
# the future" (status unknown).
# The parent passes its minute to the child that measures (BENCH_METRICS_NOW).
NOW = datetime.fromisoformat(
    os.environ.get("BENCH_METRICS_NOW")
    or datetime.now(UTC).replace(second=0, microsecond=0).isoformat()
)
NOW_TEXT = NOW.strftime("%Y-%m-%d %H:%M:%S")
TARGET_S = 0.5
SCHEDULES = 1000
HEARTBEATS = 10_000
QUOTA = 1000
RAW_NOTE = (
    "the same queries by hand (psycopg / sqlite3) in 1 transaction, text by f-strings;"
    " target < 0.5 s"
)
BODY = "Here is the report you asked for. " * 6  # about 200 characters


# --------------------------------------------------------------------------- seeding


class Sql:
    """The few expressions whose spelling differs between the two dialects."""

    def __init__(self, dialect: str) -> None:
        self.dialect = dialect

    def series(self, n: int) -> str:
        """A row source of x = 0 .. n-1."""
        if self.dialect == "postgresql":
            return f"generate_series(0, {n - 1}) AS g(x)"
        return (
            f"(WITH RECURSIVE s(x) AS (SELECT 0 UNION ALL SELECT x + 1 FROM s WHERE x < {n - 1})"
            " SELECT x FROM s) AS g"
        )

    def at(self, seconds: str) -> str:
        """NOW plus ``seconds`` (an SQL expression), as schedctl stores an instant."""
        if self.dialect == "postgresql":
            return f"(TIMESTAMPTZ '{NOW_TEXT}+00' + ({seconds}) * INTERVAL '1 second')"
        return f"strftime('%Y-%m-%d %H:%M:%f000', '{NOW_TEXT}', ({seconds}) || ' seconds')"

    def date(self, days: str) -> str:
        """NOW's date plus ``days``."""
        if self.dialect == "postgresql":
            return f"(DATE '{NOW_TEXT[:10]}' + ({days}))"
        return f"date('{NOW_TEXT[:10]}', ({days}) || ' days')"


def seed_statements(dialect: str, count: int) -> list[str]:
    q = Sql(dialect)
    runs = count // 10
    users = max(10, count // 20)
    status = (
        "CASE WHEN x % 100 < 90 THEN 'sent' WHEN x % 100 < 95 THEN 'scheduled'"
        " WHEN x % 100 < 97 THEN 'failed' WHEN x % 100 = 97 THEN 'skipped'"
        " WHEN x % 100 = 98 THEN 'retrying' ELSE 'scheduled' END"
    )
    # Sent and settled over 30 days; 5 % scheduled ahead; 1 % due now; retries half due.
    send_at = q.at(
        "CASE WHEN x % 100 < 90 OR x % 100 IN (95, 96, 97) THEN -(x % 2592000)"
        " WHEN x % 100 < 95 THEN x % 604800 + 60 WHEN x % 100 = 98 THEN -3600"
        " ELSE -(x % 900) END"
    )
    retry_at = q.at("CASE WHEN x % 200 = 98 THEN -60 ELSE 300 END")
    next_attempt = f"CASE WHEN x % 100 = 98 THEN {retry_at} END"
    message_type = (
        "CASE x % 5 WHEN 0 THEN 'REPORT' WHEN 1 THEN 'DIGEST' WHEN 2 THEN 'INIT'"
        " WHEN 3 THEN 'REMINDER_1D' ELSE 'ALERT' END"
    )
    run_status = (
        "CASE WHEN x % 50 = 0 THEN 'failed' WHEN x % 20 = 1 THEN 'skipped' ELSE 'succeeded' END"
    )
    slot = q.at(f"-(x / {SCHEDULES}) * 3600")
    claimed = min(7200, NOW.hour * 3600 + NOW.minute * 60 + NOW.second)  # seconds before NOW
    return [
        "INSERT INTO schedules (account_id, name, kind, cadence, at_time, tz, recipients, params,"
        " active, catchup, created_at, updated_at)"
        f" SELECT 1, 'bench-' || x, 'sql', 'daily', '09:00', 'UTC', '[\"ops@example.org\"]',"
        f" '{{}}', TRUE, 'latest', {q.at('-864000')}, {q.at('-864000')}"
        f" FROM {q.series(SCHEDULES)}",
        "INSERT INTO schedule_runs (account_id, schedule_id, slot, manual, status, attempt,"
        " started_at, finished_at, created_at)"
        f" SELECT 1, 1 + x % {SCHEDULES}, {slot}, FALSE, {run_status}, 1, {slot},"
        f" {q.at(f'-(x / {SCHEDULES}) * 3600 + 60')}, {slot} FROM {q.series(runs)}",
        "INSERT INTO messages (account_id, type, priority, recipient, subject, body_text,"
        " subscription, send_at, status, attempts, next_attempt_at, idempotency_key,"
        " message_id, sent_at, created_at, updated_at)"
        f" SELECT 1, {message_type}, 'normal', 'user' || (x % 5000) || '@example.org',"
        f" 'Subject ' || x, '{BODY}', TRUE, {send_at}, {status},"
        " CASE WHEN x % 100 < 90 THEN 1 ELSE 0 END, " + next_attempt + ","
        " 'bench:' || x, '<bench.' || x || '@example.com>',"
        f" CASE WHEN x % 100 < 90 THEN {send_at} END, {send_at}, {send_at}"
        f" FROM {q.series(count)}",
        "INSERT INTO heartbeats (command, host, pid, version, started_at, finished_at, outcome,"
        " exit_code)"
        " SELECT CASE WHEN x % 5 = 0 THEN 'digest' ELSE 'tick' END, 'bench-host', 1, '0.1.0',"
        f" {q.at('-x * 60')}, {q.at('-x * 60 + 2')},"
        " CASE WHEN x % 100 = 7 THEN 'failed' ELSE 'success' END,"
        f" CASE WHEN x % 100 = 7 THEN 1 ELSE 0 END FROM {q.series(HEARTBEATS)}",
        "INSERT INTO users (account_id, email, tz, digest_enabled, digest_time, created_at,"
        f" updated_at) SELECT 1, 'user' || x || '@example.org', 'UTC', TRUE, '08:00',"
        f" {q.at('-864000')}, {q.at('-864000')} FROM {q.series(users)}",
        # Yesterday's digest and today's for every user (ids 1..users), claimed up to
        # two hours before NOW but on NOW's UTC day (a run just after midnight, too).
        "INSERT INTO digests (account_id, user_id, local_date, status, items, created_at,"
        " updated_at, expires_at)"
        f" SELECT 1, 1 + x % {users}, {q.date(f'-(x / {users})')},"
        " CASE WHEN x % 10 = 0 THEN 'skipped' ELSE 'completed' END, 3,"
        f" {q.at(f'-(x / {users}) * 86400 - {claimed}')},"
        f" {q.at(f'-(x / {users}) * 86400 - {claimed}')},"
        f" {q.at('2592000')} FROM {q.series(2 * users)}",
        "INSERT INTO distributions (business_date, status, attempts, created_at, updated_at,"
        f" finished_at) SELECT {q.date('-x')}, 'completed', 1, {q.at('-x * 86400 - 21600')},"
        f" {q.at('-x * 86400 - 21600')}, {q.at('-x * 86400 - 21000')} FROM {q.series(365)}",
        f"INSERT INTO send_counters (day, sent, reserved) VALUES ('{NOW_TEXT[:10]}', 800, 0)",
    ]


# --------------------------------------------------------------------------- the work


def raw_queries(dialect: str) -> list[tuple[str, str]]:
    """(what, SQL) of every query render_metrics runs, as a person would write them;
    named parameters :horizon, :now, :since (24 h ago), :midnight, :tomorrow, :day."""
    return [
        ("last_success", "SELECT command, max(finished_at) FROM heartbeats WHERE outcome ="
                         " 'success' AND finished_at <= :horizon GROUP BY command"),
        ("last_run", "SELECT h.command, h.outcome, h.started_at FROM heartbeats h JOIN (SELECT"
                     " max(id) AS id FROM heartbeats GROUP BY command) l ON h.id = l.id"),
        ("future", "SELECT command, count(*), max(started_at), max(finished_at), min(host),"
                   " max(host) FROM heartbeats WHERE started_at > :horizon OR finished_at >"
                   " :horizon GROUP BY command"),
        ("messages", "SELECT status, type, count(*) FROM messages GROUP BY status, type"
                     " ORDER BY status, type"),
        ("oldest_due", "SELECT (SELECT min(send_at) FROM messages WHERE status = 'scheduled'"
                       " AND send_at <= :now AND (next_attempt_at IS NULL OR next_attempt_at"
                       " <= :now)), (SELECT min(send_at) FROM messages WHERE status ="
                       " 'retrying' AND send_at <= :now AND (next_attempt_at IS NULL OR"
                       " next_attempt_at <= :now))"),
        ("runs", "SELECT status, count(*) FROM schedule_runs WHERE finished_at > :since"
                 " GROUP BY status"),
        ("quota", "SELECT sent FROM send_counters WHERE day = :day"),
        ("digests", "SELECT status, count(*) FROM digests WHERE created_at >= :midnight AND"
                    " created_at < :tomorrow GROUP BY status"),
        ("distribution", "SELECT max(finished_at) FROM distributions WHERE status ="
                         " 'completed'"),
    ]  # fmt: skip


def _params(dialect: str) -> dict[str, Any]:
    midnight = NOW.replace(hour=0, minute=0)
    values: dict[str, Any] = {
        "horizon": NOW + timedelta(minutes=1),
        "now": NOW,
        "since": NOW - timedelta(hours=24),
        "midnight": midnight,
        "tomorrow": midnight + timedelta(days=1),
        "day": NOW.date().isoformat(),
    }
    if dialect == "sqlite":
        return {
            k: v.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f") if isinstance(v, datetime)
            else v
            for k, v in values.items()
        }  # fmt: skip
    return values


def raw_text(results: dict[str, list[tuple[Any, ...]]]) -> str:
    """The families as text, by hand: the floor for writing them out."""
    lines = []
    for command, at in results["last_success"]:
        lines.append(f'schedctl_last_success_timestamp_seconds{{command="{command}"}} {at}')
    for status, kind, n in results["messages"]:
        lines.append(f'schedctl_messages{{status="{status}",type="{kind}"}} {n}')
    lines.append(f"schedctl_oldest_due_message_age_seconds {results['oldest_due'][0][0]}")
    for status, n in results["runs"]:
        lines.append(f'schedctl_runs_last_24h{{status="{status}"}} {n}')
    lines.append(f"schedctl_quota_used {results['quota'][0][0]}")
    for status, n in results["digests"]:
        lines.append(f'schedctl_digests_today{{status="{status}"}} {n}')
    lines.append(f"schedctl_distribution_last_completed_timestamp_seconds"
                 f" {results['distribution'][0][0]}")  # fmt: skip
    return "\n".join(lines) + "\n"


class Raw:
    """The baseline: one driver connection, the queries in one transaction."""

    def __init__(self, url: str) -> None:
        self.postgres = url.startswith("postgresql")
        self.params = _params("postgresql" if self.postgres else "sqlite")
        queries = raw_queries("postgresql" if self.postgres else "sqlite")
        if self.postgres:
            import psycopg

            self.conn: Any = psycopg.connect(url.replace("postgresql+psycopg://", "postgresql://"))
            self.queries = [(name, _pyformat(sql)) for name, sql in queries]
        else:
            import sqlite3

            self.conn = sqlite3.connect(url.removeprefix("sqlite:///"), isolation_level=None)
            self.queries = queries

    def run(self) -> str:
        results: dict[str, list[tuple[Any, ...]]] = {}
        if self.postgres:
            with self.conn.transaction():
                for name, sql in self.queries:
                    results[name] = self.conn.execute(sql, self.params).fetchall()
        else:
            self.conn.execute("BEGIN")
            for name, sql in self.queries:
                results[name] = self.conn.execute(sql, self.params).fetchall()
            self.conn.execute("COMMIT")
        return raw_text(results)


def _pyformat(sql: str) -> str:
    import re

    return re.sub(r":(\w+)", r"%(\1)s", sql)


def child(url: str, rounds: int) -> dict[str, Any]:
    """Alternate rounds of schedctl and the baseline in this (fresh) process."""
    from schedctl.config import Settings
    from schedctl.db.database import Database
    from schedctl.metrics import render_metrics

    settings = Settings(database_url=url, daily_quota=QUOTA)
    raw = Raw(url)
    with Database(url, environ={"SCHEDCTL_NOW": NOW.isoformat()}) as db:
        text = render_metrics(db, settings)  # warm-up: imports, connection, caches
        raw.run()
        check(text)
        before = rss_kb()
        core_s: list[float] = []
        raw_s: list[float] = []
        for n in range(rounds):
            # Each goes first in every other round: neither gets the warmer caches.
            for part in ("raw", "core") if n % 2 == 0 else ("core", "raw"):
                start = time.perf_counter()
                if part == "raw":
                    raw.run()
                else:
                    render_metrics(db, settings)
                (raw_s if part == "raw" else core_s).append(time.perf_counter() - start)
    raw.conn.close()
    return {
        "core": statistics.median(core_s),
        "core_max": max(core_s),
        "raw": statistics.median(raw_s),
        "before_kb": before,
        "peak_kb": status_kb("VmHWM"),
    }


def check(text: str) -> None:
    """The text holds what was seeded (so the timing is of real answers)."""
    from prometheus_client.parser import text_string_to_metric_families

    found = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }
    assert found[("schedctl_quota_used", ())] == 800, found
    assert found[("schedctl_quota_limit", ())] == QUOTA, found
    assert found[("schedctl_digests_today", (("status", "completed"),))] > 0, found
    assert found[("schedctl_oldest_due_message_age_seconds", ())] > 0, found
    assert found[("schedctl_heartbeat_status", (("command", "tick"),))] == 0, found
    assert sum(v for (n, _), v in found.items() if n == "schedctl_messages") > 0, found


# --------------------------------------------------------------------------- harness


class Postgres:
    label = "PostgreSQL"

    def __init__(self, admin_url: str) -> None:
        self.libpq = admin_url.replace("postgresql+psycopg://", "postgresql://")
        self.server = self.libpq.rsplit("/", 1)[0]
        self.name = f"schedctl_bench_metrics_{os.getpid()}"

    def _admin(self, sql: str) -> None:
        import psycopg

        with psycopg.connect(self.libpq, autocommit=True) as conn:
            conn.execute(sql)  # type: ignore[arg-type]

    def create(self, count: int) -> str:
        import psycopg

        from schedctl.db.database import Database
        from schedctl.db.migrations import upgrade

        self._admin(f'CREATE DATABASE "{self.name}"')
        url = f"{self.server.replace('postgresql://', 'postgresql+psycopg://')}/{self.name}"
        with Database(url, environ={}) as db:
            upgrade(db)
        with psycopg.connect(f"{self.server}/{self.name}") as conn:
            for sql in seed_statements("postgresql", count):
                conn.execute(sql)  # type: ignore[arg-type]
            conn.commit()
            conn.autocommit = True
            conn.execute("VACUUM ANALYZE")  # as autovacuum would have, long before
        return url

    def close(self) -> None:
        self._admin(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')


class Sqlite:
    label = "SQLite"

    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="schedctl-bench-metrics-"))

    def create(self, count: int) -> str:
        import sqlite3

        from schedctl.db.database import Database
        from schedctl.db.migrations import upgrade

        path = self.dir / "metrics.db"
        url = f"sqlite:///{path}"
        with Database(url, environ={}) as db:
            upgrade(db)
        conn = sqlite3.connect(path)
        with conn:
            for sql in seed_statements("sqlite", count):
                conn.execute(sql)
        conn.execute("ANALYZE")
        conn.close()
        return url

    def close(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)


def run_child(url: str, rounds: int) -> dict[str, Any]:
    result = subprocess.run(
        [sys.executable, __file__, "--child", "--url", url, "--repeat", str(rounds)],
        capture_output=True, text=True, check=False,
        env={**os.environ, "BENCH_METRICS_NOW": NOW.isoformat()},
    )  # fmt: skip
    if result.returncode != 0:
        raise SystemExit(f"metrics round failed:\n{result.stderr}")
    return dict(json.loads(result.stdout.splitlines()[-1]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--postgres", default="postgresql://127.0.0.1:5432/postgres",
                        help="maintenance database URL, or 'none'")  # fmt: skip
    parser.add_argument("--sqlite", action="store_true", help="also measure SQLite")
    parser.add_argument("--json-out", help="append machine-readable rows to this file")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.url, args.repeat)))
        return

    stores: list[Any] = []
    if args.postgres.lower() != "none":
        stores.append(Postgres(args.postgres))
    if args.sqlite:
        stores.append(Sqlite())
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"metrics: render_metrics vs the same queries by hand, {args.messages:,} messages,"
          f" {args.messages // 10:,} runs; median of {args.repeat} rounds;"
          f" load average {load}")  # fmt: skip
    try:
        for store in stores:
            started = time.monotonic()
            url = store.create(args.messages)
            seeded = time.monotonic() - started
            result = run_child(url, args.repeat)
            core, raw = result["core"], result["raw"]
            verdict = "met" if core < TARGET_S else "missed"
            print(f"\n  {store.label} (seeded in {seeded:.0f} s)")
            print(f"    raw SQL, by hand             {raw * 1000:8.1f} ms")
            print(f"    schedctl render_metrics      {core * 1000:8.1f} ms"
                  f"   (slowest round {result['core_max'] * 1000:.1f} ms;"
                  f" target < {TARGET_S * 1000:.0f} ms: {verdict})")  # fmt: skip
            print(f"    schedctl / raw               {raw / core:8.2f}x")
            workload_row(
                args.json_out,
                workload=f"metrics: render_metrics, {store.label}",
                size=args.messages,
                unit="messages",
                rate=args.messages / core,
                baseline_rate=args.messages / raw,
                peak_kb=result["peak_kb"],
                work_kb=result["peak_kb"] - result["before_kb"],
                note=RAW_NOTE,
            )
            store.close()
    finally:
        for store in stores:
            store.close()


if __name__ == "__main__":
    main()
