"""Schedule runs: materialise due slots, then claim and execute runs (SPEC §3, §4).

Materialise. In short transactions, claim a batch of due schedules (``active AND
next_run_at <= now``; FOR UPDATE SKIP LOCKED on PostgreSQL, SQLite's write lock
elsewhere), decide each missed slot by the catch-up policy, insert the runs
(a unique (schedule_id, slot) conflict means another tick did it), advance
``next_run_at`` and commit. Any number of concurrent ticks create each run once.
Before claiming, a ``next_run_at`` computed under another release of the zone data
(tzdata) is recomputed from the schedule's rule (:func:`recompute_for_zone_data`), so
a schedule whose zone changed its offset is judged due by the zone's current rules.

Execute. Claim a few runs (CLAIM_BATCH) with a lease (leases.py; RUN_LEASE long),
commit; produce each report with no transaction open; then, in one transaction,
mark the run succeeded -- only if this process still holds its lease -- and enqueue
one message per recipient. A process killed anywhere leaves either nothing or runs
whose lease expires and which are claimed again; the lease guard and the messages'
idempotency keys (run id + recipient) keep a retry from enqueueing twice. A claimed
run whose lease is half gone before it starts is handed back instead.

Policies:

- Catch-up, per schedule, over the MAX_CATCHUP_SLOTS newest missed slots (older ones
  are not looked at): ``latest`` runs the newest; ``all`` runs every one, oldest
  first; ``none`` runs the newest only if it is at most NONE_GRACE old -- a tick run
  late by cron is not downtime, and 15 minutes is the heartbeat's green window.
  A slot not run is recorded as a ``skipped`` run with the reason, and so is any
  slot older than the schedule's ``max_lateness``.
- Pause: a paused schedule's runs are never claimed (the claim checks
  ``schedules.active``). Each tick first records its waiting runs -- queued, failed
  and due a retry, or orphaned by a dead process (lease expired) -- as ``skipped``
  with error "paused" (keeping a failed run's last error), so they do not run on
  resume either: resuming starts from the next slot, as for slots missed while
  paused. A run already executing when the pause lands finishes. A manual run
  (`send-now --schedule`) of a paused schedule runs, but is not retried.
- Expiry: with a ``max_lateness``, a run's messages expire at its slot + that bound;
  dispatch skips one not sent by then (EXPIRED), even when the run itself was late.
  A backfilled run (recorded after its slot's bound) counts the bound from when it
  was recorded.
- Retry: a run whose report fails is ``failed`` with its error; later ticks retry it
  after RETRY_BACKOFF, doubled per attempt (5 min, then 10), until MAX_ATTEMPTS
  attempts, after which it stays failed. A failure that a retry cannot mend is
  final at once: a report query that read-only mode refuses (ReportFailed with
  ``retryable`` False), a schedule without recipients (MISSING_RECIPIENT). A run
  whose process died (lease expired) goes back through leases.recover
  (:data:`LEASED_RUNS`, the claim's first step and reconcile's) and is retried the
  same way; one that died on its last attempt is marked failed.
- Alerts: whichever way a run fails for good, the transaction that records it
  records its alert too (``run_failed:<run id>``, schedctl.alerts).
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Literal

import sqlalchemy as sa

from schedctl import alerts, leases, zones
from schedctl.accounts import account_name
from schedctl.cadence import next_slot, reread_slot
from schedctl.config import Settings
from schedctl.db import dialect
from schedctl.db.database import Database
from schedctl.db.owned import get_owned
from schedctl.db.schema import messages, schedule_runs, schedules
from schedctl.delivery import outbox
from schedctl.errors import SchedctlError, ValidationError
from schedctl.leases import Clock
from schedctl.schedules import reports
from schedctl.schedules.catchup import _Planner
from schedctl.schedules.model import Schedule, stored_cadence
from schedctl.schedules.store import next_run_values

if TYPE_CHECKING:
    from schedctl.delivery.dispatch import SendNowResult


log = logging.getLogger("schedctl.runs")

RUN_LEASE = timedelta(minutes=10)
MAX_ATTEMPTS = 3
RETRY_BACKOFF = timedelta(minutes=5)
MATERIALISE_BATCH = 50
CLAIM_BATCH = 5
MAX_ERROR_LENGTH = 1000

# Reason codes of run_schedule_now.
ENQUEUED = "ENQUEUED"
MISSING_RECIPIENT = "MISSING_RECIPIENT"
REPORT_FAILED = "REPORT_FAILED"

# The predicate of the partial unique index on (schedule_id, slot), written as in sql/.
_NOT_MANUAL = sa.text("NOT manual")


# --- materialise ---------------------------------------------------------------------


@dataclass
class TickCounts:
    """What run_schedules did; the keys of the tick's JSON."""

    due: int = 0
    runs_created: int = 0
    runs_skipped: int = 0
    runs_succeeded: int = 0
    runs_failed: int = 0
    messages_enqueued: int = 0
    schedules_invalid: int = 0
    # Schedules whose next_run_at another release of the zone data moved.
    next_runs_recomputed: int = 0

    def add(self, other: TickCounts) -> None:
        for name in self.__dataclass_fields__:
            setattr(self, name, getattr(self, name) + getattr(other, name))

    def as_dict(self) -> dict[str, int]:
        return {name: getattr(self, name) for name in self.__dataclass_fields__}


# The due schedules, oldest slot first, with the columns materialising reads: the
# cadence and the catch-up rules, not the recipients or report parameters.
_DUE_COLUMNS = (
    "id", "account_id", "cadence", "at_time", "weekday", "day_of_month", "cron", "tz",
    "catchup", "max_lateness_s", "next_run_at", "last_run_at",
)  # fmt: skip
_DUE = (
    sa.select(*[schedules.c[name] for name in _DUE_COLUMNS])
    .where(schedules.c.active == sa.true(), schedules.c.next_run_at <= sa.bindparam("now"))
    .order_by(schedules.c.next_run_at, schedules.c.id)
    .limit(sa.bindparam("size"))
    .with_for_update(skip_locked=True)
)


# One statement for the whole batch's schedule updates (executemany).
_ADVANCE = (
    schedules.update()
    .where(schedules.c.id == sa.bindparam("schedule_id"))
    .values(
        next_run_at=sa.bindparam("next_run_at"),
        tzdata_version=sa.bindparam("tzdata_version"),
        last_run_at=sa.bindparam("last_run_at"),
    )
)


def _materialise_batch(
    conn: sa.Connection, now: datetime, size: int, planner: _Planner
) -> TickCounts:
    counts = TickCounts()
    queued: list[dict[str, Any]] = []
    skipped: list[dict[str, Any]] = []
    advances: list[dict[str, Any]] = []
    version = zones.tzdata_version()
    claimed = conn.execute(_DUE, {"now": now, "size": size}).all()
    for row in claimed:
        counts.due += 1
        try:
            max_lateness = (
                None if row.max_lateness_s is None else timedelta(seconds=row.max_lateness_s)
            )
            decisions, next_run_at = planner.plan(
                stored_cadence(row), row.next_run_at, row.catchup, max_lateness
            )
        except SchedctlError as exc:
            # Only possible for a row edited by hand (e.g. a zone tzdata dropped);
            # pausing it keeps one bad row from failing every tick.
            log.error("pausing schedule %s: it cannot be read: %s", row.id, exc.message)
            conn.execute(
                schedules.update()
                .where(schedules.c.id == row.id)
                .values(active=False, **next_run_values(None), updated_at=now)
            )
            counts.schedules_invalid += 1
            # Its waiting runs fail with the reason now, rather than being skipped
            # as "paused" by the execute step.
            failed = conn.execute(
                schedule_runs.update()
                .where(schedule_runs.c.schedule_id == row.id, _waiting(now))
                .values(
                    status="failed",
                    error=f"the schedule cannot be read: {exc.message}"[:MAX_ERROR_LENGTH],
                    finished_at=now,
                    next_attempt_at=None,
                    **leases.CLEARED,
                )
                .returning(schedule_runs.c.id)
            ).scalars()
            failed_ids = [int(i) for i in failed]
            counts.runs_failed += len(failed_ids)
            alerts.record_failed_runs(conn, failed_ids, now)
            continue
        schedule_id = int(row.id)
        account_id = int(row.account_id)
        for d in decisions:
            run = slot_run(account_id, schedule_id, d.slot, now, skipped_because=d.reason)
            (queued if d.run else skipped).append(run)
        ran = [d.slot for d in decisions if d.run]
        last_run_at = max([*ran, *([row.last_run_at] if row.last_run_at else [])], default=None)
        advances.append(
            {
                "schedule_id": schedule_id,
                "next_run_at": next_run_at,
                "tzdata_version": version,
                "last_run_at": last_run_at,
            }
        )
    # A unique (schedule_id, slot) conflict means another tick made that run: skip it.
    # Counted, not returned: an INSERT without RETURNING goes as one short statement
    # executed per row (pipelined on psycopg), whose parse and plan the driver caches.
    counts.runs_created += insert_slot_runs(conn, queued)
    counts.runs_skipped += insert_slot_runs(conn, skipped)
    if advances:
        conn.execute(_ADVANCE, advances)
    return counts


def slot_run(
    account_id: int,
    schedule_id: int,
    slot: datetime,
    now: datetime,
    *,
    skipped_because: str | None = None,
) -> dict[str, Any]:
    """The row of a schedule's run for ``slot``: queued, or skipped with the reason."""
    skipped = skipped_because is not None
    return {
        "account_id": account_id,
        "schedule_id": schedule_id,
        "slot": slot,
        "manual": False,
        "status": "skipped" if skipped else "queued",
        "attempt": 0,
        "error": skipped_because,
        "finished_at": now if skipped else None,
        "created_at": now,
    }


def insert_slot_runs(conn: sa.Connection, rows: Sequence[dict[str, Any]]) -> int:
    """Insert slot runs (:func:`slot_run`); how many were new. A slot that has a run
    already (the unique (schedule_id, slot) key of runs not manual) is left as it is."""
    return dialect.insert_ignore_count(
        conn, schedule_runs, rows, ["schedule_id", "slot"], conflict_where=_NOT_MANUAL
    )


def materialise_due(db: Database, now: datetime, limit: int | None = None) -> TickCounts:
    """Create the runs of every schedule due at ``now`` (at most ``limit`` schedules).

    First, every ``next_run_at`` computed under other zone data is recomputed.
    """
    total = TickCounts(next_runs_recomputed=recompute_for_zone_data(db))
    planner = _Planner(now)
    while limit is None or total.due < limit:
        size = MATERIALISE_BATCH if limit is None else min(MATERIALISE_BATCH, limit - total.due)
        batch = db.transaction(
            functools.partial(_materialise_batch, now=now, size=size, planner=planner)
        )
        total.add(batch)
        if batch.due < size:
            break
    return total


# --- zone data changes ---------------------------------------------------------------

RECOMPUTE_BATCH = 500

# The schedules whose next_run_at was computed under another release of the zone data
# (or an unknown one): written as ranges and IS NULL, which the partial index
# schedules_tzdata_version serves, rather than as <>.
_ELSEWHERE = sa.and_(
    schedules.c.next_run_at.is_not(None),
    sa.or_(
        schedules.c.tzdata_version.is_(None),
        schedules.c.tzdata_version < sa.bindparam("version"),
        schedules.c.tzdata_version > sa.bindparam("version"),
    ),
)
_ANY_COMPUTED_ELSEWHERE = sa.select(schedules.c.id).where(_ELSEWHERE).limit(1)
_COMPUTED_ELSEWHERE = (
    sa.select(*[schedules.c[name] for name in (*_DUE_COLUMNS, "tzdata_version")])
    .where(_ELSEWHERE)
    .order_by(schedules.c.id)
    .limit(RECOMPUTE_BATCH)
    .with_for_update(skip_locked=True)
)

_RECOMPUTE = (
    schedules.update()
    .where(schedules.c.id == sa.bindparam("schedule_id"))
    .values(next_run_at=sa.bindparam("next_run_at"), tzdata_version=sa.bindparam("version"))
)


def recompute_for_zone_data(db: Database) -> int:
    """Recompute each ``next_run_at`` computed under another release of the zone data
    (SPEC §12); returns how many moved.

    The slot a stored ``next_run_at`` was meant to be is re-read under the current data
    (cadence.reread_slot): unchanged for a zone whose rules did not change, the same
    wall time at its new instant for one that did. A result not after the schedule's
    last run (possible only if the data rewrote a zone's past) becomes the next slot
    after that run, so no slot runs twice. A schedule whose cadence cannot be read is
    stamped unchanged; the tick that finds it due pauses it.
    """
    version = zones.tzdata_version()

    def batch(conn: sa.Connection) -> tuple[int, int]:
        rows = conn.execute(_COMPUTED_ELSEWHERE, {"version": version}).all()
        updates = []
        moved = 0
        for row in rows:
            next_run_at = row.next_run_at
            try:
                cadence = stored_cadence(row)
                next_run_at = reread_slot(cadence, row.next_run_at)
                if row.last_run_at is not None and next_run_at <= row.last_run_at:
                    next_run_at = next_slot(cadence, row.last_run_at)
            except SchedctlError:
                pass
            if next_run_at != row.next_run_at:
                moved += 1
                log.info(
                    "schedule %s: next run moved from %s to %s by tzdata %s (was %s)",
                    row.id,
                    row.next_run_at.isoformat(),
                    next_run_at.isoformat(),
                    version,
                    row.tzdata_version or "unknown",
                )
            updates.append({"schedule_id": row.id, "next_run_at": next_run_at, "version": version})
        if updates:
            conn.execute(_RECOMPUTE, updates)
        return len(rows), moved

    def any_stale(conn: sa.Connection) -> bool:
        return conn.execute(_ANY_COMPUTED_ELSEWHERE, {"version": version}).first() is not None

    # Almost every tick finds nothing to recompute: looking costs no write lock (SQLite
    # takes its one write lock at a write transaction's BEGIN).
    if not db.transaction(any_stale, read_only=True):
        return 0
    total = 0
    while True:
        found, moved = db.transaction(batch)
        total += moved
        if found < RECOMPUTE_BATCH:
            return total


# --- execute -------------------------------------------------------------------------


@dataclass(frozen=True)
class ClaimedRun:
    """A run this process holds the lease of, with its schedule as claimed."""

    id: int
    slot: datetime
    attempt: int
    manual: bool
    schedule: Schedule
    lease_expires_at: datetime
    created_at: datetime


PAUSED = "paused"  # the error of a run skipped because its schedule was paused


def _schedule_active() -> sa.ColumnElement[bool]:
    """The run's schedule is active (not paused).

    A correlated EXISTS rather than a JOIN: on PostgreSQL a FOR UPDATE over a join
    would also lock the schedules rows, which materialising ticks claim with SKIP
    LOCKED, and each side would then skip the other's work for no reason.
    """
    return (
        sa.exists()
        .where(schedules.c.id == schedule_runs.c.schedule_id, schedules.c.active == sa.true())
        .correlate(schedule_runs)
    )


def _claimable(now: datetime) -> sa.ColumnElement[bool]:
    """Queued, or failed with a retry due (a run whose process died is recovered
    into that state first)."""
    c = schedule_runs.c
    return sa.and_(
        sa.or_(c.status == "queued", sa.and_(c.status == "failed", c.next_attempt_at <= now)),
        _schedule_active(),
    )


def _waiting(now: datetime) -> sa.ColumnElement[bool]:
    """A run still to execute: queued, failed with a retry pending (due or not), or
    running under an expired lease (its process died)."""
    c = schedule_runs.c
    return sa.or_(
        c.status == "queued",
        _orphaned(now),
        sa.and_(c.status == "failed", c.next_attempt_at.is_not(None)),
    )


def _orphaned(now: datetime) -> sa.ColumnElement[bool]:
    """A run whose process died: still running, under an expired lease."""
    return sa.and_(LEASED_RUNS.in_flight, leases.expired(schedule_runs, now))


def skip_paused_runs(db: Database, now: datetime) -> int:
    """Record the waiting runs of paused schedules as skipped ("paused"); how many.

    A running run whose lease is live is left to finish.
    """
    c = schedule_runs.c
    kept_error = sa.func.substr(
        sa.literal(f"{PAUSED}; last error: ") + c.error, 1, MAX_ERROR_LENGTH
    )
    statement = (
        schedule_runs.update()
        .where(_waiting(now), ~_schedule_active())
        .values(
            status="skipped",
            error=sa.case((c.error.is_(None), PAUSED), else_=kept_error),
            finished_at=now,
            next_attempt_at=None,
            **leases.CLEARED,
        )
    )
    return int(db.transaction(lambda conn: conn.execute(statement).rowcount))


ORPHANED = "the process running it stopped (lease expired)"


def orphan_error(attempt: int) -> str:
    """The error recorded on a run whose process died during ``attempt``."""
    return f"{ORPHANED} on attempt {attempt} of {MAX_ATTEMPTS}"


def _after_expiry(expiry: leases.Expiry, now: datetime) -> dict[str, Any]:
    """A run whose process died: failed with the reason, due again at once -- the state
    a failed attempt leaves, claimed like any retry -- unless that was its last."""
    return {
        "status": "failed",
        "error": orphan_error(min(expiry.attempts, MAX_ATTEMPTS)),
        "finished_at": now,
        "next_attempt_at": None if expiry.final else now,
    }


# Runs as leased work (leases.recover): running under a lease, the attempt counted
# when the claim starts it; one that fails for good is an alert.
LEASED_RUNS = leases.LeasedWork(
    schedule_runs,
    in_flight=schedule_runs.c.status == "running",
    attempts=schedule_runs.c.attempt,
    counted_at_claim=True,
    after=_after_expiry,
    on_failed=alerts.record_failed_runs,
)


def claim_runs(
    db: Database, now: datetime, owner: str, limit: int = 1
) -> tuple[list[ClaimedRun], int]:
    """Lease up to ``limit`` runnable runs to ``owner``; returns (claimed, given up).

    Runs whose process died (lease expired) are first recovered as reconcile recovers
    them (:data:`LEASED_RUNS`), so they are claimed as retries. Not claimed but marked
    failed, and counted as given up: a run whose process died on its last attempt,
    and one whose schedule row cannot be read.
    """
    c = schedule_runs.c
    candidates = (
        sa.select(c.id)
        .where(_claimable(now))
        .order_by(c.slot, c.id)
        .limit(limit)
        .with_for_update(skip_locked=True)
    )

    def work(conn: sa.Connection) -> tuple[list[ClaimedRun], int]:
        dead = leases.recover(
            conn, LEASED_RUNS, now, _schedule_active(),
            max_attempts=MAX_ATTEMPTS, limit=limit, order_by=[c.slot, c.id],
        ).failed  # fmt: skip
        ids = list(conn.execute(candidates).scalars())
        if not ids:
            return [], len(dead)
        runs = leases.stamp(
            conn,
            schedule_runs,
            ids,
            owner,
            now + RUN_LEASE,
            returning=[
                c.id,
                c.slot,
                c.attempt,
                c.manual,
                c.schedule_id,
                c.lease_expires_at,
                c.created_at,
            ],
            status="running",
            attempt=c.attempt + 1,
            next_attempt_at=None,
            started_at=now,
            finished_at=None,
        )
        owners = conn.execute(
            sa.select(schedules).where(schedules.c.id.in_({r.schedule_id for r in runs}))
        ).all()
        by_id: dict[int, Schedule] = {}
        for row in owners:
            try:
                by_id[row.id] = Schedule.from_row(row)
            except SchedctlError as exc:  # edited by hand into nonsense: fail its runs
                unreadable = [int(r.id) for r in runs if r.schedule_id == row.id]
                conn.execute(
                    schedule_runs.update()
                    .where(c.id.in_(unreadable))
                    .values(
                        status="failed",
                        error=f"the schedule cannot be read: {exc.message}",
                        finished_at=now,
                        **leases.CLEARED,
                    )
                )
                alerts.record_failed_runs(conn, unreadable, now)
        claimed = [
            ClaimedRun(
                int(r.id),
                r.slot,
                int(r.attempt),
                bool(r.manual),
                by_id[r.schedule_id],
                r.lease_expires_at,
                r.created_at,
            )
            for r in sorted(runs, key=lambda r: (r.slot, r.id))
            if r.schedule_id in by_id
        ]
        return claimed, len(dead) + len(runs) - len(claimed)

    return db.transaction(work)


Outcome = Literal["succeeded", "failed", "lost"]


@dataclass(frozen=True)
class RunResult:
    outcome: Outcome  # lost: the lease passed to another process; it finishes the run
    messages: int = 0
    error: str | None = None
    reason_code: str | None = None  # of a failed run: MISSING_RECIPIENT or REPORT_FAILED


def execute_run(
    db: Database, settings: Settings, run: ClaimedRun, owner: str, clock: Clock
) -> RunResult:
    """Produce a claimed run's report, then enqueue its messages and mark it done.

    A run of a schedule without recipients whose kind needs them (a row stored before
    create and update refused that, or edited by hand) fails with MISSING_RECIPIENT,
    without producing the report and without retries: a run is never recorded
    succeeded with nothing delivered.
    """
    schedule = run.schedule
    try:
        missing = not schedule.recipients and reports.needs_recipients(schedule.kind)
        if not missing:
            account = db.transaction(
                functools.partial(account_name, account_id=schedule.account_id), read_only=True
            )
            reports.check_account(settings, schedule.kind, schedule.params, account)
        report = None if missing else reports.produce_report(settings, schedule, run.slot)
    except Exception as exc:  # a report kind's failure, whatever it is, fails the run
        text = exc.message if isinstance(exc, SchedctlError) else f"{type(exc).__name__}: {exc}"
        # A plugin's own exception (a network error, say) may pass; a ReportFailed says.
        failed = exc if isinstance(exc, reports.ReportFailed) else None
        # An account not allowed the query (ValidationError) stays so until the config
        # changes: no retries.
        retryable = failed.retryable if failed else not isinstance(exc, ValidationError)
        reason = (failed.reason if failed else None) or REPORT_FAILED
        return _record_failure(
            db, settings, run, owner, clock(), text, retryable=retryable, reason=reason
        )
    if report is None:
        error = (
            f"{MISSING_RECIPIENT}: the schedule has no recipients"
            f" (add them with `schedctl schedules update {schedule.id} --to EMAIL`)"
        )
        return _record_failure(
            db, settings, run, owner, clock(), error, retryable=False, reason=MISSING_RECIPIENT
        )
    now = clock()
    # A report is not mailed once the schedule's lateness bound has passed (SPEC §12).
    # A run recorded after that bound (a backfill: tick skips such slots) was asked for
    # explicitly, so its bound counts from when it was recorded.
    lateness = run.schedule.max_lateness
    expires_at = None
    if lateness is not None:
        bound = run.slot + lateness
        expires_at = bound if run.created_at <= bound else run.created_at + lateness
    items = [
        outbox.NewMessage(
            account_id=run.schedule.account_id,
            type="REPORT",
            recipient=recipient,
            subject=report.subject,
            body_text=report.text,
            body_html=report.html,
            attachments=report.attachments,
            send_at=now,
            idempotency_key=f"schedule-run:{run.id}:{recipient}",
            subscription=True,
            schedule_run_id=run.id,
            expires_at=expires_at,
        )
        for recipient in run.schedule.recipients
    ]
    domain = outbox.mail_domain(settings.mail_from)

    def finish(conn: sa.Connection) -> int | Literal["lost", "gone"]:
        # If the lease expired and another process claimed the run, this process's
        # result is dropped and the new owner's stands; if the run is gone (its
        # schedule was deleted while it ran), there is nothing to record it in.
        if not _finish_run(conn, run, owner, status="succeeded", finished_at=now, error=None):
            return "lost" if _still_there(conn, run) else "gone"
        return len(outbox.enqueue(conn, items, now=now, domain=domain))

    enqueued = db.transaction(finish)
    if enqueued == "lost":
        log.warning("run %s: lease lost to another process; its result was dropped", run.id)
        return RunResult("lost")
    if enqueued == "gone":
        log.info("run %s: its schedule was deleted while it ran; nothing is sent", run.id)
        return RunResult("lost")
    return RunResult("succeeded", messages=enqueued)


def _still_there(conn: sa.Connection, run: ClaimedRun) -> bool:
    c = schedule_runs.c
    return conn.execute(sa.select(c.id).where(c.id == run.id)).first() is not None


def _finish_run(conn: sa.Connection, run: ClaimedRun, owner: str, **values: Any) -> bool:
    """Record a run's outcome, only if it is still running under ``owner``'s lease."""
    c = schedule_runs.c
    done = leases.finish(
        conn, schedule_runs, owner, c.id == run.id, c.status == "running", **values
    )
    return done == 1


def _record_failure(
    db: Database,
    settings: Settings,
    run: ClaimedRun,
    owner: str,
    now: datetime,
    text: str,
    *,
    retryable: bool,
    reason: str = REPORT_FAILED,
) -> RunResult:
    """Record a run failed: retried after a backoff unless it is not ``retryable``
    (it would fail the same way) or this was its last attempt."""
    error = settings.redact(" ".join(text.split()))[:MAX_ERROR_LENGTH]
    final = run.attempt >= MAX_ATTEMPTS or not retryable
    retry_at = None if final else now + RETRY_BACKOFF * 2 ** (run.attempt - 1)

    def record(conn: sa.Connection) -> None:
        done = _finish_run(
            conn, run, owner, status="failed", error=error, finished_at=now,
            next_attempt_at=retry_at,
        )  # fmt: skip
        if done and final:
            alerts.record_failed_runs(conn, [run.id], now)

    db.transaction(record)
    when = "no more retries" if retry_at is None else f"retry after {retry_at.isoformat()}"
    log.warning(
        "schedule %s run %s failed (attempt %d of %d, %s): %s",
        run.schedule.id, run.id, run.attempt, MAX_ATTEMPTS, when, error,
    )  # fmt: skip
    return RunResult("failed", error=error, reason_code=reason)


def release_runs(db: Database, claimed: Sequence[ClaimedRun], owner: str) -> None:
    """Give back leased runs not started, as if never claimed, for any process to take."""
    c = schedule_runs.c
    db.transaction(
        lambda conn: leases.release(
            conn,
            schedule_runs,
            [r.id for r in claimed],
            owner,
            c.status == "running",
            status="queued",
            attempt=c.attempt - 1,
            started_at=None,
        )
    )


def execute_due_runs(
    db: Database, settings: Settings, clock: Clock, owner: str, limit: int | None = None
) -> TickCounts:
    """Claim runnable runs a few at a time and execute them, until none is left.

    A batch shares one claim transaction; a run whose lease is half gone before it
    starts (the reports before it were slow) is released rather than started late.
    """
    counts = TickCounts()
    counts.runs_skipped += skip_paused_runs(db, clock())
    attempted = 0
    while limit is None or attempted < limit:
        size = CLAIM_BATCH if limit is None else min(CLAIM_BATCH, limit - attempted)
        claimed, given_up = claim_runs(db, clock(), owner, size)
        counts.runs_failed += given_up
        if not claimed:
            if given_up:
                continue
            break
        for index, run in enumerate(claimed):
            if leases.half_spent(run.lease_expires_at, RUN_LEASE, clock()):
                release_runs(db, claimed[index:], owner)
                break
            attempted += 1
            result = execute_run(db, settings, run, owner, clock)
            if result.outcome == "succeeded":
                counts.runs_succeeded += 1
                counts.messages_enqueued += result.messages
            elif result.outcome == "failed":
                counts.runs_failed += 1
    return counts


def run_schedules(
    db: Database,
    settings: Settings,
    now: datetime,
    limit: int | None = None,
    *,
    owner: str | None = None,
) -> dict[str, int]:
    """The tick's schedule step: materialise due runs, then execute runnable ones.

    ``limit`` bounds both the schedules materialised and the runs executed. Returns
    counts: due, runs_created, runs_skipped, runs_succeeded, runs_failed,
    messages_enqueued, schedules_invalid.
    """
    owner = owner or leases.new_owner()
    clock = leases.clock_from(now)
    counts = materialise_due(db, now, limit)
    counts.add(execute_due_runs(db, settings, clock, owner, limit))
    return counts.as_dict()


# --- manual runs and history ---------------------------------------------------------


def run_schedule_now(
    db: Database, settings: Settings, account_id: int, schedule_id: int, now: datetime
) -> tuple[int, str]:
    """Run one schedule of ``account_id`` now as a manual run (NotFound if it has none).

    Records a run with ``manual`` set and slot ``now`` (``next_run_at`` does not
    move; a paused schedule runs too), produces its report and enqueues one REPORT
    message per recipient, sent at ``now``, exactly as a tick would. Returns
    ``(run_id, reason_code)``:

    - ``ENQUEUED``: the report was made and its messages are in the outbox;
    - ``MISSING_RECIPIENT``: the schedule has no recipients; the run is recorded
      failed, without retries;
    - ``REPORT_FAILED``: the run is recorded failed with its error; later ticks
      retry it like any failed run, unless the error says retrying cannot help.
    """
    owner = leases.new_owner()
    clock = leases.clock_from(now)

    def start(conn: sa.Connection) -> ClaimedRun:
        schedule = Schedule.from_row(get_owned(conn, schedules, schedule_id, account_id))
        # Created already leased to this process, so no tick can claim it meanwhile.
        run_id = conn.execute(
            schedule_runs.insert()
            .values(
                account_id=account_id,
                schedule_id=schedule_id,
                slot=now,
                manual=True,
                status="running",
                attempt=1,
                started_at=now,
                created_at=now,
                **leases.held(owner, now + RUN_LEASE),
            )
            .returning(schedule_runs.c.id)
        ).scalar_one()
        last = max(now, schedule.last_run_at) if schedule.last_run_at else now
        conn.execute(
            schedules.update()
            .where(schedules.c.id == schedule_id, schedules.c.account_id == account_id)
            .values(last_run_at=last)
        )
        return ClaimedRun(int(run_id), now, 1, True, schedule, now + RUN_LEASE, now)

    run = db.transaction(start)
    result = execute_run(db, settings, run, owner, clock)
    if result.outcome != "succeeded":
        return run.id, result.reason_code or REPORT_FAILED
    return run.id, ENQUEUED


@dataclass(frozen=True)
class ManualRun:
    """What `send-now --schedule` did: the run, and each of its messages' outcome."""

    run_id: int
    reason_code: str  # SENT, or the run's or the first failed message's reason code
    messages: tuple[tuple[int, SendNowResult], ...] = ()

    @property
    def ok(self) -> bool:
        return self.reason_code == "SENT"

    @property
    def temporary(self) -> bool:
        """The first failed message found the mail server unreachable: safe to rerun."""
        failed = [r for _, r in self.messages if not r.ok]
        return bool(failed) and failed[0].temporary


def send_schedule_now(
    db: Database, settings: Settings, account_id: int, schedule_id: int
) -> ManualRun:
    """`send-now --schedule ID`: run the schedule now, then send its messages at once.

    The run is made as by run_schedule_now; each message it enqueued is then sent as
    by `send-now MESSAGE_ID` (never to a suppressed address). The caller scopes ``db``
    to ``account_id`` (row-level security); every query here also filters by it.
    """
    from schedctl.delivery.dispatch import check_recording_privileges, send_now

    check_recording_privileges(db)  # before the run is made and its mail queued
    run_id, reason = run_schedule_now(db, settings, account_id, schedule_id, db.now())
    if reason != ENQUEUED:
        return ManualRun(run_id, reason)
    query = (
        sa.select(messages.c.id)
        .where(messages.c.schedule_run_id == run_id, messages.c.account_id == account_id)
        .order_by(messages.c.id)
    )
    ids = db.transaction(lambda conn: list(conn.execute(query).scalars()), read_only=True)
    results = tuple(
        (
            int(i),
            send_now(db, settings, int(i), db.now(), account_id=account_id, grants_checked=True),
        )
        for i in ids
    )
    failed = [r for _, r in results if not r.ok]
    return ManualRun(run_id, failed[0].reason_code if failed else "SENT", results)


@dataclass(frozen=True)
class RunRecord:
    """One row of a schedule's run history."""

    id: int
    slot: datetime
    status: str
    manual: bool
    attempt: int
    started_at: datetime | None
    finished_at: datetime | None
    error: str | None

    @property
    def duration_s(self) -> float | None:
        """How long the last attempt took, in seconds (to the millisecond); None while
        it runs, for a run that never started (skipped, still queued) or was skipped
        after an attempt (paused), and when unknown: its process died."""
        if self.status not in ("succeeded", "failed") or (self.error or "").startswith(ORPHANED):
            return None
        if self.started_at is None or self.finished_at is None:
            return None
        seconds = (self.finished_at - self.started_at).total_seconds()
        return round(seconds, 3) if seconds >= 0 else None

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": str(self.id),
            "slot": self.slot,
            "status": self.status,
            "manual": self.manual,
            "attempt": self.attempt,
            "started_at": self.started_at,
            "finished_at": self.finished_at,
            "duration_s": self.duration_s,
            "error": self.error,
        }


def run_history(db: Database, account_id: int, schedule_id: int, limit: int) -> list[RunRecord]:
    """A schedule's runs, newest slot first (NotFound if not in this account)."""
    c = schedule_runs.c

    def work(conn: sa.Connection) -> list[RunRecord]:
        get_owned(conn, schedules, schedule_id, account_id, columns=[schedules.c.id])
        rows = conn.execute(
            sa.select(schedule_runs)
            .where(c.schedule_id == schedule_id, c.account_id == account_id)
            .order_by(c.slot.desc(), c.id.desc())
            .limit(limit)
        ).all()
        return [
            RunRecord(
                int(r.id),
                r.slot,
                r.status,
                bool(r.manual),
                int(r.attempt),
                r.started_at,
                r.finished_at,
                r.error,
            )
            for r in rows
        ]

    return db.transaction(work, read_only=True)
