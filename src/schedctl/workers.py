"""Threads a command starts beside its own (a dispatch's connections, a digest's
claimers) and waits for, through an interrupt.

Not with Thread.join: on Python 3.11 a join interrupted by Ctrl-C (a signal whose
handler raises) marks a thread that is still running as stopped, so the next join
returns at once and the command could go on, or exit, while the thread is half way
through a send or a transaction. A :class:`Worker` sets its own ``ended`` event
instead, and :func:`wait_for` waits on those.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence


class Worker(threading.Thread):
    """A daemon thread running ``target()``; ``ended`` is set once it has returned
    or raised."""

    def __init__(self, target: Callable[[], object], name: str) -> None:
        super().__init__(name=name, daemon=True)
        self._work = target
        self.ended = threading.Event()

    def run(self) -> None:
        try:
            self._work()
        finally:
            self.ended.set()


def wait_for(workers: Sequence[Worker], on_interrupt: Callable[[BaseException], object]) -> None:
    """Wait until every started worker has ended. An exception raised meanwhile (a
    KeyboardInterrupt, a signal's) is passed to ``on_interrupt`` (which should tell
    the workers to stop), the wait goes on, and the first such exception is raised
    once they have ended."""
    interrupt: BaseException | None = None
    for worker in workers:
        while worker.ident is not None and not worker.ended.is_set():
            try:
                worker.ended.wait()
            except BaseException as exc:
                interrupt = interrupt or exc
                try:
                    on_interrupt(exc)
                except BaseException as again:  # (a second Ctrl-C while stopping them)
                    interrupt = interrupt or again
    if interrupt is not None:
        raise interrupt
