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

An alert for a threshold is sent by whichever dispatcher first inserts its
``(day, threshold)`` row into ``quota_alerts``, in the transaction that recorded the
send that reached it; the insert commits before the alert goes out, so each alert
is sent at most once per day however many dispatchers run (a process killed between
the commit and the post loses that one alert). Alerts go to the Slack webhook
(``slack_webhook_url``; text plus Block Kit blocks with the used, limit, threshold
and day) and as ALERT e-mails to ``[messages] alert_to``; a failing webhook is
logged and never fails the job.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa

from schedctl.accounts import resolve_account
from schedctl.config import Settings
from schedctl.db import dialect
from schedctl.db.schema import quota_alerts, send_counters
from schedctl.delivery.outbox import NewMessage, enqueue, mail_domain

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


def reserve(conn: sa.Connection, day: str, limit: int) -> Reservation | None:
    """Reserve one unit of ``day``'s budget for a send; None when it is used up."""
    counter = send_counters.c
    guarded = (
        send_counters.update()
        .where(counter.day == day, counter.sent + counter.reserved < limit)
        .values(reserved=counter.reserved + 1)
    )
    # One statement decides: PostgreSQL re-checks the WHERE on a row another
    # dispatcher just updated, and SQLite's writers take turns.
    if not conn.execute(guarded).rowcount:
        if limit < 1:
            return None
        created = dialect.insert_ignore(
            conn, send_counters, [{"day": day, "sent": 0, "reserved": 1}], ["day"],
            returning=[counter.day],
        )  # fmt: skip
        # Not created: the day's row is at the limit, or a concurrent dispatcher made it.
        if not created and not conn.execute(guarded).rowcount:
            return None
    return Reservation(day, limit)


def use(conn: sa.Connection, reservation: Reservation) -> int:
    """The reservation's mail was handed over: count it as sent; the day's sent count."""
    counter = send_counters.c
    value = conn.execute(
        send_counters.update()
        .where(counter.day == reservation.day)
        .values(
            sent=counter.sent + 1,
            reserved=sa.case((counter.reserved > 0, counter.reserved - 1), else_=0),
        )
        .returning(counter.sent)
    ).scalar()
    return int(value or 0)


def release(conn: sa.Connection, reservation: Reservation) -> None:
    """Give back a reserved unit whose mail the server did not accept."""
    counter = send_counters.c
    conn.execute(
        send_counters.update()
        .where(counter.day == reservation.day, counter.reserved > 0)
        .values(reserved=counter.reserved - 1)
    )


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


@dataclass(frozen=True)
class QuotaAlert:
    day: str
    threshold: int
    used: int
    limit: int

    @property
    def text(self) -> str:
        from schedctl.render import render_pair  # jinja2 on demand

        return render_pair("quota_alert", **self.context())[0].strip()

    @property
    def blocks(self) -> list[dict[str, Any]]:
        """Slack Block Kit blocks: a header, the numbers as fields, what happens next."""
        consequence = (
            "The quota is exhausted: normal mail is deferred to the next day."
            " Critical mail is still sent."
            if self.threshold >= 100
            else "At the limit, normal mail will be deferred to the next day."
        )
        numbers = [
            ("Used", str(self.used)),
            ("Limit", str(self.limit)),
            ("Threshold", f"{self.threshold}%"),
            ("Day", self.day),
        ]
        return [
            {
                "type": "header",
                "text": {"type": "plain_text", "text": f"Mail quota at {self.threshold}%"},
            },
            {
                "type": "section",
                "fields": [{"type": "mrkdwn", "text": f"*{k}*\n{v}"} for k, v in numbers],
            },
            {"type": "context", "elements": [{"type": "mrkdwn", "text": consequence}]},
        ]

    def context(self) -> dict[str, object]:
        """The quota_alert template's context."""
        return {
            "threshold": self.threshold,
            "used": self.used,
            "limit": self.limit,
            "day": self.day,
        }


def claim_alerts(
    conn: sa.Connection,
    settings: Settings,
    alert_to: tuple[str, ...],
    day: str,
    thresholds: Iterable[int],
    count: int,
    limit: int,
    now: datetime,
) -> list[QuotaAlert]:
    """Record the given thresholds' alerts for ``day`` unless a dispatcher already did.

    ``count`` is the day's sent count (:func:`use`) that reached them. Returns the
    alerts this caller now owns (to post after commit) and enqueues their ALERT
    e-mails in the same transaction.
    """
    owned: list[QuotaAlert] = []
    for threshold in thresholds:
        inserted = dialect.insert_ignore(
            conn,
            quota_alerts,
            [{"day": day, "threshold": threshold, "sent_at": now}],
            ["day", "threshold"],
            returning=[quota_alerts.c.threshold],
        )
        if inserted:
            owned.append(QuotaAlert(day, threshold, count, limit))
    if owned and alert_to:
        _enqueue_alert_mail(conn, settings, alert_to, owned, now)
    return owned


def _enqueue_alert_mail(
    conn: sa.Connection,
    settings: Settings,
    alert_to: tuple[str, ...],
    alerts: list[QuotaAlert],
    now: datetime,
) -> None:
    account_id = resolve_account(conn, None)
    items = []
    for alert in alerts:
        from schedctl.render import render_pair  # jinja2 on demand

        text, html = render_pair("quota_alert", **alert.context())
        for address in alert_to:
            items.append(
                NewMessage(
                    account_id=account_id,
                    type="ALERT",
                    recipient=address,
                    subject=f"schedctl: mail quota at {alert.threshold}% on {alert.day}",
                    body_text=text,
                    body_html=html,
                    send_at=now,
                    # Critical: an alert about the quota must not wait for the quota.
                    priority="critical",
                    idempotency_key=f"quota-alert:{alert.day}:{alert.threshold}:{address}",
                )
            )
    enqueue(conn, items, now=now, domain=mail_domain(settings.mail_from))


def post_alerts(settings: Settings, alerts: list[QuotaAlert]) -> None:
    """Post owned alerts to Slack; a failure is logged by the webhook module only."""
    if not alerts:
        return
    for alert in alerts:
        log.warning("mail quota at %d%%: %d of %d used", alert.threshold, alert.used, alert.limit)
        if settings.slack_webhook_url:
            from schedctl.webhook import post_slack_alert

            post_slack_alert(settings.slack_webhook_url, alert.text, alert.blocks)
