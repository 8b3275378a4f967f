"""One `distribute` run for a business date, and its preview (SPEC §6).

1. A date whose distribution is completed answers ``already_done`` at once.
2. Without a stored plan: read the campaigns (none active: ``skipped``), then, in one
   transaction of schedctl's database that creates or locks the date's row, stream
   the source into the planner (`store.planner`), which keeps each distinct ID with
   its keyed hash, numbers them in hash order and gives each its campaign and group;
   store the destinations' progress rows and take the day's lease. No users:
   ``skipped``. A process killed here leaves nothing; a second run waits for the
   row and finds the plan.
3. With the plan stored (now, or by an earlier run that died): hold the day's lease
   -- waiting while another live run holds it, up to ``[distribute] wait``, and
   answering ``already_done`` if that run completes it -- then copy the plan to each
   destination in batches (`endpoints.DestinationWriter`), recording each batch and
   renewing the lease, and finally mark the day ``completed``.

Every outcome -- completed, skipped, failed at a stage, a critical error -- puts the
operators' mail in the outbox in the transaction that records it; the run then
sends it through the dispatcher. A failure or a critical error is also recorded
there as an alert, ``distribution_failed:<date>:<attempt>`` (schedctl.alerts). IDs
never appear in full in the result, the logs, the mail or the alerts.
"""

from __future__ import annotations

import functools
import logging
import sqlite3
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any, Protocol
from zoneinfo import ZoneInfo

import sqlalchemy as sa

from schedctl import alerts, leases
from schedctl.config import Settings
from schedctl.db.database import Database
from schedctl.db.schema import distribution_users, distributions
from schedctl.distribute import notify, store
from schedctl.distribute.config import Destination, Source
from schedctl.distribute.endpoints import (
    Batch,
    DestinationWriter,
    StageError,
    read_campaigns,
    stream_source,
)
from schedctl.distribute.plan import (
    Campaign,
    balanced,
    counts,
    group_id,
    hash_key,
    layout,
    mask_id,
    source_users,
)
from schedctl.errors import (
    ConfigError,
    DatabaseRefused,
    DatabaseUnavailable,
    MailUnavailable,
    RecordingRefused,
    SchedctlError,
    TemporaryError,
    ValidationError,
)

log = logging.getLogger("schedctl.distribute")

SAMPLE_SIZE = 5  # masked IDs a preview shows
NOTICE_LIMIT = 100  # DISTRIBUTE messages one run sends at most


class Progress(Protocol):
    """What a run reports as it goes (the CLI draws it on a terminal)."""

    def start(self, phase: str, total: int | None = None) -> None: ...

    def advance(self, amount: int) -> None: ...


class _Silent:
    def start(self, phase: str, total: int | None = None) -> None:
        pass

    def advance(self, amount: int) -> None:
        pass


SILENT: Progress = _Silent()


@dataclass(frozen=True)
class Job:
    """The checked ``[distribute]`` configuration of a run."""

    source: Source
    campaigns: Source
    destinations: Mapping[str, Destination]  # in copy order: the ones the groups need
    groups: tuple[str, ...]
    control_groups: tuple[str, ...]
    group_id_format: str
    tz: str
    salt: str | None
    batch_size: int
    retention: timedelta
    lease: timedelta
    wait: timedelta
    retry_seconds: float


def job_from(settings: Settings) -> Job:
    """The run's configuration, or ConfigError (exit 2) for what is missing."""
    where = settings.config_path or "the config file"
    if settings.distribute_source is None:
        raise ConfigError(
            f"distribute is not configured: {where} needs [distribute.source] (database_url,"
            " query) and [distribute.campaigns], [distribute.control], [distribute.target]"
        )
    if settings.distribute_campaigns is None:
        raise ConfigError(f"{where}: [distribute.campaigns] is missing (database_url, query)")
    control = set(settings.distribute_control_groups)
    needed = {
        "control": any(g in control for g in settings.distribute_groups),
        "target": any(g not in control for g in settings.distribute_groups),
    }
    destinations: dict[str, Destination] = {}
    for name, destination in (
        ("control", settings.distribute_control),
        ("target", settings.distribute_target),
    ):
        if destination is None and needed[name]:
            raise ConfigError(
                f"{where}: [distribute.{name}] is missing (database_url, table, columns):"
                f" the {name} groups go there"
            )
        if destination is not None and needed[name]:
            destinations[name] = destination
    if settings.distribute_mirror is not None and needed["target"]:
        destinations["mirror"] = settings.distribute_mirror
    return Job(
        source=settings.distribute_source,
        campaigns=settings.distribute_campaigns,
        destinations=destinations,
        groups=settings.distribute_groups,
        control_groups=settings.distribute_control_groups,
        group_id_format=settings.distribute_group_id_format,
        tz=settings.distribute_tz,
        salt=settings.distribute_salt,
        batch_size=settings.distribute_batch_size,
        retention=settings.distribute_retention,
        lease=settings.distribute_lease,
        wait=settings.distribute_wait,
        retry_seconds=settings.db_retry_seconds,
    )


def business_date(settings: Settings, now: datetime, requested: date | None) -> date:
    """Today in the ``[distribute] tz`` zone, or ``requested`` (not in the future)."""
    today = now.astimezone(ZoneInfo(settings.distribute_tz)).date()
    if requested is None:
        return today
    if requested > today:
        raise ValidationError(
            f"--date {requested.isoformat()} is in the future (the business date today is"
            f" {today.isoformat()} in {settings.distribute_tz})"
        )
    return requested


@dataclass
class Outcome:
    """A run's JSON result and exit code."""

    data: dict[str, Any]
    exit_code: int = 0


class LeaseLost(TemporaryError):
    """Another run took the day over: this run's lease ran out while it worked."""


@dataclass
class _Planned:
    status: str  # planned | exists | no_users
    source_rows: int = 0


@dataclass
class DistributeRun:
    """One run: its configuration, clock, lease and what it found."""

    db: Database
    settings: Settings
    job: Job
    day: date
    clock: leases.Clock
    progress: Progress = SILENT
    lease: store.DayLease = field(init=False)
    planned_here: bool = False
    notices: int = 0

    def __post_init__(self) -> None:
        self.lease = store.DayLease(self.job.lease, self.clock)

    # ------------------------------------------------------------------ the run

    def run(self) -> Outcome:
        stored = self.db.transaction(lambda c: store.read_day(c, self.day), read_only=True)
        if stored is not None and stored.status == "completed":
            return self.already_done(stored)
        if stored is None or not stored.has_plan:
            outcome = self.plan()
            if outcome is not None:
                return outcome
        return self.copy()

    def plan(self) -> Outcome | None:
        """Make and store the day's plan; an Outcome when the run ends here."""
        self.progress.start("campaigns")
        try:
            campaigns = read_campaigns(self.job.campaigns, self.day, self.job.retry_seconds)
        except StageError as exc:
            return self.fail_unplanned(exc)
        active = [c for c in campaigns if c.is_active(self.day)]
        if not active:
            return self.skip("no_active_campaigns")
        self.progress.start("plan")
        try:
            made = self.db.transaction(functools.partial(self._plan, active=active))
        except StageError as exc:
            return self.fail_unplanned(exc)
        if made.status == "no_users":
            self.notices += 1
            return Outcome(self.result("skipped", reason="no_users", source_rows=made.source_rows))
        self.planned_here = made.status == "planned"
        return None

    def _plan(self, conn: sa.Connection, *, active: list[Campaign]) -> _Planned:
        now = self.clock()
        day = store.create_or_lock_day(conn, self.day, now)
        if day.has_plan or day.status == "completed":
            return _Planned("exists")  # another run planned it while this one waited
        conn.execute(
            distribution_users.delete().where(distribution_users.c.distribution_id == day.id)
        )
        source_rows = 0
        with stream_source(self.job.source, self.day, self.job.retry_seconds) as stream:
            extra_names = stream.columns[1:]
            self._check_extra_columns(extra_names)
            key = hash_key(self.day, self.job.salt)
            planner = store.planner(conn, day.id, key, extra_names)
            for chunk in stream.chunks:
                planner.add(source_users(chunk))
                source_rows += len(chunk)
                self.progress.advance(len(chunk))
        users = planner.count()
        if users == 0:
            store.set_unplanned_outcome(
                conn, self.day, now, status="skipped", reason="no_users", source_rows=source_rows
            )
            result = self.result("skipped", reason="no_users", source_rows=source_rows)
            notify.enqueue_notice(conn, self.settings, result, "skipped", now)
            return _Planned("no_users", source_rows)
        slots = layout(users, active, self.job.groups, self.job.control_groups, self._format)
        planner.assign(slots)
        plan = {
            "campaigns": [c.as_json() for c in active],
            "groups": list(self.job.groups),
            "control_groups": list(self.job.control_groups),
            "group_id_format": self._format,
            "tz": self.job.tz,
            "extra_columns": list(extra_names),
            "salted": self.job.salt is not None,
        }
        store.mark_planned(
            conn,
            day.id,
            now,
            plan=plan,
            users=users,
            source_rows=source_rows,
            destinations=list(self.job.destinations),
            slots=slots,
            retention=self.job.retention,
            lease=self.lease,
        )
        return _Planned("planned", source_rows)

    @property
    def _format(self) -> str:
        return self.job.group_id_format

    def _check_extra_columns(self, extra_names: Sequence[str]) -> None:
        """Each destination's extra columns must come from the source's, and must not
        fall on a column the destination's mapping already writes."""
        for destination in self.job.destinations.values():
            mapping = destination.extra_columns
            if mapping is not None:
                missing = [src for src in mapping.values() if src not in extra_names]
                if missing:
                    raise StageError(
                        "plan",
                        f"[distribute.{destination.name}] extra_columns names source column"
                        f" {missing[0]!r}, which the source query does not return"
                        f" (its extra columns: {', '.join(extra_names) or 'none'})",
                    )
                continue
            taken = {c.lower() for c in destination.columns.values()}
            clash = [n for n in extra_names if n.lower() in taken]
            if clash:
                raise StageError(
                    "plan",
                    f"the source's extra column {clash[0]!r} is also a mapped column of"
                    f" [distribute.{destination.name}] (rename it in the query, or map the"
                    " extra columns with extra_columns)",
                )

    # ------------------------------------------------------------------ copying

    def copy(self) -> Outcome:
        held = self.hold()
        if isinstance(held, Outcome):
            return held
        day = held
        progress = self.db.transaction(lambda c: store.read_progress(c, day.id), read_only=True)
        slots = day.slots()
        plan = day.plan or {}
        tz = str(plan.get("tz") or self.job.tz)
        assert day.planned_at is not None
        inserted_at = day.planned_at.astimezone(ZoneInfo(tz)).replace(tzinfo=None)
        for entry in progress:
            if entry.status == "completed":
                continue
            destination = self.job.destinations.get(entry.name)
            try:
                if destination is None:
                    raise StageError(
                        entry.name,
                        f"the stored plan of {self.day.isoformat()} copies to the {entry.name}"
                        f" table, and [distribute.{entry.name}] is no longer configured",
                    )
                self.copy_to(day, destination, entry, slots, inserted_at, tz)
            except StageError as exc:
                return self.fail_planned(day, exc)
        return self.complete(day)

    def hold(self) -> store.Day | Outcome:
        """Hold the day's lease, waiting while another live run holds it."""
        deadline = time.monotonic() + self.job.wait.total_seconds()
        waiting = False
        while True:
            try:
                held = self.db.transaction(self._hold)
            except DatabaseUnavailable:
                # SQLite: another run's plan transaction holds the write lock.
                if not self.db.capabilities.single_writer or time.monotonic() >= deadline:
                    raise
                held = None
            if held is not None:
                return held
            if not waiting:
                waiting = True
                log.info("another run holds %s: waiting for it", self.day.isoformat())
                self.progress.start("waiting")
            if time.monotonic() >= deadline:
                raise TemporaryError(
                    f"the distribution of {self.day.isoformat()} is in progress in another run;"
                    f" waited {int(self.job.wait.total_seconds())}s for it ([distribute] wait):"
                    " rerun later"
                )
            time.sleep(min(2.0, max(0.2, self.job.lease.total_seconds() / 4)))

    def _hold(self, conn: sa.Connection) -> store.Day | Outcome | None:
        day = store.read_day(conn, self.day, lock=True)
        if day is None or not day.has_plan:
            raise SchedctlError(f"the plan of {self.day.isoformat()} disappeared")
        if day.status == "completed":
            return self.already_done(day, conn)
        if not self.lease.is_free_or_mine(day):
            return None
        if day.lease_owner != self.lease.owner:
            self.lease.take(conn, day.id)
        return day

    def copy_to(
        self,
        day: store.Day,
        destination: Destination,
        entry: store.Progress,
        slots: Sequence[Any],
        inserted_at: datetime,
        tz: str,
    ) -> None:
        """Copy the plan's rows for one destination, from where it stopped."""
        mine = store.destination_slots(slots, entry.name)
        self.progress.start(entry.name, entry.rows_planned)
        self.progress.advance(sum(max(0, min(s.last, entry.last_seq) - s.first + 1) for s in mine))
        groups = list((day.plan or {})["groups"])
        group_ids = {
            c.id: [group_id(self._stored_format(day), c.id, i, g) for i, g in enumerate(groups, 1)]
            for c in day.campaigns()
        }
        last = mine[-1].last if mine else 0
        if not mine:
            self._record(day, entry.name, 0, 0, 0, finished=True)
            return
        extra_names = list((day.plan or {}).get("extra_columns") or [])
        writer = DestinationWriter(destination, tz, self.job.retry_seconds, extra_names)
        try:
            for slot in mine:
                first = max(entry.last_seq + 1, slot.first)
                while first <= slot.last:
                    upto = min(slot.last, first + self.job.batch_size - 1)
                    read = functools.partial(
                        store.read_plan_batch, day_id=day.id, first=first, last=upto
                    )
                    users = self.db.transaction(read, read_only=True)
                    batch = Batch(
                        users.ids, users.extras, users.size,
                        slot.group_id, slot.campaign, inserted_at,
                    )  # fmt: skip
                    done = writer.write(batch, group_ids[slot.campaign.id])
                    self._record(
                        day, entry.name, upto, done.inserted, done.existing, finished=upto == last
                    )
                    self.progress.advance(len(batch))
                    first = upto + 1
        finally:
            writer.close()

    def _stored_format(self, day: store.Day) -> str:
        return str((day.plan or {}).get("group_id_format") or self._format)

    def _record(
        self, day: store.Day, name: str, upto: int, inserted: int, existing: int, *, finished: bool
    ) -> None:
        def work(conn: sa.Connection) -> bool:
            return store.record_batch(
                conn, day.id, name, upto, inserted, existing, self.clock(), self.lease,
                finished=finished,
            )  # fmt: skip

        held = self.db.transaction(work)  # schedctl's own database: its errors are its own
        if not held:
            raise LeaseLost(
                f"another run took the distribution of {self.day.isoformat()} over (this"
                " run's lease ran out); it goes on there"
            )

    # ------------------------------------------------------------------ outcomes

    def complete(self, day: store.Day) -> Outcome:
        def work(conn: sa.Connection) -> dict[str, Any] | None:
            now = self.clock()
            progress = store.read_progress(conn, day.id)
            finished = self.lease.finish(
                conn, day.id, status="completed", reason=None, stage=None,
                finished_at=now, updated_at=now,
            )  # fmt: skip
            if not finished:
                return None
            result = self.result("completed", day=day, progress=progress)
            notify.enqueue_notice(conn, self.settings, result, "completed", now)
            return result

        result = self.db.transaction(work)
        if result is None:
            raise LeaseLost(
                f"another run took the distribution of {self.day.isoformat()} over before"
                " this one could record it completed"
            )
        self.notices += 1
        return Outcome(result)

    def already_done(self, day: store.Day, conn: sa.Connection | None = None) -> Outcome:
        def read(c: sa.Connection) -> list[store.Progress]:
            return store.read_progress(c, day.id)

        progress = read(conn) if conn is not None else self.db.transaction(read, read_only=True)
        return Outcome(
            self.result("already_done", reason="completed earlier", day=day, progress=progress)
        )

    def skip(self, reason: str) -> Outcome:
        result = self.result("skipped", reason=reason)

        def work(conn: sa.Connection) -> None:
            now = self.clock()
            if store.set_unplanned_outcome(conn, self.day, now, status="skipped", reason=reason):
                notify.enqueue_notice(conn, self.settings, result, "skipped", now)

        self.db.transaction(work)
        self.notices += 1
        return Outcome(result)

    def fail_unplanned(self, exc: StageError) -> Outcome:
        """A stage failed before a plan was stored (campaigns, source, plan)."""
        exc = StageError(exc.stage, self.settings.redact(exc.message), temporary=exc.temporary)
        result = self.result("failed", reason=exc.message, stage=exc.stage)

        def work(conn: sa.Connection) -> None:
            now = self.clock()
            written = store.set_unplanned_outcome(
                conn, self.day, now, status="failed", reason=exc.message, stage=exc.stage
            )
            if written:
                notify.enqueue_notice(conn, self.settings, result, "failed", now)
                self.record_alert(conn, f"failed at stage {exc.stage}: {exc.message}", now)

        self.db.transaction(work)
        self.notices += 1
        return Outcome(result, exc.exit_code)

    def fail_planned(self, day: store.Day, exc: StageError) -> Outcome:
        """A destination failed while copying: let the day go, a rerun resumes it."""
        exc = StageError(exc.stage, self.settings.redact(exc.message), temporary=exc.temporary)

        def work(conn: sa.Connection) -> dict[str, Any]:
            now = self.clock()
            progress = store.read_progress(conn, day.id)
            result = self.result(
                "failed", reason=exc.message, stage=exc.stage, day=day, progress=progress
            )
            released = self.lease.release(
                conn, day.id, status="failed", reason=exc.message, stage=exc.stage,
                updated_at=now,
            )  # fmt: skip
            if released:
                notify.enqueue_notice(conn, self.settings, result, "failed", now)
                self.record_alert(conn, f"failed at stage {exc.stage}: {exc.message}", now)
            return result

        result = self.db.transaction(work)
        self.notices += 1
        return Outcome(result, exc.exit_code)

    def critical(self, exc: BaseException) -> None:
        """An unexpected error, or schedctl's database refusing a statement: mail the
        operators (best effort), then it is raised. (Its text stays out of the mail:
        it may quote the rows.)"""
        what = "database error" if isinstance(exc, DatabaseRefused) else "internal error"
        try:
            result = self.result("failed", reason=f"{what}: {type(exc).__name__}", stage="internal")

            def work(conn: sa.Connection) -> None:
                now = self.clock()
                notify.enqueue_notice(conn, self.settings, result, "critical", now)
                self.record_alert(conn, f"critical error: {result['reason']}", now)

            self.db.transaction(work)
            self.notices += 1
        except Exception:  # the original error is the one to report
            log.debug("could not queue the critical notification", exc_info=True)

    def record_alert(self, conn: sa.Connection, what: str, now: datetime) -> None:
        """Record the alert of this run's failure: one per attempt at the date."""
        attempt = conn.execute(
            sa.select(distributions.c.attempts).where(distributions.c.business_date == self.day)
        ).scalar()
        date = self.day.isoformat()
        alerts.record(
            conn,
            [
                alerts.Alert(
                    alerts.DISTRIBUTION_FAILED,
                    f"{alerts.DISTRIBUTION_FAILED}:{date}:{attempt or 0}",
                    f"the distribution of {date} {what}",
                )
            ],
            now,
        )

    def result(
        self,
        status: str,
        *,
        reason: str | None = None,
        stage: str | None = None,
        day: store.Day | None = None,
        progress: Sequence[store.Progress] = (),
        source_rows: int | None = None,
    ) -> dict[str, Any]:
        """The run's JSON result (SPEC §11 keys first)."""
        per_campaign: list[dict[str, Any]] = []
        planned = 0
        groups = list(self.job.groups)
        if day is not None and day.has_plan:
            groups = list((day.plan or {})["groups"])
            per_campaign = counts(day.slots(), day.campaigns(), groups)
            planned = day.users or 0
            source_rows = day.source_rows
        return {
            "status": status,
            "reason": reason,
            "distributed": planned if status in ("completed", "already_done") else 0,
            "campaigns": per_campaign,
            "date": self.day.isoformat(),
            "balanced": balanced(per_campaign),
            "planned": planned,
            "source_rows": source_rows,
            "stage": stage,
            "groups": groups,
            "destinations": [p.as_json() for p in progress],
            # Whether this run went on from a plan an earlier run stored.
            "resumed": status in ("completed", "failed")
            and day is not None
            and day.has_plan
            and not self.planned_here,
        }

    # ------------------------------------------------------------------ afterwards

    def send_notices(self) -> None:
        """Send the DISTRIBUTE mail this run queued (and any a killed run left)."""
        if not self.notices or not self.settings.distribute_notify:
            return
        from schedctl.delivery.dispatch import dispatch_due

        try:
            dispatch_due(
                self.db, self.settings, self.clock(), NOTICE_LIMIT, types=(notify.MESSAGE_TYPE,)
            )
        except MailUnavailable as exc:
            log.warning("the notification stays queued for the next tick: %s", exc.message)
        except RecordingRefused as exc:
            # The day is distributed either way: its mail waits for a tick, which fails
            # the same way until the role is granted what recording needs.
            log.warning(
                "the notification stays queued: schedctl's login role may not record the"
                " mail it sends (%s); a tick sends it once that is granted",
                exc.refusal,
            )
        except SchedctlError as exc:
            # The database gone or refusing a statement, the mail settings refused by the
            # server: what was claimed goes back when its lease runs out.
            log.warning(
                "the notification's sending did not complete (it may have gone out; a tick"
                " tries it again once the cause is mended): %s",
                exc.message,
            )


def run_distribute(
    db: Database,
    settings: Settings,
    now: datetime,
    day: date,
    progress: Progress = SILENT,
) -> Outcome:
    """One `distribute` run for ``day``; its result and exit code."""
    job = job_from(settings)
    if settings.distribute_notify:
        from schedctl.delivery.dispatch import check_delivery_settings

        check_delivery_settings(settings)  # a mail configuration error: exit 2, nothing written
    run = DistributeRun(db, settings, job, day, leases.clock_from(now), progress)
    try:
        outcome = run.run()
    except DatabaseRefused as exc:
        # schedctl's own database refused a statement (a grant, a trigger added by hand):
        # told as an unexpected error is. (Other SchedctlErrors are bad input, told by
        # exit 2 with nothing written, or a database out of reach, which cannot be told.)
        run.critical(exc)
        run.send_notices()
        raise
    except SchedctlError:
        raise
    except Exception as exc:
        run.critical(exc)
        run.send_notices()
        raise
    run.send_notices()
    return outcome  # expired plans are reconcile's to purge (reconcile.py)


# --- preview ------------------------------------------------------------------------------


def preview_distribute(db: Database, settings: Settings, day: date) -> dict[str, Any]:
    """What a run would do for ``day``: active campaigns, available and distinct users,
    counts per campaign and group, a masked sample. Reads only; writes nothing."""
    job = job_from(settings)
    stored = db.transaction(lambda c: store.read_day(c, day), read_only=True)
    campaigns = read_campaigns(job.campaigns, day, job.retry_seconds)
    active = [c for c in campaigns if c.is_active(day)]
    available, distinct, sample = _count_source(job.source, day, job.retry_seconds)
    slots = layout(distinct, active, job.groups, job.control_groups, job.group_id_format)
    per_campaign = counts(slots, active, job.groups)
    reason = None if active else "no_active_campaigns"
    if active and not distinct:
        reason = "no_users"
    return {
        "status": "preview",
        "reason": reason,
        "distributed": distinct if active else 0,
        "campaigns": per_campaign,
        "date": day.isoformat(),
        "balanced": balanced(per_campaign),
        "active_campaigns": [c.as_json() for c in active],
        "campaigns_count": len(active),
        "available": available,
        "distinct": distinct,
        "sample": sample,
        "groups": list(job.groups),
        "destinations": list(job.destinations),
        "stored": None if stored is None else {"status": stored.status, "users": stored.users},
    }


def _count_source(source: Source, day: date, retry_seconds: float) -> tuple[int, int, list[str]]:
    """(rows, distinct IDs, masked sample) of the source, its IDs read as a run reads
    them (`source_users`) and de-duplicated as exactly as the plan's unique key does."""
    rows = 0
    first: list[str] = []  # the sample's users
    with stream_source(source, day, retry_seconds) as stream, _DistinctIds() as distinct:
        for chunk in stream.chunks:
            rows += len(chunk)
            users = [user_id for user_id, _ in source_users(chunk)]
            distinct.add(users)
            for user_id in users:
                if len(first) < SAMPLE_SIZE and user_id not in first:
                    first.append(user_id)
        return rows, distinct.count(), [mask_id(u) for u in first]


class _DistinctIds:
    """A count of distinct IDs that does not hold them in memory, as a day may have
    millions: a private temporary SQLite database keeps them (on disk past a small
    cache, deleted when closed). Its TEXT key compares as the plan's does: exactly."""

    def __enter__(self) -> _DistinctIds:
        self.db = sqlite3.connect("")  # "": a private temporary database
        self.db.execute("CREATE TABLE ids (id TEXT PRIMARY KEY) WITHOUT ROWID")
        return self

    def add(self, ids: Sequence[str]) -> None:
        self.db.executemany("INSERT OR IGNORE INTO ids VALUES (?)", [(i,) for i in ids])

    def count(self) -> int:
        return int(self.db.execute("SELECT count(*) FROM ids").fetchone()[0])

    def __exit__(self, *_exc: object) -> None:
        self.db.close()
