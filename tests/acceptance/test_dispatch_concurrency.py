"""Concurrent `schedctl tick` processes deliver every message exactly once (SPEC §10)."""

from __future__ import annotations

import os
import subprocess
from datetime import timedelta

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
