"""`schedctl users add | list | update | remove`."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import click

from schedctl.cli.params import (
    SLOT_COLUMNS,
    account_option,
    argument,
    command_group,
    flag,
    from_option,
    option,
    slot_rows,
    slots_option,
    warn_fixed_offset,
)
from schedctl.cli.runtime import (
    CommandResult,
    command,
    current,
    listing_title,
    run_command,
    scope_to,
    scope_to_account,
)
from schedctl.errors import UsageError

if TYPE_CHECKING:
    import sqlalchemy as sa

    from schedctl.db.database import Database

users_app = command_group("Manage digest users.")

user_argument = argument("user", metavar="ID_OR_EMAIL", help="The user's id or e-mail address.")
tz_option = option("--tz", metavar="ZONE", help="IANA time zone (new users: UTC).")
digest_at_option = option(
    "--digest-at",
    metavar="HH:MM",
    help="Local time from which the daily digest is due (new users: 08:00).",
)
digest_option = flag(
    "--digest/--no-digest",
    default=None,
    help="Whether the user gets a daily digest (new users: yes).",
)


def _show(data: dict[str, Any], verb: str) -> None:
    digest = f"digest at {data['digest_at']}" if data["digest_enabled"] else "no digest"
    current().output.result(
        data, f"{verb} user {data['id']} {data['email']} ({data['tz']}, {digest})"
    )


@command(users_app, "add")
@argument("email", help="The user's e-mail address.")
@tz_option
@digest_at_option
@digest_option
@account_option
def add_command(
    email: str, tz: str | None, digest_at: str | None, digest: bool | None, account: str | None
) -> None:
    """Add a user (e-mail unique in the account); prints its id."""
    from schedctl import users

    changes = users.parse_changes(email=email, tz=tz, digest_at=digest_at, digest_enabled=digest)

    def work(db: Database) -> CommandResult:
        account_id = scope_to_account(db, account)
        now = db.now()
        row = users.write(db, lambda conn: users.add_user(conn, account_id, changes, now), email)
        return CommandResult(users.user_summary(row))

    data = run_command("users add", work).data
    warn_fixed_offset(tz)
    _show(data, "added")


@command(users_app, "list")
@account_option
def list_command(account: str | None) -> None:
    """List the account's users."""
    from schedctl import users

    def work(db: Database) -> CommandResult:
        scope = scope_to(db, account)
        rows = db.transaction(lambda conn: users.list_users(conn, scope.id), read_only=True)
        items = [users.user_summary(row) for row in rows]
        return CommandResult({"users": items, "count": len(items), "account": scope.name})

    data = run_command("users list", work).data
    rows = [
        (u["id"], u["email"], u["tz"], u["digest_at"] if u["digest_enabled"] else "off")
        for u in data["users"]
    ]
    current().output.table(
        data,
        ["id", "email", "zone", "digest"],
        rows,
        title=listing_title("users", data["account"]),
        footer=f"{data['count']} user(s)",
    )


@command(users_app, "update")
@user_argument
@option("--email", metavar="EMAIL", help="A new e-mail address.")
@tz_option
@digest_at_option
@digest_option
@account_option
def update_command(
    user: str,
    email: str | None,
    tz: str | None,
    digest_at: str | None,
    digest: bool | None,
    account: str | None,
) -> None:
    """Change a user's e-mail address, zone or digest settings."""
    from schedctl import users

    users.user_condition(user)  # a malformed ID_OR_EMAIL is refused before the database
    changes = users.parse_changes(email=email, tz=tz, digest_at=digest_at, digest_enabled=digest)
    if changes.empty:
        raise UsageError(
            "nothing to update: give --email, --tz, --digest-at or --digest/--no-digest"
        )

    def work(db: Database) -> CommandResult:
        account_id = scope_to_account(db, account)
        now = db.now()

        def change(conn: sa.Connection) -> sa.Row[Any]:
            return users.update_user(conn, account_id, user, changes, now)

        return CommandResult(users.user_summary(users.write(db, change, changes.email)))

    data = run_command("users update", work).data
    warn_fixed_offset(tz)
    _show(data, "updated")


@command(users_app, "remove")
@user_argument
@account_option
@flag("--yes", help="Really remove it, its notifications and digests.")
def remove_command(user: str, account: str | None, yes: bool) -> None:
    """Remove a user with their notifications and digest history (needs --yes); their
    unsent messages are skipped (USER_REMOVED)."""
    from schedctl import users

    users.user_condition(user)
    if not yes:
        raise UsageError(
            f"removing user {user.strip()} and their notifications needs --yes; nothing removed"
        )

    def work(db: Database) -> CommandResult:
        account_id = scope_to_account(db, account)
        removed = users.remove_user_waiting(db, account_id, user, db.now())
        return CommandResult(
            {
                "id": str(removed.id),
                "email": removed.email,
                "removed": True,
                "notifications_deleted": removed.notifications_deleted,
                "digests_deleted": removed.digests_deleted,
                "messages_skipped": removed.messages_skipped,
            }
        )

    data = run_command("users remove", work).data
    current().output.result(
        data,
        f"removed user {data['id']} {data['email']}, {data['notifications_deleted']}"
        f" notification(s) and {data['digests_deleted']} digest record(s);"
        f" {data['messages_skipped']} unsent message(s) skipped ({users.USER_REMOVED})",
    )


@command(users_app, "next")
@user_argument
@slots_option()
@from_option("the digest times")
@account_option
def next_command(user: str, count: int, since: str | None, account: str | None) -> None:
    """List the times from which the user's next daily digests are due, local and
    UTC, naming each DST adjustment (none when the digest is off)."""
    from schedctl import users
    from schedctl.cadence import parse_instant

    start = None if since is None else parse_instant(since)

    def work(db: Database) -> CommandResult:
        account_id = scope_to_account(db, account)
        at = start or db.now()
        row, slots = db.transaction(
            lambda conn: users.digest_times(conn, account_id, user, at, count), read_only=True
        )
        return CommandResult(
            {
                "user": str(row.id),
                "tz": row.tz,
                "digest_enabled": bool(row.digest_enabled),
                "slots": [slot.as_dict() for slot in slots],
                "count": len(slots),
            }
        )

    data = run_command("users next", work).data
    off = "" if data["digest_enabled"] else "; digest off"
    heading = f"user {data['user']} ({data['tz']}){off}"
    current().output.table(data, SLOT_COLUMNS, slot_rows(data), title=heading)


def register(app: click.Group) -> None:
    app.add_command(users_app, "users")
