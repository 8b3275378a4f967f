"""Test harness: real SQLite files and a real PostgreSQL server, never mocks.

Each pytest process (xdist worker) migrates one template database per dialect once,
then hands every test that asks for ``db_url`` its own copy: a file copy on SQLite,
``CREATE DATABASE … TEMPLATE`` on PostgreSQL. Everything is dropped at the end.
Connection settings come from the usual PG* variables (default 127.0.0.1:5432).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from http_faults import ScriptedHTTPServer

# Tests control their own configuration: nothing from the developer's shell leaks in.
# (SCHEDCTL_TEST_* variables configure the tests themselves and stay.)
for _name in list(os.environ):
    if _name.startswith("SCHEDCTL_") and not _name.startswith("SCHEDCTL_TEST_"):
        del os.environ[_name]

REPO = Path(__file__).resolve().parents[1]
SCHEDCTL = Path(sys.executable).with_name("schedctl")
PG_HOST = os.environ.get("PGHOST", "127.0.0.1")
PG_PORT = int(os.environ.get("PGPORT", "5432"))
PG_USER = os.environ.get("PGUSER") or None
REQUIRE_PG = os.environ.get("SCHEDCTL_TEST_REQUIRE_POSTGRES") == "1"
RUN_ID = uuid.uuid4().hex[:8]


def pg_url(database: str) -> str:
    user = f"{PG_USER}@" if PG_USER else ""
    return f"postgresql+psycopg://{user}{PG_HOST}:{PG_PORT}/{database}"


def _admin() -> psycopg.Connection:
    return psycopg.connect(
        host=PG_HOST,
        port=PG_PORT,
        user=PG_USER,
        dbname="postgres",
        autocommit=True,
        connect_timeout=5,
    )


def _worker() -> str:
    return os.environ.get("PYTEST_XDIST_WORKER", "main")


class PostgresDatabases:
    """Creates the template and per-test copies, and drops them.

    A test's database is dropped by a background thread as soon as the test is
    done, so the drops (a few hundred ms each) overlap with the tests instead of
    piling up at the end of the session.
    """

    def __init__(self) -> None:
        import queue
        import threading

        self.prefix = f"schedctl_t_{RUN_ID}_{_worker()}"
        self.template = f"{self.prefix}_tpl"
        self.created: list[str] = []
        self.counter = 0
        self._to_drop: queue.Queue[str | None] = queue.Queue()
        self._dropper = threading.Thread(target=self._drop_loop, daemon=True)
        self._dropper.start()

    def _drop_loop(self) -> None:
        with _admin() as conn:
            while (name := self._to_drop.get()) is not None:
                conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')  # type: ignore[arg-type]

    def release(self, name: str) -> None:
        """The test using `name` is done: drop it in the background."""
        self.created.remove(name)
        self._to_drop.put(name)

    def create_template(self) -> None:
        from schedctl.db.database import Database
        from schedctl.db.migrations import upgrade

        self._create(self.template)
        with Database(pg_url(self.template)) as db:
            upgrade(db)

    def _create(self, name: str, template: str | None = None) -> None:
        with _admin() as conn:
            clause = f" TEMPLATE {template}" if template else ""
            if template and conn.info.server_version >= 150000:
                # 15's default WAL_LOG strategy makes each DROP at the end take ~1 s;
                # FILE_COPY is a little slower to create and far quicker overall.
                clause += " STRATEGY FILE_COPY"
            conn.execute(f'CREATE DATABASE "{name}"{clause}')  # type: ignore[arg-type]
        self.created.append(name)

    def new(self, *, migrated: bool = True) -> str:
        self.counter += 1
        name = f"{self.prefix}_{self.counter}"
        self._create(name, self.template if migrated else None)
        return name

    def drop_all(self) -> None:
        for name in list(self.created):
            if name != self.template:
                self.release(name)
        self._to_drop.put(self.template)
        self._to_drop.put(None)
        self._dropper.join()


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresDatabases]:
    """The PostgreSQL server; skipped (or, in CI, failed) when it is unreachable."""
    try:
        with _admin():
            pass
    except psycopg.OperationalError as exc:
        reason = f"PostgreSQL not reachable at {PG_HOST}:{PG_PORT}: {exc}"
        if REQUIRE_PG:
            pytest.fail(reason)
        pytest.skip(reason)
    databases = PostgresDatabases()
    databases.create_template()
    yield databases
    databases.drop_all()


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from schedctl.db.database import Database
    from schedctl.db.migrations import upgrade

    path = tmp_path_factory.mktemp("sqlite-template") / "template.db"
    with Database(f"sqlite:///{path}") as db:
        upgrade(db)
    return path


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def dialect(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def fresh_database(dialect: str, request: pytest.FixtureRequest, path: Path) -> Iterator[str]:
    """The URL of a freshly migrated database (a copy of the template: a new PostgreSQL
    database, or the SQLite file ``path``), dropped after the test; for fixtures."""
    if dialect == "postgresql":
        databases: PostgresDatabases = request.getfixturevalue("postgres")
        name = databases.new()
        yield pg_url(name)
        databases.release(name)
        return
    template: Path = request.getfixturevalue("sqlite_template")
    shutil.copyfile(template, path)
    yield f"sqlite:///{path}"


@pytest.fixture
def db_url(dialect: str, request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A freshly migrated database of its own for this test, on each dialect."""
    yield from fresh_database(dialect, request, tmp_path / "schedctl.db")


@pytest.fixture
def empty_db_url(dialect: str, request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A database with no schedctl schema at all, on each dialect."""
    if dialect == "postgresql":
        databases: PostgresDatabases = request.getfixturevalue("postgres")
        name = databases.new(migrated=False)
        yield pg_url(name)
        databases.release(name)
        return
    yield f"sqlite:///{tmp_path / 'empty.db'}"


def run_cli(
    *args: str,
    db_url: str | None = None,
    env: dict[str, str] | None = None,
    timeout: float = 60,
    cwd: Path | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run the installed `schedctl` as cron would: a separate process."""
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("SCHEDCTL_")}
    full_env["NO_COLOR"] = "1"
    if db_url:
        full_env["SCHEDCTL_DATABASE_URL"] = db_url
    full_env.update(env or {})
    return subprocess.run(
        [str(SCHEDCTL), *args],
        capture_output=True,
        text=True,
        env=full_env,
        timeout=timeout,
        cwd=cwd,
        check=False,
    )


@pytest.fixture
def cli() -> type[_Cli]:
    """`cli(*args, db_url=..., env=...)` runs the installed schedctl in a subprocess."""
    return _Cli


class _Cli:
    def __new__(  # type: ignore[misc]
        cls, *args: str, **kwargs: object
    ) -> subprocess.CompletedProcess[str]:
        return run_cli(*args, **kwargs)  # type: ignore[arg-type]


# A real HTTP server on loopback that answers 200 and records every request.
RecordingHTTPServer = ScriptedHTTPServer


@pytest.fixture
def http_server() -> Iterator[RecordingHTTPServer]:
    server = RecordingHTTPServer()
    yield server
    server.close()


@pytest.fixture
def closed_port() -> int:
    """A loopback port that refuses connections."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# The fault suite's ledger (tests/fault_ledger.py): the controlling process makes one
# directory before any xdist worker starts, so every worker appends to it, and prints
# the table once at the end.
def pytest_configure(config: pytest.Config) -> None:
    from fault_ledger import LEDGER_ENV

    if LEDGER_ENV not in os.environ and not hasattr(config, "workerinput"):
        import tempfile

        os.environ[LEDGER_ENV] = tempfile.mkdtemp(prefix="schedctl-faults-")


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    from fault_ledger import LEDGER_ENV, read, table

    directory = os.environ.get(LEDGER_ENV)
    if not directory or hasattr(terminalreporter.config, "workerinput"):
        return
    lines = table(read(Path(directory)))
    if lines:
        terminalreporter.write_sep("=", "fault suite")
        for line in lines:
            terminalreporter.write_line(line)
    shutil.rmtree(directory, ignore_errors=True)
