"""Fixtures shared by the whole suite: real SQLite files and a real PostgreSQL server,
never mocks (tests/support/databases.py), the CLI in-process and as a process
(tests/support/cli.py), and servers on loopback.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator
from email.message import EmailMessage
from pathlib import Path
from typing import TYPE_CHECKING

import psycopg
import pytest
from hypothesis import settings as hypothesis_settings

from support.cli import CliRunner, Result, run_cli
from support.databases import (
    PG_HOST,
    PG_PORT,
    REQUIRE_PG,
    PostgresDatabases,
    connect_pg,
    fresh_database,
    login_role,
    pg_url,
)
from support.http_server import ScriptedHTTPServer
from support.smtp_server import SmtpServer

# Property tests explore new examples on every `make test`; CI (.ci/run sets
# HYPOTHESIS_PROFILE=ci) runs the same ones each time, so that whether a submission
# lands does not depend on the draw (a counterexample found locally stays in the test
# as an @example or an assume, with why).
hypothesis_settings.register_profile("ci", derandomize=True)
hypothesis_settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))

if TYPE_CHECKING:
    from schedctl.db.database import Database
    from support.distribute_files import Files

# Tests control their own configuration: nothing from the developer's shell leaks in.
# (SCHEDCTL_TEST_* variables configure the tests themselves and stay.)
for _name in list(os.environ):
    if _name.startswith("SCHEDCTL_") and not _name.startswith("SCHEDCTL_TEST_"):
        del os.environ[_name]


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresDatabases]:
    """The PostgreSQL server; skipped (or, in CI, failed) when it is unreachable."""
    try:
        with connect_pg():
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


@pytest.fixture
def cli(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> CliRunner:
    """`cli(*args, db_url=..., env=..., cwd=...)` runs schedctl in this process."""
    return CliRunner(monkeypatch, capsys)


@pytest.fixture
def cli_process() -> Callable[..., Result]:
    """`cli_process(*args, db_url=..., env=..., cwd=...)` runs the installed schedctl as
    a process: for the tests where processes matter."""
    return run_cli


@pytest.fixture
def db(db_url: str) -> Iterator[Database]:
    """A `Database` on this test's own database (``db_url``)."""
    from schedctl.db.database import Database

    with Database(db_url, environ={}) as database:
        yield database


@pytest.fixture
def http_server() -> Iterator[ScriptedHTTPServer]:
    """A real HTTP server on loopback that answers 200 and records every request."""
    server = ScriptedHTTPServer()
    yield server
    server.close()


@pytest.fixture
def closed_port() -> int:
    """A loopback port that refuses connections."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def smtp() -> Iterator[SmtpServer]:
    """A real SMTP server on loopback (aiosmtpd) that records what it receives."""
    with SmtpServer() as server:
        yield server


@pytest.fixture
def mailbox() -> list[EmailMessage]:
    """The memory mail backend's outbox, emptied: what an in-process command sent."""
    from schedctl.delivery import backends

    backends.clear_outbox()
    return backends.outbox


@pytest.fixture
def files(db_url: str, tmp_path: Path, cli: CliRunner) -> Files:
    """The distribute day the CLI tests run: source, campaigns and destinations as
    SQLite files (tests/support/distribute_files.py)."""
    from support.distribute_files import make_files

    return make_files(db_url, tmp_path, cli)


@pytest.fixture
def tenant_url(db_url: str) -> Iterator[str]:
    """A URL of the test database for a login role that PostgreSQL's row-level security
    applies to: superusers bypass it, so the RLS tests connect as a plain role made for
    each test, with the usual table rights, as production does."""
    with login_role(db_url, "schedctl_tenant") as url:
        yield url


# The tiers, slowest first: with xdist's load scheduling the long fault scenarios and
# process tests start early, and the short unit tests fill in at the end instead of a
# long test starting last and leaving the other worker idle.
TIER_ORDER = {"faults": 0, "acceptance": 1, "integration": 2, "unit": 3}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    items.sort(key=lambda item: TIER_ORDER.get(item.path.parent.name, len(TIER_ORDER)))


# The fault suite's ledger (tests/support/fault_ledger.py): the controlling process makes one
# directory before any xdist worker starts, so every worker appends to it, and prints
# the table once at the end.
def pytest_configure(config: pytest.Config) -> None:
    from support.fault_ledger import LEDGER_ENV

    if LEDGER_ENV not in os.environ and not hasattr(config, "workerinput"):
        import tempfile

        os.environ[LEDGER_ENV] = tempfile.mkdtemp(prefix="schedctl-faults-")


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    from support.fault_ledger import LEDGER_ENV, read, table

    directory = os.environ.get(LEDGER_ENV)
    if not directory or hasattr(terminalreporter.config, "workerinput"):
        return
    lines = table(read(Path(directory)))
    if lines:
        terminalreporter.write_sep("=", "fault suite")
        for line in lines:
            terminalreporter.write_line(line)
    shutil.rmtree(directory, ignore_errors=True)
