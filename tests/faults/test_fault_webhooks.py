"""Side channels that fail: the Slack webhook and the heartbeat pings.

Schedctl's HTTP side channels (webhook.py) are the alert channels (schedctl.alerts:
here the Slack incoming webhook, told the daily quota's 80/90/100 % alerts, which
`tick`'s dispatcher records, by whichever job ends after they are recorded: each
job tells it once, one attempt within the 5 s budget, and a job finding it failing
leaves them for a later one) and the healthchecks.io-style pings: `heartbeat --check
--ping-url URL`, and the per-command `[heartbeat.ping_urls]` pinged around each run
(here `digest`).

Each scenario runs the same three processes at once twice, on two databases with
the same content: once against a healthy loopback endpoint, once against one that
answers 500 and 429 with Retry-After by turns (so each channel's retries meet both),
or by turns hangs (reads the request and never answers) and trickles (starts a 200
answer and sends a byte every 0.2 s, so no single read ever times out).
The job's outcome must not depend on it (README: "a ping that fails is logged as a
warning and never changes the exit code"; alerts.py: "Telling never raises and never
changes a command's exit code"): the same exit codes, the same rows, the same mail; each
process ends (bounded by the side channel's timeout and retries; the test only
gives it a generous subprocess timeout); no secret -- the webhook's token path, the
ping URLs' ids, the SMTP password -- appears in any output, even with -v.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from schedctl.db.database import Database
from schedctl.db.schema import (
    alert_deliveries,
    heartbeats,
    messages,
    quota_alerts,
    send_counters,
)
from schedctl.db.schema import alerts as alert_rows
from support import fault_ledger
from support.cli import SCHEDCTL
from support.databases import fresh_database
from support.delivery import T0, bulk_insert, start_ticks
from support.http_server import ScriptedHTTPServer
from support.processes import Schedctl
from support.smtp_server import SmtpServer

QUOTA = 10
SLACK_PATH = "/services/T0FAULT/B0FAULT/s3cr3tSlackT0ken"
DIGEST_PING = "/ping/5ec2e7-d16e57-0000-digest"
CHECK_PING = "/ping/5ec2e7-c4ec4-0000-check"
SMTP_CREDENTIALS = ("mailer", "smtp-pa55word-s3cr3t")
SECRETS = (
    "s3cr3tSlackT0ken",
    "5ec2e7-d16e57",
    "5ec2e7-c4ec4",
    SMTP_CREDENTIALS[1],
)
TIMEOUT = 180  # generous: the side channels' own timeouts bound each process


@pytest.fixture
def baseline_db_url(dialect: str, request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A second freshly migrated database, for the run against a healthy endpoint."""
    yield from fresh_database(dialect, request, tmp_path / "baseline.db")


@dataclass
class Finished:
    args: tuple[str, ...]
    returncode: int
    stdout: str
    stderr: str


def run_together(db_url: str, env: dict[str, str], *commands: tuple[str, ...]) -> list[Finished]:
    """Start every command at once as its own `schedctl` process; wait for all."""
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("SCHEDCTL_")}
    full_env.update(SCHEDCTL_DATABASE_URL=db_url, NO_COLOR="1", **env)
    processes = [
        (
            args,
            Schedctl(
                [str(SCHEDCTL), "-v", *args],
                env=full_env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            ),
        )
        for args in commands
    ]
    done = []
    for args, process in processes:
        out, err = process.communicate(timeout=TIMEOUT)
        done.append(Finished(args, process.returncode, out, err))
    return done


def snapshot(db_url: str) -> dict[str, Any]:
    """The rows the job wrote, without ids and instants of the real clock."""

    def work(conn: sa.Connection) -> dict[str, Any]:
        return {
            "messages": sorted(
                (m.recipient, m.status, m.reason_code, m.attempts, m.send_at.isoformat())
                for m in conn.execute(sa.select(messages))
            ),
            "quota_alerts": sorted(
                (a.day, a.threshold) for a in conn.execute(sa.select(quota_alerts))
            ),
            "send_counters": sorted(tuple(c) for c in conn.execute(sa.select(send_counters))),
            # The check's own row holds what it saw of the tick running beside it
            # (finished yet or not): a matter of timing, so only its outcome counts.
            "heartbeats": sorted(
                (
                    h.command,
                    h.outcome,
                    h.exit_code,
                    "" if h.command == "heartbeat" else json.dumps(h.counts, sort_keys=True),
                )
                for h in conn.execute(sa.select(heartbeats))
            ),
        }

    with Database(db_url) as db:
        return db.transaction(work, read_only=True)


def told(db_url: str) -> tuple[int, int]:
    """(alerts recorded, alerts recorded as told to Slack)."""

    def work(conn: sa.Connection) -> tuple[int, int]:
        recorded = conn.execute(sa.select(sa.func.count()).select_from(alert_rows)).scalar()
        slack = alert_deliveries.c
        notified = conn.execute(
            sa.select(sa.func.count())
            .select_from(alert_deliveries)
            .where(slack.channel == "slack", slack.notified_at.is_not(None))
        ).scalar()
        return int(recorded or 0), int(notified or 0)

    with Database(db_url) as db:
        return db.transaction(work, read_only=True)


def run_job(
    db_url: str, endpoint: ScriptedHTTPServer, smtp: SmtpServer, config: Path, count: int
) -> list[Finished]:
    """The same job on either database: due mail, a tick that already succeeded five
    minutes ago (so the check is green), then tick, digest and the check at once."""
    bulk_insert(db_url, count)
    env = {**smtp.env, "SCHEDCTL_DAILY_QUOTA": str(QUOTA), "SCHEDCTL_NOW": T0.isoformat()}
    [before] = start_ticks(
        1, db_url, {**env, "SCHEDCTL_NOW": (T0 - timedelta(minutes=5)).isoformat()}
    )
    assert before.returncode == 0, before.stderr
    config.write_text(f'[heartbeat.ping_urls]\ndigest = "{endpoint.url}{DIGEST_PING}"\n')
    env.update(
        SCHEDCTL_CONFIG=str(config), SCHEDCTL_SLACK_WEBHOOK_URL=f"{endpoint.url}{SLACK_PATH}"
    )
    return run_together(
        db_url,
        env,
        ("tick", "--json"),
        ("digest", "--json"),
        ("heartbeat", "--check", "--command", "tick", "--ping-url", f"{endpoint.url}{CHECK_PING}"),
    )


# mode -> (due messages, the quota's thresholds they reach)
CASES = {"500/429": (12, 3), "hang/trickle": (8, 1)}


@pytest.mark.parametrize("mode", list(CASES))
def test_a_failing_side_channel_changes_nothing_about_the_job(
    db_url: str, baseline_db_url: str, dialect: str, tmp_path: Path, mode: str
) -> None:
    """Invariant: with the Slack webhook and both kinds of ping answering 500, 429,
    hanging or trickling, tick, digest and `heartbeat --check` exit as with a healthy endpoint and
    leave the same rows and the same mail; every process ends; no secret is printed."""
    count, alerts = CASES[mode]
    with (
        ScriptedHTTPServer("ok") as healthy,
        ScriptedHTTPServer(mode) as failing,
        SmtpServer(credentials=SMTP_CREDENTIALS) as good_smtp,
        SmtpServer(credentials=SMTP_CREDENTIALS) as smtp,
    ):
        with ThreadPoolExecutor(2) as pool:  # both runs at once: the test waits less
            healthy_run = pool.submit(
                run_job, baseline_db_url, healthy, good_smtp, tmp_path / "healthy.toml", count
            )
            faulty_run = pool.submit(
                run_job, db_url, failing, smtp, tmp_path / "failing.toml", count
            )
            baseline, faulty = healthy_run.result(), faulty_run.result()
        healthy_paths, failing_paths = Counter(healthy.paths), Counter(failing.paths)
        told_lines = [
            line.split(":")[0]
            for method, path, body in healthy.requests
            if path == SLACK_PATH
            for line in json.loads(body)["text"].splitlines()[1:]
        ]
        mail, good_mail = Counter(smtp.recipients), Counter(good_smtp.recipients)
        assert smtp.logins > 0  # the password was used
        assert good_smtp.logins > 0

    # The healthy run did what the scenario is about: alerts and pings went out, each
    # alert told once (in one notification or spread over the jobs that ended after it).
    slack_posts = healthy_paths.pop(SLACK_PATH)
    assert healthy_paths == {
        DIGEST_PING + "/start": 1,
        DIGEST_PING: 1,
        CHECK_PING + "/start": 1,
        CHECK_PING: 1,
    }
    assert 1 <= slack_posts <= alerts
    assert sorted(told_lines) == sorted(
        f"• [quota] Mail quota at {t}%" for t in (80, 90, 100)[:alerts]
    )
    assert told(baseline_db_url) == (alerts, alerts)
    # The failing endpoint got each ping, retried as webhook.py says, then given up;
    # each job that found the alerts untold tried once, and left them for a later one.
    assert failing_paths.pop(SLACK_PATH) >= 1
    assert failing_paths == {
        DIGEST_PING + "/start": 2,
        DIGEST_PING: 2,
        CHECK_PING + "/start": 2,
        CHECK_PING: 2,
    }
    assert told(db_url) == (alerts, 0)
    tick, digest, check = faulty
    assert any("Slack alert to 127.0.0.1" in f.stderr for f in faulty)
    assert "ping/start to 127.0.0.1" in digest.stderr
    assert "ping/start to 127.0.0.1" in check.stderr

    assert [f.returncode for f in faulty] == [f.returncode for f in baseline] == [0, 0, 0]
    assert json.loads(tick.stdout) == json.loads(baseline[0].stdout)
    assert json.loads(digest.stdout) == json.loads(baseline[1].stdout)
    assert snapshot(db_url) == snapshot(baseline_db_url)
    assert mail == good_mail
    assert sum(mail.values()) == min(count, QUOTA)
    for finished in [*faulty, *baseline]:
        for secret in SECRETS:
            assert secret not in finished.stdout + finished.stderr, (finished.args, secret)

    losses = sum((good_mail - mail).values())
    duplicates = sum(c - 1 for c in mail.values() if c > 1)
    fault_ledger.record(
        f"side channels: {mode}",
        dialect,
        "job's exit codes, rows and mail as with a healthy endpoint; ends; no secret shown",
        iterations=sum(failing_paths.values()),
        losses=losses,
        duplicates=duplicates,
        note="Slack alerts, digest ping_urls, heartbeat --check --ping-url",
    )
    assert losses == duplicates == 0
