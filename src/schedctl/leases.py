"""Leases: how a process holds claimed work across transactions (SPEC §4, §7, §8).

One mechanism for every kind of claimed work -- schedule runs, outbox messages, and
any table with ``lease_owner`` and ``lease_expires_at`` columns (distributions) -- so
that claimers and reconcile reason about all of them the same way:

- Claim, in one short transaction: select the candidates with
  :func:`schedctl.db.dialect.claim` (FOR UPDATE SKIP LOCKED on PostgreSQL; SQLite's
  write lock serialises claimers), :func:`stamp` owner and expiry on those taken,
  commit. The work itself runs with no transaction open.
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
from datetime import datetime, timedelta
from types import MappingProxyType
from typing import Any

import sqlalchemy as sa

Clock = Callable[[], datetime]

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


def is_live(row: Any, at: datetime) -> bool:
    """:func:`live`, for a row already read."""
    return row.lease_expires_at is not None and bool(row.lease_expires_at > at)


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
    table whose SET clause follows the keys of ``values`` -- a dispatcher records an
    outcome per message, and building a statement for each costs more than running it.
    ``values`` are plain values, not SQL expressions."""
    params = {"_id": row_id, "_owner": owner, **CLEARED, **values}
    return int(conn.execute(_finish_by_id(table), params).rowcount)


@functools.cache
def _finish_by_id(table: sa.Table) -> sa.Update:
    return table.update().where(
        table.c.id == sa.bindparam("_id"), table.c.lease_owner == sa.bindparam("_owner")
    )


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
