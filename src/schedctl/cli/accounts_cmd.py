"""`schedctl accounts create | list`."""

from __future__ import annotations

from typing import TYPE_CHECKING

import click

from schedctl.cli.params import argument, command_group
from schedctl.cli.runtime import CommandResult, command, current, run_command
from schedctl.errors import ConflictError, ValidationError

if TYPE_CHECKING:
    import sqlalchemy as sa

    from schedctl.db.database import Database

accounts_app = command_group("Manage accounts (the tenants schedules belong to).")


@command(accounts_app, "create")
@argument("name", help="The new account's name (no spaces).")
def create_command(name: str) -> None:
    """Create an account; prints its id."""
    from schedctl import accounts

    runtime = current()

    def work(db: Database) -> CommandResult:
        now = db.now()

        def insert(conn: sa.Connection) -> int:
            return accounts.create_account(conn, name, now)

        try:
            account_id = db.transaction(insert)
        except ConflictError as exc:
            if exc.constraint is None:  # create_account's own words
                raise ValidationError(exc.message) from None
            raise ValidationError(f"an account named {name.strip()!r} exists already") from None
        return CommandResult({"id": str(account_id), "name": name.strip()})

    data = run_command("accounts create", work).data
    runtime.output.result(data, f"created account {data['name']} (id {data['id']})")


@command(accounts_app, "list")
def list_command() -> None:
    """List the accounts."""
    from schedctl import accounts

    runtime = current()

    def work(db: Database) -> CommandResult:
        rows = db.transaction(accounts.list_accounts, read_only=True)
        items = [{"id": str(r.id), "name": r.name, "created_at": r.created_at} for r in rows]
        return CommandResult({"accounts": items, "count": len(items)})

    data = run_command("accounts list", work).data
    runtime.output.table(
        data,
        ["id", "name", "created"],
        [(a["id"], a["name"], a["created_at"]) for a in data["accounts"]],
    )


def register(app: click.Group) -> None:
    app.add_command(accounts_app, "accounts")
