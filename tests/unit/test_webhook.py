"""Webhook helpers that need no server (the HTTP behaviour is in integration)."""

from __future__ import annotations

from datetime import UTC, datetime
from email.utils import format_datetime

import pytest

from schedctl.webhook import MAX_RETRY_AFTER, post_slack_alert, retry_after_seconds


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        (None, None),
        ("", None),
        ("0", 0.0),
        ("1", 1.0),
        (" 2.5 ", 2.5),
        ("-3", 0.0),
        ("120", MAX_RETRY_AFTER),
        ("nan", None),
        ("soon", None),
    ],
)
def test_retry_after_seconds(value: str | None, seconds: float | None) -> None:
    assert retry_after_seconds(value) == seconds


def test_retry_after_http_date() -> None:
    now = datetime(2025, 1, 6, 9, 0, 0, tzinfo=UTC)
    later = format_datetime(datetime(2025, 1, 6, 9, 0, 7, tzinfo=UTC), usegmt=True)
    assert retry_after_seconds(later, now=now.timestamp()) == 7.0


def test_unserialisable_blocks_are_false_not_an_error() -> None:
    assert post_slack_alert("http://127.0.0.1:9/x", "t", [{"bad": object()}]) is False
