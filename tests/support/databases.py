"""Real test databases, never mocks: one migrated template per dialect and per pytest
process (xdist worker), and a database as the template made it for each test.

On SQLite that is a file copy. On PostgreSQL it is ``CREATE DATABASE … TEMPLATE`` --
or a database an earlier test of this worker used, given back as the template made it
(see :class:`PostgresDatabases`). Everything is dropped at the end. Connection
settings come from the usual PG* variables (default 127.0.0.1:5432).
"""

from __future__ import annotations

import os
import queue
import shutil
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

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
    """Creates the template and per-test databases, and drops them.

    Creating a database from the template costs a checkpoint and the fsync of its
    files (about a third of a second per test under the suite's load), so a migrated
    database a test is done with is given back as the template made it and used again
    by a later test of this worker: other sessions on it ended, every table emptied
    and the template's rows put back, every sequence set to the template's value --
    unless the test changed anything but rows (a table, column, index, constraint,
    policy, trigger, function, privilege, setting: compared with the template's
    fingerprint) or left it large, in which case it is dropped and the next test gets
    a new copy. Drops run in a background thread as soon as the test is done, so
    they overlap with the tests instead of piling up at the end of the session.
    """

    def __init__(self) -> None:
        self.prefix = f"schedctl_t_{RUN_ID}_{_worker()}"
        self.template = f"{self.prefix}_tpl"
        self.created: list[str] = []
        self.counter = 0
        self._reusable: set[str] = set()  # copies of the migrated template
        self._clean: list[str] = []  # ... given back as the template made them
        self._snapshot: _Snapshot | None = None
        self._to_drop: queue.Queue[str | None] = queue.Queue()
        self._dropper = threading.Thread(target=self._drop_loop, daemon=True)
        self._dropper.start()

    def _drop_loop(self) -> None:
        with connect_pg() as conn:
            while (name := self._to_drop.get()) is not None:
                conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')  # type: ignore[arg-type]

    def release(self, name: str) -> None:
        """The test using `name` is done: keep it for another test if it can be made
        as the template made it, else drop it in the background."""
        if name in self._clean:
            raise ValueError(f"test database {name} was given back twice")
        if name in self._reusable and self._snapshot is not None:
            if self._snapshot.restore(name):
                self._clean.append(name)
                return
            self._reusable.discard(name)
        self.created.remove(name)
        self._to_drop.put(name)

    def create_template(self) -> None:
        from schedctl.db.database import Database
        from schedctl.db.migrations import upgrade

        self._create(self.template)
        with Database(pg_url(self.template)) as db:
            upgrade(db)
        self._snapshot = _Snapshot.take(self.template)

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
        if migrated and self._clean:
            return self._clean.pop()
        self.counter += 1
        name = f"{self.prefix}_{self.counter}"
        self._create(name, self.template if migrated else None)
        if migrated:
            self._reusable.add(name)
        return name

    def drop_all(self) -> None:
        for name in self.created:
            if name != self.template:
                self._to_drop.put(name)
        self.created.clear()
        self._to_drop.put(self.template)
        self._to_drop.put(None)
        self._dropper.join()


# Everything about a database but its rows, as text: compared before a database is used
# again (a test that changed any of it gets a new copy of the template instead).
_FINGERPRINT = """
SELECT md5(string_agg(item, E'\\n' ORDER BY item)) FROM (
    SELECT format('class %s %s %s %s %s %s', c.relname, c.relkind, c.relpersistence,
                  c.relrowsecurity, c.relforcerowsecurity, c.relacl) AS item
    FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
    WHERE n.nspname NOT IN ('pg_catalog', 'information_schema', 'pg_toast')
      AND n.nspname NOT LIKE 'pg_temp%' AND n.nspname NOT LIKE 'pg_toast_temp%'
    UNION ALL
    SELECT format('column %s.%s %s %s %s %s %s', a.attrelid::regclass, a.attname,
                  a.atttypid::regtype, a.attnotnull, a.attidentity, a.attisdropped,
                  pg_get_expr(d.adbin, d.adrelid))
    FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid
    JOIN pg_namespace n ON n.oid = c.relnamespace
    LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
    WHERE n.nspname = 'public' AND a.attnum > 0
    UNION ALL
    SELECT format('index %s %s', indexrelid::regclass, pg_get_indexdef(indexrelid))
    FROM pg_index i JOIN pg_class c ON c.oid = i.indrelid
    JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = 'public'
    UNION ALL
    SELECT format('constraint %s %s %s', conrelid::regclass, conname,
                  pg_get_constraintdef(co.oid))
    FROM pg_constraint co JOIN pg_namespace n ON n.oid = co.connamespace
    WHERE n.nspname = 'public'
    UNION ALL
    SELECT format('policy %s %s %s %s %s %s', polrelid::regclass, polname, polcmd,
                  polroles, pg_get_expr(polqual, polrelid), pg_get_expr(polwithcheck, polrelid))
    FROM pg_policy
    UNION ALL
    SELECT format('trigger %s %s %s', tgrelid::regclass, tgname, tgenabled)
    FROM pg_trigger WHERE NOT tgisinternal
    UNION ALL
    SELECT format('function %s %s %s', p.oid::regprocedure, md5(p.prosrc), p.proacl)
    FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
    WHERE n.nspname NOT IN ('pg_catalog', 'information_schema')
    UNION ALL
    SELECT format('schema %s %s', nspname, nspacl) FROM pg_namespace
    UNION ALL
    SELECT format('extension %s %s', extname, extversion) FROM pg_extension
    UNION ALL
    SELECT format('setting %s %s', setrole, setconfig) FROM pg_db_role_setting
    WHERE setdatabase = (SELECT oid FROM pg_database WHERE datname = current_database())
    UNION ALL
    SELECT format('database %s %s', datacl, datconnlimit) FROM pg_database
    WHERE datname = current_database()
    UNION ALL
    SELECT format('default acl %s', defaclacl) FROM pg_default_acl
) AS everything
"""
# A database used again has every table emptied one DELETE each (cheap while they are
# small); one the test left larger than this is dropped instead.
_REUSE_AT_MOST_BYTES = 32 * 1024 * 1024


@dataclass(frozen=True)
class _Snapshot:
    """What the migrated template holds: its fingerprint, rows and sequences."""

    fingerprint: str
    tables: tuple[str, ...]
    rows: dict[str, list[tuple[Any, ...]]]  # the tables that hold rows
    sequences: dict[str, tuple[int, bool]]  # name -> (value, is_called)

    @classmethod
    def take(cls, name: str) -> _Snapshot:
        with connect_pg(name) as conn:
            fingerprint = _fingerprint(conn)
            tables = tuple(
                r[0]
                for r in conn.execute(
                    "SELECT quote_ident(tablename) FROM pg_tables WHERE schemaname = 'public'"
                )
            )
            rows = {}
            for table in tables:
                found = conn.execute(f"SELECT * FROM {table}").fetchall()  # type: ignore[arg-type]
                if found:
                    rows[table] = found
            sequences = {
                seq: (value, called)
                for seq, value, called in conn.execute(
                    "SELECT format('%I.%I', schemaname, sequencename),"
                    " coalesce(last_value, start_value), last_value IS NOT NULL"
                    " FROM pg_sequences WHERE schemaname = 'public'"
                )
            }
        return cls(fingerprint, tables, rows, sequences)

    def restore(self, name: str) -> bool:
        """Make database ``name`` hold what the template holds; False when it cannot
        be used again (its structure differs from the template's, or it is large)."""
        with connect_pg(name) as conn:
            conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                " WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )
            _wait_alone(conn)
            size = conn.execute("SELECT pg_database_size(current_database())").fetchone()
            if size is None or size[0] > _REUSE_AT_MOST_BYTES:
                return False
            if _fingerprint(conn) != self.fingerprint:
                return False
            with conn.transaction():
                conn.execute("SET LOCAL session_replication_role = replica")  # no FK checks
                for table in self.tables:
                    conn.execute(f"DELETE FROM {table}")  # type: ignore[arg-type]
                for table, rows in self.rows.items():
                    marks = ", ".join(["%s"] * len(rows[0]))
                    with conn.cursor() as cursor:
                        cursor.executemany(
                            f"INSERT INTO {table} OVERRIDING SYSTEM VALUE VALUES ({marks})",  # type: ignore[arg-type]
                            rows,
                        )
                for seq, (value, called) in self.sequences.items():
                    conn.execute("SELECT setval(%s, %s, %s)", (seq, value, called))
        return True


def _fingerprint(conn: psycopg.Connection) -> str:
    row = conn.execute(_FINGERPRINT).fetchone()  # type: ignore[arg-type]
    assert row is not None
    return str(row[0])


def _wait_alone(conn: psycopg.Connection, timeout: float = 10) -> None:
    """Wait until the sessions just terminated have gone."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        row = conn.execute(
            "SELECT count(*) FROM pg_stat_activity"
            " WHERE datname = current_database() AND pid <> pg_backend_pid()"
        ).fetchone()
        if row is not None and row[0] == 0:
            return
        time.sleep(0.01)
    raise TimeoutError("sessions on a test database did not end")


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
