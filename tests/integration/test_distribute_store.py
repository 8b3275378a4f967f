"""The day's plan as schedctl's database stores it (`distribute.store`).

PostgreSQL plans set-based in the database (`store.SetPlanner`: the keyed hash in
SQL, DISTINCT ON, one INSERT of the numbered plan), SQLite row by row in Python
(`store.RowPlanner`, the planner schedctl had before). For one seeded source --
duplicates whose extra columns differ, IDs to trim, numbers, case pairs, non-ASCII
IDs, a name given twice among the extra columns -- both store exactly the assignment
the pure rules compute (`distribute.plan`, applied here as the planner applied them
before), and the same plan the row-by-row planner stored before the set-based one
existed (its digest, recorded from that code on both databases).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import random
from collections.abc import Iterator, Sequence
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

import sqlalchemy as sa

from schedctl.db.database import Database
from schedctl.db.schema import distribution_users
from schedctl.distribute import store
from schedctl.distribute.plan import (
    Campaign,
    as_extra,
    as_user_id,
    hash_key,
    layout,
    source_users,
)

DAY = date(2026, 11, 18)
NOW = datetime(2026, 11, 18, 6, tzinfo=UTC)
SALT = "2026-campaigns"
CAMPAIGNS = [Campaign(f"SC{n:08d}", date(2026, 1, 1), date(2026, 12, 31)) for n in (1, 2, 3)]
GROUPS = ("A", "B", "C", "D", "E")
CONTROL = ("A",)
FORMAT = "{campaign}.{n}"
EXTRA_NAMES = ("region", "tier", "region")  # a name twice: its last value, first place
CHUNK = 700  # rows per chunk, as the source is streamed
# sha256 of `_listing` of the plan the row-by-row planner stored for `seeded_rows`
# before the set-based planner existed (the same on SQLite and PostgreSQL).
PLAN_BEFORE = "fa85f2988a7c5cbfa05d05bd53c497797541dc63da4899cf9bbc37201f7834d6"


def seeded_rows() -> list[tuple[Any, ...]]:
    """Source rows (ID, region, tier, region): the same on every run."""
    rng = random.Random(20261118)
    ids: list[Any] = [f"{rng.randrange(10**11, 10**12)}" for _ in range(1800)]
    ids += [f"  {rng.randrange(10**11, 10**12)} ", rng.randrange(10**11, 10**12)]
    ids += [Decimal(f"{rng.randrange(10**11, 10**12)}.0"), 880000000012.0, "ab12cd", "AB12CD"]
    ids += ["é日本-7", "Ωmega", "x" * 60, "000000000150", "150"]
    tiers: list[Any] = [None, 3, Decimal("2.50"), date(2026, 1, 2), True, b"gold", "t"]
    rows = [
        (user_id, rng.choice(["north", "south", None]), rng.choice(tiers), f"r{n % 17}")
        for n, user_id in enumerate(ids)
    ]
    # Read again later with other extra values: the first row read of an ID wins.
    again = [(user_id, "again", "again", "again") for user_id in rng.sample(ids, 300)]
    rows += [(None, "no id", 1, "x"), ("   ", "blank", 2, "y"), ("", "empty", 3, "z")]
    mixed = rows + again
    head, tail = mixed[:1000], mixed[1000:]
    rng.shuffle(tail)  # duplicates spread over later chunks
    return head + tail


def assignment_before(rows: Sequence[tuple[Any, ...]]) -> dict[str, tuple[Any, ...]]:
    """Each user's (position, campaign, group, group id, sort key, extra columns) as
    the row-by-row planner computed them: the first row of each ID, ordered by
    HMAC-SHA256 of the ID keyed by the date and salt (the ID breaking a tie), placed
    by the layout of the plan's pure rules."""
    users: dict[str, dict[str, Any]] = {}
    for raw_id, *values in rows:
        user_id = as_user_id(raw_id)
        if user_id is not None and user_id not in users:
            users[user_id] = {n: as_extra(v) for n, v in zip(EXTRA_NAMES, values, strict=True)}
    key = hash_key(DAY, SALT)

    def digest(user_id: str) -> bytes:
        return hmac.new(key, user_id.encode(), hashlib.sha256).digest()

    order = sorted(users, key=lambda u: (digest(u), u))
    slots = layout(len(order), CAMPAIGNS, GROUPS, CONTROL, FORMAT)
    placed = {}
    for slot in slots:
        for seq in range(slot.first, slot.last + 1):
            user_id = order[seq - 1]
            placed[user_id] = (
                seq, slot.campaign.id, slot.group, slot.group_id, digest(user_id), users[user_id]
            )  # fmt: skip
    return placed


def chunks(rows: Sequence[tuple[Any, ...]]) -> Iterator[Sequence[tuple[Any, ...]]]:
    for start in range(0, len(rows), CHUNK):
        yield rows[start : start + CHUNK]


def make_plan(db: Database, rows: Sequence[tuple[Any, ...]]) -> int:
    """Plan the rows as `distribute` does; the day's id."""

    def work(conn: sa.Connection) -> int:
        day = store.create_or_lock_day(conn, DAY, NOW)
        planner = store.planner(conn, day.id, hash_key(DAY, SALT), EXTRA_NAMES)
        for chunk in chunks(rows):
            planner.add(source_users(chunk))
        planner.assign(layout(planner.count(), CAMPAIGNS, GROUPS, CONTROL, FORMAT))
        return day.id

    return db.transaction(work)


def stored(db: Database, day_id: int) -> dict[str, tuple[Any, ...]]:
    du = distribution_users.c
    query = sa.select(
        du.user_id, du.seq, du.campaign_id, du.group_name, du.group_id, du.sort_key, du.extras
    ).where(du.distribution_id == day_id)
    rows = db.transaction(lambda conn: conn.execute(query).all(), read_only=True)
    return {r[0]: (int(r[1]), r[2], r[3], r[4], bytes(r[5]), json.loads(r[6])) for r in rows}


def _listing(plan: dict[str, tuple[Any, ...]]) -> str:
    """A plan as the lines "position, ID, group id, extra columns" in order, hashed."""
    lines = sorted(
        (seq, user_id, group_id, json.dumps(extras, sort_keys=True))
        for user_id, (seq, _, _, group_id, _, extras) in plan.items()
    )
    return hashlib.sha256(repr(lines).encode()).hexdigest()


def test_the_stored_plan_assigns_each_user_as_before(db: Database) -> None:
    rows = seeded_rows()
    day_id = make_plan(db, rows)
    plan = stored(db, day_id)
    expected = assignment_before(rows)
    assert len(plan) == len(expected) > 1800
    assert plan == expected
    assert _listing(plan) == PLAN_BEFORE


def test_a_plan_made_again_is_the_same(db: Database) -> None:
    """Nothing random: planning the same rows again (a later day's rerun after the
    plan was dropped) stores the same plan."""
    rows = seeded_rows()
    first = stored(db, make_plan(db, rows))
    db.transaction(lambda c: c.execute(distribution_users.delete()))
    db.transaction(lambda c: c.exec_driver_sql("DELETE FROM distributions"))
    assert stored(db, make_plan(db, rows)) == first
