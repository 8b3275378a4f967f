"""Being told (SPEC §12): what newly went wrong is recorded once under a unique key and
told to each configured channel once, at the end of the job that found it.

Against real loopback servers: the Slack and the generic webhook on a
ScriptedHTTPServer, the ALERT mail through an SMTP server (it goes out through the
outbox, with the next tick). Commands run in this process (the ``cli`` fixture); the
concurrent ticks are in tests/acceptance/test_alerts_processes.py.
"""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import make_url

from schedctl import heartbeat
from schedctl.accounts import create_account
from schedctl.config import Settings
from schedctl.db.database import Database
from schedctl.db.schema import alerts
from schedctl.delivery.dispatch import dispatch_due
from schedctl.errors import PermissionDenied
from support.alerts import (
    DUE,
    HOOK_PATH,
    LATER,
    SECRETS,
    SLACK_PATH,
    alert_mail,
    bodies,
    failing_schedules,
    notified,
    run_ids,
    write_config,
)
from support.cli import CliRunner
from support.delivery import T0, enqueue_all, message
from support.distribute_files import Files
from support.http_server import ScriptedHTTPServer
from support.reconcile import Seed, now
from support.smtp_server import SmtpServer


class Job:
    """Runs schedctl commands in this process with the test's config and mail server."""

    def __init__(self, cli: CliRunner, db_url: str, config: Path, smtp: SmtpServer | None):
        self.cli, self.db_url, self.config, self.smtp = cli, db_url, config, smtp

    def __call__(self, *args: str, at: str = DUE, expect: int | None = 0) -> Any:
        env = {"SCHEDCTL_CONFIG": str(self.config), "SCHEDCTL_NOW": at}
        env.update(self.smtp.env if self.smtp else {"SCHEDCTL_MAIL_BACKEND": "memory"})
        result = self.cli(*args, db_url=self.db_url, env=env)
        if expect is not None:
            assert result.returncode == expect, result.stderr
        for secret in SECRETS:
            assert secret not in result.stdout + result.stderr, (args, secret)
        return result


# --- one notification per channel ---------------------------------------------------


def test_a_run_failed_for_good_is_told_once_to_each_channel(
    cli: CliRunner, db_url: str, tmp_path: Path, smtp: SmtpServer
) -> None:
    failing_schedules(db_url, 1)
    with ScriptedHTTPServer() as slack, ScriptedHTTPServer() as hook:
        job = Job(cli, db_url, write_config(tmp_path, slack, hook, "ops@example.com"), smtp)
        first = job("tick", "--json", expect=1)  # the run failed: exit 1, as without alerts
        job("tick", "--json", at=LATER[0])  # sends the ALERT mail the first one queued
        job("tick", "--json", at=LATER[1])
        job("heartbeat", "--json", at=LATER[1])

    [run_id] = run_ids(db_url)
    assert first.json["runs_failed"] == 1
    assert [path for _, path, _ in slack.requests] == [SLACK_PATH]
    [post] = bodies(slack)
    assert post["text"].splitlines()[0] == "schedctl: 1 new alert"
    assert post["text"].splitlines()[1].startswith(f"• [run_failed] run {run_id} of schedule")
    assert "MISSING_RECIPIENT" in post["blocks"][1]["text"]["text"]
    assert [path for _, path, _ in hook.requests] == [HOOK_PATH]
    [document] = bodies(hook)
    assert document["count"] == 1
    [told] = document["alerts"]
    assert (told["kind"], told["key"]) == ("run_failed", f"run_failed:{run_id}")
    assert told["at"].startswith("2026-06-01T09:00:0")  # when it failed
    assert "failed for good: MISSING_RECIPIENT" in told["summary"]
    [mail] = alert_mail(smtp)
    assert (mail["To"], mail["Subject"]) == ("ops@example.com", "schedctl: 1 new alert")
    assert f"[run_failed] run {run_id} of schedule" in mail.get_body(("plain",)).get_content()
    assert notified(db_url) == [
        (f"run_failed:{run_id}", ch, True) for ch in ("mail", "slack", "webhook")
    ]


def test_a_notification_lists_20_alerts_then_and_n_more(
    cli: CliRunner, db_url: str, tmp_path: Path, smtp: SmtpServer
) -> None:
    failing_schedules(db_url, 25)
    with ScriptedHTTPServer() as slack, ScriptedHTTPServer() as hook:
        job = Job(cli, db_url, write_config(tmp_path, slack, hook, "ops@example.com"), smtp)
        assert job("tick", "--json", expect=1).json["runs_failed"] == 25
        job("tick", "--json", at=LATER[0])

    keys = [f"run_failed:{i}" for i in run_ids(db_url)]
    [post] = bodies(slack)
    lines = post["text"].splitlines()
    assert lines[0] == "schedctl: 25 new alerts"
    assert len(lines) == 1 + 20 + 1
    assert lines[-1] == "and 5 more"
    sections = [b for b in post["blocks"] if b["type"] == "section"]
    assert len(sections) == 20
    assert post["blocks"][-1] == {
        "type": "context", "elements": [{"type": "mrkdwn", "text": "and 5 more"}]
    }  # fmt: skip
    [document] = bodies(hook)
    assert document["count"] == 25
    assert [a["key"] for a in document["alerts"]] == keys[:20]
    [mail] = alert_mail(smtp)
    text = mail.get_body(("plain",)).get_content()
    assert text.count("[run_failed]") == 20
    assert "and 5 more" in text
    assert mail["Subject"] == "schedctl: 25 new alerts"
    # All 25 were told: the five beyond the list are counted, not left for later.
    assert {told for _, _, told in notified(db_url)} == {True}
    assert len(notified(db_url)) == 3 * 25


def test_a_channel_answering_500_is_told_by_the_next_run_then_once(
    cli: CliRunner, db_url: str, tmp_path: Path
) -> None:
    failing_schedules(db_url, 1)
    with ScriptedHTTPServer() as slack, ScriptedHTTPServer("500") as hook:
        job = Job(cli, db_url, write_config(tmp_path, slack, hook), None)
        first = job("tick", "--json", expect=1)
        after_500 = notified(db_url)
        hook.mode = "ok"  # the endpoint is back
        job("tick", "--json", at=LATER[0])
        job("tick", "--json", at=LATER[1])

    [run_id] = run_ids(db_url)
    key = f"run_failed:{run_id}"
    assert "alert webhook to 127.0.0.1" in first.stderr  # the host, never the path
    assert after_500 == [(key, "slack", True), (key, "webhook", False)]
    assert len(slack.requests) == 1  # Slack was told at once, and only then
    assert len(hook.requests) == 2  # the 500 (one attempt), then the retry that took
    assert [a["key"] for a in bodies(hook)[1]["alerts"]] == [key]
    assert notified(db_url) == [(key, "slack", True), (key, "webhook", True)]


def test_a_hanging_channel_leaves_the_exit_code_and_the_output_as_they_were(
    cli: CliRunner, db_url: str, tmp_path: Path
) -> None:
    failing_schedules(db_url, 1)
    with ScriptedHTTPServer("hang") as slack, ScriptedHTTPServer("trickle") as hook:
        job = Job(cli, db_url, write_config(tmp_path, slack, hook), None)
        hanging = job("tick", "--json", expect=None)
        # The next tick finds nothing new to tell but the same untold alert.
        again = job("tick", "--json", at=LATER[0], expect=None)
        requests = len(slack.requests), len(hook.requests)

    assert hanging.returncode == 1  # the failed run's exit code, as without alerts
    assert hanging.json["runs_failed"] == 1
    assert again.returncode == 0
    assert "Slack alert to 127.0.0.1" in hanging.stderr
    assert requests == (2, 2)  # one attempt each per run, given up at the budget
    assert {told for _, _, told in notified(db_url)} == {False}


def test_without_channels_nothing_is_told_and_alerts_are_still_recorded(
    cli: CliRunner, db_url: str, tmp_path: Path
) -> None:
    failing_schedules(db_url, 1)
    job = Job(cli, db_url, write_config(tmp_path, None, None), None)
    job("tick", "--json", expect=1)

    [run_id] = run_ids(db_url)
    with Database(db_url, environ={}) as db:
        keys = db.transaction(lambda c: list(c.execute(sa.select(alerts.c.key)).scalars()))
    assert keys == [f"run_failed:{run_id}"]
    assert notified(db_url) == []


# --- the sources ---------------------------------------------------------------------


def test_a_message_that_fails_for_good_or_ends_unknown_is_one_alert_each(
    db_url: str, http_server: ScriptedHTTPServer
) -> None:
    settings = {"alerts_webhook_url": f"{http_server.url}{HOOK_PATH}"}
    with SmtpServer(data_replies=["550 5.1.1 No such user"]) as refusing:
        [refused] = enqueue_all(db_url, [message(1)])
        with Database(db_url, environ={}) as db:
            dispatch_due(db, Settings(**refusing.settings(**settings)), T0)
    with SmtpServer(hold_data=1) as silent:
        [unanswered] = enqueue_all(db_url, [message(2)])
        with Database(db_url, environ={}) as db:
            dispatch_due(db, Settings(**silent.settings(smtp_timeout=1.0, **settings)), T0)
        silent.release()
    with Database(db_url, environ={"SCHEDCTL_NOW": T0.isoformat()}) as db:
        from schedctl.alerts import notify

        told = notify(db, Settings(**settings))

    assert told == {"webhook": 2}
    [document] = bodies(http_server)
    assert [(a["kind"], a["key"]) for a in document["alerts"]] == [
        ("message_failed", f"message_failed:{refused}"),
        ("message_unknown", f"message_unknown:{unanswered}"),
    ]
    assert (
        "failed for good: PERMANENT_FAILURE: reply: 550 5.1.1 No such user"
        in (document["alerts"][0]["summary"])
    )
    assert "not resent" in document["alerts"][1]["summary"]


def test_work_whose_process_died_on_its_last_attempt_is_an_alert_once_reconcile_fails_it(
    cli: CliRunner, db_url: str, http_server: ScriptedHTTPServer
) -> None:
    seed = Seed(db_url)
    dead = {"lease_owner": "gone:1:abc", "lease_expires_at": now() - timedelta(minutes=5)}
    run = seed.run(seed.schedule(), status="running", attempt=3, **dead)
    mid = seed.message(status="scheduled", attempts=4, **dead)  # its 5th attempt was lost
    env = {"SCHEDCTL_ALERTS_WEBHOOK_URL": f"{http_server.url}{HOOK_PATH}"}

    result = cli("reconcile", "--json", db_url=db_url, env=env)
    again = cli("reconcile", "--json", db_url=db_url, env=env)

    assert result.returncode == 0, result.stderr
    assert (result.json["runs_failed"], result.json["messages_failed"]) == (1, 1)
    assert again.returncode == 0, again.stderr
    [document] = bodies(http_server)
    assert sorted(a["key"] for a in document["alerts"]) == [
        f"message_failed:{mid}", f"run_failed:{run}"
    ]  # fmt: skip
    summaries = " ".join(a["summary"] for a in document["alerts"])
    assert "LEASE_EXPIRED" in summaries
    assert "lease expired" in summaries


def test_heartbeat_check_turning_red_is_one_alert_per_red_spell(
    cli: CliRunner, db_url: str, http_server: ScriptedHTTPServer
) -> None:
    def success(at: datetime) -> None:
        with Database(db_url, environ={}) as db:
            row = heartbeat.start_run(db, "tick", at)
            heartbeat.finish_run(db, row, finished_at=at, exit_code=0, counts={})

    def check() -> int:
        # Judged on the database's clock, as the heartbeat rows are stamped.
        env = {"SCHEDCTL_ALERTS_WEBHOOK_URL": f"{http_server.url}{HOOK_PATH}"}
        return cli("heartbeat", "--check", "--command", "tick", db_url=db_url, env=env).returncode

    now = datetime.now(UTC).replace(microsecond=0)
    first, second = now - timedelta(hours=5), now - timedelta(hours=3)
    success(first)
    codes = [check(), check()]  # one red spell, checked twice
    success(second)  # a later success, itself long ago: the next red spell
    codes += [check()]
    success(now)
    codes += [check()]

    assert codes == [2, 2, 2, 0]
    told = [[a["key"] for a in d["alerts"]] for d in bodies(http_server)]
    assert told == [
        [f"heartbeat_red:tick:{first.isoformat()}"],
        [f"heartbeat_red:tick:{second.isoformat()}"],
    ]
    assert (
        "tick is red: its last success was 300 minutes ago"
        in bodies(http_server)[0]["alerts"][0]["summary"]
    )


def test_a_failed_distribution_and_mirror_rows_left_missing_are_alerts(
    files: Files, http_server: ScriptedHTTPServer
) -> None:
    hook = {"SCHEDCTL_ALERTS_WEBHOOK_URL": f"{http_server.url}{HOOK_PATH}"}
    broken = files.config(
        source=f'[distribute.source]\ndatabase_url = "sqlite:///{files.path("source")}"\n'
        'query = "select iin from no_such_table"\n'
    )
    assert files.run("--json", config=broken, **hook).returncode == 1
    assert files.run("--json", **hook).returncode == 0  # the rerun completes the day
    with sqlite3.connect(files.path("spss")) as conn:
        conn.execute("DELETE FROM sc_mirror WHERE rowid IN (SELECT rowid FROM sc_mirror LIMIT 3)")

    def reconcile(*args: str) -> int:
        env = {"SCHEDCTL_CONFIG": str(files.config()), "SCHEDCTL_NOW": "2026-11-18T06:00:00Z"}
        return files.cli(
            "reconcile", "--json", *args, db_url=files.db_url, env={**env, **hook}
        ).returncode

    codes = [reconcile(), reconcile(), reconcile("--repair")]

    assert codes == [1, 1, 0]
    told = [a for d in bodies(http_server) for a in d["alerts"]]
    assert [(a["kind"], a["key"]) for a in told] == [
        ("distribution_failed", "distribution_failed:2026-11-18:1"),
        ("mirror_missing", "mirror_missing:2026-11-18"),
    ]
    assert "failed at stage source" in told[0]["summary"]
    assert "3 of 320 target rows" in told[1]["summary"]


# --- tenancy -------------------------------------------------------------------------


@pytest.mark.postgres
@pytest.mark.parametrize("dialect", ["postgresql"])
def test_an_account_sees_its_own_and_the_installations_alerts_only(
    db_url: str, tenant_url: str
) -> None:
    from schedctl import alerts as alerting

    with Database(db_url, environ={}) as db:
        other = db.transaction(lambda c: create_account(c, "other", T0))
        db.transaction(
            lambda c: alerting.record(
                c,
                [
                    alerting.Alert("run_failed", "run_failed:1", "mine", account_id=1),
                    alerting.Alert("run_failed", "run_failed:2", "theirs", account_id=other),
                    alerting.Alert("quota", "quota:2026-11-18:80", "everyone's"),
                ],
                T0,
            )
        )
    keys = sa.select(alerts.c.key).order_by(alerts.c.key)
    with Database(tenant_url, account_id=other, environ={}) as scoped:
        seen = scoped.transaction(lambda c: list(c.execute(keys).scalars()))
        with pytest.raises(PermissionDenied, match="row-level security"):
            scoped.transaction(
                lambda c: alerting.record(
                    c, [alerting.Alert("run_failed", "run_failed:3", "x", account_id=1)], T0
                )
            )
    assert seen == ["quota:2026-11-18:80", "run_failed:2"]
    assert make_url(tenant_url).username != make_url(db_url).username
