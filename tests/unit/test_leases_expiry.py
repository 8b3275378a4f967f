"""What becomes of work whose lease expired (leases.after_expiry): pure, for every kind.

Runs count an attempt when it starts (``counted``), messages when its outcome is
recorded; either way the attempt the dead holder lost counts once, and the work
fails for good when that was its last.
"""

from __future__ import annotations

import pytest

from schedctl import leases


@pytest.mark.parametrize(
    ("attempts", "max_attempts", "expected"),
    [
        (0, 3, leases.Expiry(attempts=1, final=False)),
        (1, 3, leases.Expiry(attempts=2, final=False)),
        (2, 3, leases.Expiry(attempts=3, final=True)),  # the lost one was the third
        (7, 3, leases.Expiry(attempts=8, final=True)),  # max_attempts lowered since
        (0, 1, leases.Expiry(attempts=1, final=True)),
    ],
)
def test_work_counted_at_its_outcome_counts_the_lost_attempt(
    attempts: int, max_attempts: int, expected: leases.Expiry
) -> None:
    assert leases.after_expiry(attempts, max_attempts, counted=False) == expected


@pytest.mark.parametrize(
    ("attempts", "max_attempts", "expected"),
    [
        (1, 3, leases.Expiry(attempts=1, final=False)),
        (2, 3, leases.Expiry(attempts=2, final=False)),
        (3, 3, leases.Expiry(attempts=3, final=True)),
        (4, 3, leases.Expiry(attempts=4, final=True)),
    ],
)
def test_work_counted_at_its_claim_has_counted_the_lost_attempt_already(
    attempts: int, max_attempts: int, expected: leases.Expiry
) -> None:
    assert leases.after_expiry(attempts, max_attempts, counted=True) == expected


def test_work_without_an_attempt_limit_is_never_final() -> None:
    assert leases.after_expiry(10_000, None, counted=True) == leases.Expiry(10_000, final=False)
