"""A report query cannot write, not even with COMMIT and a second statement.

Through the CLI, as an operator would configure it: the hostile query sits in the config
file, a schedule runs it from `tick` or `send-now --schedule`, on both dialects, against
schedctl's own database and against the same database named as an external source.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from support.cli import CliRunner

CREATED = "2026-06-01T08:00:00Z"  # a Monday; the schedule is due at 09:00
DUE = "2026-06-01T09:00:05Z"
# After the first retry would be due (5 min), the second (10 min more) and then some.
LATER = ["2026-06-01T09:07:00Z", "2026-06-01T09:20:00Z", "2026-06-01T09:45:00Z"]
SUPPRESSED = ["a@example.org", "b@example.org"]

HOSTILE = [
    # PostgreSQL ran these as several statements: the COMMIT ended the read-only
    # transaction and the DELETE ran in a new, writable one.
    "commit; delete from suppressions returning email",
    "rollback; delete from suppressions returning email",
    "commit; set transaction read write; delete from suppressions returning email",
    # One statement that writes: refused by the read-only transaction.
    "delete from suppressions returning email",
]


class Setup:
    """A database with a suppression list and a schedule running one query."""

    def __init__(self, cli: CliRunner, db_url: str, config: Path) -> None:
        self.cli = cli
        self.db_url = db_url
        self.config = config

    def run(self, *args: str, now: str = CREATED) -> Any:
        env = {
            "SCHEDCTL_CONFIG": str(self.config),
            "SCHEDCTL_NOW": now,
            "SCHEDCTL_MAIL_BACKEND": "memory",
        }
        return self.cli(*args, db_url=self.db_url, env=env)

    def ok(self, *args: str, now: str = CREATED) -> Any:
        result = self.run(*args, "--json", now=now)
        assert result.returncode == 0, (args, result.stderr)
        return result.json

    def suppressed(self) -> list[str]:
        listed = self.ok("suppressions", "list")
        return sorted(s["email"] for s in listed["suppressions"])

    def runs(self, schedule_id: str) -> list[dict[str, Any]]:
        return list(self.ok("schedules", "runs", schedule_id)["runs"])


def setup(cli: CliRunner, db_url: str, tmp_path: Path, sql: str, external: bool) -> Any:
    config = tmp_path / "schedctl.toml"
    source = f'database_url = "{db_url}"\n' if external else ""
    config.write_text(f'[reports.queries.evil]\nsql = "{sql}"\n{source}')
    env = Setup(cli, db_url, config)
    for email in SUPPRESSED:
        env.ok("suppressions", "add", email)
    created = env.ok(
        "schedules", "create", "--name", "evil", "--kind", "sql", "--param", "query=evil",
        "--cadence", "daily", "--at", "09:00", "--to", "ops@example.com",
    )  # fmt: skip
    return env, created["id"]


# The same database named by database_url is treated as an external source (no scope).
DO_BLOCK = "do $$ begin set transaction read write; delete from suppressions; end $$"
CASES = [pytest.param(sql, False, id=sql) for sql in HOSTILE] + [
    pytest.param(sql, True, id="external source: " + sql) for sql in (HOSTILE[0], DO_BLOCK)
]


@pytest.mark.parametrize(("sql", "external"), CASES)
def test_a_hostile_report_query_run_by_tick_writes_nothing_and_is_not_retried(
    cli: CliRunner, db_url: str, tmp_path: Path, sql: str, external: bool
) -> None:
    env, schedule_id = setup(cli, db_url, tmp_path, sql, external)

    tick = env.run("tick", "--json", now=DUE)

    assert tick.returncode == 1, tick.stderr  # a run failed
    assert tick.json["runs_failed"] == 1
    assert env.suppressed() == SUPPRESSED
    [run] = env.runs(schedule_id)
    assert (run["status"], run["attempt"]) == ("failed", 1)
    assert "report query 'evil'" in run["error"]
    # A query refused by read-only mode fails the same way every time: no retries.
    for now in LATER:
        later = env.run("tick", "--json", now=now)
        assert (later.returncode, later.json["runs_failed"]) == (0, 0), (now, later.stderr)
    [run] = env.runs(schedule_id)
    assert (run["status"], run["attempt"]) == ("failed", 1)
    assert env.suppressed() == SUPPRESSED


def test_a_hostile_report_query_run_by_send_now_writes_nothing_and_is_not_retried(
    cli: CliRunner, db_url: str, tmp_path: Path
) -> None:
    env, schedule_id = setup(cli, db_url, tmp_path, HOSTILE[0], external=False)

    result = env.run("send-now", "--schedule", schedule_id, "--json", now=CREATED)

    assert result.returncode == 1, result.stderr
    assert (result.json["ok"], result.json["reason_code"]) == (False, "REPORT_FAILED")
    assert env.suppressed() == SUPPRESSED
    for now in LATER:  # the schedule's own 09:00 slot is not due before LATER[0]
        env.run("tick", "--json", now=now)
    manual = [r for r in env.runs(schedule_id) if r["manual"]]
    assert [(r["status"], r["attempt"]) for r in manual] == [("failed", 1)]
    assert env.suppressed() == SUPPRESSED


@pytest.mark.parametrize("sql", ["select email from suppressions order by email;", "commit"])
def test_one_statement_still_runs_and_a_lone_commit_changes_nothing(
    cli: CliRunner, db_url: str, tmp_path: Path, sql: str
) -> None:
    env, schedule_id = setup(cli, db_url, tmp_path, sql, external=False)

    tick = env.run("tick", "--json", now=DUE)

    [run] = env.runs(schedule_id)
    if sql == "commit":  # not a SELECT: refused before it runs, and not retried
        assert tick.returncode == 1
        assert (run["status"], run["attempt"]) == ("failed", 1)
        assert "one read-only SELECT" in run["error"]
    else:  # a trailing semicolon is still one statement
        assert tick.returncode == 0, tick.stderr
        assert run["status"] == "succeeded"
    assert env.suppressed() == SUPPRESSED
