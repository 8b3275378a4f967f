"""The daily quota through `schedctl tick`: several processes, alerts once (SPEC §5)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from delivery_helpers import T0, all_messages, enqueue_all, message, run_ticks
from smtp_server import SmtpServer

NEXT_DAY = datetime(2026, 11, 19, tzinfo=UTC)


def block_fields(blocks: list[dict[str, Any]]) -> dict[str, str]:
    """The ``*Label*\\nvalue`` fields of a Slack alert's section blocks, as a dict."""
    fields = [f["text"] for b in blocks if b["type"] == "section" for f in b.get("fields", [])]
    return {label.strip("*"): value for label, value in (f.split("\n", 1) for f in fields)}


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

    payloads = [json.loads(body) for _, _, body in http_server.requests]
    alerts = [p["text"] for p in payloads]
    assert sorted(a.split(":")[0] for a in alerts) == [
        "Mail quota at 100%", "Mail quota at 80%", "Mail quota at 90%"
    ]  # fmt: skip
    # Text + Block Kit blocks, with the numbers of the day the threshold was crossed.
    day = T0.date().isoformat()
    assert sorted((block_fields(p["blocks"]) for p in payloads), key=lambda f: int(f["Used"])) == [
        {"Used": str(used), "Limit": "10", "Threshold": f"{t}%", "Day": day}
        for t, used in [(80, 8), (90, 9), (100, 10)]
    ]
    assert all(path == "/services/T0/B0/secret" for _, path, _ in http_server.requests)
