"""Catch-up decisions for missed slots: pure functions, no database."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from schedctl.cadence import make_cadence
from schedctl.schedules.catchup import NONE_GRACE, SlotDecision, decide_slots, plan_schedule
from schedctl.schedules.model import Schedule

NOW = datetime(2026, 6, 4, 12, 0, tzinfo=UTC)
MISSED = [datetime(2026, 6, d, 9, 0, tzinfo=UTC) for d in (1, 2, 3, 4)]


def ran(decisions: list[SlotDecision]) -> list[int]:
    return [d.slot.day for d in decisions if d.run]


def test_latest_runs_only_the_newest_missed_slot() -> None:
    decisions = decide_slots(MISSED, "latest", None, NOW)
    assert ran(decisions) == [4]
    assert [d.reason for d in decisions if not d.run] == ["missed; catch-up policy latest"] * 3


def test_all_runs_every_missed_slot_oldest_first() -> None:
    assert ran(decide_slots(MISSED, "all", None, NOW)) == [1, 2, 3, 4]


def test_none_runs_nothing_that_is_older_than_the_grace() -> None:
    assert ran(decide_slots(MISSED, "none", None, NOW)) == []
    just_due = [*MISSED, NOW - NONE_GRACE]
    assert [d.slot for d in decide_slots(just_due, "none", None, NOW) if d.run] == [just_due[-1]]
    too_late = [NOW - NONE_GRACE - timedelta(seconds=1)]
    assert ran(decide_slots(too_late, "none", None, NOW)) == []


@pytest.mark.parametrize("policy", ["latest", "all", "none"])
def test_max_lateness_skips_slots_whatever_the_policy(policy: str) -> None:
    decisions = decide_slots([*MISSED, NOW], policy, timedelta(hours=2), NOW)
    assert [d.slot for d in decisions if d.run] == [NOW]
    assert {d.reason for d in decisions[:4]} == {"later than max-lateness"}


def test_nothing_missed_nothing_decided() -> None:
    assert decide_slots([], "all", None, NOW) == []


def _schedule(next_run_at: datetime, catchup: str) -> Schedule:
    return Schedule(
        id=1, account_id=1, name="s", kind="sql",
        cadence=make_cadence("daily", at="09:00"), recipients=(), params={}, active=True,
        catchup=catchup, max_lateness=None, next_run_at=next_run_at, last_run_at=None,
        created_at=NOW, updated_at=NOW,
    )  # fmt: skip


def test_plan_starts_at_next_run_at_and_moves_past_now() -> None:
    decisions, next_run_at = plan_schedule(_schedule(MISSED[1], "all"), NOW)
    assert [d.slot for d in decisions] == MISSED[1:]
    assert next_run_at == datetime(2026, 6, 5, 9, 0, tzinfo=UTC)


def test_plan_with_a_next_run_at_that_is_not_a_slot_runs_nothing_early() -> None:
    # e.g. the cadence was edited by hand: only real slots of the cadence run
    decisions, next_run_at = plan_schedule(_schedule(NOW - timedelta(minutes=30), "all"), NOW)
    assert decisions == []
    assert next_run_at == datetime(2026, 6, 5, 9, 0, tzinfo=UTC)
