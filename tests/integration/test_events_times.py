"""An event's times are read in its zone; a load-in after the start is refused.

A time without an offset is local to ``--tz`` (``events add``) or to the event's zone
(``events update``); without a zone it stays UTC (SPEC §11). Local times that do not
exist or occur twice follow SPEC §3: the first instant after the gap, the first
occurrence; either is said on stderr.
"""

from __future__ import annotations

import pytest

from support.cli import CliRunner
from support.delivery import T0, all_messages

NOW = {"SCHEDCTL_NOW": T0.isoformat()}  # 2026-11-18
ADD = ["events", "add", "--name", "Gala", "--contact", "host@example.org"]


def test_a_time_without_offset_is_local_to_tz(cli: CliRunner, db_url: str) -> None:
    result = cli(*ADD, "--starts-at", "2027-01-10T10:00", "--tz", "Europe/Berlin", "--load-in-time",
                 "2027-01-10T08:30", "--json", db_url=db_url, env=NOW)  # fmt: skip

    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    assert result.json["starts_at"] == "2027-01-10T09:00:00+00:00"
    assert result.json["load_in_time"] == "2027-01-10T07:30:00+00:00"
    reminder = next(m for m in all_messages(db_url) if m.type == "REMINDER_2H")
    assert "Sun 2027-01-10 10:00 CET" in reminder.body_text


def test_the_human_line_shows_the_local_start(cli: CliRunner, db_url: str) -> None:
    result = cli(*ADD, "--starts-at", "2027-01-10T10:00", "--tz", "Europe/Berlin",
                 db_url=db_url, env=NOW)  # fmt: skip

    assert result.returncode == 0, result.stderr
    assert "starts Sun 2027-01-10 10:00 CET (2027-01-10 09:00 UTC)" in result.stdout


@pytest.mark.parametrize("dialect", ["sqlite"])
@pytest.mark.parametrize(
    ("starts_at", "tz", "expected"),
    [
        ("2027-01-10T10:00", "UTC", "2027-01-10T10:00:00+00:00"),  # SPEC §11
        ("2027-01-10T10:00:00Z", "Europe/Berlin", "2027-01-10T10:00:00+00:00"),
        ("2027-01-10T10:00-05:00", "Europe/Berlin", "2027-01-10T15:00:00+00:00"),
    ],
)
def test_an_offset_or_no_zone_is_taken_as_written(
    cli: CliRunner, db_url: str, starts_at: str, tz: str, expected: str
) -> None:
    result = cli(*ADD, "--starts-at", starts_at, "--tz", tz, "--json", db_url=db_url, env=NOW)

    assert result.returncode == 0, result.stderr
    assert result.json["starts_at"] == expected


def test_without_tz_a_time_stays_utc(cli: CliRunner, db_url: str) -> None:
    result = cli(*ADD, "--starts-at", "2027-01-10T10:00", "--json", db_url=db_url, env=NOW)

    assert result.returncode == 0, result.stderr
    assert result.json["starts_at"] == "2027-01-10T10:00:00+00:00"


@pytest.mark.parametrize(
    ("starts_at", "expected", "note"),
    [
        # Spring forward in Berlin: 02:00-03:00 does not exist; §3: the first instant after.
        ("2027-03-28T02:30", "2027-03-28T01:00:00+00:00", "does not exist in Europe/Berlin"),
        # Fall back: 02:00-03:00 occurs twice; §3: the first occurrence (CEST).
        ("2027-10-31T02:30", "2027-10-31T00:30:00+00:00", "occurs twice in Europe/Berlin"),
    ],
)
def test_dst_gaps_and_repeats_follow_spec_3_and_say_so(
    cli: CliRunner, db_url: str, starts_at: str, expected: str, note: str
) -> None:
    result = cli(*ADD, "--starts-at", starts_at, "--tz", "Europe/Berlin", "--json",
                 db_url=db_url, env=NOW)  # fmt: skip

    assert result.returncode == 0, result.stderr
    assert result.json["starts_at"] == expected
    assert result.stderr.count("\n") == 1
    assert result.stderr.startswith("schedctl: warning: ")
    assert note in result.stderr


def test_update_reads_a_time_in_the_events_zone(cli: CliRunner, db_url: str) -> None:
    added = cli(*ADD, "--starts-at", "2027-01-10T10:00", "--tz", "America/New_York", "--json",
                db_url=db_url, env=NOW)  # fmt: skip
    event_id = added.json["id"]

    updated = cli("events", "update", event_id, "--starts-at", "2027-01-11T10:00", "--load-in-time",
                  "2027-01-11T08:00", "--json", db_url=db_url, env=NOW)  # fmt: skip

    assert updated.returncode == 0, updated.stderr
    assert updated.json["starts_at"] == "2027-01-11T15:00:00+00:00"
    assert updated.json["load_in_time"] == "2027-01-11T13:00:00+00:00"


def _events(cli: CliRunner, db_url: str) -> list[dict[str, str]]:
    listed = cli("events", "list", "--json", db_url=db_url)
    return list(listed.json["events"])


def test_a_load_in_after_the_start_is_refused_on_add(cli: CliRunner, db_url: str) -> None:
    result = cli(*ADD, "--starts-at", "2027-01-10T10:00", "--tz", "Europe/Berlin",
                 "--load-in-time", "2027-01-10T10:01", db_url=db_url, env=NOW)  # fmt: skip

    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr.count("\n") == 1
    assert "load-in time" in result.stderr
    assert "after the start" in result.stderr
    assert _events(cli, db_url) == []
    assert all_messages(db_url) == []


@pytest.mark.parametrize(
    "change",
    [
        ["--load-in-time", "2027-01-10T12:00:00Z"],  # after the stored start
        ["--starts-at", "2027-01-10T07:00:00Z"],  # before the stored load-in
        ["--starts-at", "2027-01-10T07:00:00Z", "--load-in-time", "2027-01-10T08:00:00Z"],
    ],
    ids=["load-in", "start", "both"],
)
def test_a_load_in_after_the_start_is_refused_on_update(
    cli: CliRunner, db_url: str, change: list[str]
) -> None:
    added = cli(*ADD, "--starts-at", "2027-01-10T10:00:00Z", "--load-in-time",
                "2027-01-10T08:00:00Z", "--json", db_url=db_url, env=NOW)  # fmt: skip
    assert added.returncode == 0, added.stderr
    before = (_events(cli, db_url), all_messages(db_url))

    result = cli("events", "update", added.json["id"], *change, db_url=db_url, env=NOW)

    assert result.returncode == 2, result.stdout
    assert result.stderr.count("\n") == 1
    assert "after the start" in result.stderr
    assert (_events(cli, db_url), all_messages(db_url)) == before


@pytest.mark.parametrize("dialect", ["sqlite"])
def test_help_says_how_a_time_without_offset_is_read(cli: CliRunner, db_url: str) -> None:
    add_help = " ".join(cli("events", "add", "--help", db_url=db_url).stdout.split())
    update_help = " ".join(cli("events", "update", "--help", db_url=db_url).stdout.split())

    assert "One without an offset (2027-01-10T10:00) is local time in --tz" in add_help
    assert "UTC when --tz is not given" in add_help
    assert "skips means the first instant after the gap" in add_help
    assert "One without an offset is local time in the event's zone" in update_help


@pytest.mark.parametrize("dialect", ["sqlite"])
def test_a_reminder_lead_beyond_a_year_is_a_config_error(
    cli: CliRunner, db_url: str, tmp_path
) -> None:
    config = tmp_path / "schedctl.toml"
    config.write_text('[events]\nreminders = ["999999d"]\n')

    result = cli("--config", str(config), *ADD, "--starts-at", "2027-01-10T10:00",
                 db_url=db_url, env=NOW)  # fmt: skip

    assert result.returncode == 2, result.stderr
    assert result.stderr == (
        f"schedctl: error: {config}: [events] reminders: '999999d' is longer than 366d\n"
    )
    assert all_messages(db_url) == []
