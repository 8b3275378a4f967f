"""Engine factory: one place that turns a URL into a configured SQLAlchemy engine."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError, NoSuchModuleError

from schedctl.errors import ConfigError

# Drivers schedctl installs; a bare dialect name is mapped to these.
_DRIVERS = {"postgresql": "psycopg", "oracle": "oracledb", "sqlite": "pysqlite"}
STORE_DIALECTS = frozenset({"sqlite", "postgresql"})

SQLITE_BUSY_TIMEOUT_MS = 10_000
CONNECT_TIMEOUT_S = 5


def parse_url(raw: str) -> URL:
    """Parse and normalise a database URL, or raise ConfigError (exit 2)."""
    try:
        url = make_url(raw)
    except (ArgumentError, ValueError):
        raise ConfigError(f"malformed database URL: {mask_url(raw)}") from None
    backend = url.get_backend_name()
    if backend not in _DRIVERS:
        raise ConfigError(
            f"unsupported database {backend!r} in {mask_url(raw)}"
            " (use sqlite://, postgresql:// or oracle+oracledb://)"
        )
    driver = url.get_driver_name()
    if backend == "postgresql" and driver in {"psycopg2", "pg8000", "asyncpg"}:
        raise ConfigError(f"use postgresql+psycopg:// (psycopg 3), not {driver}")
    if "+" not in url.drivername:
        url = url.set(drivername=f"{backend}+{_DRIVERS[backend]}")
    return url


def mask_url(raw: str | URL) -> str:
    """The URL with its password replaced by ***, safe to print."""
    try:
        url = raw if isinstance(raw, URL) else make_url(raw)
    except (ArgumentError, ValueError):
        # Unparseable: keep only the scheme, anything after it may hold a secret.
        text = str(raw)
        return text.split("://", 1)[0] + "://***" if "://" in text else "***"
    return url.render_as_string(hide_password=True)


def describe_target(url: URL) -> str:
    """A short description of where a URL points: host:port/db or the file."""
    if url.get_backend_name() == "sqlite":
        return f"sqlite file {url.database or ':memory:'}"
    host = url.host or "localhost"
    port = f":{url.port}" if url.port else ""
    return f"{url.get_backend_name()} at {host}{port}/{url.database or ''}"


def _configure_sqlite(engine: sa.Engine) -> None:
    @sa.event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        # Take transaction control from the sqlite3 module so that we can emit
        # BEGIN IMMEDIATE ourselves (see the "begin" listener).
        dbapi_conn.isolation_level = None
        cursor = dbapi_conn.cursor()
        cursor.execute(f"PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA journal_mode = WAL")
        cursor.execute("PRAGMA synchronous = NORMAL")
        cursor.execute("PRAGMA foreign_keys = ON")
        cursor.close()

    @sa.event.listens_for(engine, "begin")
    def _on_begin(conn: sa.Connection) -> None:
        # A write transaction takes the database write lock up front, so two
        # processes never both read a due row and then race to update it.
        mode = "DEFERRED" if conn.get_execution_options().get("schedctl_read_only") else "IMMEDIATE"
        conn.exec_driver_sql(f"BEGIN {mode}")


def _configure_postgresql(engine: sa.Engine) -> None:
    @sa.event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        # Timestamps cross the wire in UTC whatever the server's zone is.
        with dbapi_conn.cursor() as cursor:
            cursor.execute("SET TIME ZONE 'UTC'")
        dbapi_conn.commit()


def create_engine(raw_url: str, *, store: bool = True) -> sa.Engine:
    """Create an engine for schedctl's own database (store=True) or a data source."""
    url = parse_url(raw_url)
    backend = url.get_backend_name()
    if store and backend not in STORE_DIALECTS:
        raise ConfigError(
            f"{backend} is supported as a distribute source or target, not as schedctl's"
            " own database (use sqlite:// or postgresql://)"
        )
    connect_args: dict[str, Any] = {}
    if backend == "postgresql":
        connect_args = {"connect_timeout": CONNECT_TIMEOUT_S, "application_name": "schedctl"}
    elif backend == "sqlite":
        connect_args = {"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000}
    try:
        # hide_parameters: bound values (e-mail addresses, IDs) stay out of error text.
        engine = sa.create_engine(url, connect_args=connect_args, hide_parameters=True)
    except NoSuchModuleError:
        raise ConfigError(f"no driver installed for {mask_url(url)}") from None
    except ArgumentError as exc:
        raise ConfigError(f"invalid database URL {mask_url(url)}: {exc}") from None
    if backend == "sqlite":
        _configure_sqlite(engine)
    elif backend == "postgresql":
        _configure_postgresql(engine)
    return engine
