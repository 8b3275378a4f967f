"""`schedctl db upgrade | status`."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import click

from schedctl.cli.params import command_group
from schedctl.cli.runtime import CommandResult, command, current, run_command
from schedctl.errors import SchedctlError

if TYPE_CHECKING:
    from schedctl.db.database import Database

log = logging.getLogger("schedctl")

db_app = command_group("Apply or show schema migrations.")


@command(db_app, "upgrade")
def upgrade_command() -> None:
    """Apply pending migrations (idempotent; safe to run from several hosts at once).

    An up-to-date schema needs only read access; applying a migration needs a role
    that may create tables.
    """
    from schedctl import heartbeat
    from schedctl.db.migrations import status, upgrade

    runtime = current()
    with runtime.open_db(create=True) as db:
        started = db.server_now()
        applied = upgrade(db)
        _, version, _ = status(db)
        try:
            counts = {"applied": len(applied), "version": version}
            heartbeat.record_run(db, "db upgrade", started, counts)
        except SchedctlError as exc:
            # An up-to-date schema on a file this process may only read: the upgrade
            # (nothing to do) succeeded all the same, unrecorded like any reading command.
            log.debug("could not record the heartbeat: %s", exc.message)
        data = {
            "database": runtime.settings_masked_url(),
            "applied": [f"{m.version:04d}_{m.name}" for m in applied],
            "version": version,
        }
    human = (
        f"applied {len(applied)} migration(s); schema at version {version}"
        if applied
        else f"schema up to date at version {version}"
    )
    runtime.output.result(data, human)


@command(db_app, "status")
def status_command() -> None:
    """Show which migrations are applied and whether the schema matches this version.

    Also shows the version of the time zone data (tzdata) this schedctl computes
    slots with.
    """
    from schedctl.db.migrations import status
    from schedctl.zones import tzdata_version

    runtime = current()

    def work(db: Database) -> CommandResult:
        current_version, expected, states = status(db)
        return CommandResult(
            {
                "database": runtime.settings_masked_url(),
                "current": current_version,
                "expected": expected,
                "up_to_date": current_version == expected,
                "tzdata": tzdata_version(),
                "migrations": [
                    {
                        "version": s.version,
                        "name": s.name,
                        "applied_at": s.applied_at,
                        "checksum_ok": s.checksum_ok,
                    }
                    for s in states
                ],
            }
        )

    result = run_command("db status", work, needs_schema=False)
    data = result.data
    rows = [
        (
            f"{m['version']:04d}",
            m["name"],
            m["applied_at"] or "pending",
            "" if m["checksum_ok"] else "file changed since applied",
        )
        for m in data["migrations"]
    ]
    runtime.output.table(
        data,
        ["version", "name", "applied", "note"],
        rows,
        title=f"{data['database']}: schema version {data['current']} of {data['expected']};"
        f" tzdata {data['tzdata']}",
    )


def register(app: click.Group) -> None:
    app.add_command(db_app, "db")
