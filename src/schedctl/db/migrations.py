"""Apply the plain SQL migrations in ``sql/<dialect>/NNNN_name.sql`` in order.

An upgrade first reads, without a lock, which migrations are applied; with nothing
pending it is done (a role that may only use the tables can run it). Otherwise it runs
in one transaction that first takes a lock (an advisory lock on PostgreSQL, the write
lock on SQLite) and reads again, so two processes upgrading at once apply each migration
once; both DDL and the ``schema_migrations`` record commit together.
"""

from __future__ import annotations

import hashlib
import re
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from schedctl.db import dialect, migration_checks
from schedctl.db.database import Database
from schedctl.db.schema import schema_migrations
from schedctl.errors import ConfigError, PermissionDenied, SchemaMismatch

_FILENAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")

_CREATE_TABLE = {
    "postgresql": """
        CREATE TABLE IF NOT EXISTS schema_migrations (
            version     INTEGER PRIMARY KEY,
            name        TEXT NOT NULL,
            checksum    TEXT NOT NULL,
            applied_at  TIMESTAMPTZ NOT NULL
        )""",
    "sqlite": """
        CREATE TABLE IF NOT EXISTS schema_migrations (
            version     INTEGER PRIMARY KEY NOT NULL,
            name        TEXT NOT NULL,
            checksum    TEXT NOT NULL,
            applied_at  DATETIME NOT NULL
        )""",
}


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class MigrationState:
    version: int
    name: str
    applied_at: datetime | None
    checksum_ok: bool


def sql_root() -> Path:
    """Where the migrations live: inside the installed package, or the source tree."""
    packaged = resources.files("schedctl") / "sql"
    if packaged.is_dir():
        return Path(str(packaged))
    return Path(__file__).resolve().parents[3] / "sql"


@cache
def load_migrations(dialect_name: str) -> tuple[Migration, ...]:
    folder = sql_root() / dialect_name
    found: list[Migration] = []
    for path in sorted(folder.glob("*.sql")):
        match = _FILENAME.match(path.name)
        if not match:
            raise RuntimeError(f"badly named migration file: {path}")
        found.append(Migration(int(match.group(1)), match.group(2), path.read_text()))
    versions = [m.version for m in found]
    if versions != list(range(1, len(found) + 1)):
        raise RuntimeError(f"migrations in {folder} are not numbered 1..n: {versions}")
    return tuple(found)


def expected_version(dialect_name: str) -> int:
    return len(load_migrations(dialect_name))


def split_statements(script: str) -> list[str]:
    """Split a SQLite script into complete statements (triggers included)."""
    statements: list[str] = []
    buffer = ""
    for line in script.splitlines(keepends=True):
        buffer += line
        if sqlite3.complete_statement(buffer):
            statement = buffer.strip()
            if _has_code(statement):
                statements.append(statement)
            buffer = ""
    if _has_code(buffer):
        raise RuntimeError(f"incomplete SQL statement at end of migration: {buffer.strip()!r}")
    return statements


def _has_code(sql: str) -> bool:
    return any(line.strip() and not line.strip().startswith("--") for line in sql.splitlines())


def _run_script(conn: sa.Connection, script: str) -> None:
    cursor: Any = conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
    try:
        if conn.dialect.name == "postgresql":
            cursor.execute(script)  # no parameters: psycopg sends it as one simple query
        else:
            for statement in split_statements(script):
                cursor.execute(statement)
    finally:
        cursor.close()


def _applied(conn: sa.Connection) -> dict[int, sa.Row[Any]]:
    if not sa.inspect(conn).has_table("schema_migrations"):
        return {}
    rows = conn.execute(sa.select(schema_migrations)).all()
    return {row.version: row for row in rows}


def upgrade(db: Database, *, target: int | None = None) -> list[Migration]:
    """Apply every pending migration (up to version `target` if given); return those
    this call applied.

    An up-to-date schema is seen read-only, so a role that may only read and write rows
    learns that nothing is pending; only pending migrations take the lock (and need a
    role that may create tables), and are checked again under it.
    """
    migrations = load_migrations(db.dialect)[:target]
    pending = _pending(db.transaction(_applied, read_only=True), migrations, db.dialect)
    if not pending:
        return []
    now = db.now()
    current = pending[:1]  # the migration being applied, for the error line

    def work(conn: sa.Connection) -> list[Migration]:
        dialect.lock_migrations(conn)
        conn.exec_driver_sql(_CREATE_TABLE[db.dialect])
        done: list[Migration] = []
        for migration in _pending(_applied(conn), migrations, db.dialect):
            current[:] = [migration]
            migration_checks.check_before(conn, migration.version, migration.name)
            _run_script(conn, migration.sql)
            conn.execute(
                schema_migrations.insert().values(
                    version=migration.version,
                    name=migration.name,
                    checksum=migration.checksum,
                    applied_at=now,
                )
            )
            done.append(migration)
        return done

    try:
        return db.transaction(work)
    except PermissionDenied as exc:
        raise ConfigError(
            f"cannot apply migration {current[0].version:04d}_{current[0].name} on"
            f" {db.target}: {exc.refusal}:"
            " run `schedctl db upgrade` as a role that may create tables"
        ) from None


def _pending(
    applied: dict[int, Any], migrations: Sequence[Migration], dialect_name: str
) -> list[Migration]:
    """The migrations not applied yet; SchemaMismatch if the schema is newer than ours."""
    _refuse_newer(applied, expected_version(dialect_name))
    return [m for m in migrations if m.version not in applied]


def _refuse_newer(applied: dict[int, Any], expected: int) -> None:
    newest = max(applied, default=0)
    if newest > expected:
        raise SchemaMismatch(
            f"database schema is at version {newest}, newer than this schedctl"
            f" (expects {expected}): upgrade schedctl"
        )


def status(db: Database) -> tuple[int, int, list[MigrationState]]:
    """(current version, expected version, one state per known migration)."""
    migrations = load_migrations(db.dialect)
    applied = db.transaction(_applied, read_only=True)
    states = [
        MigrationState(
            m.version,
            m.name,
            applied[m.version].applied_at if m.version in applied else None,
            m.version not in applied or applied[m.version].checksum == m.checksum,
        )
        for m in migrations
    ]
    return max(applied, default=0), len(migrations), states


def current_version(db: Database) -> int | None:
    """The newest applied migration, or None if schedctl's schema is absent."""

    def work(conn: sa.Connection) -> int | None:
        if not sa.inspect(conn).has_table("schema_migrations"):
            return None
        return int(conn.execute(sa.select(sa.func.max(schema_migrations.c.version))).scalar() or 0)

    return db.transaction(work, read_only=True)


def check_schema(db: Database) -> None:
    """Refuse to work on a schema older or newer than the code expects (exit 2)."""
    expected = expected_version(db.dialect)
    version = current_version(db)
    if version is None:
        raise SchemaMismatch(f"{db.target} has no schedctl schema: run `schedctl db upgrade` first")
    if version < expected:
        raise SchemaMismatch(
            f"database schema is at version {version}, this schedctl expects {expected}:"
            " run `schedctl db upgrade`"
        )
    _refuse_newer({version: None}, expected)
