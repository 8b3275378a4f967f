"""The lease clock and owner (leases.py): pure, with the monotonic clock injected."""

from __future__ import annotations

import os
import socket
from datetime import UTC, datetime, timedelta

import pytest

from schedctl import leases

T0 = datetime(2026, 6, 1, 9, 0, tzinfo=UTC)


def test_the_clock_moves_on_from_its_start_by_monotonic_time(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    ticks = iter([100.0, 100.0, 190.5, 250.0])
    monkeypatch.setattr(leases.time, "monotonic", lambda: next(ticks))

    clock = leases.clock_from(T0)  # started at monotonic 100.0

    assert clock() == T0
    assert clock() == T0 + timedelta(seconds=90.5)
    assert clock() == T0 + timedelta(seconds=150)


def test_a_clock_from_an_injected_instant_is_not_the_wall_clock() -> None:
    past = datetime(2001, 1, 1, tzinfo=UTC)
    clock = leases.clock_from(past)
    first, second = clock(), clock()
    assert past <= first <= second < past + timedelta(minutes=1)


def test_an_owner_is_host_pid_and_a_nonce_unique_per_call() -> None:
    owner = leases.new_owner()
    host, pid, nonce = owner.rsplit(":", 2)
    assert (host, pid) == (socket.gethostname(), str(os.getpid()))
    assert len(nonce) == 6
    assert leases.new_owner() != owner


@pytest.mark.parametrize(
    ("elapsed", "spent"),
    [
        (timedelta(minutes=4, seconds=59), False),
        (timedelta(minutes=5), True),
        (timedelta(hours=1), True),
    ],
)
def test_a_lease_is_half_spent_from_its_midpoint(elapsed: timedelta, spent: bool) -> None:
    lease = timedelta(minutes=10)
    assert leases.half_spent(T0 + lease, lease, T0 + elapsed) is spent


def test_held_and_cleared_are_the_lease_columns() -> None:
    assert leases.held("h:1:x", T0) == {"lease_owner": "h:1:x", "lease_expires_at": T0}
    assert dict(leases.CLEARED) == {"lease_owner": None, "lease_expires_at": None}
