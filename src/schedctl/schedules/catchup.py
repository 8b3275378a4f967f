"""Which missed slots a schedule runs after downtime: its catch-up policy (pure;
SPEC §4).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from schedctl.cadence import Cadence, next_slot, slots_between
from schedctl.schedules.model import Schedule

NONE_GRACE = timedelta(minutes=15)
MAX_CATCHUP_SLOTS = 100


_ONE_MICROSECOND = timedelta(microseconds=1)


if TYPE_CHECKING:
    pass


# --- catch-up decisions (pure) -------------------------------------------------------


@dataclass(frozen=True)
class SlotDecision:
    slot: datetime
    run: bool
    reason: str | None = None  # why a slot is skipped


def decide_slots(
    missed: Sequence[datetime], policy: str, max_lateness: timedelta | None, now: datetime
) -> list[SlotDecision]:
    """Which of the missed slots (oldest first, all <= now) run, and why others don't."""
    newest = missed[-1] if missed else None
    decisions = []
    for slot in missed:
        late = now - slot
        if max_lateness is not None and late > max_lateness:
            decisions.append(SlotDecision(slot, False, "later than max-lateness"))
        elif policy == "all":
            decisions.append(SlotDecision(slot, True))
        elif slot != newest:
            decisions.append(SlotDecision(slot, False, f"missed; catch-up policy {policy}"))
        elif policy == "none" and late > NONE_GRACE:
            decisions.append(SlotDecision(slot, False, "missed; catch-up policy none"))
        else:
            decisions.append(SlotDecision(slot, True))
    return decisions


def plan_schedule(schedule: Schedule, now: datetime) -> tuple[list[SlotDecision], datetime]:
    """The decisions for a due schedule's missed slots, and its next ``next_run_at``."""
    assert schedule.next_run_at is not None
    plan = _Planner(now).plan(
        schedule.cadence, schedule.next_run_at, schedule.catchup, schedule.max_lateness
    )
    return list(plan[0]), plan[1]


Plan = tuple[tuple[SlotDecision, ...], datetime]


class _Planner:
    """plan_schedule for one materialise pass, computed once per schedule definition.

    A plan is a pure function of the cadence, ``next_run_at``, the catch-up policy,
    ``max_lateness`` and now; the schedules due in one tick share a few of them
    (thousands of "daily at 09:00" in one zone, all due at the same slot), and the
    cadence arithmetic is most of the pass's Python time.
    """

    def __init__(self, now: datetime) -> None:
        self.now = now
        self._plans: dict[tuple[Any, ...], Plan] = {}

    def plan(
        self,
        cadence: Cadence,
        next_run_at: datetime,
        catchup: str,
        max_lateness: timedelta | None,
    ) -> Plan:
        key = (cadence, next_run_at, catchup, max_lateness)
        plan = self._plans.get(key)
        if plan is None:
            now = self.now
            # next_run_at is itself a slot; slots_between excludes its lower bound.
            missed = slots_between(
                cadence, next_run_at - _ONE_MICROSECOND, now, limit=MAX_CATCHUP_SLOTS
            )
            decisions = tuple(decide_slots(missed, catchup, max_lateness, now))
            plan = self._plans[key] = (decisions, next_slot(cadence, now))
        return plan
