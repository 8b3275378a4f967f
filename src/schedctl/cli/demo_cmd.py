"""`schedctl demo`: try schedctl on a throw-away SQLite database.

The demo creates schedules as if they had been made a month ago, so that `tick` finds
them overdue and each catch-up policy shows what it does; plans two events; adds
users in three zones with notifications; runs `tick` against the console mailer (each
mail is printed on stderr), then `digest` (one digest per user and local day); then
runs both again to show that nothing is sent twice.
"""

from __future__ import annotations

import dataclasses
import os
import sys
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from schedctl.cli.params import FileName, option
from schedctl.cli.runtime import command, current
from schedctl.errors import ValidationError, quoted

if TYPE_CHECKING:
    from schedctl.config import Settings
    from schedctl.db.database import Database

DEFAULT_ACCOUNT_ID = 1  # created by the first migration

DEMO_QUERIES = {
    "accounts": {
        "sql": "select name, created_at from accounts order by name",
        "title": "Accounts",
    },
    "schedules": {
        "sql": "select name, cadence, tz, next_run_at from schedules order by name",
        "title": "Schedules and their next run",
    },
}

# The demo's schedules, as ScheduleOptions fields.
DEMO_SCHEDULES: list[dict[str, Any]] = [
    dict(
        name="daily-accounts", kind="sql", cadence="daily", at="07:00", tz="Europe/Berlin",
        to=["ops@example.com", "finance@example.com"], params=["query=accounts"],
    ),
    dict(
        name="month-end-schedules", kind="sql", cadence="monthly", day="last", at="18:00",
        tz="America/New_York", to=["ceo@example.com"], params=["query=schedules"],
    ),
    dict(
        name="weekly-accounts-all-missed", kind="sql", cadence="weekly", weekday="mon",
        at="09:00", tz="Asia/Tokyo", to=["audit@example.com"], params=["query=accounts"],
        catchup="all",
    ),
    dict(
        name="quarter-hourly-no-catchup", kind="sql", cadence="cron", cron="*/15 * * * *",
        to=["noc@example.com"], params=["query=accounts"], catchup="none",
    ),
]  # fmt: skip


# Users in three zones; digest at local midnight, so each is due whenever the demo runs.
DEMO_USERS: list[tuple[str, str, list[tuple[str, str | None, str | None]]]] = [
    ("ana@example.com", "Europe/Berlin", [
        ("Invoice 1043 paid", "billing", None), ("Invoice 1044 overdue", "billing", None),
        ("New sign-in from Lisbon", "security", None), ("Weekly report is ready", None, None),
    ]),
    ("ben@example.com", "America/New_York", [
        ("Build 42 failed", "builds", None),
        ("Password changed", None, "critical"),  # not digested: sent alone by tick
    ]),
    ("chi@example.com", "Asia/Tokyo", []),  # nothing new: a skipped day, no mail
]  # fmt: skip


def _add_users(db: Database, now: datetime) -> None:
    from schedctl.notifications import add_notification
    from schedctl.users import add_user, parse_changes

    def work(conn: Any) -> None:
        for address, tz, notes in DEMO_USERS:
            changes = parse_changes(email=address, tz=tz, digest_at="00:00")
            add_user(conn, DEFAULT_ACCOUNT_ID, changes, now)
            for title, key, priority in notes:
                add_notification(
                    conn, DEFAULT_ACCOUNT_ID, address, now,
                    title=title, key=key, priority=priority or "normal",
                )  # fmt: skip

    db.transaction(work)


def _demo_settings(settings: Settings, url: str) -> Settings:
    import secrets

    from schedctl.config import report_queries

    return dataclasses.replace(
        settings,
        database_url=url,
        mail_backend="console",
        mail_from="schedctl-demo@example.com",
        unsubscribe_secret=secrets.token_urlsafe(24),  # throw-away, like the database
        unsubscribe_base_url="http://localhost:8080",
        reports_queries=report_queries(DEMO_QUERIES),
    )


def _tick(db: Database, settings: Settings, now: datetime) -> dict[str, Any]:
    from schedctl import heartbeat
    from schedctl.tick import run_tick

    started = db.server_now()
    counts = run_tick(db, settings, now)
    heartbeat.record_run(db, "tick", started, counts)
    return counts


def _digest(db: Database, settings: Settings, now: datetime) -> dict[str, Any]:
    from schedctl import heartbeat
    from schedctl.digest.plan import DigestOptions
    from schedctl.digest.run import run_digest

    started = db.server_now()
    counts = run_digest(db, settings, now, DigestOptions())
    heartbeat.record_run(db, "digest", started, counts)
    return counts


@option(
    "--path",
    metavar="PATH",
    type=FileName(),
    default="schedctl-demo.db",
    help="SQLite file to (re)create for the demo.",
)
def demo_command(path: str) -> None:
    """Create a demo SQLite database, run tick and digest (console mailer), show results."""
    from schedctl import heartbeat
    from schedctl.db.database import Database
    from schedctl.db.migrations import upgrade
    from schedctl.delivery.outbox import list_messages
    from schedctl.events import add_event
    from schedctl.schedules.model import ScheduleOptions
    from schedctl.schedules.store import create_schedule, list_schedules

    runtime = current()
    out = runtime.output
    db_file = Path(path)
    if db_file.is_dir():  # also `--path ''`, which is "."
        raise ValidationError(f"--path: {quoted(str(db_file))} is a directory, not a database file")
    for suffix in ("", "-wal", "-shm"):
        try:
            Path(f"{db_file}{suffix}").unlink(missing_ok=True)
        except OSError as exc:
            raise ValidationError(
                f"--path: cannot replace {quoted(str(db_file))}: {exc.strerror}"
            ) from None
    url = f"sqlite:///{db_file}"
    settings = _demo_settings(runtime.settings, url)

    with Database(url) as db:
        applied = upgrade(db)
        now = db.now()
    # Everything below was "created a month ago", so tick finds it overdue.
    month_ago = now - timedelta(days=32)
    with Database(url, environ={"SCHEDCTL_NOW": month_ago.isoformat()}) as past:
        for fields in DEMO_SCHEDULES:
            create_schedule(
                past, settings, DEFAULT_ACCOUNT_ID, ScheduleOptions(**fields), month_ago
            )

    with Database(url) as db:
        db.transaction(
            lambda conn: [
                add_event(
                    conn, settings, account_id=DEFAULT_ACCOUNT_ID, name="Product launch",
                    starts_at=now + timedelta(days=3), contact="events@example.com",
                    now=now, tz="Europe/Berlin",
                ),
                add_event(
                    conn, settings, account_id=DEFAULT_ACCOUNT_ID, name="Warehouse move",
                    starts_at=now + timedelta(days=5), contact="logistics@example.com",
                    now=now, load_in_time=now + timedelta(days=4, hours=20),
                ),
            ]
        )  # fmt: skip
        _add_users(db, now)
        first = _tick(db, settings, db.now())
        first_digest = _digest(db, settings, db.now())
        second = _tick(db, settings, db.now())
        second_digest = _digest(db, settings, db.now())
        schedules = list_schedules(db, DEFAULT_ACCOUNT_ID)
        sent = db.transaction(lambda conn: list_messages(conn, DEFAULT_ACCOUNT_ID), read_only=True)
        health = heartbeat.report(db, settings, db.server_now())

    data: dict[str, Any] = {
        "database": url,
        "migrations_applied": len(applied),
        "first_tick": first,
        "second_tick": second,
        "first_digest": first_digest,
        "second_digest": second_digest,
        "schedules": [s.summary() for s in schedules],
        "messages": [
            {"type": m.type, "recipient": m.recipient, "subject": m.subject, "status": m.status}
            for m in sent
        ],
        "heartbeat": {
            "status": heartbeat.overall(health),
            "commands": [h.as_dict() for h in health],
        },
    }
    if out.options.json:
        out.result(data)
        return
    if out.options.quiet:
        return
    print(
        f"\ncreated {db_file}: {len(applied)} migrations, {len(schedules)} schedules, 2 events,"
        f" {len(DEMO_USERS)} users"
    )
    print(
        "first tick:  {due} schedules due, {runs_created} runs, {runs_skipped} slots skipped,"
        " {messages_sent} mails sent (printed above on stderr)".format(**first)
    )
    print(
        "first digest: {users_due} users due, {digests_sent} digests sent"
        " ({notifications_digested} notifications), {skipped_empty} skipped (nothing new)".format(
            **first_digest
        )
    )
    print("second tick: {due} due, {runs_created} runs, {messages_sent} sent".format(**second))
    print(
        "second digest: {users_due} users due, {digests_sent} sent"
        " -- nothing is ever sent twice\n".format(**second_digest)
    )
    out.table(
        data,
        ["schedule", "cadence", "catch-up", "next run"],
        [(s.name, s.cadence.describe(), s.catchup, s.next_run_at) for s in schedules],
    )
    print()
    out.table(
        data,
        ["type", "recipient", "subject", "status"],
        [(m["type"], m["recipient"], m["subject"], m["status"]) for m in data["messages"]],
    )
    print()
    out.table(
        data,
        ["command", "status", "last success"],
        [(h.command, h.status, h.last_success_at or "never") for h in health],
        footer=f"\nlook around: {_program()} --database-url {url} schedules list",
    )


def _program() -> str:
    """How to run this schedctl again from here: by name when that is what the shell
    finds, else by its path (`make demo` runs `.venv/bin/schedctl`, not on PATH)."""
    import shutil

    script = sys.argv[0]
    if os.path.basename(script) != "schedctl":
        return "schedctl"  # (run another way: as a module, in-process)
    on_path = shutil.which("schedctl")
    if on_path and os.path.realpath(on_path) == os.path.realpath(script):
        return "schedctl"
    relative = os.path.relpath(script)
    return relative if not relative.startswith("..") else os.path.abspath(script)


def register(app: click.Group) -> None:
    command(app, "demo")(demo_command)
