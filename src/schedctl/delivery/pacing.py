"""Pacing: at most ``[smtp] max_per_second`` sends per second from one process.

One :class:`Pacer` is shared by every SMTP connection of a dispatch. It is a token
bucket that holds one token, refilled every ``1 / max_per_second`` seconds: each send
takes its turn -- the next free slot, at least one interval after the previous one --
and waits for it. So the sends of all connections together are spaced evenly, never
closer than one interval, and no half-open second holds more than ``max_per_second``
of them. A turn is only taken right before a message goes to the server; messages
settled without a send (expired, quota used up) do not wait.

Turns are handed out in the order they are asked for, so with ``n`` connections a
send waits at most ``n / max_per_second`` seconds for its turn; the message lease
covers twice that (schedctl.config.min_lease).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable


class Pacer:
    """Even spacing of sends over the threads of one process (see the module)."""

    def __init__(
        self,
        per_second: float,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], object] = time.sleep,
    ) -> None:
        if not per_second > 0:
            raise ValueError("a pace needs a positive number of sends per second")
        self.interval = 1.0 / per_second
        self._clock = clock
        self._sleep = sleep
        self._lock = threading.Lock()
        self._next: float | None = None  # the earliest start of the next turn

    def wait(self) -> float:
        """Take the next turn and wait for it; the seconds waited."""
        with self._lock:
            now = self._clock()
            turn = now if self._next is None else max(self._next, now)
            self._next = turn + self.interval
        delay = turn - now
        if delay > 0:
            self._sleep(delay)
        return delay
