"""Time zone data through the command line, in-process, on SQLite and PostgreSQL
(SPEC §12 "Time zone data" and "Seeing what will run").

A schedule's next_run_at carries the tzdata release that computed it; a tick running
another release recomputes it before judging it due. The "old" release is a build of
Asia/Almaty from before 2024-03-01 (UTC+6) put on zoneinfo's search path for the
duration of one command (tests/support/zone_data.py); the packaged data has it at
UTC+5 from that day.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from schedctl.db.database import Database
from schedctl.db.schema import schedule_runs, schedules
from schedctl.zones import tzdata_version
from support.cli import CliRunner, Result
from support.zone_data import ALMATY_2023, OLD_RELEASE, zone_data

CONFIG = '[reports.queries.ping]\nsql = "select 1 as one"\n\n[messages]\nenabled = false\n'
REPORT = ["--kind", "sql", "--param", "query=ping", "--to", "ops@example.com"]


@pytest.fixture
def schedctl(cli: CliRunner, db_url: str, tmp_path: Path) -> Any:
    """`schedctl(*args, now=ISO)`: the CLI on this test's database and config."""
    config = tmp_path / "schedctl.toml"
    config.write_text(CONFIG)

    def invoke(*args: str, now: str | None = None) -> Result:
        env = {"SCHEDCTL_CONFIG": str(config)}
        if now is not None:
            env["SCHEDCTL_NOW"] = now
        return cli(*args, db_url=db_url, env=env)

    return invoke


def stored(db_url: str, name: str) -> tuple[datetime | None, str | None]:
    query = sa.select(schedules.c.next_run_at, schedules.c.tzdata_version).where(
        schedules.c.name == name
    )
    with Database(db_url, environ={}) as db:
        row = db.transaction(lambda conn: conn.execute(query).one())
    return row.next_run_at, row.tzdata_version


def run_slots(db_url: str) -> list[tuple[datetime, str]]:
    query = sa.select(schedule_runs.c.slot, schedule_runs.c.status).order_by(schedule_runs.c.id)
    with Database(db_url, environ={}) as db:
        return [(r.slot, r.status) for r in db.transaction(lambda c: c.execute(query).all())]


def utc(*parts: int) -> datetime:
    return datetime(*parts, tzinfo=UTC)


# --- a next_run_at computed under another release ------------------------------------


def test_a_next_run_computed_under_older_zone_data_follows_the_zones_new_offset(
    schedctl: Any, db_url: str, tmp_path: Path
) -> None:
    with zone_data(tmp_path / "tzdata-old", ALMATY_2023):
        created = schedctl(
            "schedules", "create", "--name", "almaty", *REPORT, "--cadence", "daily",
            "--at", "09:00", "--tz", "Asia/Almaty", "--json", now="2024-02-29T12:00:00Z",
        )  # fmt: skip
    assert created.returncode == 0, created.stderr
    # The old release: 09:00 at UTC+6.
    assert created.json["next_run_at"] == "2024-03-01T03:00:00+00:00"
    assert stored(db_url, "almaty") == (utc(2024, 3, 1, 3, 0), OLD_RELEASE)

    def tick(now: str) -> dict[str, Any]:
        result = schedctl("tick", "--json", now=now)
        assert result.returncode == 0, result.stderr
        counts: dict[str, Any] = result.json
        return counts

    # The packaged release: from 2024-03-01 Almaty is UTC+5, so 09:00 is 04:00 UTC.
    early = tick("2024-03-01T03:30:00Z")
    assert (early["due"], early["runs_created"], early["next_runs_recomputed"]) == (0, 0, 1)
    assert stored(db_url, "almaty") == (utc(2024, 3, 1, 4, 0), tzdata_version())

    on_time = tick("2024-03-01T04:00:00Z")
    assert (on_time["runs_created"], on_time["next_runs_recomputed"]) == (1, 0)
    assert tick("2024-03-01T04:30:00Z")["runs_created"] == 0
    assert tick("2024-03-02T04:00:00Z")["runs_created"] == 1
    assert run_slots(db_url) == [
        (utc(2024, 3, 1, 4, 0), "succeeded"),
        (utc(2024, 3, 2, 4, 0), "succeeded"),
    ]


def test_a_next_run_of_unrecorded_zone_data_is_kept_when_the_zone_did_not_change(
    schedctl: Any, db_url: str
) -> None:
    # A row written before tzdata_version existed: NULL, an unknown release.
    created = schedctl(
        "schedules", "create", "--name", "berlin", *REPORT, "--cadence", "daily",
        "--at", "02:30", "--tz", "Europe/Berlin", "--json", now="2027-03-27T12:00:00Z",
    )  # fmt: skip
    assert created.returncode == 0, created.stderr
    gap_slot = utc(2027, 3, 28, 1, 0)  # 02:30 does not exist: 03:00 CEST
    assert stored(db_url, "berlin") == (gap_slot, tzdata_version())
    with Database(db_url, environ={}) as db:
        db.transaction(lambda conn: conn.execute(schedules.update().values(tzdata_version=None)))

    result = schedctl("tick", "--json", now="2027-03-28T00:30:00Z")
    assert result.returncode == 0, result.stderr
    assert (result.json["due"], result.json["next_runs_recomputed"]) == (0, 0)
    assert stored(db_url, "berlin") == (gap_slot, tzdata_version())


def test_a_schedule_stores_the_release_that_computed_its_next_run(
    schedctl: Any, db_url: str
) -> None:
    args = ["--cadence", "daily", "--at", "09:00", "--tz", "Asia/Almaty"]
    assert schedctl("schedules", "create", "--name", "a", *REPORT, *args).returncode == 0
    assert stored(db_url, "a")[1] == tzdata_version()
    assert schedctl("schedules", "pause", "1").returncode == 0
    assert stored(db_url, "a") == (None, None)
    assert schedctl("schedules", "resume", "1").returncode == 0
    assert stored(db_url, "a")[1] == tzdata_version()


# --- the release shown --------------------------------------------------------------


def test_db_status_shows_the_tzdata_release(schedctl: Any) -> None:
    human = schedctl("db", "status")
    assert human.returncode == 0, human.stderr
    assert f"; tzdata {tzdata_version()}" in human.stdout.splitlines()[0]
    as_json = schedctl("db", "status", "--json")
    assert json.loads(as_json.stdout)["tzdata"] == tzdata_version()


def test_version_shows_the_tzdata_release(cli: CliRunner) -> None:
    result = cli("--version")
    assert result.returncode == 0
    assert result.stdout == f"schedctl 0.1.0 (tzdata {tzdata_version()})\n"
