"""Writing a dispatch's messages in a helper process, beside the connections sending them.

Building a message with the ``email`` package and writing it out for SMTP costs about
0.2 ms of CPU, as much as the rest of its send. A dispatch's connections are threads
of one process and take turns on its one interpreter lock, so that work kept them
waiting: with four connections, leaving it out (a message built once and reused)
lifted a 5,000-message dispatch on PostgreSQL from about 830 to 1,040 messages/s on
the 2-core development machine. A :class:`Builder` hands it to one helper process:
each connection passes its claimed batch's rows as it claims them, and takes each
message, as SMTP will carry it (:class:`~schedctl.delivery.transport.Written`), when
it comes to send it.

The helper only builds (``dispatch.message_for`` and the SMTP backend's own writer:
the same bytes as in the thread). It holds no connection, claims and records
nothing, and sends nothing, so it cannot change what is sent or how often: whatever
it does not give back (it died, it could not build a message, it is slow) is built
in the sending thread as before. It is forked once per dispatch, and only from a
process running no other thread (forking beside threads may copy a lock that one of
them holds); it ignores Ctrl-C (the command's own handling stops the dispatch), and
ends with the dispatch, or at once when the process that forked it is gone (even
killed).
"""

from __future__ import annotations

import logging
import os
import signal
import stat
import sys
import threading
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

from schedctl.delivery.transport import Written

if TYPE_CHECKING:  # (imported when a helper starts: not paid by every idle tick)
    from concurrent.futures import Future, ProcessPoolExecutor

log = logging.getLogger(__name__)

WORTH_AFTER = 50
"""A claim of fewer rows than this starts no helper: forking one costs about as much
as building that many messages in the thread."""

_CHUNK = 16  # rows per task: the queues' cost per task is paid once per chunk
# Seconds a connection waits for a message before it builds it itself: the helper
# writes a chunk in milliseconds, and a wait must stay well inside a lease's half.
_WAIT = 5.0

Write = Callable[[Any, datetime], Written]
"""What the helper runs per row: the row (as the claim read it) and the Date to give
the message, to its written form."""

_write: Write | None = None  # the helper's, set as it starts


class Builder:
    """A helper process writing claimed messages; shared by a dispatch's connections."""

    def __init__(self, pool: ProcessPoolExecutor) -> None:
        self._pool: ProcessPoolExecutor | None = pool
        self._pending: dict[int, tuple[Future[list[Written | None]], int]] = {}
        self._lock = threading.Lock()

    @classmethod
    def start(cls, write: Write) -> Builder | None:
        """A builder whose helper runs ``write``, or None where it cannot be forked
        safely (another thread running, no fork on this platform)."""
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        if threading.active_count() != 1 or "fork" not in multiprocessing.get_all_start_methods():
            return None
        # What the streams hold would be written again by the helper as it ends.
        for stream in (sys.stdout, sys.stderr):
            if stream is not None:
                stream.flush()
        pool = ProcessPoolExecutor(
            max_workers=1,
            mp_context=multiprocessing.get_context("fork"),
            initializer=_helper_starts,
            initargs=(write,),
        )
        pool.submit(int)  # forks the helper now, while this is the only thread
        log.debug("a helper process writes this dispatch's messages")
        return cls(pool)

    @property
    def working(self) -> bool:
        """False once the helper is gone (the dispatch then builds in its threads)."""
        return self._pool is not None

    def submit(self, rows: Sequence[Any], date: datetime, fields: Callable[[Any], Any]) -> None:
        """Have ``rows`` written, each as ``fields(row)`` (what the helper is sent of
        it: plain values), with ``date`` as their Date."""
        for start in range(0, len(rows), _CHUNK):
            chunk = rows[start : start + _CHUNK]
            with self._lock:
                if self._pool is None:
                    return
                try:
                    future = self._pool.submit(_write_chunk, [fields(r) for r in chunk], date)
                except Exception as exc:  # (BrokenProcessPool: the helper died)
                    self._give_up(exc)
                    return
                for place, row in enumerate(chunk):
                    self._pending[row.id] = (future, place)

    def take(self, row: Any) -> Written | None:
        """``row``'s message as written by the helper; None when it has none for it
        (the caller builds it itself)."""
        with self._lock:
            entry = self._pending.pop(row.id, None)
        if entry is None:
            return None
        future, place = entry
        try:
            return future.result(timeout=_WAIT)[place]
        except Exception as exc:  # died, timed out, or the chunk could not be sent
            with self._lock:
                self._give_up(exc)
            return None

    def close(self) -> None:
        """End the helper (the rows not taken are simply not used)."""
        with self._lock:
            pool, self._pool = self._pool, None
            self._pending.clear()
        _end(pool)

    def _give_up(self, exc: BaseException) -> None:
        # (with self._lock held) The rest of this dispatch builds in its threads.
        log.debug("the message builder stopped (%s): messages are built as they are sent", exc)
        pool, self._pool = self._pool, None
        self._pending.clear()
        _end(pool)


def _end(pool: ProcessPoolExecutor | None) -> None:
    """Kill the helper (it has nothing to finish: a stopped one would otherwise hold
    the command at its exit, which waits for it) and let the pool wind down."""
    if pool is None:
        return
    helpers = getattr(pool, "_processes", None) or {}  # (pid -> Process: CPython's own)
    for process in list(helpers.values()):
        process.kill()  # (multiprocessing signals only a process it has not reaped)
    pool.shutdown(wait=False, cancel_futures=True)


def _helper_starts(write: Write) -> None:
    """In the helper, first: keep what to run, ignore Ctrl-C, and watch the parent."""
    import multiprocessing

    global _write
    _write = write
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # (not the command's handler)
    _close_inherited_sockets()
    parent = multiprocessing.parent_process()
    if parent is not None:
        sentinel = parent.sentinel
        threading.Thread(target=_end_with_parent, args=(sentinel,), daemon=True).start()


def _close_inherited_sockets() -> None:
    """Close, in the helper, the sockets it was forked with (the database's sessions):
    the parent's stay open, and a helper that outlived a killed parent (stopped) would
    otherwise keep a session open. Its own pipes and standard streams stay."""
    try:
        descriptors = [int(name) for name in os.listdir("/proc/self/fd")]
    except OSError:  # (no /proc: nothing to find them by)
        return
    for fd in descriptors:
        try:
            if fd > 2 and stat.S_ISSOCK(os.fstat(fd).st_mode):
                os.close(fd)
        except OSError:  # (the listing's own descriptor, gone already)
            continue


def _end_with_parent(sentinel: int) -> None:
    import multiprocessing.connection

    multiprocessing.connection.wait([sentinel])
    os._exit(0)  # the parent is gone: nothing here is worth finishing


def _write_chunk(rows: list[Any], date: datetime) -> list[Written | None]:
    """In the helper: each row written, or None where it cannot be (its sending
    thread builds it again and settles the error as it always does)."""
    assert _write is not None
    written: list[Written | None] = []
    for row in rows:
        try:
            written.append(_write(row, date))
        except Exception:
            written.append(None)
    return written
