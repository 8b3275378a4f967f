"""Users and notifications are account-scoped by PostgreSQL's RLS.

Connected as a plain login role (superusers bypass RLS), as production does: the
tenant_url fixture. That every account-owned table has forced RLS and its policy is
test_rls.py's test_every_account_owned_table_has_forced_row_level_security.
"""

from __future__ import annotations

import json

import psycopg
import pytest
from sqlalchemy.engine import make_url

from support.cli import CliRunner


def _cli_json(cli: CliRunner, db_url: str, *args: str) -> dict[str, str]:
    result = cli(*args, "--json", db_url=db_url)
    assert result.returncode == 0, result.stderr
    return dict(json.loads(result.stdout))


@pytest.mark.postgres
@pytest.mark.parametrize("dialect", ["postgresql"])
def test_another_account_cannot_see_or_touch_users_and_notifications(
    cli: CliRunner, db_url: str, tenant_url: str
) -> None:
    other = _cli_json(cli, db_url, "accounts", "create", "other")["id"]
    mine = _cli_json(cli, db_url, "users", "add", "ann@example.com")["id"]
    theirs = _cli_json(cli, db_url, "users", "add", "zed@example.com", "--account", "other")["id"]
    _cli_json(cli, db_url, "notify", "--user", mine, "--title", "mine")
    _cli_json(cli, db_url, "notify", "--user", theirs, "--title", "theirs", "--account", "other")

    listed = _cli_json(cli, tenant_url, "users", "list", "--account", "other")
    assert [u["email"] for u in listed["users"]] == ["zed@example.com"]  # type: ignore[index]
    for args in [
        ("notify", "--user", mine, "--title", "planted"),
        ("users", "update", mine, "--tz", "Asia/Tokyo"),
        ("users", "remove", mine, "--yes"),
    ]:
        result = cli(*args, "--account", "other", db_url=tenant_url)
        assert (result.returncode, result.stdout) == (2, ""), args
        assert f"no user {mine} in account 'other'" in result.stderr

    url = make_url(tenant_url)
    with psycopg.connect(
        host=url.host, port=url.port, user=url.username, dbname=url.database
    ) as conn:
        conn.execute("SELECT set_config('schedctl.account_id', %s, true)", (other,))
        assert conn.execute("SELECT email FROM users").fetchall() == [("zed@example.com",)]
        assert conn.execute("SELECT title FROM notifications").fetchall() == [("theirs",)]
        changed = conn.execute("UPDATE notifications SET read_at = now() WHERE account_id = 1")
        assert changed.rowcount == 0
        with pytest.raises(psycopg.errors.InsufficientPrivilege, match="row-level security"):
            conn.execute(
                "INSERT INTO notifications (account_id, user_id, title) VALUES (1, %s, 'x')",
                (int(mine),),
            )
        conn.rollback()
        # Unscoped (tick, digest) sees every account.
        assert len(conn.execute("SELECT id FROM notifications").fetchall()) == 2
