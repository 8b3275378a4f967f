"""`tick`: the every-minute job (SPEC §4, §7).

One tick materialises due schedule runs and executes them (their messages go to the
outbox), plans event messages, turns critical notifications into messages, then
dispatches due messages. Each step is safe to run concurrently on any number of
hosts and to kill at any point.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from schedctl import leases, quarantine
from schedctl.config import Settings
from schedctl.db.database import Database
from schedctl.delivery.dispatch import check_delivery_settings, dispatch_due
from schedctl.events import plan_event_messages
from schedctl.notifications import queue_critical_notifications
from schedctl.schedules.runs import run_schedules


def run_tick(
    db: Database, settings: Settings, now: datetime, limit: int | None = None
) -> dict[str, Any]:
    """Run every tick step at ``now``; returns the tick's counts (SPEC §11 keys first).

    ``limit`` bounds the schedules materialised and the runs executed.
    """
    counts: dict[str, Any] = {
        "due": 0,
        "runs_created": 0,
        "runs_skipped": 0,
        "messages_sent": 0,
        "messages_failed": 0,
        "messages_deferred": 0,
    }
    clock = leases.clock_from(now)
    check_delivery_settings(settings)  # a configuration error stops the tick before any write
    # 1. Schedules: materialise due runs, execute them (report -> outbox).
    counts.update(run_schedules(db, settings, now, limit))

    # 2. Events: plan event messages (INIT, reminders).
    found = quarantine.Found()  # rows set aside as unreadable (schedctl.quarantine)
    counts["messages_planned"] = plan_event_messages(db, settings, now, found)

    # 3. Critical notifications: one message each, sent by the dispatch below.
    counts["notifications_queued"] = queue_critical_notifications(db, settings, now, found)
    counts["quarantined"] = found.total
    found.warn("tick")

    # 4. Dispatch due messages, including those enqueued by steps 1-3 (their send
    #    time is the tick's clock, so dispatch looks at the time that has passed since).
    counts.update(dispatch_due(db, settings, clock()))
    return counts


def tick_failed(counts: dict[str, Any]) -> bool:
    """Whether some items failed in this tick (exit 1: recorded, retried per policy)."""
    return bool(
        counts.get("runs_failed") or counts.get("messages_failed") or counts.get("quarantined")
    )
