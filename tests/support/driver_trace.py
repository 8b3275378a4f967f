"""What a database driver is asked to run, whoever asks: SQLAlchemy, or schedctl on the
driver itself (Database.write_alone, and send_alone's statements sent ahead)."""

from __future__ import annotations

import sqlite3
from typing import Any

import pytest
import sqlalchemy as sa

from schedctl.db import database
from schedctl.db.driver import DriverStatement, SentAhead


def trace_statements(engine: sa.Engine) -> list[tuple[str, bool]]:
    """Each statement the engine's connections opened from now on run: (its first
    three words, whether the connection was in autocommit). SQLite reports what it
    runs itself (BEGIN and COMMIT included; a statement run twice in a row is seen
    once); psycopg what its cursors are given (psycopg begins and commits a
    transaction without one)."""
    seen: list[tuple[str, bool]] = []

    def words(sql: Any) -> str:
        text = sql.as_string(None) if hasattr(sql, "as_string") else str(sql)
        return " ".join(text.split()[:3])

    @sa.event.listens_for(engine, "connect")
    def _traced(dbapi_conn: Any, _record: Any) -> None:
        if isinstance(dbapi_conn, sqlite3.Connection):

            def traced(sql: str) -> None:
                # The sqlite3 module reports a statement again for each trigger it
                # fires (with the statement's own text): once is enough.
                if not seen or seen[-1] != (words(sql), False):
                    seen.append((words(sql), False))

            dbapi_conn.set_trace_callback(traced)
            return

        class Traced(dbapi_conn.cursor_factory):  # type: ignore[misc,name-defined]
            def execute(self, query: Any, *args: Any, **kwargs: Any) -> Any:
                seen.append((words(query), bool(self.connection.autocommit)))
                return super().execute(query, *args, **kwargs)

        dbapi_conn.cursor_factory = Traced

    return seen


def trace_sqlalchemy(engine: sa.Engine) -> list[str]:
    """The first word of each statement SQLAlchemy executes on the engine from now on
    (what write_alone's driver path leaves out)."""
    seen: list[str] = []

    @sa.event.listens_for(engine, "before_cursor_execute")
    def _executed(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        seen.append(statement.split()[0])

    return seen


def trace_sent_ahead(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The first three words of each statement Database.send_alone sends ahead from now
    on (on libpq itself: no cursor sees it)."""
    seen: list[str] = []

    class Traced(SentAhead):
        def __init__(self, raw: Any, statement: DriverStatement, params: dict[str, Any]) -> None:
            seen.append(" ".join(statement.sql.split()[:3]))
            super().__init__(raw, statement, params)

    monkeypatch.setattr(database, "SentAhead", Traced)
    return seen
