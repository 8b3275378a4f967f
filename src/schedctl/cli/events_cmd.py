"""`schedctl events add | update | list`: the events whose messages tick plans."""

from __future__ import annotations

from typing import Annotated, Any

import sqlalchemy as sa
import typer

from schedctl import events
from schedctl.cadence import parse_instant, parse_timezone
from schedctl.cli.messages_cmd import Account, parse_id
from schedctl.cli.runtime import CommandResult, command, current, run_command, scope_to_account
from schedctl.db.database import Database
from schedctl.delivery.message import validate_email
from schedctl.errors import UsageError

events_app = typer.Typer(help="Manage events whose messages tick plans.", no_args_is_help=True)

LoadIn = Annotated[
    str | None,
    typer.Option(
        "--load-in-time",
        help="Load-in instant (ISO 8601); an event with one gets no INIT message.",
        show_default=False,
    ),
]


def _describe(data: dict[str, Any], planned: int) -> str:
    return (
        f"event {data['id']} {data['name']!r} starts {data['starts_at']}"
        f" ({data['tz']}); {planned} message(s) planned or changed"
    )


@command(events_app, "add")
def add_command(
    name: Annotated[str, typer.Option("--name", help="The event's name.", show_default=False)],
    starts_at: Annotated[
        str, typer.Option("--starts-at", help="Start instant (ISO 8601).", show_default=False)
    ],
    contact: Annotated[str, typer.Option("--contact", help="E-mail address the messages go to.")],
    load_in_time: LoadIn = None,
    tz: Annotated[
        str, typer.Option("--tz", help="IANA zone for the messages' local times and weekends.")
    ] = "UTC",
    account: Account = None,
) -> None:
    """Add an event and plan its INIT message and reminders."""
    start = parse_instant(starts_at)
    load_in = parse_instant(load_in_time) if load_in_time is not None else None
    address = validate_email(contact)
    parse_timezone(tz)
    settings = current().settings
    events.reminders_for(settings)

    def work(db: Database) -> CommandResult:
        account_id = scope_to_account(db, account)
        now = db.now()

        def add(conn: sa.Connection) -> tuple[dict[str, Any], int]:
            event_id, planned = events.add_event(
                conn, settings, account_id=account_id, name=name, starts_at=start,
                contact=address, now=now, tz=tz, load_in_time=load_in,
            )  # fmt: skip
            return events.event_summary(events.get_event(conn, account_id, event_id)), planned

        data, planned = db.transaction(add)
        return CommandResult({**data, "messages_planned": planned})

    data = run_command("events add", work).data
    current().output.result(data, _describe(data, data["messages_planned"]))


@command(events_app, "update")
def update_command(
    event_id: Annotated[
        str, typer.Argument(help="The event's id.", metavar="ID", show_default=False)
    ],
    load_in_time: LoadIn = None,
    starts_at: Annotated[
        str | None,
        typer.Option(
            "--starts-at",
            help="New start instant; pending reminders move with it.",
            show_default=False,
        ),
    ] = None,
    account: Account = None,
) -> None:
    """Change an event's start or load-in time and re-plan its pending messages."""
    number = parse_id(event_id, "event")
    start = parse_instant(starts_at) if starts_at is not None else None
    load_in = parse_instant(load_in_time) if load_in_time is not None else None
    settings = current().settings
    if start is None and load_in is None:
        raise UsageError("nothing to change: give --starts-at and/or --load-in-time")

    def work(db: Database) -> CommandResult:
        account_id = scope_to_account(db, account)
        now = db.now()

        def update(conn: sa.Connection) -> tuple[dict[str, Any], int]:
            row, changed = events.update_event(
                conn, settings, account_id=account_id, event_id=number, now=now,
                starts_at=start, load_in_time=load_in,
            )  # fmt: skip
            return events.event_summary(row), changed

        data, changed = db.transaction(update)
        return CommandResult({**data, "messages_changed": changed})

    data = run_command("events update", work).data
    current().output.result(data, _describe(data, data["messages_changed"]))


@command(events_app, "list")
def list_command(account: Account = None) -> None:
    """List the account's events, soonest first."""

    def work(db: Database) -> CommandResult:
        account_id = scope_to_account(db, account)
        rows = db.transaction(lambda conn: events.list_events(conn, account_id), read_only=True)
        items = [events.event_summary(r) for r in rows]
        return CommandResult({"events": items, "count": len(items)})

    data = run_command("events list", work).data
    current().output.table(
        data,
        ["id", "name", "starts_at", "load_in_time", "contact", "tz"],
        [
            (e["id"], e["name"], e["starts_at"], e["load_in_time"], e["contact"], e["tz"])
            for e in data["events"]
        ],
    )


def register(app: typer.Typer) -> None:
    app.add_typer(events_app, name="events")
