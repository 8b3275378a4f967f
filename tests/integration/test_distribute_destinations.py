"""A batch written to a PostgreSQL destination (`endpoints.DestinationWriter`): one
INSERT ... SELECT ... WHERE NOT EXISTS, each value read by its column's own type.

The rows it writes are the rows COPY wrote before (`dialect.bulk_insert`, the
row-by-row path), whatever the columns' types; a value its column refuses is refused
as COPY refused it; and the check for the IDs already there probes the ID column's
index even on a table too new to have statistics.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import date, datetime
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from schedctl.db import dialect
from schedctl.distribute.config import Destination
from schedctl.distribute.endpoints import Batch, DestinationWriter, StageError, destination_table
from schedctl.distribute.plan import Campaign
from support.distribute_endpoints import endpoint_database, execute, fetch

pytestmark = [pytest.mark.postgres]

TZ = "Asia/Almaty"
CAMPAIGN = Campaign("SC00000001", date(2026, 11, 1), date(2026, 11, 30))
GROUP_IDS = [f"SC00000001.{n}" for n in range(1, 6)]
COLUMNS = {
    "id": "iin", "group_id": "theory_id", "date_start": "date_start",
    "date_end": "date_end", "inserted_at": "insert_datetime",
}  # fmt: skip
EXTRAS = ["tab_int", "tab_date", "tab_bool", "tab_char", "tab_json", "tab_text"]
TYPED = (
    "(iin NUMERIC(12,0), theory_id VARCHAR(50), date_start DATE, date_end TEXT,"
    " insert_datetime TIMESTAMPTZ, tab_int INTEGER, tab_date DATE, tab_bool BOOLEAN,"
    " tab_char CHAR(5), tab_json JSONB, tab_text VARCHAR(12))"
)


@pytest.fixture
def url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    with endpoint_database("postgresql", request, tmp_path / "unused.db") as url:
        yield url


def batch(users: list[tuple[str, dict[str, Any] | None]]) -> Batch:
    return Batch(
        json.dumps([user_id for user_id, _ in users]),
        json.dumps([extras for _, extras in users], ensure_ascii=False),
        len(users), "SC00000001.2", CAMPAIGN, datetime(2026, 11, 18, 12, 30, 0, 250),
    )  # fmt: skip


def destination(url: str, table: str) -> Destination:
    return Destination("target", url, table, COLUMNS)


def write_by_copy(url: str, table: str, rows: Batch) -> None:
    """The batch as the row-by-row path writes it: COPY of each row's values."""
    writer = DestinationWriter(destination(url, table), TZ, 1.0, EXTRAS)
    try:

        def work(conn: sa.Connection) -> None:
            dialect.set_local_time_zone(conn, TZ)
            dialect.bulk_insert(
                conn, destination_table(writer.destination, EXTRAS), writer.rows(rows)
            )

        writer.db.transaction(work)
    finally:
        writer.close()


def test_a_batch_is_written_as_copy_wrote_it_whatever_the_columns_types(url: str) -> None:
    execute(url, f"CREATE TABLE sc_target {TYPED}", f"CREATE TABLE sc_copied {TYPED}")
    rows = batch(
        [
            ("000000000150", {"tab_int": "17", "tab_date": "2026-01-02", "tab_bool": "1",
                              "tab_char": "ab", "tab_json": '{"a": [1, 2]}', "tab_text": "é日本"}),
            ("000000000151", {"tab_int": None, "tab_date": None, "tab_bool": "0",
                              "tab_char": "abcde", "tab_json": "null", "tab_text": ""}),
            ("152", None),  # no extra columns stored: NULLs
        ]
    )  # fmt: skip
    writer = DestinationWriter(destination(url, "sc_target"), TZ, 1.0, EXTRAS)
    try:
        first = writer.write(rows, GROUP_IDS)
        again = writer.write(rows, GROUP_IDS)  # 000000000150 is found as the number 150
    finally:
        writer.close()
    assert (first.inserted, first.existing) == (3, 0)
    assert (again.inserted, again.existing) == (0, 3)
    write_by_copy(url, "sc_copied", rows)
    query = "SELECT * FROM {} ORDER BY iin"
    assert fetch(url, query.format("sc_target")) == fetch(url, query.format("sc_copied"))
    assert len(fetch(url, query.format("sc_target"))) == 3


def test_a_value_too_long_for_its_column_is_refused_as_copy_refused_it(url: str) -> None:
    execute(url, f"CREATE TABLE sc_target {TYPED}", f"CREATE TABLE sc_copied {TYPED}")
    rows = batch([("000000000150", {"tab_text": "longer than twelve", "tab_char": "ab"})])
    writer = DestinationWriter(destination(url, "sc_target"), TZ, 1.0, EXTRAS)
    try:
        with pytest.raises(StageError, match=r"value too long for type character varying\(12\)"):
            writer.write(rows, GROUP_IDS)
    finally:
        writer.close()
    with pytest.raises(sa.exc.DataError, match=r"value too long for type character varying\(12\)"):
        write_by_copy(url, "sc_copied", rows)
    assert fetch(url, "SELECT count(*) FROM sc_target") == [(0,)]


def test_the_check_probes_the_id_index_of_a_table_without_statistics(url: str) -> None:
    """A table filled just before (autovacuum off: never analysed) looks to the
    planner as if each ID matched many rows: it would read the whole table for each
    batch, unless told to prefer the index (`dialect.prefer_index_probes`)."""
    execute(
        url,
        "CREATE TABLE sc_target (iin VARCHAR(50), theory_id VARCHAR(50))"
        " WITH (autovacuum_enabled = false)",
        "CREATE INDEX sc_target_iin ON sc_target (iin)",
        "INSERT INTO sc_target SELECT (100000000000 + g * 7)::text, 'SC00000002.1'"
        " FROM generate_series(1, 100000) AS g",
    )
    table = sa.table("sc_target", sa.column("iin"), sa.column("theory_id"))
    rows = dialect.json_array_rows("ids", "extras")
    there = (
        sa.select(sa.literal_column("1"))
        .select_from(table)
        .where(sa.text(f"theory_id IN {tuple(GROUP_IDS)}"), table.c.iin == rows.c.ids)
    )
    check = sa.select(rows.c.ids).select_from(rows).where(~there.exists())
    ids = [str(100000000000 + n * 7) for n in range(0, 10000, 2)]
    engine = sa.create_engine(url)
    try:
        with engine.begin() as conn:
            compiled = check.compile(dialect=conn.dialect)
            sql = "EXPLAIN " + str(compiled)
            batch_values = {"ids": json.dumps(ids), "extras": json.dumps([None] * len(ids))}
            params = compiled.construct_params(batch_values)
            unguided = "\n".join(conn.exec_driver_sql(sql, params).scalars())
            dialect.prefer_index_probes(conn)
            guided = "\n".join(conn.exec_driver_sql(sql, params).scalars())
    finally:
        engine.dispose()
    assert "Seq Scan on sc_target" in unguided, unguided
    assert "Index Scan using sc_target_iin on sc_target" in guided, guided
    assert "Seq Scan" not in guided, guided
