"""Shared by the alert tests (test_being_told.py, test_alerts_processes.py): schedules
whose runs fail for good, the [alerts] config for loopback channels, and what the
channels received."""

from __future__ import annotations

import email
import email.policy
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from schedctl.config import Settings, report_queries
from schedctl.db.database import Database
from schedctl.db.schema import alert_deliveries, alerts, schedule_runs, schedules
from schedctl.schedules.model import ScheduleOptions
from schedctl.schedules.store import create_schedule
from support.http_server import ScriptedHTTPServer
from support.smtp_server import SmtpServer

CREATED = datetime(2026, 6, 1, 8, 0, tzinfo=UTC)
DUE = "2026-06-01T09:00:05+00:00"  # each schedule's 09:00 slot is due
LATER = ["2026-06-01T09:07:00+00:00", "2026-06-01T09:20:00+00:00"]
SLACK_PATH = "/services/T0/B0/s3cr3t-slack-t0ken"
HOOK_PATH = "/hooks/s3cr3t-hook-t0ken"
SECRETS = ("s3cr3t-slack-t0ken", "s3cr3t-hook-t0ken")


def write_config(tmp_path: Path, slack: ScriptedHTTPServer | None, hook: ScriptedHTTPServer | None,
                 mail_to: str = "") -> Path:  # fmt: skip
    lines = ['[reports.queries.ping]\nsql = "select 1 as one"\n', "[alerts]"]
    if slack is not None:
        lines.append(f'slack_webhook_url = "{slack.url}{SLACK_PATH}"')
    if hook is not None:
        lines.append(f'webhook_url = "{hook.url}{HOOK_PATH}"')
    if mail_to:
        lines.append(f'mail_to = ["{mail_to}"]')
    path = tmp_path / "schedctl.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


def failing_schedules(db_url: str, count: int) -> list[int]:
    """Schedules due at 09:00 whose runs fail for good: their recipients are gone (a
    row stored before recipients were required), MISSING_RECIPIENT, no retries."""
    settings = Settings(
        database_url=db_url, reports_queries=report_queries({"ping": {"sql": "select 1"}})
    )
    ids = []
    with Database(db_url, environ={}) as db:
        for n in range(count):
            options = ScheduleOptions(
                name=f"report-{n:02d}", kind="sql", cadence="daily", at="09:00",
                to=["a@example.com"], params=["query=ping"],
            )  # fmt: skip
            ids.append(create_schedule(db, settings, 1, options, CREATED).id)
        db.transaction(
            lambda c: c.execute(schedules.update().where(schedules.c.id.in_(ids)).values(
                recipients=[]
            ))
        )  # fmt: skip
    return ids


def bodies(server: ScriptedHTTPServer) -> list[Any]:
    return [json.loads(body) for _, _, body in server.requests]


def alert_mail(smtp: SmtpServer) -> list[email.message.EmailMessage]:
    found = []
    for envelope in smtp.accepted:
        parsed = email.message_from_bytes(envelope.original_content, policy=email.policy.default)
        if str(parsed["Subject"]).startswith("schedctl:"):
            found.append(parsed)  # type: ignore[arg-type]
    return found


def run_ids(db_url: str) -> list[int]:
    with Database(db_url, environ={}) as db:
        query = sa.select(schedule_runs.c.id).order_by(schedule_runs.c.id)
        return db.transaction(lambda c: [int(i) for i in c.execute(query).scalars()])


def notified(db_url: str) -> list[tuple[str, str, bool]]:
    """(alert key, channel, told) of every delivery row."""
    a, d = alerts.c, alert_deliveries.c
    query = (
        sa.select(a.key, d.channel, d.notified_at)
        .join(alerts, a.id == d.alert_id)
        .order_by(a.key, d.channel)
    )
    with Database(db_url, environ={}) as db:
        return db.transaction(
            lambda c: [(k, ch, at is not None) for k, ch, at in c.execute(query)], read_only=True
        )
