"""`schedctl suppressions list | add | remove`, `unsubscribe`, `unsubscribe-url`."""

from __future__ import annotations

from typing import TYPE_CHECKING

import click

from schedctl.cli.params import account_option, argument, command_group, option
from schedctl.cli.runtime import (
    CommandResult,
    command,
    current,
    listing_title,
    run_command,
    scope_to,
    scope_to_account,
)
from schedctl.errors import ValidationError
from schedctl.vocabulary import SUPPRESSION_REASONS

if TYPE_CHECKING:
    import sqlalchemy as sa

    from schedctl.db.database import Database

suppressions_app = command_group("Manage the suppression list (addresses never mailed again).")

email_argument = argument("email", help="The e-mail address.")


@command(suppressions_app, "list")
@account_option
def list_command(account: str | None) -> None:
    """List the account's suppressed addresses."""
    from schedctl.delivery import suppressions

    def work(db: Database) -> CommandResult:
        scope = scope_to(db, account)
        rows = db.transaction(
            lambda conn: suppressions.list_suppressions(conn, scope.id), read_only=True
        )
        items = [
            {"id": str(r.id), "email": r.email, "reason": r.reason, "created_at": r.created_at}
            for r in rows
        ]
        return CommandResult({"suppressions": items, "count": len(items), "account": scope.name})

    data = run_command("suppressions list", work).data
    current().output.table(
        data,
        ["email", "reason", "since"],
        [(s["email"], s["reason"], s["created_at"]) for s in data["suppressions"]],
        title=listing_title("suppressions", data["account"]),
        footer=f"{data['count']} suppressed address(es)",
    )


@command(suppressions_app, "add")
@email_argument
@option("--reason", default="manual", help=f"Why: {', '.join(SUPPRESSION_REASONS)}.")
@account_option
def add_command(email: str, reason: str, account: str | None) -> None:
    """Suppress an address (idempotent: adding it twice is not an error)."""
    from schedctl.delivery import suppressions
    from schedctl.values import validate_email

    address = validate_email(email)
    if reason not in SUPPRESSION_REASONS:
        raise ValidationError(f"invalid reason {reason!r} ({', '.join(SUPPRESSION_REASONS)})")

    def work(db: Database) -> CommandResult:
        account_id = scope_to_account(db, account)
        now = db.now()
        added = db.transaction(
            lambda conn: suppressions.add_suppression(conn, account_id, address, now, reason)
        )
        return CommandResult({"email": address, "added": added})

    data = run_command("suppressions add", work).data
    state = "suppressed" if data["added"] else "already suppressed"
    current().output.result(data, f"{address}: {state}")


@command(suppressions_app, "remove")
@email_argument
@account_option
def remove_command(email: str, account: str | None) -> None:
    """Lift an address's suppression (idempotent)."""
    from schedctl.delivery import suppressions
    from schedctl.values import validate_email

    address = validate_email(email)

    def work(db: Database) -> CommandResult:
        account_id = scope_to_account(db, account)
        removed = db.transaction(
            lambda conn: suppressions.remove_suppression(conn, account_id, address)
        )
        return CommandResult({"email": address, "removed": removed})

    data = run_command("suppressions remove", work).data
    state = "no longer suppressed" if data["removed"] else "was not suppressed"
    current().output.result(data, f"{address}: {state}")


@email_argument
@option("--token", required=True, help="The token from the unsubscribe link.")
@account_option
def unsubscribe_command(email: str, token: str, account: str | None) -> None:
    """Apply an unsubscribe token: verify it and suppress the address."""
    from schedctl.delivery import suppressions
    from schedctl.values import validate_email

    address = validate_email(email)
    settings = current().settings

    def work(db: Database) -> CommandResult:
        account_id = scope_to_account(db, account)
        now = db.now()

        def apply(conn: sa.Connection) -> bool:
            added = suppressions.apply_unsubscribe(
                conn, settings, str(account_id), address, token, now
            )
            if added is None:
                # Raised inside the transaction, so the heartbeat row that would
                # commit with it rolls back: refused input leaves no trace (SPEC §2).
                raise ValidationError("invalid unsubscribe token for this address and account")
            return added

        added = db.transaction(apply)
        return CommandResult({"email": address, "unsubscribed": True, "already": not added})

    data = run_command("unsubscribe", work).data
    state = "was already unsubscribed" if data["already"] else "unsubscribed"
    current().output.result(data, f"{address}: {state}")


@email_argument
@account_option
def unsubscribe_url_command(email: str, account: str | None) -> None:
    """Print the signed one-click unsubscribe URL for an address."""
    from schedctl.delivery import suppressions
    from schedctl.values import validate_email

    address = validate_email(email)
    settings = current().settings
    suppressions.unsubscribe_link(settings, 1, address)  # configured? (exit 2 before any write)

    def work(db: Database) -> CommandResult:
        return CommandResult({"account_id": scope_to_account(db, account)})

    # Made outside the command frame: the link (with its token) is not a count to record.
    account_id = run_command("unsubscribe-url", work).data["account_id"]
    url = suppressions.unsubscribe_link(settings, account_id, address)
    current().output.result({"url": url}, url)


def register(app: click.Group) -> None:
    app.add_command(suppressions_app, "suppressions")
    command(app, "unsubscribe")(unsubscribe_command)
    command(app, "unsubscribe-url")(unsubscribe_url_command)
