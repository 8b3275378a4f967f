"""Report kinds: what a schedule run produces before it is mailed (SPEC §4).

A kind is a callable ``(settings, schedule, slot) -> Report``. The built-in ``sql``
kind runs a read-only query named in the config file; other kinds are plugins that
register a callable under the entry-point group ``schedctl.report_kinds``::

    [project.entry-points."schedctl.report_kinds"]
    weather = "mypackage.reports:weather_report"

A kind may carry a ``validate_params(settings, params)`` attribute; it is called when
a schedule is created or updated and raises ValidationError for bad params. A kind
that delivers its report itself rather than by mail declares
``needs_recipients = False``; otherwise a schedule of that kind must have recipients.
"""

from __future__ import annotations

import csv
import io
import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from functools import cache
from importlib.metadata import entry_points
from typing import Any, Protocol

import sqlalchemy as sa

from schedctl.config import ReportQuery, Settings
from schedctl.db import dialect, sandbox
from schedctl.db.database import first_line
from schedctl.db.types import UTCDateTime
from schedctl.delivery.outbox import Attachment
from schedctl.errors import SchedctlError, ValidationError
from schedctl.schedules.model import Schedule
from schedctl.values import bind_names

log = logging.getLogger("schedctl.schedules.reports")

ENTRY_POINT_GROUP = "schedctl.report_kinds"
SQL_KIND = "sql"

# The CSV holds at most MAX_ROWS rows; the mail body shows the first HTML_ROWS.
MAX_ROWS = 10_000
HTML_ROWS = 200
# The run's reason code when its account's data cannot be kept apart (SPEC §13).
TENANCY_UNSAFE = "TENANCY_UNSAFE"


class ReportFailed(SchedctlError):
    """The report could not be produced.

    ``retryable`` is False when producing it again cannot succeed as things stand (a
    report query that read-only mode refuses): the run then fails without retries.
    ``reason`` is the run's reason code when it is not REPORT_FAILED.
    """

    def __init__(
        self, message: str | None = None, *, retryable: bool = True, reason: str | None = None
    ) -> None:
        super().__init__(message)
        self.retryable = retryable
        self.reason = reason


@dataclass(frozen=True)
class Report:
    """A run's deliverable; each recipient gets it as one message."""

    subject: str
    text: str
    html: str | None = None
    attachments: tuple[Attachment, ...] = ()


class ReportKind(Protocol):
    def __call__(self, settings: Settings, schedule: Schedule, slot: datetime) -> Report: ...


# --- the registry -------------------------------------------------------------------


@cache
def _plugin_entry_points() -> dict[str, Any]:
    found = {}
    for entry in entry_points(group=ENTRY_POINT_GROUP):
        if entry.name == SQL_KIND:
            log.warning("ignoring plugin %s: the kind name 'sql' is built in", entry.value)
            continue
        found[entry.name] = entry
    return found


def kind_names() -> list[str]:
    """Every report kind available: the built-in ``sql`` and the installed plugins."""
    return sorted({SQL_KIND, *_plugin_entry_points()})


def get_kind(name: str) -> ReportKind:
    """The kind called ``name``; ValidationError if there is none or it cannot load."""
    if name == SQL_KIND:
        return sql_report
    entry = _plugin_entry_points().get(name)
    if entry is None:
        raise ValidationError(
            f"unknown report kind {name!r} (available: {', '.join(kind_names())})"
        )
    try:
        kind = entry.load()
    except Exception as exc:  # a broken plugin must not take the others down
        raise ValidationError(
            f"report kind {name!r} ({entry.value}) failed to load: {type(exc).__name__}: {exc}"
        ) from None
    if not callable(kind):
        raise ValidationError(f"report kind {name!r} ({entry.value}) is not callable")
    return kind  # type: ignore[no-any-return]


def validate_params(settings: Settings, kind_name: str, params: Mapping[str, str]) -> None:
    """Check that ``kind_name`` exists and accepts ``params`` (ValidationError if not)."""
    kind = get_kind(kind_name)
    validate = getattr(kind, "validate_params", None)
    if validate is not None:
        validate(settings, params)


def needs_recipients(kind_name: str) -> bool:
    """Whether a schedule of kind ``kind_name`` must have recipients (the default)."""
    return bool(getattr(get_kind(kind_name), "needs_recipients", True))


def produce_report(settings: Settings, schedule: Schedule, slot: datetime) -> Report:
    """Run the schedule's report kind for ``slot``."""
    report = get_kind(schedule.kind)(settings, schedule, slot)
    if not isinstance(report, Report):
        raise ReportFailed(
            f"report kind {schedule.kind!r} returned {type(report).__name__}, not a Report"
        )
    return report


# --- the built-in sql kind ------------------------------------------------------------


SQL_PARAMS = ("query", "subject")


def report_queries(settings: Settings) -> Mapping[str, ReportQuery]:
    """The report queries of the config file (``[reports.queries.NAME]``, checked when
    the settings were loaded)."""
    return settings.reports_queries


def check_account(settings: Settings, kind: str, params: Mapping[str, str], account: str) -> None:
    """Refuse (ValidationError) a schedule of ``account`` using a report query that
    its config does not bind to that account (SPEC §13). Other kinds: no check."""
    if kind != SQL_KIND or "query" not in params:
        return
    query = report_queries(settings).get(params["query"])
    if query is not None and not query.allows(account):
        listed = ", ".join(query.accounts)
        raise ValidationError(
            f"report query {query.name!r} is not available to account {account!r}"
            f" (its accounts: {listed}; add the account to"
            f" [reports.queries.{query.name}] accounts)"
        )


class SqlReport:
    """The built-in ``sql`` kind: a configured read-only query, as a table and a CSV."""

    needs_recipients = True  # its report is mailed

    def validate_params(self, settings: Settings, params: Mapping[str, str]) -> None:
        unknown = set(params) - set(SQL_PARAMS)
        if unknown:
            raise ValidationError(
                f"unknown --param {', '.join(sorted(unknown))} for kind sql"
                f" (expected {' and '.join(SQL_PARAMS)})"
            )
        name = params.get("query")
        if not name:
            raise ValidationError("kind sql needs --param query=NAME, a [reports.queries.NAME]")
        queries = report_queries(settings)
        if name not in queries:
            configured = ", ".join(sorted(queries)) or "none"
            raise ValidationError(
                f"no report query {name!r} in the config file's [reports.queries]"
                f" (configured: {configured})"
            )

    def __call__(self, settings: Settings, schedule: Schedule, slot: datetime) -> Report:
        self.validate_params(settings, schedule.params)
        query = report_queries(settings)[schedule.params["query"]]
        columns, rows = _run_query(settings, query, schedule, slot)
        title = schedule.params.get("subject") or query.title or schedule.name
        local = slot.astimezone(schedule.cadence.zone)
        intro = f"Scheduled for {local:%Y-%m-%d %H:%M} {schedule.cadence.tz}."
        if len(rows) > MAX_ROWS:
            intro += (
                f" The query returned more than {MAX_ROWS} rows; the first {MAX_ROWS} are here."
            )
            rows = rows[:MAX_ROWS]
        attachment = Attachment(
            filename=f"{_slug(query.name)}-{local:%Y-%m-%d}.csv",
            content_type="text/csv",
            content=_csv(columns, rows),
        )
        from schedctl.render import render_pair

        text, html = render_pair(
            "report",
            title=title,
            intro=intro,
            columns=columns,
            rows=rows[:HTML_ROWS],
            total_rows=len(rows),
            attachment_name=attachment.filename,
        )
        return Report(f"{title} ({local:%Y-%m-%d})", text, html, (attachment,))


sql_report = SqlReport()


def _run_query(
    settings: Settings, query: ReportQuery, schedule: Schedule, slot: datetime
) -> tuple[list[str], list[tuple[Any, ...]]]:
    """Run a report query fenced to reading (db/sandbox.py) on a connection of its own;
    at most MAX_ROWS + 1 rows come back. On schedctl's own database the query sees only
    its schedule's account, or is refused (TENANCY_UNSAFE) where nothing can scope it."""
    from schedctl.db.engine import create_engine

    url = query.database_url or settings.database_url
    own_database = query.database_url is None
    names = bind_names(query.sql)
    statement = sa.text(query.sql)
    if "slot" in names:  # stored the way schedctl stores instants, on every dialect
        statement = statement.bindparams(sa.bindparam("slot", type_=UTCDateTime))
    values = {"slot": slot, "schedule_id": schedule.id, "account_id": schedule.account_id}
    binds = {name: values[name] for name in names}
    try:
        engine = create_engine(url, store=False, sqlite_mode="ro")  # it only reads
        try:
            with engine.connect().execution_options(schedctl_read_only=True) as conn:
                scoped = own_database or _holds_schedctl_schema(conn)
                if scoped:
                    _refuse_unscoped(conn, query)
                found = sandbox.run_read_only(
                    conn,
                    statement,
                    binds,
                    timeout_s=query.timeout.total_seconds(),
                    max_rows=MAX_ROWS + 1,
                    account_id=schedule.account_id if scoped else None,
                )
        finally:
            engine.dispose()  # the connection is closed: nothing carries to the next query
    except sa.exc.SQLAlchemyError as exc:
        refused = isinstance(exc, sa.exc.DBAPIError) and dialect.is_refused_statement(exc)
        message = f"report query {query.name!r} failed: {first_line(exc)}"
        if refused:
            message += " (a report query is one read-only statement; not retried)"
        raise ReportFailed(_hide_password(message, url), retryable=not refused) from None
    except sandbox.QueryRefused as exc:
        raise ReportFailed(
            f"report query {query.name!r} refused: {_hide_password(exc.message, url)}",
            retryable=False,
        ) from None
    except sandbox.QueryFailed as exc:
        raise ReportFailed(
            f"report query {query.name!r} failed: {_hide_password(exc.message, url)}"
        ) from None
    except sandbox.QueryTimedOut as exc:
        raise ReportFailed(f"report query {query.name!r} {exc.message}") from None
    except ReportFailed as exc:
        raise ReportFailed(
            _hide_password(exc.message, url), retryable=exc.retryable, reason=exc.reason
        ) from None
    except SchedctlError as exc:
        raise ReportFailed(_hide_password(exc.message, url)) from None
    if found is None:
        raise ReportFailed(
            f"report query {query.name!r} returns no rows to report", retryable=False
        )
    return found


def _holds_schedctl_schema(conn: sa.Connection) -> bool:
    """Whether a query's own ``database_url`` reaches a database with schedctl's schema
    (schedctl's own under another spelling of its URL, say): such a query is kept to
    its schedule's account as one on schedctl's own database is."""
    try:
        found = sa.inspect(conn)
        return all(found.has_table(name) for name in ("schema_migrations", "installation"))
    except sa.exc.SQLAlchemyError:  # not allowed to look: nothing says it is
        return False
    finally:
        conn.rollback()


def _refuse_unscoped(conn: sa.Connection, query: ReportQuery) -> None:
    """TENANCY_UNSAFE when schedctl's own database holds several accounts and nothing
    would keep the query to one: SQLite has no row-level security, and a PostgreSQL
    role that is a superuser or has BYPASSRLS is exempt from it."""
    try:
        why = unscoped_reason(conn)
    finally:
        conn.rollback()
    if why is not None:
        raise ReportFailed(
            f"{TENANCY_UNSAFE}: report query {query.name!r} on schedctl's own database"
            f" cannot be kept to its schedule's account: {why}",
            retryable=False,
            reason=TENANCY_UNSAFE,
        )


def unscoped_reason(conn: sa.Connection) -> str | None:
    """Why queries on this (schedctl's own) database could read every account, or None."""
    from schedctl.db.schema import accounts

    count = conn.execute(sa.select(sa.func.count()).select_from(accounts)).scalar_one()
    if count <= 1:
        return None
    if not dialect.capabilities(conn.dialect).row_level_security:
        return "SQLite has no row-level security and the database holds several accounts"
    if sandbox.bypasses_row_security(conn):
        return (
            "the database role is a superuser or has BYPASSRLS, so row-level security does"
            " not apply to it, and the database holds several accounts"
        )
    return None


def _hide_password(text: str, url: str) -> str:
    from schedctl.db.engine import url_secrets
    from schedctl.redaction import redact

    return redact(text, url_secrets(url))


def _csv(columns: list[str], rows: list[tuple[Any, ...]]) -> bytes:
    from schedctl.render import csv_cell

    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    writer.writerow([csv_cell(c) for c in columns])
    writer.writerows([csv_cell(v) for v in row] for row in rows)
    return buffer.getvalue().encode("utf-8")


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", name).strip("-") or "report"
