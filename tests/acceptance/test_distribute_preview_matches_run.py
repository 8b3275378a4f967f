"""`distribute --preview` counts the users a run distributes, on every source engine:
both read the source's IDs through one function, which leaves
out NULL, empty and blank IDs, trims the blanks around an ID and keeps its case, so
a database's collation (MariaDB's ignores case and trailing blanks) or its idea of
an empty string cannot make the preview disagree with the run.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import date
from pathlib import Path

import pytest

from support.databases import fresh_database
from support.distribute_endpoints import InProcess, day_config, endpoint_database, execute, fetch

DAY = date(2026, 11, 18)
ROWS = {
    # The tester's day: no user at all.
    1: [None, None, ""],
    2: [None, "", "   ", "\t", " 000000000150 ", "000000000150", "000000000151  ", "ab12cd",
        "AB12CD", "ab12cd ", "\n000000000152\t", "000000000152"],
}  # fmt: skip
USERS = {1: set(), 2: {"000000000150", "000000000151", "ab12cd", "AB12CD", "000000000152"}}


@pytest.fixture
def schedctl_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    yield from fresh_database("sqlite", request, tmp_path / "schedctl.db")


@pytest.mark.parametrize(
    "engine", ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres), "mariadb"]
)
def test_the_preview_counts_the_users_the_run_distributes(
    engine: str,
    schedctl_store: str,
    request: pytest.FixtureRequest,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    dssb = f"sqlite:///{tmp_path / 'dssb.db'}"
    execute(
        dssb,
        "CREATE TABLE theories (theory_id TEXT, theory_start_date DATE, theory_end_date DATE)",
        *[
            f"CREATE TABLE sc_{name} (iin TEXT, theory_id TEXT, date_start DATE,"
            " date_end DATE, insert_datetime TIMESTAMP)"
            for name in ("control", "target", "mirror")
        ],
        "INSERT INTO theories VALUES ('SC00000001', '2026-11-01', '2026-11-30')",
    )
    with endpoint_database(engine, request, tmp_path / "source.db") as source:
        execute(
            source,
            "CREATE TABLE sc_1_120 (iin VARCHAR(20), case_no INTEGER)",
            "INSERT INTO sc_1_120 VALUES (:iin, :case_no)",
            params=[{"iin": i, "case_no": n} for n, rows in ROWS.items() for i in rows],
        )
        for case, day in ((1, date(2026, 11, 17)), (2, DAY)):
            config = day_config(
                tmp_path / f"case{case}.toml",
                source_url=source,
                source_query=f"select iin from sc_1_120 where case_no = {case}",
                campaigns_url=dssb,
                destinations_url=dssb,
            )
            schedctl = InProcess(monkeypatch, capsys, schedctl_store, config, tmp_path / "mail")
            preview = schedctl("distribute", "--json", "--preview", "--date", day.isoformat())
            assert preview.code == 0, preview.err
            run = schedctl("distribute", "--json", "--date", day.isoformat())
            assert run.code == 0, run.err
            shown, done = preview.data, run.data
            assert (shown["available"], shown["distinct"]) == (len(ROWS[case]), len(USERS[case]))
            assert (done["source_rows"], done["planned"]) == (len(ROWS[case]), len(USERS[case]))
            assert shown["distributed"] == done["distributed"]
            assert shown["reason"] == done["reason"]
            if done["status"] == "completed":
                assert shown["campaigns"] == done["campaigns"]
            assert len(shown["sample"]) == len(USERS[case])
        assert done["status"] == "completed"
        written = fetch(dssb, "SELECT iin FROM sc_control UNION ALL SELECT iin FROM sc_target")
        assert sorted(i for (i,) in written) == sorted(USERS[2])
