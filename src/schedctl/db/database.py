"""The Database handle: transactions with retries, the clock, the schema check.

Every command opens one Database, runs short transactions through
:meth:`Database.transaction`, and closes it. Transient failures (connection loss,
serialization failure, deadlock, SQLite busy) retry the whole transaction with
exponential backoff; when retries run out the command fails with exit 75. Errors
retrying cannot mend -- connection settings libpq refuses, a SQLite file that is
missing or read-only -- fail at once with exit 2; a statement PostgreSQL refuses for
good (told apart by its SQLSTATE: a publication that wants a replica identity, a
server limit) at once with exit 1 (DatabaseRefused); a PostgreSQL server that takes
no writes (a hot standby, as after a failover) at once with exit 75. A privilege
schedctl's login role lacks is such a refusal too (PermissionDenied).

A Database may be used by several threads at once (dispatch sends over several
connections): each transaction runs on a connection of its own thread, and a thread
inside :meth:`Database.pinned` keeps one connection for all of its transactions
instead of taking one from the pool for each. On SQLite, whose one writer makes
concurrent write transactions wait for each other anyway, the threads of one process
take turns on a lock before they begin one, so they queue in the process instead of
in SQLite's busy handler (which sleeps, up to 100 ms at a time, before it looks
again).
"""

from __future__ import annotations

import copy
import functools
import logging
import os
import re
import sqlite3
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from typing import Any, TypeVar

import sqlalchemy as sa
import tenacity

from schedctl.db import dialect
from schedctl.db.driver import DriverStatement, SentAhead, compile_for_driver
from schedctl.db.engine import (
    create_engine,
    describe_target,
    is_sqlite_read_only,
    parse_url,
    sqlite_path,
)
from schedctl.errors import (
    ConfigError,
    ConflictError,
    DatabaseRefused,
    DatabaseUnavailable,
    PermissionDenied,
    SchedctlError,
    SchemaMismatch,
    ValidationError,
)

log = logging.getLogger("schedctl.db")
T = TypeVar("T")

NOW_ENV = "SCHEDCTL_NOW"

# Statements compiled for the driver that a Database keeps (write_alone); dispatch uses
# one per outcome's set of columns, a handful.
_DRIVER_STATEMENTS = 256


# What libpq (or psycopg, checking them first) says when it refuses the connection
# settings themselves, before it connects: an unknown option, a value it cannot
# parse, a malformed URI.
_LIBPQ_SETTINGS = re.compile(
    r'invalid \w+ value: "'
    r"|bad value for \w+: "
    r'|invalid integer value "[^"]*" for connection option'
    r"|invalid connection option"
    r"|invalid URI query parameter"
    r"|invalid percent-encoded token"
    r'|missing "=" after'
    r"|could not match \d+ (?:host names|port numbers) to \d+"
    r'|invalid port number: "'
    # ... and what the server answers a connection whose settings name nothing it has,
    # before any session exists (libpq gives no SQLSTATE for it; a server whose
    # messages are in another language gives other words, and such a URL exits 75).
    r'|FATAL:\s+(?:database|role) "[^"]*" does not exist'
    r'|FATAL:\s+invalid value for parameter "'
    r'|FATAL:\s+unrecognized configuration parameter "'
)


def retry_stop(seconds: float) -> Any:
    """When a transaction's retries stop: once ``seconds`` (SCHEDCTL_DB_RETRY_SECONDS)
    have passed, however many attempts that took. (A cap of 10 attempts used to end
    them after about 10 s whatever the setting said.)"""
    return tenacity.stop_after_delay(seconds)


def is_configuration_error(exc: BaseException) -> bool:
    """Whether the driver refused the connection settings (a wrong database URL)."""
    orig = exc.orig if isinstance(exc, sa.exc.DBAPIError) else exc
    if isinstance(orig, sqlite3.DatabaseError) and "file is not a database" in str(orig):
        return True  # the URL names some other file
    psycopg = sys.modules.get("psycopg")
    return (
        psycopg is not None
        and isinstance(orig, psycopg.Error)
        and _LIBPQ_SETTINGS.search(str(orig)) is not None
    )


def is_transient(exc: BaseException) -> bool:
    """Whether retrying the whole transaction may succeed."""
    if not isinstance(exc, sa.exc.DBAPIError) or is_configuration_error(exc):
        return False
    if exc.connection_invalidated:
        return True
    orig = exc.orig
    if isinstance(orig, sqlite3.OperationalError):
        text = str(orig).lower()
        return "locked" in text or "busy" in text
    if _is_other_transient(orig):
        return True
    return _is_psycopg_transient(orig)


# MySQL/MariaDB client and server error numbers after which the same transaction may
# succeed: cannot connect, server gone or restarting, connection lost or killed,
# too many connections, lock wait timeout, deadlock.
_MYSQL_TRANSIENT = frozenset({1040, 1053, 1205, 1213, 1927, 2002, 2003, 2006, 2013, 2055, 4031})


def _is_other_transient(orig: BaseException | None) -> bool:
    """Transient errors of the data-source-only drivers (PyMySQL, oracledb)."""
    module = type(orig).__module__ if orig is not None else ""
    if module.startswith("pymysql"):
        code = orig.args[0] if orig is not None and orig.args else None
        return isinstance(code, int) and code in _MYSQL_TRANSIENT
    if module.startswith("oracledb"):
        # oracledb raises OperationalError for connection failures and losses; the
        # error object says whether the same call may succeed again.
        error = orig.args[0] if orig is not None and orig.args else None
        return type(orig).__name__ == "OperationalError" or bool(
            getattr(error, "isrecoverable", False)
        )
    return False


# PostgreSQL's SQLSTATE classes after which the same transaction may succeed:
# connection exception, transaction rollback (serialization failure, deadlock),
# insufficient resources (disk full, out of memory, too many connections), operator
# intervention (a server shutting down or starting up, a statement or idle timeout),
# system error (an I/O error); and lock not available (lock_timeout), a foreign data
# wrapper that cannot reach its server or is out of memory. psycopg raises
# OperationalError for these and for others that no retry mends: object not in
# prerequisite state (a publication that refuses an UPDATE for want of a replica
# identity), program limit exceeded (wraparound: VACUUM first), a configuration file
# error, a file missing or duplicated. (An error raised as the server ends the session
# -- FATAL -- breaks the connection and is retried as a lost connection whatever its
# SQLSTATE; errors while connecting come from libpq without one.)
_PG_TRANSIENT_CLASSES = frozenset({"08", "40", "53", "57", "58"})
_PG_TRANSIENT_STATES = frozenset({"55P03", "HV00N", "HV001"})
_PG_PERMANENT_STATES = frozenset({"57P04", "58P01", "58P02"})


def _is_psycopg_operational(orig: BaseException | None) -> bool:
    """Whether ``orig`` is psycopg's OperationalError. Looked up lazily: a SQLite-only
    run never pays for importing psycopg."""
    psycopg = sys.modules.get("psycopg")
    return psycopg is not None and isinstance(orig, psycopg.OperationalError)


def _is_psycopg_transient(orig: BaseException | None) -> bool:
    """Whether psycopg's error is one the same transaction may get past: the
    connection failed or was lost (psycopg's own, without a SQLSTATE), or the server
    answered with a SQLSTATE above."""
    if not _is_psycopg_operational(orig):
        return False
    state = getattr(orig, "sqlstate", None)
    if not state:
        return True
    if state in _PG_PERMANENT_STATES:
        return False
    return state[:2] in _PG_TRANSIENT_CLASSES or state in _PG_TRANSIENT_STATES


# SQLSTATE 25006, read_only_sql_transaction: PostgreSQL refused a write because the
# session is read-only -- a hot standby (an old primary after a failover is one) or a
# database or role with default_transaction_read_only on. schedctl makes no transaction
# of its own read-only there except the fenced queries it runs for users (report and
# source queries), which handle this error themselves. A failover ends it: exit 75,
# at once (this connection will not become writable by retrying on it).
_PG_READ_ONLY_SESSION = "25006"


def _is_read_only_server(orig: BaseException | None) -> bool:
    return getattr(orig, "sqlstate", None) == _PG_READ_ONLY_SESSION


def _grants_hint(refusal: str) -> str:
    """What to grant, for a privilege the role lacks (not for a row that row-level
    security keeps out of the role's account: no grant is missing there)."""
    if "row-level security" in refusal:
        return " (the login role is bound to another account: see account_roles)"
    from schedctl.db.schema import OWNERS_TABLES

    return (
        " (schedctl's login role needs SELECT on its tables, and INSERT, UPDATE and DELETE"
        f" on all but {', '.join(sorted(OWNERS_TABLES))})"
    )


def first_line(exc: BaseException) -> str:
    text = str(getattr(exc, "orig", None) or exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def parse_now(raw: str) -> datetime:
    """The instant SCHEDCTL_NOW names; its error line names the variable."""
    from schedctl.cadence import parse_instant

    try:
        return parse_instant(raw)
    except ValidationError as exc:
        raise ValidationError(f"{NOW_ENV}: {exc.message}") from None


class Database:
    """schedctl's own database, as one command sees it."""

    def __init__(
        self,
        url: str,
        *,
        create: bool = True,
        retry_seconds: float = 20.0,
        account_id: int | None = None,
        environ: dict[str, str] | None = None,
        store: bool = True,
    ) -> None:
        """``create=False``: a missing SQLite file is an error, never created empty.

        ``store=False``: a data source or destination of `distribute` (any supported
        dialect), not schedctl's own database.
        """
        self.url = parse_url(url)
        self._raw_url = url
        self.store = store
        self.engine = create_engine(url, store=store, sqlite_mode="rwc" if create else "rw")
        self.dialect = self.engine.dialect.name
        self.capabilities = dialect.capabilities(self.engine.dialect)
        # Set when a SQLite file could only be opened for reading.
        self.read_only = False
        self._first_write: Callable[[sa.Connection], object] | None = None
        self.retry_seconds = retry_seconds
        self.account_id = account_id
        env = os.environ if environ is None else environ
        fixed_now = env.get(NOW_ENV)
        self._fixed_now = parse_now(fixed_now) if fixed_now else None
        self._threads = threading.local()  # each thread's pinned connection
        self._first_write_lock = threading.Lock()
        # SQLite: the write transactions of this process's threads, one at a time.
        self._writer = threading.RLock() if self.dialect == "sqlite" else None
        # write_alone's statements compiled for the driver, by (id, parameter keys).
        self._driver_statements: dict[
            tuple[int, tuple[str, ...]], tuple[sa.Executable, DriverStatement | None]
        ] = {}

    @property
    def target(self) -> str:
        return describe_target(self.url)

    def for_account(self, account_id: int) -> Database:
        """A handle on the same engine whose transactions are scoped to ``account_id``
        (PostgreSQL's row-level security), for a process serving one account beside
        others (the status pages). Close the original, not this one."""
        scoped = copy.copy(self)
        scoped.account_id = account_id
        scoped._first_write = None
        scoped._threads = threading.local()
        return scoped

    def close(self) -> None:
        self.engine.dispose()

    def __enter__(self) -> Database:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    @contextmanager
    def pinned(self) -> Iterator[None]:
        """Run this thread's transactions on one connection until the block ends.

        The connection is taken from the pool at the first transaction and given back
        at the end; one that failed is given back at once and the next transaction
        takes another. Blocks nest (the outer one keeps the connection).
        """
        if getattr(self._threads, "pinning", False):
            yield
            return
        self._threads.pinning = True
        try:
            yield
        finally:
            try:
                self.await_sent()
            finally:
                self._threads.pinning = False
                self._unpin()

    def _unpin(self) -> None:
        conn, self._threads.conn = getattr(self._threads, "conn", None), None
        if conn is not None:
            conn.close()

    @contextmanager
    def _begin(self, read_only: bool, alone: bool = False) -> Iterator[sa.Connection]:
        """A connection in a new transaction (``alone``: committing each statement as
        it runs, see write_alone)."""
        conn = getattr(self._threads, "conn", None)
        nested = conn is not None and conn.in_transaction()  # a transaction within one
        if nested or not getattr(self._threads, "pinning", False):
            options = {"schedctl_read_only": True} if read_only else {}
            with (
                self.engine.connect().execution_options(**options) as conn,
                self._transaction_on(conn, alone),
            ):
                yield conn
            return
        if conn is None:
            conn = self._threads.conn = self.engine.connect()
        if conn.get_execution_options().get("schedctl_read_only", False) != read_only:
            conn.execution_options(schedctl_read_only=read_only)
        try:
            with self._transaction_on(conn, alone):
                yield conn
        except BaseException:
            self._unpin()  # whatever went wrong, the next transaction starts afresh
            raise

    @contextmanager
    def _transaction_on(self, conn: sa.Connection, alone: bool) -> Iterator[None]:
        if alone:
            with dialect.committing_each_statement(conn), conn.begin():
                yield
            return
        with conn.begin():
            self._scope(conn)
            yield

    @property
    def _scoped_to(self) -> int | None:
        """The account each transaction is scoped to (row-level security), if any."""
        return self.account_id if self.capabilities.row_level_security else None

    def _scope(self, conn: sa.Connection) -> None:
        if (account := self._scoped_to) is not None:
            dialect.set_account_scope(conn, account)

    def on_first_write(self, record: Callable[[sa.Connection], object] | None) -> None:
        """Have ``record(conn)`` run in the next write transaction, after its work.

        It commits with that work or rolls back with it, so what it writes exists only
        if the command wrote something (how a refused command leaves no heartbeat).
        ``None`` cancels it.
        """
        self._first_write = record

    @property
    def first_write_pending(self) -> bool:
        """Whether the on_first_write record has not been committed (yet)."""
        return self._first_write is not None

    def write_alone(self, statements: Sequence[sa.Executable], params: dict[str, Any]) -> int:
        """Run ``statements`` in order as one transaction of their own, as
        :meth:`transaction` would (the same retries and errors), the ones after the
        first only when it wrote a row; how many rows the first wrote. ``params`` is
        shared: each statement takes the values its binds name.

        What a dispatcher's outcome per message costs, so it is lean where it can be:

        - where the dialect can (``writing_cte``: PostgreSQL), one statement commits as
          it runs, in one round trip instead of three (BEGIN, the statement, COMMIT);
        - on a thread's pinned connection, the statements run on the driver itself,
          compiled once (schedctl.db.driver), without SQLAlchemy's execution or the
          retry wrapper, for a third to a half of the CPU (bench/NOTES.md): on
          PostgreSQL the one statement as :meth:`send_alone` sends it, its reply read
          at once.
          Should that fail in any way, the connection is discarded and the write is
          made again as a transaction, whose retries and errors are then what the
          caller sees.

        A transaction scoped to an account, or one that must carry the on_first_write
        record, is an ordinary transaction. Build the statements once (a constant, or a
        cached function): each is compiled once per statement object.
        """
        if not statements:
            raise ValueError("write_alone needs a statement")
        self.await_sent()
        alone = self._alone(statements)
        written = self._write_on_driver(statements, params, alone)
        if written is not None:
            return written
        return self._write_as_transaction(statements, params)

    def _write_as_transaction(
        self, statements: Sequence[sa.Executable], params: dict[str, Any]
    ) -> int:
        """write_alone's statements through SQLAlchemy, retried as any transaction."""
        write = functools.partial(_write_in_order, statements, params)
        return self._transact(write, read_only=False, alone=self._alone(statements))

    def send_alone(
        self,
        statements: Sequence[sa.Executable],
        params: dict[str, Any],
        then: Callable[[int], object],
    ) -> None:
        """write_alone, with the reply read later where that can be: then(rows the
        first statement wrote) is called once it is written.

        On a thread's pinned PostgreSQL connection, write_alone's one statement is
        sent and this returns at once; the statement commits as it runs, and
        :meth:`await_sent` -- called by this thread's next use of this Database, and
        at the end of :meth:`pinned` -- reads its reply and calls ``then``. Until then
        nothing says it committed: a caller whose next step depends on it (a
        dispatcher, before the server may accept its next message) calls await_sent
        first. Elsewhere the write is made now and ``then`` called before this
        returns.
        """
        if not statements:
            raise ValueError("send_alone needs a statement")
        self.await_sent()
        alone = self._alone(statements)
        ready = self._on_driver(statements, params, alone) if alone else None
        if ready is not None:
            conn, prepared = ready
            try:
                sent = SentAhead(conn.connection.driver_connection, prepared[0], params)
                self._threads.sent = (sent, statements, params, then)
            except Exception as exc:
                log.debug("sending ahead failed (%s); as a transaction", type(exc).__name__)
                self._discard_pinned()
            except BaseException:
                self._discard_pinned()  # (a write in flight: the connection is not reused)
                raise
            else:
                return
        then(self.write_alone(statements, params))

    def await_sent(self) -> None:
        """Wait for this thread's write sent ahead (send_alone), if any, and call its
        ``then``. Should the write or its connection fail, the connection is discarded
        and the write made again as a transaction, whose retries and errors are then
        what the caller sees (a write committed whose reply was lost writes nothing
        the second time: ``then`` is told 0 rows)."""
        pending = getattr(self._threads, "sent", None)
        if pending is None:
            return
        sent, statements, params, then = pending
        try:
            self._threads.sent = None  # (inside: an interrupt from here discards the connection)
            written = sent.rows()
        except Exception as exc:
            log.debug("a write sent ahead failed (%s); as a transaction", type(exc).__name__)
            self._discard_pinned()
            written = self._write_as_transaction(statements, params)
        except BaseException:
            self._discard_pinned()
            raise
        then(written)

    def _alone(self, statements: Sequence[sa.Executable]) -> bool:
        """Whether write_alone's statements commit as they run: one statement where
        the dialect can, outside a scoped transaction or the on_first_write record."""
        return (
            len(statements) == 1
            and self.capabilities.writing_cte
            and self._first_write is None
            and self._scoped_to is None
        )

    def _write_on_driver(
        self, statements: Sequence[sa.Executable], params: dict[str, Any], alone: bool
    ) -> int | None:
        """write_alone on the pinned connection's driver; None when it cannot be made
        there (see _on_driver) or failed there (the connection is then discarded)."""
        ready = self._on_driver(statements, params, alone)
        if ready is None:
            return None
        conn, prepared = ready
        try:
            raw = conn.connection.driver_connection
            if alone:  # sent ahead, and its reply read at once
                return SentAhead(raw, prepared[0], params).rows()
            return self._run_transaction(raw, prepared, params)
        except Exception as exc:
            # Whatever it was, the transaction path runs the write again, retrying or
            # reporting as it does; the error's text (it may hold values) stays here.
            log.debug("write on the driver failed (%s); as a transaction", type(exc).__name__)
            self._discard_pinned()
            return None
        except BaseException:
            self._discard_pinned()
            raise

    def _on_driver(
        self, statements: Sequence[sa.Executable], params: dict[str, Any], alone: bool
    ) -> tuple[sa.Connection, list[DriverStatement]] | None:
        """The pinned connection and ``statements`` compiled for its driver, or None
        when the write cannot be made there: not pinned, within a transaction, scoped,
        carrying the on_first_write record, or a dialect without a way."""
        if not getattr(self._threads, "pinning", False) or self._first_write is not None:
            return None
        if self._scoped_to is not None or self.read_only:
            return None
        if not (alone or self._writer is not None):
            return None  # (a transaction on the driver: only SQLite's, under _writer)
        conn = getattr(self._threads, "conn", None)
        if conn is not None and conn.in_transaction():
            return None
        prepared = []
        for statement in statements:
            compiled = self._driver_statement(statement, tuple(params))
            if compiled is None:
                return None
            prepared.append(compiled)
        if conn is None:
            try:
                conn = self._threads.conn = self.engine.connect()
            except Exception:
                return None  # the transaction path connects again, retrying or reporting
        return conn, prepared

    def _driver_statement(
        self, statement: sa.Executable, keys: tuple[str, ...]
    ) -> DriverStatement | None:
        """``statement`` compiled for the driver with parameters ``keys`` (None: it
        cannot run there), once per statement object and keys."""
        cached = self._driver_statements.get((id(statement), keys))
        if cached is None or cached[0] is not statement:
            if len(self._driver_statements) >= _DRIVER_STATEMENTS:
                self._driver_statements.clear()  # a caller building one per call
            compiled = compile_for_driver(statement, self.engine.dialect, keys)
            cached = self._driver_statements[id(statement), keys] = (statement, compiled)
        return cached[1]

    def _run_transaction(
        self, raw: Any, statements: list[DriverStatement], params: dict[str, Any]
    ) -> int:
        """SQLite: BEGIN IMMEDIATE, the statements (the rest only when the first wrote
        a row), COMMIT; with this process's other writers waiting their turn."""
        writer = self._writer
        assert writer is not None  # (SQLite's, see _write_on_driver)
        with writer:
            raw.execute("BEGIN IMMEDIATE")
            try:
                first, *rest = statements
                count = int(raw.execute(first.sql, first.arguments(params)).rowcount)
                if count > 0:
                    for statement in rest:
                        raw.execute(statement.sql, statement.arguments(params))
                raw.execute("COMMIT")
            except BaseException:
                if raw.in_transaction:
                    raw.execute("ROLLBACK")
                raise
            return count

    def _discard_pinned(self) -> None:
        """Never use this thread's pinned connection again (its state is unknown)."""
        conn, self._threads.conn = getattr(self._threads, "conn", None), None
        if conn is not None:
            conn.invalidate()
            conn.close()

    def transaction(self, work: Callable[[sa.Connection], T], *, read_only: bool = False) -> T:
        """Run ``work(conn)`` in one transaction, retrying it on transient errors."""
        return self._transact(work, read_only=read_only, alone=False)

    def _transact(self, work: Callable[[sa.Connection], T], *, read_only: bool, alone: bool) -> T:
        """transaction(), or (``alone``) write_alone's one statement committed as it runs."""
        self.await_sent()
        writer = None if read_only else self._writer

        def attempt() -> T:
            record = None
            if not (read_only or alone) and self._first_write is not None:
                with self._first_write_lock:  # one thread's transaction takes it
                    record, self._first_write = self._first_write, None
            try:
                if writer is not None:
                    writer.acquire()
                try:
                    with self._begin(read_only, alone) as conn:
                        result = work(conn)
                        if record is not None:
                            record(conn)
                finally:
                    if writer is not None:
                        writer.release()
            except sa.exc.IntegrityError as exc:
                self._first_write = self._first_write or record  # not committed
                if self.store and raised_in_database(exc.orig):
                    raise  # a trigger's refusal, whatever its SQLSTATE: _domain_error's
                raise ConflictError(
                    first_line(exc), constraint=dialect.constraint_name(exc)
                ) from None
            except BaseException:
                self._first_write = self._first_write or record
                raise
            return result

        retrying = tenacity.Retrying(
            retry=tenacity.retry_if_exception(is_transient),
            stop=retry_stop(self.retry_seconds),
            wait=tenacity.wait_random_exponential(multiplier=0.2, max=5.0),
            before_sleep=self._log_retry,
            reraise=True,
        )
        try:
            return retrying(attempt)
        except sa.exc.DBAPIError as exc:
            if isinstance(exc.orig, sqlite3.Error):
                if is_sqlite_read_only(exc.orig) and read_only and not self.read_only:
                    self._reopen_read_only()
                    return self.transaction(work, read_only=True)
                self._raise_sqlite_error(exc, read_only)
            error = _domain_error(exc, f" ({self.target})", writing=not read_only, store=self.store)
            if error is not None:
                raise error from None
            raise

    def _raise_sqlite_error(self, exc: sa.exc.DBAPIError, read_only: bool) -> None:
        """Turn a SQLite error about the file itself into one line, exit 2."""
        path = sqlite_path(self.url)
        if is_sqlite_read_only(exc.orig) and read_only:
            raise ConfigError(f"cannot read {self.target}: {first_line(exc)}") from None
        if is_sqlite_read_only(exc.orig):
            raise ConfigError(
                f"database file {path} is read-only: this command writes to it"
                " (check the permissions of the file and of its directory)"
            ) from None
        if getattr(exc.orig, "sqlite_errorcode", None) == sqlite3.SQLITE_CANTOPEN:
            if (
                self.store
                and path
                and not os.path.exists(path)
                and os.path.isdir(os.path.dirname(path) or ".")
            ):
                raise SchemaMismatch(
                    f"{self.target} does not exist: run `schedctl db upgrade` to create it"
                ) from None
            raise ConfigError(f"cannot open {self.target}: {first_line(exc)}") from None

    def _reopen_read_only(self) -> None:
        """Read a file we may not write (nor write beside, for WAL's -shm) read-only."""
        log.debug("%s is read-only to this process: reading it read-only", self.target)
        self.engine.dispose()
        self.engine = create_engine(self._raw_url, store=self.store, sqlite_mode="ro")
        self.read_only = True

    def _log_retry(self, state: tenacity.RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome else None
        wait = state.next_action.sleep if state.next_action else 0.0
        # INFO, not WARNING: by default a command that gives up prints one line only.
        log.info(
            "transient database error on %s (attempt %d, retrying in %.1fs): %s",
            self.target,
            state.attempt_number,
            wait,
            first_line(exc) if exc else "?",
        )

    def now(self) -> datetime:
        """The current instant: SCHEDCTL_NOW if set, else the database server's clock."""
        if self._fixed_now is not None:
            return self._fixed_now
        return self.server_now()

    def server_now(self) -> datetime:
        """The database server's clock, whatever SCHEDCTL_NOW says (what heartbeats
        are stamped and judged with)."""
        return self.transaction(dialect.server_now, read_only=True)

    @property
    def simulated_now(self) -> datetime | None:
        """The SCHEDCTL_NOW instant this database was opened under, if any."""
        return self._fixed_now

    def scalar(self, statement: sa.Executable, **params: Any) -> Any:
        return self.transaction(lambda c: c.execute(statement, params).scalar(), read_only=True)


def _write_in_order(
    statements: Sequence[sa.Executable], params: dict[str, Any], conn: sa.Connection
) -> int:
    """write_alone's statements in a transaction: the rest only when the first wrote a
    row; how many rows the first wrote."""
    # (preserve_rowcount: SQLAlchemy otherwise reports -1 for an INSERT whose rows come
    # from a WITH that returns rows.)
    first, *rest = statements
    count = int(conn.execute(first, params, execution_options={"preserve_rowcount": True}).rowcount)
    if count > 0:
        for statement in rest:
            conn.execute(statement, params)
    return count


def wrap_unexpected(exc: BaseException) -> SchedctlError | None:
    """Map a stray driver error to a domain error, or None if it is a bug."""
    return _domain_error(exc) if isinstance(exc, sa.exc.DBAPIError) else None


def _domain_error(
    exc: sa.exc.DBAPIError, where: str = "", *, writing: bool = True, store: bool = True
) -> SchedctlError | None:
    """The domain error of a driver error that retrying has not mended (``where``
    names the database in its message), or None when it is none of these.
    ``writing``: the transaction was not one the caller made read-only itself;
    ``store``: the database is schedctl's own (not a source or destination of
    `distribute`, whose errors its stages report)."""
    if is_configuration_error(exc):
        return ConfigError(f"invalid database connection settings{where}: {first_line(exc)}")
    if is_transient(exc):
        return DatabaseUnavailable(f"database unavailable{where}: {first_line(exc)}")
    if store and raised_in_database(exc.orig):
        # Before the SQLSTATE's own meaning (a RAISE may give it any: 42501, 25006...).
        return DatabaseRefused(f"database error{where}: {first_line(exc)}{_RAISED}")
    if store and dialect.is_permission_denied(exc):
        refusal = first_line(exc)
        return PermissionDenied(
            f"database error{where}: {refusal}{_grants_hint(refusal)}", refusal=refusal
        )
    if writing and _is_read_only_server(exc.orig):
        return DatabaseUnavailable(
            f"database unavailable{where}: it takes no writes (a hot standby, or"
            f" default_transaction_read_only is on): {first_line(exc)}"
        )
    if _is_psycopg_operational(exc.orig):
        return DatabaseRefused(f"database error{where}: {first_line(exc)}")
    if store and _schema_changed_by_hand(exc.orig):
        return DatabaseRefused(f"database error{where}: {first_line(exc)}{_SCHEMA_CHANGED}")
    return None


# Refusals of schedctl's own statements that come from what was done to its database
# by hand, not from schedctl: a table or column dropped or renamed, a trigger or
# function that raises. (Other unexpected errors stay internal errors: schedctl's own.)
_SCHEMA_CHANGED = " (was schedctl's schema changed by hand?)"
_RAISED = " (raised by a trigger or function in the database)"
_PG_SCHEMA_CHANGED = frozenset({"42P01", "42703"})  # undefined_table, undefined_column
_SQLITE_SCHEMA_CHANGED = ("no such table", "no such column")
# The server's function that runs a PL/pgSQL RAISE (its error reports it, in any locale).
_PLPGSQL_RAISE = "exec_stmt_raise"


def _schema_changed_by_hand(orig: BaseException | None) -> bool:
    """Whether ``orig`` says a table or column of schedctl's is missing: dropped or
    renamed by hand."""
    if isinstance(orig, sqlite3.OperationalError):
        return str(orig).startswith(_SQLITE_SCHEMA_CHANGED)
    return getattr(orig, "sqlstate", None) in _PG_SCHEMA_CHANGED


def raised_in_database(orig: BaseException | None) -> bool:
    """Whether ``orig`` is the error of a RAISE (a trigger's or a function's), whatever
    SQLSTATE it was given: the server reports the PL/pgSQL function that raised it, the
    same in every locale; or, without that report, RAISE's own default SQLSTATE P0001.
    (A RAISE of a transient SQLSTATE, such as a trigger's "try again later" as 40001,
    is retried as that SQLSTATE asks: see is_transient.)"""
    diag = getattr(orig, "diag", None)
    if getattr(diag, "source_function", None) == _PLPGSQL_RAISE:
        return True
    return getattr(orig, "sqlstate", None) == "P0001"  # raise_exception
