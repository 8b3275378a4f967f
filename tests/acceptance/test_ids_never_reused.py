"""Ids are never reused, so idempotency keys built from them never collide.

Regression: on SQLite a plain INTEGER PRIMARY KEY hands a deleted row's id to the
next insert. A schedule deleted and replaced got the same schedule and run ids, its
report's idempotency key matched the old message's, and the new report was silently
never queued.
"""

from __future__ import annotations

import json
from pathlib import Path

CONFIG = """
[messages]
enabled = false

[reports.queries.one]
sql = "select 1 as one"
"""


def test_a_replaced_schedule_gets_its_own_report(cli, db_url: str, tmp_path: Path) -> None:
    config = tmp_path / "schedctl.toml"
    config.write_text(CONFIG)

    def run(now: str, *args: str) -> dict[str, object]:
        result = cli(
            "--config", str(config), *args, "--json", db_url=db_url, env={"SCHEDCTL_NOW": now}
        )
        assert result.returncode == 0, result.stderr
        return json.loads(result.stdout) if result.stdout.strip() else {}

    create = ("schedules", "create", "--kind", "sql", "--param", "query=one",
              "--cadence", "daily", "--at", "07:00", "--to", "a@example.com")  # fmt: skip
    first = run("2026-03-01T06:00:00Z", *create, "--name", "first")
    run("2026-03-01T08:00:00Z", "tick")
    run("2026-03-01T08:05:00Z", "schedules", "delete", str(first["id"]), "--yes")
    second = run("2026-03-01T08:10:00Z", *create, "--name", "second")
    assert second["id"] != first["id"]
    run("2026-03-02T08:00:00Z", "tick")

    listed = run("2026-03-02T08:01:00Z", "messages", "list")
    reports = [m for m in listed["messages"] if m["type"] == "REPORT"]
    assert len(reports) == 2, reports
