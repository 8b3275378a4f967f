"""Out-of-range ids, limits and instants on the command line are exit 2 with one line.

Ids are strings on the command line; a valid one is a whole number 1..2**63-1 (a
BIGINT on PostgreSQL, an INTEGER on SQLite). Anything else used to reach the driver
and come back as "internal error" (exit 1) or a whole SQL statement.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import sqlalchemy as sa

from schedctl.cli import run
from schedctl.db.database import Database
from schedctl.db.schema import events, messages, schedule_runs, schedules

TOO_BIG = "99999999999999999999999"
BIGINT_PLUS_ONE = str(2**63)
LARGEST = str(2**63 - 1)
CONFIG = '[reports.queries.ping]\nsql = "select 1"\n'
SCHEDULE = ["schedules", "create", "--name", "n", "--kind", "sql", "--param", "query=ping",
            "--cadence", "daily", "--at", "09:00", "--to", "ops@example.org"]  # fmt: skip
NOW = "2026-11-18T09:00:00+00:00"


@pytest.fixture
def schedctl(db_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch):
    config = tmp_path / "schedctl.toml"
    config.write_text(CONFIG)
    monkeypatch.setenv("SCHEDCTL_NOW", NOW)

    def invoke(*args: str) -> tuple[int, str, str]:
        capsys.readouterr()
        code = run(["--database-url", db_url, "--config", str(config), *args])
        out, err = capsys.readouterr()
        return code, out, err

    return invoke


def row_counts(db_url: str) -> dict[str, int]:
    with Database(db_url, environ={}) as db:
        return {
            table.name: int(db.scalar(sa.select(sa.func.count()).select_from(table)))
            for table in (events, messages, schedules, schedule_runs)
        }


def assert_refused(result: tuple[int, str, str], *needles: str) -> None:
    code, out, err = result
    assert code == 2, (out, err)
    assert out == ""
    assert err.count("\n") == 1, err
    assert err.startswith("schedctl: error: ")
    assert "internal error" not in err
    assert "SQL" not in err
    for needle in needles:
        assert needle in err, err


ID_COMMANDS = [
    ["send-now", "{id}"],
    ["send-now", "--schedule", "{id}"],
    ["messages", "edit", "{id}", "--status", "paused"],
    ["messages", "show", "{id}"],
    ["messages", "delete", "{id}", "--yes"],
    ["events", "update", "{id}", "--starts-at", "2027-01-10T10:00:00Z"],
    ["events", "delete", "{id}", "--yes"],
    ["schedules", "show", "{id}"],
    ["schedules", "update", "{id}", "--name", "x"],
    ["schedules", "pause", "{id}"],
    ["schedules", "resume", "{id}"],
    ["schedules", "delete", "{id}", "--yes"],
    ["schedules", "runs", "{id}"],
]


@pytest.mark.parametrize("args", ID_COMMANDS, ids=lambda a: " ".join(a[:2]))
def test_an_out_of_range_id_is_one_line_exit_2(schedctl, db_url: str, args: list[str]) -> None:
    before = row_counts(db_url)

    for bad in [TOO_BIG, BIGINT_PLUS_ONE, "0", "²", "٣"]:
        result = schedctl(*[bad if a == "{id}" else a for a in args])

        assert_refused(result, "id", "2^63")
    assert row_counts(db_url) == before


@pytest.mark.parametrize("args", ID_COMMANDS, ids=lambda a: " ".join(a[:2]))
def test_the_largest_id_is_valid_and_simply_not_found(
    schedctl, db_url: str, args: list[str]
) -> None:
    result = schedctl(*[LARGEST if a == "{id}" else a for a in args])

    assert_refused(result, "no ", LARGEST)


@pytest.mark.parametrize(
    "args",
    [["schedules", "list"], ["messages", "list"], ["events", "list"], ["suppressions", "list"],
     ["send-now", "1"], ["schedules", "show", "1"]],
    ids=" ".join,
)  # fmt: skip
def test_an_account_id_out_of_range_is_no_such_account(schedctl, args: list[str]) -> None:
    for account in [TOO_BIG, BIGINT_PLUS_ONE, LARGEST, "²"]:
        assert_refused(schedctl(*args, "--account", account), "no account")


@pytest.mark.parametrize("args", [["messages", "list"], ["schedules", "runs", "1"]], ids=" ".join)
def test_an_out_of_range_limit_is_one_line_exit_2(schedctl, db_url: str, args: list[str]) -> None:
    assert schedctl(*SCHEDULE)[0] == 0
    before = row_counts(db_url)

    for limit in [TOO_BIG, BIGINT_PLUS_ONE, "0", "-1"]:
        assert_refused(schedctl(*args, "--limit", limit), "--limit")
    assert row_counts(db_url) == before


@pytest.mark.parametrize(
    "args", [["messages", "list"], ["schedules", "runs", "1"], ["tick"]], ids=" ".join
)
def test_the_largest_limit_works(schedctl, args: list[str]) -> None:
    assert schedctl(*SCHEDULE)[0] == 0

    code, _, err = schedctl(*args, "--limit", LARGEST)

    assert code == 0, err


EVENT = ["events", "add", "--name", "Gala", "--contact", "host@example.org"]


@pytest.mark.parametrize(
    "args",
    [
        [*EVENT, "--starts-at", "0001-01-01T00:00:00Z"],
        [*EVENT, "--starts-at", "9999-12-31T23:59:59Z"],
        [*EVENT, "--starts-at", "2027-01-10T10:00:00Z", "--load-in-time", "0001-01-01T00:00Z"],
        [*EVENT, "--starts-at", "9999-12-31T23:00", "--tz", "Pacific/Kiritimati"],
        ["messages", "list", "--from", "0001-01-01"],
        ["messages", "list", "--until", "9999-12-31"],
        ["messages", "list", "--until", "9999-12-31T23:59:59.999999+00:00"],
        ["messages", "edit", "1", "--send-at", "9999-12-31T23:59:59Z"],
    ],
    ids=lambda a: " ".join(a[:2] + a[-2:]),
)
def test_an_instant_out_of_range_is_one_line_exit_2(schedctl, db_url: str, args: list[str]) -> None:
    assert_refused(schedctl(*args), "out of range")
    assert row_counts(db_url) == dict.fromkeys(row_counts(db_url), 0)


@pytest.mark.parametrize("dialect", ["sqlite"])
def test_the_edges_of_the_instant_range(schedctl) -> None:
    first = schedctl(*EVENT, "--starts-at", "1970-01-01T00:00:00Z", "--json")
    last = schedctl(*EVENT, "--starts-at", "9998-12-31T23:59:59Z", "--tz", "Pacific/Kiritimati")

    assert first[0] == 0, first
    assert last[0] == 0, last
    assert_refused(schedctl(*EVENT, "--starts-at", "1969-12-31T23:59:59Z"), "1970-01-01")
