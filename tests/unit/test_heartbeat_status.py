from __future__ import annotations

from datetime import UTC, datetime

import pytest

from schedctl.config import load_settings
from schedctl.heartbeat import (
    CHECK_EXIT,
    NOTHING_TO_JUDGE,
    CommandHealth,
    classify,
    overall,
    overall_note,
)


@pytest.mark.parametrize(
    ("command", "age_s", "status"),
    [
        ("tick", None, "unknown"),
        ("tick", 0, "green"),
        ("tick", 14 * 60 + 59, "green"),
        ("tick", 15 * 60, "yellow"),
        ("tick", 60 * 60, "yellow"),
        ("tick", 60 * 60 + 1, "red"),
        ("reconcile", 20 * 3600, "green"),  # daily job: a day is normal
        ("reconcile", 30 * 3600, "yellow"),
        ("reconcile", 50 * 3600, "red"),
        ("schedules list", 16 * 60, "yellow"),
    ],
)
def test_classify(command: str, age_s: int | None, status: str) -> None:
    assert classify(age_s, command, load_settings({}, environ={})) == status


def health(status: str | None, monitored: bool = True) -> CommandHealth:
    return CommandHealth(
        "x",
        datetime(2026, 1, 1, tzinfo=UTC),
        0,
        status,
        None,
        None,
        monitored,  # type: ignore[arg-type]
    )


@pytest.mark.parametrize(
    ("statuses", "expected"),
    [
        (["green", "green"], "green"),
        (["green", "unknown"], "unknown"),
        (["unknown", "yellow"], "yellow"),
        (["yellow", "red", "green"], "red"),
        ([], "unknown"),
    ],
)
def test_overall_is_the_worst_monitored(statuses: list[str], expected: str) -> None:
    assert overall([health(s) for s in statuses]) == expected


def test_unmonitored_commands_do_not_change_overall() -> None:
    assert overall([health("green"), health(None, monitored=False)]) == "green"


def test_nothing_judged_is_unknown_and_says_why() -> None:
    shown = [health(None, monitored=False)]
    assert (overall(shown), overall_note(shown)) == ("unknown", NOTHING_TO_JUDGE)
    assert overall_note([health("green")]) is None


def test_check_exit_codes_follow_the_plugin_convention() -> None:
    assert CHECK_EXIT == {"green": 0, "yellow": 1, "red": 2, "unknown": 3}
