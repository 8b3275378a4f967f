"""The daily quota: atomic check-and-increment, deferral, give-back, alerts once."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from delivery_helpers import T0, all_messages, enqueue_all, message
from smtp_server import SmtpServer

from schedctl import quota
from schedctl.config import Settings
from schedctl.db.database import Database
from schedctl.db.schema import quota_alerts, send_counters
from schedctl.dispatch import dispatch_due

DAY = quota.quota_day(T0)
NEXT_DAY = datetime(2026, 11, 19, tzinfo=UTC)


def dispatch(db_url: str, settings: Settings, at: datetime = T0) -> dict[str, int]:
    with Database(db_url) as db:
        return dispatch_due(db, settings, at)


def block_fields(blocks: list[dict[str, Any]]) -> dict[str, str]:
    """The ``*Label*\\nvalue`` fields of a Slack alert's section blocks, as a dict."""
    fields = [f["text"] for b in blocks if b["type"] == "section" for f in b.get("fields", [])]
    return {label.strip("*"): value for label, value in (f.split("\n", 1) for f in fields)}


def test_reserve_counts_up_to_the_limit_and_settles_in_sent_or_back(db_url: str) -> None:
    def reserve(day: str = DAY) -> quota.Reservation | None:
        return db.transaction(lambda conn: quota.reserve(conn, day, 3))

    def counter() -> tuple[int, int]:
        row = db.transaction(
            lambda conn: conn.execute(
                sa.select(send_counters.c.sent, send_counters.c.reserved).where(
                    send_counters.c.day == DAY
                )
            ).one()
        )
        return int(row.sent), int(row.reserved)

    with Database(db_url) as db:
        taken = [reserve() for _ in range(4)]
        held = counter()
        first, second, third, _ = taken
        assert first is not None
        assert second is not None
        assert third is not None
        sent = db.transaction(lambda conn: quota.use(conn, first))
        db.transaction(lambda conn: quota.release(conn, second))
        after = counter()
        again = reserve()
        other_day = reserve("2026-11-19")

    assert [t is not None for t in taken] == [True, True, True, False]
    assert held == (0, 3)
    assert sent == 1
    assert after == (1, 1)  # one sent, one still held (the third), one given back
    assert again == quota.Reservation(DAY, 3)
    assert other_day == quota.Reservation("2026-11-19", 3)


def test_at_the_limit_normal_mail_waits_for_the_next_day_and_critical_goes(
    db_url: str, smtp: SmtpServer
) -> None:
    ids = enqueue_all(
        db_url,
        [message(n) for n in range(3)] + [message(9, priority="critical", type="ALERT")],
    )
    settings = Settings(daily_quota=2, **smtp.settings())

    today = dispatch(db_url, settings)
    deferred = [m for m in all_messages(db_url) if m.status == "scheduled"]
    tomorrow = dispatch(db_url, settings, NEXT_DAY)

    assert (today["messages_sent"], today["messages_deferred"]) == (3, 1)
    [waiting] = deferred
    assert (waiting.reason_code, waiting.send_at, waiting.attempts) == (
        "QUOTA_DEFERRED", NEXT_DAY, 0
    )  # fmt: skip
    assert tomorrow["messages_sent"] == 1
    assert len(smtp.message_ids) == 4
    assert {m.status for m in all_messages(db_url)} == {"sent"}
    assert ids


def test_a_message_the_server_refused_gives_its_unit_back(db_url: str) -> None:
    with SmtpServer(data_replies=["550 5.1.1 No such user"]) as smtp:
        enqueue_all(db_url, [message(1), message(2)])
        counts = dispatch(db_url, Settings(daily_quota=1, **smtp.settings()))

    assert (counts["messages_failed"], counts["messages_sent"]) == (1, 1)
    with Database(db_url) as db:
        assert db.transaction(lambda conn: quota.used(conn, DAY)) == 1


def test_alerts_at_80_90_100_percent_once_each_by_webhook_and_mail(
    db_url: str, smtp: SmtpServer, http_server: Any
) -> None:
    enqueue_all(db_url, [message(n) for n in range(12)])
    settings = Settings(
        daily_quota=10,
        slack_webhook_url=f"{http_server.url}/hooks/secret-path",
        file_tables={"messages": {"alert_to": ["ops@example.com"], "batch_size": 4}},
        **smtp.settings(),
    )

    first = dispatch(db_url, settings)
    second = dispatch(db_url, settings, T0 + timedelta(hours=1))

    payloads = [json.loads(body) for _, _, body in http_server.requests]
    posts = [p["text"] for p in payloads]
    assert [p.split(":")[0] for p in posts] == [
        "Mail quota at 80%", "Mail quota at 90%", "Mail quota at 100%"
    ]  # fmt: skip
    assert "8 of 10" in posts[0]
    assert "10 of 10" in posts[2]
    assert [block_fields(p["blocks"]) for p in payloads] == [
        {"Used": str(used), "Limit": "10", "Threshold": f"{t}%", "Day": DAY}
        for t, used in [(80, 8), (90, 9), (100, 10)]
    ]
    assert [p["blocks"][0] for p in payloads] == [
        {"type": "header", "text": {"type": "plain_text", "text": f"Mail quota at {t}%"}}
        for t in (80, 90, 100)
    ]
    alert_mail = [m for m in all_messages(db_url) if m.type == "ALERT"]
    assert sorted(m.subject for m in alert_mail) == [
        f"schedctl: mail quota at {t}% on {DAY}" for t in (100, 80, 90)
    ]
    assert all(m.status == "sent" and m.priority == "critical" for m in alert_mail)
    assert first["messages_sent"] == 10 + 3
    assert first["messages_deferred"] == 2
    assert second["messages_sent"] == 0
    with Database(db_url) as db:
        recorded = db.scalar(sa.select(sa.func.count()).select_from(quota_alerts))
    assert recorded == 3


@pytest.mark.parametrize("dialect", ["sqlite"])
def test_a_failing_webhook_never_fails_dispatch(
    db_url: str, smtp: SmtpServer, closed_port: int
) -> None:
    enqueue_all(db_url, [message(n) for n in range(4)])
    settings = Settings(
        daily_quota=5, slack_webhook_url=f"http://127.0.0.1:{closed_port}/hook", **smtp.settings()
    )

    counts = dispatch(db_url, settings)  # 4 of 5: the 80 % alert, posted to nowhere

    assert counts["messages_sent"] == 4
    with Database(db_url) as db:
        assert db.scalar(sa.select(quota_alerts.c.threshold)) == 80
