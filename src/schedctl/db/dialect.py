"""Everything that differs between the dialects, in one place.

Callers build portable SQLAlchemy Core statements (row locks included: SQLAlchemy
writes no FOR UPDATE for SQLite) and ask this module for the few dialect-specific
pieces: the server clock, insert-or-skip and insert-or-update on a unique key, the
migration lock, the row-level-security scope and the :class:`Capabilities` flags
the rest of schedctl asks instead of a dialect's name -- and, for `distribute`'s
data sources and destinations (also MySQL/MariaDB and Oracle), a read-only
transaction, the lock that serialises writers of a destination table and the
fastest bulk insert (COPY on PostgreSQL), and the pieces of its set-based path
(`Capabilities.set_based`): COPY into a table, an HMAC computed in SQL, rows from
JSON arrays, a column's type as the database spells it. For work done a page of
rows at a time (the digest), statements whose text does not grow with the batch
(`one_of`, `ValueRows`, `RowInserter`) and the settings of such a page's
transaction (`for_bulk_pages`).
"""

from __future__ import annotations

import functools
import hashlib
import json
import re
import sqlite3
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.compiler import compiles

# An arbitrary constant: the advisory lock key that serialises `db upgrade` runs.
MIGRATION_LOCK_KEY = 0x5C4ED
ACCOUNT_SETTING = "schedctl.account_id"
# Oracle and MySQL/MariaDB: the first statement of a read-only transaction.
READ_ONLY_TRANSACTION = "SET TRANSACTION READ ONLY"


def server_now(conn: sa.Connection) -> datetime:
    """The database server's current time, as an aware UTC datetime."""
    if conn.dialect.name == "postgresql":
        value = conn.exec_driver_sql("SELECT clock_timestamp()").scalar_one()
        return value.astimezone(UTC)  # type: ignore[no-any-return]
    raw = conn.exec_driver_sql("SELECT strftime('%Y-%m-%d %H:%M:%f', 'now')").scalar_one()
    return datetime.fromisoformat(raw).replace(tzinfo=UTC)


@dataclass(frozen=True)
class Capabilities:
    """What a database can do, where schedctl behaves differently for it: decided
    here, once per dialect, so that callers ask a flag and never a dialect's name.
    (Row locks need no flag: SQLAlchemy writes no FOR UPDATE for SQLite, whose write
    transaction already excludes every other writer.)"""

    # Row-level security can keep a session to one account (PostgreSQL).
    row_level_security: bool
    # One write lock for the whole database (SQLite): a writer waiting for another's
    # long transaction gives up with "database is locked", as if unavailable.
    single_writer: bool
    # Bulk work as a few set-based statements (PostgreSQL): COPY into a temporary
    # table, a batch bound as JSON arrays and read back as rows, sha256() in SQL,
    # DISTINCT ON, ANALYZE. `distribute` then plans a day (store.SetPlanner) and copies a
    # batch to a destination (`endpoints.DestinationWriter`) in the database;
    # elsewhere it works through the rows in Python, batch by batch. This flag is
    # the one place that decides which.
    set_based: bool
    # A statement may write to one table from what it wrote to another (a data-
    # modifying WITH), and run as a transaction of its own in one round trip, its
    # commit included (PostgreSQL, see Database.write_alone): how a dispatcher records
    # an outcome with its email_log row. Elsewhere that is a two-statement transaction.
    writing_cte: bool
    # Login roles with grants on tables, and sessions a server may keep from writing (a
    # hot standby) (PostgreSQL): what the role may do can be asked before doing it
    # (missing_privileges). A SQLite file has neither: its permissions are the file's.
    grants: bool


@functools.cache
def _capabilities(name: str) -> Capabilities:
    return Capabilities(
        row_level_security=name == "postgresql",
        single_writer=name == "sqlite",
        set_based=name == "postgresql",
        writing_cte=name == "postgresql",
        grants=name == "postgresql",
    )


def capabilities(sa_dialect: sa.Dialect) -> Capabilities:
    """The :class:`Capabilities` of a connection's (or engine's) dialect."""
    return _capabilities(sa_dialect.name)


def _upsert_capable_insert(conn: sa.Connection, table: sa.Table) -> Any:
    """An INSERT that supports ON CONFLICT, for the connection's dialect."""
    return _upsert_insert(conn.dialect.name)(table)


def _upsert_insert(dialect_name: str) -> Callable[[sa.Table], Any]:
    """The ``insert`` construct with ON CONFLICT of a dialect, PostgreSQL's or SQLite's.

    Imported here, and only the one used: the PostgreSQL dialect package costs about
    20 ms to import, which a command on SQLite need not pay."""
    if dialect_name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as pg_insert

        return pg_insert
    from sqlalchemy.dialects.sqlite import insert as sqlite_insert

    return sqlite_insert


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


def insert_ignore_count(
    conn: sa.Connection,
    table: sa.Table,
    rows: Sequence[dict[str, Any]],
    conflict_columns: Sequence[str],
    conflict_where: sa.ColumnElement[bool] | sa.TextClause | None = None,
) -> int:
    """insert_ignore without RETURNING: how many of the rows were inserted.

    Without RETURNING the rows go as one INSERT executed once per row (executemany,
    pipelined on psycopg) rather than as multi-row INSERTs, whose text grows with the
    batch: psycopg parses a statement over 4 kB or 50 parameters again on every
    execution, which costs more than the round trips it saves.
    """
    if not rows:
        return 0
    insert = _upsert_capable_insert(conn, table)
    statement = insert.on_conflict_do_nothing(
        index_elements=list(conflict_columns), index_where=conflict_where
    ).execution_options(preserve_rowcount=True)  # SQLAlchemy keeps it for UPDATE/DELETE only
    # Both drivers sum the rows an executemany inserted (a skipped conflict adds 0).
    return int(conn.execute(statement, list(rows)).rowcount)


# SQLite's WAL pages (4 KiB) a connection lets the WAL hold before copying it back to
# the database at a commit (a checkpoint): 64 MiB rather than SQLite's 4 MiB.
BULK_CHECKPOINT_PAGES = 16_384


def for_bulk_pages(conn: sa.Connection) -> None:
    """Settings for one of many page-sized write transactions in a row (the digest
    claims its users 500 at a time), for the rest of the transaction or connection.

    PostgreSQL: statements -- foreign-key checks included -- are planned as index
    probes: every row found through an index, nested loops only, no table read
    whole and no hash or merge join. Each statement then costs the same per row
    whether a table holds a thousand rows or ten million; left to its statistics,
    the planner reads a table it thinks small whole: the digest's check for a
    user's existing day became a merge join over every day recorded so far, and a
    backend's cached plan of a foreign-key check, made while the referenced table
    was nearly empty, a sequential scan that every later check in the session paid
    for in proportion to the rows inserted since (the first run over 40,000 users
    spent 70 of its 116 s in them). Plans made under these settings probe indexes
    whenever they were made, so the foreign-key checks' cached plans are kept rather
    than made anew per check (which cost more than the check). No JIT compilation,
    which costed-out scans would set off. And the commit does not wait for the WAL
    to reach the disk (synchronous_commit off): a page is work that a crash of the
    server at worst makes a rerun redo, never a mail sent twice -- the first
    synchronous commit after it (a dispatcher claiming its messages) flushes it.

    SQLite: the connection copies its WAL back to the database (a checkpoint, which
    syncs the file) once it holds 64 MiB instead of 4 MiB: at 4 MiB, pages of a few
    MiB each checkpointed at nearly every commit, rewriting the same pages of the
    database and syncing it each time. The last connection to close checkpoints
    what is left.
    """
    if conn.dialect.name == "postgresql":
        conn.exec_driver_sql(
            "SELECT set_config('enable_seqscan', 'off', true),"
            " set_config('enable_hashjoin', 'off', true),"
            " set_config('enable_mergejoin', 'off', true), set_config('jit', 'off', true),"
            " set_config('synchronous_commit', 'off', true)"
        )
    elif conn.dialect.name == "sqlite":
        conn.exec_driver_sql(f"PRAGMA wal_autocheckpoint = {BULK_CHECKPOINT_PAGES}")


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
    else:  # Oracle, MySQL/MariaDB: data sources of `distribute`
        # Both take it as the first statement of the transaction.
        conn.exec_driver_sql(READ_ONLY_TRANSACTION)


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


def bound_account_id(conn: sa.Connection) -> int | None:
    """The account the session's login role is bound to (``account_roles``), where
    there are such bindings (`Capabilities.row_level_security`); None otherwise."""
    if not capabilities(conn.dialect).row_level_security:
        return None
    from schedctl.db.schema import account_roles

    found = conn.execute(
        sa.select(account_roles.c.account_id).where(
            account_roles.c.role_name == sa.literal_column("session_user")
        )
    ).scalar()
    return None if found is None else int(found)


def is_permission_denied(exc: sa.exc.DBAPIError) -> bool:
    """Whether the server refused the statement to this role (PostgreSQL's
    insufficient_privilege: no CREATE on the schema, not the table's owner...)."""
    return getattr(exc.orig, "sqlstate", None) == "42501"


def missing_privileges(conn: sa.Connection, wanted: Sequence[tuple[sa.Table, str]]) -> list[str]:
    """The (table, privilege) pairs the login role lacks, as ``INSERT on email_log``;
    none where there are no grants (Capabilities.grants). A privilege granted on some
    columns only counts as missing: the table's own grant is what is asked."""
    if not capabilities(conn.dialect).grants or not wanted:
        return []
    checks = [
        sa.func.has_table_privilege(table.name, privilege).label(f"p{i}")
        for i, (table, privilege) in enumerate(wanted)
    ]
    held = conn.execute(sa.select(*checks)).one()
    return [
        f"{privilege} on {table.name}"
        for (table, privilege), ok in zip(wanted, held, strict=True)
        if not ok
    ]


def lock_migrations(conn: sa.Connection) -> None:
    """Serialise concurrent `db upgrade` runs for the rest of this transaction."""
    if conn.dialect.name == "postgresql":
        conn.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK_KEY})
    # SQLite: the transaction began IMMEDIATE and already holds the write lock.


@contextmanager
def committing_each_statement(conn: sa.Connection) -> Iterator[None]:
    """Have each statement on ``conn`` commit as it runs, until the block ends
    (PostgreSQL: psycopg's autocommit; no BEGIN or COMMIT is sent).

    The DBAPI connection's own switch, not SQLAlchemy's isolation_level option, which
    would leave an explicit isolation level behind in place of the server's default.
    """
    if not capabilities(conn.dialect).writing_cte:
        raise NotImplementedError(f"{conn.dialect.name}: no statement-level commits")
    raw: Any = conn.connection.dbapi_connection
    raw.autocommit = True
    try:
        yield
    finally:
        try:
            raw.autocommit = False
        except Exception:
            # The connection was lost (its state unknown): never put it back to work,
            # in autocommit least of all; the statement's own error says what happened.
            conn.invalidate()


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


def lock_for_insert(conn: sa.Connection, table: sa.Table) -> None:
    """Serialise the writers of ``table`` for the rest of this transaction, so that a
    check for rows that exist and the insert of the missing ones act as one step
    even when two processes copy the same rows (readers are not blocked).

    PostgreSQL and Oracle: LOCK TABLE ... IN SHARE ROW EXCLUSIVE MODE (conflicts
    with itself and with writers). SQLite: the write transaction (BEGIN IMMEDIATE)
    holds the database's write lock already. MySQL/MariaDB: the existence check is
    made with FOR UPDATE (`existence_check`), whose next-key locks keep the checked
    keys from being inserted by anyone else until commit; the transaction runs at
    REPEATABLE READ for them, so this must be its first statement.
    """
    if conn.dialect.name in ("mysql", "mariadb"):
        # Next-key locks are taken at REPEATABLE READ (InnoDB's default), not at READ
        # COMMITTED, which a URL's init_command or the server may make the session's:
        # concurrent runs then inserted the same (ID, campaign) twice. Set for this
        # transaction, before its first statement.
        conn.exec_driver_sql("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
    statement = lock_table_statement(conn.dialect, table)
    if statement is not None:
        conn.exec_driver_sql(statement)


def lock_table_statement(sa_dialect: sa.Dialect, table: sa.Table) -> str | None:
    """The LOCK TABLE statement of `lock_for_insert` for a dialect, or None."""
    if sa_dialect.name not in ("postgresql", "oracle"):
        return None
    name = sa_dialect.identifier_preparer.format_table(table)
    return f"LOCK TABLE {name} IN SHARE ROW EXCLUSIVE MODE"


def existence_check_size(sa_dialect: sa.Dialect) -> int:
    """How many IDs one `ids_present` statement checks: MySQL/MariaDB and Oracle get
    one probe per ID (and Oracle refuses more than 1000 values in a list, ORA-01795);
    elsewhere the IDs are one parameter and a batch's worth is fine."""
    return 1000 if sa_dialect.name in ("mysql", "mariadb", "oracle") else 10_000


def existence_check(select: sa.Select[Any], sa_dialect: sa.Dialect) -> sa.Select[Any]:
    """The check half of lock_for_insert's check-then-insert (FOR UPDATE on MySQL)."""
    return select.with_for_update() if sa_dialect.name in ("mysql", "mariadb") else select


def ids_present(
    ids: Sequence[str],
    rows_of: Callable[[sa.ColumnElement[Any]], sa.Select[Any]],
    sa_dialect: sa.Dialect,
) -> sa.Select[Any] | sa.CompoundSelect[Any]:
    """SELECT those of ``ids`` (text) for which ``rows_of(id)`` finds a row, each
    compared by the database itself, and returned as given: PostgreSQL unnests one
    text[] parameter, SQLite reads one JSON array (json_each); MySQL/MariaDB and
    Oracle, which have neither, get one probe per ID (``SELECT :id [FROM DUAL] WHERE
    EXISTS (...)``) joined by UNION ALL."""
    name = sa_dialect.name
    if name in ("postgresql", "sqlite"):
        if name == "postgresql":
            from sqlalchemy.dialects.postgresql import ARRAY

            values = sa.bindparam("ids", list(ids), type_=ARRAY(sa.Text()))
            table = sa.func.unnest(values).table_valued("value").render_derived()
        else:
            table = sa.func.json_each(sa.bindparam("ids", json.dumps(list(ids)))).table_valued(
                "value"
            )
        return sa.select(table.c.value).where(rows_of(table.c.value).exists())

    def probe(user_id: str) -> sa.Select[Any]:
        value = sa.literal(user_id, sa.String())  # one parameter, used twice
        return sa.select(value.label("value")).where(rows_of(value).exists())

    return sa.union_all(*[probe(i) for i in ids])


def id_column_type(
    conn: sa.Connection, table: sa.Table, column: str
) -> sa.types.TypeEngine[Any] | None:
    """The database's type of ``table.column``, where `as_column_type` needs it
    (PostgreSQL, Oracle), or `same_id` (a MySQL/MariaDB collation that folds case or
    accents); None elsewhere, for a type SQLAlchemy does not know, and
    for a missing table (the statement that needs the table then fails naming it)."""
    if conn.dialect.name in ("mysql", "mariadb"):
        return _mysql_id_type(conn, table, column)
    if conn.dialect.name not in ("postgresql", "oracle"):
        return None
    try:
        with warnings.catch_warnings():
            # A type SQLAlchemy does not know reflects as NullType, with a warning:
            # it is then compared without a cast.
            warnings.simplefilter("ignore", sa.exc.SAWarning)
            columns = sa.inspect(conn).get_columns(table.name, schema=table.schema)
    except sa.exc.NoSuchTableError:
        return None
    found = next((c["type"] for c in columns if c["name"] == column), None)
    return None if isinstance(found, sa.types.NullType) else found


def as_column_type(
    value: sa.ColumnElement[Any],
    column_type: sa.types.TypeEngine[Any] | None,
    sa_dialect: sa.Dialect,
) -> sa.ColumnElement[Any]:
    """An ID given as text, as the database must see it to compare it with a column
    of ``column_type`` (from `id_column_type`), so that ``000000000150`` finds the
    150 of a numeric column and the blank-padded value of a CHAR one.

    PostgreSQL compares text with the text types only (CHAR(n) without its padding):
    any other type gets a CAST. Oracle compares a VARCHAR2 with a CHAR without
    padding: CHAR and the non-text types get a CAST. SQLite (column affinity) and
    MySQL/MariaDB (numeric comparison with a number column, PAD SPACE collations)
    convert by the column's type themselves; a CAST to CHAR(n) there would cut."""
    if column_type is None:
        return value
    text = isinstance(column_type, sa.String)
    if sa_dialect.name == "postgresql" and not text:
        return sa.cast(value, column_type)
    if sa_dialect.name == "oracle" and isinstance(column_type, sa.CHAR | sa.NCHAR):
        # SQLAlchemy writes a CAST to any text type as VARCHAR2 for Oracle.
        spelled = _Spelled(sa_dialect.type_compiler_instance.process(column_type))
        return sa.cast(value, spelled)
    if sa_dialect.name == "oracle" and not text:
        return sa.cast(value, column_type)
    return value


class _FoldedText(sa.String):
    """A MySQL/MariaDB text column whose collation folds case or accents (``_ci``,
    ``_ai``: MariaDB's default utf8mb4_general_ci among them), where ``ab12`` and
    ``AB12`` compare equal: `same_id` then compares IDs as written too."""


def _mysql_id_type(conn: sa.Connection, table: sa.Table, column: str) -> sa.String | None:
    collation = conn.execute(
        sa.text(
            "SELECT collation_name FROM information_schema.columns"
            " WHERE table_schema = COALESCE(:schema, DATABASE())"
            " AND table_name = :table AND column_name = :column"
        ),
        {"schema": table.schema, "table": table.name, "column": column},
    ).scalar()
    parts = str(collation or "").lower().split("_")
    return _FoldedText() if "ci" in parts or "ai" in parts else None


def same_id(
    column: sa.ColumnElement[Any],
    value: sa.ColumnElement[Any],
    column_type: sa.types.TypeEngine[Any] | None,
    sa_dialect: sa.Dialect,
) -> sa.ColumnElement[bool]:
    """Whether ``column`` holds the ID ``value`` (text), as the column's type decides
    (`as_column_type`) and, where its collation folds case or accents (MySQL/MariaDB,
    `_FoldedText`), also as written: the column's own index finds the candidates, and
    a binary comparison keeps only the ID itself, so ``AB12`` is not taken for
    ``ab12``."""
    same = column == as_column_type(value, column_type, sa_dialect)
    if isinstance(column_type, _FoldedText):
        return sa.and_(same, column == _AsWritten(value))
    return same


class _AsWritten(sa.sql.expression.ColumnElement[Any]):
    """A text value compared byte for byte in UTF-8 (MySQL/MariaDB, `same_id`)."""

    inherit_cache = True
    type = sa.String()
    _traverse_internals = [("value", sa.sql.visitors.InternalTraversal.dp_clauseelement)]

    def __init__(self, value: sa.ColumnElement[Any]) -> None:
        self.value = value


@compiles(_AsWritten)
def _as_written(element: _AsWritten, compiler: Any, **kw: Any) -> str:
    return f"CONVERT({compiler.process(element.value, **kw)} USING utf8mb4) COLLATE utf8mb4_bin"


class _TextLength(sa.sql.expression.ColumnElement[Any]):
    """The length of a text in characters (:func:`text_length`)."""

    inherit_cache = True
    type = sa.Integer()
    _traverse_internals = [("value", sa.sql.visitors.InternalTraversal.dp_clauseelement)]

    def __init__(self, value: sa.ColumnElement[Any]) -> None:
        self.value = value


@compiles(_TextLength)
def _text_length(element: _TextLength, compiler: Any, **kw: Any) -> str:
    return f"length({compiler.process(element.value, **kw)})"


@compiles(_TextLength, "sqlite")
def _text_length_sqlite(element: _TextLength, compiler: Any, **kw: Any) -> str:
    value = compiler.process(element.value, **kw)
    return f"CASE WHEN instr(CAST({value} AS BLOB), x'00') > 0 THEN -1 ELSE length({value}) END"


def text_length(value: sa.ColumnElement[Any]) -> sa.ColumnElement[Any]:
    """``length(value)`` in characters; -1 for a text holding a NUL character, which
    SQLite stores (PostgreSQL refuses it) and whose length and substr it counts only
    up to the NUL: the text read would be cut short without a word."""
    return _TextLength(value)


class _Spelled(sa.types.UserDefinedType[Any]):
    """A type written in SQL exactly as given (a column type the database reported)."""

    cache_ok = True

    def __init__(self, spec: str) -> None:
        self.spec = spec

    def get_col_spec(self, **_kw: Any) -> str:
        return self.spec


def bulk_insert(conn: sa.Connection, table: sa.Table, rows: Sequence[dict[str, Any]]) -> None:
    """Insert rows as fast as the dialect allows: COPY on PostgreSQL, executemany
    (SQLAlchemy's batched multi-row INSERTs) elsewhere."""
    if not rows:
        return
    if conn.dialect.name != "postgresql":
        conn.execute(table.insert(), list(rows))
        return
    columns = list(rows[0])
    copy_rows(conn, table, columns, ([row[c] for c in columns] for row in rows))


def copy_rows(
    conn: sa.Connection, table: sa.Table, columns: Sequence[str], rows: Iterable[Sequence[Any]]
) -> None:
    """COPY rows (value sequences in the order of ``columns``) into ``table``
    (PostgreSQL: `Capabilities.set_based`). Each value goes as its text, which the
    column's type reads as it reads any input."""
    prepare = conn.dialect.identifier_preparer
    statement = (
        f"COPY {prepare.format_table(table)} ({', '.join(prepare.quote(c) for c in columns)})"
        " FROM STDIN"
    )
    cursor = conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
    try:
        with cursor.copy(statement) as copy:
            for row in rows:
                copy.write_row(row)
    except conn.dialect.loaded_dbapi.Error as exc:
        # COPY goes round SQLAlchemy: wrap its errors as SQLAlchemy wraps the others
        # (a unique violation or a trigger's exception is then an IntegrityError or
        # an InternalError like any other statement's, a lost connection transient).
        lost = conn.dialect.is_disconnect(exc, conn.connection.dbapi_connection, cursor)
        raise sa.exc.DBAPIError.instance(
            statement, None, exc, conn.dialect.loaded_dbapi.Error,
            connection_invalidated=lost, dialect=conn.dialect,
        ) from exc  # fmt: skip


def analyze(conn: sa.Connection, table: sa.Table) -> None:
    """Refresh the planner's statistics of a table just filled, so that the next
    statements are planned for its size (PostgreSQL; SQLite: nothing). Never waits:
    while another process analyses or vacuums the table it is skipped (SKIP_LOCKED),
    as it is, with a warning from the server and no error, for a role that does not
    own the table."""
    if conn.dialect.name == "postgresql":
        name = conn.dialect.identifier_preparer.format_table(table)
        conn.exec_driver_sql(f"ANALYZE (SKIP_LOCKED) {name}")


def first_of_each(
    columns: Sequence[sa.ColumnElement[Any]],
    key: sa.ColumnElement[Any],
    order: sa.ColumnElement[Any],
) -> sa.Select[Any]:
    """SELECT ``columns`` of the first row by ``order`` of each value of ``key``:
    PostgreSQL's DISTINCT ON (`Capabilities.set_based`), one sort and no window."""
    from sqlalchemy.dialects.postgresql import distinct_on

    return sa.select(*columns).ext(distinct_on(key)).order_by(key, order)


# HMAC's pads (RFC 2104) for SHA-256, whose block is 64 bytes.
_HMAC_BLOCK = 64


def hmac_sha256(key: bytes, value: sa.ColumnElement[Any]) -> sa.ColumnElement[bytes]:
    """HMAC-SHA256(key, value encoded as UTF-8), computed by the database: the same
    bytes as Python's ``hmac.new(key, value.encode(), sha256).digest()``, from
    PostgreSQL's sha256() (`Capabilities.set_based`) and the RFC's definition,
    H((K ^ opad) || H((K ^ ipad) || message)), the pads computed here."""
    if len(key) > _HMAC_BLOCK:
        key = hashlib.sha256(key).digest()
    block = key.ljust(_HMAC_BLOCK, b"\0")
    inner = sa.literal(bytes(b ^ 0x36 for b in block), sa.LargeBinary)
    outer = sa.literal(bytes(b ^ 0x5C for b in block), sa.LargeBinary)
    message = sa.func.convert_to(value, sa.literal("UTF8"), type_=sa.LargeBinary)
    inner_hash = sa.func.sha256(inner.op("||")(message), type_=sa.LargeBinary)
    return sa.func.sha256(outer.op("||")(inner_hash), type_=sa.LargeBinary)


def json_array_rows(texts: str, values: str) -> sa.Subquery:
    """A FROM item (``batch``) of one row per element of two JSON arrays of the same
    length, each bound whole as one parameter (``:texts``, ``:values``): column
    ``texts`` the first array's strings as text, column ``values`` the second's
    elements as JSON (PostgreSQL's ROWS FROM, `Capabilities.set_based`). A batch of
    any length is two parameters, which psycopg passes without looking at each
    value."""
    rows = sa.text(
        f"SELECT * FROM ROWS FROM (json_array_elements_text(CAST(:{texts} AS json)),"
        f" json_array_elements(CAST(:{values} AS json))) AS batch({texts}, {values})"
    ).columns(sa.column(texts, sa.Text), sa.column(values, sa.JSON))
    return rows.subquery("batch")


@dataclass(frozen=True)
class ColumnType:
    """A column's type as the database spells it, and whether it holds text."""

    spelled: str
    text: bool


def column_types(conn: sa.Connection, table: sa.Table) -> dict[str, ColumnType]:
    """The types of ``table``'s columns, by name, from PostgreSQL's catalog
    (`Capabilities.set_based`); empty for a missing table (the statement that needs
    it then fails naming it). A type is spelled as format_type() writes it, so any
    type -- a domain, an extension's -- can be cast to; the text types are the
    string category (text, varchar, char, ...)."""
    name = conn.dialect.identifier_preparer.format_table(table)
    rows = conn.execute(
        sa.text(
            "SELECT a.attname, format_type(a.atttypid, a.atttypmod), t.typcategory"
            " FROM pg_attribute a JOIN pg_type t ON t.oid = a.atttypid"
            " WHERE a.attrelid = to_regclass(:name) AND a.attnum > 0 AND NOT a.attisdropped"
        ),
        {"name": name},
    )
    return {column: ColumnType(spelled, category == "S") for column, spelled, category in rows}


def from_text(
    value: sa.ColumnElement[Any], column_type: ColumnType | None
) -> sa.ColumnElement[Any]:
    """A value given as text, as it goes into (or is compared with) a column of
    ``column_type`` (`column_types`), read the way COPY reads it: a text type takes
    it as it is (a value too long for a VARCHAR(n) or CHAR(n) is refused; compared,
    CHAR's padding does not count), any other type gets a CAST, which reads the
    text with the type's own input (``000000000150`` is the number 150). Unknown
    type: as it is."""
    if column_type is None or column_type.text:
        return value
    return sa.cast(value, _Spelled(column_type.spelled))


def prefer_index_probes(conn: sa.Connection) -> None:
    """Plan the rest of this transaction's statements to look rows up by an index
    rather than by reading a whole table, and for the tables as they are now
    (PostgreSQL).

    A destination table created just before a run has no statistics yet: the
    planner then guesses that each ID matches many rows, and reads the whole table
    for every batch -- a cost that grows with the table -- until autovacuum's
    ANALYZE comes round. With sequential scans costed out, a batch's IDs are probed
    in the ID column's index, at the same cost at any size; a table with no such
    index is still read, once per batch, by the one plan left. Plans are made for every
    execution (a generic plan cached while the table was small would stay), and
    without JIT compilation, which the costed-out scans would set off at every
    execution for tens of milliseconds each.
    """
    if conn.dialect.name == "postgresql":
        conn.exec_driver_sql(
            "SELECT set_config('enable_seqscan', 'off', true), set_config('jit', 'off', true),"
            " set_config('plan_cache_mode', 'force_custom_plan', true)"
        )


def commit_without_flush(conn: sa.Connection) -> None:
    """Let this transaction's commit return before its record reaches the disk
    (PostgreSQL's synchronous_commit off, for this transaction only): for a record
    whose loss in a crash of the database server costs a repeat of safe work, never
    a wrong result. SQLite: nothing."""
    if conn.dialect.name == "postgresql":
        conn.exec_driver_sql("SET LOCAL synchronous_commit = off")


def set_local_time_zone(conn: sa.Connection, zone: str) -> None:
    """Interpret naive instants in ``zone`` for the rest of this transaction, where
    the database has a session time zone to set (PostgreSQL)."""
    if conn.dialect.name == "postgresql":
        conn.execute(sa.text("SELECT set_config('TimeZone', :zone, true)"), {"zone": zone})


# --- bulk statements whose text does not grow with the batch ---------------------------
#
# psycopg parses a statement's text again on every execution once it has more than 50
# parameters or 4 kB of text, and SQLAlchemy writes an IN list or a multi-row VALUES
# anew for every length: a page of a hundred users bound value by value spent more
# time there than in the database. These bind a whole batch as one parameter per
# column (PostgreSQL arrays) or as one JSON text (SQLite), so each statement has one
# text, parsed and compiled once.


class _ValueList(sa.types.TypeDecorator[Sequence[Any]]):
    """A list of ints or texts bound as one text parameter: a PostgreSQL array
    literal of ints (``{1,2,3}``, cast by the statement) or a JSON array (texts on
    PostgreSQL, anything on SQLite, read with json_each)."""

    impl = sa.Text
    cache_ok = True

    def __init__(self, kind: str) -> None:
        super().__init__()
        self.kind = kind  # "int" or "text"

    def process_bind_param(self, value: Sequence[Any] | None, sa_dialect: sa.Dialect) -> Any:
        if value is None:
            return None
        if sa_dialect.name == "postgresql" and self.kind == "int":
            return "{" + ",".join(str(int(v)) for v in value) + "}"
        return json.dumps(list(value))


class _OneOf(sa.sql.expression.ColumnElement[bool]):
    """``column IN (values)`` with the values bound as one parameter (:func:`one_of`)."""

    inherit_cache = True
    type = sa.Boolean()
    # A predicate as it is: without this, SQLAlchemy writes ``(… IN …) = 1`` for a
    # database with no boolean type (SQLite), and SQLite then cannot use the list to
    # look up an index: it scanned every row of the index instead.
    _is_implicitly_boolean = True
    _traverse_internals = [
        ("column", sa.sql.visitors.InternalTraversal.dp_clauseelement),
        ("values", sa.sql.visitors.InternalTraversal.dp_clauseelement),
    ]

    def __init__(self, column: sa.ColumnElement[Any], values: sa.BindParameter[Any]) -> None:
        self.column = column
        self.values = values


@compiles(_OneOf, "postgresql")
def _one_of_postgresql(element: _OneOf, compiler: Any, **kw: Any) -> str:
    column = compiler.process(element.column, **kw)
    values = compiler.process(element.values, **kw)
    if element.values.type.kind == "int":  # type: ignore[attr-defined]
        return f"{column} = ANY(CAST({values} AS BIGINT[]))"
    return f"{column} IN (SELECT json_array_elements_text(CAST({values} AS json)))"


@compiles(_OneOf, "sqlite")
def _one_of_sqlite(element: _OneOf, compiler: Any, **kw: Any) -> str:
    column = compiler.process(element.column, **kw)
    return f"{column} IN (SELECT value FROM json_each({compiler.process(element.values, **kw)}))"


def one_of(
    column: sa.ColumnElement[Any], values: Sequence[Any] | None = None, *, name: str | None = None
) -> sa.ColumnElement[bool]:
    """``column IN (values)`` for schedctl's own database, the values (ints, or texts
    for a text column) bound as one parameter however many there are: ``=
    ANY(array)`` (ints) or a JSON array (texts) on PostgreSQL, ``IN (SELECT value FROM
    json_each(json))`` on SQLite. Give the ``values``, or a parameter ``name`` whose
    list is passed at execution."""
    kind = "text" if isinstance(column.type, sa.String) else "int"
    if name is not None:
        param = sa.bindparam(name, type_=_ValueList(kind))
    else:
        param = sa.bindparam(None, list(values or ()), type_=_ValueList(kind), unique=True)
    return _OneOf(column, param)


def _json_value(value: Any) -> Any:
    if isinstance(value, date) and not isinstance(value, datetime):
        return value.isoformat()  # SQLite stores a date as its ISO text (SQLAlchemy's Date)
    raise TypeError(f"a {type(value).__name__} cannot be bound in rows")


class _BinaryArray(list[Any]):
    """A list that psycopg sends as a binary array (see :func:`send_binary_arrays`)."""


def send_binary_arrays(dbapi_conn: Any) -> None:
    """Have a psycopg connection send :class:`ValueRows`' arrays in binary: the text
    format escapes each element in Python (every quote of an HTML body), which costs
    twice the client's time of the binary one and more of the server's."""
    from psycopg.types.array import ListBinaryDumper

    dbapi_conn.adapters.register_dumper(_BinaryArray, ListBinaryDumper)


class ValueRows:
    """Rows of values (ints, texts, dates, booleans, None) given by Python as one
    FROM item, ``name``, of a statement built once.

    - PostgreSQL: one array per column, sent in binary (`send_binary_arrays`, which
      the engine does for every connection) and unnested in step
      (``unnest(CAST(:name_0 AS BIGINT[]), ...)``).
    - SQLite: one JSON array of rows, ``json_each(:name)``.

    :meth:`params` binds a batch of rows.
    """

    def __init__(
        self,
        sa_dialect: sa.Dialect,
        name: str,
        columns: Sequence[tuple[str, sa.types.TypeEngine[Any]]],
    ) -> None:
        self.name = name
        self.names = [column for column, _ in columns]
        self.by_column = sa_dialect.name == "postgresql"
        typed = [sa.column(column, type_) for column, type_ in columns]
        if self.by_column:
            spell = sa_dialect.type_compiler_instance.process
            arrays = ", ".join(
                f"CAST(:{name}_{i} AS {spell(type_)}[])" for i, (_, type_) in enumerate(columns)
            )
            sql = f"SELECT * FROM unnest({arrays}) AS {name}({', '.join(self.names)})"
        else:
            values = ", ".join(
                f"json_extract(value, '$[{i}]') AS {column}" for i, column in enumerate(self.names)
            )
            sql = f"SELECT {values} FROM json_each(:{name})"
        self.table = sa.text(sql).columns(*typed).subquery(name)

    @property
    def c(self) -> Any:
        return self.table.c

    def params(self, rows: Sequence[Sequence[Any]]) -> dict[str, Any]:
        """The parameters that bind ``rows`` (value sequences in the columns' order)."""
        if self.by_column:
            columns = list(zip(*rows, strict=True)) if rows else [()] * len(self.names)
            return {f"{self.name}_{i}": _BinaryArray(values) for i, values in enumerate(columns)}
        return {self.name: json.dumps(rows, default=_json_value)}


class RowInserter:
    """``INSERT INTO table (columns) ... ON CONFLICT (conflict) DO NOTHING RETURNING
    returning`` for a batch of rows, as one statement text whatever the batch.

    - PostgreSQL, and SQLite with ``json_rows``: ``INSERT ... SELECT`` from
      :class:`ValueRows` (one array per column; one JSON array of rows), RETURNING the
      rows actually inserted.
    - SQLite otherwise (`Capabilities.single_writer`): an executemany of the one-row
      INSERT, then the rows whose key is above the largest before it: the write
      transaction excludes every other writer, and keys only grow (AUTOINCREMENT), so
      those are exactly the rows this insert made. (sqlite3 drops the rows of an
      executemany's RETURNING.)

    ``json_rows`` is for rows of ids, short texts and dates: measured on pages of 500
    rows, the digest's days went in 40 % faster as JSON rows than by executemany, its
    messages (kilobytes of text and HTML each) 35 % slower, since SQLite parses the
    JSON text whole. JSON cannot carry every value as the driver would (a NUL cuts a
    text short, an integer past 64 bits becomes a float), hence opt-in.

    ``same`` columns take one value for the whole batch (bound with the column's type,
    e.g. an instant); the rows' values go to the driver as they are. Build it once,
    call it per batch.
    """

    def __init__(
        self,
        sa_dialect: sa.Dialect,
        table: sa.Table,
        columns: Sequence[str],
        *,
        same: Sequence[str] = (),
        conflict: Sequence[str],
        returning: Sequence[str],
        json_rows: bool = False,
    ) -> None:
        self.columns = list(columns)
        self.same = list(same)
        self.set_based = sa_dialect.name == "postgresql" or json_rows
        self.key = next(iter(table.primary_key.columns))
        if self.set_based:
            insert = _upsert_insert(sa_dialect.name)
            self.rows = ValueRows(sa_dialect, "ins", [(c, table.c[c].type) for c in self.columns])
            source = sa.select(
                *[self.rows.c[c] for c in self.columns],
                *[sa.bindparam(f"same_{c}", type_=table.c[c].type) for c in self.same],
            ).where(sa.true())  # SQLite reads ``SELECT ... ON CONFLICT`` only after a WHERE
            self.statement: Any = (
                insert(table)
                .from_select([*self.columns, *self.same], source)
                .on_conflict_do_nothing(index_elements=list(conflict))
                .returning(*[table.c[c] for c in returning])
            )
        else:
            names = [*self.columns, *self.same]
            compiled = (
                _upsert_insert("sqlite")(table)
                .values({c: sa.bindparam(c) for c in names})
                .on_conflict_do_nothing(index_elements=list(conflict))
                .compile(dialect=sa_dialect)
            )
            # Sent to sqlite3's executemany as it is: the values go through the
            # columns' own bind processors (an instant's or a date's stored text)
            # here, the ``same`` ones once per batch.
            self.sql = compiled.string
            order = [names.index(name) for name in compiled.positiontup or ()]
            self.order = None if order == list(range(len(names))) else order
            self.processors = [
                table.c[c].type.dialect_impl(sa_dialect).bind_processor(sa_dialect) for c in names
            ]
            self.last = sa.select(sa.func.max(self.key))
            self.inserted = (
                sa.select(*[table.c[c] for c in returning])
                .where(self.key > sa.bindparam("after"))
                .order_by(self.key)
            )

    def __call__(
        self, conn: sa.Connection, rows: Sequence[Sequence[Any]], same: dict[str, Any]
    ) -> list[Sequence[Any]]:
        """Insert ``rows`` (values in the order of ``columns``) with the ``same``
        values; the ``returning`` columns of the rows actually inserted, in no set order."""
        if not rows:
            return []
        if self.set_based:
            params = self.rows.params(rows) | {f"same_{c}": same[c] for c in self.same}
            return list(conn.execute(self.statement, params))
        after = conn.execute(self.last).scalar() or 0
        width = len(self.columns)
        process = self.processors
        common = tuple(
            value if (p := process[width + i]) is None or value is None else p(value)
            for i, value in enumerate(same[c] for c in self.same)
        )
        converters = [(i, p) for i, p in enumerate(process[:width]) if p is not None]
        values = []
        for row in rows:
            if converters:
                row = list(row)
                for i, convert in converters:
                    if row[i] is not None:
                        row[i] = convert(row[i])
            full = (*row, *common)
            values.append(full if self.order is None else tuple(full[i] for i in self.order))
        conn.exec_driver_sql(self.sql, values)
        return list(conn.execute(self.inserted, {"after": after}))
