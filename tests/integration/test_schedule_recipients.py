"""A schedule needs recipients, unless its report kind says it needs none.

A schedule without recipients is refused at create and update (exit 2, nothing written);
a row stored without any (before this rule, or by hand) fails its runs with
MISSING_RECIPIENT instead of recording them succeeded with nothing delivered.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from schedctl.config import Settings, report_queries
from schedctl.db.database import Database
from schedctl.db.schema import messages, schedules
from schedctl.errors import ValidationError
from schedctl.schedules.model import ScheduleOptions
from schedctl.schedules.store import create_schedule, update_schedule
from support.cli import CliRunner

CREATED = "2026-06-01T08:00:00Z"  # a Monday; the schedules are due at 09:00
DUE = "2026-06-01T09:00:05Z"
LATER = ["2026-06-01T09:07:00Z", "2026-06-01T09:20:00Z"]
CONFIG = '[reports.queries.ping]\nsql = "select 1 as one"\n'
SCHEDULE = ["--kind", "sql", "--param", "query=ping", "--cadence", "daily", "--at", "09:00"]
sqlite_only = pytest.mark.parametrize("dialect", ["sqlite"])


@pytest.fixture
def run(cli: CliRunner, db_url: str, tmp_path: Path):  # type: ignore[no-untyped-def]
    config = tmp_path / "schedctl.toml"
    config.write_text(CONFIG)

    def invoke(*args: str, now: str = CREATED) -> Any:
        env = {
            "SCHEDCTL_CONFIG": str(config),
            "SCHEDCTL_NOW": now,
            "SCHEDCTL_MAIL_BACKEND": "memory",
        }
        return cli(*args, db_url=db_url, env=env)

    return invoke


def ok(result: Any) -> Any:
    assert result.returncode == 0, result.stderr
    return result.json


def count(db_url: str, table: sa.Table) -> int:
    with Database(db_url, environ={}) as db:
        return int(db.scalar(sa.select(sa.func.count()).select_from(table)))


def strip_recipients(db_url: str, schedule_id: str) -> None:
    """What a row stored before the rule (or edited by hand) looks like."""
    with Database(db_url, environ={}) as db:
        db.transaction(
            lambda c: c.execute(
                schedules.update().where(schedules.c.id == int(schedule_id)).values(recipients=[])
            )
        )


@sqlite_only
def test_create_without_recipients_is_refused_and_writes_nothing(run: Any, db_url: str) -> None:
    result = run("schedules", "create", "--name", "nobody", *SCHEDULE)

    assert (result.returncode, result.stdout) == (2, "")
    assert len(result.stderr.strip().splitlines()) == 1
    assert "needs at least one recipient" in result.stderr
    assert "--to" in result.stderr
    assert count(db_url, schedules) == 0


@sqlite_only
def test_an_update_cannot_leave_a_schedule_without_recipients(
    run: Any, db_url: str, tmp_path: Path
) -> None:
    sid = ok(run("schedules", "create", "--name", "s", *SCHEDULE, "--to", "a@example.com",
                 "--json"))["id"]  # fmt: skip
    settings = Settings(database_url=db_url, reports_queries=report_queries({"ping": {
        "sql": "select 1 as one"}}))  # fmt: skip
    with Database(db_url, environ={}) as db:
        with pytest.raises(ValidationError, match="needs at least one recipient"):
            update_schedule(db, settings, 1, int(sid), ScheduleOptions(to=[]), db.now())
        with pytest.raises(ValidationError, match="needs at least one recipient"):
            create_schedule(
                db, settings, 1, ScheduleOptions(name="t", kind="sql", cadence="daily",
                                                 at="09:00", params=["query=ping"]), db.now(),
            )  # fmt: skip

    # A row stored without recipients cannot be edited into another recipient-less state...
    strip_recipients(db_url, sid)
    refused = run("schedules", "update", sid, "--name", "renamed")
    assert (refused.returncode, refused.stdout) == (2, "")
    assert "needs at least one recipient" in refused.stderr
    assert ok(run("schedules", "show", sid, "--json"))["name"] == "s"
    # ...but giving it recipients fixes it.
    fixed = ok(run("schedules", "update", sid, "--to", "b@example.com", "--json"))
    assert fixed["recipients"] == ["b@example.com"]


def test_runs_of_a_schedule_without_recipients_fail_with_missing_recipient(
    run: Any, db_url: str
) -> None:
    sid = ok(run("schedules", "create", "--name", "s", *SCHEDULE, "--to", "a@example.com",
                 "--json"))["id"]  # fmt: skip
    strip_recipients(db_url, sid)

    tick = run("tick", "--json", now=DUE)

    assert tick.returncode == 1, tick.stderr
    assert (tick.json["runs_failed"], tick.json.get("runs_succeeded", 0)) == (1, 0)
    [scheduled] = ok(run("schedules", "runs", sid, "--json"))["runs"]
    assert (scheduled["status"], scheduled["attempt"]) == ("failed", 1)
    assert "MISSING_RECIPIENT" in scheduled["error"]
    for now in LATER:  # nothing to retry: it fails the same way until the schedule is fixed
        assert run("tick", "--json", now=now).json["runs_failed"] == 0

    manual = run("send-now", "--schedule", sid, "--json", now=LATER[-1])

    assert manual.returncode == 1
    assert (manual.json["ok"], manual.json["reason_code"]) == (False, "MISSING_RECIPIENT")
    runs = ok(run("schedules", "runs", sid, "--json", now=LATER[-1]))["runs"]
    assert sorted((r["manual"], r["status"]) for r in runs) == [(False, "failed"), (True, "failed")]
    assert all("MISSING_RECIPIENT" in r["error"] for r in runs)
    assert count(db_url, messages) == 0


PLUGIN = """
from schedctl.schedules.reports import Report


def archive_report(settings, schedule, slot):
    return Report(subject="archived", text="archived")


archive_report.needs_recipients = False
"""


@sqlite_only
def test_a_report_kind_may_declare_that_it_needs_no_recipients(
    cli: Any, db_url: str, tmp_path: Path
) -> None:
    from support.cli import run_cli

    site = tmp_path / "site"
    dist = site / "schedctl_archive-1.0.dist-info"
    dist.mkdir(parents=True)
    (site / "schedctl_archive.py").write_text(PLUGIN)
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: schedctl-archive\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text(
        "[schedctl.report_kinds]\narchive = schedctl_archive:archive_report\n"
    )
    env = {"PYTHONPATH": str(site), "SCHEDCTL_MAIL_BACKEND": "memory", "SCHEDCTL_NOW": CREATED}
    created = run_cli(
        "schedules", "create", "--name", "archive", "--kind", "archive", "--cadence", "daily",
        "--at", "09:00", "--json", db_url=db_url, env=env,
    )  # fmt: skip
    assert created.returncode == 0, created.stderr

    tick = run_cli("tick", "--json", db_url=db_url, env={**env, "SCHEDCTL_NOW": DUE})

    assert tick.returncode == 0, tick.stderr
    assert json.loads(tick.stdout)["runs_succeeded"] == 1
    assert count(db_url, messages) == 0
