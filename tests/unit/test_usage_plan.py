"""The usage snapshot's pure decisions: which days, and how a stored day changes."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest

from schedctl.errors import ValidationError
from schedctl.usage import plan_day, snapshot_days

NOW = datetime(2026, 11, 18, 2, 30, tzinfo=UTC)
KEEP = timedelta(days=90)


def test_by_default_yesterday_and_today() -> None:
    assert snapshot_days(NOW, None, KEEP) == [date(2026, 11, 17), date(2026, 11, 18)]


def test_a_requested_day_within_the_log_retention() -> None:
    assert snapshot_days(NOW, date(2026, 8, 21), KEEP) == [date(2026, 8, 21)]
    with pytest.raises(ValidationError, match="older than the email_log retention"):
        snapshot_days(NOW, date(2026, 8, 20), KEEP)  # partly purged already
    with pytest.raises(ValidationError, match="after today"):
        snapshot_days(NOW, date(2026, 11, 19), KEEP)


def test_new_and_changed_totals_are_written_and_vanished_ones_removed() -> None:
    stored = {(1, "REPORT", "sent"): 2, (1, "REPORT", "retry"): 1, (2, "ALERT", "sent"): 5}
    counted = {(1, "UNKNOWN", "sent"): 2, (1, "REPORT", "retry"): 1, (2, "ALERT", "sent"): 6}
    change = plan_day(stored, counted)
    assert change.write == {(1, "UNKNOWN", "sent"): 2, (2, "ALERT", "sent"): 6}
    assert change.remove == {(1, "REPORT", "sent")}
    assert change.kept_accounts == set()
    assert change.rows == 3


def test_nothing_changed_nothing_to_write() -> None:
    same = {(1, "REPORT", "sent"): 2}
    assert plan_day(same, dict(same)).rows == 0


def test_an_account_whose_log_shrank_is_kept_the_others_updated() -> None:
    stored = {(1, "REPORT", "sent"): 3, (2, "REPORT", "sent"): 1}
    counted = {(1, "REPORT", "sent"): 1, (2, "REPORT", "sent"): 2}
    change = plan_day(stored, counted)
    assert change.kept_accounts == {1}
    assert change.write == {(2, "REPORT", "sent"): 2}
    assert change.remove == set()
    assert plan_day(stored, {}).kept_accounts == {1, 2}  # a purged day: nothing removed
