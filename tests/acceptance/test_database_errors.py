"""The database as the CLI meets it: bad URLs, read-only files, refused commands.

A database URL that libpq rejects is a configuration error (exit 2, at once), not
"database unavailable" (75, retried). Errors name the host and port given as
query parameters. A read-only SQLite file or directory still serves read-only
commands; writing commands fail with one line and exit 2. A refused command
writes nothing: no new SQLite file, no heartbeat row inserted and deleted again
(sqlite_sequence and PostgreSQL's sequences unchanged).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from schedctl import heartbeat
from schedctl.db.database import Database
from schedctl.db.schema import heartbeats
from support.cli import SCHEDCTL

CREATE = [
    "schedules", "create", "--name", "x", "--kind", "sql", "--param", "query=ping",
    "--cadence", "daily", "--at", "07:00", "--to", "ops@example.com",
]  # fmt: skip


@pytest.fixture
def config(tmp_path: Path) -> dict[str, str]:
    """The environment naming a config file with the report query CREATE uses."""
    path = tmp_path / "schedctl.toml"
    path.write_text('[reports.queries.ping]\nsql = "select 1 as one"\n')
    return {"SCHEDCTL_CONFIG": str(path), "SCHEDCTL_MAIL_BACKEND": "memory"}


@pytest.fixture
def run(cli, config: dict[str, str]):
    """`run(*args, db_url=..., cwd=...)`: schedctl with this test's configuration."""

    def invoke(*args: str, db_url: str | None = None, cwd: Path | None = None) -> Any:
        return cli(*args, db_url=db_url, cwd=cwd, env=config)

    return invoke


def one_error_line(result: subprocess.CompletedProcess[str]) -> str:
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("schedctl: error: "), lines[0]
    assert "internal error" not in lines[0]
    return lines[0]


# --- 8: libpq configuration errors are exit 2, not retried -----------------------------


@pytest.mark.parametrize(
    ("query", "named"),
    [
        ("sslmode=bogus", "sslmode"),
        ("connect_timeout=abc", "connect_timeout"),
        ("keepalives=x", "keepalives"),
        ("target_session_attrs=nonsense", "target_session_attrs"),
        ("no_such_option=1", "no_such_option"),
    ],
)
def test_invalid_connection_option_is_a_config_error_at_once(
    cli, query: str, named: str, tmp_path: Path
) -> None:
    url = f"postgresql://schedctl:Pw-Not-Shown@127.0.0.1:5432/schedctl?{query}"
    start = time.monotonic()
    result = cli("--database-url", url, "heartbeat", cwd=tmp_path)  # default: 20 s of retries
    elapsed = time.monotonic() - start
    assert result.returncode == 2, result.stderr
    line = one_error_line(result)
    assert named in line
    assert "unavailable" not in line
    assert "Pw-Not-Shown" not in result.stderr + result.stdout
    assert elapsed < 15, elapsed  # not retried for 20 s


@pytest.mark.postgres
@pytest.mark.parametrize(
    ("url", "named"),
    [
        ("postgresql://127.0.0.1:5432/schedctl_no_such_db", '"schedctl_no_such_db" does not exist'),
        ("postgresql://schedctl_no_such_role@127.0.0.1:5432/postgres", '"schedctl_no_such_role"'),
        (
            "postgresql://127.0.0.1:5432/postgres?options=-c%20statement_timeout%3Dabc",
            "statement_timeout",
        ),
        (
            "postgresql://127.0.0.1:5432/postgres?options=-c%20no_such_setting%3D1",
            "no_such_setting",
        ),
    ],
)
def test_a_server_that_refuses_the_settings_is_a_config_error_at_once(
    cli, url: str, named: str, tmp_path: Path
) -> None:
    # The server answers, and says the database or role does not exist or a setting is
    # wrong: no retry mends that, yet it exited 75 ("safe to rerun") after 5 s of them.
    start = time.monotonic()
    result = cli("--database-url", url, "tick", cwd=tmp_path)
    elapsed = time.monotonic() - start
    assert result.returncode == 2, result.stderr
    line = one_error_line(result)
    assert named in line
    assert "unavailable" not in line
    assert elapsed < 15, elapsed  # not retried for the default 20 s


def test_unreachable_server_is_still_temporary(cli, closed_port: int) -> None:
    url = f"postgresql://127.0.0.1:{closed_port}/schedctl?sslmode=prefer&connect_timeout=3"
    result = cli("--database-url", url, "heartbeat", env={"SCHEDCTL_DB_RETRY_SECONDS": "1"})
    assert result.returncode == 75, result.stderr
    assert "database unavailable" in one_error_line(result)


# --- 17: the error names the host and port libpq was given -----------------------------


def test_error_names_host_and_port_given_as_query_parameters(cli, closed_port: int) -> None:
    url = f"postgresql:///schedctl?host=127.0.0.1&port={closed_port}"
    result = cli("--database-url", url, "heartbeat", env={"SCHEDCTL_DB_RETRY_SECONDS": "1"})
    assert result.returncode == 75, result.stderr
    line = one_error_line(result)
    assert f"127.0.0.1:{closed_port}/schedctl" in line
    assert "localhost" not in line


def test_error_names_the_unix_socket_directory(cli, tmp_path: Path) -> None:
    url = f"postgresql:///schedctl?host={tmp_path}"
    result = cli("--database-url", url, "heartbeat", env={"SCHEDCTL_DB_RETRY_SECONDS": "1"})
    assert result.returncode == 75, result.stderr
    line = one_error_line(result)
    assert f"socket {tmp_path}" in line
    assert "localhost" not in line


# --- 9: read-only SQLite ----------------------------------------------------------------

# Root ignores file modes. Dropping CAP_DAC_OVERRIDE (and friends) from the bounding
# set makes the schedctl process subject to them while it stays uid 0, so a chmod'ed
# file or directory is as read-only to it as to any user.
UNPRIVILEGED = ["setpriv", "--bounding-set=-dac_override,-dac_read_search,-fowner"]


def _run_without_override(
    *args: str, db_url: str, config: dict[str, str]
) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SCHEDCTL_")}
    env.update(config, NO_COLOR="1", SCHEDCTL_DATABASE_URL=db_url, SCHEDCTL_DB_RETRY_SECONDS="1")
    prefix = UNPRIVILEGED if os.geteuid() == 0 else []
    return subprocess.run(
        [*prefix, str(SCHEDCTL), *args], capture_output=True, text=True, env=env, timeout=60
    )


@pytest.fixture
def sqlite_url(
    sqlite_template: Path, tmp_path: Path, config: dict[str, str]
) -> Iterator[tuple[str, Path]]:
    folder = tmp_path / "data"
    folder.mkdir()
    path = folder / "schedctl.db"
    shutil.copyfile(sqlite_template, path)
    url = f"sqlite:///{path}"
    assert _run_without_override(*CREATE, db_url=url, config=config).returncode == 0
    yield url, path
    folder.chmod(0o755)
    path.chmod(0o644)


def _dump(url: str) -> dict[str, Any]:
    """Every row of every table, sqlite_sequence and PostgreSQL's sequences included."""
    with Database(url, environ={}) as db:

        def work(conn: sa.Connection) -> dict[str, Any]:
            if conn.dialect.name == "sqlite":
                names = conn.exec_driver_sql(
                    "SELECT name FROM sqlite_master WHERE type = 'table'"
                ).scalars()
                tables = {n: conn.exec_driver_sql(f'SELECT * FROM "{n}"').all() for n in names}
                return {"tables": tables}
            names = conn.exec_driver_sql(
                "SELECT tablename FROM pg_tables WHERE schemaname = 'public'"
            ).scalars()
            tables = {n: conn.exec_driver_sql(f'SELECT * FROM "{n}"').all() for n in names}
            sequences = conn.exec_driver_sql(
                "SELECT sequencename, last_value FROM pg_sequences WHERE schemaname = 'public'"
            ).all()
            return {"tables": tables, "sequences": sorted(sequences)}

        return db.transaction(work, read_only=True)


def _can_drop_privileges() -> bool:
    if os.geteuid() != 0:
        return True
    if shutil.which("setpriv") is None:
        return False
    return subprocess.run([*UNPRIVILEGED, "true"], check=False).returncode == 0


needs_setpriv = pytest.mark.skipif(
    not _can_drop_privileges(), reason="cannot run schedctl without CAP_DAC_OVERRIDE here"
)

READ_COMMANDS = [
    ["schedules", "list", "--json"],
    ["schedules", "show", "1", "--json"],
    ["db", "status", "--json"],
    ["heartbeat", "--json"],
    ["accounts", "list", "--json"],
]
WRITE_COMMANDS = [
    [*CREATE[:3], "y", *CREATE[4:]],
    ["schedules", "pause", "1"],
    ["tick"],
    ["suppressions", "add", "someone@example.com"],
]


@needs_setpriv
@pytest.mark.parametrize("what", ["file", "directory"])
def test_read_only_sqlite_serves_reads_and_refuses_writes_on_one_line(
    sqlite_url: tuple[str, Path], config: dict[str, str], what: str
) -> None:
    url, path = sqlite_url
    before = _dump(url)
    if what == "file":
        path.chmod(0o444)
    else:
        path.parent.chmod(0o555)
    for args in READ_COMMANDS:
        result = _run_without_override(*args, db_url=url, config=config)
        assert result.returncode == 0, (args, result.stderr)
        assert result.stdout.strip().startswith("{"), args
    listed = _run_without_override("schedules", "list", "--json", db_url=url, config=config)
    assert "schedules" in listed.stdout
    for args in WRITE_COMMANDS:
        result = _run_without_override(*args, db_url=url, config=config)
        assert result.returncode == 2, (args, result.stderr)
        line = one_error_line(result)
        assert "read-only" in line, line
        assert str(path) in line, line
    path.parent.chmod(0o755)
    path.chmod(0o644)
    assert _dump(url) == before


def test_read_only_uri_serves_reads_and_refuses_writes(run, sqlite_url: tuple[str, Path]) -> None:
    url, path = sqlite_url
    before = _dump(url)
    read_only = f"sqlite:///file:{path}?mode=ro&uri=true"
    for args in READ_COMMANDS:
        result = run(*args, db_url=read_only)
        assert result.returncode == 0, (args, result.stderr)
    for args in WRITE_COMMANDS:
        result = run(*args, db_url=read_only)
        assert result.returncode == 2, (args, result.stderr)
        assert "read-only" in one_error_line(result)
    assert _dump(url) == before


def test_a_red_check_on_a_read_only_file_stays_red(run, sqlite_url: tuple[str, Path]) -> None:
    # The heartbeat_red alert it cannot record used to make the check UNKNOWN (exit 3).
    url, path = sqlite_url
    with Database(url, environ={}) as db:
        at = db.now() - timedelta(hours=2)
        row = heartbeat.start_run(db, "tick", at)
        heartbeat.finish_run(db, row, finished_at=at, exit_code=0, counts={})
    read_only = f"sqlite:///file:{path}?mode=ro&uri=true"
    result = run("heartbeat", "--check", "-c", "tick", "--json", db_url=read_only)
    assert result.returncode == 2, result
    data = json.loads(result.stdout)
    assert data["status"] == "red"
    [warning] = [w for w in data["warnings"] if "heartbeat_red" in w]
    assert warning.startswith("the heartbeat_red alert was not recorded: "), warning
    assert "read-only" in warning, warning


# --- 10: nothing written by a refused command -----------------------------------------


@pytest.mark.parametrize(
    "args",
    [["tick"], ["schedules", "list"], ["heartbeat"], ["db", "status"], CREATE],
    ids=" ".join,
)
def test_a_command_in_an_empty_directory_creates_no_database(
    run, tmp_path: Path, args: list[str]
) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    result = run(*args, cwd=empty)  # the default URL: sqlite:///schedctl.db
    assert result.returncode == 2, result.stderr
    assert "schedctl db upgrade" in one_error_line(result)
    assert list(empty.iterdir()) == []


def test_db_upgrade_still_creates_the_file(run, tmp_path: Path) -> None:
    result = run("db", "upgrade", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "schedctl.db").exists()
    assert run("tick", cwd=tmp_path).returncode == 0


REFUSED = [
    [*CREATE[:-1], "not-an-address"],
    [*CREATE, "--tz", "Mars/Olympus"],
    ["schedules", "delete", "999"],
    ["schedules", "pause", "999"],
    ["schedules", "show", "999"],
    ["schedules", "list", "--account", "nosuch"],
    ["messages", "edit", "1", "--status", "exploded"],
    ["suppressions", "add", "nobody"],
    ["events", "add", "--name", "e", "--starts-at", "tomorrow", "--contact", "a@example.com"],
]


@pytest.mark.parametrize("args", REFUSED, ids=lambda a: " ".join(a[:2] + a[-2:]))
def test_a_refused_command_leaves_every_table_and_sequence_as_it_was(
    run, db_url: str, args: list[str]
) -> None:
    assert run(*CREATE, db_url=db_url).returncode == 0  # a heartbeat row exists already
    before = _dump(db_url)
    result = run(*args, db_url=db_url)
    assert result.returncode == 2, result.stderr
    one_error_line(result)
    assert _dump(db_url) == before


def _heartbeats(db_url: str) -> list[tuple[str, str, int | None]]:
    with Database(db_url, environ={}) as db:
        rows = db.transaction(
            lambda c: c.execute(
                sa.select(
                    heartbeats.c.command, heartbeats.c.outcome, heartbeats.c.exit_code
                ).order_by(heartbeats.c.id)
            ).all(),
            read_only=True,
        )
    return [tuple(row) for row in rows]


def test_commands_that_ran_still_record_their_heartbeat(run, db_url: str) -> None:
    """Those that write do; those that only read never record one."""
    for args in (CREATE, ["schedules", "list"], ["tick"], ["heartbeat"]):
        result = run(*args, db_url=db_url)
        assert result.returncode == 0, (args, result.stderr)
    assert _heartbeats(db_url) == [("schedules create", "success", 0), ("tick", "success", 0)]


def test_a_failed_command_records_its_failure(run, db_url: str) -> None:
    """A command that fails after it started working (not bad input) is recorded."""
    with Database(db_url, environ={}) as db:
        cascade = " CASCADE" if db.dialect == "postgresql" else ""
        db.transaction(lambda c: c.exec_driver_sql(f"DROP TABLE suppressions{cascade}"))
    result = run("suppressions", "add", "s@example.com", db_url=db_url)
    assert result.returncode == 1, result.stderr
    assert _heartbeats(db_url) == [("suppressions add", "failed", 1)]


@needs_setpriv
@pytest.mark.parametrize("what", ["file", "directory"])
def test_upgrade_of_an_up_to_date_read_only_sqlite_file_says_so(
    sqlite_url: tuple[str, Path], config: dict[str, str], what: str
) -> None:
    url, path = sqlite_url
    before = _dump(url)
    (path if what == "file" else path.parent).chmod(0o444 if what == "file" else 0o555)
    result = _run_without_override("db", "upgrade", db_url=url, config=config)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("schema up to date at version"), result.stdout
    as_json = _run_without_override("db", "upgrade", "--json", db_url=url, config=config)
    assert as_json.returncode == 0, as_json.stderr
    assert '"applied": []' in as_json.stdout
    path.parent.chmod(0o755)
    path.chmod(0o644)
    assert _dump(url) == before
