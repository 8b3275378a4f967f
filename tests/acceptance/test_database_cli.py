"""`db upgrade`, schema checks and database failures, as cron would see them."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import pytest
import sqlalchemy as sa

from schedctl.db.database import Database
from schedctl.db.migrations import expected_version, upgrade
from schedctl.db.schema import heartbeats, schema_migrations
from support.databases import connect_pg, login_role
from support.processes import Schedctl


def test_db_upgrade_twice(cli, empty_db_url: str) -> None:
    first = cli("db", "upgrade", "--json", db_url=empty_db_url)
    assert first.returncode == 0, first.stderr
    assert json.loads(first.stdout)["applied"]
    second = cli("db", "upgrade", "--json", db_url=empty_db_url)
    assert second.returncode == 0, second.stderr
    assert json.loads(second.stdout)["applied"] == []


def test_db_upgrade_from_two_processes_at_once(empty_db_url: str) -> None:
    from support.cli import SCHEDCTL, run_cli  # noqa: F401 - the same binary cron runs

    env = {"SCHEDCTL_DATABASE_URL": empty_db_url, "NO_COLOR": "1", "PATH": "/usr/bin:/bin"}
    processes = [
        Schedctl(
            [str(SCHEDCTL), "db", "upgrade", "--json"],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        for _ in range(4)
    ]  # fmt: skip
    results = [(p.wait(timeout=60), p.stdout.read(), p.stderr.read()) for p in processes]  # type: ignore[union-attr]
    for p in processes:
        p.stdout.close()  # type: ignore[union-attr]
        p.stderr.close()  # type: ignore[union-attr]
    assert [code for code, _, _ in results] == [0, 0, 0, 0], results
    applied = [len(json.loads(out)["applied"]) for _, out, _ in results]
    with Database(empty_db_url) as db:
        expected = expected_version(db.dialect)
        rows = db.scalar(sa.select(sa.func.count()).select_from(schema_migrations))
    assert sorted(applied) == [0, 0, 0, expected]
    assert rows == expected


def _versions_and_heartbeats(db_url: str) -> tuple[list[int], int]:
    with Database(db_url) as db:
        versions = db.transaction(
            lambda c: list(c.execute(sa.select(schema_migrations.c.version)).scalars()),
            read_only=True,
        )
        beats = db.scalar(sa.select(sa.func.count()).select_from(heartbeats))
    return sorted(versions), beats


postgresql_only = pytest.mark.parametrize(
    "dialect", [pytest.param("postgresql", marks=pytest.mark.postgres)]
)


@postgresql_only
def test_upgrade_of_an_up_to_date_schema_needs_no_create_privilege(cli, db_url: str) -> None:
    with login_role(db_url, "schedctl_weak") as url:
        result = cli("db", "upgrade", db_url=url)
        assert result.returncode == 0, result.stderr
        assert result.stdout.startswith("schema up to date at version"), result.stdout
        as_json = cli("db", "upgrade", "--json", db_url=url)
        assert as_json.returncode == 0, as_json.stderr
        data = json.loads(as_json.stdout)
        assert (data["applied"], data["version"]) == ([], expected_version("postgresql"))


@postgresql_only
def test_a_migration_the_role_may_not_apply_is_one_line_exit_2_nothing_written(
    cli, empty_db_url: str
) -> None:
    newest = expected_version("postgresql")
    with Database(empty_db_url) as db:
        upgrade(db, target=newest - 1)  # by the superuser
    before = _versions_and_heartbeats(empty_db_url)
    assert before[0] == list(range(1, newest))
    with login_role(empty_db_url, "schedctl_weak") as url:
        for flags in ([], ["--json"]):
            result = cli("db", "upgrade", *flags, db_url=url)
            assert result.returncode == 2, result.stderr
            lines = result.stderr.strip().splitlines()
            assert len(lines) == 1, lines
            assert "internal error" not in lines[0]
            assert "permission denied" in lines[0], lines[0]
            assert "as a role that may create tables" in lines[0], lines[0]
            if flags:
                assert json.loads(result.stdout)["error"]["code"] == 2
    assert _versions_and_heartbeats(empty_db_url) == before


def test_commands_refuse_a_database_that_was_never_upgraded(cli, empty_db_url: str) -> None:
    result = cli("heartbeat", db_url=empty_db_url)
    assert result.returncode == 2
    assert "schedctl db upgrade" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_commands_refuse_an_older_schema(cli, db_url: str) -> None:
    with Database(db_url) as db:
        newest = expected_version(db.dialect)
        db.transaction(
            lambda c: c.execute(
                schema_migrations.delete().where(schema_migrations.c.version == newest)
            )
        )
    result = cli("heartbeat", db_url=db_url)
    assert result.returncode == 2
    assert "run `schedctl db upgrade`" in result.stderr


@pytest.mark.parametrize(
    "url",
    ["postgresql://u:pw@host:notaport/db", "nonsense", "mysql://u@h/d", "oracle://u@h/svc"],
)
def test_bad_database_url_is_exit_2_with_nothing_written(cli, url: str, tmp_path: Path) -> None:
    result = cli("--database-url", url, "db", "upgrade", cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert "No such option" not in result.stderr
    assert ":pw@" not in result.stderr
    assert list(tmp_path.iterdir()) == []


def test_unreachable_database_is_exit_75_naming_the_host_not_the_password(cli) -> None:
    start = time.monotonic()
    result = cli(
        "--database-url",
        "postgresql://schedctl:Sup3rSecret@127.0.0.1:1/schedctl",
        "heartbeat",
        env={"SCHEDCTL_DB_RETRY_SECONDS": "2"},
    )
    elapsed = time.monotonic() - start
    assert result.returncode == 75, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith("schedctl: error: database unavailable")
    assert "127.0.0.1:1" in lines[0]
    assert "Sup3rSecret" not in result.stderr + result.stdout
    assert elapsed < 30


def test_secrets_in_config_never_reach_output(cli, db_url: str, tmp_path: Path) -> None:
    config = tmp_path / "schedctl.toml"
    config.write_text(
        '[smtp]\nuser = "reports"\npassword = "mail-Secret-1"\n[slack]\nwebhook_url = "https://hooks.example/T0/B0/xyz-Secret"\n'
    )
    result = cli("--config", str(config), "db", "status", "--json", "-v", db_url=db_url)
    assert result.returncode == 0, result.stderr
    assert "Secret" not in result.stdout + result.stderr


def test_unopenable_sqlite_file_is_a_config_error(cli, tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/no/such/dir/schedctl.db"
    result = cli("--database-url", url, "heartbeat")
    assert result.returncode == 2
    assert result.stderr.startswith("schedctl: error: cannot open sqlite file")
    assert len(result.stderr.strip().splitlines()) == 1


def test_no_command_prints_help_and_exits_2(cli) -> None:
    result = cli()
    assert result.returncode == 2
    assert result.stderr.startswith("Usage: schedctl")
    assert "heartbeat" in result.stderr


@postgresql_only
def test_a_privilege_the_role_lacks_is_one_line_exit_1(cli, db_url: str) -> None:
    # A login role whose grants miss a table schedctl writes: it used to exit 1 as an
    # "internal error" quoting the statement. Exit 1 still (not 2, "nothing written"):
    # a refusal can come after the command committed some of its work.
    with login_role(db_url, "schedctl_weak") as url:
        role = sa.engine.make_url(url).username
        with connect_pg(str(sa.engine.make_url(db_url).database)) as admin:
            admin.execute(f'REVOKE INSERT ON users FROM "{role}"')  # type: ignore[arg-type]
        assert cli("users", "list", db_url=url).returncode == 0  # what it may do, it does
        for flags in ([], ["--json"]):
            result = cli("users", "add", "weak@example.com", *flags, db_url=url)
            assert result.returncode == 1, result
            [line] = result.stderr.strip().splitlines()
            assert "database error" in line, line
            assert "permission denied for table users" in line, line
            assert "needs SELECT on its tables, and INSERT, UPDATE and DELETE" in line, line
            assert "[SQL" not in line, line
            if flags:
                assert json.loads(result.stdout)["error"]["code"] == 1
        listed = cli("users", "list", "--json", db_url=url)
        assert json.loads(listed.stdout)["users"] == []  # nothing was written

        # A job refused after it began is recorded as failed, as any refusal is.
        assert cli("tick", db_url=url).returncode == 0
        with connect_pg(str(sa.engine.make_url(db_url).database)) as admin:
            admin.execute(f'REVOKE UPDATE ON schedules FROM "{role}"')  # type: ignore[arg-type]
        assert cli("tick", db_url=url).returncode == 1
        with Database(db_url) as db:
            last = db.transaction(
                lambda c: c.execute(
                    sa.select(heartbeats.c.outcome, heartbeats.c.exit_code)
                    .where(heartbeats.c.command == "tick")
                    .order_by(heartbeats.c.id.desc())
                    .limit(1)
                ).one(),
                read_only=True,
            )
        assert tuple(last) == ("failed", 1)


@postgresql_only
@pytest.mark.parametrize("refusal", ["revoke", "trigger", "failing trigger"])
def test_a_run_whose_end_cannot_be_recorded_says_so(cli, db_url: str, refusal: str) -> None:
    # With UPDATE revoked on heartbeats a job's row stayed `running` and only a debug
    # line said why: monitoring then saw no success and nobody knew the cause. A
    # trigger's RAISE with a data error's SQLSTATE made the run an "internal error".
    name = str(sa.engine.make_url(db_url).database)
    with login_role(db_url, "schedctl_nobeat") as url:
        with connect_pg(name) as admin:
            if refusal == "revoke":
                role = sa.engine.make_url(url).username
                admin.execute(f'REVOKE UPDATE ON heartbeats FROM "{role}"')  # type: ignore[arg-type]
            else:
                body = (
                    "RAISE EXCEPTION 'heartbeats are frozen' USING ERRCODE = '22023'"
                    if refusal == "trigger"
                    else "PERFORM 1 / 0; RETURN NEW"  # not a RAISE: a driver error
                )
                admin.execute(
                    "CREATE FUNCTION frozen() RETURNS trigger LANGUAGE plpgsql AS"
                    f" $$ BEGIN {body}; END $$"  # type: ignore[arg-type]
                )
                admin.execute(
                    "CREATE TRIGGER frozen BEFORE UPDATE ON heartbeats"
                    " FOR EACH ROW EXECUTE FUNCTION frozen()"
                )
        result = cli("tick", db_url=url)
    assert result.returncode == 0, result
    [line] = result.stderr.strip().splitlines()
    assert "the end of this run was not recorded" in line, line
    assert {
        "revoke": "permission denied for table heartbeats",
        "trigger": "heartbeats are frozen (raised by a trigger or function in the database)",
        "failing trigger": "database error: division by zero",
    }[refusal] in line, line
    assert "[SQL" not in line, line
    with Database(db_url) as db:
        outcomes = db.transaction(
            lambda c: c.execute(sa.select(heartbeats.c.outcome)).scalars().all(), read_only=True
        )
    assert outcomes == ["running"]
