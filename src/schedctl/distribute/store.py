"""The day's distribution in schedctl's own database: its row, plan and progress.

A business date has one ``distributions`` row (UNIQUE). The plan -- every distinct
user of the day with their position in the keyed-hash order, campaign and group --
is written in the same transaction that creates (or locks) that row and marks it
``planned`` (`planner`: set-based in the database on PostgreSQL, row by row on
SQLite; the same plan): a process killed while planning leaves nothing, and a
second process planning the same date waits on the row (the unique key on
PostgreSQL, the write lock on SQLite) and then finds the plan made. Copying runs
under the day's lease (`DayLease`, the one place this module touches
`schedctl.leases`); each batch copied to a destination is recorded in
``distribution_destinations`` together with a renewal of the lease.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any, Protocol

import sqlalchemy as sa

from schedctl import leases
from schedctl.db import dialect
from schedctl.db.schema import distribution_destinations, distribution_users, distributions
from schedctl.distribute.plan import Campaign, Slot, as_extra, extras_json, layout, sort_key

# The destinations, in the order they are copied to.
DESTINATIONS = ("control", "target", "mirror")
PURGE_BATCH = 10_000  # plan rows deleted per statement


@dataclass(frozen=True)
class Day:
    """A ``distributions`` row."""

    id: int
    business_date: date
    status: str
    reason: str | None
    stage: str | None
    plan: dict[str, Any] | None
    users: int | None
    source_rows: int | None
    lease_owner: str | None
    lease_expires_at: datetime | None
    planned_at: datetime | None

    @property
    def has_plan(self) -> bool:
        return self.planned_at is not None and self.plan is not None

    def campaigns(self) -> list[Campaign]:
        return [Campaign.from_json(c) for c in (self.plan or {}).get("campaigns", [])]

    def slots(self) -> list[Slot]:
        """The stored plan's ranges of the order (positions -> campaign and group)."""
        plan = self.plan or {}
        return layout(
            self.users or 0,
            self.campaigns(),
            plan["groups"],
            plan["control_groups"],
            plan["group_id_format"],
        )


def _day(row: Any) -> Day:
    plan = row.plan
    if isinstance(plan, str):  # SQLite's JSON may come back as text on old drivers
        plan = json.loads(plan)
    business_date = row.business_date
    if not isinstance(business_date, date):
        business_date = date.fromisoformat(str(business_date))
    return Day(
        id=int(row.id),
        business_date=business_date,
        status=row.status,
        reason=row.reason,
        stage=row.stage,
        plan=plan,
        users=None if row.users is None else int(row.users),
        source_rows=None if row.source_rows is None else int(row.source_rows),
        lease_owner=row.lease_owner,
        lease_expires_at=row.lease_expires_at,
        planned_at=row.planned_at,
    )


def read_day(conn: sa.Connection, business_date: date, *, lock: bool = False) -> Day | None:
    """The date's row (``lock``: held until the transaction ends), or None."""
    query = sa.select(distributions).where(distributions.c.business_date == business_date)
    if lock:
        query = query.with_for_update()
    row = conn.execute(query).first()
    return None if row is None else _day(row)


def create_or_lock_day(conn: sa.Connection, business_date: date, now: datetime) -> Day:
    """The date's row, created ``failed`` (no plan yet) if missing, locked until the
    transaction ends. On PostgreSQL a second transaction inserting the same date
    waits here until the first one ends."""
    dialect.insert_ignore(
        conn,
        distributions,
        [
            {
                "business_date": business_date,
                "status": "failed",
                "reason": "not planned yet",
                "attempts": 0,
                "created_at": now,
                "updated_at": now,
            }
        ],
        ["business_date"],
    )
    day = read_day(conn, business_date, lock=True)
    assert day is not None  # inserted or present, and rows are never deleted here
    return day


def set_unplanned_outcome(
    conn: sa.Connection,
    business_date: date,
    now: datetime,
    *,
    status: str,
    reason: str,
    stage: str | None = None,
    source_rows: int | None = None,
) -> bool:
    """Record a day that ended without a plan (skipped, or failed before planning).

    Only a day with no plan is changed: a concurrent run that planned the date in
    the meantime keeps its plan. Returns whether the row was written.
    """
    day = create_or_lock_day(conn, business_date, now)
    if day.has_plan or day.status == "completed":
        return False
    conn.execute(
        distributions.update()
        .where(distributions.c.id == day.id)
        .values(
            status=status,
            reason=reason,
            stage=stage,
            source_rows=source_rows,
            users=0 if status == "skipped" else None,
            attempts=distributions.c.attempts + 1,
            updated_at=now,
            finished_at=now,
        )
    )
    return True


# --- the plan ------------------------------------------------------------------------


class Planner(Protocol):
    """Makes a day's plan in the planning transaction: takes the source's users
    chunk by chunk -- (ID, the row's extra columns as read) -- then numbers the
    distinct ones in keyed-hash order and gives each its campaign and group. An ID
    read twice keeps the extra columns of the first row read."""

    def add(self, users: Sequence[tuple[str, Sequence[Any]]]) -> None: ...

    def count(self) -> int:
        """How many distinct users were added (after the last `add`)."""
        ...

    def assign(self, slots: Sequence[Slot]) -> None:
        """Store each user's position, campaign and group (`layout` of `count`)."""
        ...


def planner(conn: sa.Connection, day_id: int, key: bytes, extra_names: Sequence[str]) -> Planner:
    """The planner for schedctl's database: set-based in the database where it can
    (`Capabilities.set_based`), row by row elsewhere. Both store the same plan."""
    if dialect.capabilities(conn.dialect).set_based:
        return SetPlanner(conn, day_id, key, extra_names)
    return RowPlanner(conn, day_id, key, extra_names)


class RowPlanner:
    """Each user's keyed hash (`plan.sort_key`) and extra columns (`plan.extras_json`)
    computed here and inserted with the ID; then the numbering and the split in one
    UPDATE."""

    def __init__(
        self, conn: sa.Connection, day_id: int, key: bytes, extra_names: Sequence[str]
    ) -> None:
        self.conn, self.day_id, self.key = conn, day_id, key
        self.extra_names = list(extra_names)

    def add(self, users: Sequence[tuple[str, Sequence[Any]]]) -> None:
        dialect.insert_ignore(
            self.conn,
            distribution_users,
            [
                {
                    "distribution_id": self.day_id,
                    "user_id": user_id,
                    "sort_key": sort_key(self.key, user_id),
                    "extras": extras_json(self.extra_names, values),
                }
                for user_id, values in users
            ],
            ["distribution_id", "user_id"],
        )

    def count(self) -> int:
        du = distribution_users.c
        query = sa.select(sa.func.count()).where(du.distribution_id == self.day_id)
        return int(self.conn.execute(query).scalar_one())

    def assign(self, slots: Sequence[Slot]) -> None:
        """Number the plan's users in the keyed-hash order (ID as tie-break) and give
        each the campaign and group of its position, in one UPDATE."""
        du = distribution_users
        position = (
            sa.func.row_number().over(order_by=(du.c.sort_key, du.c.user_id)).label("position")
        )
        ranked = (
            sa.select(du.c.user_id, position).where(du.c.distribution_id == self.day_id).subquery()
        )

        def by_slot(value: Callable[[Slot], str]) -> sa.ColumnElement[Any]:
            return sa.case(*[(ranked.c.position <= s.last, value(s)) for s in slots])

        self.conn.execute(
            du.update()
            .where(du.c.distribution_id == self.day_id, du.c.user_id == ranked.c.user_id)
            .values(
                seq=ranked.c.position,
                campaign_id=by_slot(lambda s: s.campaign.id),
                group_name=by_slot(lambda s: s.group),
                group_id=by_slot(lambda s: s.group_id),
            )
        )


# The plan's rows, numbered in keyed-hash order (the ID breaks a tie, as in
# RowPlanner.assign), each given the campaign and group of the slot its position
# falls in: width_bucket finds it among the slots' first positions.
_INSERT_PLAN = sa.text(
    """
INSERT INTO distribution_users
    (distribution_id, user_id, sort_key, seq, campaign_id, group_name, group_id, extras)
SELECT :day_id, user_id, sort_key, seq, (CAST(:campaign_ids AS text[]))[slot],
       (CAST(:group_names AS text[]))[slot], (CAST(:group_ids AS text[]))[slot], extras
FROM (
    SELECT user_id, sort_key, extras, seq,
           width_bucket(seq, CAST(:firsts AS bigint[])) AS slot
    FROM (
        SELECT user_id, sort_key, extras,
               row_number() OVER (ORDER BY sort_key, user_id) AS seq
        FROM distribution_users_distinct
    ) AS numbered
) AS placed
"""
)


class SetPlanner:
    """The source's users COPYed into a temporary table as they are read (each extra
    column in a column of its own); then the database de-duplicates them, computes
    each one's keyed hash (`dialect.hmac_sha256`: the same bytes as `plan.sort_key`)
    and its extra columns' JSON object, and numbers and places them in one INSERT
    of the plan. The temporary tables are dropped when the planning transaction
    ends, committed or not, so a run killed while planning leaves nothing."""

    def __init__(
        self, conn: sa.Connection, day_id: int, key: bytes, extra_names: Sequence[str]
    ) -> None:
        self.conn, self.day_id, self.key = conn, day_id, key
        self.extra_names = list(extra_names)
        self.read = 0
        metadata = sa.MetaData()
        temporary: dict[str, Any] = {"prefixes": ["TEMPORARY"], "postgresql_on_commit": "DROP"}
        self.staged = sa.Table(
            "distribution_users_staged",
            metadata,
            sa.Column("ord", sa.BigInteger, nullable=False),  # the order rows were read in
            sa.Column("user_id", sa.Text, nullable=False),
            *[sa.Column(f"extra_{n}", sa.Text) for n in range(len(self.extra_names))],
            **temporary,
        )
        self.distinct = sa.Table(
            "distribution_users_distinct",
            metadata,
            sa.Column("user_id", sa.Text, nullable=False),
            sa.Column("sort_key", sa.LargeBinary, nullable=False),
            sa.Column("extras", sa.Text),
            **temporary,
        )
        metadata.create_all(conn, checkfirst=False)

    def add(self, users: Sequence[tuple[str, Sequence[Any]]]) -> None:
        first = self.read
        self.read += len(users)
        rows = (
            (first + n, user_id, *[as_extra(v) for v in values])
            for n, (user_id, values) in enumerate(users)
        )
        dialect.copy_rows(self.conn, self.staged, [c.name for c in self.staged.columns], rows)

    def count(self) -> int:
        """De-duplicate the users read (the first row of an ID wins): the IDs compare
        byte by byte, as the plan's key compares them, which COLLATE "C" sorts by."""
        s = self.staged.c
        firsts = dialect.first_of_each(
            list(self.staged.columns), s.user_id.collate("C"), s.ord
        ).subquery()
        distinct = sa.select(
            firsts.c.user_id,
            dialect.hmac_sha256(self.key, firsts.c.user_id),
            self._extras_json(firsts),
        )
        statement = self.distinct.insert().from_select(["user_id", "sort_key", "extras"], distinct)
        inserted = self.conn.execute(statement.execution_options(preserve_rowcount=True))
        dialect.analyze(self.conn, self.distinct)
        return int(inserted.rowcount)

    def _extras_json(self, firsts: sa.Subquery) -> sa.ColumnElement[Any]:
        """The extra columns' JSON object (`plan.extras_json`: a name given twice
        keeps its first place and its last value), or NULL when there are none."""
        if not self.extra_names:
            return sa.null()
        last = {name: n for n, name in enumerate(self.extra_names)}
        pairs = [
            item
            for name in dict.fromkeys(self.extra_names)
            for item in (sa.literal(name, sa.Text), firsts.c[f"extra_{last[name]}"])
        ]
        return sa.cast(sa.func.json_build_object(*pairs), sa.Text)

    def assign(self, slots: Sequence[Slot]) -> None:
        self.conn.execute(
            _INSERT_PLAN,
            {
                "day_id": self.day_id,
                "firsts": [s.first for s in slots],
                "campaign_ids": [s.campaign.id for s in slots],
                "group_names": [s.group for s in slots],
                "group_ids": [s.group_id for s in slots],
            },
        )
        # The copy reads the plan by position: planned for the table's new size.
        dialect.analyze(self.conn, distribution_users)


def destination_slots(slots: Sequence[Slot], name: str) -> list[Slot]:
    """The slots a destination receives: control groups, or the others."""
    return [s for s in slots if s.control == (name == "control")]


def mark_planned(
    conn: sa.Connection,
    day_id: int,
    now: datetime,
    *,
    plan: dict[str, Any],
    users: int,
    source_rows: int,
    destinations: Sequence[str],
    slots: Sequence[Slot],
    retention: timedelta,
    lease: DayLease,
) -> None:
    """Store the plan's parameters and progress rows; the planner holds the lease."""
    conn.execute(
        distribution_destinations.insert(),
        [
            {
                "distribution_id": day_id,
                "name": name,
                "status": "pending",
                "rows_planned": sum(s.size for s in destination_slots(slots, name)),
                "rows_inserted": 0,
                "rows_existing": 0,
                "last_seq": 0,
                "updated_at": now,
            }
            for name in destinations
        ],
    )
    conn.execute(
        distributions.update()
        .where(distributions.c.id == day_id)
        .values(
            status="planned",
            reason=None,
            stage=None,
            plan=plan,
            users=users,
            source_rows=source_rows,
            attempts=distributions.c.attempts + 1,
            planned_at=now,
            updated_at=now,
            finished_at=None,
            expires_at=now + retention,
        )
    )
    lease.take(conn, day_id)


@dataclass(frozen=True)
class Progress:
    """A destination's copy progress."""

    name: str
    status: str
    rows_planned: int
    rows_inserted: int
    rows_existing: int
    last_seq: int

    def as_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "status": self.status,
            "rows": self.rows_planned,
            "inserted": self.rows_inserted,
            "existing": self.rows_existing,
        }


def read_progress(conn: sa.Connection, day_id: int) -> list[Progress]:
    """Each destination's progress, in copy order (control, target, mirror)."""
    dd = distribution_destinations.c
    rows = conn.execute(sa.select(distribution_destinations).where(dd.distribution_id == day_id))
    found = {
        r.name: Progress(
            r.name,
            r.status,
            int(r.rows_planned),
            int(r.rows_inserted),
            int(r.rows_existing),
            int(r.last_seq),
        )
        for r in rows
    }
    return [found[name] for name in DESTINATIONS if name in found]


@dataclass(frozen=True)
class PlanBatch:
    """The plan's users at consecutive positions, in order, as JSON arrays: their IDs
    and their extra columns (objects as the plan stores them, or null). Handed on
    as they are, a batch costs no work per user on its way to the destination."""

    ids: str
    extras: str
    size: int


# PostgreSQL (`Capabilities.set_based`): the arrays are built by the database.
_READ_BATCH = sa.text(
    """
SELECT CAST(json_agg(user_id ORDER BY seq) AS text),
       '[' || string_agg(COALESCE(extras, 'null'), ',' ORDER BY seq) || ']',
       count(*)
FROM distribution_users
WHERE distribution_id = :day_id AND seq BETWEEN :first AND :last
"""
)


def read_plan_batch(conn: sa.Connection, day_id: int, first: int, last: int) -> PlanBatch:
    """The plan's users at positions ``first``..``last``."""
    if dialect.capabilities(conn.dialect).set_based:
        params = {"day_id": day_id, "first": first, "last": last}
        ids, extras, size = conn.execute(_READ_BATCH, params).one()
        return PlanBatch(ids or "[]", extras or "[]", int(size))
    du = distribution_users.c
    query = (
        sa.select(du.user_id, du.extras)
        .where(du.distribution_id == day_id, du.seq.between(first, last))
        .order_by(du.seq)
    )
    rows = conn.execute(query).all()
    return PlanBatch(
        json.dumps([user_id for user_id, _ in rows]),
        "[" + ",".join(extras or "null" for _, extras in rows) + "]",
        len(rows),
    )


# --- the lease: every schedctl.leases call of distribute is here -----------------------

# Days as leased work (leases.recover, from reconcile): held while a run plans or
# copies them. Resuming from the stored plan is always safe, so a day whose run died
# is only freed -- never failed, and no attempt counted.
LEASED_DAYS = leases.LeasedWork(
    distributions,
    in_flight=distributions.c.status.in_(("planned", "copying")),
    attempts=None,
    counted_at_claim=True,
    after=lambda _expiry, now: {"updated_at": now},
)


class DayLease:
    """This process's hold on a day while it copies the plan.

    The holder renews it with every batch it records; a process that dies stops
    renewing, and once the lease has run out another run takes the day over and
    resumes from the recorded progress.
    """

    def __init__(self, length: timedelta, clock: leases.Clock) -> None:
        self.owner = leases.new_owner()
        self.length = length
        self.clock = clock

    def expires_at(self) -> datetime:
        return self.clock() + self.length

    def is_free_or_mine(self, day: Day) -> bool:
        return day.lease_owner == self.owner or not leases.is_live(day, self.clock())

    def take(self, conn: sa.Connection, day_id: int) -> None:
        """Hold the day (its row locked by the caller's transaction, and free)."""
        leases.stamp(
            conn, distributions, [day_id], self.owner, self.expires_at(), updated_at=self.clock()
        )

    def renew(self, conn: sa.Connection, day_id: int) -> bool:
        """Extend the hold; False when another run has taken the day over."""
        return bool(leases.renew(conn, distributions, [day_id], self.owner, self.expires_at()))

    def finish(self, conn: sa.Connection, day_id: int, **values: Any) -> bool:
        """Record the day's outcome and let go; False when it was taken over."""
        done = leases.finish(
            conn, distributions, self.owner, distributions.c.id == day_id, **values
        )
        return done > 0

    def release(self, conn: sa.Connection, day_id: int, **values: Any) -> bool:
        """Let go of unfinished work (a rerun resumes it at once)."""
        return leases.release(conn, distributions, [day_id], self.owner, **values) > 0


def record_batch(
    conn: sa.Connection,
    day_id: int,
    name: str,
    last_seq: int,
    inserted: int,
    existing: int,
    now: datetime,
    lease: DayLease,
    *,
    finished: bool,
) -> bool:
    """Record a batch copied to a destination and renew the lease; False (nothing
    recorded) when another run has taken the day over.

    The batch is committed in the destination before this is recorded, and the
    record's commit does not wait for the disk (`dialect.commit_without_flush`): a
    record lost in a crash of schedctl's database only makes the rerun check that
    batch again, and write nothing twice."""
    if not lease.renew(conn, day_id):
        return False
    dialect.commit_without_flush(conn)
    dd = distribution_destinations.c
    conn.execute(
        distribution_destinations.update()
        .where(dd.distribution_id == day_id, dd.name == name)
        .values(
            status="completed" if finished else "copying",
            last_seq=last_seq,
            rows_inserted=dd.rows_inserted + inserted,
            rows_existing=dd.rows_existing + existing,
            updated_at=now,
            finished_at=now if finished else None,
        )
    )
    conn.execute(
        distributions.update()
        .where(distributions.c.id == day_id, distributions.c.status != "copying")
        .values(status="copying", reason=None, stage=None, updated_at=now)
    )
    return True


# --- housekeeping ------------------------------------------------------------------------


def purge_expired_plans(conn: sa.Connection, now: datetime, limit: int = PURGE_BATCH) -> int:
    """Delete up to ``limit`` plan rows of completed days past their retention; the
    ``distributions`` row stays (it says the date was done). Returns rows deleted."""
    d, du = distributions.c, distribution_users.c
    expired = sa.select(d.id).where(
        d.status == "completed", d.expires_at <= now, d.purged_at.is_(None)
    )
    deleted = 0
    for (day_id,) in conn.execute(expired.order_by(d.id)).all():
        positions = (
            sa.select(du.seq)
            .where(du.distribution_id == day_id)
            .order_by(du.seq)
            .limit(limit - deleted)
            .scalar_subquery()
        )
        gone = conn.execute(
            distribution_users.delete().where(du.distribution_id == day_id, du.seq.in_(positions))
        ).rowcount
        deleted += int(gone or 0)
        if deleted >= limit:
            break
        conn.execute(distributions.update().where(d.id == day_id).values(purged_at=now))
    return deleted
