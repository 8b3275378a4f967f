"""Message expiry (SPEC §12): a message not sent by its ``expires_at`` is skipped, EXPIRED.

Event messages expire at the event's start, a report run's at its slot + the schedule's
max_lateness; `send-now --force` and `messages edit --expires-at` are the ways around.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from typing import Any

import pytest
import sqlalchemy as sa

from schedctl.config import Settings, report_queries
from schedctl.db import migrations
from schedctl.db.database import Database
from schedctl.db.schema import events, messages, send_counters
from schedctl.delivery import quota
from schedctl.delivery.dispatch import dispatch_due
from schedctl.schedules import runs
from schedctl.schedules.model import ScheduleOptions
from schedctl.schedules.store import create_schedule
from support.cli import CliRunner
from support.delivery import T0, all_messages, enqueue_all, log_rows, message, one

START = datetime(2026, 11, 20, 9, 0, tzinfo=UTC)  # a Friday; the event is added at T0
ADD = ["events", "add", "--name", "Go-live", "--starts-at", START.isoformat(),
       "--contact", "host@example.org", "--json"]  # fmt: skip


def tick(cli: CliRunner, db_url: str, at: datetime, **env: str) -> dict[str, Any]:
    env = {"SCHEDCTL_NOW": at.isoformat(), "SCHEDCTL_MAIL_BACKEND": "memory", **env}
    result = cli("tick", "--json", db_url=db_url, env=env)
    assert result.returncode == 0, result.stderr
    return dict(result.json)


def add_event(cli: CliRunner, db_url: str) -> str:
    added = cli(*ADD, db_url=db_url, env={"SCHEDCTL_NOW": T0.isoformat()})
    assert added.returncode == 0, added.stderr
    return str(added.json["id"])


def by_type(db_url: str) -> dict[str, Any]:
    return {m.type: m for m in all_messages(db_url)}


def subjects(mailbox: list[EmailMessage]) -> list[str]:
    return [str(m["Subject"]) for m in mailbox]


# --- events -------------------------------------------------------------------------


def test_a_reminder_due_while_ticks_were_stopped_is_skipped_expired_after_the_event_starts(
    cli: CliRunner, db_url: str, mailbox: list[EmailMessage]
) -> None:
    add_event(cli, db_url)
    for at in [T0 + timedelta(minutes=1), START - timedelta(days=1), START - timedelta(hours=3)]:
        tick(cli, db_url, at)  # the INIT, the 1-day reminder, then ticks stop at 06:00
    before = subjects(mailbox)

    late = tick(cli, db_url, START + timedelta(minutes=40))

    assert before == ["Go-live: scheduled for Fri 2026-11-20 09:00 UTC",
                      "Reminder: Go-live starts in 1 day"]  # fmt: skip
    assert subjects(mailbox) == before  # no "starts in 2 hours" at 09:40
    assert (late["messages_sent"], late["messages_skipped"]) == (0, 1)
    planned = by_type(db_url)
    reminder = planned["REMINDER_2H"]
    assert (reminder.status, reminder.reason_code, reminder.attempts) == ("skipped", "EXPIRED", 0)
    assert {m.type: m.expires_at for m in planned.values()} == {
        "INIT": START, "REMINDER_1D": START, "REMINDER_2H": START
    }  # fmt: skip
    assert reminder.id not in {row.message_id for row in log_rows(db_url)}


def test_reminders_are_not_sent_weeks_after_their_event(
    cli: CliRunner, db_url: str, mailbox: list[EmailMessage]
) -> None:
    add_event(cli, db_url)
    tick(cli, db_url, T0 + timedelta(minutes=1))  # the INIT; then no tick for weeks

    late = tick(cli, db_url, START + timedelta(weeks=3))

    assert len(mailbox) == 1
    assert (late["messages_sent"], late["messages_skipped"]) == (0, 2)
    planned = by_type(db_url)
    for reminder in ("REMINDER_1D", "REMINDER_2H"):
        assert (planned[reminder].status, planned[reminder].reason_code) == ("skipped", "EXPIRED")


def test_an_expired_message_uses_no_quota(
    cli: CliRunner, db_url: str, mailbox: list[EmailMessage]
) -> None:
    add_event(cli, db_url)
    tick(cli, db_url, T0 + timedelta(minutes=1))
    tick(cli, db_url, START - timedelta(days=1))
    [report] = enqueue_all(db_url, [message(1, send_at=START + timedelta(minutes=30))])

    late = tick(cli, db_url, START + timedelta(minutes=40), SCHEDCTL_DAILY_QUOTA="1")

    assert (late["messages_sent"], late["messages_skipped"], late["messages_deferred"]) == (1, 1, 0)
    assert subjects(mailbox)[-1] == "Report 1"
    assert one(db_url, report).status == "sent"
    with Database(db_url) as db:
        assert db.transaction(lambda conn: quota.used(conn, "2026-11-20")) == 1


def test_a_message_whose_expiry_comes_while_its_batch_is_sent_is_skipped(
    db_url: str, mailbox: list[EmailMessage]
) -> None:
    from collections import Counter

    from schedctl.delivery.dispatch import Dispatcher, _send_batch, _Share

    [mid] = enqueue_all(db_url, [message(1, expires_at=T0 + timedelta(minutes=1))])
    with Database(db_url) as db:
        dispatcher = Dispatcher(db, Settings(mail_backend="memory", daily_quota=5), T0)
        batch = dispatcher.claim_due(10, Counter())
        dispatcher.now = lambda: T0 + timedelta(minutes=2)  # a slow batch: its turn comes late
        counts: Counter[str] = Counter()
        with dispatcher.backend:
            _send_batch(dispatcher, batch, counts, _Share(limit=10, claim_size=10))
        counters = db.transaction(lambda conn: list(conn.execute(sa.select(send_counters))))

    assert [r.id for r in batch.rows] == [mid]
    assert (counts["messages_sent"], counts["messages_skipped"]) == (0, 1)
    assert (one(db_url, mid).status, one(db_url, mid).reason_code) == ("skipped", "EXPIRED")
    assert one(db_url, mid).lease_owner is None
    assert mailbox == []
    assert [(r.sent, r.reserved) for r in counters] in ([], [(0, 0)])


def test_a_reminder_skipped_expired_comes_back_when_the_event_moves_later(
    cli: CliRunner, db_url: str, mailbox: list[EmailMessage]
) -> None:
    event_id = add_event(cli, db_url)
    tick(cli, db_url, START + timedelta(minutes=40))
    later = START + timedelta(days=2)

    moved = cli("events", "update", event_id, "--starts-at", later.isoformat(), db_url=db_url,
                env={"SCHEDCTL_NOW": (START + timedelta(hours=1)).isoformat()})  # fmt: skip

    assert moved.returncode == 0, moved.stderr
    reminder = by_type(db_url)["REMINDER_2H"]
    assert (reminder.status, reminder.reason_code) == ("scheduled", None)
    assert (reminder.send_at, reminder.expires_at) == (later - timedelta(hours=2), later)
    tick(cli, db_url, later - timedelta(hours=1))
    assert subjects(mailbox)[-1] == "Reminder: Go-live starts in 2 hours"


# --- reports --------------------------------------------------------------------------

NINE = datetime(2026, 6, 1, 9, 0, tzinfo=UTC)  # a Monday


def report_settings(db_url: str) -> Settings:
    queries = report_queries({"ping": {"sql": "select 1 as one"}})
    return Settings(database_url=db_url, reports_queries=queries, mail_backend="memory")


def make_schedule(db: Database, settings: Settings, max_lateness: str | None) -> None:
    options = ScheduleOptions(name="report", kind="sql", cadence="daily", at="09:00",
                              to=["a@example.com"], params=["query=ping"],
                              max_lateness=max_lateness)  # fmt: skip
    create_schedule(db, settings, 1, options, NINE - timedelta(hours=1))


@pytest.mark.parametrize(("max_lateness", "expires_at"), [("1h", NINE + timedelta(hours=1)),
                                                         (None, None)])  # fmt: skip
def test_a_report_run_s_messages_expire_at_slot_plus_max_lateness(
    db_url: str, mailbox: list[EmailMessage], max_lateness: str | None, expires_at: datetime | None
) -> None:
    settings = report_settings(db_url)
    on_time = NINE + timedelta(seconds=30)
    with Database(db_url) as db:
        make_schedule(db, settings, max_lateness)
        runs.run_schedules(db, settings, on_time)
        counts = dispatch_due(db, settings, on_time + timedelta(minutes=1))

    [sent] = all_messages(db_url)
    assert counts["messages_sent"] == 1
    assert (sent.status, sent.expires_at) == ("sent", expires_at)


def test_a_report_run_executed_after_its_max_lateness_is_not_mailed(
    db_url: str, mailbox: list[EmailMessage]
) -> None:
    settings = report_settings(db_url)
    late = NINE + timedelta(hours=2)
    with Database(db_url) as db:
        make_schedule(db, settings, "1h")
        runs.materialise_due(db, NINE + timedelta(seconds=30))  # queued; executed only at 11:00
        executed = runs.run_schedules(db, settings, late)
        counts = dispatch_due(db, settings, late + timedelta(minutes=1))

    [skipped] = all_messages(db_url)
    assert executed["runs_succeeded"] == 1
    assert (counts["messages_sent"], counts["messages_skipped"]) == (0, 1)
    assert (skipped.status, skipped.reason_code) == ("skipped", "EXPIRED")
    assert skipped.expires_at == NINE + timedelta(hours=1)
    assert mailbox == []


# --- send-now and messages edit -------------------------------------------------------

NOW = {"SCHEDCTL_NOW": T0.isoformat(), "SCHEDCTL_MAIL_BACKEND": "memory"}


def expired_message(db_url: str) -> int:
    [mid] = enqueue_all(
        db_url, [message(1, send_at=T0 - timedelta(hours=2), expires_at=T0 - timedelta(hours=1))]
    )
    return mid


def test_send_now_refuses_an_expired_message_unless_forced(
    cli: CliRunner, db_url: str, mailbox: list[EmailMessage]
) -> None:
    mid = expired_message(db_url)

    refused = cli("send-now", str(mid), "--json", db_url=db_url, env=NOW)
    row = one(db_url, mid)
    forced = cli("send-now", str(mid), "--force", "--json", db_url=db_url, env=NOW)

    assert (refused.returncode, refused.json) == (1, {"ok": False, "reason_code": "EXPIRED"})
    assert (row.status, row.reason_code) == ("skipped", "EXPIRED")
    assert (forced.returncode, forced.json) == (0, {"ok": True, "reason_code": "SENT"})
    assert subjects(mailbox) == ["Report 1"]
    assert one(db_url, mid).status == "sent"


def test_clearing_the_expiry_lets_a_skipped_message_be_sent(
    cli: CliRunner, db_url: str, mailbox: list[EmailMessage]
) -> None:
    mid = expired_message(db_url)
    assert tick(cli, db_url, T0)["messages_skipped"] == 1

    edited = cli("messages", "edit", str(mid), "--expires-at", "none", "--json",
                 db_url=db_url, env=NOW)  # fmt: skip
    counts = tick(cli, db_url, T0 + timedelta(minutes=1))

    assert edited.returncode == 0, edited.stderr
    assert (edited.json["status"], edited.json["expires_at"]) == ("scheduled", None)
    assert counts["messages_sent"] == 1
    assert subjects(mailbox) == ["Report 1"]
    assert one(db_url, mid).expires_at is None


def test_edit_sets_an_expiry_and_list_shows_it(cli: CliRunner, db_url: str) -> None:
    mid, never = enqueue_all(db_url, [message(1, send_at=T0 + timedelta(hours=1)), message(2)])

    edited = cli("messages", "edit", str(mid), "--expires-at", "2026-11-18T11:00:00+01:00",
                 "--json", db_url=db_url, env=NOW)  # fmt: skip
    listed = cli("messages", "list", "--json", db_url=db_url)

    assert edited.returncode == 0, edited.stderr
    assert edited.json["expires_at"] == "2026-11-18T10:00:00+00:00"
    assert {m["id"]: m["expires_at"] for m in listed.json["messages"]} == {
        str(mid): "2026-11-18T10:00:00+00:00", str(never): None
    }  # fmt: skip
    assert one(db_url, mid).status == "scheduled"


@pytest.mark.parametrize(
    ("value", "says"),
    [
        ("tomorrow", "'tomorrow'"),
        ("", "''"),
        ("never", "'never'"),
        ("2026-02-30T09:00:00Z", "'2026-02-30T09:00:00Z'"),
        ("10000-01-01T00:00:00Z", "'10000-01-01T00:00:00Z'"),
        ("2026-11-18T08:54:00Z", "is in the past"),  # six minutes before now
    ],
)
def test_a_bad_expiry_is_refused_on_one_line_and_nothing_is_written(
    cli: CliRunner, db_url: str, value: str, says: str
) -> None:
    [mid] = enqueue_all(db_url, [message(1, expires_at=T0 + timedelta(hours=1))])
    before = all_messages(db_url)

    result = cli("messages", "edit", str(mid), "--send-at", "2026-11-19T09:00:00Z",
                 "--expires-at", value, db_url=db_url, env=NOW)  # fmt: skip

    assert result.returncode == 2, result.stdout
    assert len(result.stderr.strip().splitlines()) == 1
    assert result.stderr.startswith("schedctl: error: ")
    assert says in result.stderr
    assert all_messages(db_url) == before


# --- the migration --------------------------------------------------------------------


def test_the_migration_expires_unsent_event_messages_at_their_event_s_start(
    empty_db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    every = migrations.load_migrations
    with Database(empty_db_url) as db:
        before = [m.name for m in every(db.dialect)].index("message_expiry")
        with monkeypatch.context() as patch:
            patch.setattr(migrations, "load_migrations", lambda name: every(name)[:before])
            migrations.upgrade(db)

        def insert(conn: sa.Connection) -> None:
            event_id = conn.execute(
                events.insert()
                .values(account_id=1, name="Gala", starts_at=START, contact="a@example.org",
                        tz="UTC", created_at=T0, updated_at=T0)
                .returning(events.c.id)
            ).scalar_one()  # fmt: skip
            for n, (status, event) in enumerate(
                [("scheduled", event_id), ("retrying", event_id), ("sent", event_id),
                 ("scheduled", None)]
            ):  # fmt: skip
                conn.execute(
                    messages.insert().values(
                        account_id=1, type=f"T{n}", priority="normal", recipient="a@example.org",
                        subject="s", body_text="b", subscription=False, send_at=T0,
                        status=status, attempts=0, idempotency_key=f"k{n}", message_id=f"<{n}@x>",
                        event_id=event, created_at=T0, updated_at=T0,
                    )
                )  # fmt: skip

        db.transaction(insert)
        migrations.upgrade(db)

    assert [(m.status, m.expires_at) for m in all_messages(empty_db_url)] == [
        ("scheduled", START), ("retrying", START), ("sent", None), ("scheduled", None)
    ]  # fmt: skip
