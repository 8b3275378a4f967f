"""History (SPEC §12): run durations, when messages were sent, one message with every
attempt, and deleting one message or an event without losing the audit (in-process CLI)."""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from schedctl.db.database import Database
from schedctl.db.schema import email_log, events, messages
from support.cli import CliRunner
from support.delivery import T0, all_messages, enqueue_all, log_rows, message, one
from support.smtp_server import SmtpServer

NOW = {"SCHEDCTL_NOW": T0.isoformat()}
LATER = {"SCHEDCTL_NOW": (T0 + timedelta(days=1)).isoformat()}
EVENT = ["events", "add", "--name", "Gala", "--starts-at", "2026-12-01T18:00:00Z",
         "--contact", "host@example.org"]  # fmt: skip


def iso(value: str | None) -> datetime | None:
    return None if value is None else datetime.fromisoformat(value)


def lease(db_url: str, message_id: int, expires_at: datetime) -> None:
    """Put a message under a dispatcher's lease, as a claim does."""
    with Database(db_url) as db:
        db.transaction(
            lambda conn: conn.execute(
                messages.update()
                .where(messages.c.id == message_id)
                .values(lease_owner="h:1:x", lease_expires_at=expires_at)
            )
        )


def event_rows(db_url: str) -> list[Any]:
    with Database(db_url) as db:
        return db.transaction(lambda c: list(c.execute(sa.select(events))), read_only=True)


# --- schedules runs: duration_s ------------------------------------------------------


def test_a_run_after_a_real_tick_shows_its_duration(
    cli: CliRunner, db_url: str, tmp_path: Path
) -> None:
    config = tmp_path / "schedctl.toml"
    config.write_text('[reports.queries.ping]\nsql = "select 1 as one"\n')
    env = {"SCHEDCTL_CONFIG": str(config), "SCHEDCTL_MAIL_BACKEND": "memory"}
    created = cli("schedules", "create", "--name", "ping", "--kind", "sql", "--param",
                  "query=ping", "--cadence", "daily", "--at", "09:00", "--to",
                  "ops@example.org", "--json", db_url=db_url,
                  env={**env, "SCHEDCTL_NOW": "2026-11-17T10:00:00Z"})  # fmt: skip
    sid = created.json["id"]
    # The first slot runs; three days later the newest runs and the two before it are
    # recorded skipped (catch-up latest): never started, so no duration.
    for now in ["2026-11-18T09:00:05Z", "2026-11-21T09:00:05Z"]:
        assert cli("tick", db_url=db_url, env={**env, "SCHEDCTL_NOW": now}).returncode == 0

    result = cli("schedules", "runs", sid, "--json", db_url=db_url, env=env)
    plain = cli("schedules", "runs", sid, db_url=db_url, env=env)

    assert result.returncode == 0, result.stderr
    runs = result.json["runs"]
    assert [r["status"] for r in runs] == ["succeeded", "skipped", "skipped", "succeeded"]
    for run in runs:
        if run["status"] == "skipped":
            assert run["duration_s"] is None
            continue
        started, finished = iso(run["started_at"]), iso(run["finished_at"])
        assert started is not None
        assert finished is not None
        assert isinstance(run["duration_s"], float)
        assert run["duration_s"] == round((finished - started).total_seconds(), 3)
        assert run["duration_s"] >= 0
    assert plain.stdout.splitlines()[0].split()[6] == "duration"
    assert f"{runs[0]['duration_s']:.3f}s" in plain.stdout


# --- messages list: sent_at ------------------------------------------------------------


def test_messages_list_shows_when_a_message_was_sent(
    cli: CliRunner, db_url: str, smtp: SmtpServer
) -> None:
    sent, later = enqueue_all(db_url, [message(1), message(2, send_at=T0 + timedelta(days=2))])

    tick = cli("tick", db_url=db_url, env={**smtp.env, **NOW})
    listed = cli("messages", "list", "--json", db_url=db_url)

    assert tick.returncode == 0, tick.stderr
    assert len(smtp.message_ids) == 1
    by_id = {m["id"]: m for m in listed.json["messages"]}
    assert by_id[str(sent)]["status"] == "sent"
    sent_at = iso(by_id[str(sent)]["sent_at"])
    assert sent_at is not None
    assert sent_at == one(db_url, sent).sent_at
    assert T0 <= sent_at < T0 + timedelta(minutes=1)
    assert by_id[str(later)]["sent_at"] is None


# --- messages show -------------------------------------------------------------------


def test_messages_show_lists_every_attempt_in_order(cli: CliRunner, db_url: str) -> None:
    [mid] = enqueue_all(db_url, [message(1)])
    with SmtpServer(data_replies=["451 4.3.0 Try again later"]) as smtp:
        first = cli("tick", db_url=db_url, env={**smtp.env, **NOW})
        second = cli("tick", db_url=db_url, env={**smtp.env, **LATER})

    shown = cli("messages", "show", str(mid), "--json", db_url=db_url)
    plain = cli("messages", "show", str(mid), db_url=db_url)

    assert (first.returncode, second.returncode) == (0, 0), first.stderr + second.stderr
    assert shown.returncode == 0, shown.stderr
    detail, attempts = shown.json["message"], shown.json["attempts"]
    listed = cli("messages", "list", "--json", db_url=db_url).json["messages"][0]
    assert listed.items() <= detail.items()  # every key of the list, with its value
    assert (detail["status"], detail["attempts"], detail["being_sent"]) == ("sent", 2, False)
    assert detail["subject"] == "Report 1"
    assert "last_error" in detail
    assert [(a["outcome"], a["code"]) for a in attempts] == [("retry", 451), ("sent", 250)]
    assert all(set(a) >= {"at", "outcome", "code", "detail"} for a in attempts)
    assert "Try again later" in attempts[0]["detail"]
    assert attempts[1]["detail"] is None
    assert iso(attempts[0]["at"]) < iso(attempts[1]["at"])  # type: ignore[operator]
    assert iso(attempts[1]["at"]) == iso(detail["sent_at"])
    lines = plain.stdout.splitlines()
    assert lines[0] == f"message {mid}: REPORT to user1@example.org"
    assert any(line.split()[2:4] == ["retry", "451"] for line in lines)
    assert any(line.split()[2:4] == ["sent", "250"] for line in lines)
    assert lines[-1] == "2 attempt(s) recorded"


def test_messages_show_of_a_message_never_tried(cli: CliRunner, db_url: str) -> None:
    [mid] = enqueue_all(db_url, [message(1)])

    shown = cli("messages", "show", str(mid), "--json", db_url=db_url)
    plain = cli("messages", "show", str(mid), db_url=db_url)

    assert shown.json["attempts"] == []
    assert shown.json["message"]["status"] == "scheduled"
    assert plain.stdout.splitlines()[-1] == "no attempt recorded"


# --- messages delete -------------------------------------------------------------------


def test_messages_delete_removes_a_scheduled_message(cli: CliRunner, db_url: str) -> None:
    kept, doomed = enqueue_all(db_url, [message(1), message(2)])

    result = cli("messages", "delete", str(doomed), "--yes", "--json", db_url=db_url, env=NOW)

    assert result.returncode == 0, result.stderr
    assert result.json == {"id": str(doomed), "deleted": True, "status": "scheduled"}
    assert [m.id for m in all_messages(db_url)] == [kept]


def test_messages_delete_keeps_the_record_of_a_failed_messages_attempts(
    cli: CliRunner, db_url: str
) -> None:
    [mid] = enqueue_all(db_url, [message(1)])
    with SmtpServer(data_replies=["550 5.1.1 No such user here"]) as smtp:
        assert cli("tick", db_url=db_url, env={**smtp.env, **NOW}).returncode == 1
    assert one(db_url, mid).status == "failed"

    result = cli("messages", "delete", str(mid), "--yes", db_url=db_url, env=NOW)

    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"deleted message {mid} (failed)"
    assert all_messages(db_url) == []
    [attempt] = log_rows(db_url)
    assert (attempt.message_id, attempt.outcome, attempt.response_code) == (None, "failed", 550)


def _refused(cli: CliRunner, db_url: str, mid: int, code: int, *needles: str) -> None:
    before, log_before = all_messages(db_url), log_rows(db_url)

    result = cli("messages", "delete", str(mid), "--yes", db_url=db_url, env=NOW)
    missing_yes = cli("messages", "delete", str(mid), db_url=db_url, env=NOW)

    assert result.returncode == code, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    for needle in needles:
        assert needle in result.stderr
    assert missing_yes.returncode == 2
    assert (all_messages(db_url), log_rows(db_url)) == (before, log_before)


def test_messages_delete_refuses_a_sent_message(
    cli: CliRunner, db_url: str, smtp: SmtpServer
) -> None:
    [mid] = enqueue_all(db_url, [message(1)])
    assert cli("tick", db_url=db_url, env={**smtp.env, **NOW}).returncode == 0

    _refused(cli, db_url, mid, 2, f"message {mid}", "sent", "audit")


@pytest.mark.parametrize("dialect", ["sqlite"])
@pytest.mark.parametrize(
    "values",
    [
        {"status": "failed", "reason_code": "UNKNOWN_DELIVERY"},
        {"status": "retrying", "reason_code": "LEASE_EXPIRED"},
        # its dispatcher died mid-send and nobody has recovered it yet
        {"lease_owner": "h:1:x", "lease_expires_at": T0 - timedelta(minutes=1)},
    ],
    ids=["unknown", "lease-expired", "dead-dispatcher"],
)
def test_messages_delete_refuses_a_message_whose_outcome_is_unknown(
    cli: CliRunner, db_url: str, values: dict[str, Any]
) -> None:
    [mid] = enqueue_all(db_url, [message(1)])
    with Database(db_url) as db:
        db.transaction(
            lambda c: c.execute(messages.update().where(messages.c.id == mid).values(**values))
        )

    _refused(cli, db_url, mid, 2, "may have been sent")


def test_messages_delete_refuses_a_message_being_sent(cli: CliRunner, db_url: str) -> None:
    [mid] = enqueue_all(db_url, [message(1)])
    lease(db_url, mid, T0 + timedelta(minutes=5))

    _refused(cli, db_url, mid, 75, "being sent right now")


def test_messages_delete_without_yes_writes_nothing(cli: CliRunner, db_url: str) -> None:
    [mid] = enqueue_all(db_url, [message(1)])

    result = cli("messages", "delete", str(mid), db_url=db_url, env=NOW)

    assert result.returncode == 2
    assert result.stderr.strip() == (
        f"schedctl: error: deleting message {mid} needs --yes; nothing deleted"
    )
    assert [m.id for m in all_messages(db_url)] == [mid]


# --- events delete -------------------------------------------------------------------


def test_events_delete_skips_unsent_messages_keeps_sent_ones_and_removes_the_event(
    cli: CliRunner, db_url: str, smtp: SmtpServer
) -> None:
    event_id = cli(*EVENT, "--json", db_url=db_url, env=NOW).json["id"]
    assert cli("tick", db_url=db_url, env={**smtp.env, **NOW}).returncode == 0  # the INIT
    before = {m.type: m for m in all_messages(db_url)}
    assert before["INIT"].status == "sent"

    result = cli("events", "delete", event_id, "--yes", "--json", db_url=db_url, env=NOW)
    tick = cli("tick", "--json", db_url=db_url,
               env={**smtp.env, "SCHEDCTL_NOW": "2026-12-01T17:00:00Z"})  # fmt: skip

    assert result.returncode == 0, result.stderr
    assert result.json == {
        "id": event_id, "name": "Gala", "deleted": True, "messages_skipped": 2,
        "messages_kept": 3,
    }  # fmt: skip
    assert event_rows(db_url) == []
    after = {m.type: m for m in all_messages(db_url)}
    assert set(after) == {"INIT", "REMINDER_1D", "REMINDER_2H"}
    assert (after["INIT"].status, after["INIT"].sent_at) == ("sent", before["INIT"].sent_at)
    for reminder in ("REMINDER_1D", "REMINDER_2H"):
        assert (after[reminder].status, after[reminder].reason_code) == (
            "skipped", "EVENT_DELETED",
        )  # fmt: skip
    assert {m.event_id for m in after.values()} == {None}
    assert len(log_rows(db_url)) == 1  # the INIT's attempt, still pointing at it
    assert log_rows(db_url)[0].message_id == after["INIT"].id
    assert tick.returncode == 0, tick.stderr
    assert len(smtp.message_ids) == 1  # nothing more went out


def test_events_delete_without_yes_writes_nothing(cli: CliRunner, db_url: str) -> None:
    event_id = cli(*EVENT, "--json", db_url=db_url, env=NOW).json["id"]
    before = all_messages(db_url)

    result = cli("events", "delete", event_id, db_url=db_url, env=NOW)

    assert result.returncode == 2
    assert len(result.stderr.strip().splitlines()) == 1
    assert "--yes" in result.stderr
    assert len(event_rows(db_url)) == 1
    assert all_messages(db_url) == before


def test_events_delete_waits_for_a_message_being_sent_then_gives_up(
    cli: CliRunner, db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from schedctl import events as events_module

    monkeypatch.setattr(events_module, "DELETE_WAIT", timedelta(0))
    event_id = cli(*EVENT, "--json", db_url=db_url, env=NOW).json["id"]
    init = next(m for m in all_messages(db_url) if m.type == "INIT")
    lease(db_url, init.id, T0 + timedelta(minutes=5))
    before = all_messages(db_url)

    result = cli("events", "delete", event_id, "--yes", db_url=db_url, env=NOW)

    assert result.returncode == 75
    assert "being sent right now" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert len(event_rows(db_url)) == 1
    assert all_messages(db_url) == before


# --- another account's ---------------------------------------------------------------


def test_another_accounts_message_and_event_are_not_found(cli: CliRunner, db_url: str) -> None:
    event_id = cli(*EVENT, "--json", db_url=db_url, env=NOW).json["id"]
    mid = str(all_messages(db_url)[0].id)
    assert cli("accounts", "create", "acme", db_url=db_url).returncode == 0
    before = all_messages(db_url)

    for args, what in [
        (["messages", "show", mid], f"no message {mid}"),
        (["messages", "delete", mid, "--yes"], f"no message {mid}"),
        (["events", "delete", event_id, "--yes"], f"no event {event_id}"),
    ]:
        result = cli(*args, "--account", "acme", db_url=db_url, env=NOW)
        assert result.returncode == 2, args
        assert result.stdout == ""
        assert len(result.stderr.strip().splitlines()) == 1
        assert what in result.stderr, result.stderr

    assert all_messages(db_url) == before
    assert len(event_rows(db_url)) == 1


@pytest.mark.postgres
@pytest.mark.parametrize("dialect", ["postgresql"])
def test_row_level_security_hides_another_accounts_message_and_event(
    cli: CliRunner, db_url: str, tenant_url: str
) -> None:
    """Connected as a role RLS applies to, the commands scoped to `acme` see nothing of
    the default account's."""
    event_id = cli(*EVENT, "--json", db_url=db_url, env=NOW).json["id"]
    mid = str(all_messages(db_url)[0].id)
    with Database(db_url) as db:
        db.transaction(
            lambda c: c.execute(
                email_log.insert().values(
                    account_id=1, message_id=int(mid), provider="smtp",
                    recipients="host@example.org", outcome="retry", response_code=451,
                    error="busy", attempted_at=T0,
                )
            )
        )  # fmt: skip
    assert cli("accounts", "create", "acme", db_url=db_url).returncode == 0
    before = all_messages(db_url)

    for args in (
        ["messages", "show", mid],
        ["messages", "delete", mid, "--yes"],
        ["events", "delete", event_id, "--yes"],
    ):
        result = cli(*args, "--account", "acme", db_url=tenant_url, env=NOW)
        assert (result.returncode, result.stdout) == (2, ""), args
        assert "no " in result.stderr

    mine = cli("messages", "show", mid, "--json", db_url=tenant_url, env=NOW)
    assert mine.returncode == 0, mine.stderr
    assert [a["code"] for a in mine.json["attempts"]] == [451]
    assert all_messages(db_url) == before
