"""The suite's own PostgreSQL databases: one given back to be used again is as the
template made it, and one whose structure a test changed is never used again."""

from __future__ import annotations

import pytest

from support.databases import PostgresDatabases, connect_pg

pytestmark = pytest.mark.postgres


def _rows(name: str) -> tuple[object, ...]:
    with connect_pg(name) as conn:
        accounts = conn.execute("SELECT id, name FROM accounts ORDER BY id").fetchall()
        users = conn.execute("SELECT count(*) FROM users").fetchone()
        next_account = conn.execute(
            "SELECT nextval(pg_get_serial_sequence('accounts', 'id'))"
        ).fetchone()
    return accounts, users, next_account


def test_a_database_used_again_holds_what_the_template_holds(
    postgres: PostgresDatabases,
) -> None:
    name = postgres.new()
    fresh = _rows(name)  # (this read took an account id: the rollback below undoes it)
    postgres.release(name)
    name = postgres.new()
    expected = _rows(name)
    with connect_pg(name) as conn:
        conn.execute("INSERT INTO accounts (name, created_at) VALUES ('acme', now())")
        conn.execute(
            "INSERT INTO users (account_id, email)"
            " SELECT id, 'a@example.com' FROM accounts WHERE name = 'acme'"
        )
        conn.execute("DELETE FROM accounts WHERE name = 'default'")
    postgres.release(name)

    again = postgres.new()

    assert again == name
    assert _rows(again) == expected
    assert fresh[0] == expected[0]
    postgres.release(again)


@pytest.mark.parametrize(
    "change",
    [
        "ALTER TABLE users ADD COLUMN extra TEXT",
        "CREATE INDEX users_extra ON users (email, tz)",
        "ALTER TABLE schedules NO FORCE ROW LEVEL SECURITY",
        "ALTER TABLE users ALTER COLUMN tz DROP DEFAULT",
        "DROP POLICY schedules_account_scope ON schedules",
        "CREATE ROLE schedctl_t_probe; GRANT SELECT ON users TO schedctl_t_probe;"
        " REVOKE SELECT ON users FROM schedctl_t_probe; DROP ROLE schedctl_t_probe",
        "ALTER DATABASE {db} SET work_mem = '8MB'",
        "CREATE FUNCTION f() RETURNS int LANGUAGE sql AS 'SELECT 1'",
    ],
)
def test_a_database_whose_structure_changed_is_never_used_again(
    postgres: PostgresDatabases, change: str
) -> None:
    name = postgres.new()
    with connect_pg(name) as conn:
        for statement in change.format(db=f'"{name}"').split("; "):
            conn.execute(statement)  # type: ignore[arg-type]
    postgres.release(name)

    other = postgres.new()

    assert other != name
    postgres.release(other)
