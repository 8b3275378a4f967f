"""`send-now --schedule` runs inside its account's row-level-security scope.

Through the CLI, connected as a login role that PostgreSQL's row-level
security applies to (superusers bypass it). A test-only trigger records the session's
``schedctl.account_id`` setting on every row the command writes, which shows that each
of its transactions is scoped, not only that its own queries filter by account.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import psycopg
import pytest
from sqlalchemy.engine import make_url

from support.databases import PG_HOST, PG_PORT, PG_USER

pytestmark = [pytest.mark.postgres, pytest.mark.parametrize("dialect", ["postgresql"])]

CREATED = "2026-06-01T08:00:00Z"
WRITTEN_TABLES = ["schedules", "schedule_runs", "messages", "email_log"]
SCOPE_LOG = """
CREATE TABLE scope_log (tbl text, scope text, row_account bigint);
CREATE FUNCTION log_scope() RETURNS trigger LANGUAGE plpgsql SECURITY DEFINER AS $$
BEGIN
    INSERT INTO scope_log
    VALUES (TG_TABLE_NAME, current_setting('schedctl.account_id', true), NEW.account_id);
    RETURN NEW;
END $$;
"""


def connect_pg(db_url: str) -> psycopg.Connection:
    dbname = make_url(db_url).database
    return psycopg.connect(host=PG_HOST, port=PG_PORT, user=PG_USER, dbname=dbname, autocommit=True)


@pytest.fixture
def scope_log(db_url: str) -> None:
    with connect_pg(db_url) as conn:
        conn.execute(SCOPE_LOG)  # type: ignore[arg-type]
        for table in WRITTEN_TABLES:
            conn.execute(
                f"CREATE TRIGGER log_scope AFTER INSERT OR UPDATE ON {table}"  # type: ignore[arg-type]
                " FOR EACH ROW EXECUTE FUNCTION log_scope()"
            )


def logged(db_url: str) -> list[tuple[str, str | None, int]]:
    with connect_pg(db_url) as conn:
        return conn.execute("SELECT tbl, scope, row_account FROM scope_log").fetchall()


def clear_log(db_url: str) -> None:
    with connect_pg(db_url) as conn:
        conn.execute("DELETE FROM scope_log")


@pytest.fixture
def run(cli, tmp_path: Path):  # type: ignore[no-untyped-def]
    config = tmp_path / "schedctl.toml"
    config.write_text('[reports.queries.ping]\nsql = "select 1 as one"\naccounts = "*"\n')

    def invoke(url: str, *args: str) -> Any:
        env = {
            "SCHEDCTL_CONFIG": str(config),
            "SCHEDCTL_NOW": CREATED,
            "SCHEDCTL_MAIL_BACKEND": "memory",
        }
        return cli(*args, db_url=url, env=env)

    return invoke


def created(result: Any) -> dict[str, Any]:
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)  # type: ignore[no-any-return]


def test_send_now_schedule_runs_scoped_to_its_account_and_cannot_reach_another(
    run: Any,
    db_url: str,
    tenant_url: str,
    scope_log: None,
) -> None:
    other = created(run(db_url, "accounts", "create", "other", "--json"))["id"]
    create = ["schedules", "create", "--kind", "sql", "--param", "query=ping",
              "--cadence", "daily", "--at", "09:00", "--json"]  # fmt: skip
    mine = created(run(db_url, *create, "--name", "mine", "--to", "me@example.com"))["id"]
    theirs = created(
        run(db_url, *create, "--name", "theirs", "--to", "them@example.com", "--account", "other")
    )["id"]
    clear_log(db_url)

    # Another account's schedule: not found, nothing run, nothing written.
    refused = run(tenant_url, "send-now", "--schedule", mine, "--account", "other")
    assert (refused.returncode, refused.stdout) == (2, "")
    assert f"no schedule {mine} in account 'other'" in refused.stderr
    assert logged(db_url) == []

    # Its own: run and sent, every write made inside the account's scope.
    result = run(tenant_url, "send-now", "--schedule", theirs, "--account", "other", "--json")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert (data["ok"], data["reason_code"]) == (True, "SENT")
    assert [m["reason_code"] for m in data["messages"]] == ["SENT"]
    rows = logged(db_url)
    assert {table for table, _, _ in rows} == set(WRITTEN_TABLES)
    assert {(scope, account) for _, scope, account in rows} == {(other, int(other))}

    # send-now MESSAGE_ID is scoped the same way.
    clear_log(db_url)
    again = run(tenant_url, "send-now", data["messages"][0]["id"], "--force", "--account", "other")
    assert again.returncode == 0, again.stderr
    rows = logged(db_url)
    assert {table for table, _, _ in rows} >= {"messages", "email_log"}
    assert {(scope, account) for _, scope, account in rows} == {(other, int(other))}
