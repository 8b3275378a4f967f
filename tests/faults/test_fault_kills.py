"""Each command SIGKILLed at a chosen point, then rerun.

Invariant: a `tick`, `digest`, `distribute` or `reconcile` process killed (SIGKILL,
no cleanup) at any of the points below, then run again as cron would -- at once,
and past every lease it left (reconcile first) -- loses nothing and does nothing
twice: no slot run twice, no message received twice by the SMTP server, every due
digest once with exactly its notifications, every distribution assignment once in
each destination, every abandoned message and orphaned run recovered once. The one
documented exception (docs/delivery.md, "Exactly once"): a sender killed after the
server accepted the data and before the outcome was recorded sends that message
once more, with the same Message-ID; it is counted apart (the ledger's note), never
as a duplicate. Senders dispatch over CONNECTIONS SMTP connections at once, each
committing an outcome before the server can accept its next message, so a kill cuts
off at most one such message per connection: exactly one when it strikes the first
connection's first outcome (the others open only after it), up to CONNECTIONS
mid-batch.

The points are functions of src (tests/faults/killpoints/sitecustomize.py makes the
process kill itself right before or after the nth call), not moments: the same run
dies at the same place every time. A kill that does not happen fails the test.
"""

from __future__ import annotations

import shutil
import signal
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from support import fault_ledger
from support.databases import pg_url
from support.fault_world import CONNECTIONS, PAST_LEASES, FaultWorld, Size
from support.smtp_server import SmtpServer

SMALL = Size(schedules=6, users=40, notifications=240)


@dataclass(frozen=True)
class Kill:
    name: str
    command: str
    at: str  # FAULT_KILL_AT: module:function:before|after[:nth]
    # What the database shows right after the kill, proving where it happened.
    probe: Callable[[FaultWorld], bool]
    # The documented window: how many messages the kill may cut off after their data
    # was accepted and before their outcome was recorded (each may be resent once),
    # at least and at most.
    after_data: tuple[int, int] = (0, 0)
    size: Size = SMALL


def scalar(world: FaultWorld, sql: str) -> int:
    with world.engine.connect() as conn:
        return int(conn.execute(sa.text(sql)).scalar_one())


def runs(world: FaultWorld, where: str = "1 = 1") -> int:
    return scalar(world, f"SELECT count(*) FROM schedule_runs WHERE {where}")


def sent_in_db(world: FaultWorld) -> int:
    return scalar(world, "SELECT count(*) FROM messages WHERE status = 'sent'")


def accepted_beyond_db(world: FaultWorld) -> bool:
    """The server accepted one message more than the outbox says was sent."""
    return len(world.smtp.accepted) == sent_in_db(world) + 1


def recorded_before(nth: int) -> Callable[[FaultWorld], bool]:
    """Killed over several connections before the ``nth`` message's send or record:
    fewer than ``nth`` recorded sent, yet some (the first connection's first message
    is recorded before the others open)."""
    return lambda w: 1 <= sent_in_db(w) < nth


def old_heartbeats_left(world: FaultWorld) -> int:
    ids = ", ".join(map(str, world.old_heartbeats))
    return scalar(world, f"SELECT count(*) FROM heartbeats WHERE id IN ({ids})")


# More than the first three claim pages (100, 100 or 200, 200) due at any hour of the
# day the world is anchored to: 316 users or more by the model (400 users gave 178
# to 240, fewer than three pages, between 13:00 and 16:00 UTC).
BIG_DIGEST = Size(users=800, notifications=4800)
# Claims of 100 messages: a dispatch's first claim starts its message-writing helper
# (schedctl.delivery.builder: WORTH_AFTER).
BIG_CLAIMS = Size(users=800, notifications=4800, message_batch=100)

KILLS = [
    # tick: the schedules' claim, the run, the outbox claim, the send
    Kill("tick: before the runs' creation commits", "tick",
         "schedctl.schedules.runs:_materialise_batch:after", lambda w: runs(w) == w.size.orphans),
    Kill("tick: a run claimed, before its report", "tick",
         "schedctl.schedules.runs:execute_run:before",
         lambda w: runs(w, "status = 'running'") >= 1),
    Kill("tick: mid-batch, the third run", "tick", "schedctl.schedules.runs:execute_run:before:3",
         lambda w: runs(w, "status = 'succeeded'") == 2),
    Kill("tick: before the outbox claim commits", "tick",
         "schedctl.delivery.dispatch:Dispatcher.stamp_lease:after",
         lambda w: sent_in_db(w) == 0 and not w.smtp.accepted),
    Kill("tick: critical notifications queued, before the commit", "tick",
         "schedctl.notifications:_link:after",
         lambda w: scalar(w, "SELECT count(*) FROM messages WHERE type = 'NOTIFICATION'") == 0),
    Kill("tick: messages claimed, before the send", "tick",
         "schedctl.delivery.dispatch:Dispatcher.deliver:before", lambda w: not w.smtp.accepted),
    Kill("tick: sent, before the outcome is recorded", "tick",
         "schedctl.delivery.dispatch:Dispatcher._settle_result:before", accepted_beyond_db,
         after_data=(1, 1)),
    Kill("tick: mid-send, the fifth message", "tick",
         "schedctl.delivery.dispatch:Dispatcher.deliver:before:5", recorded_before(5),
         # the other connections' sends in flight, and (PostgreSQL) the fourth's outcome
         # on its way to the database: sent ahead, it commits while the fifth is offered
         after_data=(0, CONNECTIONS)),
    Kill("tick: mid-batch, the sixth message sent, before its outcome is recorded", "tick",
         "schedctl.delivery.dispatch:Dispatcher._settle_result:before:6",
         lambda w: recorded_before(6)(w) and len(w.smtp.accepted) >= 6,
         after_data=(1, CONNECTIONS)),
    # digest: the claim transaction, the page, the send
    Kill("digest: before the claim commits", "digest",
         "schedctl.digest.run:DigestRun._consume:after",
         lambda w: scalar(w, "SELECT count(*) FROM digests") == 0),
    # (pages of 100 users, then 200, all full: at the third, SQLite's one claimer has
    # committed the first two; PostgreSQL's two claimers begin a page of 100 each, and
    # a claimer begins its next page only once its last one committed: one or both)
    Kill("digest: mid-batch, the third claim page", "digest",
         "schedctl.digest.run:DigestRun._claim_page:before:3",
         lambda w: scalar(w, "SELECT count(*) FROM digests")
         in ((300,) if w.dialect == "sqlite" else (100, 200)), size=BIG_DIGEST),
    Kill("digest: claimed, before the send", "digest",
         "schedctl.delivery.dispatch:dispatch_due:before",
         lambda w: scalar(w, "SELECT count(*) FROM digests") > 0 and not w.smtp.accepted),
    Kill("digest: mid-send, messages written by the helper, the 150th", "digest",
         "schedctl.delivery.dispatch:Dispatcher.deliver:before:150", recorded_before(150),
         after_data=(0, CONNECTIONS), size=BIG_CLAIMS),
    Kill("digest: sent, before the outcome is recorded", "digest",
         "schedctl.delivery.dispatch:Dispatcher._settle_result:before", accepted_beyond_db,
         after_data=(1, 1)),
    # distribute: the plan, mid-copy (written, not recorded), a recorded batch, the notice
    Kill("distribute: before the plan commits", "distribute",
         "schedctl.distribute.store:mark_planned:after",
         lambda w: scalar(w, "SELECT count(*) FROM distribution_users") == 0),
    Kill("distribute: mid-copy, written but not recorded", "distribute",
         "schedctl.distribute.endpoints:DestinationWriter.write:after:3",
         lambda w: scalar(w, "SELECT count(*) FROM distribution_destinations"
                             " WHERE last_seq > 0") == 1),
    Kill("distribute: mid-copy of the mirror", "distribute",
         "schedctl.distribute.endpoints:DestinationWriter.write:before:17",
         lambda w: scalar(w, "SELECT count(*) FROM distribution_destinations"
                             " WHERE status = 'completed'") == 2),
    Kill("distribute: copied, before the notice is sent", "distribute",
         "schedctl.distribute.run:DistributeRun.send_notices:before",
         lambda w: scalar(w, "SELECT count(*) FROM distributions"
                             " WHERE status = 'completed'") == 1),
    # reconcile: the recovery transaction, mid-purge
    Kill("reconcile: before a recovery commits", "reconcile",
         "schedctl.leases:recover:after:2",  # the messages' first batch (the runs' is 1)
         lambda w: scalar(w, "SELECT count(*) FROM messages WHERE status = 'retrying'") == 0),
    Kill("reconcile: mid-purge", "reconcile", "schedctl.reconcile:purge_batch:before:4",
         lambda w: 0 < old_heartbeats_left(w) < len(w.old_heartbeats) - 1),
]  # fmt: skip


@pytest.fixture
def fresh_db(
    dialect: str, request: pytest.FixtureRequest, tmp_path: Path
) -> Iterator[Callable[[], str]]:
    """A factory of freshly migrated databases: one per iteration."""
    made: list[str] = []

    def new() -> str:
        if dialect == "postgresql":
            name = request.getfixturevalue("postgres").new()
            made.append(name)
            return pg_url(name)
        path = tmp_path / f"schedctl-{len(made)}.db"
        shutil.copyfile(request.getfixturevalue("sqlite_template"), path)
        made.append(str(path))
        return f"sqlite:///{path}"

    yield new
    if dialect == "postgresql":
        for name in made:
            request.getfixturevalue("postgres").release(name)


def cases() -> list[Any]:
    """Each point on both dialects under FAULT_SOAK=1; in `make test`, on one of them,
    alternately (the CI budget), so both dialects meet every command's kills."""
    out = []
    for n, kill in enumerate(KILLS):
        for dialect in ("sqlite", "postgresql"):
            if fault_ledger.SOAK or (n + (kill.command == "reconcile")) % 2 == (
                dialect == "sqlite"
            ):
                marks = [pytest.mark.postgres] if dialect == "postgresql" else []
                out.append(pytest.param(kill, dialect, marks=marks, id=f"{dialect}-{kill.name}"))
    return out


@pytest.mark.parametrize(("kill", "dialect"), cases())
def test_killed_at_a_chosen_point_then_rerun(
    kill: Kill, dialect: str, fresh_db: Callable[[], str], tmp_path: Path
) -> None:
    iterations = fault_ledger.soak(1, 5)
    lost = duplicated = resent = 0
    for iteration in range(iterations):
        where = tmp_path / f"world-{iteration}"
        where.mkdir()
        with SmtpServer() as smtp:
            world = FaultWorld(
                dialect, fresh_db(), smtp, where, size=kill.size, rounds_back=2,
                seed=40 + iteration,
            )  # fmt: skip
            try:
                now = world.round_time(0)
                killed = world.run(kill.command, now, kill_at=kill.at)
                assert killed.code == -signal.SIGKILL, (killed.code, killed.stderr)
                assert kill.probe(world), f"{kill.at}: the kill did not happen where it should"
                cut_off = world.mark_after_data()
                least, most = kill.after_data
                assert least <= len(cut_off) <= most, cut_off
                rerun = world.run(kill.command, now, check=False)  # the next cron run, at once
                if kill.command == "distribute" and rerun.code == 75:
                    # The dead run's lease still holds the day: "rerun later" (SPEC exit 75).
                    assert "in progress in another run" in rerun.stderr, rerun.stderr
                else:
                    assert rerun.code == 0, (rerun.code, rerun.stderr)
                    world.ran(kill.command, now)
                world.recover(now + PAST_LEASES, [kill.command])
                counts = world.check()
            finally:
                world.close()
        lost += counts.lost
        duplicated += counts.duplicated
        resent += counts.resent_after_data
        assert counts.lost == 0, counts.losses
        assert counts.duplicated == 0, counts.duplicates
        assert counts.resent_after_data <= len(cut_off)
    fault_ledger.record(
        f"SIGKILL {kill.name}",
        dialect,
        "rerun: nothing lost or done twice",
        iterations=iterations,
        losses=lost,
        duplicates=duplicated,
        note=f"{resent} resent after DATA, the documented exception" if resent else "",
    )


@pytest.mark.parametrize(
    "dialect", ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]
)
def test_the_message_writing_helper_killed_the_dispatch_goes_on(
    dialect: str, fresh_db: Callable[[], str], tmp_path: Path
) -> None:
    """The helper that writes a dispatch's messages (schedctl.delivery.builder) is
    SIGKILLed at its third chunk: the command builds the rest in its own threads and
    ends as usual; nothing is lost or sent twice."""
    helper = "schedctl.delivery.builder:_write_chunk:before:3"
    with SmtpServer() as smtp:
        world = FaultWorld(dialect, fresh_db(), smtp, tmp_path, size=BIG_CLAIMS, rounds_back=2)
        try:
            now = world.round_time(0)
            done = world.run("digest", now, "-v", kill_at=helper)
            assert done.code == 0, (done.code, done.stderr)
            assert "the message builder stopped" in done.stderr, done.stderr
            world.ran("digest", now)
            world.recover(now + PAST_LEASES, ["digest"])
            counts = world.check()
        finally:
            world.close()
    assert counts.lost == 0, counts.losses
    assert counts.duplicated == 0, counts.duplicates
    assert counts.resent_after_data == 0
    fault_ledger.record(
        "SIGKILL the message-writing helper mid-dispatch", dialect,
        "the command goes on: nothing lost or done twice", iterations=1,
        losses=counts.lost, duplicates=counts.duplicated,
    )  # fmt: skip
