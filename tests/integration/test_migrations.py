"""Migrations: each dialect's SQL files build exactly the schema the code describes."""

from __future__ import annotations

import re

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from schedctl.db.database import Database
from schedctl.db.migration_checks import ACCOUNT_REFERENCES
from schedctl.db.migrations import (
    check_schema,
    expected_version,
    load_migrations,
    split_statements,
    status,
    upgrade,
)
from schedctl.db.schema import distribution_users, metadata, schema_migrations
from schedctl.errors import ConflictError, SchemaMismatch


def _fk_key(fk: sa.ForeignKeyConstraint) -> tuple[str, tuple[str, ...], str]:
    return (fk.table.name, tuple(c.name for c in fk.columns), fk.referred_table.name)


def _diff(url: str) -> list[object]:
    with Database(url) as db, db.engine.connect() as conn:
        context = MigrationContext.configure(
            conn, opts={"compare_type": True, "compare_server_default": False}
        )
        diff = list(compare_metadata(context, metadata))
        if db.dialect != "sqlite":
            return [d for d in diff if not _not_for(d, "postgresql")]
    # SQLAlchemy's SQLite reflection does not report ON DELETE, so alembic sees each
    # such foreign key as removed and re-added; cancel those pairs (the cascade itself
    # is covered by behaviour tests) and keep everything else.
    removed = {_fk_key(d[1]) for d in diff if isinstance(d, tuple) and d[0] == "remove_fk"}
    added = {_fk_key(d[1]) for d in diff if isinstance(d, tuple) and d[0] == "add_fk"}
    same = removed & added
    return [
        d
        for d in diff
        if not (isinstance(d, tuple) and d[0] in {"remove_fk", "add_fk"} and _fk_key(d[1]) in same)
        and not _sqlite_tenancy(d)
        and not _not_for(d, "sqlite")
    ]


def _not_for(d: object, dialect_name: str) -> bool:
    """An index the metadata declares for the other dialect alone (its info's
    "dialects": schema.partial_index, distribution_users_user)."""
    if not (isinstance(d, tuple) and d[0] == "add_index"):
        return False
    declared = {i.name: i for table in metadata.tables.values() for i in table.indexes}
    return dialect_name not in declared[d[1].name].info.get(
        "dialects", (dialect_name,)
    )  # (alembic's copy has no info)


# SQLite keeps references inside one account with 0010's triggers instead of composite
# foreign keys (SPEC §13): the metadata's composite keys and their (id, account_id)
# unique keys are PostgreSQL's.
def _sqlite_tenancy(d: object) -> bool:
    if not isinstance(d, tuple):
        return False
    kind, item = d[0], d[1]
    if kind == "add_fk":  # the composite key the metadata declares
        return "account_id" in [c.name for c in item.columns] and len(item.columns) == 2
    if kind == "remove_fk":  # the one-column key 0006 and earlier created
        return (item.table.name, item.columns[0].name) in _REFERENCES
    if kind == "add_constraint":
        return str(item.name).endswith("_id_account_key")
    return False


_REFERENCES = {(r.child, r.column) for r in ACCOUNT_REFERENCES}


def test_migrations_build_the_schema_the_metadata_describes(empty_db_url: str) -> None:
    with Database(empty_db_url) as db:
        applied = upgrade(db)
    assert [m.version for m in applied] == list(range(1, expected_version(db.dialect) + 1))
    assert _diff(empty_db_url) == []


def test_upgrade_is_idempotent(db_url: str) -> None:
    with Database(db_url) as db:
        assert upgrade(db) == []
        current, expected, states = status(db)
        assert current == expected
        assert all(s.applied_at is not None and s.checksum_ok for s in states)
        count = db.scalar(sa.select(sa.func.count()).select_from(schema_migrations))
        assert count == expected


def test_default_account_exists(db_url: str) -> None:
    with Database(db_url) as db:
        names = db.transaction(lambda c: c.execute(sa.text("SELECT name FROM accounts")).all())
    assert [n for (n,) in names] == ["default"]


def test_check_schema_refuses_an_empty_database(empty_db_url: str) -> None:
    with Database(empty_db_url) as db, pytest.raises(SchemaMismatch, match="db upgrade"):
        check_schema(db)


def test_check_schema_refuses_a_newer_schema(db_url: str) -> None:
    with Database(db_url) as db:
        newer = expected_version(db.dialect) + 1
        db.transaction(
            lambda c: c.execute(
                schema_migrations.insert().values(
                    version=newer, name="future", checksum="x", applied_at=db.now()
                )
            )
        )
        with pytest.raises(SchemaMismatch, match="newer"):
            check_schema(db)
        with pytest.raises(SchemaMismatch, match="newer"):
            upgrade(db)


def test_check_schema_refuses_an_older_schema(db_url: str) -> None:
    with Database(db_url) as db:
        newest = expected_version(db.dialect)
        db.transaction(
            lambda c: c.execute(
                schema_migrations.delete().where(schema_migrations.c.version == newest)
            )
        )
        with pytest.raises(SchemaMismatch, match="run `schedctl db upgrade`"):
            check_schema(db)


@pytest.mark.parametrize("name", ["sqlite", "postgresql"])
def test_both_dialects_have_the_same_migrations(name: str) -> None:
    other = "postgresql" if name == "sqlite" else "sqlite"
    assert [m.name for m in load_migrations(name)] == [m.name for m in load_migrations(other)]


def test_split_statements_keeps_triggers_whole() -> None:
    script = """
    -- a comment; with a semicolon
    CREATE TABLE t (a INTEGER);
    CREATE TRIGGER tr AFTER INSERT ON t BEGIN
        UPDATE t SET a = a + 1;
        UPDATE t SET a = a - 1;
    END;
    """
    statements = split_statements(script)
    assert len(statements) == 2
    assert statements[1].endswith("END;")


def test_schema_comparison_detects_a_drift(db_url: str) -> None:
    """The comparison above can fail: a column the SQL lacks is reported."""
    drifted = sa.MetaData()
    for table in metadata.tables.values():
        table.to_metadata(drifted)
    drifted.tables["accounts"].append_column(sa.Column("missing_in_sql", sa.Text))
    with Database(db_url) as db, db.engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"compare_type": True})
        diff = compare_metadata(context, drifted)
    assert any("missing_in_sql" in repr(item) for item in diff)


def test_deleting_a_parent_cascades_on_both_dialects(db_url: str) -> None:
    """ON DELETE CASCADE is real on SQLite too (foreign_keys pragma is on)."""
    from schedctl.db.schema import events, messages

    with Database(db_url) as db:
        now = db.now()

        def work(conn: sa.Connection) -> int:
            event_id = conn.execute(
                events.insert()
                .values(
                    account_id=1, name="e", starts_at=now, tz="UTC", created_at=now, updated_at=now
                )
                .returning(events.c.id)
            ).scalar_one()
            conn.execute(
                messages.insert().values(
                    account_id=1,
                    type="INIT",
                    priority="normal",
                    recipient="a@example.com",
                    subject="s",
                    body_text="b",
                    subscription=False,
                    send_at=now,
                    status="scheduled",
                    attempts=0,
                    idempotency_key="k1",
                    message_id="<k1@x>",
                    event_id=event_id,
                    created_at=now,
                    updated_at=now,
                )
            )
            conn.execute(events.delete().where(events.c.id == event_id))
            return int(conn.execute(sa.select(sa.func.count()).select_from(messages)).scalar_one())

        assert db.transaction(work) == 0


def _normal_predicate(sql: str) -> str:
    """A partial index's predicate with what the dialects add removed: parentheses,
    PostgreSQL's casts of literals, case and spacing."""
    sql = re.sub(r"= ANY \(ARRAY\[(.*?)\]\)", r"IN (\1)", sql)  # PostgreSQL's IN
    sql = sql.replace("::text", "").replace("(", " ").replace(")", " ")
    return " ".join(sql.lower().split())


def test_partial_indexes_have_the_predicates_the_code_describes(db_url: str) -> None:
    with Database(db_url) as db, db.engine.connect() as conn:
        declared = {
            index.name: index.info["where"]
            for table in metadata.tables.values()
            for index in table.indexes
            if "where" in index.info and db.dialect in index.info["dialects"]
        }
        if db.dialect == "postgresql":
            query = sa.text(
                "SELECT c.relname, pg_get_expr(i.indpred, i.indrelid) FROM pg_index i"
                " JOIN pg_class c ON c.oid = i.indexrelid WHERE i.indpred IS NOT NULL"
            )
            built = {name: sql for name, sql in conn.execute(query)}
        else:
            query = sa.text("SELECT name, sql FROM sqlite_master WHERE type = 'index'")
            built = {
                name: sql.split(" WHERE ", 1)[1]
                for name, sql in conn.execute(query)
                if sql and " WHERE " in sql
            }

    assert len(declared) == {"postgresql": 8, "sqlite": 7}[db.dialect]
    assert {name: _normal_predicate(sql) for name, sql in built.items()} == {
        name: _normal_predicate(sql) for name, sql in declared.items()
    }


def test_0018_keeps_the_stored_plans(empty_db_url: str) -> None:
    # A plan stored under 0017 (its primary key and foreign key) is there after 0018,
    # which drops both (SQLite by making the table again); SQLite's planner still
    # finds an ID it has by its unique (distribution_id, user_id).
    rows = [
        {"distribution_id": 1, "user_id": f"u{n}", "sort_key": bytes([n]), "seq": n,
         "campaign_id": "C1", "group_name": "A", "group_id": "C1.A", "extras": None}
        for n in range(1, 4)
    ]  # fmt: skip
    with Database(empty_db_url) as db:
        upgrade(db, target=17)
        now = db.now()
        db.transaction(
            lambda c: c.execute(
                sa.text(
                    "INSERT INTO distributions (id, business_date, status, attempts,"
                    " created_at, updated_at) VALUES (1, '2026-11-18', 'completed', 1, :now, :now)"
                ),
                {"now": now},
            )
        )
        db.transaction(lambda c: c.execute(distribution_users.insert(), rows))
        assert [m.version for m in upgrade(db, target=18)] == [18]
        kept = db.transaction(
            lambda c: c.execute(
                sa.select(distribution_users).order_by(distribution_users.c.seq)
            ).all(),
            read_only=True,
        )
        assert [r._asdict() for r in kept] == rows
        if db.dialect == "sqlite":
            with pytest.raises(ConflictError):
                db.transaction(lambda c: c.execute(distribution_users.insert(), rows[:1]))
        else:
            # No constraint left (alembic's comparison does not look at primary keys),
            # and a replica identity of its own: with a publication that publishes
            # deletes, a table with neither refuses every DELETE (planning and the
            # purge delete plan rows).
            constraints = db.transaction(
                lambda c: c.execute(
                    sa.text(
                        "SELECT conname FROM pg_constraint"
                        " WHERE conrelid = 'distribution_users'::regclass"
                    )
                ).all(),
                read_only=True,
            )
            assert constraints == []
            db.transaction(lambda c: c.execute(sa.text("CREATE PUBLICATION plans FOR ALL TABLES")))
            try:
                deleted = db.transaction(
                    lambda c: (
                        c.execute(
                            distribution_users.delete().where(distribution_users.c.seq == 3)
                        ).rowcount
                    )
                )
            finally:
                db.transaction(lambda c: c.execute(sa.text("DROP PUBLICATION plans")))
            assert deleted == 1
        upgrade(db)  # the later migrations too, to compare with today's metadata
    assert _diff(empty_db_url) == []
