"""Quarantine: rows applications wrote that schedctl cannot read or render.

``users``, ``notifications`` and ``events`` are written by applications as well as by
schedctl's own commands, so a row may hold what no command would write: text that
is not valid UTF-8 or a BLOB where text belongs (SQLite stores whatever it is given),
an instant Python cannot represent (PostgreSQL's range is wider), or content a
template cannot render. Such a row must cost its owner one notification, never
every account its digest or tick. One mechanism handles them all:

- Readers fetch these rows by id through :func:`read_rows`, which isolates a row the
  driver cannot decode (bisecting a failing batch down to single ids) and checks the
  values it reads (:func:`text_problem`), and hand the rows that fail, with the
  reason, to a :class:`Found`.
- :func:`mark` records them in the same transaction as the work that met them:
  ``quarantined_at`` and ``quarantine_reason`` are set on the row (a notification is
  also marked consumed, so the digest's and tick's partial indexes leave it out),
  and every reader skips quarantined rows (:func:`active`), so a row is reported
  once and never retried.
- The command counts them (``quarantined`` in its --json summary, exit 1 in the run
  that found them) and prints one warning line (:func:`warn`).

An operator who repairs a row returns it to service by setting ``quarantined_at``
and ``quarantine_reason`` (and, for a notification, ``consumed_at``) back to NULL.
"""

from __future__ import annotations

import logging
import re
import sqlite3
import sys
from collections import Counter
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from schedctl.db import dialect

log = logging.getLogger("schedctl.quarantine")

MAX_REASON = 300
_SQLITE_UNDECODABLE = re.compile(r"Could not decode to UTF-8 column '([^']*)'")
# Raised while a row's values are turned into Python objects (a date out of range,
# a value of another type than the column's): the row, not the query, is at fault.
_CONVERSION_ERRORS = (ValueError, TypeError, OverflowError, UnicodeDecodeError)
# What reading a row may raise; :func:`undecodable` tells the row's fault from others.
READ_ERRORS: tuple[type[BaseException], ...] = (sa.exc.DBAPIError, *_CONVERSION_ERRORS)


def active(table: sa.Table) -> sa.ColumnElement[bool]:
    """The rows not quarantined: the condition every reader of ``table`` adds."""
    return table.c.quarantined_at.is_(None)


def undecodable(exc: BaseException) -> str | None:
    """Why the driver could not turn a fetched row into Python values, or None when
    ``exc`` is some other error (which the caller must not swallow)."""
    if isinstance(exc, _CONVERSION_ERRORS):
        return f"a value cannot be read ({type(exc).__name__}: {exc})"
    orig = exc.orig if isinstance(exc, sa.exc.DBAPIError) else None
    if isinstance(orig, sqlite3.OperationalError):
        match = _SQLITE_UNDECODABLE.search(str(orig))
        return f"{match.group(1)} is not valid UTF-8 text" if match else None
    psycopg = sys.modules.get("psycopg")
    # A DataError without a SQLSTATE is psycopg's own, raised while loading a value
    # the server sent (a timestamp beyond year 9999): the statement itself succeeded.
    if (
        psycopg is not None
        and isinstance(orig, psycopg.DataError)
        and getattr(orig, "sqlstate", None) is None
    ):
        return f"a value cannot be read ({orig})"
    return None


def read_rows(
    conn: sa.Connection, query: sa.Select[Any], id_column: sa.ColumnElement[Any], ids: Sequence[int]
) -> tuple[list[Any], dict[int, str]]:
    """The rows of ``query`` whose ``id_column`` is one of ``ids``, and the ids of
    the rows that could not be read, with the reason.

    A batch that fails to decode is split in halves until the failing rows stand
    alone, so k bad rows among n cost about k·log2(n) extra queries, and only once:
    the caller quarantines them.
    """
    if not ids:
        return [], {}
    try:
        return list(conn.execute(query.where(dialect.one_of(id_column, ids))).all()), {}
    except READ_ERRORS as exc:
        reason = undecodable(exc)
        if reason is None:
            raise
        if len(ids) == 1:
            return [], {int(ids[0]): reason}
    half = len(ids) // 2
    first, first_bad = read_rows(conn, query, id_column, ids[:half])
    second, second_bad = read_rows(conn, query, id_column, ids[half:])
    return first + second, first_bad | second_bad


def text_problem(value: Any, name: str, *, required: bool = False) -> str | None:
    """What is wrong with a text value read from an application's row, or None."""
    if value is None:
        return f"{name} is missing" if required else None
    if not isinstance(value, str):
        return f"{name} is not text ({type(value).__name__})"
    if required and not value.strip():
        return f"{name} is empty"
    if "\x00" in value:
        return NUL_PROBLEM.format(name)
    return None


# A text holding a NUL character (SQLite stores one; mail cannot carry it, and SQLite's
# own text functions stop at it).
NUL_PROBLEM = "{} holds a NUL character"


def first_problem(*problems: str | None) -> str | None:
    return next((p for p in problems if p is not None), None)


class Found:
    """The rows one command quarantined, per table (counted once committed)."""

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()
        self.reasons: dict[str, str] = {}  # table -> one example reason

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def add(self, table: str, bad: Mapping[int, str]) -> None:
        if bad:
            self.counts[table] += len(bad)
            self.reasons.setdefault(table, next(iter(bad.values())))

    def merge(self, other: Found) -> None:
        for table, count in other.counts.items():
            self.counts[table] += count
            self.reasons.setdefault(table, other.reasons[table])

    def warn(self, command: str) -> None:
        """One warning line for the whole run, when it quarantined anything."""
        if not self.total:
            return
        parts = ", ".join(
            f"{count} in {table} (e.g. {self.reasons[table]})"
            for table, count in sorted(self.counts.items())
        )
        log.warning(
            "%s quarantined %d row(s) it could not read or render: %s;"
            " see their quarantine_reason column",
            command,
            self.total,
            parts,
        )


def mark(conn: sa.Connection, table: sa.Table, bad: Mapping[int, str], now: datetime) -> None:
    """Quarantine the rows ``bad`` ({id: reason}) of ``table``, in the caller's
    transaction (a notification is marked consumed too)."""
    if not bad:
        return
    values: dict[str, Any] = {"quarantined_at": now, "quarantine_reason": sa.bindparam("q_reason")}
    if "consumed_at" in table.c:
        values["consumed_at"] = now
    statement = (
        table.update().where(table.c.id == sa.bindparam("q_id"), active(table)).values(**values)
    )
    rows = [{"q_id": row_id, "q_reason": reason[:MAX_REASON]} for row_id, reason in bad.items()]
    conn.execute(statement, rows)
