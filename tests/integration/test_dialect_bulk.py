"""Statements that bind a whole batch as a few parameters (``schedctl.db.dialect``):
``one_of``, ``ValueRows`` and ``RowInserter``, on real PostgreSQL and SQLite.

Each statement has one text whatever the batch, so the driver parses it once: the
tests check what the statements do with batches of different sizes, values that
need quoting or escaping (quotes, backslashes, commas, braces, newlines, non-ASCII),
NULLs and dates, and -- the point of them -- that a batch is sent as a few parameters.
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Any

import pytest
import sqlalchemy as sa

from schedctl.db import dialect
from schedctl.db.database import Database
from schedctl.db.schema import Id, digests, messages, users
from schedctl.db.types import UTCDateTime

NOW = datetime(2027, 3, 10, 12, 0, tzinfo=UTC)
AWKWARD = ['say "hi"', "back\\slash", "a,b", "{braces}", "two\nlines", "Grüße ✓", "", "NULL"]


def statements_sent(db: Database) -> list[tuple[str, Any]]:
    """Record (statement, parameters) of every execution on ``db`` from now on."""
    sent: list[tuple[str, Any]] = []

    @sa.event.listens_for(db.engine, "before_cursor_execute")
    def record(_conn: Any, _cursor: Any, statement: str, parameters: Any, *_: Any) -> None:
        sent.append((statement, parameters))

    return sent


def add_users(conn: sa.Connection, count: int) -> list[int]:
    rows = [{"account_id": 1, "email": f"u{n}@example.org", "tz": "UTC"} for n in range(count)]
    return [int(r.id) for r in conn.execute(users.insert().returning(users.c.id), rows)]


def test_one_of_finds_the_rows_of_any_number_of_values_with_one_parameter(db_url: str) -> None:
    with Database(db_url) as db:
        ids = db.transaction(lambda conn: add_users(conn, 30))
        sent = statements_sent(db)

        def find(values: list[Any]) -> list[int]:
            query = sa.select(users.c.id).where(dialect.one_of(users.c.id, values))
            return db.transaction(lambda c: sorted(c.execute(query).scalars()), read_only=True)

        assert find(ids[:3]) == ids[:3]
        assert find([*ids[5:25], 10**12]) == ids[5:25]  # one that does not exist
        assert find([]) == []
        emails = sa.select(users.c.id).where(
            dialect.one_of(users.c.email, ["u4@example.org", "u7@example.org", 'no"such'])
        )
        assert db.transaction(lambda c: sorted(c.execute(emails).scalars())) == [ids[4], ids[7]]
        named = sa.select(users.c.id).where(dialect.one_of(users.c.id, name="wanted"))
        found = db.transaction(lambda c: sorted(c.execute(named, {"wanted": ids[-2:]}).scalars()))
        assert found == ids[-2:]

    # The same text for 3 ids, for 21 and for none, each with one parameter for them.
    by_id = [(s, p) for s, p in sent if "SELECT users.id" in s and "email" not in s]
    assert len(by_id) == 4
    assert len({s for s, _ in by_id[:3]}) == 1
    assert all(len(p) == 1 for _, p in by_id)


@pytest.mark.parametrize("dialect", ["sqlite"])
def test_one_of_looks_its_values_up_in_an_index(db_url: str) -> None:
    """SQLite looks each value up in an index on the column, beside other conditions;
    written as ``(… IN …) = 1`` it scanned the whole index, every row of a table of
    notifications for every page of a digest."""
    query = sa.select(users.c.id).where(
        dialect.one_of(users.c.account_id, name="wanted"), users.c.tz == "UTC"
    )
    with Database(db_url) as db:
        plan = db.transaction(
            lambda conn: [
                row[-1]
                for row in conn.exec_driver_sql(
                    f"EXPLAIN QUERY PLAN {query.compile(conn)}", ("[1, 2]", "UTC")
                )
            ],
            read_only=True,
        )

    assert any(step.startswith("SEARCH users USING") and "(account_id=?)" in step for step in plan)
    assert not [step for step in plan if step.startswith("SCAN users")]


def test_value_rows_update_rows_from_a_batch_bound_as_a_few_parameters(db_url: str) -> None:
    with Database(db_url) as db:
        ids = db.transaction(lambda conn: add_users(conn, len(AWKWARD) + 2))
        rows = dialect.ValueRows(db.engine.dialect, "batch", [("id", Id), ("tz", sa.Text())])
        update = (
            users.update()
            .where(users.c.id == rows.c.id)
            .values(tz=rows.c.tz, updated_at=sa.bindparam("now", type_=UTCDateTime))
        )
        sent = statements_sent(db)
        batch = list(zip(ids, AWKWARD, strict=False))
        db.transaction(lambda c: c.execute(update, rows.params(batch) | {"now": NOW}))
        db.transaction(lambda c: c.execute(update, rows.params(batch[:1]) | {"now": NOW}))
        db.transaction(lambda c: c.execute(update, rows.params([]) | {"now": NOW}))
        zones = db.transaction(
            lambda c: {r.id: r.tz for r in c.execute(sa.select(users.c.id, users.c.tz))},
            read_only=True,
        )

    assert [zones[i] for i in ids] == [*AWKWARD, "UTC", "UTC"]
    updates = [(s, p) for s, p in sent if s.startswith("UPDATE users")]
    assert len(updates) == 3
    assert len({s for s, _ in updates}) == 1
    assert all(len(p) <= 3 for _, p in updates)  # the rows, and now


def test_row_inserter_returns_the_rows_it_inserted_and_skips_existing_keys(db_url: str) -> None:
    with Database(db_url) as db:
        ids = db.transaction(lambda conn: add_users(conn, 4))
        insert = dialect.RowInserter(
            db.engine.dialect, digests, ["account_id", "user_id", "local_date"],
            same=["status", "items", "created_at", "updated_at", "expires_at"],
            conflict=["user_id", "local_date"], returning=["id", "user_id", "local_date"],
            json_rows=True,
        )  # fmt: skip
        assert insert.set_based  # the digest's days: JSON rows on SQLite too
        same = {"status": "scheduled", "items": 0, "created_at": NOW, "updated_at": NOW,
                "expires_at": NOW}  # fmt: skip
        day, next_day = date(2027, 3, 10), date(2027, 3, 11)
        sent = statements_sent(db)
        first = db.transaction(lambda c: insert(c, [(1, i, day) for i in ids[:3]], same))
        # Two exist already; the others are new.
        batch = [(1, ids[1], day), (1, ids[3], day), (1, ids[2], day), (1, ids[0], next_day)]
        second = db.transaction(lambda c: insert(c, batch, same))
        assert db.transaction(lambda c: insert(c, [], same)) == []
        stored = db.transaction(
            lambda c: c.execute(sa.select(digests).order_by(digests.c.id)).all(), read_only=True
        )

    assert sorted((r.user_id, r.local_date) for r in first) == [(i, day) for i in ids[:3]]
    assert sorted((r.user_id, r.local_date) for r in second) == sorted(
        [(ids[3], day), (ids[0], next_day)]
    )
    assert {r.id for r in first} | {r.id for r in second} == {r.id for r in stored}
    assert len(stored) == 5
    assert all(r.created_at == NOW and r.status == "scheduled" for r in stored)
    inserts = [s for s, _ in sent if s.startswith("INSERT INTO digests")]
    assert len(set(inserts)) == 1  # one text for 3 rows and for 4


@pytest.mark.parametrize("json_rows", [False, True], ids=["executemany", "json-rows"])
def test_row_inserter_sends_long_texts_with_quotes_intact(db_url: str, json_rows: bool) -> None:
    # On SQLite: the one-row INSERT per row (messages), or JSON rows (the same
    # statement as a digest's days): either keeps every character.
    html = '<p style="margin:0">' + ('\\ "quoted" {a,b} ✓\n' * 300) + "</p>"
    with Database(db_url) as db:
        insert = dialect.RowInserter(
            db.engine.dialect, messages,
            ["account_id", "recipient", "subject", "body_text", "body_html", "idempotency_key",
             "message_id"],
            same=["type", "priority", "subscription", "send_at", "status", "attempts",
                  "created_at", "updated_at"],
            conflict=["idempotency_key"], returning=["id", "idempotency_key"],
            json_rows=json_rows,
        )  # fmt: skip
        # (on SQLite the two are different statements; PostgreSQL has one)
        assert insert.set_based == (json_rows or db.dialect == "postgresql")
        same = {
            "type": "DIGEST", "priority": "normal", "subscription": True, "send_at": NOW,
            "status": "scheduled", "attempts": 0, "created_at": NOW, "updated_at": NOW,
        }  # fmt: skip
        rows = [
            (1, f"u{n}@example.org", AWKWARD[n % len(AWKWARD)] or "-", f"text {n}", html,
             f"key:{n}", f"<{n}@example.com>")
            for n in range(20)
        ]  # fmt: skip
        inserted = db.transaction(lambda c: insert(c, rows, same))
        again = db.transaction(lambda c: insert(c, rows[:5], same))
        stored = db.transaction(
            lambda c: c.execute(sa.select(messages).order_by(messages.c.id)).all(), read_only=True
        )

    assert sorted(r.idempotency_key for r in inserted) == sorted(f"key:{n}" for n in range(20))
    assert again == []
    assert [r.body_html for r in stored] == [html] * 20
    assert [r.subject for r in stored] == [row[2] for row in rows]
    assert all(r.subscription is True and r.send_at == NOW for r in stored)


@pytest.mark.parametrize("size", [1, 7])
def test_for_bulk_pages_leaves_the_transaction_usable(db_url: str, size: int) -> None:
    with Database(db_url) as db:

        def work(conn: sa.Connection) -> int:
            dialect.for_bulk_pages(conn)
            add_users(conn, size)
            return int(conn.execute(sa.select(sa.func.count()).select_from(users)).scalar_one())

        assert db.transaction(work) == size


def test_json_rows_refuse_an_instant_where_a_date_goes() -> None:
    # A datetime is a date to isinstance: as JSON it would be stored as
    # "2026-01-02T03:04:00" and fail to read back.
    rows = dialect.ValueRows(sa.create_engine("sqlite://").dialect, "r", [("d", sa.Date())])
    assert rows.params([(date(2026, 1, 2),)]) == {"r": '[["2026-01-02"]]'}
    with pytest.raises(TypeError, match="datetime"):
        rows.params([(datetime(2026, 1, 2, 3, 4),)])
