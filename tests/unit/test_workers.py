"""workers.wait_for: a command's threads are waited for through interrupts."""

from __future__ import annotations

import threading
import time

import pytest

from schedctl.workers import Worker, wait_for


def _busy_worker_whose_wait_is_interrupted() -> Worker:
    """A started worker that ends after 0.2 s; the first wait for it raises
    KeyboardInterrupt, as Ctrl-C would in the middle of the wait."""
    release = threading.Event()
    worker = Worker(lambda: release.wait(5), name="w")
    worker.start()
    real_wait = worker.ended.wait
    calls = 0

    def interrupted_wait(timeout: float | None = None) -> bool:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise KeyboardInterrupt
        return real_wait(timeout)

    worker.ended.wait = interrupted_wait  # type: ignore[method-assign]
    threading.Timer(0.2, release.set).start()
    return worker


def test_an_interrupt_during_the_wait_is_raised_once_the_worker_has_ended() -> None:
    worker = _busy_worker_whose_wait_is_interrupted()
    told: list[BaseException] = []
    with pytest.raises(KeyboardInterrupt):
        wait_for([worker], told.append)
    assert worker.ended.is_set()
    assert [type(e) for e in told] == [KeyboardInterrupt]


def test_stopping_the_workers_may_itself_be_interrupted_and_the_wait_goes_on() -> None:
    worker = _busy_worker_whose_wait_is_interrupted()

    def on_interrupt(exc: BaseException) -> None:
        raise RuntimeError("a second Ctrl-C while stopping them")

    start = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        wait_for([worker], on_interrupt)
    assert worker.ended.is_set()
    assert time.monotonic() - start >= 0.15  # it waited for the worker


def test_a_worker_never_started_is_not_waited_for_and_one_that_raised_has_ended(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(threading, "excepthook", lambda args: None)  # (the raise is meant)
    never = Worker(lambda: None, name="never")

    def boom() -> None:
        raise ValueError("boom")

    failed = Worker(boom, name="failed")
    failed.start()
    wait_for([never, failed], lambda exc: None)
    assert failed.ended.is_set()
    assert not never.ended.is_set()
