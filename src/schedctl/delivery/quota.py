"""The daily send quota and its 80/90/100 % alerts (SPEC §5).

The quota is opt-in: with ``daily_quota`` unset there is no budget, no counting and
no alert. When set, it is ``daily_quota`` normal sends per UTC day; critical mail
never consumes it. Each day has one ``send_counters`` row: ``sent``, the normal mail
handed over to the server, and ``reserved``, the units held by sends in progress.

A normal send first reserves one unit with one guarded statement (``reserved + 1``
only while ``sent + reserved`` is below the limit), so any number of dispatchers on
any number of hosts can never exceed it. The transaction that records the outcome
settles the reservation: mail the server accepted (or may have accepted: an
``unknown`` outcome) moves to ``sent``; mail it did not accept (4xx, 5xx, provider
deferral, server down, a configuration error) gives the unit back. Alerts follow
``sent`` only, so mail that was never handed over never raises one.

A process killed between the reservation and the record (or a database outage in
that window) leaves its unit reserved until the end of that UTC day: the budget can
only err towards sending less, never more, and ``sent`` (what alerts report) stays
exact. The message itself is claimed again once its lease runs out and reserves a
fresh unit. A past day's leftover reservations are inert (each day has its own row);
``reconcile`` gives them back, so the day's row ends with what was really sent.
(Tying each unit to its message instead would let a re-claim reuse it, at the cost
of settling it on every path that can touch such a message; not worth one unit.)

A threshold's alert is recorded by whichever dispatcher first inserts its ``(day,
threshold)`` row into ``quota_alerts`` (the record of the thresholds each day
reached), in the transaction that recorded the send that reached it: an alert
``quota:<day>:<threshold>`` (schedctl.alerts), with the used, limit, threshold and
day as its details. So each threshold is alerted once per day however many
dispatchers run; the command's end tells the configured channels (``[alerts]``),
and a failing channel never fails the job.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import sqlalchemy as sa

from schedctl import alerts
from schedctl.config import Settings
from schedctl.db import dialect
from schedctl.db.schema import quota_alerts, send_counters

log = logging.getLogger("schedctl.delivery.quota")

THRESHOLDS = (80, 90, 100)


def quota_day(instant: datetime) -> str:
    """The quota's day for an instant: its UTC date, ``YYYY-MM-DD``."""
    return instant.astimezone(UTC).date().isoformat()


def next_day_start(instant: datetime) -> datetime:
    """Midnight UTC after ``instant``: when a deferred normal message is due again."""
    day = instant.astimezone(UTC).date() + timedelta(days=1)
    return datetime(day.year, day.month, day.day, tzinfo=UTC)


def daily_limit(settings: Settings) -> int | None:
    """The day's budget of normal sends, or None: no quota (``daily_quota`` unset)."""
    return settings.daily_quota


@dataclass(frozen=True)
class Reservation:
    """One unit of a day's budget, held by a send in progress until its outcome."""

    day: str
    limit: int


# The statements every send runs (a reservation, then its use or release), built once
# with their values bound per execution: building one costs more than running it.
_counter = send_counters.c
_RESERVE = (
    send_counters.update()
    .where(
        _counter.day == sa.bindparam("_day"),
        _counter.sent + _counter.reserved < sa.bindparam("_limit"),
    )
    .values(reserved=_counter.reserved + 1)
)
_USE = (
    send_counters.update()
    .where(_counter.day == sa.bindparam("_day"))
    .values(
        sent=_counter.sent + 1,
        reserved=sa.case((_counter.reserved > 0, _counter.reserved - 1), else_=0),
    )
    .returning(_counter.sent)
)
_RELEASE = (
    send_counters.update()
    .where(_counter.day == sa.bindparam("_day"), _counter.reserved > 0)
    .values(reserved=_counter.reserved - 1)
)


def reserve(conn: sa.Connection, day: str, limit: int) -> Reservation | None:
    """Reserve one unit of ``day``'s budget for a send; None when it is used up."""
    guarded = {"_day": day, "_limit": limit}
    # One statement decides: PostgreSQL re-checks the WHERE on a row another
    # dispatcher just updated, and SQLite's writers take turns.
    if not conn.execute(_RESERVE, guarded).rowcount:
        if limit < 1:
            return None
        created = dialect.insert_ignore(
            conn, send_counters, [{"day": day, "sent": 0, "reserved": 1}], ["day"],
            returning=[_counter.day],
        )  # fmt: skip
        # Not created: the day's row is at the limit, or a concurrent dispatcher made it.
        if not created and not conn.execute(_RESERVE, guarded).rowcount:
            return None
    return Reservation(day, limit)


def use(conn: sa.Connection, reservation: Reservation) -> int:
    """The reservation's mail was handed over: count it as sent; the day's sent count."""
    value = conn.execute(_USE, {"_day": reservation.day}).scalar()
    return int(value or 0)


def release(conn: sa.Connection, reservation: Reservation) -> None:
    """Give back a reserved unit whose mail the server did not accept."""
    conn.execute(_RELEASE, {"_day": reservation.day})


def release_past_reservations(conn: sa.Connection, today: str, *, dry_run: bool = False) -> int:
    """Give back the units still reserved on days before ``today``: each is a send
    whose process died before recording its outcome. Safe at any time -- no send
    reserves a unit of a past day, and a late :func:`use` or :func:`release` of one
    never goes below zero -- and it leaves ``sent`` exact. Returns the units."""
    counter = send_counters.c
    stale = sa.and_(counter.day < today, counter.reserved > 0)
    if dry_run:
        value = conn.execute(sa.select(sa.func.sum(counter.reserved)).where(stale)).scalar()
        return int(value or 0)
    # (Today's cannot be told from sends in progress: a unit records no process.)
    held = conn.execute(
        sa.select(counter.day, counter.reserved).where(stale).with_for_update(skip_locked=True)
    )
    units: dict[str, int] = {str(day): int(n) for day, n in held}
    if units:
        conn.execute(send_counters.update().where(counter.day.in_(units)).values(reserved=0))
    return sum(units.values())


def used(conn: sa.Connection, day: str) -> int:
    """Normal mail handed over on ``day`` (reservations in progress not included)."""
    value = conn.execute(sa.select(send_counters.c.sent).where(send_counters.c.day == day))
    return int(value.scalar() or 0)


def remaining(conn: sa.Connection, day: str, limit: int) -> int:
    """What is left of ``day``'s budget (neither sent nor reserved); reserves nothing."""
    counter = send_counters.c
    taken = conn.execute(
        sa.select(counter.sent + counter.reserved).where(counter.day == day)
    ).scalar()
    return max(0, limit - int(taken or 0))


def thresholds_reached(count: int, limit: int) -> list[int]:
    """The alert thresholds (percent) that ``count`` of ``limit`` has reached."""
    if limit <= 0:
        return []
    return [t for t in THRESHOLDS if count * 100 >= t * limit]


def quota_alert(day: str, threshold: int, used: int, limit: int) -> alerts.Alert:
    """The alert for ``threshold`` percent of the day's quota, ``used`` of ``limit``."""
    if threshold >= 100:
        consequence = (
            "The quota is exhausted: normal mail is deferred to the next day."
            " Critical mail is still sent."
        )
    else:
        consequence = "At the limit, normal mail will be deferred to the next day."
    return alerts.Alert(
        alerts.QUOTA,
        f"{alerts.QUOTA}:{day}:{threshold}",
        f"Mail quota at {threshold}%: {used} of {limit} normal sends used on {day}. {consequence}",
        details={"Used": str(used), "Limit": str(limit), "Threshold": f"{threshold}%", "Day": day},
    )


def claim_alerts(
    conn: sa.Connection,
    day: str,
    thresholds: Iterable[int],
    count: int,
    limit: int,
    now: datetime,
) -> list[int]:
    """Record the given thresholds as reached on ``day`` unless a dispatcher already
    did, with their alerts; the thresholds this caller recorded.

    ``count`` is the day's sent count (:func:`use`) that reached them.
    """
    reached: list[int] = []
    for threshold in thresholds:
        inserted = dialect.insert_ignore(
            conn,
            quota_alerts,
            [{"day": day, "threshold": threshold, "sent_at": now}],
            ["day", "threshold"],
            returning=[quota_alerts.c.threshold],
        )
        if inserted:
            reached.append(threshold)
    alerts.record(conn, [quota_alert(day, t, count, limit) for t in reached], now)
    return reached
