"""`schedctl heartbeat`: when each command last ran, and whether that is healthy."""

from __future__ import annotations

import os
import sys
from typing import TYPE_CHECKING, Any

import click

from schedctl.cli.params import flag, option
from schedctl.cli.runtime import CommandResult, Runtime, command, current, ping, run_command
from schedctl.errors import ConfigError, SchedctlError
from schedctl.redaction import redact
from schedctl.vocabulary import CHECK_EXIT

if TYPE_CHECKING:
    from schedctl.alerts import Alert
    from schedctl.db.database import Database


class CheckUnknown(SchedctlError):
    """`heartbeat --check` could not judge: UNKNOWN in the monitoring convention."""

    exit_code = CHECK_EXIT["unknown"]


@flag(
    "--check",
    help="Exit with the monitoring-plugin code: 0 green, 1 yellow, 2 red, 3 unknown"
    " (also when the database, its schema or the configuration is unusable).",
)
@option(
    "--ping-url",
    metavar="URL",
    help="healthchecks.io-style URL (default: SCHEDCTL_PING_URL): pinged /start,"
    " then plain when green or /fail otherwise, errors included.",
)
@option(
    "--command",
    "-c",
    "only",
    multiple=True,
    help="Judge only these commands (repeatable; e.g. tick, digest): those that record a"
    " heartbeat."
    " Default: [heartbeat] commands, else the scheduled jobs that have run.",
)
def heartbeat_command(check: bool, ping_url: str | None, only: list[str] | None) -> int:
    """Show when each command last succeeded: green, yellow, red or unknown."""
    runtime = current()
    if ping_url is not None:
        from schedctl.values import http_url_problem

        # Checked like SCHEDCTL_PING_URL; never quoted, since it may carry a token.
        problem = http_url_problem(ping_url)
        if problem:
            message = f"--ping-url: {problem}"
            raise CheckUnknown(message) if check else ConfigError(message)
    url = ping_url or _configured_ping_url(runtime)
    if url:
        ping(url, "/start")
    status = "unknown"
    try:
        result = _judge(runtime, check, only or None)
        status = result.data["status"]
    except SchedctlError as exc:
        if check:  # monitoring reads 0/1/2/3 only: whatever went wrong is UNKNOWN
            raise CheckUnknown(exc.message) from None
        raise
    except Exception as exc:
        if check:
            from schedctl.db.database import wrap_unexpected

            wrapped = wrap_unexpected(exc)
            message = wrapped.message if wrapped else f"internal error: {type(exc).__name__}: {exc}"
            raise CheckUnknown(message) from exc
        raise
    finally:
        if url:  # every /start gets its end, errors included
            ping(url, "" if status == "green" else "/fail")
    _show(runtime, result.data)
    if check and status != "green":
        # One line for whoever reads stderr (cron mails it; with --quiet it is all).
        print(f"schedctl: {redact(_summary(result.data))}", file=sys.stderr)
    return result.exit_code


def _configured_ping_url(runtime: Runtime) -> str | None:
    try:
        return runtime.settings.ping_url
    except Exception:  # _judge reports it (as UNKNOWN with --check)
        from schedctl.config import ENV_PREFIX
        from schedctl.values import http_url_problem

        # A broken configuration is itself worth a /fail: the environment may still say
        # where, unless the broken value is that URL (its error line says so, once).
        url = os.environ.get(f"{ENV_PREFIX}PING_URL") or None
        return None if url is None or http_url_problem(url) else url


def _judge(runtime: Runtime, check: bool, only: list[str] | None) -> CommandResult:
    from schedctl import heartbeat

    settings = runtime.settings
    if only:
        heartbeat.check_command_names(only, "--command")

    def work(db: Database) -> CommandResult:
        from schedctl.checks import configuration_warnings

        health = heartbeat.report_now(db, settings, only=only)
        status = heartbeat.overall(health)
        red = heartbeat.red_alerts(health) if check else []
        unrecorded = _record_red(db, red) if red else None
        try:
            warnings = db.transaction(
                lambda conn: configuration_warnings(conn, settings), read_only=True
            )
        except SchedctlError as exc:  # (a role without SELECT on users, say): as below
            warnings = [f"the configuration warnings could not be read: {exc.message}"]
        if unrecorded:
            warnings.append(unrecorded)
        return CommandResult(
            {
                "status": status,
                "note": heartbeat.overall_note(health),
                "commands": [h.as_dict() for h in health],
                "warnings": warnings,
            },
            exit_code=CHECK_EXIT[status] if check else 0,
        )

    return run_command("heartbeat", work)


def _record_red(db: Database, red: list[Alert]) -> str | None:
    """Record the ``heartbeat_red`` alerts; a database that refuses the write (a hot
    standby, a read-only file, a role without INSERT on alerts, a constraint or trigger
    added by hand) must not turn a red check into UNKNOWN: the judgement stands and the
    refusal becomes a warning."""
    import sqlalchemy as sa

    from schedctl import alerts
    from schedctl.db.database import first_line

    now = db.now()
    try:
        db.transaction(lambda conn: alerts.record(conn, red, now))
    except SchedctlError as exc:
        return f"the heartbeat_red alert was not recorded: {exc.message}"
    except sa.exc.DBAPIError as exc:  # (a trigger that fails, a column narrowed by hand)
        return f"the heartbeat_red alert was not recorded: database error: {first_line(exc)}"
    return None


def _summary(data: dict[str, Any]) -> str:
    """The overall status, the worst command and why, in one line."""
    from schedctl.heartbeat import worst

    status = data["status"]
    judged = [c for c in data["commands"] if c["monitored"]]
    bad = worst(judged)
    if bad is None:
        return f"heartbeat {status}: {data['note'] or 'nothing judged'}"
    why = bad["note"] or f"last success {_age(bad['age_s'])} ago"
    if bad["last_outcome"] not in (None, "success"):
        why += f", last run {bad['last_outcome']}"
    others = sum(1 for c in judged if c["status"] != "green") - 1
    more = f" (and {others} more not green)" if others > 0 else ""
    return f"heartbeat {status}: {bad['command']}: {why}{more}"


def _show(runtime: Runtime, data: dict[str, Any]) -> None:
    rows = [
        (
            h["command"],
            h["status"] or "-",
            _age(h["age_s"]),
            h["last_success_at"] or "never",
            h["last_outcome"] or "",
            h["note"] or "",
        )
        for h in data["commands"]
    ]
    footer = f"overall: {data['status']}"
    if data["note"]:
        footer += f" ({data['note']})"
    for warning in data["warnings"]:
        footer += f"\nwarning: {warning}"
    runtime.output.table(
        data,
        ["command", "status", "age", "last success", "last outcome", "note"],
        rows,
        footer=footer,
    )


def _age(seconds: int | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 120:
        return f"{seconds}s"
    if seconds < 7200:
        return f"{seconds // 60}m"
    if seconds < 172800:
        return f"{seconds // 3600}h"
    return f"{seconds // 86400}d"


def register(app: click.Group) -> None:
    command(app, "heartbeat")(heartbeat_command)
