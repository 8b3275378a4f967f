"""The daily quota through `schedctl tick`: several processes, alerts once (SPEC §5)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from test_dispatch_concurrency import run_ticks

from delivery_helpers import all_messages, enqueue_all, message
from smtp_server import SmtpServer

NEXT_DAY = datetime(2026, 11, 19, tzinfo=UTC)


@pytest.fixture
def smtp() -> Iterator[SmtpServer]:
    with SmtpServer() as server:
        yield server


def test_quota_of_10_with_15_normal_and_2_critical(
    db_url: str, smtp: SmtpServer, http_server: Any
) -> None:
    enqueue_all(
        db_url,
        [message(n) for n in range(15)]
        + [message(100 + n, priority="critical", type="ALERT") for n in range(2)],
    )
    env = {
        **smtp.env,
        "SCHEDCTL_DAILY_QUOTA": "10",
        "SCHEDCTL_SLACK_WEBHOOK_URL": f"{http_server.url}/services/T0/B0/secret",
    }

    day_one = run_ticks(4, db_url, env)
    sent_day_one = smtp.id_counts()
    waiting = [m for m in all_messages(db_url) if m.status == "scheduled"]
    day_two = run_ticks(2, db_url, {**env, "SCHEDCTL_NOW": NEXT_DAY.isoformat()})

    assert sum(r["messages_sent"] for r in day_one) == 12
    assert sum(r["messages_deferred"] for r in day_one) == 5
    assert sum(sent_day_one.values()) == 12
    assert len(waiting) == 5
    assert {(m.priority, m.reason_code, m.send_at) for m in waiting} == {
        ("normal", "QUOTA_DEFERRED", NEXT_DAY)
    }
    assert sum(r["messages_sent"] for r in day_two) == 5
    assert set(smtp.id_counts().values()) == {1}
    assert len(smtp.id_counts()) == 17

    alerts = [json.loads(body)["text"] for _, _, body in http_server.requests]
    assert sorted(a.split(":")[0] for a in alerts) == [
        "Mail quota at 100%", "Mail quota at 80%", "Mail quota at 90%"
    ]  # fmt: skip
    assert all(path == "/services/T0/B0/secret" for _, path, _ in http_server.requests)
