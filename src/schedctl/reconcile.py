"""Reconcile: the nightly repair and housekeeping (SPEC §8, §11).

Run from cron once a night, after midnight UTC, as an operator over every account.
Its steps, in this order:

1. Usage snapshot (usage.py): each account's attempts of yesterday and today so far
   (or ``--date``) by message type and outcome into ``usage_history`` -- first, so
   the log it counts is not yet purged.
2. Leases whose process died: each kind of leased work (schedule runs, messages,
   distributions) goes through leases.recover, as the claims of tick and distribute
   do. Work under a live lease is never touched.
3. Quota units still reserved on past UTC days are given back
   (quota.release_past_reservations); today's cannot be told from sends in progress.
4. Purges past retention, oldest first, at most ``[reconcile] batch_size`` rows per
   transaction, so no table is held by one long transaction: digest days past their
   ``expires_at`` (``[digest] retention``) that can no longer be anyone's today,
   heartbeats (each command's newest run and newest success are kept, so
   ``heartbeat`` still judges a command that stopped), ``email_log`` rows, finished
   schedule runs and alerts (with what each channel was told); the distribution
   step purges stored plans.
5. The distribution step: recent distributions' target-group rows checked against
   the mirror (``--repair`` inserts what is missing). A no-op until the
   ``distributions`` table exists (see :func:`reconcile_distributions`). Rows left
   missing are an alert, ``mirror_missing:<UTC day>`` (schedctl.alerts), once a day.

Every step runs in short transactions of its own, so a run killed anywhere leaves
what it finished done and a rerun does the rest. Concurrent runs share the work: rows
are taken with SKIP LOCKED on PostgreSQL (SQLite's write lock serialises writers), so
each item is recovered, purged or repaired once. ``--dry-run`` counts what each step
would do, in read-only transactions, and writes nothing.

The clock: leases and retentions are judged against ``now``. A ``SCHEDCTL_NOW`` ahead
of the database's clock would take live leases for dead ones and purge early, so it
is refused (exit 2); a clock behind only makes reconcile do less.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import sqlalchemy as sa

from schedctl import alerts, leases, usage
from schedctl.config import Settings
from schedctl.db import dialect
from schedctl.db.database import Database
from schedctl.db.schema import (
    alerts as alert_rows,
)
from schedctl.db.schema import (
    digests,
    distribution_destinations,
    distributions,
    email_log,
    heartbeats,
    schedule_runs,
)
from schedctl.delivery import outbox, quota
from schedctl.distribute import endpoints, plan, store
from schedctl.errors import ValidationError
from schedctl.schedules import runs

log = logging.getLogger("schedctl.reconcile")

# How far ahead of the database's clock an injected SCHEDCTL_NOW may be (as heartbeat).
CLOCK_SKEW = timedelta(minutes=1)
# A digest day this close to today (UTC) may still be someone's today or, with
# catch_up_days, yesterday (zones run from UTC-12 to UTC+14): never purged.
DIGEST_DAYS_KEPT = timedelta(days=2)


@dataclass(frozen=True)
class ReconcileOptions:
    dry_run: bool = False
    repair: bool = False
    on_date: date | None = None  # the usage snapshot's day (default: yesterday and today)


def check_clock(db: Database, now: datetime) -> None:
    """Refuse (exit 2) a ``now`` ahead of the database's clock: with it, live leases
    would look expired and rows would be purged before their time."""
    server = db.transaction(dialect.server_now, read_only=True)
    if now > server + CLOCK_SKEW:
        raise ValidationError(
            f"SCHEDCTL_NOW ({now.isoformat()}) is ahead of the database's clock"
            f" ({server.isoformat(timespec='seconds')}): reconcile would take live leases"
            " for dead ones and purge early"
        )


# --- purges ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Purge:
    """Rows of one table past their retention at an instant."""

    name: str  # the report's key is ``{name}_purged``
    table: sa.Table
    age: sa.Column[Any]  # the indexed column they age by: purged oldest first
    past: Callable[[datetime], sa.ColumnElement[bool]]


@dataclass
class Purged:
    rows: int = 0
    batches: int = 0
    largest: int = 0  # rows in the largest batch


def purge(db: Database, what: Purge, now: datetime, batch: int, *, dry_run: bool) -> Purged:
    """Delete ``what``'s rows past retention, at most ``batch`` per transaction."""
    table = what.table
    if dry_run:
        query = sa.select(sa.func.count()).select_from(table).where(what.past(now))
        return Purged(rows=int(db.scalar(query) or 0))
    done = Purged()
    while True:
        deleted = db.transaction(functools.partial(purge_batch, what=what, now=now, batch=batch))
        if deleted:
            done.rows += deleted
            done.batches += 1
            done.largest = max(done.largest, deleted)
            log.debug("purged %d %s rows (%d so far)", deleted, what.name, done.rows)
        if deleted < batch:
            return done


def purge_batch(conn: sa.Connection, what: Purge, now: datetime, batch: int) -> int:
    """Delete up to ``batch`` of ``what``'s oldest rows past retention; how many. Rows
    another reconcile holds are its own (SKIP LOCKED)."""
    table = what.table
    oldest = (
        sa.select(table.c.id)
        .where(what.past(now))
        .order_by(what.age)
        .limit(batch)
        .with_for_update(skip_locked=True)
    )
    return int(conn.execute(table.delete().where(table.c.id.in_(oldest))).rowcount)


def purges(settings: Settings) -> list[Purge]:
    """Every purge but the distribution plans', in the order they run."""
    hb, runs_c = heartbeats.c, schedule_runs.c
    newest = sa.select(sa.func.max(hb.id)).group_by(hb.command)
    newest_success = newest.where(hb.outcome == "success")

    def digest_days(now: datetime) -> sa.ColumnElement[bool]:
        last_day = now.astimezone(UTC).date() - DIGEST_DAYS_KEPT
        return sa.and_(digests.c.expires_at <= now, digests.c.local_date < last_day)

    def heartbeat_rows(now: datetime) -> sa.ColumnElement[bool]:
        return sa.and_(
            hb.started_at < now - settings.reconcile_heartbeats_retention,
            hb.id.not_in(newest),
            hb.id.not_in(newest_success),
        )

    def logged_attempts(now: datetime) -> sa.ColumnElement[bool]:
        return email_log.c.attempted_at < now - settings.reconcile_email_log_retention

    def finished_runs(now: datetime) -> sa.ColumnElement[bool]:
        final = sa.or_(
            runs_c.status.in_(("succeeded", "skipped")),
            sa.and_(runs_c.status == "failed", runs_c.next_attempt_at.is_(None)),
        )
        return sa.and_(final, runs_c.finished_at < now - settings.reconcile_runs_retention)

    def old_alerts(now: datetime) -> sa.ColumnElement[bool]:
        return alert_rows.c.created_at < now - settings.reconcile_alerts_retention

    return [
        Purge("tracking", digests, digests.c.expires_at, digest_days),
        Purge("heartbeats", heartbeats, hb.started_at, heartbeat_rows),
        Purge("email_log", email_log, email_log.c.attempted_at, logged_attempts),
        Purge("runs", schedule_runs, runs_c.finished_at, finished_runs),
        Purge("alerts", alert_rows, alert_rows.c.created_at, old_alerts),
    ]


# --- distributions ----------------------------------------------------------------------

# Completed distributions of the last MIRROR_DAYS business dates are checked.
MIRROR_DAYS = 7


@dataclass(frozen=True)
class DistributionReport:
    """What the distribution step did."""

    # "checked" or "no mirror configured"
    state: str = "no mirror configured"
    recovered: int = 0  # days whose run died holding the lease, made free to resume
    plans: Purged | None = None  # stored plan rows deleted
    checked: int = 0  # target-group rows looked up in the mirror
    missing: int = 0  # of those, not in the mirror
    repaired: int = 0  # missing rows inserted (--repair)
    repaired_elsewhere: int = 0  # missing when checked, inserted by a concurrent repair


def reconcile_distributions(
    db: Database, settings: Settings, now: datetime, options: ReconcileOptions
) -> DistributionReport:
    """The distribution's share of reconcile: its leases, plan purge and mirror check.

    - a day whose run died holding its lease is freed (``store.LEASED_DAYS``); the
      next ``distribute`` resumes it from the stored plan;
    - the stored plans of completed days past their ``expires_at`` ([distribute]
      retention) are deleted, ``[reconcile] batch_size`` rows per transaction, by
      ``purge_expired_plans`` of the distribute store;
    - the mirror is checked (:func:`check_mirror`), and with ``--repair`` mended.
    """
    dry = options.dry_run
    batch = settings.reconcile_batch_size
    recovered = sum(recover_leases(db, store.LEASED_DAYS, now, None, batch, dry_run=dry))

    plans = Purged()
    if not dry:
        while True:
            deleted = int(db.transaction(lambda c: store.purge_expired_plans(c, now, batch)))
            if deleted:
                plans.rows += deleted
                plans.batches += 1
                plans.largest = max(plans.largest, deleted)
            if deleted < batch:
                break
    found = check_mirror(db, settings, now, repair=options.repair and not dry)
    if found is None:
        return DistributionReport("no mirror configured", recovered, plans)
    return DistributionReport("checked", recovered, plans, *found)


def check_mirror(
    db: Database, settings: Settings, now: datetime, *, repair: bool
) -> tuple[int, int, int, int] | None:
    """Look up every target-group row of the recent completed days' stored plans in
    the mirror table; with ``repair``, insert the missing ones. Returns (checked,
    missing, repaired, repaired elsewhere: found by the writer's check under the lock,
    put there by a concurrent repair), or None when no ``[distribute.mirror]`` is
    configured.

    A row is there when the mirror has its ID under one of its campaign's group ids,
    as the copy decides (`DestinationWriter.absent`: the mirror compares the IDs, as
    its ID column's type). The repair is the copy's own write -- the destination
    table's write lock, then check and insert -- so two runs repairing at once insert
    each row once. Days copied before the mirror was configured, or whose plan was
    purged, are not checked.
    """
    destination = settings.distribute_mirror
    if destination is None:
        return None
    days_table = distributions
    progress = distribution_destinations
    business_zone = settings.distribute_tz
    tz = ZoneInfo(business_zone)
    first_day = now.astimezone(tz).date() - timedelta(days=MIRROR_DAYS)
    recent = (
        sa.select(days_table.c.business_date)
        .where(
            days_table.c.status == "completed",
            days_table.c.purged_at.is_(None),
            days_table.c.business_date >= first_day,
            sa.exists().where(
                progress.c.distribution_id == days_table.c.id, progress.c.name == "mirror"
            ),
        )
        .order_by(days_table.c.business_date)
    )
    checked = missing = repaired = elsewhere = 0
    for business_date in db.transaction(functools.partial(_values, query=recent), read_only=True):
        read_day = functools.partial(store.read_day, business_date=business_date)
        day = db.transaction(read_day, read_only=True)
        if day is None or day.planned_at is None:  # deleted or never planned meanwhile
            continue
        stored = day.plan or {}
        zone = str(stored.get("tz") or business_zone)
        inserted_at = day.planned_at.astimezone(ZoneInfo(zone)).replace(tzinfo=None)
        fmt = str(stored["group_id_format"])
        group_ids = {
            c.id: [plan.group_id(fmt, c.id, i, g) for i, g in enumerate(stored["groups"], 1)]
            for c in day.campaigns()
        }
        extra_names = list(stored.get("extra_columns") or [])
        writer = endpoints.DestinationWriter(
            destination, zone, settings.db_retry_seconds, extra_names
        )
        try:
            for slot in store.destination_slots(day.slots(), "mirror"):
                for first in range(slot.first, slot.last + 1, settings.reconcile_batch_size):
                    upto = min(slot.last, first + settings.reconcile_batch_size - 1)
                    read = functools.partial(
                        store.read_plan_batch, day_id=day.id, first=first, last=upto
                    )
                    users = db.transaction(read, read_only=True)
                    batch = endpoints.Batch(
                        users.ids, users.extras, users.size,
                        slot.group_id, slot.campaign, inserted_at,
                    )  # fmt: skip
                    wanted = group_ids[slot.campaign.id]
                    absent = writer.absent(batch, wanted)
                    checked += len(batch)
                    missing += len(absent)
                    if repair and len(absent):
                        result = writer.write(absent, wanted)
                        repaired += int(result.inserted)
                        elsewhere += int(result.existing)
        finally:
            writer.close()
    return checked, missing, repaired, elsewhere


def _values(conn: sa.Connection, query: sa.Select[Any]) -> list[Any]:
    return list(conn.execute(query).scalars())


# --- the run ---------------------------------------------------------------------------


def run_reconcile(
    db: Database, settings: Settings, now: datetime, options: ReconcileOptions
) -> dict[str, Any]:
    """Run every step (see the module's docstring); the report, with SPEC §11's keys
    ``leases_recovered``, ``tracking_purged``, ``usage_snapshot``, ``mirror_missing``."""
    check_clock(db, now)
    dry = options.dry_run
    batch = settings.reconcile_batch_size
    days = usage.snapshot_days(now, options.on_date, settings.reconcile_email_log_retention)
    max_attempts = settings.messages_max_attempts

    snapshot = usage.take_snapshot(db, now, days, dry_run=dry)

    run_leases = recover_leases(db, runs.LEASED_RUNS, now, runs.MAX_ATTEMPTS, batch, dry_run=dry)
    messages = recover_leases(db, outbox.LEASED_MESSAGES, now, max_attempts, batch, dry_run=dry)
    today = quota.quota_day(now)
    released = db.transaction(
        functools.partial(quota.release_past_reservations, today=today, dry_run=dry),
        read_only=dry,
    )

    purged: dict[str, Purged] = {}
    for what in purges(settings):
        purged[what.name] = purge(db, what, now, batch, dry_run=dry)
    dist = reconcile_distributions(db, settings, now, options)
    if dist.plans is not None:
        purged["plans"] = dist.plans

    unrepaired = dist.missing - dist.repaired - dist.repaired_elsewhere
    if unrepaired > 0 and not dry:
        db.transaction(lambda conn: alerts.record(conn, [mirror_alert(now, dist)], now))

    recovered = sum(run_leases) + sum(messages) + dist.recovered
    report: dict[str, Any] = {
        "leases_recovered": recovered,
        "tracking_purged": purged["tracking"].rows,
        "usage_snapshot": snapshot.rows,
        "mirror_missing": dist.missing,
        "dry_run": dry,
        "usage_dates": [d.isoformat() for d in snapshot.days],
        "usage_accounts": snapshot.accounts,
        "usage_kept": snapshot.kept,
        "runs_retryable": run_leases[0],
        "runs_failed": run_leases[1],
        "messages_retrying": messages[0],
        "messages_failed": messages[1],
        "distributions_recovered": dist.recovered,
        "reservations_released": released,
        "heartbeats_purged": purged["heartbeats"].rows,
        "email_log_purged": purged["email_log"].rows,
        "runs_purged": purged["runs"].rows,
        "alerts_purged": purged["alerts"].rows,
        "plans_purged": dist.plans.rows if dist.plans else 0,
        "purge_batches": sum(p.batches for p in purged.values()),
        "largest_batch": max(p.largest for p in purged.values()),
        "distributions": dist.state,
        "mirror_checked": dist.checked,
        "mirror_repaired": dist.repaired,
        "mirror_repaired_elsewhere": dist.repaired_elsewhere,
    }
    return report


def mirror_alert(now: datetime, dist: DistributionReport) -> alerts.Alert:
    """The day's alert about target rows missing from the mirror."""
    day = now.astimezone(UTC).date().isoformat()
    repaired = dist.repaired + dist.repaired_elsewhere
    return alerts.Alert(
        alerts.MIRROR_MISSING,
        f"{alerts.MIRROR_MISSING}:{day}",
        f"{dist.missing - repaired} of {dist.checked} target rows of the last {MIRROR_DAYS}"
        " days' distributions are missing from the mirror"
        + (f" ({repaired} repaired)" if repaired else "; `schedctl reconcile --repair` adds them"),
    )


def recover_leases(
    db: Database,
    work: leases.LeasedWork,
    now: datetime,
    max_attempts: int | None,
    batch: int,
    *,
    dry_run: bool,
) -> tuple[int, int]:
    """``work`` whose process died, recovered a batch per transaction: (sent back to
    be retried, failed)."""
    if dry_run:
        return db.transaction(
            lambda conn: leases.count_expired(conn, work, now, max_attempts=max_attempts),
            read_only=True,
        )
    retried = failed = 0
    while True:
        done = db.transaction(
            lambda conn: leases.recover(conn, work, now, max_attempts=max_attempts, limit=batch)
        )
        retried += len(done.retried)
        failed += len(done.failed)
        if len(done.retried) + len(done.failed) < batch:
            return retried, failed


def reconcile_failed(report: dict[str, Any]) -> bool:
    """Exit 1: mirror rows are missing and were not repaired (by this run or by a
    concurrent one)."""
    repaired = report["mirror_repaired"] + report["mirror_repaired_elsewhere"]
    return bool(report["mirror_missing"] > repaired)
