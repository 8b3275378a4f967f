"""The lease mechanism (leases.py) over any table with lease columns, on both dialects.

A scratch table stands for the kinds of work to come (distributions): the functions
know nothing of runs or messages, only ``id``, ``lease_owner`` and ``lease_expires_at``.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa

from schedctl import leases
from schedctl.db.database import Database
from schedctl.db.types import UTCDateTime

T0 = datetime(2026, 6, 1, 9, 0, tzinfo=UTC)
LEASE = timedelta(minutes=10)

_scratch = sa.MetaData()
work = sa.Table(
    "leased_work",
    _scratch,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("state", sa.Text, nullable=False),
    sa.Column("lease_owner", sa.Text),
    sa.Column("lease_expires_at", UTCDateTime),
    sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
)


@pytest.fixture
def db(db: Database) -> Database:
    """The suite's `db` (conftest), with five rows of a scratch table of leased work."""
    _scratch.create_all(db.engine)
    db.transaction(
        lambda conn: conn.execute(work.insert(), [{"id": n, "state": "new"} for n in range(1, 6)])
    )
    return db


def rows(db: Database) -> dict[int, Any]:
    query = sa.select(work).order_by(work.c.id)
    return {r.id: r for r in db.transaction(lambda c: c.execute(query).all(), read_only=True)}


def claim(
    conn: sa.Connection, owner: str, at: datetime, limit: int = 2, lease: timedelta = LEASE
) -> list[int]:
    """How a kind of work claims: the free rows, SKIP LOCKED, then the stamp."""
    candidates = (
        sa.select(work.c.id)
        .where(work.c.state == "new", leases.free(work, at))
        .order_by(work.c.id)
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    ids = [int(i) for i in conn.execute(candidates).scalars()]
    leases.stamp(conn, work, ids, owner, at + lease, state="new")
    return ids


def ids_where(db: Database, condition: sa.ColumnElement[bool]) -> list[int]:
    query = sa.select(work.c.id).where(condition).order_by(work.c.id)
    return [int(i) for i in db.transaction(lambda c: c.execute(query).scalars(), read_only=True)]


def test_stamp_marks_owner_and_expiry_and_returns_the_columns_asked_for(db: Database) -> None:
    returned = db.transaction(
        lambda conn: leases.stamp(
            conn, work, [1, 2], "a:1:x", T0 + LEASE, returning=[work.c.id, work.c.state],
            state="claimed",
        )
    )  # fmt: skip

    assert sorted((r.id, r.state) for r in returned) == [(1, "claimed"), (2, "claimed")]
    found = rows(db)
    assert [(found[i].lease_owner, found[i].lease_expires_at) for i in (1, 2)] == [
        ("a:1:x", T0 + LEASE)
    ] * 2
    assert (found[3].lease_owner, found[3].lease_expires_at) == (None, None)
    assert ids_where(db, leases.held_by(work, "a:1:x")) == [1, 2]


def test_live_expired_and_free_meet_at_the_expiry_instant(db: Database) -> None:
    db.transaction(lambda conn: leases.stamp(conn, work, [1], "a:1:x", T0 + LEASE))
    before, at_expiry = T0 + LEASE - timedelta(microseconds=1), T0 + LEASE

    assert ids_where(db, leases.live(work, before)) == [1]
    assert ids_where(db, leases.expired(work, before)) == []
    assert ids_where(db, leases.free(work, before)) == [2, 3, 4, 5]
    # A lease is over at its expiry instant: expired, free, no longer live.
    assert ids_where(db, leases.live(work, at_expiry)) == []
    assert ids_where(db, leases.expired(work, at_expiry)) == [1]
    assert ids_where(db, leases.free(work, at_expiry)) == [1, 2, 3, 4, 5]
    # Never leased is free but not expired: nothing died holding it.
    assert ids_where(db, leases.expired(work, T0 + timedelta(days=1))) == [1]
    # The check on a row already read agrees with the SQL.
    row = rows(db)[1]
    assert (leases.is_live(row, before), leases.is_live(row, at_expiry)) == (True, False)
    assert leases.is_live(rows(db)[2], before) is False


def test_renew_extends_only_the_owners_leases(db: Database) -> None:
    db.transaction(lambda conn: leases.stamp(conn, work, [1, 2], "a:1:x", T0 + LEASE))
    db.transaction(lambda conn: leases.stamp(conn, work, [3], "b:2:y", T0 + LEASE))
    later = T0 + LEASE / 2 + LEASE

    held = db.transaction(lambda conn: leases.renew(conn, work, [1, 2, 3], "a:1:x", later))

    assert held == {1, 2}
    found = rows(db)
    assert [found[i].lease_expires_at for i in (1, 2, 3)] == [later, later, T0 + LEASE]
    assert found[3].lease_owner == "b:2:y"


def test_finish_and_release_act_only_while_still_the_owner(db: Database) -> None:
    db.transaction(lambda conn: leases.stamp(conn, work, [1, 2, 3], "a:1:x", T0 + LEASE))

    stranger = db.transaction(
        lambda conn: leases.finish(conn, work, "b:2:y", work.c.id == 1, state="done")
    )
    finished = db.transaction(
        lambda conn: leases.finish(conn, work, "a:1:x", work.c.id == 1, state="done")
    )
    # Extra conditions narrow a release: row 3 is not in the state asked for.
    released = db.transaction(
        lambda conn: leases.release(conn, work, [2, 3], "a:1:x", work.c.id != 3, state="again")
    )

    assert (stranger, finished, released) == (0, 1, 1)
    found = rows(db)
    assert (found[1].state, found[1].lease_owner, found[1].lease_expires_at) == ("done", None, None)
    assert (found[2].state, found[2].lease_owner, found[2].lease_expires_at) == (
        "again",
        None,
        None,
    )
    assert (found[3].state, found[3].lease_owner) == ("new", "a:1:x")


def test_an_expired_lease_is_taken_over_and_the_old_owner_finishes_nothing(db: Database) -> None:
    first = db.transaction(lambda conn: claim(conn, "dead:1:x", T0))
    assert first == [1, 2]
    assert db.transaction(lambda conn: claim(conn, "live:2:y", T0 + LEASE / 2)) == [3, 4]

    # The first owner's leases ran out (it died, or overran); another claims them.
    taken = db.transaction(lambda conn: claim(conn, "next:3:z", T0 + LEASE, limit=10))
    assert taken == [1, 2, 5]  # 3 and 4 are under a live lease: never touched

    lost = db.transaction(
        lambda conn: leases.finish(conn, work, "dead:1:x", work.c.id.in_(first), state="done")
    )
    gone = db.transaction(lambda conn: leases.renew(conn, work, first, "dead:1:x", T0 + 2 * LEASE))
    assert (lost, gone) == (0, set())
    assert {i: r.lease_owner for i, r in rows(db).items()} == {
        1: "next:3:z", 2: "next:3:z", 3: "live:2:y", 4: "live:2:y", 5: "next:3:z"
    }  # fmt: skip


@pytest.mark.parametrize("dialect", [pytest.param("postgresql", marks=pytest.mark.postgres)])
def test_concurrent_claimers_skip_each_others_rows(db: Database) -> None:
    """Two open claim transactions (two connections): the second skips the locked rows."""
    with db.engine.connect() as one, db.engine.connect() as two, one.begin():
        mine = claim(one, "one:1:x", T0)
        with two.begin():
            theirs = claim(two, "two:2:y", T0)
    assert (mine, theirs) == ([1, 2], [3, 4])
    assert ids_where(db, leases.held_by(work, "one:1:x")) == [1, 2]
    assert ids_where(db, leases.held_by(work, "two:2:y")) == [3, 4]


# --- work whose lease expired -------------------------------------------------------------


def _after_expiry(expiry: leases.Expiry, now: datetime) -> dict[str, Any]:
    return {"state": "failed" if expiry.final else "again", "attempts": expiry.attempts}


# The scratch table as a kind of leased work: in flight while "new", an attempt counted
# when its outcome is recorded (as messages count theirs).
LEASED_WORK = leases.LeasedWork(
    work, in_flight=work.c.state == "new", attempts=work.c.attempts, counted_at_claim=False,
    after=_after_expiry,
)  # fmt: skip


def _leave_expired_work(db: Database) -> datetime:
    """1 and 2 expired (2 on its last attempt), 3 live, 4 expired but finished, 5 never
    leased; the instant at which that is so."""

    def work_(conn: sa.Connection) -> None:
        leases.stamp(conn, work, [1, 2, 4], "dead:1:x", T0 + LEASE)
        leases.stamp(conn, work, [3], "live:2:y", T0 + 2 * LEASE)
        conn.execute(work.update().where(work.c.id == 2).values(attempts=2))
        conn.execute(work.update().where(work.c.id == 4).values(state="done"))

    db.transaction(work_)
    return T0 + LEASE


def test_recover_settles_expired_work_by_the_kinds_decision_and_only_once(db: Database) -> None:
    at = _leave_expired_work(db)

    counted = db.transaction(
        lambda conn: leases.count_expired(conn, LEASED_WORK, at, max_attempts=3), read_only=True
    )
    recovered = db.transaction(
        lambda conn: leases.recover(conn, LEASED_WORK, at, max_attempts=3, limit=10)
    )
    again = db.transaction(
        lambda conn: leases.recover(conn, LEASED_WORK, at, max_attempts=3, limit=10)
    )

    assert counted == (1, 1)
    assert recovered == leases.Recovered(retried=(1,), failed=(2,))
    assert again == leases.Recovered()
    found = rows(db)
    assert [(r.state, r.attempts, r.lease_owner, r.lease_expires_at) for r in found.values()] == [
        ("again", 1, None, None),
        ("failed", 3, None, None),
        ("new", 0, "live:2:y", T0 + 2 * LEASE),  # live: never touched
        ("done", 0, "dead:1:x", T0 + LEASE),  # not in flight: its kind's to settle
        ("new", 0, None, None),  # never leased: nothing died holding it
    ]


def test_recover_takes_at_most_limit_rows_in_order_and_the_conditions_asked(
    db: Database,
) -> None:
    at = _leave_expired_work(db)

    first = db.transaction(
        lambda conn: leases.recover(
            conn, LEASED_WORK, at, work.c.id != 1, max_attempts=3, limit=1,
            order_by=[work.c.id.desc()],
        )
    )  # fmt: skip
    assert first == leases.Recovered(failed=(2,))
    assert rows(db)[1].lease_owner == "dead:1:x"


@pytest.mark.parametrize("dialect", [pytest.param("postgresql", marks=pytest.mark.postgres)])
def test_recover_skips_rows_another_transaction_holds(db: Database) -> None:
    at = _leave_expired_work(db)
    held = sa.select(work.c.id).where(work.c.id == 1).with_for_update()
    with db.engine.connect() as other, other.begin():
        other.execute(held).all()
        recovered = db.transaction(
            lambda conn: leases.recover(conn, LEASED_WORK, at, max_attempts=3, limit=10)
        )
    assert recovered == leases.Recovered(failed=(2,))
