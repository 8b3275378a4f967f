"""Tenancy (SPEC §13): what a hostile tenant tried, each refused.

PostgreSQL cases connect as a plain login role (the tenant_url fixture: no superuser,
no BYPASSRLS), as production does; the set-up runs as the suite's superuser.
"""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
import pytest
import sqlalchemy as sa
from sqlalchemy.engine import make_url

from schedctl.accounts import create_account
from schedctl.config import Settings, report_queries
from schedctl.db import migrations
from schedctl.db.database import Database
from schedctl.schedules import reports
from schedctl.schedules.model import Schedule, ScheduleOptions
from schedctl.schedules.store import create_schedule
from support.cli import CliRunner
from support.databases import connect_pg

T0 = datetime(2026, 6, 1, 8, 0, tzinfo=UTC)
SLOT = datetime(2026, 6, 1, 9, 0, tzinfo=UTC)
CREATED = "2026-06-01T08:00:00Z"
DUE = "2026-06-01T09:00:05Z"
postgres_only = [pytest.mark.postgres, pytest.mark.parametrize("dialect", ["postgresql"])]

# The attack a hostile tenant tried: the scope switched off from inside a report query.
ESCAPE = (
    "select n.title from (select set_config('schedctl.account_id', '', true) v) s"
    " cross join lateral (select title from notifications where s.v is not null) n"
)


class World:
    """Two accounts (default, beta), a user and a notification in each."""

    def __init__(self, cli: CliRunner, db_url: str, config: Path) -> None:
        self.cli, self.db_url, self.config = cli, db_url, config

    def run(self, *args: str, url: str | None = None, now: str = CREATED) -> Any:
        env = {
            "SCHEDCTL_CONFIG": str(self.config),
            "SCHEDCTL_NOW": now,
            "SCHEDCTL_MAIL_BACKEND": "memory",
        }
        return self.cli(*args, db_url=url or self.db_url, env=env)

    def ok(self, *args: str, url: str | None = None, now: str = CREATED) -> Any:
        result = self.run(*args, "--json", url=url, now=now)
        assert result.returncode == 0, (args, result.stderr)
        return result.json

    def schedule(self, query: str, account: str = "default") -> str:
        created = self.ok(
            "schedules", "create", "--name", query, "--kind", "sql", "--param",
            f"query={query}", "--cadence", "daily", "--at", "09:00", "--to",
            "ops@example.com", "--account", account,
        )  # fmt: skip
        return str(created["id"])

    def runs(self, schedule_id: str, account: str = "default") -> list[dict[str, Any]]:
        return list(self.ok("schedules", "runs", schedule_id, "--account", account)["runs"])

    def mail_bodies(self) -> list[str]:
        with Database(self.db_url, environ={}) as db:
            return db.transaction(
                lambda c: [str(r[0]) for r in c.execute(sa.text("SELECT body_text FROM messages"))]
            )


def world(cli: CliRunner, db_url: str, tmp_path: Path, queries: str) -> World:
    config = tmp_path / "schedctl.toml"
    config.write_text(queries)
    w = World(cli, db_url, config)
    w.ok("accounts", "create", "beta")
    alice = w.ok("users", "add", "alice@example.com")["id"]
    bob = w.ok("users", "add", "bob@example.com", "--account", "beta")["id"]
    w.ok("notify", "--user", alice, "--title", "alpha-note")
    w.ok("notify", "--user", bob, "--title", "beta-secret", "--account", "beta")
    return w


# --- the account scope cannot be changed from inside a report query ------------


@pytest.mark.postgres
@pytest.mark.parametrize("dialect", ["postgresql"])
def test_a_report_query_cannot_switch_its_account_scope_off(
    cli: CliRunner, db_url: str, tenant_url: str, tmp_path: Path
) -> None:
    queries = (
        f'[reports.queries.escape]\nsql = "{ESCAPE}"\n'
        '[reports.queries.plain]\nsql = "select title from notifications order by title"\n'
    )
    w = world(cli, db_url, tmp_path, queries)
    escape, plain = w.schedule("escape"), w.schedule("plain")

    tick = w.run("tick", "--json", url=tenant_url, now=DUE)

    assert tick.returncode == 1  # the hostile schedule's run failed
    bodies = w.mail_bodies()
    assert len(bodies) == 1
    assert "alpha-note" in bodies[0]
    assert not any("beta-secret" in body for body in bodies)
    [refused] = w.runs(escape)
    assert (refused["status"], refused["attempt"]) == ("failed", 1)
    assert "set_config" in refused["error"]
    assert [r["status"] for r in w.runs(plain)] == ["succeeded"]


def _produce(
    db_url: str, sql: str, *, account_id: int = 1, timeout: str = "60s", query_url: str = ""
) -> Any:
    query = {"sql": sql, "accounts": "*", "timeout": timeout}
    if query_url:
        query["database_url"] = query_url
    settings = Settings(database_url=db_url, reports_queries=report_queries({"q": query}))
    options = ScheduleOptions(
        name=f"s{datetime.now().timestamp()}", kind="sql", cadence="daily", at="09:00",
        to=["ops@example.com"], params=["query=q"],
    )  # fmt: skip
    with Database(db_url, environ={}) as db:
        schedule: Schedule = create_schedule(db, settings, account_id, options, T0)
    return reports.produce_report(settings, schedule, SLOT)


@pytest.mark.postgres
@pytest.mark.parametrize("dialect", ["postgresql"])
def test_a_report_query_cannot_stop_another_session(db_url: str, tenant_url: str) -> None:
    url = make_url(tenant_url)
    bystander = psycopg.connect(
        host=url.host, port=url.port, user=url.username, dbname=url.database
    )
    pid = bystander.info.backend_pid
    with pytest.raises(reports.ReportFailed, match="pg_terminate_backend") as refused:
        _produce(tenant_url, f"select pg_terminate_backend({pid}) as killed")
    assert not refused.value.retryable
    assert bystander.execute("select 1").fetchone() == (1,)  # still connected
    bystander.close()


@pytest.mark.postgres
@pytest.mark.parametrize("dialect", ["postgresql"])
@pytest.mark.parametrize(
    ("sql", "named"),
    [
        ("select lo_from_bytea(0, convert_to(repeat('x', 100000), 'UTF8')) as o", "lo_from_bytea"),
        ("select set_config('statement_timeout', '0', true) as t", "set_config"),
        ("select pg_advisory_lock(1) is null as l", "pg_advisory_lock"),
        ("select pg_notify('c', 'x') is null as n", "pg_notify"),
        ("select pg_cancel_backend(1) as c", "pg_cancel_backend"),
        ("select pg_sleep(0) is null as s", "pg_sleep"),
        ("select nextval('notifications_id_seq') as n", "nextval"),
        # Hidden in a view the query reads: the view's own functions are checked too.
        ("select * from sneaky", "lo_from_bytea"),
    ],
)
def test_a_report_query_that_would_act_is_refused_before_it_runs(
    db_url: str, tenant_url: str, sql: str, named: str
) -> None:
    dbname = str(make_url(db_url).database)
    with connect_pg(dbname) as admin:
        admin.execute("CREATE VIEW sneaky AS SELECT lo_from_bytea(0, 'x'::bytea) AS o")
        admin.execute(f'GRANT SELECT ON sneaky TO "{make_url(tenant_url).username}"')  # type: ignore[arg-type]
    with pytest.raises(reports.ReportFailed, match=named):
        _produce(tenant_url, sql)
    with connect_pg(dbname) as admin:
        assert admin.execute("select count(*) from pg_largeobject_metadata").fetchone() == (0,)


@pytest.mark.postgres
@pytest.mark.parametrize("dialect", ["postgresql"])
def test_a_query_that_writes_in_a_with_clause_is_not_retried(db_url: str, tenant_url: str) -> None:
    # It was retried twice more, ten minutes apart (found by review): PostgreSQL
    # refuses it for what it is ("views must not contain data-modifying statements").
    sql = "with d as (delete from notifications returning id) select count(*) as n from d"
    with pytest.raises(reports.ReportFailed, match=r"refused: .*data-modifying") as refused:
        _produce(tenant_url, sql)
    assert not refused.value.retryable


# A function its owner declared STABLE is taken at its word; what it writes anyway is
# rolled back, and what it sets for the session dies with the query's connection.
LYING_FUNCTIONS = """
CREATE FUNCTION stable_but_writes() RETURNS int LANGUAGE plpgsql STABLE AS $$
BEGIN PERFORM lo_from_bytea(0, 'x'::bytea); RETURN 1; END $$;
CREATE FUNCTION stable_but_sets() RETURNS int LANGUAGE plpgsql STABLE AS $$
BEGIN PERFORM set_config('schedctl.leak', 'left over', false); RETURN 1; END $$;
"""


@pytest.mark.postgres
@pytest.mark.parametrize("dialect", ["postgresql"])
def test_what_a_query_writes_is_rolled_back_and_its_settings_end_with_it(
    db_url: str, tenant_url: str
) -> None:
    dbname = str(make_url(db_url).database)
    with connect_pg(dbname) as admin:
        admin.execute(LYING_FUNCTIONS)  # type: ignore[arg-type]
    _produce(tenant_url, "select stable_but_writes() as w")
    _produce(tenant_url, "select stable_but_sets() as s")
    report = _produce(
        tenant_url, "select coalesce(current_setting('schedctl.leak', true), '-') as v"
    )
    assert "left over" not in report.text
    with connect_pg(dbname) as admin:
        assert admin.execute("select count(*) from pg_largeobject_metadata").fetchone() == (0,)


@pytest.mark.postgres
@pytest.mark.parametrize("dialect", ["postgresql"])
def test_harmless_functions_still_run(db_url: str, tenant_url: str) -> None:
    report = _produce(
        tenant_url,
        "select now() <= clock_timestamp() as ok, count(*) as n, random() < 2 as r,"
        " upper(name) as name from accounts group by name",
    )
    assert "DEFAULT" in report.text


@pytest.mark.postgres
@pytest.mark.parametrize("dialect", ["postgresql", "sqlite"])
def test_a_result_too_big_to_mail_is_refused_before_it_is_all_read(db_url: str) -> None:
    # Found by review: 20 rows of 5 MB took 1.48 GB and 26 s, and mailed a 240 MB file.
    wide = (
        "select repeat('x', 1000000) as v from generate_series(1, 40)"
        if make_url(db_url).get_backend_name() == "postgresql"
        else "with recursive g(n) as (select 1 union all select n + 1 from g where n < 40)"
        " select hex(zeroblob(500000)) as v from g"
    )
    with pytest.raises(reports.ReportFailed, match="over 16 MiB") as refused:
        _produce(db_url, wide)
    assert not refused.value.retryable


def _add_account(db_url: str) -> int:
    with Database(db_url, environ={}) as db:
        return db.transaction(lambda c: create_account(c, "beta", T0))


@pytest.mark.postgres
@pytest.mark.parametrize("dialect", ["postgresql", "sqlite"])
def test_own_database_queries_are_refused_where_nothing_scopes_them(db_url: str) -> None:
    """The suite's PostgreSQL role is a superuser (RLS does not apply); SQLite has none."""
    assert "1" in _produce(db_url, "select 1 as one").text  # one account: nothing to mix
    _add_account(db_url)
    with pytest.raises(reports.ReportFailed, match="TENANCY_UNSAFE") as refused:
        _produce(db_url, "select 1 as one")
    assert (refused.value.reason, refused.value.retryable) == ("TENANCY_UNSAFE", False)


@pytest.mark.postgres
@pytest.mark.parametrize("dialect", ["postgresql", "sqlite"])
def test_own_database_under_another_spelling_of_its_url_is_scoped_too(
    cli: CliRunner, db_url: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """Found by review: a query whose own database_url named schedctl's database another
    way (localhost for 127.0.0.1, a path through "./") read every account's rows."""
    world(cli, db_url, tmp_path, "")
    url = make_url(db_url)
    if url.get_backend_name() == "sqlite":
        path = Path(str(url.database))
        other = f"sqlite:///{path.parent}/./{path.name}"
        # No row-level security on SQLite: with two accounts the query is refused.
        with pytest.raises(reports.ReportFailed, match="TENANCY_UNSAFE"):
            _produce(db_url, "select title from notifications", query_url=other)
        return
    tenant = make_url(request.getfixturevalue("tenant_url"))
    other = tenant.set(host="localhost").render_as_string(hide_password=False)
    report = _produce(
        str(tenant), "select title from notifications order by title", query_url=other
    )
    assert "alpha-note" in report.text
    assert "beta-secret" not in report.text


@pytest.mark.postgres
@pytest.mark.parametrize("dialect", ["postgresql"])
def test_config_check_says_own_database_queries_are_unsafe(
    cli: CliRunner, db_url: str, tmp_path: Path
) -> None:
    w = world(cli, db_url, tmp_path, '[reports.queries.plain]\nsql = "select 1 as one"\n')
    result = w.run("config", "check", "--json")
    assert result.returncode == 2, result.stderr
    [error] = result.json["errors"]
    assert "TENANCY_UNSAFE" in error
    assert "plain" in error


# --- references between account-owned rows stay inside one account ------------


def _raw(db_url: str) -> Any:
    url = make_url(db_url)
    if url.get_backend_name() == "sqlite":
        return sqlite3.connect(str(url.database))
    return psycopg.connect(host=url.host, port=url.port, user=url.username, dbname=url.database)


def _placeholders(conn: Any, sql: str) -> str:
    return sql.replace("%s", "?") if isinstance(conn, sqlite3.Connection) else sql


CROSS_REFERENCES = [
    "INSERT INTO notifications (account_id, user_id, title) VALUES (1, %s, 'planted')",
    "UPDATE notifications SET user_id = %s WHERE account_id = 1",
]


@pytest.mark.postgres
@pytest.mark.parametrize("statement", CROSS_REFERENCES)
def test_a_row_cannot_refer_to_another_accounts_row(
    cli: CliRunner, db_url: str, tmp_path: Path, statement: str, request: pytest.FixtureRequest
) -> None:
    w = world(cli, db_url, tmp_path, "")
    bob = int(w.ok("users", "list", "--account", "beta")["users"][0]["id"])
    url = db_url
    if make_url(db_url).get_backend_name() == "postgresql":
        url = request.getfixturevalue("tenant_url")
    conn = _raw(url)
    try:
        if isinstance(conn, psycopg.Connection):  # a session scoped to the default account
            conn.execute("SELECT set_config('schedctl.account_id', '1', false)")
        with pytest.raises((psycopg.errors.ForeignKeyViolation, sqlite3.IntegrityError)) as refused:
            conn.execute(_placeholders(conn, statement), (bob,))
        assert "another account" in str(refused.value) or "notifications_user_fkey" in str(
            refused.value
        )
    finally:
        conn.close()
    tick = w.run("tick", "--json", now=DUE)
    assert tick.returncode == 0, tick.stderr
    assert all("planted" not in body for body in w.mail_bodies())


@pytest.mark.postgres
def test_the_tenancy_migration_refuses_to_apply_over_rows_that_break_it(
    cli: CliRunner, empty_db_url: str
) -> None:
    with Database(empty_db_url, environ={}) as db:
        migrations.upgrade(db, target=9)
    conn = _raw(empty_db_url)
    with conn:
        for sql in [
            "INSERT INTO accounts (name, created_at) VALUES ('beta', CURRENT_TIMESTAMP)",
            "INSERT INTO users (account_id, email) VALUES (2, 'bob@example.com')",
            "INSERT INTO notifications (account_id, user_id, title) VALUES (1, 1, 'x')",
        ]:
            conn.execute(sql)
    conn.close()

    result = cli("db", "upgrade", db_url=empty_db_url)

    assert result.returncode == 2, result.stderr
    assert result.stdout == ""
    assert "0010_tenancy not applied: notifications 1 refer through user_id" in result.stderr
    with Database(empty_db_url, environ={}) as db:
        assert migrations.current_version(db) == 9


# --- a login role bound to an account ---------------------------------------------------


def _bind_to_beta(db_url: str, tenant_url: str) -> None:
    """Bind the tenant's login role to account beta (as the schema's owner)."""
    role = str(make_url(tenant_url).username)
    with connect_pg(str(make_url(db_url).database)) as admin:
        admin.execute(
            "INSERT INTO account_roles (role_name, account_id)"
            " SELECT %s, id FROM accounts WHERE name = 'beta'",
            (role,),
        )


@pytest.mark.postgres
@pytest.mark.parametrize("dialect", ["postgresql"])
def test_a_bound_login_role_sees_only_its_account_whatever_it_sets(
    cli: CliRunner, db_url: str, tenant_url: str, tmp_path: Path
) -> None:
    world(cli, db_url, tmp_path, "")
    _bind_to_beta(db_url, tenant_url)
    conn = _raw(tenant_url)
    try:
        for scope in ["", "1"]:
            conn.execute("SELECT set_config('schedctl.account_id', %s, false)", (scope,))
            titles = conn.execute("SELECT title FROM notifications").fetchall()
            assert titles == [("beta-secret",)], scope
        with pytest.raises(psycopg.errors.InsufficientPrivilege, match="row-level security"):
            conn.execute(
                "INSERT INTO notifications (account_id, user_id, title) VALUES (1, 1, 'x')"
            )
    finally:
        conn.close()


@pytest.mark.postgres
@pytest.mark.parametrize("dialect", ["postgresql"])
def test_a_bound_login_role_sees_its_own_account_and_cannot_change_any(
    cli: CliRunner, db_url: str, tenant_url: str, tmp_path: Path
) -> None:
    """Found by a hostile tenant: renaming its account to a name another account's
    report query lists would have handed it that query (SPEC §13)."""
    w = world(cli, db_url, tmp_path, "")
    _bind_to_beta(db_url, tenant_url)
    conn = _raw(tenant_url)
    try:
        assert conn.execute("SELECT name FROM accounts").fetchall() == [("beta",)]
        for sql in [
            "UPDATE accounts SET name = 'default-old' WHERE name = 'default'",
            "UPDATE accounts SET name = 'default' WHERE name = 'beta'",
            "DELETE FROM accounts",
        ]:
            assert conn.execute(sql).rowcount == 0, sql
        with pytest.raises(psycopg.errors.InsufficientPrivilege, match="row-level security"):
            conn.execute("INSERT INTO accounts (name, created_at) VALUES ('gamma', now())")
    finally:
        conn.close()
    names = [a["name"] for a in w.ok("accounts", "list", url=tenant_url)["accounts"]]
    assert names == ["beta"]
    before = w.ok("accounts", "create", "delta")["id"]  # an operator's
    refused = w.run("accounts", "create", "gamma", url=tenant_url)
    assert refused.returncode == 1, refused.stderr
    assert "bound to an account cannot create or change accounts" in refused.stderr
    # The refusal used up no id (found by review: the refused INSERT's own did).
    assert w.ok("accounts", "create", "gamma")["id"] == str(int(before) + 1)
    everyone = [a["name"] for a in w.ok("accounts", "list")["accounts"]]
    assert everyone == ["default", "beta", "delta", "gamma"]
    # config check asks a bound role for no writes on accounts (found by review).
    with connect_pg(str(make_url(db_url).database)) as admin:
        role = make_url(tenant_url).username
        admin.execute(f'REVOKE INSERT, UPDATE, DELETE ON accounts FROM "{role}"')  # type: ignore[arg-type]
    checked = w.run("config", "check", "--json", url=tenant_url)
    assert not any("on accounts" in e for e in checked.json["errors"]), checked.json


@pytest.mark.postgres
@pytest.mark.parametrize("dialect", ["postgresql"])
def test_a_bound_role_stays_bound_and_sees_only_its_own_binding(
    cli: CliRunner, db_url: str, tenant_url: str, tmp_path: Path
) -> None:
    """Found by a hostile tenant: deleting an account deleted its role's binding with
    it (ON DELETE CASCADE), and the unbound role then saw every account's rows; and
    every role could list all tenants' login roles (schema 20)."""
    world(cli, db_url, tmp_path, "")
    _bind_to_beta(db_url, tenant_url)
    role = str(make_url(tenant_url).username)
    assert cli("accounts", "create", "empty", db_url=db_url).returncode == 0
    with connect_pg(str(make_url(db_url).database)) as admin:
        admin.execute(
            "INSERT INTO account_roles (role_name, account_id)"
            " SELECT 'some_other_tenant', id FROM accounts WHERE name = 'empty'"
        )
        with pytest.raises(psycopg.errors.ForeignKeyViolation, match="account_roles"):
            admin.execute("DELETE FROM accounts WHERE name = 'empty'")
    conn = _raw(tenant_url)
    try:
        assert conn.execute("SELECT role_name FROM account_roles").fetchall() == [(role,)]
        assert conn.execute("SELECT title FROM notifications").fetchall() == [("beta-secret",)]
    finally:
        conn.close()


# --- report queries are bound to accounts ---------------------------------------


@pytest.mark.postgres
def test_a_query_is_only_for_the_accounts_its_config_lists(
    cli: CliRunner, db_url: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    queries = (
        '[reports.queries.mine]\nsql = "select 1 as one"\n'
        '[reports.queries.shared]\nsql = "select 1 as one"\ndatabase_url = "sqlite://"\n'
        'accounts = ["beta"]\n'
    )
    w = world(cli, db_url, tmp_path, queries)
    refused = w.run(
        "schedules", "create", "--name", "x", "--kind", "sql", "--param", "query=mine",
        "--cadence", "daily", "--at", "09:00", "--to", "ops@example.com", "--account", "beta",
    )  # fmt: skip
    assert (refused.returncode, refused.stdout) == (2, "")
    assert "report query 'mine' is not available to account 'beta'" in refused.stderr
    assert w.ok("schedules", "list", "--account", "beta")["schedules"] == []

    allowed = w.schedule("shared", account="beta")
    w.config.write_text(queries.replace('accounts = ["beta"]', 'accounts = ["default"]'))
    url = db_url
    if make_url(db_url).get_backend_name() == "postgresql":
        url = request.getfixturevalue("tenant_url")
    tick = w.run("tick", "--json", url=url, now=DUE)
    assert tick.returncode == 1
    [run] = w.runs(allowed, account="beta")
    assert (run["status"], run["attempt"]) == ("failed", 1)  # not retried
    assert "not available to account 'beta'" in run["error"]


@pytest.mark.parametrize("dialect", ["sqlite"])
@pytest.mark.parametrize("value", ["5", '"beta"', "[]", '[""]', "[1]"])
def test_a_malformed_accounts_key_is_a_config_error(
    cli: CliRunner, db_url: str, tmp_path: Path, value: str
) -> None:
    config = tmp_path / "schedctl.toml"
    config.write_text(f'[reports.queries.q]\nsql = "select 1"\naccounts = {value}\n')
    result = cli(
        "schedules", "create", "--name", "x", "--kind", "sql", "--param", "query=q",
        "--cadence", "daily", "--at", "09:00", "--to", "ops@example.com",
        db_url=db_url, env={"SCHEDCTL_CONFIG": str(config)},
    )  # fmt: skip
    assert (result.returncode, result.stdout) == (2, "")
    assert "[reports.queries.q] accounts: must be" in result.stderr


# --- SQLite report queries cannot attach, write or outlive their timeout -------


@pytest.mark.parametrize("dialect", ["sqlite"])
def test_a_sqlite_report_query_cannot_attach_a_file(db_url: str, tmp_path: Path) -> None:
    target = tmp_path / "created.db"
    with pytest.raises(reports.ReportFailed, match="read-only") as refused:
        _produce(db_url, f"attach database '{target}' as x")
    assert not refused.value.retryable
    assert not target.exists()


@pytest.mark.parametrize("dialect", ["sqlite"])
def test_a_report_query_on_a_missing_sqlite_file_creates_nothing(
    db_url: str, tmp_path: Path
) -> None:
    missing = tmp_path / "no-such.db"
    query = {"sql": "select 1 as one", "database_url": f"sqlite:///{missing}"}
    settings = Settings(database_url=db_url, reports_queries=report_queries({"q": query}))
    options = ScheduleOptions(
        name="s", kind="sql", cadence="daily", at="09:00", to=["ops@example.com"],
        params=["query=q"],
    )  # fmt: skip
    with Database(db_url, environ={}) as db:
        schedule = create_schedule(db, settings, 1, options, T0)
    with pytest.raises(reports.ReportFailed, match="unable to open"):
        reports.produce_report(settings, schedule, SLOT)
    assert not missing.exists()


def test_config_check_creates_no_database(cli: CliRunner, tmp_path: Path) -> None:
    missing = tmp_path / "no-such.db"
    result = cli("config", "check", db_url=f"sqlite:///{missing}")
    assert result.returncode == 2
    assert "no-such.db" in result.stdout
    assert not missing.exists()


@pytest.mark.parametrize("dialect", ["sqlite"])
def test_a_sqlite_report_query_is_cancelled_at_its_timeout(db_url: str) -> None:
    endless = (
        "WITH RECURSIVE r(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM r WHERE n < 10000000000)"
        " SELECT count(*) AS n FROM r"
    )
    with pytest.raises(reports.ReportFailed, match="cancelled after its timeout of 1 s"):
        _produce(db_url, endless, timeout="1s")
