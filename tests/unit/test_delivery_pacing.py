"""The pacer: the sends of every connection of a process take evenly spaced turns."""

from __future__ import annotations

import threading

import pytest

from schedctl.delivery.pacing import Pacer


class FakeTime:
    """A clock that only moves when the pacer sleeps (or the test says so)."""

    def __init__(self) -> None:
        self.now = 100.0
        self.slept: list[float] = []

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


def test_turns_are_one_interval_apart() -> None:
    time = FakeTime()
    pacer = Pacer(4, clock=time.clock, sleep=time.sleep)

    starts = []
    for _ in range(5):
        pacer.wait()
        starts.append(time.now)

    assert starts == [100.0, 100.25, 100.5, 100.75, 101.0]
    assert time.slept == [0.25] * 4


def test_time_spent_elsewhere_counts_towards_the_next_turn() -> None:
    time = FakeTime()
    pacer = Pacer(2, clock=time.clock, sleep=time.sleep)

    pacer.wait()
    time.now += 0.3  # the send itself took that long
    assert pacer.wait() == pytest.approx(0.2)
    time.now += 5  # an idle while: no burst is saved up
    assert pacer.wait() == 0
    assert pacer.wait() == pytest.approx(0.5)


def test_waiting_threads_get_distinct_turns_in_order() -> None:
    """Four threads ask at the same instant: each gets its own slot, one interval after
    the one before; no two are handed the same turn."""
    time = FakeTime()
    lock = threading.Lock()
    waits: list[float] = []
    pacer = Pacer(10, clock=time.clock, sleep=lambda seconds: None)  # the clock stands still

    def take() -> None:
        waited = pacer.wait()
        with lock:
            waits.append(waited)

    threads = [threading.Thread(target=take) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert sorted(waits) == pytest.approx([0.0, 0.1, 0.2, 0.3])


@pytest.mark.parametrize("rate", [0, -1.0, float("nan")])
def test_a_pace_needs_a_positive_rate(rate: float) -> None:
    with pytest.raises(ValueError, match="positive"):
        Pacer(rate)
