"""Accounts are isolated: through the CLI on both dialects, and by PostgreSQL's RLS.

Superusers bypass row-level security, so the PostgreSQL tests connect as a role made
for the test: a plain login role with the usual table rights, as production uses.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import psycopg
import pytest
import sqlalchemy as sa
from sqlalchemy.engine import make_url

from schedctl.accounts import create_account
from schedctl.config import Settings, report_queries
from schedctl.db.database import Database
from schedctl.db.schema import schedules
from schedctl.errors import PermissionDenied
from schedctl.schedules import runs
from schedctl.schedules.model import ScheduleOptions
from schedctl.schedules.store import create_schedule
from support.databases import account_owned_tables, connect_pg

T0 = datetime(2026, 6, 1, 8, 0, tzinfo=UTC)
RLS_TABLES = account_owned_tables()
# An external source: on schedctl's own database a superuser's query would be refused
# (TENANCY_UNSAFE), and these tests set up as the superuser.
PING = {"sql": "select 1 as one", "accounts": "*", "database_url": "sqlite://"}
SETTINGS_QUERIES = report_queries({"ping": PING})


def two_accounts(db_url: str) -> tuple[int, int, int]:
    """The default account and `other`, one schedule each with a run and a message."""
    settings = Settings(database_url=db_url, reports_queries=SETTINGS_QUERIES)
    with Database(db_url, environ={}) as db:
        other = db.transaction(lambda c: create_account(c, "other", T0))
        ids = []
        for account_id, name in [(1, "mine"), (other, "theirs")]:
            options = ScheduleOptions(
                name=name, kind="sql", cadence="daily", at="09:00",
                to=[f"{name}@example.com"], params=["query=ping"],
            )  # fmt: skip
            ids.append(create_schedule(db, settings, account_id, options, T0).id)
        runs.run_schedules(db, settings, T0 + timedelta(hours=1))
    return other, ids[0], ids[1]


@pytest.mark.postgres
@pytest.mark.parametrize("dialect", ["postgresql"])
def test_operator_commands_cannot_reach_another_accounts_schedule(
    cli, db_url: str, tenant_url: str
) -> None:
    """Through the CLI, connected as a role RLS applies to (the CLI's own account
    filter is dialect-independent and covered on SQLite in test_schedules_crud)."""
    other, mine, _ = two_accounts(db_url)

    def run(*args: str) -> tuple[int, str, str]:
        result = cli(*args, db_url=tenant_url)
        return result.returncode, result.stdout, result.stderr

    listed = json.loads(run("schedules", "list", "--account", "other", "--json")[1])
    assert [s["name"] for s in listed["schedules"]] == ["theirs"]
    for args in [
        ("schedules", "show", str(mine)),
        ("schedules", "update", str(mine), "--name", "stolen"),
        ("schedules", "delete", str(mine), "--yes"),
    ]:
        code, out, err = run(*args, "--account", str(other))
        assert (code, out) == (2, ""), args
        assert f"no schedule {mine} in account 'other'" in err
    history = json.loads(run("schedules", "runs", str(mine), "--json")[1])
    assert history["count"] == 1  # still there, with its run


@pytest.mark.postgres
@pytest.mark.parametrize("dialect", ["postgresql"])
def test_every_account_owned_table_has_forced_row_level_security(db_url: str) -> None:
    with connect_pg(str(make_url(db_url).database)) as conn:
        rows = conn.execute(
            "SELECT relname, relrowsecurity, relforcerowsecurity FROM pg_class"
            " WHERE relname = ANY(%s) AND relkind = 'r'",
            (RLS_TABLES,),
        ).fetchall()
        policies = conn.execute(
            "SELECT tablename, policyname FROM pg_policies WHERE tablename = ANY(%s)",
            (RLS_TABLES,),
        ).fetchall()
    assert sorted(rows) == sorted((t, True, True) for t in RLS_TABLES)
    assert sorted(policies) == sorted((t, f"{t}_account_scope") for t in RLS_TABLES)


@pytest.mark.postgres
@pytest.mark.parametrize("dialect", ["postgresql"])
def test_a_scoped_transaction_sees_and_changes_only_its_accounts_rows(
    db_url: str, tenant_url: str
) -> None:
    other, mine, theirs = two_accounts(db_url)
    url = make_url(tenant_url)
    with psycopg.connect(
        host=url.host, port=url.port, user=url.username, dbname=url.database
    ) as conn:
        conn.execute("SELECT set_config('schedctl.account_id', %s, true)", (str(other),))
        assert conn.execute("SELECT name FROM schedules").fetchall() == [("theirs",)]
        for table in ["schedule_runs", "messages"]:
            accounts = conn.execute(f"SELECT DISTINCT account_id FROM {table}").fetchall()  # type: ignore[arg-type]
            assert accounts == [(other,)], table
        changed = conn.execute("UPDATE schedules SET name = 'stolen' WHERE id = %s", (mine,))
        assert changed.rowcount == 0
        deleted = conn.execute("DELETE FROM schedule_runs WHERE schedule_id = %s", (mine,))
        assert deleted.rowcount == 0
        with pytest.raises(psycopg.errors.InsufficientPrivilege, match="row-level security"):
            conn.execute("UPDATE schedules SET account_id = 1 WHERE id = %s", (theirs,))
        conn.rollback()
        # Unscoped (the cross-account jobs: tick, digest, reconcile) sees every account.
        assert len(conn.execute("SELECT id FROM schedules").fetchall()) == 2


@pytest.mark.postgres
@pytest.mark.parametrize("dialect", ["postgresql"])
def test_a_database_handle_scoped_to_an_account_sees_only_its_rows(
    db_url: str, tenant_url: str
) -> None:
    other, _, _ = two_accounts(db_url)
    names = sa.select(schedules.c.name).order_by(schedules.c.name)
    with Database(tenant_url, account_id=other, environ={}) as scoped:
        assert scoped.transaction(lambda c: c.execute(names).scalars().all()) == ["theirs"]
        with pytest.raises(PermissionDenied, match="row-level security"):
            scoped.transaction(
                lambda c: c.execute(
                    schedules.insert().values(
                        account_id=1, name="planted", kind="sql", cadence="daily",
                        at_time="09:00", tz="UTC", recipients=[], params={}, active=True,
                        catchup="latest", created_at=T0, updated_at=T0,
                    )
                )
            )  # fmt: skip
    with Database(tenant_url, environ={}) as unscoped:
        assert unscoped.transaction(lambda c: c.execute(names).scalars().all()) == [
            "mine",
            "theirs",
        ]
