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
    source, dssb = f"sqlite:///{tmp_path / 'source.db'}", f"sqlite:///{tmp_path / 'dssb.db'}"
    execute(
        source,
        "CREATE TABLE sc_1_120 (iin TEXT)",
        "INSERT INTO sc_1_120 VALUES (:iin)",
        params=[{"iin": i} for i in IDS + IDS[:10]],
    )
    execute(
        dssb,
        "CREATE TABLE theories (theory_id TEXT, theory_start_date DATE, theory_end_date DATE)",
        "INSERT INTO theories VALUES (:i, :s, :e)",
        params=[{"i": CAMPAIGN.id, "s": CAMPAIGN.start, "e": CAMPAIGN.end}],
    )
    with endpoint_database(engine, request, tmp_path / "destinations.db") as url:
        _destination_tables(url, engine, id_type)
        config = day_config(
            tmp_path / "schedctl.toml",
            source_url=source,
            source_query="select iin from sc_1_120",
            campaigns_url=dssb,
            destinations_url=url,
        )
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
