"""`schedctl notify`: record a notification for a user."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer

from schedctl.cli.params import Account
from schedctl.cli.runtime import CommandResult, command, current, run_command, scope_to_account

if TYPE_CHECKING:
    import sqlalchemy as sa

    from schedctl.db.database import Database


def notify_command(
    user: Annotated[
        str,
        typer.Option(
            "--user",
            metavar="EMAIL_OR_ID",
            help="The user's e-mail address or id.",
            show_default=False,
        ),
    ],
    title: Annotated[
        str,
        typer.Option(
            "--title", metavar="TEXT", help="The title (1-500 characters).", show_default=False
        ),
    ],
    body: Annotated[
        str | None, typer.Option("--body", metavar="TEXT", help="The body (optional).")
    ] = None,
    priority: Annotated[
        str,
        typer.Option(
            "--priority",
            metavar="normal|critical",
            help="normal: in the user's next daily digest; critical: sent by the next tick.",
        ),
    ] = "normal",
    key: Annotated[
        str | None,
        typer.Option("--key", metavar="KEY", help="Groups notifications in the digest."),
    ] = None,
    account: Account = None,
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


def register(app: typer.Typer) -> None:
    command(app, "notify")(notify_command)
