"""`schedctl notify`: record a notification for a user."""

from __future__ import annotations

from typing import TYPE_CHECKING

import click

from schedctl.cli.params import account_option, option
from schedctl.cli.runtime import CommandResult, command, current, run_command, scope_to_account

if TYPE_CHECKING:
    import sqlalchemy as sa

    from schedctl.db.database import Database


@option("--user", metavar="EMAIL_OR_ID", required=True, help="The user's e-mail address or id.")
@option("--title", metavar="TEXT", required=True, help="The title (1-500 characters).")
@option("--body", metavar="TEXT", help="The body (optional).")
@option(
    "--priority",
    metavar="normal|critical",
    default="normal",
    help="normal: in the user's next daily digest; critical: sent by the next tick.",
)
@option("--key", metavar="KEY", help="Groups notifications in the digest.")
@account_option
def notify_command(
    user: str, title: str, body: str | None, priority: str, key: str | None, account: str | None
) -> None:
    """Record a notification for a user (critical ones are sent by the next tick)."""
    from schedctl import notifications, users

    users.user_condition(user)  # bad values are refused before the database is opened
    title = notifications.parse_title(title)
    body = None if body is None else notifications.parse_body(body)
    priority = notifications.parse_priority(priority)
    key = None if key is None else notifications.parse_key(key)

    gets_digests = True  # (the user's, as the notification was recorded)

    def work(db: Database) -> CommandResult:
        nonlocal gets_digests
        account_id = scope_to_account(db, account)
        now = db.now()

        def insert(conn: sa.Connection) -> tuple[int, bool]:
            added = notifications.add_notification(
                conn, account_id, user, now, title=title, body=body, priority=priority, key=key
            )
            return added, bool(users.find_user(conn, account_id, user).digest_enabled)

        added, gets_digests = db.transaction(insert)
        return CommandResult({"id": str(added), "priority": priority})

    data = run_command("notify", work).data
    if priority == "critical":
        when = "the next tick sends it"
    elif gets_digests:
        when = "for the next digest"
    else:
        when = "the user gets no digests: it waits until they do"
    current().output.result(data, f"notification {data['id']} recorded ({when})")


def register(app: click.Group) -> None:
    command(app, "notify")(notify_command)
