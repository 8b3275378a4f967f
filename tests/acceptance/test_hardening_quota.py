"""Hardening (issue 7): the daily quota counts mail handed over, and is opt-in.

`schedctl tick` runs as a subprocess against a real SMTP server on loopback (or a
closed port: the server is down) and a real HTTP server standing in for Slack.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
import sqlalchemy as sa
from delivery_helpers import T0, all_messages, bulk_insert, enqueue_all, message
from smtp_server import SmtpServer

from schedctl import quota
from schedctl.db.database import Database
from schedctl.db.schema import quota_alerts, send_counters
from support.cli import run_cli
from support.http_server import ScriptedHTTPServer

DAY = quota.quota_day(T0)


def tick(db_url: str, env: dict[str, str], expect: int = 0) -> dict[str, Any]:
    result = run_cli("tick", "--json", db_url=db_url, env={**env, "SCHEDCTL_NOW": T0.isoformat()})
    assert result.returncode == expect, result.stderr
    return json.loads(result.stdout) if result.stdout.strip() else {}


def down(port: int) -> dict[str, str]:
    """Mail settings for an SMTP server that is down (nothing listens on ``port``)."""
    return {
        "SCHEDCTL_MAIL_BACKEND": "smtp",
        "SCHEDCTL_SMTP_HOST": "127.0.0.1",
        "SCHEDCTL_SMTP_PORT": str(port),
        "SCHEDCTL_SMTP_TLS": "none",
        "SCHEDCTL_SMTP_TIMEOUT": "5",
        "SCHEDCTL_MAIL_FROM": "schedctl@example.com",
    }


def quota_env(limit: int, slack: ScriptedHTTPServer) -> dict[str, str]:
    return {
        "SCHEDCTL_DAILY_QUOTA": str(limit),
        "SCHEDCTL_SLACK_WEBHOOK_URL": f"{slack.url}/services/T0/B0/hook",
    }


def used_and_alerts(db_url: str) -> tuple[int, list[int], list[str]]:
    """(the day's counter, alert thresholds recorded, ALERT e-mails queued)."""
    with Database(db_url) as db:

        def read(conn: sa.Connection) -> tuple[int, list[int]]:
            thresholds = conn.execute(sa.select(quota_alerts.c.threshold).order_by("threshold"))
            return quota.used(conn, DAY), [int(t) for (t,) in thresholds]

        used, thresholds = db.transaction(read, read_only=True)
    alert_mail = [m.subject for m in all_messages(db_url) if m.type == "ALERT"]
    return used, thresholds, alert_mail


def posted(slack: ScriptedHTTPServer) -> list[tuple[str, str, str]]:
    """(threshold, used, limit) of each Slack alert, from its Block Kit fields."""
    result = []
    for _, _, body in slack.requests:
        fields = [
            f["text"]
            for b in json.loads(body)["blocks"]
            if b["type"] == "section"
            for f in b.get("fields", [])
        ]
        values = dict(f.split("\n", 1) for f in fields)
        result.append((values["*Threshold*"], values["*Used*"], values["*Limit*"]))
    return result


# --- 4. Budget only for mail handed over; alerts follow the real count ----------------


def test_server_down_with_3_of_5_used_posts_no_alert_and_keeps_3(
    db_url: str, http_server: ScriptedHTTPServer, closed_port: int
) -> None:
    settings = quota_env(5, http_server)
    enqueue_all(db_url, [message(n) for n in range(3)])
    with SmtpServer() as smtp:
        assert tick(db_url, {**smtp.env, **settings})["messages_sent"] == 3
    enqueue_all(db_url, [message(3)])

    tick(db_url, {**down(closed_port), **settings}, expect=75)

    assert http_server.requests == []
    assert used_and_alerts(db_url) == (3, [], [])

    # When the server is back, the fourth goes out and the 80 % alert tells the truth.
    with SmtpServer() as smtp:
        assert tick(db_url, {**smtp.env, **settings})["messages_sent"] == 1
    assert posted(http_server) == [("80%", "4", "5")]
    assert used_and_alerts(db_url)[:2] == (4, [80])


@pytest.mark.parametrize(
    ("server", "exit_code"),
    [
        ("down", 75),
        ("550 5.1.1 No such user", 1),  # refused permanently
        ("451 4.3.0 Try again later", 0),  # refused for now: retried later
    ],
)
def test_quota_of_1_with_nothing_handed_over_fires_no_alert(
    db_url: str, http_server: ScriptedHTTPServer, closed_port: int, server: str, exit_code: int
) -> None:
    enqueue_all(db_url, [message(1)])
    settings = quota_env(1, http_server)

    if server == "down":
        tick(db_url, {**down(closed_port), **settings}, expect=exit_code)
    else:
        with SmtpServer(data_replies=[server]) as smtp:
            tick(db_url, {**smtp.env, **settings}, expect=exit_code)

    assert http_server.requests == []
    assert used_and_alerts(db_url) == (0, [], [])


def test_the_alerts_carry_the_count_of_mail_handed_over(
    db_url: str, http_server: ScriptedHTTPServer
) -> None:
    """Refused mail takes no budget: 4 of 5 handed over is 80 %, never 90 or 100 %."""
    enqueue_all(db_url, [message(n) for n in range(6)])
    refused = {
        "user1@example.org": "550 5.1.1 No such user",
        "user5@example.org": "451 4.2.0 Mailbox busy",  # the last one: would be the 5th
    }
    with SmtpServer(rcpt_replies=refused) as smtp:
        counts = tick(db_url, {**smtp.env, **quota_env(5, http_server)}, expect=1)
        accepted = len(smtp.message_ids)

    assert (counts["messages_sent"], counts["messages_failed"], accepted) == (4, 1, 4)
    assert posted(http_server) == [("80%", "4", "5")]
    assert used_and_alerts(db_url)[:2] == (4, [80])


# --- 5. The daily quota is opt-in: unset means no quota -------------------------------


def test_without_a_configured_quota_300_due_messages_all_go(
    db_url: str, http_server: ScriptedHTTPServer
) -> None:
    bulk_insert(db_url, 300)
    slack = {"SCHEDCTL_SLACK_WEBHOOK_URL": f"{http_server.url}/services/T0/B0/hook"}
    with SmtpServer() as smtp:
        counts = tick(db_url, {**smtp.env, **slack})
        received = smtp.id_counts()

    assert (counts["messages_sent"], counts["messages_deferred"]) == (300, 0)
    assert len(received) == 300
    assert set(received.values()) == {1}
    assert {m.status for m in all_messages(db_url)} == {"sent"}
    assert http_server.requests == []
    assert used_and_alerts(db_url) == (0, [], [])
    with Database(db_url) as db:
        assert db.scalar(sa.select(sa.func.count()).select_from(send_counters)) == 0
