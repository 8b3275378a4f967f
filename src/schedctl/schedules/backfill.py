"""`schedules backfill`: record a schedule's runs for the slots of a past range (SPEC §12).

The slots are the cadence's own (cadence.slots_between, as tick's catch-up finds
them) in [from, to]; each becomes a queued run under the (schedule, slot) key tick
uses, inserted the way tick inserts (runs.insert_slot_runs), so a slot that has a
run already -- run, failed, skipped or queued, by tick or by an earlier backfill --
is left as it is and not run again. The next tick executes the new runs like any
queued run.

Rules:

- The range is the operator's explicit request: catch-up policy and
  ``max_lateness`` judge only the slots tick finds missed, so a backfilled run is
  never skipped as late or as missed.
- ``to`` may not be after now: a queued run is executed by the next tick whatever
  its slot, so a future slot would run early.
- A paused schedule is refused: tick records a paused schedule's waiting runs as
  skipped, so its backfill would not run.
- At most MAX_BACKFILL_SLOTS slots; a larger range is refused whole.

Every refusal is a ValidationError (exit 2) raised before anything is written.
The schedule's row is locked while its runs are inserted, so a tick materialising
the same schedule waits for it or skips it until the next tick (its claim skips
locked rows); the unique key makes each slot's run once whatever runs at once.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

import sqlalchemy as sa

from schedctl.cadence import slots_between
from schedctl.db.database import Database
from schedctl.db.owned import get_owned
from schedctl.db.schema import schedule_runs, schedules
from schedctl.errors import ValidationError
from schedctl.schedules.model import Schedule
from schedctl.schedules.runs import insert_slot_runs, slot_run

MAX_BACKFILL_SLOTS = 1000

_ONE_MICROSECOND = timedelta(microseconds=1)


@dataclass(frozen=True)
class Backfill:
    """What a backfill did (or, dry, would do); the keys of its JSON."""

    slots: int  # slots of the schedule in [from, to]
    runs_created: int  # of those, runs recorded now (dry: that would be)
    already_recorded: int  # of those, slots that had a run already

    def as_dict(self) -> dict[str, int]:
        return {
            "slots": self.slots,
            "runs_created": self.runs_created,
            "already_recorded": self.already_recorded,
        }


def backfill_slots(schedule: Schedule, start: datetime, end: datetime) -> list[datetime]:
    """The schedule's slots in [start, end], oldest first (ValidationError past the limit)."""
    found = slots_between(
        schedule.cadence, start - _ONE_MICROSECOND, end, limit=MAX_BACKFILL_SLOTS + 1
    )
    if len(found) > MAX_BACKFILL_SLOTS:
        raise ValidationError(
            f"more than {MAX_BACKFILL_SLOTS} slots of schedule {schedule.id} between"
            f" {start.isoformat()} and {end.isoformat()}: backfill a shorter range at a time"
        )
    return found


def backfill_runs(
    db: Database,
    account_id: int,
    schedule_id: int,
    start: datetime,
    end: datetime,
    now: datetime,
    *,
    dry_run: bool = False,
) -> Backfill:
    """Record queued runs of schedule ``schedule_id`` (in ``account_id``) for its slots
    in [start, end]; ``dry_run`` counts them and writes nothing."""
    if start > end:
        raise ValidationError(
            f"--from {start.isoformat()} is after --to {end.isoformat()}: nothing to backfill"
        )
    if end > now:
        raise ValidationError(
            f"--to {end.isoformat()} is after now ({now.isoformat()}): backfill records"
            " past slots; tick runs the others when they are due"
        )

    def work(conn: sa.Connection) -> Backfill:
        row = get_owned(conn, schedules, schedule_id, account_id, "schedule", lock=not dry_run)
        schedule = Schedule.from_row(row)
        if not schedule.active:
            raise ValidationError(
                f"schedule {schedule_id} is paused: tick would skip its backfilled runs"
                f" (resume it first: schedctl schedules resume {schedule_id})"
            )
        slots = backfill_slots(schedule, start, end)
        if dry_run:
            recorded = _recorded(conn, schedule_id, slots)
            return Backfill(len(slots), len(slots) - recorded, recorded)
        rows = [slot_run(account_id, schedule_id, slot, now) for slot in slots]
        created = insert_slot_runs(conn, rows)
        if created and (schedule.last_run_at is None or schedule.last_run_at < slots[-1]):
            # As tick does: last_run_at is the newest slot given a run to execute.
            conn.execute(
                schedules.update()
                .where(schedules.c.id == schedule_id, schedules.c.account_id == account_id)
                .values(last_run_at=slots[-1])
            )
        return Backfill(len(slots), created, len(slots) - created)

    return db.transaction(work, read_only=dry_run)


def _recorded(conn: sa.Connection, schedule_id: int, slots: list[datetime]) -> int:
    """How many of ``slots`` have a run of the schedule (not a manual one) already."""
    if not slots:
        return 0
    c = schedule_runs.c
    # Runs in the range at other instants (made before the cadence changed) do not count.
    in_range = sa.select(c.slot).where(
        c.schedule_id == schedule_id,
        c.manual == sa.false(),
        c.slot >= slots[0],
        c.slot <= slots[-1],
    )
    return len(set(conn.execute(in_range).scalars()) & set(slots))
