"""The distribution's other databases: the source, the campaigns, the destinations.

Each is opened as a `Database` of its own (``store=False``: any supported dialect),
so connecting is retried on transient errors the same way as for schedctl's own
database. Queries run in read-only transactions (`dialect.begin_read_only`); the
source is streamed in chunks. A batch is written to a destination in one
transaction that locks the table for writers (`dialect.lock_for_insert`), finds the
batch's (ID, campaign) pairs already there -- the destination compares the IDs, as
its ID column's type -- and inserts the rest, so a batch copied twice -- a rerun
after a crash, or two runs racing -- is written once. On PostgreSQL
(`Capabilities.set_based`) that is one INSERT ... SELECT ... WHERE NOT EXISTS over
the batch bound as two JSON arrays; elsewhere a query for the IDs present
(`existing_query`) and a bulk insert of the others.

Errors become `StageError`s naming the stage (``source``, ``campaigns``, ``control``,
``target``, ``mirror``): exit 75 when the database is unavailable (rerun later),
1 otherwise. Their text is scrubbed of IDs.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

import sqlalchemy as sa

from schedctl.db import dialect
from schedctl.db.database import Database, first_line, is_transient
from schedctl.distribute.config import Destination, Source
from schedctl.distribute.plan import Campaign, as_date, campaign_order, scrub
from schedctl.errors import ConfigError, DatabaseRefused, DatabaseUnavailable, SchedctlError

SOURCE_CHUNK = 10_000  # rows fetched from the source at a time
MAX_CAMPAIGNS = 10_000


class StageError(SchedctlError):
    """A stage of the distribution failed (``stage`` names it)."""

    def __init__(self, stage: str, message: str, *, temporary: bool = False) -> None:
        super().__init__(message)
        self.stage = stage
        self.temporary = temporary
        self.exit_code = 75 if temporary else 1


def open_endpoint(url: str, retry_seconds: float) -> Database:
    """A source or destination database (never created: a missing SQLite file fails)."""
    return Database(url, create=False, store=False, retry_seconds=retry_seconds)


_BEFORE_THE_PLAN = frozenset({"source", "campaigns"})  # stages read before the plan is stored


@contextmanager
def stage(
    name: str, db: Database | None, private: Callable[[], Sequence[str]] = list
) -> Iterator[None]:
    """Errors inside become a StageError for ``name``, scrubbed of the values
    ``private`` gives (asked only when there is an error)."""
    where = f" ({db.target})" if db is not None else ""
    try:
        yield
    except StageError:
        raise
    except DatabaseUnavailable as exc:
        ids = private()
        text = scrub(exc.message.removeprefix("database unavailable "), ids)
        raise StageError(name, f"{name} database unavailable {text}", temporary=True) from None
    except DatabaseRefused as exc:  # (its message names the database already)
        text = scrub(exc.message.removeprefix("database error "), private())
        raise StageError(name, f"{name} database error {text}") from None
    except SchedctlError as exc:
        if isinstance(exc, ConfigError) and name in _BEFORE_THE_PLAN:
            # Connection settings the driver refuses (`sslmode=bogus`), met before the
            # day is planned: bad input, exit 2 with nothing written, as for schedctl's
            # own database URL. (A destination's, met with the plan stored, fails the day.)
            raise
        raise StageError(name, f"{name}{where}: {scrub(exc.message, private())}") from None
    except sa.exc.SQLAlchemyError as exc:
        text = scrub(first_line(exc), private())
        if is_transient(exc):
            raise StageError(
                name, f"{name} database unavailable{where}: {text}", temporary=True
            ) from None
        raise StageError(name, f"{name}{where}: {text}") from None


# --- campaigns -------------------------------------------------------------------------


def read_campaigns(source: Source, business_date: date, retry_seconds: float) -> list[Campaign]:
    """Every campaign the campaigns query returns (id, start date, end date), ordered
    by id; a campaign with a NULL date is never active (SQL's BETWEEN)."""
    db = open_endpoint(source.database_url, retry_seconds)
    try:
        with stage("campaigns", db):

            def work(conn: sa.Connection) -> tuple[list[str], list[Any]]:
                dialect.begin_read_only(conn, source.timeout.total_seconds())
                result = conn.execute(*query(source, business_date))
                if not result.returns_rows:
                    raise StageError("campaigns", "the campaigns query returns no rows")
                return list(result.keys()), list(result.fetchmany(MAX_CAMPAIGNS + 1))

            columns, rows = db.transaction(work, read_only=True)
    finally:
        db.close()
    if len(columns) < 3:
        raise StageError(
            "campaigns",
            f"the campaigns query returns {len(columns)} column(s); it must return the"
            " campaign id, start date and end date, in this order",
        )
    if len(rows) > MAX_CAMPAIGNS:
        raise StageError("campaigns", f"the campaigns query returns over {MAX_CAMPAIGNS} rows")
    return parse_campaigns(rows)


def parse_campaigns(rows: Sequence[Sequence[Any]]) -> list[Campaign]:
    """Campaigns from (id, start, end) rows, ordered by id (numerically for numbers)."""
    found: dict[str, Campaign] = {}
    for raw_id, raw_start, raw_end, *_ in sorted(rows, key=lambda r: campaign_order(r[0])):
        campaign_id = "" if raw_id is None else str(raw_id).strip()
        if not campaign_id:  # (it names the groups: "" would make group ids like ".1")
            raise StageError("campaigns", "a campaign has no id (NULL or empty)")
        if campaign_id in found:
            raise StageError("campaigns", f"campaign {campaign_id!r} is returned twice")
        if raw_start is None or raw_end is None:
            continue  # never active, as with SQL's BETWEEN
        start, end = as_date(raw_start), as_date(raw_end)
        if start is None or end is None:
            raise StageError(
                "campaigns", f"campaign {campaign_id!r}: its start or end is not a date"
            )
        found[campaign_id] = Campaign(campaign_id, start, end)
    return list(found.values())


def query(source: Source, business_date: date) -> tuple[sa.TextClause, dict[str, Any]]:
    """A configured query and its bind values (``:business_date`` when it uses it)."""
    statement = sa.text(source.query)
    names = statement.compile().params
    binds: dict[str, Any] = {}
    if "business_date" in names:
        statement = statement.bindparams(sa.bindparam("business_date", type_=sa.Date))
        binds["business_date"] = business_date
    return statement, binds


# --- the source ---------------------------------------------------------------------------


@dataclass
class SourceStream:
    """The source query's columns and its rows, chunk by chunk."""

    columns: list[str]
    chunks: Iterator[Sequence[Any]]


@contextmanager
def stream_source(
    source: Source, business_date: date, retry_seconds: float
) -> Iterator[SourceStream]:
    """Stream the source query in a read-only transaction (server-side cursor where
    the driver has one), ``SOURCE_CHUNK`` rows at a time. Only errors of the source
    become its StageError: the caller's own (the store's) pass through untouched."""
    db = open_endpoint(source.database_url, retry_seconds)
    try:
        with ExitStack() as stack:
            with stage("source", db):
                db.transaction(lambda conn: None, read_only=True)  # connect, with retries
                options = {"schedctl_read_only": True}
                conn = stack.enter_context(db.engine.connect().execution_options(**options))
                stack.enter_context(conn.begin())
                dialect.begin_read_only(conn, source.timeout.total_seconds())
                # Only the query streams: a server-side cursor left open (as the
                # statements of begin_read_only would leave theirs) warns when it
                # is collected; this one is closed first, also when the reader
                # stops early.
                statement, binds = query(source, business_date)
                result = conn.execute(statement.execution_options(stream_results=True), binds)
                stack.callback(result.close)
                if not result.returns_rows:
                    raise StageError("source", "the source query returns no rows")
                columns = list(result.keys())
            yield SourceStream(columns, _chunks(result, db))
    finally:
        db.close()


def _chunks(result: sa.CursorResult[Any], db: Database) -> Iterator[Sequence[Any]]:
    while True:
        with stage("source", db):
            rows = result.fetchmany(SOURCE_CHUNK)
        if not rows:
            return
        yield rows


# --- destinations ----------------------------------------------------------------------------


def destination_table(destination: Destination, extra_names: Sequence[str] = ()) -> sa.Table:
    """The destination table as far as schedctl writes it (never created here):
    the mapped columns, and the extra ones (``extra_names`` when not mapped)."""
    types: Mapping[str, Any] = {
        "id": sa.String(),
        "group_id": sa.String(),
        "date_start": sa.Date(),
        "date_end": sa.Date(),
        "inserted_at": sa.DateTime(),
    }
    columns = [sa.Column(col, types[role]) for role, col in destination.columns.items()]
    extras = destination.extra_columns
    columns += [sa.Column(col, sa.String()) for col in (extra_names if extras is None else extras)]
    return sa.Table(destination.table_name, sa.MetaData(), *columns, schema=destination.schema)


def existing_query(
    table: sa.Table,
    destination: Destination,
    group_ids: Sequence[str],
    ids: Sequence[str],
    sa_dialect: sa.Dialect,
    id_type: sa.types.TypeEngine[Any] | None = None,
    *,
    lock: bool = False,
) -> sa.Select[Any] | sa.CompoundSelect[Any]:
    """Which of ``ids`` (the plan's, as text) the table has already under one of
    ``group_ids`` (a campaign's). The destination compares them, each ID as the ID
    column's type ``id_type`` (`dialect.same_id`), so the column's type -- a number,
    CHAR(n), text -- decides what is the same ID, but never a collation that folds
    case or accents; the query returns the
    plan's IDs as given. ``lock``: the check half of a check-then-insert
    (`dialect.existence_check`)."""
    id_column = table.c[destination.columns["id"]]
    group_column = table.c[destination.columns["group_id"]]
    groups: sa.BindParameter[Any] = sa.bindparam("group_ids", list(group_ids), expanding=True)

    def rows_of(user_id: sa.ColumnElement[Any]) -> sa.Select[Any]:
        same_id = dialect.same_id(id_column, user_id, id_type, sa_dialect)
        rows: sa.Select[Any] = (
            sa.select(sa.literal_column("1"))
            .select_from(table)
            .where(group_column.in_(groups), same_id)
        )
        return dialect.existence_check(rows, sa_dialect) if lock else rows

    return dialect.ids_present(ids, rows_of, sa_dialect)


@dataclass(frozen=True)
class Batch:
    """Consecutive users of one slot of the plan (one campaign and group), to be
    written to a destination, with what every row of the batch shares. The users
    are two JSON arrays of the same length: their IDs, and their extra columns as
    the plan stores them (an object, or null)."""

    ids: str
    extras: str
    size: int
    group_id: str
    campaign: Campaign
    inserted_at: datetime

    def __len__(self) -> int:
        return self.size

    def users(self) -> list[tuple[str, dict[str, Any]]]:
        """(ID, extra columns by name) of each user, in order."""
        extras = json.loads(self.extras)
        return [(i, e or {}) for i, e in zip(json.loads(self.ids), extras, strict=True)]

    def without(self, ids: set[str]) -> Batch:
        """The batch less the users whose ID is in ``ids``."""
        kept = [(i, e) for i, e in zip(json.loads(self.ids), json.loads(self.extras), strict=True)]
        kept = [(i, e) for i, e in kept if i not in ids]
        return Batch(
            json.dumps([i for i, _ in kept]), json.dumps([e for _, e in kept], ensure_ascii=False),
            len(kept), self.group_id, self.campaign, self.inserted_at,
        )  # fmt: skip


@dataclass(frozen=True)
class BatchResult:
    inserted: int
    existing: int


class DestinationWriter:
    """Writes plan batches to one destination table.

    A batch is written in one transaction of the destination that holds the table's
    write lock (`dialect.lock_for_insert`), checks which of the batch's IDs the table
    has already under the campaign's group ids and inserts the others. Where the
    destination can (`Capabilities.set_based`) that is one statement -- INSERT ...
    SELECT from the batch's IDs and extra columns, bound as arrays, WHERE NOT EXISTS
    -- with every value read by the column's own type, as COPY would read it
    (`dialect.from_text`); elsewhere a query finds the IDs present and the others
    are inserted in bulk.
    """

    def __init__(
        self,
        destination: Destination,
        tz: str,
        retry_seconds: float,
        extra_names: Sequence[str] = (),
    ) -> None:
        self.destination = destination
        self.tz = tz
        self.db = open_endpoint(destination.database_url, retry_seconds)
        self.table = destination_table(destination, extra_names)
        # Destination column -> the plan's extra column it is given.
        mapping = destination.extra_columns
        self.extra_sources = dict(mapping) if mapping is not None else {n: n for n in extra_names}
        # The ID column's type, read once (`dialect.id_column_type`).
        self._id_type: sa.types.TypeEngine[Any] | None = None
        self._id_type_read = False
        self._insert_missing: sa.Insert | None = None  # set-based: built once

    def close(self) -> None:
        self.db.close()

    def row_values(
        self,
        user_id: str,
        group_id: str,
        campaign: Campaign,
        inserted_at: datetime,
        extras: Mapping[str, Any],
    ) -> dict[str, Any]:
        """One destination row, by column name."""
        values = {
            "id": user_id,
            "group_id": group_id,
            "date_start": campaign.start,
            "date_end": campaign.end,
            "inserted_at": inserted_at,
        }
        row = {col: values[role] for role, col in self.destination.columns.items()}
        row.update({dest: extras.get(src) for dest, src in self.extra_sources.items()})
        return row

    def rows(self, batch: Batch) -> list[dict[str, Any]]:
        """The batch's destination rows, by column name."""
        return [
            self.row_values(user_id, batch.group_id, batch.campaign, batch.inserted_at, extras)
            for user_id, extras in batch.users()
        ]

    def present(
        self, conn: sa.Connection, ids: Sequence[str], group_ids: Sequence[str], *, lock: bool
    ) -> set[str]:
        """Those of ``ids`` the table has under one of ``group_ids`` (`existing_query`)."""
        if not self._id_type_read:
            self._id_type = dialect.id_column_type(conn, self.table, self.destination.columns["id"])
            self._id_type_read = True
        found: set[str] = set()
        size = dialect.existence_check_size(conn.dialect)
        for start in range(0, len(ids), size):
            query = existing_query(
                self.table, self.destination, group_ids, ids[start : start + size],
                conn.dialect, self._id_type, lock=lock,
            )  # fmt: skip
            found.update(conn.execute(query).scalars())
        return found

    def absent(self, batch: Batch, group_ids: Sequence[str]) -> Batch:
        """The batch's users whose (ID, campaign) the table does not have (a read,
        no lock)."""
        ids = [user_id for user_id, _ in batch.users()]
        with stage(self.destination.name, self.db, lambda: self.private_values(batch)):
            present = self.db.transaction(
                lambda conn: self.present(conn, ids, group_ids, lock=False), read_only=True
            )
        return batch.without(present)

    def write(self, batch: Batch, group_ids: Sequence[str]) -> BatchResult:
        """Insert the batch's users whose (ID, campaign) is not in the table yet --
        the campaign's ``group_ids`` -- in one transaction holding the table's write
        lock."""
        table = self.table

        def work(conn: sa.Connection) -> BatchResult:
            dialect.lock_for_insert(conn, table)  # (first: it may set the isolation level)
            dialect.set_local_time_zone(conn, self.tz)
            if self.db.capabilities.set_based:
                inserted = self._insert_set_based(conn, batch, group_ids)
                return BatchResult(inserted=inserted, existing=len(batch) - inserted)
            rows = self.rows(batch)
            id_column = self.destination.columns["id"]
            present = self.present(conn, [r[id_column] for r in rows], group_ids, lock=True)
            missing = [r for r in rows if r[id_column] not in present]
            dialect.bulk_insert(conn, table, missing)
            return BatchResult(inserted=len(missing), existing=len(rows) - len(missing))

        with stage(self.destination.name, self.db, lambda: self.private_values(batch)):
            return self.db.transaction(work)

    def _insert_set_based(self, conn: sa.Connection, batch: Batch, group_ids: Sequence[str]) -> int:
        """The batch in one INSERT ... SELECT ... WHERE NOT EXISTS; how many rows it
        inserted."""
        if self._insert_missing is None:
            self._insert_missing = self._insert_statement(dialect.column_types(conn, self.table))
        dialect.prefer_index_probes(conn)
        constants = {
            "id": None,
            "group_id": batch.group_id,
            "date_start": str(batch.campaign.start),
            "date_end": str(batch.campaign.end),
            "inserted_at": str(batch.inserted_at),  # as COPY is given it
        }
        params: dict[str, Any] = {
            "ids": batch.ids,  # JSON arrays (`dialect.json_array_rows`)
            "extras": batch.extras,
            "group_ids": list(group_ids),
        }
        params.update(
            {f"const_{role}": constants[role] for role in self.destination.columns if role != "id"}
        )
        return int(conn.execute(self._insert_missing, params).rowcount)

    def _insert_statement(self, types: Mapping[str, dialect.ColumnType]) -> sa.Insert:
        table, columns = self.table, self.destination.columns
        batch = dialect.json_array_rows("ids", "extras")
        values: dict[str, sa.ColumnElement[Any]] = {}
        for role, column in columns.items():
            if role == "id":
                values[column] = dialect.from_text(batch.c.ids, types.get(column))
            else:  # the same for every row: read once per batch (a subquery's InitPlan)
                given = sa.bindparam(f"const_{role}", type_=sa.Text)
                once = sa.select(dialect.from_text(given, types.get(column)))
                values[column] = once.scalar_subquery()
        for column, source in self.extra_sources.items():
            extra = batch.c.extras[source].as_string()
            values[column] = dialect.from_text(extra, types.get(column))
        groups: sa.BindParameter[Any] = sa.bindparam("group_ids", expanding=True)
        there: sa.Select[Any] = (
            sa.select(sa.literal_column("1"))
            .select_from(table)
            .where(
                table.c[columns["group_id"]].in_(groups),
                table.c[columns["id"]] == values[columns["id"]],
            )
        )
        rows = sa.select(*values.values()).select_from(batch).where(~there.exists())
        statement = table.insert().from_select(list(values), rows)
        return statement.execution_options(preserve_rowcount=True)

    def private_values(self, batch: Batch) -> list[str]:
        """The batch's IDs and source values (the extra columns), to be scrubbed from
        an error: a destination's error (a trigger's) may quote the row it refused."""
        users = batch.users()
        values = [str(v) for _, extras in users for v in extras.values() if v is not None]
        return [user_id for user_id, _ in users] + values
