"""`schedctl heartbeat`: when each command last ran, and whether that is healthy."""

from __future__ import annotations

from typing import Annotated

import typer

from schedctl import heartbeat
from schedctl.cli.runtime import CommandResult, command, current, ping, run_command
from schedctl.db.database import Database


def heartbeat_command(
    check: Annotated[
        bool,
        typer.Option(
            "--check",
            help="Exit with the monitoring-plugin code: 0 green, 1 yellow, 2 red, 3 unknown.",
        ),
    ] = False,
    ping_url: Annotated[
        str | None,
        typer.Option(
            "--ping-url",
            help="healthchecks.io-style URL (default: SCHEDCTL_PING_URL): pinged /start,"
            " then plain when green or /fail otherwise.",
            show_default=False,
        ),
    ] = None,
    only: Annotated[
        list[str] | None,
        typer.Option("--command", "-c", help="Judge only these commands (repeatable)."),
    ] = None,
) -> None:
    """Show when each command last succeeded: green, yellow, red or unknown."""
    runtime = current()
    settings = runtime.settings
    ping_url = ping_url or settings.ping_url
    if ping_url:
        ping(ping_url, "/start")

    def work(db: Database) -> CommandResult:
        # Judge before this run's own heartbeat row counts.
        health = heartbeat.report(db, settings, db.now(), only=only or None)
        status = heartbeat.overall(health)
        return CommandResult(
            {"status": status, "commands": [h.as_dict() for h in health]},
            exit_code=heartbeat.CHECK_EXIT[status] if check else 0,
            recorded_exit_code=0,
        )

    result = run_command("heartbeat", work)
    status = result.data["status"]
    if ping_url:
        ping(ping_url, "" if status == "green" else "/fail")
    rows = [
        (
            h["command"],
            h["status"],
            _age(h["age_s"]),
            h["last_success_at"] or "never",
            h["last_outcome"] or "",
        )
        for h in result.data["commands"]
    ]
    runtime.output.table(
        result.data,
        ["command", "status", "age", "last success", "last outcome"],
        rows,
        footer=f"overall: {status}",
    )
    if result.exit_code:
        raise typer.Exit(result.exit_code)


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


def register(app: typer.Typer) -> None:
    command(app, "heartbeat")(heartbeat_command)
