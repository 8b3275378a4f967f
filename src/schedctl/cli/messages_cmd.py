"""`schedctl messages list | show | edit | delete | delete-all`: the outbox, by hand."""

from __future__ import annotations

import re
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

import click

from schedctl.cli.output import cell_text, warn
from schedctl.cli.params import (
    account_option,
    argument,
    command_group,
    flag,
    limit_option,
    option,
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
from schedctl.values import parse_id
from schedctl.vocabulary import MESSAGE_STATUSES

if TYPE_CHECKING:
    import sqlalchemy as sa

    from schedctl.db.database import Database

messages_app = command_group("Manage scheduled messages (the outbox).")

type_option = option("--type", "type_", help="Only this message type, e.g. REPORT or INIT.")
message_id_argument = argument("message_id", metavar="ID", help="The message's id.")
_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")


def _bound(value: str, *, end: bool) -> datetime:
    """A --from/--until value: a date (its whole day, in UTC) or an instant."""
    from schedctl.cadence import parse_instant

    instant = parse_instant(value)  # a date alone reads as its midnight
    if end and _DATE.fullmatch(value.strip()):
        return instant + timedelta(days=1)
    return instant


def _expiry(value: str) -> datetime | None:
    """A --expires-at value: an instant, or ``none`` (the message never expires)."""
    from schedctl.cadence import parse_instant
    from schedctl.errors import ValidationError

    if value.strip().lower() == "none":
        return None
    try:
        return parse_instant(value)
    except ValidationError as exc:
        raise ValidationError(f"--expires-at: {exc.message}, or none") from None


@command(messages_app, "list")
@type_option
@option("--status", help=f"Only this status: {', '.join(MESSAGE_STATUSES)}.")
@option("--from", "since", metavar="DATE|TIME", help="send_at on or after this date or instant.")
@option("--until", metavar="DATE|TIME", help="send_at up to this date (inclusive) or instant.")
@limit_option("At most this many.")
@account_option
def list_command(
    type_: str | None,
    status: str | None,
    since: str | None,
    until: str | None,
    limit: int | None,
    account: str | None,
) -> None:
    """List messages, nearest send time first."""
    from schedctl.delivery import outbox
    from schedctl.values import normalise_type

    message_type = normalise_type(type_) if type_ is not None else None
    wanted_status = outbox.validate_status(status) if status is not None else None
    lower = _bound(since, end=False) if since is not None else None
    upper = _bound(until, end=True) if until is not None else None

    def work(db: Database) -> CommandResult:
        scope = scope_to(db, account)
        rows = db.transaction(
            lambda conn: outbox.list_messages(
                conn, scope.id, type=message_type, status=wanted_status,
                since=lower, until=upper, limit=limit,
            ),
            read_only=True,
        )  # fmt: skip
        items = [outbox.message_summary(r) for r in rows]
        return CommandResult({"messages": items, "count": len(items), "account": scope.name})

    data = run_command("messages list", work).data
    columns = [
        "id",
        "type",
        "recipient",
        "subject",
        "send_at",
        "status",
        "reason",
        "attempts",
        "expires_at",
        "sent_at",
    ]
    rows = [
        (m["id"], m["type"], m["recipient"], m["subject"], m["send_at"], m["status"],
         m["reason_code"], m["attempts"], m["expires_at"], m["sent_at"])
        for m in data["messages"]
    ]  # fmt: skip
    current().output.table(
        data,
        columns,
        rows,
        title=listing_title("messages", data["account"]),
        footer=f"{data['count']} message(s)",
    )


def _show_text(message: dict[str, Any]) -> str:
    """The lines above the attempts table of `messages show`."""

    def when(value: Any) -> str:
        return "-" if value is None else cell_text(value)

    status = message["status"] + (f" ({message['reason_code']})" if message["reason_code"] else "")
    lines = [
        f"message {message['id']}: {message['type']} to {message['recipient'] or '(none)'}",
        f"subject:    {message['subject']}",
        f"status:     {status}" + ("; being sent right now" if message["being_sent"] else ""),
        f"send at:    {when(message['send_at'])}"
        + (f" (next attempt {when(message['next_attempt_at'])})"
           if message["next_attempt_at"] else ""),
        f"expires at: {when(message['expires_at'])}",
        f"sent at:    {when(message['sent_at'])}",
        f"attempts:   {message['attempts']}",
    ]  # fmt: skip
    if message["last_error"]:
        lines.append(f"last error: {message['last_error']}")
    return "\n".join(lines)


@command(messages_app, "show")
@message_id_argument
@account_option
def show_command(message_id: str, account: str | None) -> None:
    """Show one message and every attempt to send it, oldest first."""
    from schedctl.delivery import outbox

    number = parse_id(message_id, "message")

    def work(db: Database) -> CommandResult:
        account_id = scope_to_account(db, account)
        now = db.now()

        def show(conn: sa.Connection) -> dict[str, Any]:
            row = outbox.get_message(conn, number, account_id=account_id)
            return {
                "message": outbox.message_detail(row, now),
                "attempts": outbox.attempts_of(conn, number, account_id),
            }

        return CommandResult(db.transaction(show, read_only=True))

    data = run_command("messages show", work).data
    rows = [(a["at"], a["outcome"], a["code"], a["detail"]) for a in data["attempts"]]
    count = len(rows)
    current().output.table(
        data,
        ["at", "outcome", "code", "detail"],
        rows,
        title=_show_text(data["message"]),
        footer=f"{count} attempt(s) recorded" if count else "no attempt recorded",
    )


@command(messages_app, "edit")
@message_id_argument
@option(
    "--send-at",
    metavar="TIME",
    help="New send time (ISO 8601; no more than 5 minutes in the past).",
)
@option("--status", help=f"New status: {', '.join(MESSAGE_STATUSES)}.")
@option(
    "--expires-at",
    metavar="TIME|none",
    help="Not sent by this time (ISO 8601), it is skipped (EXPIRED); none: never expires.",
)
@account_option
def edit_command(
    message_id: str,
    send_at: str | None,
    status: str | None,
    expires_at: str | None,
    account: str | None,
) -> None:
    """Change a message's send time, status and/or expiry."""
    from schedctl.cadence import parse_instant
    from schedctl.delivery import outbox

    number = parse_id(message_id, "message")
    new_send_at = parse_instant(send_at) if send_at is not None else None
    new_status = outbox.validate_status(status) if status is not None else None
    new_expiry = _expiry(expires_at) if expires_at is not None else outbox.KEEP
    if new_send_at is None and new_status is None and new_expiry is outbox.KEEP:
        raise UsageError("nothing to change: give --send-at, --status and/or --expires-at")

    def work(db: Database) -> CommandResult:
        account_id = scope_to_account(db, account)
        now = db.now()

        def edit(conn: sa.Connection) -> Any:
            return outbox.edit_message(
                conn, number, now, account_id=account_id, send_at=new_send_at,
                status=new_status, expires_at=new_expiry,
            )  # fmt: skip

        return CommandResult(outbox.message_summary(db.transaction(edit)))

    data = run_command("messages edit", work).data
    if new_status == "sent":
        warn(f"message {data['id']} marked sent by hand: it will not be sent")
    expiry = f", expires at {data['expires_at']}" if data["expires_at"] else ""
    current().output.result(
        data, f"message {data['id']}: {data['status']}, send at {data['send_at']}{expiry}"
    )


@command(messages_app, "delete")
@message_id_argument
@flag("--yes", help="Really delete the message.")
@account_option
def delete_command(message_id: str, yes: bool, account: str | None) -> None:
    """Delete one unsent message (needs --yes).

    A message that was sent, or may have been (its outcome is unknown), stays in the
    audit and is refused; so is one a dispatcher is sending right now (exit 75, try
    again). The record of its attempts, if any, is kept.
    """
    from schedctl.delivery import outbox

    number = parse_id(message_id, "message")
    if not yes:
        raise UsageError(f"deleting message {number} needs --yes; nothing deleted")

    def work(db: Database) -> CommandResult:
        account_id = scope_to_account(db, account)
        now = db.now()
        row = db.transaction(
            lambda conn: outbox.delete_message(conn, number, now, account_id=account_id)
        )
        return CommandResult({"id": str(row.id), "deleted": True, "status": row.status})

    data = run_command("messages delete", work).data
    current().output.result(data, f"deleted message {data['id']} ({data['status']})")


@command(messages_app, "delete-all")
@flag("--confirm", help="Required: really delete the messages.")
@type_option
@account_option
def delete_all_command(confirm: bool, type_: str | None, account: str | None) -> None:
    """Delete every message of the account (or of one type); needs --confirm.

    Messages a dispatcher is sending right now are left alone and reported as
    in flight.
    """
    from schedctl.delivery import outbox
    from schedctl.values import normalise_type

    message_type = normalise_type(type_) if type_ is not None else None
    if not confirm:
        raise UsageError("refusing to delete messages without --confirm")

    def work(db: Database) -> CommandResult:
        account_id = scope_to_account(db, account)
        now = db.now()
        result = db.transaction(
            lambda conn: outbox.delete_messages(conn, account_id, type=message_type, now=now)
        )
        return CommandResult({"deleted": result.deleted, "in_flight": result.in_flight})

    data = run_command("messages delete-all", work).data
    human = f"deleted {data['deleted']} message(s)"
    if data["in_flight"]:
        human += f"; left {data['in_flight']} being sent right now (run again to delete them)"
    current().output.result(data, human)


def register(app: click.Group) -> None:
    app.add_command(messages_app, "messages")
