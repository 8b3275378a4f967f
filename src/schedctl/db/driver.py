"""Statements run on the DBAPI connection itself: for the one write a dispatcher makes
per message, where SQLAlchemy's execution (parameter processing, result set-up,
events) and the transaction wrapper cost more than the SQL (see Database.write_alone).

A statement is compiled once for the engine's dialect by SQLAlchemy, as it would be
for any execution; what this module adds is only running the compiled text with its
parameters, each converted by its column type's own bind processor, as SQLAlchemy
would convert it. A statement this cannot run the same way (a column default
computed in Python, an expanding IN, a post-compile literal, a bind whose name the
dialect escapes) is left to SQLAlchemy.

On PostgreSQL a statement can also be sent ahead (:class:`SentAhead`): written to the
server at once, its reply read later, so that a dispatcher's outcome commits while it
offers the server its next message's envelope (see Database.send_alone).
"""

from __future__ import annotations

import re
import select
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, cast

import sqlalchemy as sa

__all__ = ["DriverStatement", "ReplyError", "SentAhead", "compile_for_driver"]


@dataclass(frozen=True)
class DriverStatement:
    """A statement compiled for one dialect, with what turns parameters into the
    driver's: the bind names in order (positional paramstyles) or by name."""

    sql: str
    compiled: Any  # sqlalchemy's SQLCompiler
    positional: bool
    names: tuple[str, ...]
    processors: dict[str, Callable[[Any], Any]]

    def arguments(self, params: dict[str, Any]) -> tuple[Any, ...] | dict[str, Any]:
        """The driver's parameters for ``params`` (by bind name; extra keys ignored)."""
        values = self.compiled.construct_params(params)
        for name, process in self.processors.items():
            values[name] = process(values[name])
        if self.positional:
            return tuple(values[name] for name in self.names)
        return {name: values[name] for name in self.names}


def compile_for_driver(
    statement: sa.Executable, dialect: sa.Dialect, keys: Sequence[str]
) -> DriverStatement | None:
    """``statement`` compiled for ``dialect`` to run on its driver with parameters
    named ``keys``, or None when it must run through SQLAlchemy (see the module
    docstring). Compiled as SQLAlchemy compiles it for an execution with those keys:
    an INSERT or UPDATE without values of its own takes its columns from them."""
    compiled: Any = cast(Any, statement).compile(dialect=dialect, column_keys=list(keys))
    binds = compiled.binds
    if compiled.insert_prefetch or compiled.update_prefetch:
        return None  # a column's Python-side default, which SQLAlchemy computes per run
    if compiled.escaped_bind_names or any(
        bind.expanding or bind.literal_execute for bind in binds.values()
    ):
        return None
    rendered = dict.fromkeys(compiled.bind_names.values())  # in order, once each
    names = tuple(compiled.positiontup) if dialect.positional else tuple(rendered)
    processors = {}
    for name in names:
        if name not in binds:
            return None
        process = binds[name].type.dialect_impl(dialect).bind_processor(dialect)
        if process is not None:
            processors[name] = process
    return DriverStatement(compiled.string, compiled, dialect.positional, names, processors)


class ReplyError(Exception):
    """PostgreSQL answered a statement sent ahead (:class:`SentAhead`) with an error
    (its text is not kept: it may hold the statement's values)."""


class SentAhead:
    """One statement sent to PostgreSQL whose reply is read later: in the meantime the
    caller works on (a dispatcher offers its next message's envelope).

    It goes on psycopg's libpq connection as a statement prepared once per session
    (its binds numbered, each cast to its type as SQLAlchemy renders them for psycopg)
    with its values as text, each written by psycopg's own dumper for its type. In a
    session with no transaction open, such a statement runs in a transaction of its
    own and commits as it ends; nothing says it did until :meth:`rows` has read the
    reply. The caller must read it before anything else uses the connection.
    """

    def __init__(self, raw: Any, statement: DriverStatement, params: dict[str, Any]) -> None:
        import psycopg  # (only PostgreSQL gets here: not paid by a SQLite start-up)

        pgconn = raw.pgconn
        if statement.positional or pgconn.transaction_status != psycopg.pq.TransactionStatus.IDLE:
            raise ValueError("a statement sent ahead needs pyformat binds and an idle session")
        session = _sessions.get(raw)
        if session is None:
            session = _sessions[raw] = _Session()
        name = session.prepared(raw, statement)
        arguments = cast(dict[str, Any], statement.arguments(params))
        pgconn.send_query_prepared(name, [session.text(raw, arguments[n]) for n in statement.names])
        while pgconn.flush():  # (non-blocking: 1 while some is still to write)
            _wait(pgconn.socket, select.POLLOUT)
        self.pgconn = pgconn

    def rows(self) -> int:
        """Wait for the reply: how many rows the statement wrote. ReplyError when it
        failed; psycopg's OperationalError when the connection did."""
        import psycopg

        pgconn, written, failed = self.pgconn, 0, False
        while True:
            while pgconn.is_busy():
                _wait(pgconn.socket, select.POLLIN)
                pgconn.consume_input()
            result = pgconn.get_result()
            if result is None:
                break
            if result.status in (psycopg.pq.ExecStatus.COMMAND_OK, psycopg.pq.ExecStatus.TUPLES_OK):
                written += int(result.command_tuples or 0)
            else:
                failed = True
        if failed:
            raise ReplyError("the statement failed")
        return written


def _wait(fd: int, event: int) -> None:
    """Wait until the socket ``fd`` is ready for ``event`` (poll: any descriptor number,
    where select() stops at 1024)."""
    poller = select.poll()
    poller.register(fd, event)
    poller.poll()


_BIND = re.compile(r"%\((\w+)\)s|%%")


class _Session:
    """What one psycopg connection has for statements sent ahead: the statements
    prepared in its session, and a dumper per Python type. (It holds no reference to
    the connection: _sessions forgets it with the connection.)"""

    def __init__(self) -> None:
        self.names: dict[str, bytes] = {}  # SQL -> its prepared statement's name
        self.dumpers: dict[type, Any] = {}

    def prepared(self, raw: Any, statement: DriverStatement) -> bytes:
        """The name ``statement`` is prepared under in ``raw``'s session (prepared now,
        the first time)."""
        name = self.names.get(statement.sql)
        if name is not None:
            return name
        import psycopg

        name = f"schedctl_ahead_{len(self.names)}".encode()
        numbers = {bind: n for n, bind in enumerate(statement.names, start=1)}
        numbered = _BIND.sub(
            lambda m: f"${numbers[m.group(1)]}" if m.group(1) else "%", statement.sql
        )
        result = raw.pgconn.prepare(name, numbered.encode(raw.info.encoding))
        if result.status != psycopg.pq.ExecStatus.COMMAND_OK:
            raise ReplyError("the statement could not be prepared")
        self.names[statement.sql] = name
        return name

    def text(self, raw: Any, value: Any) -> bytes | None:
        """``value`` as PostgreSQL reads it in text, written by psycopg's dumper."""
        from psycopg.adapt import PyFormat

        if value is None:
            return None
        dumper = self.dumpers.get(type(value))
        if dumper is None:
            dumper = raw.adapters.get_dumper(type(value), PyFormat.TEXT)(type(value), raw)
            self.dumpers[type(value)] = dumper
        return bytes(dumper.upgrade(value, PyFormat.TEXT).dump(value))


# The sessions statements were sent ahead on, by psycopg connection (gone with it).
_sessions: weakref.WeakKeyDictionary[Any, _Session] = weakref.WeakKeyDictionary()
