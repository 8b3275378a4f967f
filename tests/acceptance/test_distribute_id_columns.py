"""Each ID is written once per campaign to each destination table, whatever the type
of the table's ID column.

The IDs have leading zeros (``000000000101``). A numeric column stores them as
``101`` and a CHAR(14) column as ``000000000101`` padded with blanks; the check
for what is already there is made by the destination, on the plan's IDs converted
to the column's own type. One campaign runs on two business dates, so the second
date finds most of its users in the tables already; then ``reconcile --repair``
runs twice over the mirror and a third time after three of its rows were deleted.
Oracle's NUMBER is covered by compiling the check for the Oracle dialect
(tests/unit/test_distribute_endpoints.py).
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import date
from pathlib import Path
from typing import Any

import pytest

from support.databases import fresh_database
from support.distribute import Campaign, expected_rows
from support.distribute_endpoints import (
    InProcess,
    day_config,
    endpoint_database,
    execute,
    fetch,
)

DAYS = (date(2026, 11, 17), date(2026, 11, 18))
CAMPAIGN = Campaign("SC00000001", DAYS[0], DAYS[1])
IDS = [f"{n:012d}" for n in range(101, 221)]
TABLES = ("control", "target", "mirror")

ID_TYPES = [
    ("sqlite", "INTEGER"),
    ("sqlite", "CHAR(14)"),
    ("sqlite", "TEXT"),
    *[
        pytest.param("postgresql", t, marks=pytest.mark.postgres)
        for t in ("INTEGER", "BIGINT", "NUMERIC(12,0)", "CHAR(14)", "VARCHAR(20)", "TEXT")
    ],
    *[
        ("mariadb", t)
        for t in ("INT", "BIGINT", "DECIMAL(12,0)", "CHAR(14)", "VARCHAR(20)", "TEXT")
    ],
]


@pytest.fixture
def schedctl_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    yield from fresh_database("sqlite", request, tmp_path / "schedctl.db")


def _destination_tables(url: str, engine: str, id_type: str) -> None:
    stamp = "DATETIME" if engine == "mariadb" else "TIMESTAMP"
    execute(
        url,
        *[
            f"CREATE TABLE sc_{name} (iin {id_type}, theory_id VARCHAR(50), date_start DATE,"
            f" date_end DATE, insert_datetime {stamp})"
            for name in TABLES
        ],
    )


def _source_and_campaigns(tmp_path: Path, ids: list[str]) -> tuple[str, str]:
    """SQLite files: a source returning ``ids``, and the one campaign's table."""
    source, dssb = f"sqlite:///{tmp_path / 'source.db'}", f"sqlite:///{tmp_path / 'dssb.db'}"
    execute(
        source,
        "CREATE TABLE sc_1_120 (iin TEXT)",
        "INSERT INTO sc_1_120 VALUES (:iin)",
        params=[{"iin": i} for i in ids],
    )
    execute(
        dssb,
        "CREATE TABLE theories (theory_id TEXT, theory_start_date DATE, theory_end_date DATE)",
        "INSERT INTO theories VALUES (:i, :s, :e)",
        params=[{"i": CAMPAIGN.id, "s": CAMPAIGN.start, "e": CAMPAIGN.end}],
    )
    return source, dssb


def _config(tmp_path: Path, source: str, dssb: str, destinations: str) -> Path:
    return day_config(
        tmp_path / "schedctl.toml",
        source_url=source,
        source_query="select iin from sc_1_120",
        campaigns_url=dssb,
        destinations_url=destinations,
    )


def _as_id(value: Any) -> str:
    """A value read back from a destination as the plan's ID (the test's own reading)."""
    return f"{int(str(value).strip()):012d}"


def _ids_in(url: str, table: str) -> list[str]:
    return sorted(_as_id(v) for (v,) in fetch(url, f"SELECT iin FROM {table}"))


def _model_ids(kind: str) -> list[str]:
    """The users of ``kind`` (control or target) over both dates, once each."""
    ids = dict.fromkeys(IDS, ())
    return sorted({row[0] for day in DAYS for row in expected_rows(ids, day, [CAMPAIGN])[kind]})


@pytest.mark.parametrize(("engine", "id_type"), ID_TYPES)
def test_each_id_is_written_once_per_campaign_whatever_the_column_type(
    engine: str,
    id_type: str,
    schedctl_store: str,
    request: pytest.FixtureRequest,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    source, dssb = _source_and_campaigns(tmp_path, IDS + IDS[:10])
    with endpoint_database(engine, request, tmp_path / "destinations.db") as url:
        _destination_tables(url, engine, id_type)
        config = _config(tmp_path, source, dssb, url)
        schedctl = InProcess(monkeypatch, capsys, schedctl_store, config, tmp_path / "mail")

        first = schedctl("distribute", "--json", "--date", DAYS[0].isoformat())
        assert (first.code, first.data["status"]) == (0, "completed"), first.err
        second = schedctl("distribute", "--json")
        assert (second.code, second.data["status"]) == (0, "completed"), second.err
        # Most of the day's users were given to the campaign the day before.
        existing = {d["name"]: d["existing"] for d in second.data["destinations"]}
        assert existing["target"] > 0, existing
        assert existing["mirror"] == existing["target"], existing

        control, target = _model_ids("control"), _model_ids("target")
        assert _ids_in(url, "sc_control") == control
        assert _ids_in(url, "sc_target") == target
        assert _ids_in(url, "sc_mirror") == target

        for _ in range(2):
            check = schedctl("reconcile", "--json", "--repair")
            assert check.code == 0, check.err
            assert check.data["mirror_checked"] == sum(
                d["rows"] for r in (first, second) for d in r.data["destinations"]
                if d["name"] == "mirror"
            )  # fmt: skip
            assert (check.data["mirror_missing"], check.data["mirror_repaired"]) == (0, 0)
            assert _ids_in(url, "sc_mirror") == target

        gone = fetch(url, "SELECT iin FROM sc_mirror ORDER BY iin")[:3]
        execute(url, "DELETE FROM sc_mirror WHERE iin = :iin", params=[{"iin": v} for (v,) in gone])
        found = schedctl("reconcile", "--json")
        assert found.code == 1, found.err
        assert found.data["mirror_missing"] >= 3
        repaired = schedctl("reconcile", "--json", "--repair")
        assert repaired.code == 0, repaired.err
        assert _ids_in(url, "sc_mirror") == target
        again = schedctl("reconcile", "--json", "--repair")
        assert (again.data["mirror_missing"], again.data["mirror_repaired"]) == (0, 0)


# IDs that MariaDB's default collation (utf8mb4_general_ci) takes for one another.
FOLDED = [f"{stem}{n}" for n in range(20) for stem in ("ab", "AB", "cafe", "café")]


def test_ids_that_differ_in_case_or_accent_are_two_users_in_a_mariadb_table(
    schedctl_store: str,
    request: pytest.FixtureRequest,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Found by review: a user whose ID differed from one already copied only in case
    or accent (``AB12``, ``ab12``) was taken for it and never written, where the two
    fell into different batches, and reconcile did not see it missing."""
    source, dssb = _source_and_campaigns(tmp_path, FOLDED)
    with endpoint_database("mariadb", request, tmp_path / "destinations.db") as url:
        _destination_tables(url, "mariadb", "VARCHAR(20) COLLATE utf8mb4_general_ci")
        for name in TABLES:
            execute(url, f"CREATE INDEX sc_{name}_iin ON sc_{name} (iin)")
        config = _config(tmp_path, source, dssb, url)
        schedctl = InProcess(monkeypatch, capsys, schedctl_store, config, tmp_path / "mail")
        for day in DAYS:
            done = schedctl("distribute", "--json", "--date", day.isoformat())
            assert (done.code, done.data["status"]) == (0, "completed"), done.err

        def ids(table: str) -> list[str]:
            return sorted(str(v) for (v,) in fetch(url, f"SELECT iin FROM {table}"))

        users = dict.fromkeys(FOLDED, ())
        for kind in ("control", "target"):  # each once, as the model splits them
            model = {row[0] for day in DAYS for row in expected_rows(users, day, [CAMPAIGN])[kind]}
            assert ids(f"sc_{kind}") == sorted(model), kind
        assert ids("sc_mirror") == ids("sc_target")
        gone = ids("sc_mirror")[0]
        execute(url, "DELETE FROM sc_mirror WHERE iin = BINARY :iin", params=[{"iin": gone}])
        found = schedctl("reconcile", "--json")
        assert found.code == 1, found.err
        assert found.data["mirror_missing"] >= 1  # (once for each day's plan that has it)
        assert schedctl("reconcile", "--json", "--repair").code == 0
        assert ids("sc_mirror") == ids("sc_target")


def test_a_mariadb_batch_runs_at_repeatable_read_whatever_the_session_says(
    request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    """Found by review: at READ COMMITTED (a URL's init_command, a server default) the
    existence check's FOR UPDATE takes no next-key locks, and concurrent runs inserted
    the same (ID, campaign) twice."""
    import sqlalchemy as sa

    from schedctl.db import dialect

    with endpoint_database("mariadb", request, tmp_path / "d.db") as url:
        execute(url, "CREATE TABLE t (iin VARCHAR(20))")
        engine = sa.create_engine(
            url,
            connect_args={"init_command": "SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED"},
        )
        try:
            with engine.begin() as conn:
                table = sa.Table("t", sa.MetaData(), sa.Column("iin", sa.String(20)))
                dialect.lock_for_insert(conn, table)
                conn.execute(sa.select(table).with_for_update()).all()
                level = conn.exec_driver_sql(
                    "SELECT trx_isolation_level FROM information_schema.innodb_trx"
                    " WHERE trx_mysql_thread_id = CONNECTION_ID()"
                ).scalar()
                session = conn.exec_driver_sql("SELECT @@tx_isolation").scalar()
        finally:
            engine.dispose()
    assert (level, session) == ("REPEATABLE READ", "READ-COMMITTED")
