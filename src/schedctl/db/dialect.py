"""Everything that differs between SQLite and PostgreSQL, in one place.

Callers build portable SQLAlchemy Core statements and ask this module for the few
dialect-specific pieces: the server clock, a claim with SKIP LOCKED, insert-or-skip
and insert-or-update on a unique key, the migration lock and the row-level-security
scope.
"""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa

# An arbitrary constant: the advisory lock key that serialises `db upgrade` runs.
MIGRATION_LOCK_KEY = 0x5C4ED
ACCOUNT_SETTING = "schedctl.account_id"


def server_now(conn: sa.Connection) -> datetime:
    """The database server's current time, as an aware UTC datetime."""
    if conn.dialect.name == "postgresql":
        value = conn.exec_driver_sql("SELECT clock_timestamp()").scalar_one()
        return value.astimezone(UTC)  # type: ignore[no-any-return]
    raw = conn.exec_driver_sql("SELECT strftime('%Y-%m-%d %H:%M:%f', 'now')").scalar_one()
    return datetime.fromisoformat(raw).replace(tzinfo=UTC)


def claim(
    select: sa.Select[Any], conn: sa.Connection, *, key_share: bool = False
) -> sa.Select[Any]:
    """Make a SELECT claim its rows: FOR UPDATE SKIP LOCKED where the database has it.

    ``key_share``: FOR NO KEY UPDATE instead, which still excludes other claimers but
    neither waits for nor is skipped because of transactions inserting rows that
    reference the claimed ones (a foreign key check takes FOR KEY SHARE).

    SQLite has no row locks; its write transactions (BEGIN IMMEDIATE) serialise
    claimers instead, which gives the same exactly-once result.
    """
    if conn.dialect.name == "postgresql":
        return select.with_for_update(skip_locked=True, key_share=key_share)
    return select


def _upsert_capable_insert(conn: sa.Connection, table: sa.Table) -> Any:
    """An INSERT that supports ON CONFLICT, for the connection's dialect."""
    # Imported here: the PostgreSQL dialect package costs start-up time on SQLite.
    if conn.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as pg_insert

        return pg_insert(table)
    from sqlalchemy.dialects.sqlite import insert as sqlite_insert

    return sqlite_insert(table)


def insert_ignore(
    conn: sa.Connection,
    table: sa.Table,
    rows: Sequence[dict[str, Any]],
    conflict_columns: Sequence[str],
    returning: Sequence[sa.Column[Any]] = (),
    conflict_where: sa.ColumnElement[bool] | sa.TextClause | None = None,
) -> list[sa.Row[Any]]:
    """Insert rows, silently skipping those whose unique key exists already.

    ``conflict_where`` names the predicate of a partial unique index (both dialects
    only match such an index when its WHERE clause is repeated). Returns the
    RETURNING rows of the rows actually inserted.
    """
    if not rows:
        return []
    insert = _upsert_capable_insert(conn, table)
    statement = insert.on_conflict_do_nothing(
        index_elements=list(conflict_columns), index_where=conflict_where
    )
    if returning:
        statement = statement.returning(*returning)
    # With RETURNING, SQLAlchemy's "insertmanyvalues" sends the rows as multi-row
    # INSERTs on both dialects and returns only the rows actually inserted.
    result = conn.execute(statement, list(rows))
    return list(result.all()) if returning else []


def upsert_changed(
    conn: sa.Connection,
    table: sa.Table,
    rows: Sequence[dict[str, Any]],
    conflict_columns: Sequence[str],
    compare: Sequence[str],
    also: Sequence[str] = (),
) -> int:
    """Insert rows; a row whose unique key exists is updated instead, and only when
    one of its ``compare`` columns changed (then the ``also`` columns are written
    too, e.g. ``updated_at``). Returns how many rows were inserted or changed."""
    if not rows:
        return 0
    insert = _upsert_capable_insert(conn, table)
    changed = sa.or_(*[table.c[name].is_distinct_from(insert.excluded[name]) for name in compare])
    statement = insert.on_conflict_do_update(
        index_elements=list(conflict_columns),
        set_={name: insert.excluded[name] for name in (*compare, *also)},
        where=changed,
    ).returning(table.c[conflict_columns[0]])
    return len(conn.execute(statement, list(rows)).all())


def begin_read_only(conn: sa.Connection, timeout_s: float) -> None:
    """Make this transaction read-only, with a statement timeout where there is one.

    For queries schedctl runs on behalf of a user (report queries): they may read,
    never write, and each execute runs exactly one statement -- so a query cannot
    end the read-only transaction (``commit; delete ...``) and go on in a new one.
    Callers use a connection reserved for such queries (an engine of their own):
    the settings below outlive the transaction on purpose.

    - PostgreSQL: psycopg sends a statement without parameters by the simple query
      protocol, which runs several statements in one string. With a prepare
      threshold of 0 every statement is prepared first, by the extended protocol,
      which refuses more than one ("cannot insert multiple commands into a prepared
      statement"); a lone COMMIT then ends the transaction with nothing after it.
      The settings are transaction-local (a session-level one would leak to other
      clients through a transaction-pooling PgBouncer). The SELECT takes the
      transaction's snapshot, after which it can no longer be set read-write, not
      even from inside a function or DO block.
    - SQLite: sqlite3 runs one statement per execute; the connection is switched to
      query_only, which a COMMIT does not end.
    - Oracle (a supported data source): one statement per execute as well.
    """
    name = conn.dialect.name
    if name == "postgresql":
        conn.connection.driver_connection.prepare_threshold = 0  # type: ignore[union-attr]
        milliseconds = max(1, int(timeout_s * 1000))
        conn.execute(
            sa.text(
                "SELECT set_config('transaction_read_only', 'on', true),"
                " set_config('statement_timeout', :timeout, true)"
            ),
            {"timeout": str(milliseconds)},
        )
    elif name == "sqlite":
        conn.exec_driver_sql("PRAGMA query_only = ON")
    else:  # Oracle, a supported data source
        conn.exec_driver_sql("SET TRANSACTION READ ONLY")


# The errors of a statement that read-only mode refuses, or that cannot run as written:
# running it again cannot succeed. PostgreSQL: SQLSTATE class 25 (invalid transaction
# state, e.g. 25006 a write in a read-only transaction), 2D (invalid transaction
# termination) and 42601 (a syntax error; also several statements in one query).
_PG_REFUSED_CLASSES = ("25", "2D")
_PG_REFUSED_STATES = ("42601",)
_SQLITE_REFUSED = ("readonly database", "syntax error", "incomplete input")


def is_refused_statement(exc: sa.exc.DBAPIError) -> bool:
    """Whether a read-only query failed because of what it is, not of when it ran:
    a write, more than one statement, a syntax error. Retrying it cannot help."""
    orig = exc.orig
    sqlstate = getattr(orig, "sqlstate", None)
    if isinstance(sqlstate, str):
        return sqlstate in _PG_REFUSED_STATES or sqlstate[:2] in _PG_REFUSED_CLASSES
    if isinstance(orig, sqlite3.ProgrammingError):  # more than one statement
        return True
    if isinstance(orig, sqlite3.OperationalError):
        text = str(orig).lower()
        return any(fragment in text for fragment in _SQLITE_REFUSED)
    return False


def lock_migrations(conn: sa.Connection) -> None:
    """Serialise concurrent `db upgrade` runs for the rest of this transaction."""
    if conn.dialect.name == "postgresql":
        conn.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK_KEY})
    # SQLite: the transaction began IMMEDIATE and already holds the write lock.


def set_account_scope(conn: sa.Connection, account_id: int) -> None:
    """Scope this transaction to one account for PostgreSQL row-level security."""
    conn.execute(
        sa.text("SELECT set_config(:name, :value, true)"),
        {"name": ACCOUNT_SETTING, "value": str(account_id)},
    )


_SQLITE_UNIQUE = re.compile(r"UNIQUE constraint failed: (\S+)")


def constraint_name(exc: sa.exc.IntegrityError) -> str | None:
    """The name of the violated constraint, from whichever driver raised it."""
    diag = getattr(exc.orig, "diag", None)
    if diag is not None and getattr(diag, "constraint_name", None):
        return str(diag.constraint_name)
    match = _SQLITE_UNIQUE.search(str(exc.orig))
    return match.group(1) if match else None
