"""`schedctl reconcile`: the nightly repair and housekeeping (SPEC §8)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import click

from schedctl.cli.params import flag, option
from schedctl.cli.runtime import CommandResult, command, current, run_command

if TYPE_CHECKING:
    from schedctl.db.database import Database


@flag("--dry-run", help="Report what would be done; write nothing at all.")
@flag("--repair", help="Insert the target-group rows missing from the mirror.")
@option(
    "--date",
    "on_date",
    metavar="YYYY-MM-DD",
    help="Snapshot this UTC day's usage (default: yesterday and today so far).",
)
def reconcile_command(dry_run: bool, repair: bool, on_date: str | None) -> int:
    """Nightly repair: usage snapshot, dead leases, purges, mirror check (every account)."""
    from schedctl import reconcile
    from schedctl.values import parse_date

    runtime = current()
    settings = runtime.settings
    options = reconcile.ReconcileOptions(
        dry_run=dry_run,
        repair=repair,
        on_date=None if on_date is None else parse_date(on_date),
    )

    def work(db: Database) -> CommandResult:
        report = reconcile.run_reconcile(db, settings, db.now(), options)
        return CommandResult(report, exit_code=1 if reconcile.reconcile_failed(report) else 0)

    # A dry run writes nothing at all, not even the heartbeat: it is no run of the job.
    result = run_command("reconcile", work, record=not dry_run)
    runtime.output.result(result.data, _summary(result.data), failed=result.exit_code != 0)
    return result.exit_code


def _summary(r: dict[str, Any]) -> str:
    would = "dry run, nothing written: would have " if r["dry_run"] else ""
    mirror = (
        f"mirror: {r['mirror_checked']} row(s) checked, {r['mirror_missing']} missing,"
        f" {r['mirror_repaired']} repaired"
        if r["distributions"] == "checked"
        else f"mirror: not checked ({r['distributions']})"
    )
    return (
        f"{would}usage of {', '.join(r['usage_dates'])}: {r['usage_snapshot']} row(s) written"
        f" ({r['usage_accounts']} account(s))\n"
        f"leases recovered: {r['leases_recovered']} (runs {r['runs_retryable']} retryable,"
        f" {r['runs_failed']} failed; messages {r['messages_retrying']} retrying,"
        f" {r['messages_failed']} failed; distributions {r['distributions_recovered']});"
        f" quota units released: {r['reservations_released']}\n"
        f"purged: {r['tracking_purged']} digest day(s), {r['heartbeats_purged']} heartbeat(s),"
        f" {r['email_log_purged']} email_log row(s), {r['runs_purged']} run(s),"
        f" {r['plans_purged']} plan row(s) in {r['purge_batches']} batch(es)"
        f" (largest {r['largest_batch']})\n{mirror}"
    )


def register(app: click.Group) -> None:
    command(app, "reconcile")(reconcile_command)
