"""Run one user-written query so that it can only read (SPEC §13).

Report queries are written by the operator, but they run with schedctl's own
database rights, so what they may do is fenced here rather than trusted:

- The caller gives each query a fresh connection and closes it afterwards: nothing
  a query sets (settings, attachments, temporary objects) reaches the next one.
- The transaction is read-only and always rolled back, never committed.
- A deadline on the client cancels the query (psycopg's cancel, sqlite3's
  interrupt) once its timeout has passed, whatever the query did to the server's
  statement_timeout.
- PostgreSQL: a query may call only functions that PostgreSQL itself marks
  IMMUTABLE or STABLE (plus a few harmless volatile ones, VOLATILE_ALLOWED). That
  rules out everything that acts beyond reading: set_config (so the account scope
  cannot be changed), pg_terminate_backend and pg_cancel_backend, large objects,
  advisory locks, pg_notify, nextval, pg_sleep, dblink. The functions are read from
  the parser's own tree: the query is defined as a temporary view in a transaction
  that is rolled back, and the view's rule (and those of the views it reads, outside
  the system schemas) names every function, aggregate and operator by OID.
- SQLite: an authorizer allows reading only; ATTACH, writes, PRAGMA and DDL are
  denied before they run.
"""

from __future__ import annotations

import re
import sqlite3
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import sqlalchemy as sa

from schedctl.db import dialect
from schedctl.errors import SchedctlError


class QueryRefused(SchedctlError):
    """The query does something a read-only report query may not do."""


class QueryFailed(SchedctlError):
    """The query failed as things stand (a missing table, say); it may succeed later."""


class QueryTimedOut(SchedctlError):
    """The query ran past its timeout and was cancelled."""


# Volatile only because their results differ per call; they act on nothing.
VOLATILE_ALLOWED = frozenset({"random", "clock_timestamp", "timeofday", "gen_random_uuid"})

_CHECK_VIEW = "schedctl_report_check"
_OIDS = re.compile(r":(funcid|opfuncid|aggfnoid|winfnoid|opno|relid) (\d+)")
_SQLITE_READS = frozenset(
    {sqlite3.SQLITE_SELECT, sqlite3.SQLITE_READ, sqlite3.SQLITE_FUNCTION, sqlite3.SQLITE_RECURSIVE}
)
# What a bind parameter stands for while the query is only being analysed.
_PG_PLACEHOLDER_TYPES = {"slot": "timestamptz"}


def run_read_only(
    conn: sa.Connection,
    statement: sa.TextClause,
    binds: Mapping[str, Any],
    *,
    timeout_s: float,
    max_rows: int,
    account_id: int | None = None,
) -> tuple[list[str], list[tuple[Any, ...]]] | None:
    """Run ``statement`` fenced as the module says; its columns and at most
    ``max_rows`` rows, or None if it returns no rows. ``account_id`` scopes a query on
    schedctl's own PostgreSQL database to one account's rows (row-level security).

    ``conn`` must be a connection of its own that the caller closes afterwards.
    """
    postgresql = conn.dialect.name == "postgresql"
    if postgresql:
        _refuse_volatile_functions(conn, statement)
    with _deadline(conn, timeout_s) as expired:
        transaction = conn.begin()
        try:
            dialect.begin_read_only(conn, timeout_s)
            if postgresql and account_id is not None:
                dialect.set_account_scope(conn, account_id)
            with _sqlite_reads_only(conn):
                # Streamed (a server-side cursor on PostgreSQL), so that a result too big
                # to mail is refused before it is all in memory.
                streamed = conn.execution_options(stream_results=True, max_row_buffer=200)
                result = streamed.execute(statement, dict(binds))
                if not result.returns_rows:
                    return None
                try:
                    return list(result.keys()), _bounded_rows(result, max_rows)
                finally:
                    result.close()  # (its server-side cursor, when it stopped early)
        except sa.exc.DBAPIError as exc:
            if expired.is_set():
                raise QueryTimedOut(f"cancelled after its timeout of {timeout_s:g} s") from None
            if "not authorized" in str(exc.orig):  # the SQLite authorizer below
                raise QueryRefused(
                    "it does more than read (writes, ATTACH, PRAGMA and DDL are denied);"
                    " a report query is one read-only SELECT"
                ) from None
            raise
        finally:
            transaction.rollback()  # nothing the query did persists


@contextmanager
def _deadline(conn: sa.Connection, timeout_s: float) -> Iterator[threading.Event]:
    """Cancel the connection's running statement once ``timeout_s`` has passed."""
    driver = conn.connection.driver_connection
    cancel = getattr(driver, "cancel", None) or getattr(driver, "interrupt", None)
    expired = threading.Event()

    def fire() -> None:
        expired.set()
        if cancel is not None:
            cancel()

    timer = threading.Timer(timeout_s, fire)
    timer.daemon = True
    timer.start()
    try:
        yield expired
    finally:
        timer.cancel()


@contextmanager
def _sqlite_reads_only(conn: sa.Connection) -> Iterator[None]:
    driver = conn.connection.driver_connection
    if not isinstance(driver, sqlite3.Connection):
        yield
        return

    def authorize(action: int, *_: Any) -> int:
        return sqlite3.SQLITE_OK if action in _SQLITE_READS else sqlite3.SQLITE_DENY

    driver.set_authorizer(authorize)
    try:
        yield
    finally:
        driver.set_authorizer(None)


def _refuse_volatile_functions(conn: sa.Connection, statement: sa.TextClause) -> None:
    """QueryRefused if the query (or a view it reads) calls a function that acts."""
    driver: Any = conn.connection.driver_connection
    transaction = conn.begin()
    try:
        try:
            driver.execute(f"CREATE TEMPORARY VIEW {_CHECK_VIEW} AS {_analysable(statement)}")
        except Exception as exc:  # the driver's own error class
            first = str(exc).splitlines()[0]
            if not _not_a_select(exc):  # a missing table, a lost connection: may pass
                raise QueryFailed(first) from None
            raise QueryRefused(
                "a report query is one read-only SELECT, and PostgreSQL did not take it"
                f" as one: {first}"
            ) from None
        functions: set[int] = set()
        operators: set[int] = set()
        seen: set[int] = set()
        rules = [_rule(driver, f"pg_temp.{_CHECK_VIEW}")]
        while rules:
            relations: set[int] = set()
            for rule in rules:
                for kind, oid in _OIDS.findall(rule):
                    {"opno": operators, "relid": relations}.get(kind, functions).add(int(oid))
            relations -= seen
            seen |= relations
            rules = _user_view_rules(driver, relations)
        if operators:
            rows = driver.execute(
                "SELECT oprcode::oid FROM pg_operator WHERE oid = ANY(%s)", (list(operators),)
            ).fetchall()
            functions.update(int(row[0]) for row in rows)
        functions.discard(0)
        acting = sorted(
            row[0]
            for row in driver.execute(
                "SELECT DISTINCT proname FROM pg_proc WHERE oid = ANY(%s) AND provolatile = 'v'",
                (list(functions),),
            ).fetchall()
            if row[0] not in VOLATILE_ALLOWED
        )
    finally:
        transaction.rollback()
    if acting:
        raise QueryRefused(
            f"it calls {', '.join(acting)}: a report query may call only functions"
            " PostgreSQL marks IMMUTABLE or STABLE"
        )


# What PostgreSQL answers when the text is not one SELECT: a syntax error (also several
# statements, or a statement other than a query), a column a view cannot have (void),
# a feature a view cannot have (a data-modifying WITH).
_NOT_A_SELECT = ("42601", "42P16", "0A000")


MAX_RESULT_BYTES = 16 * 2**20
"""What a report query's values may hold in all: a report is mailed (its CSV, and its
first rows in the body)."""


def _bounded_rows(result: sa.CursorResult[Any], max_rows: int) -> list[tuple[Any, ...]]:
    """Up to ``max_rows`` rows; QueryRefused once their values pass MAX_RESULT_BYTES."""
    rows: list[tuple[Any, ...]] = []
    size = 0
    for row in result:
        values = tuple(row)
        size += sum(len(v) if isinstance(v, str | bytes) else 16 for v in values)
        if size > MAX_RESULT_BYTES:
            raise QueryRefused(
                f"its result holds over {MAX_RESULT_BYTES // 2**20} MiB, more than a report"
                " mails; select fewer or narrower rows"
            )
        rows.append(values)
        if len(rows) == max_rows:
            break
    return rows


def _not_a_select(exc: BaseException) -> bool:
    return getattr(exc, "sqlstate", None) in _NOT_A_SELECT


def _analysable(statement: sa.TextClause) -> str:
    """The query's text with each bind parameter replaced by a typed NULL."""
    from sqlalchemy.dialects import postgresql

    compiled = statement.compile(dialect=postgresql.psycopg.dialect())  # type: ignore[no-untyped-call]
    text = str(compiled)
    for name in compiled.params:
        kind = _PG_PLACEHOLDER_TYPES.get(name, "bigint")
        text = text.replace(f"%({name})s", f"CAST(NULL AS {kind})")
    return text.replace("%%", "%")


def _rule(driver: Any, view: str) -> str:
    row = driver.execute(
        "SELECT ev_action FROM pg_rewrite WHERE ev_class = %s::regclass", (view,)
    ).fetchone()
    return str(row[0]) if row else ""


def _user_view_rules(driver: Any, relations: set[int]) -> list[str]:
    """The rules of the views among ``relations`` outside the system schemas."""
    if not relations:
        return []
    rows = driver.execute(
        "SELECT r.ev_action FROM pg_rewrite r JOIN pg_class c ON c.oid = r.ev_class"
        " JOIN pg_namespace n ON n.oid = c.relnamespace"
        " WHERE c.oid = ANY(%s) AND c.relkind = 'v'"
        " AND n.nspname NOT IN ('pg_catalog', 'information_schema')",
        (list(relations),),
    ).fetchall()
    return [str(row[0]) for row in rows]


def bypasses_row_security(conn: sa.Connection) -> bool:
    """Whether this PostgreSQL session's role is exempt from row-level security."""
    return bool(
        conn.execute(
            sa.text("SELECT rolsuper OR rolbypassrls FROM pg_roles WHERE rolname = current_user")
        ).scalar()
    )
