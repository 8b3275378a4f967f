"""SMTP faults from a scripted loopback server, met by `schedctl tick` processes.

Messages are due in the outbox; tick processes run with SCHEDCTL_NOW advancing 20
minutes per step (longer than any retry delay here) until nothing is left to send,
then once more, three days later. The server answers given MAIL FROM, RCPT
TO and end-of-data commands with 421/451/452 (transient), 550/554 (permanent), the
provider's quota reply 550 5.4.5, drops the connection at RCPT, at MAIL or after the
data, answers later than SCHEDCTL_SMTP_TIMEOUT, or sends its reply a byte at a time
(a tarpit: no single read waits as long as the timeout).

Each tick sends over CONNECTIONS SMTP connections at once, each claiming one message
at a time, so the faults meet every connection.

The policy (README "Messages and delivery", dispatch.py): 4xx and connection
failures are retried with backoff and finally delivered; 5xx fail at once with
PERMANENT_FAILURE and are never offered again; the provider's quota reply defers
(not an attempt) and the message goes out later; no reply after the whole message
was sent (a drop or a timeout) is ``failed`` with UNKNOWN_DELIVERY and never resent
automatically. The one documented source of a second copy is a process dying between
the server's acceptance and the recorded outcome; no process dies here, so the
server must see every message's data at most once.
"""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from support import fault_ledger
from support.delivery import T0, Tick, all_messages, bulk_insert, log_rows, start_ticks
from support.fault_world import CONNECTIONS
from support.smtp_server import DROP, Reply, SmtpServer, slow, tarpit

STEP = timedelta(minutes=20)
MAX_STEPS = 25
LATER = (timedelta(days=3),)  # after the drive: nothing more goes out
TIMEOUT = 2  # SCHEDCTL_SMTP_TIMEOUT, seconds
SLOW = 4.0  # a slow reply comes this long after the command: after the client gave up
# Over CONNECTIONS connections, each claiming one message at a time.
CONFIG = f"[smtp]\nconnections = {CONNECTIONS}\n\n[messages]\nmax_attempts = 10\nbatch_size = 1\n"


def recipient(n: int) -> str:
    return f"user{n}@example.org"  # support.delivery.bulk_insert's recipients


# What each fault does to the message it hits (None: nothing final; retried or deferred).
TRANSIENT = {
    "421 at RCPT": Reply("421 4.7.0 Closing, try later").at("rcpt"),
    "451 at RCPT": Reply("451 4.3.0 Greylisted").at("rcpt"),
    "452 at RCPT": Reply("452 4.5.3 Too many recipients").at("rcpt"),
    "drop at RCPT": DROP.at("rcpt"),
    "slow RCPT": slow("250 OK", SLOW).at("rcpt"),
    "tarpit RCPT": tarpit("250 OK").at("rcpt"),
    "421 after data": Reply("421 4.3.2 Shutting down"),
    "451 after data": Reply("451 4.3.0 Local error"),
    "452 after data": Reply("452 4.3.1 Insufficient system storage"),
}
PERMANENT = {
    "550 at RCPT": Reply("550 5.1.1 No such user").at("rcpt"),
    "554 at RCPT": Reply("554 5.7.1 Relay access denied").at("rcpt"),
    "550 after data": Reply("550 5.7.1 Rejected by policy"),
    "554 after data": Reply("554 5.6.0 Message content rejected"),
}
QUOTA = {
    "550 5.4.5 after data": Reply("550 5.4.5 Daily sending quota exceeded"),
    "550 5.4.5 at RCPT": Reply("550 5.4.5 Daily user sending quota exceeded").at("rcpt"),
}
UNKNOWN = {
    "drop after data": DROP,
    "slow after data": slow("250 2.0.0 Ok: queued late", SLOW),
    "tarpit after data": tarpit("250 2.0.0 Ok: queued, a byte at a time"),
}


def outcome_of(plan: list[str]) -> tuple[str, str | None]:
    """The (status, reason_code) the policy prescribes for a message meeting these
    faults on its successive attempts (then a healthy server)."""
    for name in plan:
        if name in PERMANENT:
            return "failed", "PERMANENT_FAILURE"
        if name in UNKNOWN:
            return "failed", "UNKNOWN_DELIVERY"
    return "sent", None


def reply_of(name: str) -> Reply:
    return {**TRANSIENT, **PERMANENT, **QUOTA, **UNKNOWN}[name]


@dataclass
class Drive:
    """Ticks run against one database and server, and what they reported."""

    db_url: str
    smtp: SmtpServer
    env: dict[str, str]
    processes: int = 1
    ticks: list[tuple[datetime, Tick]] = field(default_factory=list)

    def step(self, now: datetime) -> None:
        for result in start_ticks(self.processes, self.db_url, self.env, now):
            assert result.returncode in (0, 1), result.stderr
            # exit 1 exactly when a message failed in that tick (README exit codes)
            assert (result.returncode == 1) == (result.counts["messages_failed"] > 0), result
            self.ticks.append((now, result))

    def run(self) -> datetime:
        """Tick until nothing is waiting, then a day and a month later; the last now."""
        now = T0
        for _ in range(MAX_STEPS):
            self.step(now)
            if not [m for m in all_messages(self.db_url) if m.status in ("scheduled", "retrying")]:
                break
            now += STEP
        self.settled = {m.id: (m.status, m.attempts) for m in all_messages(self.db_url)}
        self.seen_when_settled = len(self.smtp.seen_ids)
        for later in LATER:
            self.step(now + later)
        return now

    def total(self, key: str) -> int:
        return sum(t.counts.get(key, 0) for _, t in self.ticks)


def check(drive: Drive, expected: dict[str, tuple[str, str | None]]) -> tuple[int, int]:
    """Every message in the state the policy prescribes, received as it prescribes;
    nothing changed by the later ticks. Returns (losses, duplicates), counted."""
    rows = {m.recipient: m for m in all_messages(drive.db_url)}
    seen = Counter(drive.smtp.seen_ids)
    accepted = Counter(drive.smtp.message_ids)
    # A copy the server took (250, or the data arrived and no reply went out) after
    # it already had one: a 4xx-refused copy sent again is no duplicate.
    taken = accepted + Counter(drive.smtp.unanswered_ids)
    duplicates = sum(c - 1 for c in taken.values() if c > 1)
    losses = 0
    for address, (status, reason) in expected.items():
        row = rows[address]
        if status == "sent":
            # delivered: accepted exactly once by the server
            losses += accepted[row.message_id] == 0
            assert (row.status, row.reason_code) == ("sent", None), row
            assert accepted[row.message_id] == 1, row
        elif reason == "PERMANENT_FAILURE":
            # refused: in its documented terminal state, never accepted
            losses += row.status not in ("failed",)
            assert (row.status, row.reason_code) == ("failed", reason), row
            assert accepted[row.message_id] == 0, row
            assert " 55" in (row.last_error or ""), row  # the server's reason is kept
        else:
            # unknown: the server took its data once (earlier copies it refused with a
            # 4xx after the data, e.g. "451 after data", were seen but not taken) and it
            # was never offered again after that
            losses += row.status not in ("failed",)
            assert (row.status, row.reason_code) == ("failed", reason), row
            assert taken[row.message_id] == 1, row
            assert seen[row.message_id] >= 1, row
            assert "may have been delivered" in (row.last_error or ""), row
            outcomes = [e.outcome for e in log_rows(drive.db_url) if e.message_id == row.id]
            assert outcomes[-1] == "unknown", outcomes
    assert set(rows) == set(expected)
    assert duplicates == 0, taken.most_common(3)
    assert drive.settled == {m.id: (m.status, m.attempts) for m in all_messages(drive.db_url)}
    assert len(drive.smtp.seen_ids) == drive.seen_when_settled  # later ticks offered nothing
    # every attempt logged once; the ticks' JSON agrees with the tables
    log = log_rows(drive.db_url)
    assert len(log) == sum(m.attempts for m in rows.values()) + sum(
        1 for entry in log if entry.outcome == "deferred"
    )
    assert drive.total("messages_sent") == sum(1 for s, _ in expected.values() if s == "sent")
    unknown = sum(1 for _, r in expected.values() if r == "UNKNOWN_DELIVERY")
    assert drive.total("messages_unknown") == unknown
    assert drive.total("messages_failed") == sum(1 for s, _ in expected.values() if s == "failed")
    return losses, duplicates


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    config = tmp_path / "schedctl.toml"
    config.write_text(CONFIG)
    return {"SCHEDCTL_CONFIG": str(config), "SCHEDCTL_SMTP_TIMEOUT": str(TIMEOUT)}


FOCUSED = {
    "transient and quota": [*TRANSIENT, *QUOTA],
    "permanent and unknown-outcome": [*PERMANENT, *UNKNOWN],
}


@pytest.mark.parametrize("group", list(FOCUSED))
def test_each_fault_leaves_its_message_in_the_state_the_policy_prescribes(
    db_url: str, dialect: str, env: dict[str, str], group: str
) -> None:
    """Invariant: one fault per message (the message's first attempt), then a healthy
    server; transient (and quota) -> delivered exactly once, permanent -> failed with
    the reason and never offered again, unknown -> failed UNKNOWN_DELIVERY, its data
    seen by the server once and never resent. A message without a fault goes out once."""
    names = FOCUSED[group]
    bulk_insert(db_url, len(names) + 2)
    faults: dict[str, list[Reply | None]] = {
        recipient(n): [reply_of(name)] for n, name in enumerate(names)
    }
    expected = {recipient(n): outcome_of([name]) for n, name in enumerate(names)}
    expected.update({recipient(n): ("sent", None) for n in (len(names), len(names) + 1)})
    # The sequence-scripted MAIL FROM replies hit whatever message comes first.
    mail: list[Any] = ["421 4.7.0 Too busy", DROP] if group.startswith("transient") else []
    with SmtpServer(faults=faults, mail_replies=mail) as smtp:
        drive = Drive(db_url, smtp, {**smtp.env, **env})
        drive.run()
        losses, duplicates = check(drive, expected)
        assert smtp.faults_used == len(names)
        assert not smtp.mail_replies  # each scripted MAIL reply was met
    rows = {m.recipient: m for m in all_messages(db_url)}
    for n, name in enumerate(names):
        if name in TRANSIENT:
            assert rows[recipient(n)].attempts >= 2, (name, rows[recipient(n)])
        if name in QUOTA:
            log = [e for e in log_rows(db_url) if e.message_id == rows[recipient(n)].id]
            assert [e.outcome for e in log] == ["deferred", "sent"], name
            assert rows[recipient(n)].attempts == 1  # a deferral is not an attempt
    fault_ledger.record(
        f"smtp: {group} faults",
        dialect,
        "each message ends as the policy says; none received twice; none lost",
        iterations=len(names) + len(mail),
        losses=losses,
        duplicates=duplicates,
        note=f"{len(drive.ticks)} ticks",
    )
    assert losses == 0


def test_mixed_faults_across_a_batch_with_two_ticks_per_step(
    db_url: str, dialect: str, env: dict[str, str]
) -> None:
    """Invariant: a seeded random mix of faults over a batch, met by two concurrent
    tick processes per step: every message ends in exactly the state the policy
    prescribes for its faults, none is received twice, none is lost."""
    seed = 20261118
    rng = random.Random(seed)
    count = fault_ledger.soak(24, 300)
    bulk_insert(db_url, count)
    fast_unknown = ["drop after data"]
    plans: dict[str, list[str]] = {}
    slow_budget = 1  # slow replies cost a client timeout each: keep a few
    for n in range(count):
        plan: list[str] = []
        for _ in range(rng.choice([0, 0, 1, 1, 2, 3])):
            kind = rng.choices(["transient", "quota", "permanent", "unknown"], [6, 1, 1, 1])[0]
            pool = {
                "transient": list(TRANSIENT),
                "quota": list(QUOTA),
                "permanent": list(PERMANENT),
                "unknown": [*fast_unknown, "slow after data", "tarpit after data"],
            }[kind]
            name = rng.choice(pool)
            if name.startswith(("slow", "tarpit")):
                if slow_budget == 0:
                    name = "drop after data" if kind == "unknown" else "451 at RCPT"
                else:
                    slow_budget -= 1
            plan.append(name)
            if outcome_of(plan)[0] != "sent":
                break  # nothing after a final outcome is ever offered
        plans[recipient(n)] = plan
    faults = {address: [reply_of(name) for name in plan] for address, plan in plans.items()}
    mail: list[Any] = [rng.choice([None, None, None, "421 4.7.0 Busy"]) for _ in range(count)]
    expected = {address: outcome_of(plan) for address, plan in plans.items()}
    with SmtpServer(faults=faults, mail_replies=mail) as smtp:
        drive = Drive(db_url, smtp, {**smtp.env, **env}, processes=2)
        drive.run()
        losses, duplicates = check(drive, expected)
        assert smtp.faults_used == sum(len(plan) for plan in plans.values())
    states = Counter(s if r is None else r for s, r in expected.values())
    fault_ledger.record(
        "smtp: seeded mix of faults, 2 ticks/step",
        dialect,
        "each message ends as the policy says; none received twice; none lost",
        iterations=count,
        losses=losses,
        duplicates=duplicates,
        note=f"seed {seed}, {dict(states)}, {len(drive.ticks)} ticks",
    )
    assert losses == 0


def test_the_docs_and_the_code_state_the_same_unknown_outcome_rule() -> None:
    """The rule the scenarios above assert is the one the docs state: no reply after
    the whole message was sent is failed/UNKNOWN_DELIVERY and never resent; the only
    second copy is a process dying between the server's acceptance and the record."""
    from schedctl.delivery import dispatch
    from support.cli import REPO

    def flat(text: str) -> str:
        return " ".join(text.split())

    readme = flat((REPO / "README.md").read_text(encoding="utf-8"))
    delivery = flat((REPO / "docs" / "delivery.md").read_text(encoding="utf-8"))
    code = flat(dispatch.__doc__ or "")
    assert "recorded as unknown and never resent automatically" in readme
    assert "| no reply after the whole message was sent | `failed`, `UNKNOWN_DELIVERY`" in delivery
    assert "unknown (no reply after the data) → ``failed`` (UNKNOWN_DELIVERY), never resent" in code
    assert "Only a process that dies after the server accepted the data but before the" in code
