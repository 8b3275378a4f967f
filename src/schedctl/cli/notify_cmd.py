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

    def work(db: Database) -> CommandResult:
        account_id = scope_to_account(db, account)
        now = db.now()

        def insert(conn: sa.Connection) -> int:
            return notifications.add_notification(
                conn, account_id, user, now, title=title, body=body, priority=priority, key=key
            )

        return CommandResult({"id": str(db.transaction(insert)), "priority": priority})

    data = run_command("notify", work).data
    when = "the next tick sends it" if priority == "critical" else "for the next digest"
    current().output.result(data, f"notification {data['id']} recorded ({when})")


def register(app: click.Group) -> None:
    command(app, "notify")(notify_command)
