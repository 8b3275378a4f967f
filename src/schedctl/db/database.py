"""The Database handle: transactions with retries, the clock, the schema check.

Every command opens one Database, runs short transactions through
:meth:`Database.transaction`, and closes it. Transient failures (connection loss,
serialization failure, deadlock, SQLite busy) retry the whole transaction with
exponential backoff; when retries run out the command fails with exit 75.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Any, TypeVar

import sqlalchemy as sa
import tenacity

from schedctl.db import dialect
from schedctl.db.engine import create_engine, describe_target, parse_url
from schedctl.errors import ConfigError, ConflictError, DatabaseUnavailable, SchedctlError

log = logging.getLogger("schedctl.db")
T = TypeVar("T")

NOW_ENV = "SCHEDCTL_NOW"


def is_transient(exc: BaseException) -> bool:
    """Whether retrying the whole transaction may succeed."""
    if not isinstance(exc, sa.exc.DBAPIError):
        return False
    if exc.connection_invalidated:
        return True
    orig = exc.orig
    if isinstance(orig, sqlite3.OperationalError):
        text = str(orig).lower()
        return "locked" in text or "busy" in text
    return _is_psycopg_operational(orig)


def _is_psycopg_operational(orig: BaseException | None) -> bool:
    # psycopg's OperationalError covers connection failures, serialization failures,
    # deadlocks and lock timeouts; ProgrammingError and friends are never transient.
    # Looked up lazily: a SQLite-only run never pays for importing psycopg.
    psycopg = sys.modules.get("psycopg")
    return psycopg is not None and isinstance(orig, psycopg.OperationalError)


def first_line(exc: BaseException) -> str:
    text = str(getattr(exc, "orig", None) or exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def parse_now(raw: str) -> datetime:
    from schedctl.cadence import parse_instant

    return parse_instant(raw)


class Database:
    """schedctl's own database, as one command sees it."""

    def __init__(
        self,
        url: str,
        *,
        retry_seconds: float = 20.0,
        account_id: int | None = None,
        environ: dict[str, str] | None = None,
    ) -> None:
        self.url = parse_url(url)
        self.engine = create_engine(url)
        self.dialect = self.engine.dialect.name
        self.retry_seconds = retry_seconds
        self.account_id = account_id
        env = os.environ if environ is None else environ
        fixed_now = env.get(NOW_ENV)
        self._fixed_now = parse_now(fixed_now) if fixed_now else None

    @property
    def target(self) -> str:
        return describe_target(self.url)

    def close(self) -> None:
        self.engine.dispose()

    def __enter__(self) -> Database:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    @contextmanager
    def _begin(self, read_only: bool) -> Iterator[sa.Connection]:
        options = {"schedctl_read_only": True} if read_only else {}
        with self.engine.connect().execution_options(**options) as conn, conn.begin():
            if self.account_id is not None and self.dialect == "postgresql":
                dialect.set_account_scope(conn, self.account_id)
            yield conn

    def transaction(self, work: Callable[[sa.Connection], T], *, read_only: bool = False) -> T:
        """Run ``work(conn)`` in one transaction, retrying it on transient errors."""

        def attempt() -> T:
            try:
                with self._begin(read_only) as conn:
                    return work(conn)
            except sa.exc.IntegrityError as exc:
                raise ConflictError(
                    first_line(exc), constraint=dialect.constraint_name(exc)
                ) from None

        retrying = tenacity.Retrying(
            retry=tenacity.retry_if_exception(is_transient),
            stop=tenacity.stop_after_delay(self.retry_seconds) | tenacity.stop_after_attempt(10),
            wait=tenacity.wait_random_exponential(multiplier=0.2, max=5.0),
            before_sleep=self._log_retry,
            reraise=True,
        )
        try:
            return retrying(attempt)
        except sa.exc.OperationalError as exc:
            if isinstance(exc.orig, sqlite3.OperationalError) and "unable to open" in str(exc.orig):
                raise ConfigError(f"cannot open {self.target}: {first_line(exc)}") from None
            if is_transient(exc) or _is_psycopg_operational(exc.orig):
                raise DatabaseUnavailable(
                    f"database unavailable ({self.target}): {first_line(exc)}"
                ) from None
            raise
        except sa.exc.DBAPIError as exc:
            if is_transient(exc) or _is_psycopg_operational(exc.orig):
                raise DatabaseUnavailable(
                    f"database unavailable ({self.target}): {first_line(exc)}"
                ) from None
            raise

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
        return self.transaction(dialect.server_now, read_only=True)

    def scalar(self, statement: sa.Executable, **params: Any) -> Any:
        return self.transaction(lambda c: c.execute(statement, params).scalar(), read_only=True)


def wrap_unexpected(exc: BaseException) -> SchedctlError | None:
    """Map a stray driver error to a domain error, or None if it is a bug."""
    if isinstance(exc, sa.exc.DBAPIError) and is_transient(exc):
        return DatabaseUnavailable(f"database unavailable: {first_line(exc)}")
    return None
