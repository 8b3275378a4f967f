"""`schedctl schedules`, `accounts` and `tick` as cron and operators run them (SPEC §11)."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from schedctl.cadence import parse_instant
from schedctl.config import load_settings
from schedctl.db.database import Database
from schedctl.schedules.model import ScheduleOptions
from schedctl.schedules.store import create_schedule

CONFIG = """
[reports.queries.ping]
sql = "select 1 as one"
title = "Ping"

[reports.queries.broken]
sql = "select * from no_such_table"

[reports.queries.remote]
sql = "select 1"
database_url = "postgresql://reporter:Hush-Hush-pw@127.0.0.1:1/warehouse"
"""
CREATED = "2026-06-01T08:00:00Z"  # a Monday
SCHEDULE_KEYS = {"id", "name", "kind", "cadence", "tz", "active", "next_run_at", "last_run_at"}
RUN_KEYS = {
    "id", "slot", "status", "manual", "started_at", "finished_at", "duration_s", "error",
}  # fmt: skip
TICK_KEYS = {
    "due", "runs_created", "runs_skipped", "messages_sent", "messages_failed",
    "messages_deferred",
}  # fmt: skip


@pytest.fixture
def config(tmp_path: Path) -> str:
    path = tmp_path / "schedctl.toml"
    path.write_text(CONFIG)
    return str(path)


@pytest.fixture
def run(cli, cli_process, db_url: str, config: str):
    """`run(*args, now=ISO)`: schedctl with this test's database and config; in this
    process, or with ``process=True`` as a process of its own."""

    def invoke(
        *args: str, now: str = CREATED, env: dict[str, str] | None = None, process: bool = False
    ) -> Any:
        extra = {
            "SCHEDCTL_CONFIG": config,
            "SCHEDCTL_NOW": now,
            "SCHEDCTL_MAIL_BACKEND": "memory",  # tick dispatches; mail goes nowhere
            **(env or {}),
        }
        return (cli_process if process else cli)(*args, db_url=db_url, env=extra)

    return invoke


def as_json(result: Any) -> Any:
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


@pytest.mark.parametrize("dialect", ["sqlite"])  # the same CLI over PostgreSQL: test_rls
def test_schedule_lifecycle(run) -> None:
    created = as_json(
        run(
            "schedules", "create", "--name", "Daily ping", "--kind", "sql",
            "--cadence", "weekly", "--weekday", "tue", "--at", "09:30", "--tz", "Europe/Berlin",
            "--to", "ops@example.com", "--to", "cfo@example.com", "--param", "query=ping",
            "--catchup", "all", "--max-lateness", "2d", "--json",
        )
    )  # fmt: skip
    sid = created["id"]
    assert isinstance(sid, str)
    assert created["next_run_at"] == "2026-06-02T07:30:00+00:00"
    assert (created["catchup"], created["max_lateness"]) == ("all", "2d")

    listed = as_json(run("schedules", "list", "--json"))
    assert listed["count"] == 1
    assert set(listed["schedules"][0]) >= SCHEDULE_KEYS
    assert listed["schedules"][0]["id"] == sid

    updated = as_json(
        run("schedules", "update", sid, "--cadence", "daily", "--at", "07:00", "--json")
    )
    assert updated["weekday"] is None  # the daily cadence does not use it
    assert updated["next_run_at"] == "2026-06-02T05:00:00+00:00"

    assert as_json(run("schedules", "pause", sid, "--json"))["next_run_at"] is None
    resumed = as_json(run("schedules", "resume", sid, "--json"))
    assert (resumed["active"], resumed["next_run_at"]) == (True, "2026-06-02T05:00:00+00:00")

    tick = as_json(run("tick", "--json", now="2026-06-02T05:00:20Z"))
    assert set(tick) >= TICK_KEYS
    assert (tick["due"], tick["runs_created"], tick["runs_skipped"]) == (1, 1, 0)
    assert (tick["runs_succeeded"], tick["messages_enqueued"]) == (1, 2)
    # The reports enqueued by the run are dispatched by the same tick.
    assert (tick["messages_sent"], tick["messages_failed"], tick["messages_deferred"]) == (2, 0, 0)

    history = as_json(run("schedules", "runs", sid, "--json"))
    assert history["count"] == 1
    [entry] = history["runs"]
    assert set(entry) >= RUN_KEYS
    assert (entry["slot"], entry["status"], entry["manual"]) == (
        "2026-06-02T05:00:00+00:00", "succeeded", False,
    )  # fmt: skip

    refused = run("schedules", "delete", sid)
    assert refused.returncode == 2
    assert "--yes" in refused.stderr

    deleted = as_json(run("schedules", "delete", sid, "--yes", "--json"))
    assert deleted == {"id": sid, "deleted": True, "runs_deleted": 1}
    assert as_json(run("schedules", "list", "--json")) == {
        "schedules": [],
        "count": 0,
        "account": "default",
    }


@pytest.mark.parametrize("dialect", ["sqlite"])
def test_listings_show_instants_in_the_schedules_zone_and_in_utc(run) -> None:
    # SPEC §12: "Every listing shows instants in the item's own zone and in UTC" (found
    # by review: schedules list and runs showed UTC alone).
    sid = as_json(
        run(
            "schedules", "create", "--name", "berlin", "--kind", "sql", "--cadence", "daily",
            "--at", "02:30", "--tz", "Europe/Berlin", "--param", "query=ping",
            "--to", "a@example.com", "--json",
        )
    )["id"]  # fmt: skip
    assert run("tick", "--json", now="2026-06-02T00:31:00Z").returncode == 0
    listed = run("schedules", "list", now="2026-06-02T00:32:00Z").stdout
    assert "2026-06-03 02:30:00 CEST (2026-06-03 00:30:00Z)" in listed  # next run
    assert "2026-06-02 02:30:00 CEST (2026-06-02 00:30:00Z)" in listed  # last run
    history = run("schedules", "runs", sid, now="2026-06-02T00:32:00Z").stdout
    assert "2026-06-02 02:30:00 CEST (2026-06-02 00:30:00Z)" in history  # its slot
    assert "2026-06-02 02:31:00 CEST (2026-06-02 00:31:00Z)" in history  # started


@pytest.mark.parametrize("dialect", ["sqlite"])
def test_a_schedule_edited_by_hand_into_nonsense_can_still_be_deleted(run, db_url: str) -> None:
    # Found by review: "schedules delete" read the row's zone first and refused.
    sid = as_json(
        run(
            "schedules", "create", "--name", "n", "--kind", "sql", "--cadence", "daily",
            "--at", "09:00", "--param", "query=ping", "--to", "a@example.com", "--json",
        )
    )["id"]  # fmt: skip
    with sqlite3.connect(db_url.removeprefix("sqlite:///")) as conn:
        conn.execute("UPDATE schedules SET tz = 'Nope/Zone' WHERE id = ?", (int(sid),))
    deleted = as_json(run("schedules", "delete", sid, "--yes", "--json"))
    assert deleted == {"id": sid, "deleted": True, "runs_deleted": 0}


@pytest.mark.parametrize("dialect", ["sqlite"])
def test_invalid_values_exit_2_on_one_line_and_write_nothing(run) -> None:
    """A sample through the binary; test_schedules_cli_errors walks every option."""
    base = ["schedules", "create", "--name", "n", "--kind", "sql", "--cadence", "daily"]
    cases = [
        (["--at", "09:00", "--param", "query=ping", "--tz", "Mars/Base"], "invalid time zone"),
        (["--at", "09:00", "--param", "query=ping", "--to", "nobody"], "invalid e-mail"),
        (["--at", "09:00", "--param", "query=gone"], "no report query 'gone'"),
    ]
    for extra, message in cases:
        result = run(*base, *extra)
        assert result.returncode == 2, (extra, result.stderr)
        assert result.stdout == ""
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1, (extra, result.stderr)
        assert message in lines[0], (extra, result.stderr)
    assert as_json(run("schedules", "list", "--json"))["count"] == 0


@pytest.mark.parametrize("dialect", ["sqlite"])
def test_accounts_create_and_list(run) -> None:
    created = as_json(run("accounts", "create", "acme", "--json"))
    assert created == {"id": created["id"], "name": "acme"}
    assert isinstance(created["id"], str)
    again = run("accounts", "create", "acme")
    assert again.returncode == 2
    assert "exists already" in again.stderr
    assert run("accounts", "create", "two words").returncode == 2
    listed = as_json(run("accounts", "list", "--json"))
    assert [a["name"] for a in listed["accounts"]] == ["default", "acme"]
    assert listed["count"] == 2


@pytest.mark.parametrize("dialect", ["sqlite"])
def test_tick_exits_1_when_a_run_fails_and_hides_secrets(run, db_url: str, config: str) -> None:
    settings = load_settings({"database_url": db_url, "config_path": config}, environ={})
    with Database(db_url, environ={}) as db:
        for name in ("broken", "remote", "ping"):
            options = ScheduleOptions(
                name=name, kind="sql", cadence="daily", at="09:00", to=["ops@example.com"],
                params=[f"query={name}"],
            )  # fmt: skip
            create_schedule(db, settings, 1, options, parse_instant(CREATED))
    tick = run("tick", "--json", now="2026-06-01T09:00:10Z")
    assert tick.returncode == 1, tick.stderr
    counts = json.loads(tick.stdout)
    assert (counts["runs_created"], counts["runs_succeeded"], counts["runs_failed"]) == (3, 1, 2)
    assert "no_such_table" in tick.stderr
    errors = [
        entry["error"]
        for sid in ("1", "2")
        for entry in as_json(run("schedules", "runs", sid, "--json"))["runs"]
    ]
    assert "no_such_table" in errors[0]
    assert "remote" in errors[1]
    assert "Hush-Hush-pw" not in tick.stdout + tick.stderr + "".join(errors)
    # Nothing due and no retry due yet: a clean tick exits 0.
    assert run("tick", "--json", now="2026-06-01T09:02:00Z").returncode == 0


PLUGIN = """
from schedctl.schedules.reports import Report


def echo_report(settings, schedule, slot):
    return Report(subject=f"echo {schedule.params['word']} {slot:%H:%M}", text="echo")


def check(settings, params):
    from schedctl.errors import ValidationError

    if "word" not in params:
        raise ValidationError("kind echo needs --param word=...")


echo_report.validate_params = check
"""


@pytest.mark.parametrize("dialect", ["sqlite"])
def test_a_report_kind_plugin_registered_by_entry_point(run, db_url: str, tmp_path: Path) -> None:
    site = tmp_path / "site"
    dist = site / "schedctl_echo-1.0.dist-info"
    dist.mkdir(parents=True)
    (site / "schedctl_echo.py").write_text(PLUGIN)
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: schedctl-echo\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text(
        "[schedctl.report_kinds]\necho = schedctl_echo:echo_report\n"
    )
    env = {"PYTHONPATH": str(site)}  # found at start-up: each command a process
    base = ["schedules", "create", "--name", "e", "--kind", "echo", "--cadence", "daily"]
    refused = run(*base, "--at", "09:00", env=env, process=True)
    assert refused.returncode == 2
    assert "needs --param word" in refused.stderr
    as_json(
        run(
            *base,
            "--at",
            "09:00",
            "--to",
            "a@example.com",
            "--param",
            "word=hi",
            "--json",
            env=env,
            process=True,
        )
    )
    tick = as_json(run("tick", "--json", now="2026-06-01T09:00:05Z", env=env, process=True))
    assert tick["runs_succeeded"] == 1
    with sqlite3.connect(db_url.removeprefix("sqlite:///")) as conn:
        subjects = conn.execute("SELECT subject, recipient FROM messages").fetchall()
    conn.close()
    assert subjects == [("echo hi 09:00", "a@example.com")]
