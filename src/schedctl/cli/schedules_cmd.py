"""`schedctl schedules create | list | show | update | pause | resume | delete | runs |
backfill | next`."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import click

from schedctl.cli.output import in_zone, warn
from schedctl.cli.params import (
    SLOT_COLUMNS,
    account_option,
    argument,
    command_group,
    flag,
    from_option,
    limit_option,
    option,
    parameters,
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
from schedctl.errors import UsageError, ValidationError
from schedctl.values import parse_id

if TYPE_CHECKING:
    from datetime import datetime

    from schedctl.db.database import Database
    from schedctl.schedules.model import Schedule, ScheduleOptions

schedules_app = command_group("Manage schedules.")

schedule_id_argument = argument("schedule_id", metavar="ID", help="The schedule's id.")


# The fields of a schedule, as `schedules create` and `update` take them.
schedule_options = parameters(
    option("--name", metavar="NAME", help="Name, unique in the account."),
    option("--kind", metavar="KIND", help="Report kind: sql or an installed plugin's."),
    account_option,
    option(
        "--cadence",
        metavar="daily|weekly|monthly|cron",
        help="daily, weekly, monthly or cron.",
    ),
    option("--at", metavar="HH:MM", help="Local time HH:MM (daily/weekly/monthly)."),
    option("--weekday", metavar="mon..sun", help="mon..sun (weekly)."),
    option(
        "--day",
        metavar="1..31|last",
        help="1..31 or last (monthly); past the month's end means its last day.",
    ),
    option("--cron", metavar="EXPR", help='5-field expression, e.g. "0 7 * * mon-fri".'),
    option(
        "--tz",
        metavar="ZONE",
        help="IANA time zone (create: default UTC; update: kept unless given).",
    ),
    option(
        "--to",
        metavar="EMAIL",
        multiple=True,
        help="Recipient e-mail (repeatable; on update, replaces the list).",
    ),
    option(
        "--param",
        metavar="KEY=VALUE",
        multiple=True,
        help="KEY=VALUE for the report kind, e.g. query=NAME for sql (repeatable;"
        " on update, replaces all params).",
    ),
    option(
        "--catchup",
        metavar="latest|all|none",
        help="After downtime run the latest missed slot, all (at most 100) or none"
        " (create: default latest; update: kept unless given).",
    ),
    option(
        "--max-lateness",
        metavar="DURATION",
        help="Record slots later than this (e.g. 6h) as skipped instead of running"
        " them; 'none' for no limit (create: default none; update: kept unless given).",
    ),
    flag("--paused", help="Create (or set) it paused."),
)


def _options(**values: Any) -> ScheduleOptions:
    from schedctl.schedules.model import ScheduleOptions

    return ScheduleOptions(**values)


# How far ahead `schedules create/update` look for local times a DST change moves.
DST_WARNING_WINDOW_DAYS = 365


def _dst_warnings(schedule: Schedule, now: datetime) -> list[str]:
    """The first time in the next 12 months that a DST change skips and the first it
    repeats, each as a note (SPEC §12), or nothing."""
    from datetime import timedelta

    from schedctl.cadence import dst_warnings

    return dst_warnings(schedule.cadence, now, now + timedelta(days=DST_WARNING_WINDOW_DAYS))


def _warn_about_zone(tz: str | None, notes: list[str]) -> None:
    """The warnings of a schedule's time and zone, on stderr (never in --json's stdout)."""
    warn_fixed_offset(tz)
    for note in notes:
        warn(note)


def _show(data: dict[str, Any], verb: str | None = None) -> None:
    """One schedule: its JSON, or a heading and one "key: value" line per set field."""
    lines = (
        [f"{verb} schedule {data['id']} {data['name']!r}: {data['description']}"] if verb else []
    )
    for key, value in data.items():
        if value is None or value == [] or value == {}:
            continue
        if isinstance(value, list):
            value = ", ".join(value)
        elif isinstance(value, dict):
            value = ", ".join(f"{k}={v}" for k, v in value.items())
        lines.append(f"{key:>13}: {value}")
    current().output.result(data, "\n".join(lines))


@command(schedules_app, "create")
@schedule_options
def create_command(
    name: str | None,
    kind: str | None,
    account: str | None,
    cadence: str | None,
    at: str | None,
    weekday: str | None,
    day: str | None,
    cron: str | None,
    tz: str | None,
    to: list[str] | None,
    param: list[str] | None,
    catchup: str | None,
    max_lateness: str | None,
    paused: bool,
) -> None:
    """Create a schedule; prints it with its id and next_run_at."""
    from schedctl.schedules.store import create_schedule

    options = _options(
        name=name, kind=kind, cadence=cadence, at=at, weekday=weekday, day=day, cron=cron,
        tz=tz, to=to, params=param, catchup=catchup, max_lateness=max_lateness, paused=paused,
    )  # fmt: skip
    runtime = current()
    notes: list[str] = []

    def work(db: Database) -> CommandResult:
        account_id = scope_to_account(db, account)
        now = db.now()
        schedule = create_schedule(db, runtime.settings, account_id, options, now)
        notes.extend(_dst_warnings(schedule, now))
        return CommandResult(schedule.as_dict())

    data = run_command("schedules create", work).data
    _warn_about_zone(data["tz"], notes)
    _show(data, "created")


@command(schedules_app, "list")
@account_option
def list_command(account: str | None) -> None:
    """List the account's schedules."""
    from schedctl.schedules.store import list_schedules

    def work(db: Database) -> CommandResult:
        scope = scope_to(db, account)
        items = [s.summary() for s in list_schedules(db, scope.id)]
        return CommandResult({"schedules": items, "count": len(items), "account": scope.name})

    data = run_command("schedules list", work).data
    rows = [
        (
            s["id"],
            s["name"],
            s["kind"],
            s["description"],
            "active" if s["active"] else "paused",
            in_zone(s["next_run_at"], s["tz"]),
            in_zone(s["last_run_at"], s["tz"]),
        )
        for s in data["schedules"]
    ]
    current().output.table(
        data,
        ["id", "name", "kind", "when", "state", "next run", "last run"],
        rows,
        title=listing_title("schedules", data["account"]),
    )


@command(schedules_app, "show")
@schedule_id_argument
@account_option
def show_command(schedule_id: str, account: str | None) -> None:
    """Show one schedule."""
    from schedctl.schedules.store import get_schedule

    sid = parse_id(schedule_id, "schedule")

    def work(db: Database) -> CommandResult:
        return CommandResult(get_schedule(db, scope_to_account(db, account), sid).as_dict())

    _show(run_command("schedules show", work).data)


@command(schedules_app, "update")
@schedule_id_argument
@schedule_options
def update_command(
    schedule_id: str,
    name: str | None,
    kind: str | None,
    account: str | None,
    cadence: str | None,
    at: str | None,
    weekday: str | None,
    day: str | None,
    cron: str | None,
    tz: str | None,
    to: list[str] | None,
    param: list[str] | None,
    catchup: str | None,
    max_lateness: str | None,
    paused: bool,
) -> None:
    """Change a schedule; a new cadence recomputes next_run_at and drops unused fields."""
    from schedctl.schedules.store import update_schedule

    sid = parse_id(schedule_id, "schedule")
    options = _options(
        name=name, kind=kind, cadence=cadence, at=at, weekday=weekday, day=day, cron=cron,
        tz=tz, to=to, params=param, catchup=catchup, max_lateness=max_lateness, paused=paused,
    )  # fmt: skip
    if all(value is None or value is False or value == [] for value in vars(options).values()):
        raise UsageError(
            "nothing to update: give at least one option (schedctl schedules update --help)"
        )
    runtime = current()
    notes: list[str] = []
    # Its time or zone is warned about again only when the update touches them.
    timing = (cadence, at, weekday, day, cron, tz) != (None,) * 6

    def work(db: Database) -> CommandResult:
        account_id = scope_to_account(db, account)
        now = db.now()
        schedule = update_schedule(db, runtime.settings, account_id, sid, options, now)
        if timing:
            notes.extend(_dst_warnings(schedule, now))
        return CommandResult(schedule.as_dict())

    data = run_command("schedules update", work).data
    if timing:
        _warn_about_zone(data["tz"], notes)
    _show(data, "updated")


def _set_active(command_name: str, schedule_id: str, account: str | None, active: bool) -> None:
    from schedctl.schedules.store import set_active

    sid = parse_id(schedule_id, "schedule")

    def work(db: Database) -> CommandResult:
        account_id = scope_to_account(db, account)
        return CommandResult(set_active(db, account_id, sid, active, db.now()).as_dict())

    _show(run_command(command_name, work).data, "resumed" if active else "paused")


@command(schedules_app, "pause")
@schedule_id_argument
@account_option
def pause_command(schedule_id: str, account: str | None) -> None:
    """Pause a schedule: no runs until it is resumed.

    Its waiting runs (queued, or failed and due a retry) are recorded by the next tick
    as skipped ("paused") and do not run after resume either; a run already executing
    finishes.
    """
    _set_active("schedules pause", schedule_id, account, active=False)


@command(schedules_app, "resume")
@schedule_id_argument
@account_option
def resume_command(schedule_id: str, account: str | None) -> None:
    """Resume a paused schedule from its next slot (slots missed meanwhile do not run)."""
    _set_active("schedules resume", schedule_id, account, active=True)


@command(schedules_app, "delete")
@schedule_id_argument
@account_option
@flag("--yes", help="Really delete it and its runs.")
def delete_command(schedule_id: str, account: str | None, yes: bool) -> None:
    """Delete a schedule and its run history (needs --yes)."""
    from schedctl.schedules.store import delete_schedule

    sid = parse_id(schedule_id, "schedule")
    if not yes:
        raise UsageError(f"deleting schedule {sid} and its runs needs --yes; nothing deleted")

    def work(db: Database) -> CommandResult:
        runs = delete_schedule(db, scope_to_account(db, account), sid)
        return CommandResult({"id": str(sid), "deleted": True, "runs_deleted": runs})

    data = run_command("schedules delete", work).data
    current().output.result(
        data, f"deleted schedule {data['id']} and {data['runs_deleted']} run(s)"
    )


@command(schedules_app, "runs")
@schedule_id_argument
@account_option
@limit_option("Show the N newest runs (default 50).", default=50)
def runs_command(schedule_id: str, account: str | None, limit: int) -> None:
    """Show a schedule's run history, newest first."""
    from schedctl.schedules.runs import run_history

    sid = parse_id(schedule_id, "schedule")

    zone_of: dict[str, str] = {}

    def work(db: Database) -> CommandResult:
        from schedctl.db.owned import get_owned
        from schedctl.db.schema import schedules

        account_id = scope_to_account(db, account)
        runs = run_history(db, account_id, sid, limit)
        owner = db.transaction(
            lambda c: get_owned(c, schedules, sid, account_id, columns=[schedules.c.tz]),
            read_only=True,
        )
        zone_of["tz"] = str(owner.tz)  # (the table shows instants in it too)
        items = [r.as_dict() for r in runs]
        return CommandResult({"runs": items, "count": len(items)})

    data = run_command("schedules runs", work).data
    tz = zone_of.get("tz", "UTC")
    rows = [
        (
            r["id"],
            in_zone(r["slot"], tz),
            r["status"] + (" (manual)" if r["manual"] else ""),
            r["attempt"],
            in_zone(r["started_at"], tz),
            in_zone(r["finished_at"], tz),
            None if r["duration_s"] is None else f"{r['duration_s']:.3f}s",
            r["error"],
        )
        for r in data["runs"]
    ]
    current().output.table(
        data,
        ["id", "slot", "status", "attempt", "started", "finished", "duration", "error"],
        rows,
    )


def _instant(option: str, text: str) -> datetime:
    from schedctl.cadence import parse_instant

    try:
        return parse_instant(text)
    except ValidationError as exc:
        raise ValidationError(f"{option}: {exc.message}") from None


@command(schedules_app, "backfill")
@schedule_id_argument
@option(
    "--from",
    "start",
    metavar="TIME",
    required=True,
    help="First instant of the range (inclusive), ISO 8601; without an offset, UTC.",
)
@option(
    "--to",
    "end",
    metavar="TIME",
    required=True,
    help="Last instant of the range (inclusive), not after now.",
)
@flag("--dry-run", help="Count the slots and runs; write nothing.")
@account_option
def backfill_command(
    schedule_id: str, start: str, end: str, dry_run: bool, account: str | None
) -> None:
    """Record runs for the schedule's slots from --from to --to; the next tick runs them.

    A slot that has a run already (run, skipped or queued) is not run again. At most
    1000 slots at a time; a paused schedule is refused. Catch-up policy and
    max-lateness do not apply: backfilled runs are never skipped as missed or late.
    """
    from schedctl.schedules.backfill import backfill_runs

    sid = parse_id(schedule_id, "schedule")
    first, last = _instant("--from", start), _instant("--to", end)

    def work(db: Database) -> CommandResult:
        account_id = scope_to_account(db, account)
        done = backfill_runs(db, account_id, sid, first, last, db.now(), dry_run=dry_run)
        return CommandResult(done.as_dict())

    # A dry run writes nothing, not even the heartbeat: it is no run of the command.
    data = run_command("schedules backfill", work, record=not dry_run).data
    counts = (
        f"{data['slots']} slot(s) from {first.isoformat()} to {last.isoformat()},"
        f" {data['already_recorded']} already recorded"
    )
    if dry_run:
        human = f"dry run, nothing written: would record {data['runs_created']} run(s); {counts}"
    else:
        human = f"recorded {data['runs_created']} run(s) for the next tick; {counts}"
    current().output.result(data, f"schedule {sid}: {human}")


@command(schedules_app, "next")
@schedule_id_argument
@slots_option()
@from_option("the slots")
@account_option
def next_command(schedule_id: str, count: int, since: str | None, account: str | None) -> None:
    """List the schedule's next slots, local and UTC, naming each DST or month-end
    adjustment: the slots tick runs."""
    from schedctl.cadence import parse_instant
    from schedctl.schedules.store import upcoming

    sid = parse_id(schedule_id, "schedule")
    start = None if since is None else parse_instant(since)

    def work(db: Database) -> CommandResult:
        account_id = scope_to_account(db, account)
        schedule, slots = upcoming(db, account_id, sid, start or db.now(), count)
        return CommandResult(
            {
                "schedule": str(schedule.id),
                "tz": schedule.cadence.tz,
                "active": schedule.active,
                "slots": [slot.as_dict() for slot in slots],
                "count": len(slots),
            }
        )

    data = run_command("schedules next", work).data
    paused = "" if data["active"] else "; paused: none runs until it is resumed"
    heading = f"schedule {data['schedule']} ({data['tz']}){paused}"
    current().output.table(data, SLOT_COLUMNS, slot_rows(data), title=heading)


def register(app: click.Group) -> None:
    app.add_command(schedules_app, "schedules")
