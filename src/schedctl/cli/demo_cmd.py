"""`schedctl demo`: try schedctl on a throw-away SQLite database."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from schedctl import heartbeat
from schedctl.cli.runtime import command, current
from schedctl.db.database import Database
from schedctl.db.migrations import upgrade


def demo_command(
    path: Annotated[
        Path, typer.Option("--path", help="SQLite file to (re)create for the demo.")
    ] = Path("schedctl-demo.db"),
) -> None:
    """Create a demo SQLite database, run the jobs against the console mailer, show results."""
    runtime = current()
    out = runtime.output
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    url = f"sqlite:///{path}"
    with Database(url) as db:
        applied = upgrade(db)
        now = db.now()
        heartbeat_id = heartbeat.start_run(db, "demo", now)
        heartbeat.finish_run(db, heartbeat_id, finished_at=db.now(), exit_code=0, counts={})
        health = heartbeat.report(db, runtime.settings, db.now())
    data = {
        "database": url,
        "migrations_applied": len(applied),
        "heartbeat": {
            "status": heartbeat.overall(health),
            "commands": [h.as_dict() for h in health],
        },
    }
    if not out.options.json and not out.options.quiet:
        print(f"created {path} and applied {len(applied)} migration(s)")
        print("the jobs have not run yet, so their heartbeats are unknown:\n")
    out.table(
        data,
        ["command", "status", "last success"],
        [(h.command, h.status, h.last_success_at or "never") for h in health],
        footer=f"\ntry: schedctl --database-url {url} heartbeat",
    )


def register(app: typer.Typer) -> None:
    command(app, "demo")(demo_command)
