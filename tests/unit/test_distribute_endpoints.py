"""Oracle, the seed's database: every statement `distribute` sends to a source, the
campaigns or a destination compiles for the Oracle dialect (no Oracle server here; a
live test runs when SCHEDCTL_TEST_ORACLE_URL is set: test_distribute_oracle_live.py)."""

from __future__ import annotations

from datetime import date, datetime

import pytest
import sqlalchemy as sa
from sqlalchemy.dialects import oracle

from schedctl.db import dialect
from schedctl.distribute.config import Destination, Source
from schedctl.distribute.endpoints import (
    StageError,
    destination_table,
    existing_query,
    query,
    stage,
)
from schedctl.errors import DatabaseRefused

ORACLE = oracle.dialect()
DAY = date(2026, 11, 18)
TARGET = Destination(
    name="target",
    database_url="oracle+oracledb://app@dssb/?service_name=DSSB",
    table="dssb_app.sc_local_target",
    columns={"id": "iin", "group_id": "theory_id", "date_start": "date_start",
             "date_end": "date_end", "inserted_at": "insert_datetime"},
)  # fmt: skip
SOURCE = Source(
    database_url="oracle+oracledb://reader@spss/?service_name=SPSS",
    query="select iin, region from spss_user_dracrm.sc_1_120 where count_day = 5"
    " and load_date <= :business_date",
)


def compiled(statement: sa.ClauseElement) -> str:
    return str(statement.compile(dialect=ORACLE))


def test_the_source_and_campaigns_queries_bind_the_business_date() -> None:
    statement, binds = query(SOURCE, DAY)
    assert ":business_date" in compiled(statement)
    assert binds == {"business_date": DAY}


def test_the_existence_check_probes_each_id_within_oracles_limits() -> None:
    table = destination_table(TARGET, ["region"])
    ids = [f"{n:012d}" for n in range(dialect.existence_check_size(ORACLE))]
    check = existing_query(table, TARGET, ["SC00000001.1", "SC00000001.2"], ids, ORACLE)
    text = compiled(check)
    assert text.startswith("SELECT :param_1 AS value FROM DUAL \nWHERE EXISTS (SELECT 1 \n")
    assert "FROM dssb_app.sc_local_target \nWHERE dssb_app.sc_local_target.theory_id IN" in text
    assert text.count(" UNION ALL ") == 999
    assert "CAST" not in text  # a VARCHAR2 ID column (or one not read): compared as it is
    assert "FOR UPDATE" not in text  # Oracle's writers are serialised by LOCK TABLE
    expanded = str(check.compile(dialect=ORACLE, compile_kwargs={"render_postcompile": True}))
    assert expanded.count(":group_ids_1") == 1000  # the group ids, never more than 1000


@pytest.mark.parametrize(
    ("id_type", "compared"),
    [(oracle.NUMBER(12), "dssb_app.sc_local_target.iin = CAST(:param_1 AS NUMBER(12))"),
     (oracle.NUMBER(), "dssb_app.sc_local_target.iin = CAST(:param_1 AS NUMBER)"),
     (sa.CHAR(14), "dssb_app.sc_local_target.iin = CAST(:param_1 AS CHAR(14))"),
     (sa.NCHAR(14), "dssb_app.sc_local_target.iin = CAST(:param_1 AS NCHAR(14))"),
     (oracle.VARCHAR2(20), "dssb_app.sc_local_target.iin = :param_1"),
     (oracle.NVARCHAR2(20), "dssb_app.sc_local_target.iin = :param_1")],
)  # fmt: skip
def test_the_existence_check_compares_ids_as_the_id_columns_type(
    id_type: sa.types.TypeEngine[object], compared: str
) -> None:
    """A NUMBER column holds 000000000150 as 150, a CHAR(14) one blank-padded, and
    Oracle compares a CHAR blank-padded only with a CHAR: the plan's ID is cast to
    the column's type, and the query still returns the plan's ID as it was bound."""
    table = destination_table(TARGET)
    check = existing_query(table, TARGET, ["SC00000001.1"], ["000000000150"], ORACLE, id_type)
    text = compiled(check)
    assert text.startswith("SELECT :param_1 AS value FROM DUAL")
    assert text.endswith(f"IN (__[POSTCOMPILE_group_ids]) AND {compared})")
    assert check.compile(dialect=ORACLE).params["param_1"] == "000000000150"


def test_rows_are_inserted_with_plain_binds() -> None:
    table = destination_table(TARGET, ["region"])
    text = compiled(table.insert().values(
        iin="1", theory_id="SC00000001.2", date_start=DAY, date_end=DAY,
        insert_datetime=datetime(2026, 11, 18, 9), region="N",
    ))  # fmt: skip
    assert text == (
        "INSERT INTO dssb_app.sc_local_target (iin, theory_id, date_start, date_end,"
        " insert_datetime, region) VALUES (:iin, :theory_id, :date_start, :date_end,"
        " :insert_datetime, :region)"
    )


def test_writers_lock_the_table_and_sources_read_only() -> None:
    table = destination_table(TARGET)
    assert dialect.lock_table_statement(ORACLE, table) == (
        "LOCK TABLE dssb_app.sc_local_target IN SHARE ROW EXCLUSIVE MODE"
    )
    assert dialect.READ_ONLY_TRANSACTION == "SET TRANSACTION READ ONLY"
    upper = Destination("target", TARGET.database_url, "DSSB_APP.SC_LOCAL_TARGET", TARGET.columns)
    # Upper-case names are quoted (case-sensitive in Oracle): the README says to write
    # names in lower case unless the table was created with quoted names.
    assert '"SC_LOCAL_TARGET"' in str(
        dialect.lock_table_statement(ORACLE, destination_table(upper))
    )


def test_a_stage_names_a_refusing_database_once() -> None:
    refused = DatabaseRefused("database error (postgresql at db:5432/source): no identity")
    with pytest.raises(StageError) as caught, stage("campaigns", None):
        raise refused
    assert (
        caught.value.message
        == "campaigns database error (postgresql at db:5432/source): no identity"
    )
    assert (caught.value.exit_code, caught.value.temporary) == (1, False)
