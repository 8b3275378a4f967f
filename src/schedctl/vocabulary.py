"""Closed sets of values the command line names before the database layer is loaded.

Help texts and exit codes need them at start-up, and `schedctl --help` must not pay
for importing SQLAlchemy to print them; the core modules that own these values
(outbox, suppressions, heartbeat) take them from here.
"""

from __future__ import annotations

MESSAGE_STATUSES = ("scheduled", "paused", "blocked", "retrying", "sent", "failed", "skipped")
SUPPRESSION_REASONS = ("manual", "unsubscribe", "bounce")
# `heartbeat --check` exit codes, the monitoring-plugin convention.
CHECK_EXIT = {"green": 0, "yellow": 1, "red": 2, "unknown": 3}
# How many slots `schedules next -n` and `users next -n` list at most.
MAX_LISTED_SLOTS = 1000
