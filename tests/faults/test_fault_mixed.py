"""Every cron command at once, round after round, on one database.

Invariant: with tick, digest, distribute and reconcile processes started together
(six per round on PostgreSQL and SQLite), for several rounds an hour apart
(SCHEDCTL_NOW advancing), no hourly slot is run twice, no message reaches the SMTP
server twice, every due digest goes out exactly once holding exactly its
notifications (the §5 model), each distribution assignment is written exactly once
to each destination (the §6 model), the abandoned messages and runs reconcile
recovers are sent and run once, the purges keep what they must, and nothing is lost.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from support import fault_ledger
from support.fault_world import PAST_LEASES, FaultWorld, Size
from support.smtp_server import SmtpServer

MIX = ("tick", "digest", "distribute", "reconcile", "tick", "digest")


INVARIANT = "no slot/mail/digest/assignment twice, none lost"


def test_every_command_at_once_for_several_rounds(
    dialect: str, db_url: str, smtp: SmtpServer, tmp_path: Path
) -> None:
    rounds = fault_ledger.soak(3, 12)
    world = FaultWorld(
        dialect, db_url, smtp, tmp_path, size=Size(), rounds_back=rounds + 1, seed=23
    )
    try:
        for k in range(rounds):
            # Each round starts the mix in another order.
            mix = MIX[k % len(MIX) :] + MIX[: k % len(MIX)]
            world.concurrently(mix, world.round_time(k))
        world.recover(world.round_time(rounds - 1) + PAST_LEASES)
        counts = world.check()
    finally:
        world.close()
    counts.record("mixed commands, concurrent rounds", dialect, INVARIANT, rounds)
    assert counts.resent_after_data == 0  # nothing was killed here
    print(f"\n{dialect}: {world.summary()}")


@pytest.mark.parametrize("dialect", ["sqlite"])
def test_the_checks_count_a_lost_mail_and_a_doubled_assignment(
    dialect: str, db_url: str, smtp: SmtpServer, tmp_path: Path
) -> None:
    """The counting itself can fail: one mail the server never got and one row a
    destination holds twice are each counted once."""
    small = Size(schedules=4, users=20, notifications=100)
    world = FaultWorld(dialect, db_url, smtp, tmp_path, size=small, rounds_back=2, seed=5)
    try:
        for command in ("tick", "distribute"):
            world.run(command, world.round_time(0))
        world.recover(world.round_time(0) + PAST_LEASES, ["distribute"])
        with world.engine.connect() as conn:
            report_id = conn.exec_driver_sql(
                "SELECT min(message_id) FROM messages WHERE type = 'REPORT'"
            ).scalar_one()
        report = smtp.accepted[smtp.message_ids.index(report_id)]
        smtp.accepted.remove(report)
        with world.dist_engine.begin() as conn:
            conn.exec_driver_sql(
                "INSERT INTO sc_target SELECT * FROM sc_target WHERE iin ="
                " (SELECT min(iin) FROM sc_target)"
            )
        counts = world.check()
    finally:
        world.close()
    assert +counts.losses == Counter({"message never received": 1}), counts.losses
    assert +counts.duplicates == Counter({"sc_target row twice": 1}), counts.duplicates


# One process of each round's mix dies at a point every such process reaches,
# whatever the others do (the other processes of the round race it).
ROUND_KILLS = [
    ("distribute", "schedctl.distribute.endpoints:DestinationWriter.write:after:3"),
    ("tick", "schedctl.schedules.runs:materialise_due:after"),
    ("digest", "schedctl.delivery.dispatch:dispatch_due:before"),
    ("reconcile", "schedctl.reconcile:purge:after:2"),
    ("tick", "schedctl.delivery.dispatch:dispatch_due:before"),
    ("digest", "schedctl.digest.run:DigestRun.claim_due:after"),
]


def test_every_command_at_once_with_one_killed_each_round(
    dialect: str, db_url: str, smtp: SmtpServer, tmp_path: Path
) -> None:
    """Invariant: as above, with one process of each round SIGKILLed at a chosen
    point (the first round's distribute mid-copy, a tick after creating runs, a
    digest before sending, a reconcile between purges, ...) and the next rounds and
    the recovery past every lease carrying on."""
    rounds = fault_ledger.soak(2, len(ROUND_KILLS) * 2)
    world = FaultWorld(
        dialect, db_url, smtp, tmp_path, size=Size(), rounds_back=rounds + 1, seed=29
    )
    killed = 0
    try:
        for k in range(rounds):
            now = world.round_time(k)
            victim, point = ROUND_KILLS[k % len(ROUND_KILLS)]
            if victim == "distribute" and k:  # the date is distributed: no copy to kill
                victim, point = ("tick", "schedctl.schedules.runs:execute_due_runs:after")
            others = list(MIX)
            others.remove(victim)  # the victim takes its place in the mix
            started = [(victim, world.popen(victim, now, kill_at=point))]
            started += [(c, world.popen(c, now)) for c in others]
            done = [world.wait(p, c) for c, p in started]
            assert done[0].code == -9, (victim, point, done[0].code, done[0].stderr)
            killed += 1
            for proc in done[1:]:
                assert proc.code == 0, (proc.command, proc.code, proc.stderr)
                world.ran(proc.command, now)
        world.recover(world.round_time(rounds - 1) + PAST_LEASES)
        counts = world.check()
    finally:
        world.close()
    counts.record("mixed commands, one killed each round", dialect, INVARIANT, rounds)
