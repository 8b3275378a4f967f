"""`schedctl events add | update | list | delete`: the events whose messages tick plans."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

import click

from schedctl.cli.output import in_zone, warn
from schedctl.cli.params import (
    account_option,
    argument,
    command_group,
    flag,
    option,
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
from schedctl.values import parse_id

if TYPE_CHECKING:
    import sqlalchemy as sa

    from schedctl.db.database import Database

events_app = command_group("Manage events whose messages tick plans.")

load_in_option = option(
    "--load-in-time",
    metavar="TIME",
    help="Load-in time, not after the start; an event with one gets no INIT message.",
)
event_id_argument = argument("event_id", metavar="ID", help="The event's id.")


def _time(text: str | None) -> datetime | None:
    """An option's time: aware UTC if written with an offset, else a naive wall time."""
    from schedctl.values import parse_local_or_instant

    return None if text is None else parse_local_or_instant(text)


def _warn_dst(times: Iterable[datetime | None], tz: str) -> None:
    """Say so when a wall time was moved or disambiguated by SPEC §3's DST rule."""
    from schedctl.cadence import wall_time_note

    zone = ZoneInfo(tz)
    for value in times:
        note = wall_time_note(value, zone) if value is not None and value.tzinfo is None else None
        if note:
            warn(note)


def _describe(data: dict[str, Any], planned: int, what: str = "planned or changed") -> str:
    from schedctl import events

    starts = data["starts_at"]
    when = events.local_time(starts, ZoneInfo(data["tz"]))
    if data["tz"] != "UTC":
        when += f" ({starts:%Y-%m-%d %H:%M} UTC)"
    return f"event {data['id']} {data['name']!r} starts {when}; {planned} message(s) {what}"


@command(events_app, "add")
@option("--name", required=True, help="The event's name.")
@option("--starts-at", metavar="TIME", required=True, help="Start time.")
@option("--contact", metavar="EMAIL", required=True, help="E-mail address the messages go to.")
@load_in_option
@option(
    "--tz",
    metavar="ZONE",
    default="UTC",
    help="IANA zone of the event: of its times written without an offset, and of"
    " the messages' local times and weekends.",
)
@account_option
def add_command(
    name: str,
    starts_at: str,
    contact: str,
    load_in_time: str | None,
    tz: str,
    account: str | None,
) -> None:
    """Add an event and plan its INIT message and reminders.

    Times are ISO 8601. One without an offset (2027-01-10T10:00) is local time in
    --tz, so UTC when --tz is not given. A local time that a DST change skips means
    the first instant after the gap, one it repeats its first occurrence; a warning
    says so.
    """
    from schedctl import events
    from schedctl.cadence import to_instant
    from schedctl.values import parse_local_or_instant, parse_timezone, validate_email

    zone = parse_timezone(tz)
    start = parse_local_or_instant(starts_at)
    load_in = _time(load_in_time)
    for value in (start, load_in):
        if value is not None:
            to_instant(value, zone)  # out of range there: refused before the database opens
    address = validate_email(contact)
    settings = current().settings

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
    warn_fixed_offset(tz)
    _warn_dst((start, load_in), tz)
    current().output.result(data, _describe(data, data["messages_planned"]))


@command(events_app, "update")
@event_id_argument
@load_in_option
@option("--starts-at", metavar="TIME", help="New start time; pending reminders move with it.")
@account_option
def update_command(
    event_id: str, load_in_time: str | None, starts_at: str | None, account: str | None
) -> None:
    """Change an event's start or load-in time and re-plan its pending messages.

    Times are ISO 8601. One without an offset is local time in the event's zone (the
    --tz it was added with), read as `events add` reads it.
    """
    from schedctl import events

    number = parse_id(event_id, "event")
    start = _time(starts_at)
    load_in = _time(load_in_time)
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
    _warn_dst((start, load_in), data["tz"])
    current().output.result(data, _describe(data, data["messages_changed"]))


@command(events_app, "show")
@event_id_argument
@account_option
def show_command(event_id: str, account: str | None) -> None:
    """Show an event and its messages, each one's send time in the event's zone and UTC."""
    from schedctl import events

    number = parse_id(event_id, "event")

    def work(db: Database) -> CommandResult:
        account_id = scope_to_account(db, account)
        event, planned = db.transaction(
            lambda conn: events.event_messages(conn, account_id, number), read_only=True
        )
        return CommandResult({"event": events.event_summary(event), "messages": planned})

    data = run_command("events show", work).data
    event = data["event"]
    rows = [
        (m["id"], m["type"], m["send_at_local"], m["send_at"], m["expires_at"], m["status"],
         m["reason_code"])
        for m in data["messages"]
    ]  # fmt: skip
    current().output.table(
        data,
        ["id", "type", "send at (local)", "send at (UTC)", "expires", "status", "reason"],
        rows,
        title=_describe(event, len(rows), "in all"),
    )


@command(events_app, "list")
@account_option
def list_command(account: str | None) -> None:
    """List the account's events, soonest first."""
    from schedctl import events

    def work(db: Database) -> CommandResult:
        scope = scope_to(db, account)
        rows = db.transaction(lambda conn: events.list_events(conn, scope.id), read_only=True)
        items = [events.event_summary(r) for r in rows]
        return CommandResult({"events": items, "count": len(items), "account": scope.name})

    data = run_command("events list", work).data
    current().output.table(
        data,
        ["id", "name", "starts at", "load-in time", "contact", "tz"],
        [
            (
                e["id"],
                e["name"],
                in_zone(e["starts_at"], e["tz"]),
                in_zone(e["load_in_time"], e["tz"]),
                e["contact"],
                e["tz"],
            )
            for e in data["events"]
        ],
        title=listing_title("events", data["account"]),
    )


@command(events_app, "delete")
@event_id_argument
@flag("--yes", help="Really delete the event.")
@account_option
def delete_command(event_id: str, yes: bool, account: str | None) -> None:
    """Delete an event (needs --yes); its unsent messages are skipped (EVENT_DELETED).

    Every message of the event, sent or not, stays in the outbox's audit. A message of
    it that a dispatcher is sending right now is waited for (up to 30 seconds) and
    then stays sent; still being sent after that, nothing is deleted (exit 75).
    """
    from schedctl import events

    number = parse_id(event_id, "event")
    if not yes:
        raise UsageError(f"deleting event {number} needs --yes; nothing deleted")

    def work(db: Database) -> CommandResult:
        account_id = scope_to_account(db, account)
        deleted = events.delete_event_waiting(db, account_id, number, db.now())
        return CommandResult(
            {
                "id": str(deleted.id),
                "name": deleted.name,
                "deleted": True,
                "messages_skipped": deleted.messages_skipped,
                "messages_kept": deleted.messages_kept,
            }
        )

    data = run_command("events delete", work).data
    current().output.result(
        data,
        f"deleted event {data['id']} {data['name']!r}; {data['messages_skipped']} unsent"
        " message(s) skipped,"
        f" {data['messages_kept']} message(s) kept in the audit",
    )


def register(app: click.Group) -> None:
    app.add_command(events_app, "events")
