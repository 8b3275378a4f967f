"""Leases: how a process holds claimed work across transactions (SPEC §4, §7, §8).

One mechanism for every kind of claimed work -- schedule runs, outbox messages, and
any table with ``lease_owner`` and ``lease_expires_at`` columns (distributions) -- so
that claimers and reconcile reason about all of them the same way:

- Claim, in one short transaction: select the candidates ``FOR UPDATE SKIP LOCKED``
  (SQLAlchemy writes no row lock for SQLite, whose write lock serialises claimers),
  :func:`stamp` owner and expiry on those taken, commit. The work itself runs with
  no transaction open.
- The owner is :func:`new_owner`: ``host:pid:nonce`` (pids repeat across hosts, and
  on one host once a process is gone).
- A lease is judged by its stored expiry against the one :data:`Clock`: the command's
  start instant (``SCHEDCTL_NOW``, else the database server's clock; see
  ``Database.now``) advanced by this process's monotonic clock. Live while
  ``lease_expires_at > now``, expired from then on: its process died or overran, and
  the work may be claimed again. Never judged by elapsed time alone: a holder still
  at work calls :func:`renew` once half the lease is spent (:func:`half_spent`), so
  a slow holder is not taken over.
- The outcome is recorded by :func:`finish`, only while the owner still holds the
  lease: a holder whose lease ran out and was taken over updates nothing (0 rows)
  and its result is dropped, so the new owner's stands. :func:`release` gives
  unfinished work back the same way. Anyone else (a claim settling a row at once, a
  pause) clears a lease with :data:`CLEARED`.
- Work whose lease expired (its holder died or overran with no outcome recorded) has
  one way back, :func:`recover`, used by the claims of tick and by reconcile alike:
  the attempt the holder lost counts, and the work goes back to be retried at once,
  or fails for good when that was its last attempt (:func:`after_expiry` decides;
  each kind of work, a :class:`LeasedWork`, says what that means for its row, and
  what else failing for good records in the same transaction: its alerts).

Digests take no lease: a digest day is claimed (its rows locked, the (user, date) row
inserted on conflict do nothing) and completed in one transaction, so the row locks
are the lease and nothing is left held when a process dies; the DIGEST message it
enqueues is sent under a message lease like any other.
"""

from __future__ import annotations

import functools
import os
import secrets
import socket
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from types import MappingProxyType
from typing import Any, TypeVar

import sqlalchemy as sa

Clock = Callable[[], datetime]
T = TypeVar("T")

# The values that end a lease (a row no process holds).
CLEARED: Mapping[str, None] = MappingProxyType({"lease_owner": None, "lease_expires_at": None})


def clock_from(start: datetime) -> Clock:
    """The clock of one command: ``start`` advanced by the monotonic clock.

    ``start`` is the command's instant (SCHEDCTL_NOW or the database's time), so
    leases and timestamps move on from an injected time the way they would from the
    real one, and a host's wall clock being stepped meanwhile changes nothing.
    """
    origin = time.monotonic()

    def now() -> datetime:
        return start + timedelta(seconds=time.monotonic() - origin)

    return now


def new_owner() -> str:
    """A lease owner for this process: host:pid plus a nonce (pids repeat across hosts)."""
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"


def held(owner: str, expires_at: datetime) -> dict[str, Any]:
    """The column values of a lease held by ``owner`` until ``expires_at``."""
    return {"lease_owner": owner, "lease_expires_at": expires_at}


# --- predicates ------------------------------------------------------------------------


def held_by(table: sa.Table, owner: str) -> sa.ColumnElement[bool]:
    """``owner`` holds the row's lease (live or not: a lease is only taken over by a
    new claim, which changes the owner)."""
    return table.c.lease_owner == owner


def live(table: sa.Table, at: datetime) -> sa.ColumnElement[bool]:
    """Someone holds the row under a lease that has not expired at ``at``."""
    expires = table.c.lease_expires_at
    return sa.and_(expires.is_not(None), expires > at)


def expired(table: sa.Table, at: datetime) -> sa.ColumnElement[bool]:
    """The row was leased and the lease ran out by ``at``: its holder died or overran."""
    return table.c.lease_expires_at <= at


def free(table: sa.Table, at: datetime) -> sa.ColumnElement[bool]:
    """No live lease at ``at``: never leased, released, or expired (``NOT live``)."""
    expires = table.c.lease_expires_at
    return sa.or_(expires.is_(None), expires <= at)


def unleased(table: sa.Table) -> sa.ColumnElement[bool]:
    """No lease at all: never leased, or ended (finished, released, recovered) --
    what a claim takes once :func:`recover` has sent expired work back."""
    return table.c.lease_expires_at.is_(None)


def is_live(row: Any, at: datetime) -> bool:
    """:func:`live`, for a row already read."""
    return row.lease_expires_at is not None and bool(row.lease_expires_at > at)


def wait_while_held(
    attempt: Callable[[datetime], T],
    now: datetime,
    wait: timedelta,
    busy: type[Exception],
    poll: float = 0.5,
) -> T:
    """``attempt(at)``, again every ``poll`` seconds while it raises ``busy`` -- an
    operator's change that refuses, writing nothing, while a row it would change is
    under a live lease at ``at`` -- until it goes through or ``wait`` has passed since
    ``now`` (then ``busy`` is raised)."""
    clock = clock_from(now)
    deadline = clock() + wait
    while True:
        try:
            return attempt(clock())
        except busy:
            if clock() >= deadline:
                raise
        time.sleep(poll)


def half_spent(expires_at: datetime, length: timedelta, now: datetime) -> bool:
    """Whether a lease of ``length`` ending at ``expires_at`` is half gone at ``now``:
    time to renew it, or to give back what has not been started."""
    return now >= expires_at - length / 2


# --- operations ------------------------------------------------------------------------


def stamp(
    conn: sa.Connection,
    table: sa.Table,
    ids: Sequence[int],
    owner: str,
    expires_at: datetime,
    *,
    returning: Iterable[sa.ColumnElement[Any]] = (),
    **values: Any,
) -> list[sa.Row[Any]]:
    """Lease the rows ``ids`` (just claimed in this transaction) to ``owner`` until
    ``expires_at``, setting ``values`` too; the ``returning`` columns of each row."""
    statement = (
        table.update().where(table.c.id.in_(ids)).values(**held(owner, expires_at), **values)
    )
    columns = list(returning)
    if not columns:
        conn.execute(statement)
        return []
    return list(conn.execute(statement.returning(*columns)).all())


def renew(
    conn: sa.Connection, table: sa.Table, ids: Sequence[int], owner: str, expires_at: datetime
) -> set[int]:
    """Extend ``owner``'s leases on ``ids`` to ``expires_at``; the ids it still holds."""
    statement = (
        table.update()
        .where(table.c.id.in_(ids), held_by(table, owner))
        .values(lease_expires_at=expires_at)
        .returning(table.c.id)
    )
    return {int(i) for i in conn.execute(statement).scalars()}


def finish(
    conn: sa.Connection,
    table: sa.Table,
    owner: str,
    *where: sa.ColumnElement[bool],
    **values: Any,
) -> int:
    """Set ``values`` on the rows matching ``where`` and end the lease -- only on those
    ``owner`` still holds. Returns how many: 0 means the lease was taken over (or the
    row is gone), and this holder's outcome must be dropped."""
    statement = table.update().where(held_by(table, owner), *where).values(**CLEARED, **values)
    return int(conn.execute(statement).rowcount)


def finish_one(conn: sa.Connection, table: sa.Table, owner: str, row_id: int, **values: Any) -> int:
    """:func:`finish` for one row by id: the same guarded UPDATE, as one statement per
    table and keys of ``values`` (:func:`finishing_one`) -- a dispatcher records an
    outcome per message, and building a statement for each costs more than running it.
    ``values`` are plain values, not SQL expressions."""
    statement = finishing_one(table, tuple(values))
    return int(conn.execute(statement, finishing_params(owner, row_id, values)).rowcount)


@functools.cache
def finishing_one(table: sa.Table, keys: tuple[str, ...]) -> sa.Update:
    """:func:`finish_one`'s UPDATE, built once per table and ``keys``: the lease
    cleared and ``keys`` bound as ``set_<key>``; a larger statement may embed it. Run
    it with :func:`finishing_params`."""
    cleared = {key: None for key in CLEARED}
    bound = {key: sa.bindparam(f"set_{key}", type_=table.c[key].type) for key in keys}
    guarded = table.update().where(
        table.c.id == sa.bindparam("_id"), table.c.lease_owner == sa.bindparam("_owner")
    )
    return guarded.values({**cleared, **bound})  # a key given overrides its clearing


def finishing_params(owner: str, row_id: int, values: dict[str, Any]) -> dict[str, Any]:
    """The parameters of :func:`finishing_one` (keys: ``tuple(values)``)."""
    return {"_id": row_id, "_owner": owner, **{f"set_{k}": v for k, v in values.items()}}


def release(
    conn: sa.Connection,
    table: sa.Table,
    ids: Sequence[int],
    owner: str,
    *where: sa.ColumnElement[bool],
    **values: Any,
) -> int:
    """Give back the rows ``ids`` that ``owner`` still holds, unfinished (``values``
    undo what the claim set); how many."""
    return finish(conn, table, owner, table.c.id.in_(ids), *where, **values)


# --- work whose lease expired ----------------------------------------------------------


@dataclass(frozen=True)
class Expiry:
    """What becomes of one piece of work whose lease expired."""

    attempts: int  # attempts made, the one the dead holder lost included
    final: bool  # none is left: the work fails for good


def after_expiry(attempts: int, max_attempts: int | None, *, counted: bool) -> Expiry:
    """The decision for work whose holder died: the lost attempt counts -- nobody
    recorded its outcome, and it may have had effects (a mail server may have taken
    the message) -- and the work fails for good when that was its ``max_attempts``-th,
    else it is retried at once. ``counted``: the claim counted the attempt already
    (runs count one when it starts, messages when its outcome is recorded).
    ``max_attempts`` None: work without a limit, which always resumes."""
    made = attempts if counted else attempts + 1
    return Expiry(made, max_attempts is not None and made >= max_attempts)


@dataclass(frozen=True)
class LeasedWork:
    """One kind of leased work, as :func:`recover` sees its table."""

    table: sa.Table
    in_flight: sa.ColumnElement[bool]  # the rows a holder leases (its statuses)
    attempts: sa.ColumnElement[int] | None  # the attempt counter; None: no limit
    counted_at_claim: bool  # see after_expiry's ``counted``
    # The row's new values for a decision at an instant (recover clears the lease).
    after: Callable[[Expiry, datetime], Mapping[str, Any]]
    # Called in recover's transaction with the ids it failed for good (their alerts).
    on_failed: Callable[[sa.Connection, Sequence[int], datetime], None] | None = None


@dataclass(frozen=True)
class Recovered:
    """The rows :func:`recover` sent back to be retried, and those it failed."""

    retried: tuple[int, ...] = ()
    failed: tuple[int, ...] = ()


def _expired_work(work: LeasedWork, at: datetime) -> sa.ColumnElement[bool]:
    return sa.and_(work.in_flight, expired(work.table, at))


def _attempts(work: LeasedWork) -> sa.ColumnElement[int]:
    return work.attempts if work.attempts is not None else sa.literal(0)


def recover(
    conn: sa.Connection,
    work: LeasedWork,
    now: datetime,
    *where: sa.ColumnElement[bool],
    max_attempts: int | None,
    limit: int,
    order_by: Sequence[sa.ColumnElement[Any]] = (),
) -> Recovered:
    """Settle up to ``limit`` rows of ``work`` left in flight under a lease expired by
    ``now`` (and matching ``where``), each by :func:`after_expiry` and the kind's
    ``after``, its lease cleared. Rows another transaction holds are skipped; a row
    under a live lease is never touched. Oldest ``order_by`` first (default: id)."""
    table = work.table
    decided: dict[Expiry, list[int]] = {}
    for row in conn.execute(expired_rows(work, now, *where, limit=limit, order_by=order_by)):
        expiry = after_expiry(int(row.attempts), max_attempts, counted=work.counted_at_claim)
        decided.setdefault(expiry, []).append(int(row.id))
    for expiry, ids in decided.items():
        values = work.after(expiry, now)
        conn.execute(table.update().where(table.c.id.in_(ids)).values(**values, **CLEARED))
    recovered = Recovered(
        retried=tuple(sorted(i for e, ids in decided.items() if not e.final for i in ids)),
        failed=tuple(sorted(i for e, ids in decided.items() if e.final for i in ids)),
    )
    if recovered.failed and work.on_failed is not None:
        work.on_failed(conn, recovered.failed, now)
    return recovered


def expired_rows(
    work: LeasedWork,
    now: datetime,
    *where: sa.ColumnElement[bool],
    limit: int,
    order_by: Sequence[sa.ColumnElement[Any]] = (),
) -> sa.Select[Any]:
    """:func:`recover`'s query: up to ``limit`` rows of ``work`` in flight under a lease
    expired by ``now`` (and matching ``where``), locked, skipping rows another
    transaction holds; (id, attempts). (The outbox's are found by an index of the
    leased rows, messages_leased.)"""
    table = work.table
    return (
        sa.select(table.c.id, _attempts(work).label("attempts"))
        .where(_expired_work(work, now), *where)
        .order_by(*(order_by or [table.c.id]))
        .limit(limit)
        .with_for_update(skip_locked=True)
    )


def count_expired(
    conn: sa.Connection, work: LeasedWork, now: datetime, *, max_attempts: int | None
) -> tuple[int, int]:
    """What :func:`recover` would settle now, over the whole table: (retried, failed)."""
    attempts = _attempts(work).label("attempts")
    query = sa.select(attempts, sa.func.count().label("rows")).where(_expired_work(work, now))
    if work.attempts is not None:
        query = query.group_by(attempts)
    retried = failed = 0
    for row in conn.execute(query):
        if after_expiry(int(row.attempts), max_attempts, counted=work.counted_at_claim).final:
            failed += int(row.rows)
        else:
            retried += int(row.rows)
    return retried, failed
