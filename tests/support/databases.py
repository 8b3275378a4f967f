"""Real test databases, never mocks: one migrated template per dialect and per pytest
process (xdist worker), and a copy of it for each test.

A copy is a file copy on SQLite and ``CREATE DATABASE … TEMPLATE`` on PostgreSQL;
everything is dropped at the end. Connection settings come from the usual PG*
variables (default 127.0.0.1:5432).
"""

from __future__ import annotations

import os
import queue
import shutil
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg
import pytest
from sqlalchemy.engine import make_url

PG_HOST = os.environ.get("PGHOST", "127.0.0.1")
PG_PORT = int(os.environ.get("PGPORT", "5432"))
PG_USER = os.environ.get("PGUSER") or None
REQUIRE_PG = os.environ.get("SCHEDCTL_TEST_REQUIRE_POSTGRES") == "1"
RUN_ID = uuid.uuid4().hex[:8]


def pg_url(database: str) -> str:
    user = f"{PG_USER}@" if PG_USER else ""
    return f"postgresql+psycopg://{user}{PG_HOST}:{PG_PORT}/{database}"


def connect_pg(dbname: str = "postgres") -> psycopg.Connection:
    """An autocommit connection to ``dbname`` as the test suite's superuser."""
    return psycopg.connect(
        host=PG_HOST,
        port=PG_PORT,
        user=PG_USER,
        dbname=dbname,
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
        self.prefix = f"schedctl_t_{RUN_ID}_{_worker()}"
        self.template = f"{self.prefix}_tpl"
        self.created: list[str] = []
        self.counter = 0
        self._to_drop: queue.Queue[str | None] = queue.Queue()
        self._dropper = threading.Thread(target=self._drop_loop, daemon=True)
        self._dropper.start()

    def _drop_loop(self) -> None:
        with connect_pg() as conn:
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
        with connect_pg() as conn:
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


@contextmanager
def login_role(db_url: str, prefix: str) -> Iterator[str]:
    """A URL of ``db_url``'s PostgreSQL database for a new login role with only SELECT,
    INSERT, UPDATE and DELETE on its tables (and its sequences): not a superuser, no
    BYPASSRLS, no right to create tables. Dropped afterwards."""
    role = f"{prefix}_{uuid.uuid4().hex[:12]}"
    dbname = str(make_url(db_url).database)
    with connect_pg() as admin:
        admin.execute(f'CREATE ROLE "{role}" LOGIN')  # type: ignore[arg-type]
    try:
        with connect_pg(dbname) as conn:
            conn.execute(
                f'GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO "{role}"'  # type: ignore[arg-type]
            )
            conn.execute(f'GRANT USAGE ON ALL SEQUENCES IN SCHEMA public TO "{role}"')  # type: ignore[arg-type]
        yield f"postgresql+psycopg://{role}@{PG_HOST}:{PG_PORT}/{dbname}"
    finally:
        with connect_pg(dbname) as conn:
            conn.execute(f'DROP OWNED BY "{role}"')  # type: ignore[arg-type]
        with connect_pg() as admin:
            admin.execute(f'DROP ROLE "{role}"')  # type: ignore[arg-type]


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


def account_owned_tables() -> list[str]:
    """Every table of schedctl's schema with an ``account_id`` column, from the metadata:
    the ones PostgreSQL's row-level security must scope. ``account_roles`` is not among
    them: it binds a login role to an account, and the policies read it (only the
    schema's owner writes it)."""
    from schedctl.db.schema import metadata

    names = {t.name for t in metadata.sorted_tables if "account_id" in t.c}
    names.remove("account_roles")  # KeyError if it is renamed: look at this list again
    return sorted(names)
