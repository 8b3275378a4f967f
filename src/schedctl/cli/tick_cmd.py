"""`schedctl tick`: materialise and execute due schedule runs, then deliver."""

from __future__ import annotations

from typing import TYPE_CHECKING

import click

from schedctl.cli.params import limit_option
from schedctl.cli.runtime import CommandResult, command, current, run_command

if TYPE_CHECKING:
    from schedctl.db.database import Database


@limit_option(
    "Materialise at most N due schedules and execute at most N runs (default: all that are due)."
)
def tick_command(limit: int | None) -> int:
    """Materialise due schedule runs, plan event messages, dispatch due messages."""
    from schedctl.tick import run_tick, tick_failed

    runtime = current()

    def work(db: Database) -> CommandResult:
        counts = run_tick(db, runtime.settings, db.now(), limit)
        return CommandResult(counts, exit_code=1 if tick_failed(counts) else 0)

    result = run_command("tick", work)
    c = result.data
    human = (
        f"{c['due']} schedule(s) due: {c['runs_created']} run(s) created,"
        f" {c['runs_skipped']} skipped; {c.get('runs_succeeded', 0)} run(s) succeeded,"
        f" {c.get('runs_failed', 0)} failed; messages: {c['messages_sent']} sent,"
        f" {c['messages_failed']} failed, {c['messages_deferred']} deferred"
    )
    runtime.output.result(c, human, failed=result.exit_code != 0)
    return result.exit_code


def register(app: click.Group) -> None:
    command(app, "tick")(tick_command)
