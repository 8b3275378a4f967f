"""`schedctl digest`: each opted-in user's daily digest, once per local day."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import click

from schedctl.cli.params import flag, limit_option, option
from schedctl.cli.runtime import CommandResult, command, current, run_command, scope_to_account

if TYPE_CHECKING:
    from schedctl.db.database import Database


@option("--user", metavar="ID_OR_EMAIL", help="Only this user (looked up in --account).")
@option(
    "--date",
    "on_date",
    metavar="YYYY-MM-DD",
    help="Only digests for this local date: today somewhere (or, with [digest]"
    " catch_up_days = 1, the day before).",
)
@flag("--preview", help="Show who would get a digest now and with how many items; write nothing.")
@limit_option("Handle at most N users' digests (default: every one due).")
@option(
    "--account",
    metavar="ACCOUNT",
    help="Only this account's users, by name or id (default: every account's,"
    " whatever SCHEDCTL_ACCOUNT says; --user is looked up in SCHEDCTL_ACCOUNT's"
    " account, else `default`, unless this is given).",
)
def digest_command(
    user: str | None, on_date: str | None, preview: bool, limit: int | None, account: str | None
) -> int:
    """Send each opted-in user's daily digest once per local day (default: every account)."""
    from schedctl.digest import due as digest_due
    from schedctl.digest import run as digest_run
    from schedctl.digest.plan import DigestOptions
    from schedctl.users import find_user
    from schedctl.values import parse_date

    runtime = current()
    settings = runtime.settings
    local_date = None if on_date is None else parse_date(on_date)

    def work(db: Database) -> CommandResult:
        account_id = None
        if account is not None or user is not None:
            account_id = scope_to_account(db, account)
        now = db.now()
        user_id = tz = None
        if user is not None:
            assert account_id is not None
            found = db.transaction(lambda c: find_user(c, account_id, user), read_only=True)
            user_id, tz = int(found.id), str(found.tz)
        if local_date is not None:
            digest_due.check_date(local_date, now, settings.digest_catch_up_days, tz)
        options = DigestOptions(account_id, user_id, local_date, limit)
        if preview:
            return CommandResult(digest_run.preview_digest(db, settings, now, options))
        counts = digest_run.run_digest(db, settings, now, options)
        return CommandResult(counts, exit_code=1 if digest_run.digest_failed(counts) else 0)

    # A preview writes nothing at all, not even the heartbeat: it is no run of the job.
    result = run_command("digest", work, record=not preview)
    if preview:
        _show_preview(result.data)
    else:
        c = result.data
        runtime.output.result(
            c,
            f"{c['users_due']} user(s) due: {c['digests_created']} digest(s) built"
            f" ({c['notifications_digested']} notifications), {c['skipped_empty']} skipped"
            f" (nothing new), {c['deferred_quota']} deferred (quota), {c['failed']} failed;"
            f" {c['digests_sent']} digest mail(s) sent"
            + (f"; {c['quarantined']} row(s) quarantined" if c["quarantined"] else ""),
            failed=result.exit_code != 0,
        )
    return result.exit_code


def _show_preview(data: dict[str, Any]) -> None:
    notes = {"digest": "", "skip": "nothing new: skipped", "deferred": "quota: deferred"}
    current().output.table(
        data,
        ["user", "email", "tz", "local date", "items", "note"],
        [
            (
                u["id"],
                u["email"],
                u["tz"],
                u["local_date"],
                u["items"],
                ("retry of a deferred day; " if u["retry"] else "") + notes[u["outcome"]],
            )
            for u in data["users"]
        ],
        footer=f"{data['users_due']} user(s) due: {data['digests_due']} digest(s) with"
        f" {data['notifications_due']} notifications, {data['skipped_empty']} with nothing new,"
        f" {data['deferred_quota']} deferred by the quota (preview: nothing was written)",
    )


def register(app: click.Group) -> None:
    command(app, "digest")(digest_command)
