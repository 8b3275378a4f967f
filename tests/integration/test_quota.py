"""The daily quota (SPEC §5): atomic check-and-increment, deferral, give-back, alerts
once; it counts mail handed over and is opt-in. Through `dispatch_due`, through
`schedctl tick` in this process, and as several `tick` processes at once.

The alerts go through schedctl.alerts: recorded by the send that reaches a threshold,
told at the end of the command, one notification per channel listing them (a Slack
section per alert, the numbers as its fields; one ALERT mail per address)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa

from schedctl import alerts
from schedctl.config import Settings
from schedctl.db.database import Database
from schedctl.db.schema import quota_alerts, send_counters
from schedctl.delivery import quota
from schedctl.delivery.dispatch import dispatch_due
from support.cli import CliRunner
from support.delivery import T0, all_messages, bulk_insert, enqueue_all, message, run_ticks
from support.http_server import ScriptedHTTPServer
from support.smtp_server import SmtpServer

DAY = quota.quota_day(T0)
NEXT_DAY = datetime(2026, 11, 19, tzinfo=UTC)


def dispatch(db_url: str, settings: Settings, at: datetime = T0) -> dict[str, int]:
    with Database(db_url) as db:
        return dispatch_due(db, settings, at)


def tell(db_url: str, settings: Settings, at: datetime = T0) -> dict[str, int]:
    """What the end of a job command at ``at`` does: tell the channels the new alerts."""
    with Database(db_url, environ={"SCHEDCTL_NOW": at.isoformat()}) as db:
        return alerts.notify(db, settings)


def quota_fields(payloads: list[dict[str, Any]]) -> list[dict[str, str]]:
    """The ``*Label*\\nvalue`` fields of each quota alert's section, in every Slack
    notification, as dicts (the sections of other alerts carry no fields)."""
    found = []
    for payload in payloads:
        for block in payload["blocks"]:
            fields = [f["text"] for f in block.get("fields", [])]
            if block["type"] == "section" and fields:
                found.append(
                    {label.strip("*"): value for label, value in (f.split("\n", 1) for f in fields)}
                )
    return found


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
        alerts_mail_to=("ops@example.com",),
        messages_batch_size=4,
        **smtp.settings(),
    )

    first = dispatch(db_url, settings)
    told = tell(db_url, settings)
    # The ALERT mail telling queued goes out with the next dispatch, quota or not.
    second = dispatch(db_url, settings, T0 + timedelta(hours=1))
    told_again = tell(db_url, settings, T0 + timedelta(hours=1))

    assert told == {"mail": 3, "slack": 3}
    [payload] = [json.loads(body) for _, _, body in http_server.requests]
    assert payload["text"].splitlines()[0] == "schedctl: 3 new alerts"
    assert [line.split(":")[0] for line in payload["text"].splitlines()[1:]] == [
        "• [quota] Mail quota at 80%", "• [quota] Mail quota at 90%", "• [quota] Mail quota at 100%"
    ]  # fmt: skip
    assert "8 of 10" in payload["text"].splitlines()[1]
    assert "10 of 10" in payload["text"].splitlines()[3]
    assert quota_fields([payload]) == [
        {"Used": str(used), "Limit": "10", "Threshold": f"{t}%", "Day": DAY}
        for t, used in [(80, 8), (90, 9), (100, 10)]
    ]
    assert payload["blocks"][0] == {
        "type": "header", "text": {"type": "plain_text", "text": "schedctl: 3 new alerts"}
    }  # fmt: skip
    [alert_mail] = [m for m in all_messages(db_url) if m.type == "ALERT"]
    assert alert_mail.subject == "schedctl: 3 new alerts"
    assert all(f"Mail quota at {t}%" in alert_mail.body_text for t in (80, 90, 100))
    assert (alert_mail.recipient, alert_mail.priority) == ("ops@example.com", "critical")
    assert alert_mail.status == "sent"
    assert (first["messages_sent"], first["messages_deferred"]) == (10, 2)
    assert second["messages_sent"] == 1  # the ALERT mail; the normal two wait for tomorrow
    assert told_again == {}
    assert len(http_server.requests) == 1
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


# --- Through `schedctl tick`: only mail handed over counts; the quota is opt-in -------


def tick(cli: CliRunner, db_url: str, env: dict[str, str], expect: int = 0) -> dict[str, Any]:
    result = cli("tick", "--json", db_url=db_url, env={**env, "SCHEDCTL_NOW": T0.isoformat()})
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
    """(threshold, used, limit) of each quota alert told to Slack, from its fields."""
    payloads = [json.loads(body) for _, _, body in slack.requests]
    return [(f["Threshold"], f["Used"], f["Limit"]) for f in quota_fields(payloads)]


def test_server_down_with_3_of_5_used_posts_no_alert_and_keeps_3(
    cli: CliRunner, db_url: str, http_server: ScriptedHTTPServer, closed_port: int
) -> None:
    settings = quota_env(5, http_server)
    enqueue_all(db_url, [message(n) for n in range(3)])
    with SmtpServer() as smtp:
        assert tick(cli, db_url, {**smtp.env, **settings})["messages_sent"] == 3
    enqueue_all(db_url, [message(3)])

    tick(cli, db_url, {**down(closed_port), **settings}, expect=75)

    assert http_server.requests == []
    assert used_and_alerts(db_url) == (3, [], [])

    # When the server is back, the fourth goes out and the 80 % alert tells the truth.
    with SmtpServer() as smtp:
        assert tick(cli, db_url, {**smtp.env, **settings})["messages_sent"] == 1
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
    cli: CliRunner,
    db_url: str,
    http_server: ScriptedHTTPServer,
    closed_port: int,
    server: str,
    exit_code: int,
) -> None:
    enqueue_all(db_url, [message(1)])
    settings = quota_env(1, http_server)

    if server == "down":
        tick(cli, db_url, {**down(closed_port), **settings}, expect=exit_code)
    else:
        with SmtpServer(data_replies=[server]) as smtp:
            tick(cli, db_url, {**smtp.env, **settings}, expect=exit_code)

    # No quota alert (a refused message is told as what it is: a failed message).
    assert posted(http_server) == []
    assert used_and_alerts(db_url) == (0, [], [])


def test_the_alerts_carry_the_count_of_mail_handed_over(
    cli: CliRunner, db_url: str, http_server: ScriptedHTTPServer
) -> None:
    """Refused mail takes no budget: 4 of 5 handed over is 80 %, never 90 or 100 %."""
    enqueue_all(db_url, [message(n) for n in range(6)])
    refused = {
        "user1@example.org": "550 5.1.1 No such user",
        "user5@example.org": "451 4.2.0 Mailbox busy",  # the last one: would be the 5th
    }
    with SmtpServer(rcpt_replies=refused) as smtp:
        counts = tick(cli, db_url, {**smtp.env, **quota_env(5, http_server)}, expect=1)
        accepted = len(smtp.message_ids)

    assert (counts["messages_sent"], counts["messages_failed"], accepted) == (4, 1, 4)
    assert posted(http_server) == [("80%", "4", "5")]
    assert used_and_alerts(db_url)[:2] == (4, [80])


def test_without_a_configured_quota_300_due_messages_all_go(
    cli: CliRunner, db_url: str, http_server: ScriptedHTTPServer
) -> None:
    bulk_insert(db_url, 300)
    slack = {"SCHEDCTL_SLACK_WEBHOOK_URL": f"{http_server.url}/services/T0/B0/hook"}
    with SmtpServer() as smtp:
        counts = tick(cli, db_url, {**smtp.env, **slack})
        received = smtp.id_counts()

    assert (counts["messages_sent"], counts["messages_deferred"]) == (300, 0)
    assert len(received) == 300
    assert set(received.values()) == {1}
    assert {m.status for m in all_messages(db_url)} == {"sent"}
    assert http_server.requests == []
    assert used_and_alerts(db_url) == (0, [], [])
    with Database(db_url) as db:
        assert db.scalar(sa.select(sa.func.count()).select_from(send_counters)) == 0


# --- Several `tick` processes at once: alerts once ---------------------------------


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

    # Whichever tick recorded a threshold, its end (or another's) told it: once.
    payloads = [json.loads(body) for _, _, body in http_server.requests]
    lines = [line for p in payloads for line in p["text"].splitlines()[1:]]
    assert sorted(line.split(":")[0] for line in lines) == [
        "• [quota] Mail quota at 100%", "• [quota] Mail quota at 80%", "• [quota] Mail quota at 90%"
    ]  # fmt: skip
    # Text + Block Kit blocks, with the numbers of the day the threshold was crossed.
    day = T0.date().isoformat()
    assert sorted(quota_fields(payloads), key=lambda f: int(f["Used"])) == [
        {"Used": str(used), "Limit": "10", "Threshold": f"{t}%", "Day": day}
        for t, used in [(80, 8), (90, 9), (100, 10)]
    ]
    assert all(path == "/services/T0/B0/secret" for _, path, _ in http_server.requests)


def test_several_connections_keep_the_quota_exact(db_url: str, smtp: SmtpServer) -> None:
    """Four connections reserve units at once: exactly the quota goes out, the rest
    waits for the next day, every unit is settled, and the 80/90/100 % thresholds are
    each recorded once."""
    enqueue_all(db_url, [message(n) for n in range(30)])
    settings = Settings(daily_quota=10, messages_batch_size=2, **smtp.settings(smtp_connections=4))

    counts = dispatch(db_url, settings)

    assert len(smtp.peers) > 1
    assert (counts["messages_sent"], counts["messages_deferred"]) == (10, 20)
    assert len(smtp.message_ids) == 10
    waiting = [m for m in all_messages(db_url) if m.status == "scheduled"]
    assert {(m.reason_code, m.send_at) for m in waiting} == {("QUOTA_DEFERRED", NEXT_DAY)}
    assert len(waiting) == 20
    with Database(db_url) as db:
        sent, reserved = db.transaction(
            lambda conn: conn.execute(
                sa.select(send_counters.c.sent, send_counters.c.reserved)
            ).one()
        )
        reached = db.transaction(
            lambda conn: list(conn.execute(sa.select(quota_alerts.c.threshold)).scalars())
        )
    assert (sent, reserved) == (10, 0)
    assert sorted(reached) == [80, 90, 100]


def test_thresholds_crossed_at_once_are_one_warning_line(
    cli: CliRunner, db_url: str, http_server: ScriptedHTTPServer
) -> None:
    # A quota of 1 used up crosses 80, 90 and 100 % at once: three warning lines on
    # stderr (cron mailed each); each threshold is still its own alert.
    enqueue_all(db_url, [message(1)])
    with SmtpServer() as smtp:
        result = cli(
            "tick", db_url=db_url, env={**smtp.env, **quota_env(1, http_server),
                                        "SCHEDCTL_NOW": T0.isoformat()},
        )  # fmt: skip
    assert result.returncode == 0, result
    quota_lines = [line for line in result.stderr.splitlines() if "mail quota" in line]
    assert quota_lines == [f"schedctl: WARNING: mail quota at 100%: 1 of 1 used on {T0:%Y-%m-%d}"]
    assert used_and_alerts(db_url)[1] == [80, 90, 100]
