"""What `schedctl config check` verifies (SPEC §12, §13): each check answers
warnings and errors as one line each, and writes nothing.

The settings themselves (every table of the config file) were checked when they were
loaded: a bad value stops every command, this one too, with one line and exit 2.
What is left is what a value cannot say alone: whether the mail backend can be made
(and, with ``--smtp``, whether its server answers), whether the database is reachable
with the schema this version expects, and what the configuration means for the rows
it holds. Configuration that works but is probably not what was meant is a warning:
`config check` and `heartbeat` list them, never every run of a job (cron would mail
them every minute).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, cast

from schedctl.config import SCHEMA, Settings
from schedctl.errors import SchedctlError, quoted

if TYPE_CHECKING:
    import sqlalchemy as sa

    from schedctl.delivery.transport import TlsMode


@dataclass
class Findings:
    """One line per warning (works, probably not as meant) and error (will fail)."""

    warnings: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


def check_installation(settings: Settings, *, smtp: bool = False) -> Findings:
    """Warnings and errors for this configuration and its database; with ``smtp``, a
    session with the configured mail server too (EHLO, STARTTLS and AUTH, then QUIT)."""
    from schedctl.db.database import Database
    from schedctl.db.migrations import check_schema
    from schedctl.delivery.dispatch import check_delivery_settings

    found = Findings()
    try:
        check_delivery_settings(settings)
    except SchedctlError as exc:
        found.errors.append(settings.redact(exc.message))
    if smtp:
        problem = mail_server_problem(settings)
        if problem:
            found.errors.append(settings.redact(problem))
    try:
        with Database(settings.database_url, create=False, retry_seconds=0) as db:
            check_schema(db)
            held = db.transaction(lambda conn: database_findings(conn, settings), read_only=True)
    except SchedctlError as exc:
        found.errors.append(settings.redact(exc.message))
        return found
    found.warnings.extend(held.warnings)
    found.errors.extend(held.errors)
    return found


def configuration_warnings(conn: sa.Connection, settings: Settings) -> list[str]:
    """The warnings of `database_findings` (what `heartbeat` lists), without running
    the checks that find errors only."""
    return database_findings(conn, settings, errors=False).warnings


def database_findings(conn: sa.Connection, settings: Settings, *, errors: bool = True) -> Findings:
    """What the configuration means for the rows the database holds."""
    found = Findings(warnings=_unsubscribe(conn, settings) + _heartbeat_names(settings))
    _tenancy(conn, settings, found)
    _bound_account(conn, settings, found, errors=errors)
    if errors:
        found.errors.extend(_missing_queries(conn, settings))
        found.errors.extend(_writes_refused(conn))
    return found


def mail_server_problem(settings: Settings) -> str | None:
    """Why the configured SMTP server cannot be used (a session as a send opens it,
    then QUIT), or None."""
    from schedctl.delivery.smtp import SmtpBackend

    if not settings.smtp_host:
        return (
            "--smtp: no mail server to check: smtp_host is not set"
            f" ({SCHEMA['smtp_host'].places()})"
        )
    backend = SmtpBackend(
        settings.smtp_host,
        settings.smtp_port,
        settings.smtp_user,
        settings.smtp_password,
        cast("TlsMode", settings.smtp_tls),
        settings.smtp_timeout,
    )
    problem = backend.check()
    return f"mail server: {problem}" if problem else None


def _unsubscribe(conn: sa.Connection, settings: Settings) -> list[str]:
    """Reports and digests are subscription mail: without a base URL they go out with
    no unsubscribe link (and no List-Unsubscribe header)."""
    import sqlalchemy as sa

    from schedctl.db.schema import schedules, users

    if settings.unsubscribe_base_url:  # the secret comes with it (checked at start-up)
        return []
    active = schedules.select().where(schedules.c.active.is_(True))
    digest = users.select().where(users.c.digest_enabled.is_(True))
    counts = [
        conn.execute(sa.select(sa.func.count()).select_from(q.subquery())).scalar_one()
        for q in (active, digest)
    ]
    senders = [
        f"{n} {what}"
        for n, what in zip(counts, ("active schedule(s)", "digest user(s)"), strict=True)
        if n
    ]
    if not senders:
        return []
    return [
        f"subscription mail ({', '.join(senders)}) is sent without an unsubscribe link:"
        f" set {SCHEMA['unsubscribe_base_url'].places()}, and"
        f" {SCHEMA['unsubscribe_secret'].places()}"
    ]


def _heartbeat_names(settings: Settings) -> list[str]:
    """``[heartbeat]`` entries for commands that only read, which record no heartbeat."""
    from schedctl.commands import only_reads

    tables: list[tuple[str, Any, str]] = [
        ("[heartbeat] commands", settings.heartbeat_commands or (), "it is not judged"),
        ("[heartbeat.thresholds]", settings.heartbeat_thresholds, "its thresholds are unused"),
        ("[heartbeat.ping_urls]", settings.ping_urls, "its URL is never pinged"),
    ]
    warnings = []
    for origin, names, effect in tables:
        for name in names:
            problem = only_reads(name)
            if problem:
                warnings.append(f"{origin}: {problem}: {effect}")
    return warnings


def _tenancy(conn: sa.Connection, settings: Settings, found: Findings) -> None:
    from schedctl.schedules import reports

    unscoped = reports.unscoped_reason(conn)
    if unscoped is None:
        return
    own = sorted(name for name, q in reports.report_queries(settings).items() if not q.database_url)
    if own:
        found.errors.append(
            f"{reports.TENANCY_UNSAFE}: report queries on schedctl's own database"
            f" ({', '.join(own)}) will be refused: {unscoped}; use PostgreSQL with a"
            " login role that is neither a superuser nor BYPASSRLS"
            " (README, Tenancy and its limits)"
        )
    else:
        found.warnings.append(
            f"accounts are not kept apart by the database: {unscoped}"
            " (README, Tenancy and its limits)"
        )


def _bound_account(
    conn: sa.Connection, settings: Settings, found: Findings, *, errors: bool
) -> None:
    """PostgreSQL: a login role bound to an account sees and writes only its rows,
    whatever `--account` says, so a default naming another account leaves the commands
    that take `--account` seeing nothing and refused every write. (A role that bypasses
    row-level security is bound to nothing: `_tenancy` says so.)"""

    from schedctl.accounts import account_name
    from schedctl.config import DEFAULT_ACCOUNT
    from schedctl.db import dialect
    from schedctl.db.sandbox import bypasses_row_security
    from schedctl.values import as_id

    bound_id = dialect.bound_account_id(conn)
    if bound_id is None or bypasses_row_security(conn):
        return
    bound_name = account_name(conn, bound_id)
    variable = SCHEMA["account"].env_name
    wanted = settings.account
    named = (wanted or DEFAULT_ACCOUNT).strip()  # as find_account reads it: a name or an id
    if named == bound_name or as_id(named) == bound_id:
        return
    fix = f"set {variable}={bound_name}"
    if wanted is None:
        found.warnings.append(
            f"the login role is bound to account {bound_name!r} and {variable} is not set:"
            f" commands that take --account default to {DEFAULT_ACCOUNT!r}, whose rows this"
            f" role can neither see nor write ({fix})"
        )
        return
    # An error for `config check`; `heartbeat`, which lists warnings only, shows it too.
    (found.errors if errors else found.warnings).append(
        f"{variable} names account {wanted!r}, but the login role is bound to account"
        f" {bound_name!r}: commands that take --account will see none of its rows and be"
        f" refused every write to it ({fix})"
    )


_SHOWN = 4  # missing privileges named in the line; the rest are counted


def _writes_refused(conn: sa.Connection) -> list[str]:
    """PostgreSQL: whether the jobs' writes will be refused -- the server takes no
    writes, or schedctl's login role lacks a privilege on one of its tables."""
    import sqlalchemy as sa

    from schedctl.db import dialect
    from schedctl.db.schema import OWNERS_TABLES, metadata

    if not dialect.capabilities(conn.dialect).grants:
        return []

    errors = []
    if conn.execute(sa.text("SELECT current_setting('transaction_read_only')")).scalar() == "on":
        errors.append(
            "the database takes no writes (a hot standby, or default_transaction_read_only"
            " is on): every job that writes will exit 75"
        )
    # A role bound to an account writes no accounts, whatever it is granted (0019).
    read_only = OWNERS_TABLES | (
        {"accounts"} if dialect.bound_account_id(conn) is not None else set()
    )
    wanted = [
        (table, privilege)
        for table in metadata.sorted_tables
        for privilege in ("SELECT", "INSERT", "UPDATE", "DELETE")
        if privilege == "SELECT" or table.name not in read_only
    ]
    missing = dialect.missing_privileges(conn, wanted)
    if missing:
        named = ", ".join(missing[:_SHOWN])
        more = f" and {len(missing) - _SHOWN} more" if len(missing) > _SHOWN else ""
        errors.append(
            f"schedctl's login role lacks {named}{more}: the commands that need them will"
            " fail (grant it SELECT on schedctl's tables, and INSERT, UPDATE and DELETE on"
            f" all but {', '.join(sorted(read_only))})"
        )
    return errors


def _missing_queries(conn: sa.Connection, settings: Settings) -> list[str]:
    """Active `sql` schedules naming a report query the configuration does not have:
    every run of theirs fails."""
    import sqlalchemy as sa

    from schedctl.db.schema import schedules
    from schedctl.schedules import reports

    rows = conn.execute(
        sa.select(schedules.c.id, schedules.c.name, schedules.c.params)
        .where(schedules.c.active.is_(True), schedules.c.kind == reports.SQL_KIND)
        .order_by(schedules.c.id)
    )
    queries = reports.report_queries(settings)
    errors = []
    for row in rows:
        name = (row.params or {}).get("query")
        if name not in queries:
            errors.append(
                f"schedule {row.id} ({quoted(row.name)}): report query {quoted(name)} is not"
                " in the configuration ([reports.queries.NAME]): its runs fail"
            )
    return errors
