"""Concurrent `schedctl tick` processes deliver every message exactly once (SPEC §10)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from datetime import timedelta
from pathlib import Path

import pytest

from support.cli import SCHEDCTL
from support.delivery import T0, all_messages, bulk_insert, log_rows, run_ticks
from support.processes import Schedctl
from support.smtp_server import SmtpServer


@pytest.mark.parametrize(
    ("dialect", "messages"),
    [("sqlite", 200), pytest.param("postgresql", 1000, marks=pytest.mark.postgres)],
)
def test_four_ticks_deliver_each_message_exactly_once(
    db_url: str, messages: int, smtp: SmtpServer
) -> None:
    bulk_insert(db_url, messages)

    results = run_ticks(4, db_url, smtp.env)  # no daily quota configured: none applies

    received = smtp.id_counts()
    rows = all_messages(db_url)
    assert len(received) == messages
    assert set(received.values()) == {1}
    assert received.keys() == {m.message_id for m in rows}
    assert {(m.status, m.attempts) for m in rows} == {("sent", 1)}
    assert sum(r["messages_sent"] for r in results) == messages
    assert all(r["messages_failed"] == 0 for r in results)
    assert len(log_rows(db_url)) == messages
    if messages >= 1000:
        # The work was really shared: more than one process sent mail.
        assert sum(1 for r in results if r["messages_sent"]) >= 2


def test_a_tick_killed_mid_send_loses_nothing_and_duplicates_nothing(db_url: str) -> None:
    bulk_insert(db_url, 3)
    with SmtpServer(hold_data=1) as smtp:
        env = {k: v for k, v in os.environ.items() if not k.startswith("SCHEDCTL_")}
        env.update(smtp.env, SCHEDCTL_DATABASE_URL=db_url, SCHEDCTL_NOW=T0.isoformat())
        victim = Schedctl(
            [str(SCHEDCTL), "tick"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        try:
            assert smtp.holding.wait(60), "the tick never reached the DATA command"
        finally:
            victim.kill()  # SIGKILL: no cleanup, its leases stay behind
            victim.communicate()

        while_leased = run_ticks(1, db_url, smtp.env)
        after_expiry = run_ticks(
            2, db_url, {**smtp.env, "SCHEDCTL_NOW": (T0 + timedelta(minutes=11)).isoformat()}
        )

    assert while_leased[0]["messages_sent"] == 0
    assert sum(r["messages_sent"] for r in after_expiry) == 3
    assert len(smtp.message_ids) == 3
    assert set(smtp.id_counts().values()) == {1}
    assert {m.status for m in all_messages(db_url)} == {"sent"}


def _first_child(pid: int, within: float = 30.0) -> int:
    children = Path(f"/proc/{pid}/task/{pid}/children")
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        found = children.read_text().split() if children.exists() else []
        if found:
            return int(found[0])
        time.sleep(0.005)
    raise AssertionError("the tick started no helper")


def _state(pid: int) -> str | None:
    """The process's state letter (R, S, T, Z...), or None once it is gone."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return None


@pytest.mark.parametrize("dialect", [pytest.param("postgresql", marks=pytest.mark.postgres)])
def test_a_stopped_message_writing_helper_holds_up_neither_the_tick_nor_a_session(
    db_url: str, smtp: SmtpServer
) -> None:
    """Found by review: a helper stopped (SIGSTOP) mid-dispatch kept the tick from
    exiting after its summary, and held the database socket it was forked with."""
    bulk_insert(db_url, 600)
    env = {k: v for k, v in os.environ.items() if not k.startswith("SCHEDCTL_")}
    env.update(smtp.env, SCHEDCTL_DATABASE_URL=db_url, SCHEDCTL_NOW=T0.isoformat())
    tick = Schedctl(
        [str(SCHEDCTL), "tick", "--json"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        helper = _first_child(tick.pid)
        time.sleep(0.3)  # (its start: it closes the sockets it was forked with)
        fds = Path(f"/proc/{helper}/fd")
        sockets = [fd for fd in fds.iterdir() if os.readlink(fd).startswith("socket:")]
        os.kill(helper, signal.SIGSTOP)
        out, err = tick.communicate(timeout=120)
    finally:
        tick.kill()
    assert tick.returncode == 0, err
    assert json.loads(out)["messages_sent"] == 600
    assert sockets == []
    assert len(smtp.id_counts()) == 600
    assert set(smtp.id_counts().values()) == {1}
    assert _state(helper) in (None, "Z")  # killed as the dispatch ended
