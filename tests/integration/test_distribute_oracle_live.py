"""A distribution day against a live Oracle database (the seed's deployment).

Runs only when SCHEDCTL_TEST_ORACLE_URL names one (e.g.
``oracle+oracledb://user:password@host:1521/?service_name=FREEPDB1``): the source,
the campaigns and the control, target and mirror tables are made there under unique
names, schedctl's own store is SQLite, and the tables must equal the model.
"""

from __future__ import annotations

import json
import os
import random
import uuid
from collections import Counter
from datetime import date
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from support.cli import run_cli
from support.distribute import Campaign, expected_rows, table_rows

ORACLE_URL = os.environ.get("SCHEDCTL_TEST_ORACLE_URL")
DAY = date(2026, 11, 18)

pytestmark = pytest.mark.skipif(not ORACLE_URL, reason="SCHEDCTL_TEST_ORACLE_URL is not set")


def test_a_day_on_oracle(tmp_path: Path) -> None:
    assert ORACLE_URL is not None
    suffix = uuid.uuid4().hex[:8]
    names = {k: f"sct_{k}_{suffix}" for k in ("src", "camp", "ctl", "tgt", "mir")}
    engine = sa.create_engine(ORACLE_URL)
    rng = random.Random(9)
    ids = {f"{rng.randrange(10**11, 10**12)}": (f"r{rng.randrange(5)}",) for _ in range(300)}
    campaigns = [Campaign(f"SC{n:08d}", date(2026, 1, 1), date(2026, 12, 31)) for n in (1, 2)]
    try:
        with engine.begin() as conn:
            conn.exec_driver_sql(
                f"CREATE TABLE {names['src']}"
                " (iin VARCHAR2(12), count_day NUMBER, tab1 VARCHAR2(255))"
            )
            conn.execute(
                sa.text(f"INSERT INTO {names['src']} VALUES (:i, 5, :t)"),
                [{"i": i, "t": e[0]} for i, e in ids.items()] * 2,  # every ID twice
            )
            conn.exec_driver_sql(
                f"CREATE TABLE {names['camp']} (theory_id VARCHAR2(50), s DATE, e DATE)"
            )
            conn.execute(
                sa.text(f"INSERT INTO {names['camp']} VALUES (:i, :s, :e)"),
                [{"i": c.id, "s": c.start, "e": c.end} for c in campaigns],
            )
            for key in ("ctl", "tgt", "mir"):
                conn.exec_driver_sql(
                    f"CREATE TABLE {names[key]} (iin VARCHAR2(50), theory_id VARCHAR2(50),"
                    " date_start DATE, date_end DATE, insert_datetime DATE, tab1 VARCHAR2(255))"
                )
        columns = (
            'columns = { id = "iin", group_id = "theory_id", date_start = "date_start",'
            ' date_end = "date_end", inserted_at = "insert_datetime" }'
        )
        config = tmp_path / "schedctl.toml"
        config.write_text(
            f"""
[distribute.source]
database_url = "{ORACLE_URL}"
query = "select iin, tab1 from {names["src"]} where count_day = 5"
[distribute.campaigns]
database_url = "{ORACLE_URL}"
query = "select theory_id, s, e from {names["camp"]}"
"""
            + "".join(
                f'[distribute.{role}]\ndatabase_url = "{ORACLE_URL}"\ntable = "{names[key]}"\n'
                f"{columns}\n"
                for role, key in (("control", "ctl"), ("target", "tgt"), ("mirror", "mir"))
            )
        )
        store = f"sqlite:///{tmp_path / 'store.db'}"
        assert run_cli("db", "upgrade", db_url=store).returncode == 0
        env = {"SCHEDCTL_CONFIG": str(config), "SCHEDCTL_NOW": "2026-11-18T06:00:00Z"}
        result = run_cli("distribute", "--json", db_url=store, env=env, timeout=600)
        assert result.returncode == 0, result.stderr
        assert json.loads(result.stdout)["status"] == "completed"
        expected = expected_rows(ids, DAY, campaigns)
        found = {
            role: oracle_rows(engine, names[key])
            for role, key in (("control", "ctl"), ("target", "tgt"), ("mirror", "mir"))
        }
        assert found["control"] == expected["control"]
        assert found["target"] == expected["target"]
        assert found["mirror"] == expected["target"]
    finally:
        with engine.begin() as conn:
            for name in names.values():
                conn.exec_driver_sql(
                    f"BEGIN EXECUTE IMMEDIATE 'DROP TABLE {name}';"
                    " EXCEPTION WHEN OTHERS THEN NULL; END;"
                )
        engine.dispose()


def oracle_rows(engine: sa.Engine, table: str) -> Counter[tuple[Any, ...]]:
    """The table's rows as the model writes them (Oracle DATE comes back a datetime)."""
    rows = table_rows(engine, table, ("tab1",))
    return Counter({(r[0], r[1], r[2].date(), r[3].date(), r[4]): n for r, n in rows.items()})
