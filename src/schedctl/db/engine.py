"""Engine factory: one place that turns a URL into a configured SQLAlchemy engine."""

from __future__ import annotations

import os
import sqlite3
from typing import Any
from urllib.parse import quote, unquote

import sqlalchemy as sa
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError, NoSuchModuleError
from sqlalchemy.util import asbool

from schedctl import redaction
from schedctl.db import dialect
from schedctl.errors import ConfigError

# Drivers for a bare dialect name. schedctl installs psycopg and oracledb; a MySQL or
# MariaDB data source of `distribute` needs PyMySQL installed beside it.
_DRIVERS = {
    "postgresql": "psycopg",
    "oracle": "oracledb",
    "sqlite": "pysqlite",
    "mysql": "pymysql",
    "mariadb": "pymysql",
}
STORE_DIALECTS = frozenset({"sqlite", "postgresql"})

SQLITE_BUSY_TIMEOUT_MS = 10_000
CONNECT_TIMEOUT_S = 5
# Connections a store's pool opens beyond the 5 it keeps: enough for dispatch's
# [smtp] connections (at most 32, each with a database connection of its own).
POOL_OVERFLOW = 32


def parse_url(raw: str) -> URL:
    """Parse and normalise a database URL, or raise ConfigError (exit 2).

    Every database URL passes here first: from now on, whatever this process prints
    (a driver's error quoting the URL included) masks the secrets the URL carries.
    """
    redaction.remember(*url_secrets(raw))
    try:
        url = make_url(raw)
    except (ArgumentError, ValueError):
        raise ConfigError(f"malformed database URL: {mask_url(raw)}") from None
    backend = url.get_backend_name()
    if backend not in _DRIVERS:
        raise ConfigError(
            f"unsupported database {backend!r} in {mask_url(raw)}"
            " (use sqlite://, postgresql://, oracle+oracledb:// or mysql+pymysql://)"
        )
    driver = url.get_driver_name()
    if backend == "postgresql" and driver in {"psycopg2", "pg8000", "asyncpg"}:
        raise ConfigError(f"use postgresql+psycopg:// (psycopg 3), not {driver}")
    if "+" not in url.drivername:
        url = url.set(drivername=f"{backend}+{_DRIVERS[backend]}")
    return url


def url_setting(value: Any, origin: str) -> str:
    """A database URL from the config file, checked by `parse_url` (never quoted whole:
    its password is a secret); ConfigError naming ``origin`` if it is not one."""
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(f"{origin}: must be a database URL")
    try:
        parse_url(value)
    except ConfigError as exc:
        raise ConfigError(f"{origin}: {exc.message}") from None
    return value


def mask_url(raw: str | URL) -> str:
    """The URL with its password and secret query values replaced by ***, safe to print."""
    try:
        url = raw if isinstance(raw, URL) else make_url(raw)
    except (ArgumentError, ValueError):
        # Unparseable: keep only the scheme, anything after it may hold a secret.
        text = str(raw)
        return text.split("://", 1)[0] + "://***" if "://" in text else "***"
    return redaction.redact(url.render_as_string(hide_password=True))


def url_secrets(raw: str | URL) -> list[str]:
    """The secrets a database URL carries: its password, secret query values."""
    text = raw.render_as_string(hide_password=False) if isinstance(raw, URL) else str(raw)
    found = redaction.secrets_in(text)
    try:
        url = raw if isinstance(raw, URL) else make_url(raw)
    except (ArgumentError, ValueError):
        return found
    return [*found, *([str(url.password)] if url.password else [])]


def sqlite_path(url: URL) -> str | None:
    """The file a SQLite URL names (also as a ``file:`` URI), or None for memory."""
    database = url.database or ""
    if _is_uri(url) and database.startswith("file:"):
        database = unquote(database.removeprefix("file:"))
    if database in {"", ":memory:"} or url.query.get("mode") == "memory":
        return None
    return database


def _is_uri(url: URL) -> bool:
    return bool(asbool(_query(url, "uri") or False))


def _query(url: URL, name: str) -> str | None:
    value = url.query.get(name)
    if isinstance(value, tuple):  # ?host=a&host=b: libpq tries each
        return ",".join(value)
    return value


def describe_target(url: URL) -> str:
    """A short description of where a URL points: host:port/db, a socket, or the file.

    libpq takes the host and port from the query string too (``?host=…&port=…``), and
    a host that is a directory names a Unix socket.
    """
    backend = url.get_backend_name()
    if backend == "sqlite":
        return f"sqlite file {sqlite_path(url) or ':memory:'}"
    host = _query(url, "host") or url.host or os.environ.get("PGHOST")
    port = _query(url, "port") or url.port or os.environ.get("PGPORT")
    database = url.database or _query(url, "dbname") or ""
    if host and not host.startswith("/"):
        return f"{backend} at {host}" + (f":{port}" if port else "") + f"/{database}"
    socket = f"socket {host}" if host else "the default local socket"
    return f"{backend} at {socket}" + (f" port {port}" if port else "") + f", database {database}"


def _sqlite_uri(url: URL, mode: str) -> URL:
    """The URL opening its file through SQLite's URI form, in `mode` (rwc, rw or ro).

    ``rw`` never creates a missing file; ``ro`` adds ``immutable=1`` when there is no
    WAL to read, which is how SQLite reads a WAL database in a directory it may not
    write to (it cannot create the shared-memory file there).
    """
    path = sqlite_path(url)
    if path is None or _is_uri(url):
        return url  # memory, or the URL chose its own mode
    query = {**url.query, "uri": "true", "mode": mode}
    if mode == "ro" and not os.path.exists(f"{path}-wal"):
        query["immutable"] = "1"
    return url.set(database="file:" + quote(os.path.abspath(path)), query=query)


def _configure_sqlite(engine: sa.Engine) -> None:
    @sa.event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        # Take transaction control from the sqlite3 module so that we can emit
        # BEGIN IMMEDIATE ourselves (see the "begin" listener).
        dbapi_conn.isolation_level = None
        cursor = dbapi_conn.cursor()
        cursor.execute(f"PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}")
        try:
            cursor.execute("PRAGMA journal_mode = WAL")
        except sqlite3.OperationalError as exc:
            # A read-only file keeps the journal mode it has; writes will say so.
            if not is_sqlite_read_only(exc):
                raise
        cursor.execute("PRAGMA synchronous = NORMAL")
        cursor.execute("PRAGMA foreign_keys = ON")
        cursor.close()

    @sa.event.listens_for(engine, "begin")
    def _on_begin(conn: sa.Connection) -> None:
        # A write transaction takes the database write lock up front, so two
        # processes never both read a due row and then race to update it.
        mode = "DEFERRED" if conn.get_execution_options().get("schedctl_read_only") else "IMMEDIATE"
        conn.exec_driver_sql(f"BEGIN {mode}")


def is_sqlite_read_only(exc: BaseException | None) -> bool:
    """Whether SQLite refused to write: the file, its directory or the URL is read-only."""
    code = getattr(exc, "sqlite_errorcode", None)
    return isinstance(code, int) and code & 0xFF == sqlite3.SQLITE_READONLY


def _configure_postgresql(engine: sa.Engine) -> None:
    @sa.event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        # Timestamps cross the wire in UTC whatever the server's zone is, and in the
        # styles psycopg reads: its loaders parse ISO dates and PostgreSQL-style
        # intervals only, so a DateStyle of 'SQL, DMY' or 'German' set on the database,
        # the role or the server failed every command that read a timestamp.
        with dbapi_conn.cursor() as cursor:
            cursor.execute(
                "SELECT set_config('TimeZone', 'UTC', false),"
                " set_config('DateStyle', 'ISO', false),"
                " set_config('IntervalStyle', 'postgres', false)"
            )
        dbapi_conn.commit()
        dialect.send_binary_arrays(dbapi_conn)


def create_engine(raw_url: str, *, store: bool = True, sqlite_mode: str = "rwc") -> sa.Engine:
    """Create an engine for schedctl's own database (store=True) or a data source.

    ``sqlite_mode`` is how a SQLite file is opened: ``rwc`` creates it if missing,
    ``rw`` does not, ``ro`` only reads.
    """
    url = parse_url(raw_url)
    backend = url.get_backend_name()
    if store and backend not in STORE_DIALECTS:
        raise ConfigError(
            f"{backend} is supported as a distribute source or target, not as schedctl's"
            " own database (use sqlite:// or postgresql://)"
        )
    connect_args: dict[str, Any] = {}
    pool: dict[str, Any] = {}
    if store and (backend == "postgresql" or sqlite_path(url) is not None):
        pool = {"pool_size": 5, "max_overflow": POOL_OVERFLOW}
    if backend == "postgresql":
        # Defaults only: what the URL says wins (and libpq judges it).
        defaults = {"connect_timeout": CONNECT_TIMEOUT_S, "application_name": "schedctl"}
        connect_args = {k: v for k, v in defaults.items() if k not in url.query}
    elif backend == "sqlite":
        connect_args = {"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000}
        url = _sqlite_uri(url, sqlite_mode)
    elif backend in ("mysql", "mariadb"):
        defaults = {"connect_timeout": CONNECT_TIMEOUT_S, "charset": "utf8mb4"}
        connect_args = {k: v for k, v in defaults.items() if k not in url.query}
    try:
        # hide_parameters: bound values (e-mail addresses, IDs) stay out of error text.
        engine = sa.create_engine(url, connect_args=connect_args, hide_parameters=True, **pool)
    except NoSuchModuleError:
        raise ConfigError(f"no driver installed for {mask_url(url)}") from None
    except ArgumentError as exc:
        raise ConfigError(f"invalid database URL {mask_url(url)}: {exc}") from None
    if backend == "sqlite":
        _configure_sqlite(engine)
    elif backend == "postgresql":
        _configure_postgresql(engine)
    return engine
