"""`schedctl users add | list | update | remove`."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

import typer

from schedctl.cli.params import (
    SLOT_COLUMNS,
    Account,
    command_group,
    from_option,
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

Email = Annotated[
    str, typer.Argument(metavar="EMAIL", help="The user's e-mail address.", show_default=False)
]
UserRef = Annotated[
    str,
    typer.Argument(
        metavar="ID_OR_EMAIL", help="The user's id or e-mail address.", show_default=False
    ),
]
Tz = Annotated[
    str | None, typer.Option("--tz", metavar="ZONE", help="IANA time zone (new users: UTC).")
]
DigestAt = Annotated[
    str | None,
    typer.Option(
        "--digest-at",
        metavar="HH:MM",
        help="Local time from which the daily digest is due (new users: 08:00).",
    ),
]
Digest = Annotated[
    bool | None,
    typer.Option(
        "--digest/--no-digest",
        help="Whether the user gets a daily digest (new users: yes).",
        show_default=False,
    ),
]


def _show(data: dict[str, Any], verb: str) -> None:
    digest = f"digest at {data['digest_at']}" if data["digest_enabled"] else "no digest"
    current().output.result(
        data, f"{verb} user {data['id']} {data['email']} ({data['tz']}, {digest})"
    )


@command(users_app, "add")
def add_command(
    email: Email,
    tz: Tz = None,
    digest_at: DigestAt = None,
    digest: Digest = None,
    account: Account = None,
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
def list_command(account: Account = None) -> None:
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
def update_command(
    user: UserRef,
    email: Annotated[
        str | None, typer.Option("--email", metavar="EMAIL", help="A new e-mail address.")
    ] = None,
    tz: Tz = None,
    digest_at: DigestAt = None,
    digest: Digest = None,
    account: Account = None,
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
def remove_command(
    user: UserRef,
    account: Account = None,
    yes: Annotated[
        bool, typer.Option("--yes", help="Really remove it, its notifications and digests.")
    ] = False,
) -> None:
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
def next_command(
    user: UserRef,
    count: Annotated[int, slots_option()] = 10,
    since: Annotated[str | None, from_option("the digest times")] = None,
    account: Account = None,
) -> None:
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


def register(app: typer.Typer) -> None:
    app.add_typer(users_app, name="users")
