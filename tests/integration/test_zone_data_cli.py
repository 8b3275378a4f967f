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
from schedctl.db.schema import events, schedule_runs, schedules, users
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


def count(db_url: str, table: sa.Table) -> int:
    with Database(db_url, environ={}) as db:
        return int(db.scalar(sa.select(sa.func.count()).select_from(table)))


def warnings(result: Result) -> list[str]:
    return [line for line in result.stderr.splitlines() if line.startswith("schedctl: warning:")]


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


# --- zones on the command line -----------------------------------------------------


def test_a_schedule_at_a_time_dst_moves_is_warned_about_once_per_kind(schedctl: Any) -> None:
    result = schedctl(
        "schedules", "create", "--name", "n", *REPORT, "--cadence", "daily", "--at", "02:30",
        "--tz", "Europe/Berlin", "--json", now="2026-06-01T00:00:00Z",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.json["name"] == "n"  # stdout is the JSON document alone
    assert warnings(result) == [
        "schedctl: warning: 02:30 occurs twice on 2026-10-25 in Europe/Berlin:"
        " runs at the first, CEST",
        "schedctl: warning: 02:30 does not exist on 2027-03-28 in Europe/Berlin:"
        " runs at 03:00 CEST",
    ]


def test_an_update_warns_when_it_sets_a_time_dst_moves(schedctl: Any) -> None:
    now = "2026-06-01T00:00:00Z"
    created = schedctl(
        "schedules", "create", "--name", "n", *REPORT, "--cadence", "daily", "--at", "09:00",
        "--tz", "America/New_York", now=now,
    )  # fmt: skip
    assert (created.returncode, warnings(created)) == (0, [])
    moved = schedctl("schedules", "update", "1", "--at", "01:30", now=now)
    assert moved.returncode == 0, moved.stderr
    assert warnings(moved) == [
        "schedctl: warning: 01:30 occurs twice on 2026-11-01 in America/New_York:"
        " runs at the first, EDT"
    ]
    # An update that leaves the time and zone alone says nothing about them again.
    other = schedctl("schedules", "update", "1", "--to", "cfo@example.com", now=now)
    assert (other.returncode, other.stderr) == (0, "")


def test_a_misspelt_zone_gets_a_did_you_mean_and_writes_nothing(schedctl: Any, db_url: str) -> None:
    result = schedctl(
        "schedules", "create", "--name", "n", *REPORT, "--cadence", "daily", "--at", "09:00",
        "--tz", "Europe/Berln",
    )  # fmt: skip
    assert result.returncode == 2
    assert result.stderr == (
        "schedctl: error: invalid time zone 'Europe/Berln' (did you mean 'Europe/Berlin'?)\n"
    )
    users_result = schedctl("users", "add", "ann@example.com", "--tz", "Europe/Berln")
    assert users_result.returncode == 2
    assert "(did you mean 'Europe/Berlin'?)" in users_result.stderr
    assert count(db_url, schedules) == count(db_url, users) == 0


def test_a_fixed_offset_zone_is_accepted_with_a_warning_that_it_never_observes_dst(
    schedctl: Any, db_url: str
) -> None:
    warning = (
        "schedctl: warning: time zone EST is a fixed offset, UTC-05:00, that never observes"
        " DST (for local time, use an IANA name such as America/New_York)"
    )
    made = [
        schedctl(
            "schedules", "create", "--name", "n", *REPORT, "--cadence", "daily",
            "--at", "09:00", "--tz", "EST", "--json",
        ),
        schedctl("users", "add", "ann@example.com", "--tz", "EST", "--json"),
        schedctl(
            "events", "add", "--name", "launch", "--starts-at", "2030-01-10T10:00",
            "--contact", "ann@example.com", "--tz", "EST", "--json",
        ),
    ]  # fmt: skip
    for result in made:
        assert result.returncode == 0, result.stderr
        assert result.json["tz"] == "EST"
        assert result.stderr.splitlines() == [warning]
    assert count(db_url, schedules) == count(db_url, users) == count(db_url, events) == 1
