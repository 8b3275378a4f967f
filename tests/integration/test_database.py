"""The Database handle against real servers: clock, retries, error mapping."""

from __future__ import annotations

import contextlib
import json
import sqlite3
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import psycopg
import pytest
import sqlalchemy as sa

from schedctl import heartbeat
from schedctl.config import load_settings
from schedctl.db.database import Database, is_transient, retry_stop, wrap_unexpected
from schedctl.db.schema import accounts, heartbeats
from schedctl.distribute.endpoints import StageError, stage
from schedctl.errors import ConflictError, DatabaseRefused, DatabaseUnavailable
from support.cli import CliRunner
from support.databases import connect_pg, fresh_database, login_role
from support.driver_trace import trace_sent_ahead, trace_sqlalchemy, trace_statements


def test_server_clock_is_aware_utc_and_current(db_url: str) -> None:
    with Database(db_url, environ={}) as db:
        now = db.now()
    assert now.tzinfo is not None
    assert abs(now - datetime.now(UTC)) < timedelta(seconds=5)


def test_schedctl_now_replaces_the_clock(db_url: str) -> None:
    with Database(db_url, environ={"SCHEDCTL_NOW": "2026-03-29T01:30:00"}) as db:
        assert db.now() == datetime(2026, 3, 29, 1, 30, tzinfo=UTC)
    with Database(db_url, environ={"SCHEDCTL_NOW": "2026-03-29T03:30:00+02:00"}) as db:
        assert db.now() == datetime(2026, 3, 29, 1, 30, tzinfo=UTC)


def test_instants_round_trip_in_utc(db_url: str) -> None:
    berlin = datetime(2026, 7, 1, 9, 0, tzinfo=UTC).astimezone(
        __import__("zoneinfo").ZoneInfo("Europe/Berlin")
    )
    with Database(db_url) as db:
        db.transaction(
            lambda c: c.execute(accounts.insert().values(name="acme", created_at=berlin))
        )
        stored = db.scalar(sa.select(accounts.c.created_at).where(accounts.c.name == "acme"))
    assert stored == berlin
    assert stored.tzinfo == UTC


def test_unique_violation_becomes_a_conflict_with_the_constraint(db_url: str) -> None:
    with Database(db_url) as db:
        insert = accounts.insert().values(name="default", created_at=db.now())
        with pytest.raises(ConflictError) as caught:
            db.transaction(lambda c: c.execute(insert))
    assert caught.value.constraint is not None
    assert "name" in caught.value.constraint or "accounts" in caught.value.constraint


def test_unreachable_postgres_gives_up_with_a_temporary_error() -> None:
    start = time.monotonic()
    with (
        Database("postgresql://schedctl:pw-not-shown@127.0.0.1:1/nowhere", retry_seconds=1.5) as db,
        pytest.raises(DatabaseUnavailable) as caught,
    ):
        db.transaction(lambda c: c.execute(sa.text("SELECT 1")))
    assert time.monotonic() - start < 15
    assert "127.0.0.1:1" in caught.value.message
    assert "pw-not-shown" not in caught.value.message
    assert caught.value.exit_code == 75


@pytest.mark.parametrize(
    ("error", "transient"),
    [
        (psycopg.OperationalError("connection failed: Connection refused"), True),  # no SQLSTATE
        (psycopg.errors.ConnectionFailure("server closed the connection"), True),
        (psycopg.errors.AdminShutdown("terminating connection due to administrator command"), True),
        (psycopg.errors.CannotConnectNow("the database system is starting up"), True),
        (psycopg.errors.SerializationFailure("could not serialize access"), True),
        (psycopg.errors.DeadlockDetected("deadlock detected"), True),
        (psycopg.errors.LockNotAvailable("canceling statement due to lock timeout"), True),
        (psycopg.errors.TooManyConnections("too many clients already"), True),
        (psycopg.errors.DiskFull("could not extend file"), True),
        (psycopg.errors.IoError("could not read block"), True),
        (psycopg.errors.QueryCanceled("canceling statement due to statement timeout"), True),
        (psycopg.errors.IdleSessionTimeout("terminating connection due to idle timeout"), True),
        (psycopg.errors.FdwUnableToEstablishConnection("could not connect to server"), True),
        (psycopg.errors.UndefinedFile("could not open file"), False),
        (psycopg.errors.DuplicateFile("file already exists"), False),
        (psycopg.errors.ObjectNotInPrerequisiteState("does not have a replica identity"), False),
        (psycopg.errors.ProgramLimitExceeded("index row size exceeds maximum"), False),
        (psycopg.errors.DatabaseDropped("the database was dropped"), False),
        (psycopg.errors.ConfigFileError("configuration file contains errors"), False),
        (psycopg.errors.UndefinedColumn("column does not exist"), False),  # not operational
    ],
    ids=lambda value: type(value).__name__ if isinstance(value, Exception) else None,
)
def test_which_postgresql_errors_a_retry_may_get_past(error: Exception, transient: bool) -> None:
    # psycopg raises OperationalError for connection trouble and for refusals no retry
    # mends alike: the SQLSTATE tells them apart.
    assert is_transient(sa.exc.OperationalError("UPDATE messages ...", {}, error)) is transient


def test_retries_stop_at_the_configured_delay_not_after_ten_attempts() -> None:
    # SCHEDCTL_DB_RETRY_SECONDS=3600 gave up after about 10 s: a cap of 10 attempts.
    stop = retry_stop(3600)

    def state(attempt: int, seconds: float) -> Any:
        return SimpleNamespace(attempt_number=attempt, seconds_since_start=seconds)

    assert not stop(state(50, 600.0))
    assert stop(state(50, 3600.0))
    assert retry_stop(0)(state(1, 0.0))  # 0: no retry


def test_a_stray_driver_error_is_told_by_the_same_rule() -> None:
    lost = sa.exc.OperationalError("SELECT 1", {}, psycopg.errors.AdminShutdown("terminating"))
    refused = sa.exc.OperationalError(
        "DELETE FROM messages", {}, psycopg.errors.ObjectNotInPrerequisiteState("no identity")
    )
    assert [type(e).__name__ for e in map(wrap_unexpected, (lost, refused))] == [
        "DatabaseUnavailable",
        "DatabaseRefused",
    ]
    assert [e.exit_code for e in map(wrap_unexpected, (lost, refused)) if e] == [75, 1]
    assert wrap_unexpected(ValueError("a bug")) is None
    read_only = sa.exc.InternalError(
        "INSERT INTO runs ...", {}, psycopg.errors.ReadOnlySqlTransaction("read-only")
    )
    unavailable = wrap_unexpected(read_only)
    changed = [
        sa.exc.ProgrammingError("SELECT ...", {}, error("no such thing"))
        for error in (
            psycopg.errors.UndefinedTable,
            psycopg.errors.UndefinedColumn,
            psycopg.errors.RaiseException,
        )
    ]
    refusals = [wrap_unexpected(e) for e in changed]
    assert [(type(e).__name__, e.exit_code) for e in refusals if e] == [("DatabaseRefused", 1)] * 3
    assert [e.message for e in refusals if e] == [
        "database error: no such thing (was schedctl's schema changed by hand?)",
        "database error: no such thing (was schedctl's schema changed by hand?)",
        "database error: no such thing (raised by a trigger or function in the database)",
    ]
    bug = sa.exc.ProgrammingError("SELEC", {}, psycopg.errors.SyntaxError("syntax error"))
    assert wrap_unexpected(bug) is None  # schedctl's own mistake stays an internal error
    assert unavailable is not None
    assert unavailable.exit_code == 75
    assert "takes no writes" in unavailable.message


@pytest.fixture
def pg_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    yield from fresh_database("postgresql", request, tmp_path / "schedctl.db")


@pytest.mark.postgres
def test_a_refusal_no_retry_mends_fails_at_once_with_exit_1(pg_url: str, cli: CliRunner) -> None:
    # A publication that publishes updates and deletes of a table without a replica
    # identity: PostgreSQL refuses every UPDATE and DELETE of it (SQLSTATE 55000), and
    # would the next time too. It used to be retried for retry_seconds, then exit 75.
    engine = sa.create_engine(pg_url, poolclass=sa.pool.NullPool)
    with engine.begin() as conn:
        conn.execute(sa.text("ALTER TABLE messages REPLICA IDENTITY NOTHING"))
        conn.execute(sa.text("CREATE PUBLICATION refusing FOR TABLE messages"))
    try:
        start = time.monotonic()
        with (
            Database(pg_url, retry_seconds=20) as db,
            pytest.raises(DatabaseRefused) as caught,
        ):
            db.transaction(lambda c: c.execute(sa.text("UPDATE messages SET status = status")))
        assert time.monotonic() - start < 10  # not retried for 20 s
        assert caught.value.exit_code == 1
        assert "replica identity" in caught.value.message
        assert db.target in caught.value.message

        result = cli("messages", "delete-all", "--confirm", db_url=pg_url)
        assert result.returncode == 1, result
        [line] = result.stderr.strip().splitlines()
        assert "database error" in line, line
        assert "replica identity" in line, line
    finally:
        with engine.begin() as conn:  # (the database goes back to the tests' pool)
            conn.execute(sa.text("DROP PUBLICATION refusing"))
            conn.execute(sa.text("ALTER TABLE messages REPLICA IDENTITY DEFAULT"))
        engine.dispose()


@pytest.mark.postgres
@pytest.mark.parametrize(
    "errcode",
    [
        "",
        ", ERRCODE = 'invalid_parameter_value'",
        # Codes whose own meaning would mislead: not a grant, a conflict, a standby.
        ", ERRCODE = 'insufficient_privilege'",
        ", ERRCODE = 'check_violation'",
        ", ERRCODE = 'read_only_sql_transaction'",
    ],
)
def test_an_error_a_trigger_raises_is_one_line_without_the_statement(
    pg_url: str, cli: CliRunner, errcode: str
) -> None:
    # Whatever SQLSTATE the RAISE gives (a data error's was an "internal error" with
    # the statement and the function's context).
    engine = sa.create_engine(pg_url, poolclass=sa.pool.NullPool)
    with engine.begin() as conn:
        conn.execute(
            sa.text(
                "CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN"
                f" RAISE EXCEPTION 'no new users today' USING HINT = 'ask ops'{errcode}; END $$"
            )
        )
        conn.execute(
            sa.text("CREATE TRIGGER refuse BEFORE INSERT ON users EXECUTE FUNCTION refuse()")
        )
    try:
        result = cli("users", "add", "new@example.com", db_url=pg_url)
        assert result.returncode == 1, result
        [line] = result.stderr.strip().splitlines()
        assert line.endswith(
            "no new users today (raised by a trigger or function in the database)"
        ), line
    finally:
        with engine.begin() as conn:  # (the database goes back to the tests' pool)
            conn.execute(sa.text("DROP TRIGGER refuse ON users"))
            conn.execute(sa.text("DROP FUNCTION refuse()"))
        engine.dispose()


@contextlib.contextmanager
def _database_settings(pg_url: str, **settings: str) -> Iterator[None]:
    """``ALTER DATABASE … SET`` each of ``settings`` on the test's database for the
    block (new sessions take them), reset afterwards: the database goes back to the
    tests' pool."""
    name = sa.engine.make_url(pg_url).database
    engine = sa.create_engine(pg_url, poolclass=sa.pool.NullPool)
    with engine.begin() as conn:
        for setting, value in settings.items():
            conn.execute(sa.text(f'ALTER DATABASE "{name}" SET {setting} = {value}'))
    try:
        yield
    finally:
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(sa.text("SET default_transaction_read_only = off"))
            for setting in settings:
                conn.execute(sa.text(f'ALTER DATABASE "{name}" RESET {setting}'))
        engine.dispose()


@pytest.mark.postgres
def test_date_and_interval_styles_set_on_the_database_change_nothing(
    pg_url: str, cli: CliRunner
) -> None:
    # psycopg reads timestamps in ISO DateStyle only, and intervals in the postgres
    # IntervalStyle: a database set to 'SQL, DMY' (or 'German') made every command an
    # "internal error: NotImplementedError: can't parse timestamptz with DateStyle".
    with _database_settings(pg_url, DateStyle="'SQL, DMY'", IntervalStyle="sql_standard"):
        env = {"SCHEDCTL_NOW": "2027-03-28T09:00:00Z", "SCHEDCTL_MAIL_BACKEND": "memory"}
        for args in (
            ("users", "add", "ann@example.com", "--digest-at", "08:00"),
            ("notify", "--user", "ann@example.com", "--title", "hello"),
            ("digest", "--json"),
            ("tick", "--json"),
            ("users", "list", "--json"),
            ("messages", "list", "--json"),
        ):
            result = cli(*args, db_url=pg_url, env=env)
            assert result.returncode == 0, (args, result.stderr)
        listed = json.loads(cli("messages", "list", "--json", db_url=pg_url, env=env).stdout)
        [mail] = listed["messages"]
        assert mail["status"] == "sent"
        with Database(pg_url) as db:
            assert db.scalar(sa.text("SELECT now() - now() + interval '1 day 2 hours'")) == (
                timedelta(days=1, hours=2)
            )
            assert db.scalar(sa.text("SHOW DateStyle")).startswith("ISO")


@pytest.mark.postgres
def test_a_server_that_takes_no_writes_fails_at_once_with_exit_75(
    pg_url: str, cli: CliRunner
) -> None:
    # A hot standby -- an old primary after a failover -- refuses every write with
    # SQLSTATE 25006, as does a database with default_transaction_read_only on. It used
    # to exit 1 as an "internal error" quoting the statement.
    with _database_settings(pg_url, default_transaction_read_only="on"):
        start = time.monotonic()
        with (
            Database(pg_url, retry_seconds=20) as db,
            pytest.raises(DatabaseUnavailable) as caught,
        ):
            db.transaction(lambda c: c.execute(sa.text("UPDATE messages SET status = status")))
        assert time.monotonic() - start < 10  # not retried for 20 s
        assert caught.value.exit_code == 75
        assert "takes no writes" in caught.value.message
        assert db.target in caught.value.message

        # What a caller made read-only itself (a source query that writes) is that
        # query's own error, not the server's state.
        with Database(pg_url, retry_seconds=20) as db, pytest.raises(sa.exc.InternalError):
            db.transaction(
                lambda c: c.execute(sa.text("UPDATE messages SET status = status")),
                read_only=True,
            )

        for args in (("tick",), ("users", "add", "ro@example.com"), ("digest",)):
            result = cli(*args, db_url=pg_url)
            assert result.returncode == 75, (args, result)
            [line] = result.stderr.strip().splitlines()
            assert "database unavailable" in line, line
            assert "takes no writes" in line, line
            assert "[SQL" not in line, line
        assert cli("users", "list", "--json", db_url=pg_url).returncode == 0  # reads work
    with Database(pg_url) as db:  # nothing was written
        assert db.scalar(sa.text("SELECT count(*) FROM users")) == 0


@pytest.mark.postgres
def test_a_privilege_a_distribute_endpoint_lacks_is_its_stages_error(pg_url: str) -> None:
    # The hint about schedctl's own grants is for schedctl's own database; a source's
    # or destination's refusal is its stage's, named once.
    name = str(sa.engine.make_url(pg_url).database)
    with login_role(pg_url, "schedctl_reader") as url:
        with connect_pg(name) as admin:
            admin.execute("CREATE TABLE camps (id integer)")  # not granted to the role
        db = Database(url, create=False, store=False, retry_seconds=1)
        try:
            with pytest.raises(StageError) as caught, stage("campaigns", db):
                db.transaction(lambda c: c.execute(sa.text("SELECT * FROM camps")))
        finally:
            db.close()
            with connect_pg(name) as admin:
                admin.execute("DROP TABLE camps")
    assert caught.value.message == f"campaigns ({db.target}): permission denied for table camps"
    assert caught.value.exit_code == 1


def test_sqlite_writer_waits_for_the_lock_instead_of_failing(tmp_path: Path) -> None:
    """A second writer blocks on BEGIN IMMEDIATE until the first commits."""
    from schedctl.db.migrations import upgrade

    url = f"sqlite:///{tmp_path / 'lock.db'}"
    with Database(url) as db:
        upgrade(db)
    holder = sqlite3.connect(tmp_path / "lock.db", isolation_level=None, check_same_thread=False)
    holder.execute("BEGIN IMMEDIATE")
    released = threading.Event()

    def release() -> None:
        time.sleep(0.5)
        holder.execute("COMMIT")
        released.set()

    thread = threading.Thread(target=release)
    thread.start()
    try:
        with Database(url) as db:
            db.transaction(
                lambda c: c.execute(accounts.insert().values(name="late", created_at=db.now()))
            )
        assert released.is_set()
    finally:
        thread.join()
        holder.close()


def test_heartbeat_rows_and_report(db_url: str) -> None:
    settings = load_settings({}, environ={})
    t0 = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)
    with Database(db_url) as db:
        tick = heartbeat.start_run(db, "tick", t0)
        heartbeat.finish_run(db, tick, finished_at=t0, exit_code=0, counts={"due": 3})
        reconcile = heartbeat.start_run(db, "reconcile", t0)
        heartbeat.finish_run(db, reconcile, finished_at=t0, exit_code=1, counts={})
        heartbeat.start_run(db, "digest", t0 + timedelta(minutes=1))  # never finished

        report = {h.command: h for h in heartbeat.report(db, settings, t0 + timedelta(minutes=20))}
        row = db.transaction(
            lambda c: c.execute(sa.select(heartbeats).where(heartbeats.c.id == tick)).one()
        )
    assert row.outcome == "success"
    assert row.counts == {"due": 3}
    assert row.host
    assert report["tick"].status == "yellow"
    assert report["tick"].age_s == 20 * 60
    assert report["reconcile"].status == "unknown"  # it ran, but never succeeded
    assert report["reconcile"].last_outcome == "failed"
    assert report["digest"].last_outcome == "running"
    assert "distribute" not in report  # never ran and not configured: not judged
    assert heartbeat.overall(list(report.values())) == "yellow"


def test_sqlite_runs_in_wal_mode_with_a_busy_timeout(tmp_path: Path) -> None:
    from schedctl.db.engine import SQLITE_BUSY_TIMEOUT_MS

    with Database(f"sqlite:///{tmp_path / 'wal.db'}") as db:
        mode, timeout, fks = db.transaction(
            lambda c: (
                c.exec_driver_sql("PRAGMA journal_mode").scalar(),
                c.exec_driver_sql("PRAGMA busy_timeout").scalar(),
                c.exec_driver_sql("PRAGMA foreign_keys").scalar(),
            )
        )
    assert (mode, timeout, fks) == ("wal", SQLITE_BUSY_TIMEOUT_MS, 1)


def test_oracle_urls_make_source_engines_but_not_a_store() -> None:
    from schedctl.db.engine import create_engine
    from schedctl.errors import ConfigError

    engine = create_engine("oracle://scott:tiger@db.example:1521/?service_name=ORCL", store=False)
    assert engine.dialect.name == "oracle"
    assert engine.dialect.driver == "oracledb"
    assert "tiger" not in repr(engine)
    with pytest.raises(ConfigError, match="not as schedctl's own database"):
        create_engine("oracle://scott:tiger@db.example:1521/?service_name=ORCL")


def test_a_pinned_thread_runs_its_transactions_on_one_connection(db_url: str) -> None:
    """Inside pinned() a thread keeps one connection for all its transactions (reads and
    writes alike); one that failed is given up, and the next transaction takes another;
    other threads never share it."""
    seen: list[sa.Connection] = []

    def note(conn: sa.Connection) -> None:
        seen.append(conn)

    def fail(conn: sa.Connection) -> None:
        raise ZeroDivisionError

    elsewhere: list[sa.Connection] = []
    with Database(db_url) as db:
        with db.pinned():
            db.transaction(note)
            db.transaction(note, read_only=True)
            db.transaction(note)
            with pytest.raises(ZeroDivisionError):
                db.transaction(fail)
            db.transaction(note)
            db.transaction(note)
            other = threading.Thread(target=lambda: db.transaction(elsewhere.append))
            other.start()
            other.join()
        db.transaction(note)  # outside: a connection of its own again

    first, second, third, after, again, unpinned = seen
    assert first is second is third
    assert after is again
    assert after is not first
    assert unpinned not in (first, after)
    assert elsewhere[0] not in (first, after)


def test_concurrent_threads_write_the_first_write_record_once(db_url: str) -> None:
    """on_first_write's record goes into one thread's write transaction, never two."""
    records: list[int] = []
    start = threading.Barrier(4)

    def write() -> None:
        start.wait()
        with db.pinned():
            for _ in range(5):
                db.transaction(lambda conn: conn.execute(sa.select(1)))

    with Database(db_url) as db:
        db.on_first_write(lambda conn: records.append(1))
        threads = [threading.Thread(target=write) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        pending = db.first_write_pending

    assert records == [1]
    assert not pending


@pytest.mark.parametrize("pinned", [True, False], ids=["pinned", "unpinned"])
def test_write_alone_commits_its_statement_and_leaves_transactions_as_they_were(
    db_url: str, pinned: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """write_alone's statement is committed when it returns (PostgreSQL: committed as it
    ran, with no BEGIN; elsewhere: a transaction of its own); the connection's next
    transactions still roll back as a whole. On a pinned connection it runs on the
    driver (PostgreSQL: sent as send_alone sends it, on libpq), not through
    SQLAlchemy; elsewhere through it."""

    def half_then_fail(conn: sa.Connection) -> None:
        conn.execute(accounts.insert().values(name="half", created_at=now))
        raise ZeroDivisionError

    with Database(db_url) as db, db.pinned() if pinned else contextlib.nullcontext():
        driver = trace_statements(db.engine)
        through_sqlalchemy = trace_sqlalchemy(db.engine)
        ahead = trace_sent_ahead(monkeypatch)
        now = db.now()
        before = len(through_sqlalchemy)
        written = db.write_alone([accounts.insert()], {"name": "alone", "created_at": now})
        alone, sqlalchemy_ran = list(driver), through_sqlalchemy[before:]
        with Database(db_url) as other:  # committed: another connection sees it
            assert other.scalar(sa.select(sa.func.count()).where(accounts.c.name == "alone")) == 1
        with pytest.raises(ZeroDivisionError):
            db.transaction(half_then_fail)
        db.transaction(lambda conn: conn.execute(sa.select(1)))
        after = driver[-1]
        names = db.scalar(sa.select(sa.func.count()).where(accounts.c.name == "half"))
        created = db.scalar(sa.select(accounts.c.created_at).where(accounts.c.name == "alone"))

    assert written == 1
    assert created == now
    inserts = [s for s in alone if s[0].startswith("INSERT")]
    if db.dialect == "postgresql":
        # Pinned: on libpq, where no cursor sees it; else a cursor in autocommit.
        sent = (["INSERT INTO accounts"], []) if pinned else ([], [("INSERT INTO accounts", True)])
        assert (ahead, inserts) == sent
        assert after == ("SELECT 1", False)
    else:
        at = alone.index(inserts[0])
        assert [s for s, _ in alone[at - 1 : at + 2]] == [
            "BEGIN IMMEDIATE",
            "INSERT INTO accounts",
            "COMMIT",
        ]
    assert ("INSERT" in sqlalchemy_ran) is not pinned
    assert names == 0


@pytest.mark.parametrize("pinned", [True, False], ids=["pinned", "unpinned"])
def test_write_alone_runs_the_later_statements_only_when_the_first_wrote_a_row(
    db_url: str, pinned: bool
) -> None:
    """The first statement writes no row: write_alone says 0 and runs nothing more;
    it writes one: the rest run, in the same transaction, with the values they name
    (instants converted as the column type converts them)."""
    rename = (
        accounts.update()
        .where(accounts.c.name == sa.bindparam("old"))
        .values(name=sa.bindparam("new"), created_at=sa.bindparam("at"))
    )
    log = accounts.insert().values(name=sa.bindparam("log"), created_at=sa.bindparam("at"))
    later = datetime(2027, 1, 2, 3, 4, 5, 678901, tzinfo=UTC)
    with Database(db_url) as db, db.pinned() if pinned else contextlib.nullcontext():
        now = db.now()
        db.transaction(lambda c: c.execute(accounts.insert().values(name="old", created_at=now)))
        nothing = db.write_alone(
            [rename, log], {"old": "absent", "new": "x", "log": "after nothing", "at": later}
        )
        one = db.write_alone(
            [rename, log], {"old": "old", "new": "renamed", "log": "after one", "at": later}
        )
        db.transaction(lambda c: c.execute(accounts.insert().values(name="sa", created_at=later)))
        rows = db.transaction(
            lambda c: c.execute(
                sa.select(
                    accounts.c.name, accounts.c.created_at, sa.cast(accounts.c.created_at, sa.Text)
                ).order_by(accounts.c.name)
            ).all()
        )

    assert (nothing, one) == (0, 1)
    assert [tuple(r)[:2] for r in rows if r.name != "default"] == [
        ("after one", later),
        ("renamed", later),
        ("sa", later),
    ]
    # Stored as SQLAlchemy stores it (SQLite: the same fixed-width text).
    assert len({r[2] for r in rows if r.name != "default"}) == 1


def test_a_write_the_driver_refuses_is_made_again_as_a_transaction(
    db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A pinned connection's write fails on the driver (here a unique key): the
    connection is dropped, and the write is made as a transaction, whose error is the
    caller's (ConflictError); the next transactions run as before."""
    duplicate = accounts.insert().values(name=sa.bindparam("n"), created_at=sa.bindparam("at"))
    with Database(db_url) as db, db.pinned():
        driver = trace_statements(db.engine)
        through_sqlalchemy = trace_sqlalchemy(db.engine)
        ahead = trace_sent_ahead(monkeypatch)
        now = db.now()
        db.write_alone([duplicate], {"n": "twice", "at": now})
        with pytest.raises(ConflictError):
            db.write_alone([duplicate], {"n": "twice", "at": now})
        written = db.write_alone([duplicate], {"n": "then", "at": now})
        names = db.transaction(
            lambda c: c.execute(sa.select(accounts.c.name).order_by(accounts.c.id)).scalars().all()
        )

    assert names[-2:] == ["twice", "then"]
    assert written == 1
    # The failed write was tried on the driver, then once more as a transaction
    # (through SQLAlchemy); the writes before and after it ran on the driver
    # (PostgreSQL: sent on libpq, which the cursor trace does not see).
    on_cursors = [s for s, _ in driver if s.startswith("INSERT")]
    assert on_cursors + ahead == ["INSERT INTO accounts"] * 4
    assert len(ahead) == (3 if db.dialect == "postgresql" else 0)
    assert through_sqlalchemy.count("INSERT") == 1


@pytest.mark.parametrize("dialect", ["postgresql"])
def test_write_alone_for_one_account_is_an_ordinary_transaction(db_url: str) -> None:
    """Row-level security's account scope lasts one transaction: a scoped handle's
    write_alone runs in one, with the scope set."""
    statements: list[tuple[str, bool]] = []

    def seen(conn: sa.Connection, cursor: object, statement: str, *_: object) -> None:
        raw = conn.connection.dbapi_connection
        statements.append((statement.split()[0], bool(getattr(raw, "autocommit", False))))

    with Database(db_url) as db:
        now = db.now()
        sa.event.listen(db.engine, "before_cursor_execute", seen)
        written = db.for_account(1).write_alone(
            [accounts.insert()], {"name": "scoped", "created_at": now}
        )

    assert written == 1
    assert statements == [("SELECT", False), ("INSERT", False)]  # set_config, then the row


@pytest.mark.parametrize("dialect", ["postgresql"])
def test_write_alone_on_a_connection_the_server_closed_retries_on_a_new_one(db_url: str) -> None:
    """The pinned connection's server process is gone (a restart, an operator's
    pg_terminate_backend): the statement fails as a lost connection, the connection is
    dropped, never put back to work in autocommit, and the statement runs again on a
    new one."""
    pid = sa.text("SELECT pg_backend_pid()")
    with Database(db_url) as db, db.pinned():
        now = db.now()
        first = db.transaction(lambda conn: conn.execute(pid).scalar())
        with Database(db_url) as other:
            other.transaction(
                lambda conn: conn.execute(sa.text("SELECT pg_terminate_backend(:p)"), {"p": first})
            )
        written = db.write_alone([accounts.insert()], {"name": "after", "created_at": now})
        second = db.transaction(lambda conn: conn.execute(pid).scalar())
        in_transaction = db.transaction(
            lambda conn: conn.execute(sa.text("SELECT now() = statement_timestamp()")).scalar()
        )

    assert written == 1
    assert second != first
    assert in_transaction is False  # a transaction again: its now() is its start's


@pytest.mark.parametrize("pinned", [True, False], ids=["pinned", "unpinned"])
def test_send_alone_tells_then_once_the_write_is_committed(
    db_url: str, pinned: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """send_alone on a pinned PostgreSQL connection returns with the statement sent
    ahead, and ``then`` waits for await_sent; anywhere else the write is made (as
    write_alone makes it) and ``then`` told before it returns. Either way ``then`` is
    told the rows written, once, and the row is committed by then."""
    rename = (
        accounts.update()
        .where(accounts.c.name == sa.bindparam("old"))
        .values(name=sa.bindparam("new"), created_at=sa.bindparam("at"))
    )
    later = datetime(2027, 1, 2, 3, 4, 5, 678901, tzinfo=UTC)
    told: list[tuple[str, int]] = []
    seen_by_another: list[int] = []
    with Database(db_url) as db, db.pinned() if pinned else contextlib.nullcontext():
        ahead = trace_sent_ahead(monkeypatch)
        now = db.now()
        db.transaction(lambda c: c.execute(accounts.insert().values(name="old", created_at=now)))
        db.send_alone(
            [rename], {"old": "old", "new": "renamed", "at": later},
            lambda n: told.append(("renamed", n)),
        )  # fmt: skip
        before_await = list(told)
        db.send_alone(  # (the same statement again: prepared once per session)
            [rename], {"old": "renamed", "new": "100% Ж'\\", "at": later},
            lambda n: told.append(("quoted", n)),
        )  # fmt: skip
        db.send_alone(
            [rename], {"old": "100% Ж'\\", "new": "renamed", "at": later},
            lambda n: told.append(("back", n)),
        )  # fmt: skip
        db.await_sent()
        with Database(db_url) as other:  # committed once told: another connection sees it
            seen_by_another.append(
                other.scalar(sa.select(sa.func.count()).where(accounts.c.name == "renamed"))
            )
        db.send_alone(
            [rename], {"old": "absent", "new": "x", "at": later},
            lambda n: told.append(("absent", n)),
        )  # fmt: skip
        db.await_sent()
        db.await_sent()  # (nothing left: a no-op)
        stored = db.scalar(sa.select(accounts.c.created_at).where(accounts.c.name == "renamed"))

    sends_ahead = pinned and db.dialect == "postgresql"
    assert before_await == ([] if sends_ahead else [("renamed", 1)])
    assert told == [("renamed", 1), ("quoted", 1), ("back", 1), ("absent", 0)]
    assert seen_by_another == [1]
    assert stored == later
    assert ahead == (["UPDATE accounts SET"] * 4 if sends_ahead else [])


def test_a_write_sent_ahead_is_awaited_before_the_threads_next_use(db_url: str) -> None:
    """Whatever the thread does next with the Database -- a transaction, another
    write, the end of pinned() -- the write sent ahead is awaited (and ``then`` told)
    first. (SQLite sends nothing ahead: ``then`` is told at once.)"""
    insert = accounts.insert().values(name=sa.bindparam("n"), created_at=sa.bindparam("at"))
    order: list[str] = []
    with Database(db_url) as db:
        now = db.now()
        with db.pinned():
            db.send_alone([insert], {"n": "a", "at": now}, lambda n: order.append(f"a:{n}"))
            db.transaction(lambda c: order.append("transaction"))
            db.send_alone([insert], {"n": "b", "at": now}, lambda n: order.append(f"b:{n}"))
            db.write_alone([insert], {"n": "c", "at": now})
            order.append("c written")
            db.send_alone([insert], {"n": "d", "at": now}, lambda n: order.append(f"d:{n}"))
            order.append("d sent")
        order.append("unpinned")
        names = db.transaction(
            lambda c: c.execute(sa.select(accounts.c.name).order_by(accounts.c.id)).scalars().all()
        )

    assert names[-4:] == ["a", "b", "c", "d"]
    last = ["d sent", "d:1"] if db.dialect == "postgresql" else ["d:1", "d sent"]  # (told at once)
    assert order == ["a:1", "transaction", "b:1", "c written", *last, "unpinned"]


@pytest.mark.parametrize("dialect", ["postgresql"])
def test_a_write_sent_ahead_that_fails_is_made_again_as_a_transaction(
    db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The server refuses the statement sent ahead (a unique key): await_sent drops the
    connection and makes the write as a transaction, whose error (ConflictError) is the
    caller's; ``then`` is not told. The next writes go ahead as before."""
    duplicate = accounts.insert().values(name=sa.bindparam("n"), created_at=sa.bindparam("at"))
    told: list[int] = []
    with Database(db_url) as db, db.pinned():
        through_sqlalchemy = trace_sqlalchemy(db.engine)
        ahead = trace_sent_ahead(monkeypatch)
        now = db.now()
        db.send_alone([duplicate], {"n": "twice", "at": now}, told.append)
        db.send_alone([duplicate], {"n": "twice", "at": now}, told.append)
        with pytest.raises(ConflictError):
            db.await_sent()
        db.send_alone([duplicate], {"n": "then", "at": now}, told.append)
        db.await_sent()
        names = db.transaction(
            lambda c: c.execute(sa.select(accounts.c.name).order_by(accounts.c.id)).scalars().all()
        )

    assert names[-2:] == ["twice", "then"]
    assert told == [1, 1]
    assert ahead == ["INSERT INTO accounts"] * 3
    assert through_sqlalchemy.count("INSERT") == 1  # the failed one's second try


@pytest.mark.parametrize("dialect", ["postgresql"])
def test_a_write_sent_ahead_whose_connection_dies_is_written_once(db_url: str) -> None:
    """The server process of the connection a write was sent ahead on is terminated
    before its reply is read: await_sent makes the write again on a new connection.
    The row is written once; ``then`` is told 1 if the first try never ran, 0 if it
    had committed (the guarded UPDATE then finds nothing left to do)."""
    pid = sa.text("SELECT pg_backend_pid()")
    claim = (
        accounts.update()
        .where(accounts.c.name == sa.bindparam("old"))
        .values(name=sa.bindparam("new"))
    )
    told: list[int] = []
    with Database(db_url) as db, db.pinned():
        now = db.now()
        db.transaction(lambda c: c.execute(accounts.insert().values(name="old", created_at=now)))
        first = db.transaction(lambda conn: conn.execute(pid).scalar())
        db.send_alone([claim], {"old": "old", "new": "new"}, told.append)
        with Database(db_url) as other:
            other.transaction(
                lambda conn: conn.execute(sa.text("SELECT pg_terminate_backend(:p)"), {"p": first})
            )
        db.await_sent()
        second = db.transaction(lambda conn: conn.execute(pid).scalar())
        names = db.transaction(
            lambda c: c.execute(sa.select(accounts.c.name).order_by(accounts.c.id)).scalars().all()
        )

    assert second != first
    assert names.count("new") == 1
    assert "old" not in names
    assert told in ([0], [1])
