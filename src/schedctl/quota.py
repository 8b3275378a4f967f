"""The daily send quota and its 80/90/100 % alerts (SPEC §5).

The budget is ``daily_quota`` normal sends per UTC day (0 = unlimited); critical mail
never consumes it. Each normal send first takes one unit with a single atomic
check-and-increment statement, so any number of dispatchers on any number of hosts
can never exceed it. A unit is given back when the server did not accept the message
(4xx, 5xx, provider deferral), never after an ``unknown`` outcome.

An alert for a threshold is sent by whichever dispatcher first inserts its
``(day, threshold)`` row into ``quota_alerts``; the insert commits before the alert
goes out, so each alert is sent at most once per day however many dispatchers run
(a process killed between the insert and the post loses that one alert). Alerts go
to the Slack webhook (``slack_webhook_url``; text plus Block Kit blocks with the used,
limit, threshold and day) and as ALERT e-mails to ``[messages] alert_to``; a failing
webhook is logged and never fails the job.
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
from schedctl.outbox import NewMessage, enqueue, mail_domain

log = logging.getLogger("schedctl.quota")

THRESHOLDS = (80, 90, 100)


def quota_day(instant: datetime) -> str:
    """The quota's day for an instant: its UTC date, ``YYYY-MM-DD``."""
    return instant.astimezone(UTC).date().isoformat()


def next_day_start(instant: datetime) -> datetime:
    """Midnight UTC after ``instant``: when a deferred normal message is due again."""
    day = instant.astimezone(UTC).date() + timedelta(days=1)
    return datetime(day.year, day.month, day.day, tzinfo=UTC)


def take(conn: sa.Connection, day: str, limit: int) -> int | None:
    """Take one unit of ``day``'s budget; the count now used, or None when exhausted."""
    return dialect.increment_below(conn, send_counters.c.sent, {"day": day}, limit)


def give_back(conn: sa.Connection, day: str) -> None:
    """Return one unit taken for a message the server did not accept."""
    conn.execute(
        send_counters.update()
        .where(send_counters.c.day == day, send_counters.c.sent > 0)
        .values(sent=send_counters.c.sent - 1)
    )


def used(conn: sa.Connection, day: str) -> int:
    value = conn.execute(sa.select(send_counters.c.sent).where(send_counters.c.day == day))
    return int(value.scalar() or 0)


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
        from schedctl.delivery.templating import render_pair  # jinja2 on demand

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
    now: datetime,
) -> list[QuotaAlert]:
    """Record the given thresholds' alerts for ``day`` unless a dispatcher already did.

    Returns the alerts this caller now owns (to post after commit) and enqueues their
    ALERT e-mails in the same transaction.
    """
    limit = settings.daily_quota
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
            owned.append(QuotaAlert(day, threshold, min(count, limit), limit))
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
        from schedctl.delivery.templating import render_pair  # jinja2 on demand

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
            from schedctl.delivery.webhook import post_slack_alert

            post_slack_alert(settings.slack_webhook_url, alert.text, alert.blocks)
