"""`schedctl send-now`: every reason code, against a real SMTP server (in-process CLI)."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa

from schedctl.db.database import Database
from schedctl.db.schema import messages, schedule_runs
from schedctl.delivery.suppressions import add_suppression
from support.cli import CliRunner
from support.databases import connect_pg, login_role
from support.delivery import T0, enqueue_all, log_rows, message, one
from support.smtp_server import SmtpServer

SATURDAY = T0 + timedelta(days=3)


def send_now(cli: CliRunner, db_url: str, smtp: SmtpServer, *args: str, **env: str):
    return cli("send-now", *args, "--json", db_url=db_url,
               env={**smtp.env, "SCHEDCTL_NOW": SATURDAY.isoformat(), **env})  # fmt: skip


def test_sent_bypassing_send_time_weekend_rule_and_disabled_type(
    cli: CliRunner, db_url: str, smtp: SmtpServer, tmp_path: Path
) -> None:
    config = tmp_path / "schedctl.toml"
    config.write_text('[messages]\nenabled = false\n[messages.types.INIT]\nenabled = false\n'
                      'weekend = "postpone"\n')  # fmt: skip
    [mid] = enqueue_all(db_url, [message(1, type="INIT", send_at=T0 + timedelta(days=30))])

    result = send_now(cli, db_url, smtp, str(mid), SCHEDCTL_CONFIG=str(config))

    assert result.returncode == 0, result.stderr
    assert result.json == {"ok": True, "reason_code": "SENT"}
    assert smtp.message_ids == [one(db_url, mid).message_id]
    assert one(db_url, mid).status == "sent"


def test_already_sent_unless_forced(cli: CliRunner, db_url: str, smtp: SmtpServer) -> None:
    [mid] = enqueue_all(db_url, [message(1)])

    first = send_now(cli, db_url, smtp, str(mid))
    again = send_now(cli, db_url, smtp, str(mid))
    forced = send_now(cli, db_url, smtp, str(mid), "--force")

    assert first.json["reason_code"] == "SENT"
    assert (again.returncode, again.json) == (1, {"ok": False, "reason_code": "ALREADY_SENT"})
    assert forced.json == {"ok": True, "reason_code": "SENT"}
    assert len(smtp.message_ids) == 2
    assert one(db_url, mid).attempts == 2


def test_a_forced_resend_the_quota_refuses_leaves_the_record_as_it_was(
    cli: CliRunner, db_url: str, smtp: SmtpServer
) -> None:
    # Found by review: the refusal rewrote the sent message's reason (QUOTA_DEFERRED)
    # and its send time (the next day), as for a pending message.
    first, second = enqueue_all(db_url, [message(1), message(2)])
    quota = {"SCHEDCTL_DAILY_QUOTA": "1"}
    assert send_now(cli, db_url, smtp, str(first), **quota).json["reason_code"] == "SENT"
    before = one(db_url, first)

    refused = send_now(cli, db_url, smtp, str(first), "--force", **quota)
    pending = send_now(cli, db_url, smtp, str(second), **quota)

    assert refused.json == {
        "ok": False,
        "reason_code": "QUOTA_DEFERRED",
        "detail": "daily quota exhausted",
    }
    after = one(db_url, first)
    assert (after.status, after.reason_code, after.send_at, after.attempts) == (
        before.status,
        before.reason_code,
        before.send_at,
        before.attempts,
    )
    assert (after.lease_owner, after.lease_expires_at) == (None, None)
    # A pending message is deferred to the next day, as it always was.
    assert pending.json["reason_code"] == "QUOTA_DEFERRED"
    assert one(db_url, second).reason_code == "QUOTA_DEFERRED"
    assert len(smtp.message_ids) == 1


def test_a_failure_under_quiet_is_one_line_on_stderr(
    cli: CliRunner, db_url: str, smtp: SmtpServer
) -> None:
    # Found by review: ALREADY_SENT, SUPPRESSED and SEND_FAILED exited 1 with nothing
    # printed under --quiet, so cron mailed nothing.
    [mid] = enqueue_all(db_url, [message(1)])
    env = {**smtp.env, "SCHEDCTL_NOW": SATURDAY.isoformat()}
    sent = cli("send-now", str(mid), "--quiet", db_url=db_url, env=env)
    assert (sent.returncode, sent.stdout, sent.stderr) == (0, "", "")
    again = cli("send-now", str(mid), "--quiet", db_url=db_url, env=env)
    assert (again.returncode, again.stdout) == (1, "")
    assert again.stderr == f"schedctl: error: message {mid}: ALREADY_SENT\n"


def test_missing_recipient(cli: CliRunner, db_url: str, smtp: SmtpServer) -> None:
    [mid] = enqueue_all(db_url, [message(1, recipient=None)])

    result = send_now(cli, db_url, smtp, str(mid))

    assert (result.returncode, result.json["reason_code"]) == (1, "MISSING_RECIPIENT")
    assert smtp.data_commands == 0


def test_a_suppressed_address_receives_nothing_even_by_send_now(
    cli: CliRunner, db_url: str, smtp: SmtpServer
) -> None:
    [mid] = enqueue_all(db_url, [message(1, priority="critical")])
    with Database(db_url) as db:
        db.transaction(lambda conn: add_suppression(conn, 1, "USER1@example.org", T0))

    result = send_now(cli, db_url, smtp, str(mid), "--force")

    assert result.json == {"ok": False, "reason_code": "SUPPRESSED"}
    assert smtp.data_commands == 0
    assert (one(db_url, mid).status, one(db_url, mid).reason_code) == ("skipped", "SUPPRESSED")


def test_send_failed_records_the_attempt(cli: CliRunner, db_url: str) -> None:
    with SmtpServer(data_replies=["550 5.1.1 No such user here"]) as smtp:
        [mid] = enqueue_all(db_url, [message(1)])
        result = send_now(cli, db_url, smtp, str(mid))

    assert result.returncode == 1
    assert result.json["reason_code"] == "SEND_FAILED"
    assert "550" in result.json["detail"]
    assert (one(db_url, mid).status, one(db_url, mid).reason_code) == (
        "failed", "PERMANENT_FAILURE"
    )  # fmt: skip
    assert [r.outcome for r in log_rows(db_url)] == ["failed"]


def test_unreachable_server_is_send_failed_with_exit_75(
    cli: CliRunner, db_url: str, smtp: SmtpServer, closed_port: int
) -> None:
    [mid] = enqueue_all(db_url, [message(1)])

    result = send_now(cli, db_url, smtp, str(mid), SCHEDCTL_SMTP_PORT=str(closed_port))

    assert (result.returncode, result.json["reason_code"]) == (75, "SEND_FAILED")
    row = one(db_url, mid)
    assert (row.status, row.attempts, row.lease_owner) == ("scheduled", 0, None)


def test_exception_when_the_stored_message_cannot_be_built(
    cli: CliRunner, db_url: str, smtp: SmtpServer
) -> None:
    [mid] = enqueue_all(db_url, [message(1)])
    with Database(db_url) as db:
        db.transaction(
            lambda conn: conn.execute(messages.update().values(attachments=[{"filename": "x.csv"}]))
        )

    result = send_now(cli, db_url, smtp, str(mid))

    assert (result.returncode, result.json["reason_code"]) == (1, "EXCEPTION")
    assert one(db_url, mid).status == "failed"
    assert smtp.data_commands == 0


@pytest.mark.parametrize("dialect", ["sqlite"])
@pytest.mark.parametrize("args", [[], ["abc"], ["1", "--schedule", "2"], ["424242"]], ids=" ".join)
def test_bad_usage_is_exit_2(
    cli: CliRunner, db_url: str, smtp: SmtpServer, args: list[str]
) -> None:
    result = send_now(cli, db_url, smtp, *args)

    assert result.returncode == 2
    assert len(result.stderr.strip().splitlines()) == 1


def test_send_now_schedule_runs_it_and_sends_its_messages(
    cli: CliRunner, db_url: str, smtp: SmtpServer, tmp_path: Path
) -> None:
    config = tmp_path / "schedctl.toml"
    config.write_text(
        '[reports.queries.accounts]\nsql = "select name from accounts order by name"\n'
    )
    env = {**smtp.env, "SCHEDCTL_CONFIG": str(config), "SCHEDCTL_NOW": T0.isoformat()}
    created = cli(
        "schedules", "create", "--name", "daily accounts", "--kind", "sql",
        "--param", "query=accounts", "--cadence", "daily", "--at", "07:00",
        "--to", "a@example.org", "--to", "b@example.org", "--json", db_url=db_url, env=env,
    )  # fmt: skip
    assert created.returncode == 0, created.stderr

    result = cli("send-now", "--schedule", created.json["id"], "--json", db_url=db_url, env=env)

    assert result.returncode == 0, result.stderr
    data = result.json
    assert (data["ok"], data["reason_code"]) == (True, "SENT")
    assert data["run_id"].isdigit()
    assert [m["reason_code"] for m in data["messages"]] == ["SENT", "SENT"]
    assert sorted(smtp.recipients) == ["a@example.org", "b@example.org"]
    with Database(db_url) as db:
        statuses = db.transaction(
            lambda conn: list(conn.execute(sa.select(messages.c.status)).scalars())
        )
    assert statuses == ["sent", "sent"]


@pytest.mark.parametrize("dialect", [pytest.param("postgresql", marks=pytest.mark.postgres)])
def test_send_now_schedule_by_a_role_that_may_not_record_makes_no_run(
    cli: CliRunner, db_url: str, smtp: SmtpServer, tmp_path: Path
) -> None:
    # It used to make the run and queue its mail, then refuse to send: each rerun
    # after the grant was mended made another run, and each run's mail went out.
    config = tmp_path / "schedctl.toml"
    config.write_text('[reports.queries.one]\nsql = "select 1 as one"\n')
    env = {**smtp.env, "SCHEDCTL_CONFIG": str(config), "SCHEDCTL_NOW": T0.isoformat()}
    created = cli(
        "schedules", "create", "--name", "daily", "--kind", "sql", "--param", "query=one",
        "--cadence", "daily", "--at", "07:00", "--to", "a@example.org", "--json",
        db_url=db_url, env=env,
    )  # fmt: skip
    assert created.returncode == 0, created.stderr
    with login_role(db_url, "schedctl_sender") as url:
        role = sa.engine.make_url(url).username
        with connect_pg(str(sa.engine.make_url(db_url).database)) as admin:
            admin.execute(f'REVOKE INSERT ON email_log FROM "{role}"')  # type: ignore[arg-type]
        for _ in range(2):
            result = cli("send-now", "--schedule", created.json["id"], db_url=url, env=env)
            assert result.returncode == 1, result
            assert "may not record the mail it sends" in result.stderr
    with Database(db_url) as db:
        counts = db.transaction(
            lambda conn: [
                conn.execute(sa.select(sa.func.count()).select_from(table)).scalar()
                for table in (schedule_runs, messages)
            ],
            read_only=True,
        )
    assert counts == [0, 0]
    assert smtp.message_ids == []
