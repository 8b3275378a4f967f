"""Alerts told once across processes (SPEC §12, §10): four `schedctl tick` processes
started at once see the same run fail for good; whichever one fails it records the
alert, whichever ends after that tells it, and each channel gets it exactly once.
"""

from __future__ import annotations

import os
import subprocess
from collections import Counter
from pathlib import Path

import sqlalchemy as sa

from schedctl.db.database import Database
from schedctl.db.schema import messages
from support.alerts import (
    DUE,
    LATER,
    SECRETS,
    alert_mail,
    bodies,
    failing_schedules,
    notified,
    run_ids,
    write_config,
)
from support.cli import SCHEDCTL
from support.http_server import ScriptedHTTPServer
from support.processes import Schedctl
from support.smtp_server import SmtpServer

TICKS = 4


def start_ticks(db_url: str, env: dict[str, str], count: int, now: str) -> list[tuple[int, str]]:
    """Start ``count`` `tick -v` processes at once; their (exit code, output) once done."""
    full = {k: v for k, v in os.environ.items() if not k.startswith("SCHEDCTL_")}
    full.update(env, SCHEDCTL_DATABASE_URL=db_url, SCHEDCTL_NOW=now, NO_COLOR="1")
    processes = [
        Schedctl(
            [str(SCHEDCTL), "-v", "tick", "--json"],
            env=full,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(count)
    ]
    done = []
    for process in processes:
        out, err = process.communicate(timeout=120)
        done.append((process.returncode, out + err))
    return done


def test_four_ticks_seeing_the_same_failed_run_tell_each_channel_once(
    db_url: str, tmp_path: Path
) -> None:
    failing_schedules(db_url, 1)
    with (
        ScriptedHTTPServer() as slack,
        ScriptedHTTPServer() as hook,
        SmtpServer() as smtp,
    ):
        env = {**smtp.env, "SCHEDCTL_CONFIG": str(write_config(tmp_path, slack, hook, "o@x.io"))}
        racing = start_ticks(db_url, env, TICKS, DUE)
        # A later tick sends the ALERT mail queued by the racing ones, and tells nothing new.
        later = start_ticks(db_url, env, 1, LATER[0])
        mail = alert_mail(smtp)

    [run_id] = run_ids(db_url)
    key = f"run_failed:{run_id}"
    # The one tick that executed the run exits 1 for it; the others found nothing to do.
    assert sorted(code for code, _ in racing) == [0] * (TICKS - 1) + [1]
    assert [code for code, _ in later] == [0]
    slack_lines = [line for post in bodies(slack) for line in post["text"].splitlines()[1:]]
    assert [line.split(" of schedule")[0] for line in slack_lines] == [
        f"• [run_failed] run {run_id}"
    ]
    told = Counter(a["key"] for document in bodies(hook) for a in document["alerts"])
    assert told == {key: 1}
    with Database(db_url, environ={}) as db:
        queued = db.scalar(
            sa.select(sa.func.count()).select_from(messages).where(messages.c.type == "ALERT")
        )
    assert queued == 1
    assert [(m["To"], m["Subject"]) for m in mail] == [("o@x.io", "schedctl: 1 new alert")]
    assert notified(db_url) == [(key, channel, True) for channel in ("mail", "slack", "webhook")]
    for _, output in racing + later:
        for secret in SECRETS:
            assert secret not in output
