"""Seeing what will run (SPEC §12): `schedules next`, `users next`, `events show`.

The proof that `schedules next` lists the slots tick runs: tick is walked over the
listed instants (and a minute before each) with SCHEDCTL_NOW, and the runs it
created are compared with the listing.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from support.cli import CliRunner

SCHEDULE = ["--kind", "sql", "--param", "query=q", "--to", "r@example.com"]


@pytest.fixture
def run(cli: CliRunner, db_url: str, tmp_path: Path) -> Any:
    """`run(*args, now=..., json=True)`: schedctl on this test's database, mail to memory,
    with --json unless ``json`` is False."""
    config = tmp_path / "c.toml"
    config.write_text('[reports.queries.q]\nsql = "select 1 as one"\n')

    def call(*args: str, now: str = "2027-01-01T00:00:00Z", json: bool = True) -> Any:
        if json and "--json" not in args:
            args = (*args, "--json")
        env = {"SCHEDCTL_CONFIG": str(config), "SCHEDCTL_NOW": now,
               "SCHEDCTL_MAIL_BACKEND": "memory"}  # fmt: skip
        return cli(*args, db_url=db_url, env=env)

    return call


def ok(result: Any) -> Any:
    assert result.returncode == 0, result.stderr
    return result.json


def iso(text: str) -> datetime:
    return datetime.fromisoformat(text)


@pytest.mark.parametrize(
    ("cadence", "start", "noted"),
    [
        (["--cadence", "daily", "--at", "02:30", "--tz", "Europe/Berlin"],
         "2027-03-26T00:00:00Z", "02:30 does not exist on 2027-03-28 in Europe/Berlin"),
        (["--cadence", "daily", "--at", "01:30", "--tz", "America/New_York"],
         "2026-10-30T00:00:00Z", "01:30 occurs twice on 2026-11-01 in America/New_York"),
        (["--cadence", "cron", "--cron", "*/30 2,3 * * *", "--tz", "Europe/Berlin"],
         "2027-03-27T23:00:00Z", "02:00 does not exist on 2027-03-28 in Europe/Berlin"),
        (["--cadence", "monthly", "--day", "31", "--at", "07:00"],
         "2027-01-01T00:00:00Z", "2027-02 has no day 31: runs on its last day, 2027-02-28"),
    ],
    ids=["gap", "overlap", "cron in the gap", "month end"],
)  # fmt: skip
def test_tick_runs_exactly_the_slots_schedules_next_lists(
    run: Any, cadence: list[str], start: str, noted: str
) -> None:
    created = ok(run("schedules", "create", "--name", "s", *SCHEDULE, *cadence, "--json",
                     now=start))  # fmt: skip
    listed = ok(run("schedules", "next", created["id"], "-n", "5", "--from", start, "--json"))

    for slot in listed["slots"]:
        for at in (iso(slot["utc"]) - timedelta(minutes=1), iso(slot["utc"])):
            ok(run("tick", "--json", now=at.isoformat()))
    runs = ok(run("schedules", "runs", created["id"], "--json"))

    assert sorted(r["slot"] for r in runs["runs"]) == [s["utc"] for s in listed["slots"]]
    assert {r["status"] for r in runs["runs"]} == {"succeeded"}
    assert (listed["schedule"], listed["count"]) == (created["id"], 5)
    assert any(noted in (s["note"] or "") for s in listed["slots"])
    for slot in listed["slots"]:
        assert iso(slot["local"]) == iso(slot["utc"])
        assert iso(slot["local"]).utcoffset() is not None


def test_schedules_next_defaults_to_ten_slots_from_now(run: Any) -> None:
    ok(run("schedules", "create", "--name", "s", *SCHEDULE, "--cadence", "daily",
           "--at", "07:00", "--tz", "Asia/Tokyo"))  # fmt: skip

    listed = ok(run("schedules", "next", "1", "--json", now="2027-05-01T00:00:00Z"))

    assert listed["count"] == 10
    assert listed["tz"] == "Asia/Tokyo"
    assert listed["slots"][0] == {
        "local": "2027-05-02T07:00:00+09:00",
        "utc": "2027-05-01T22:00:00+00:00",
        "note": None,
    }


def test_schedules_next_refuses_bad_input_with_one_line(run: Any) -> None:
    ok(run("schedules", "create", "--name", "s", *SCHEDULE, "--cadence", "daily", "--at", "07:00"))
    ok(run("accounts", "create", "acme"))

    for args in [["1", "-n", "0"], ["1", "-n", "1001"], ["1", "--from", "tomorrow"], ["2"],
                 ["1", "--account", "acme"], ["x"]]:  # fmt: skip
        result = run("schedules", "next", *args, json=False)
        assert result.returncode == 2, args
        assert len(result.stderr.splitlines()) == 1, args
        assert result.stdout == ""


def test_users_next_lists_the_digest_times_with_their_notes(run: Any) -> None:
    ok(run("users", "add", "u@example.com", "--tz", "Europe/Berlin", "--digest-at", "02:30"))
    ok(run("users", "add", "off@example.com", "--no-digest"))

    listed = ok(run("users", "next", "u@example.com", "-n", "3", "--from",
                    "2027-03-27T00:00:00Z", "--json"))  # fmt: skip
    off = ok(run("users", "next", "off@example.com", "--json"))
    unknown = run("users", "next", "nobody@example.com", json=False)

    assert (listed["user"], listed["tz"], listed["count"]) == ("1", "Europe/Berlin", 3)
    assert [s["local"] for s in listed["slots"]] == [
        "2027-03-27T02:30:00+01:00", "2027-03-28T03:00:00+02:00", "2027-03-29T02:30:00+02:00",
    ]  # fmt: skip
    assert listed["slots"][1]["note"] == (
        "02:30 does not exist on 2027-03-28 in Europe/Berlin: runs at 03:00 CEST"
    )
    assert (off["slots"], off["count"], off["digest_enabled"]) == ([], 0, False)
    assert unknown.returncode == 2


def test_the_digest_is_due_from_the_first_listed_time(run: Any) -> None:
    """The listing is the digest's own rule: not due a second before, due at it."""
    ok(run("users", "add", "u@example.com", "--tz", "America/New_York", "--digest-at", "01:30"))
    ok(run("notify", "--user", "u@example.com", "--title", "hello"))
    first = ok(run("users", "next", "u@example.com", "-n", "1", "--from",
                   "2026-11-01T00:00:00Z", "--json"))["slots"][0]  # fmt: skip
    due = iso(first["utc"])

    before = ok(run("digest", "--json", now=(due - timedelta(seconds=1)).isoformat()))
    at = ok(run("digest", "--json", now=due.isoformat()))

    assert first["note"] is not None
    assert "occurs twice" in first["note"]
    assert before["users_due"] == 0
    assert at["digests_sent"] == 1


def test_events_show_lists_its_messages_in_the_event_zone(run: Any) -> None:
    ok(run("events", "add", "--name", "launch", "--starts-at", "2027-01-10T10:00",
           "--tz", "Europe/Berlin", "--contact", "c@example.com"))  # fmt: skip
    ok(run("accounts", "create", "acme"))

    shown = ok(run("events", "show", "1", "--json"))
    elsewhere = run("events", "show", "1", "--account", "acme", json=False)
    missing = run("events", "show", "2", json=False)

    assert shown["event"]["name"] == "launch"
    assert shown["event"]["tz"] == "Europe/Berlin"
    by_type = {m["type"]: m for m in shown["messages"]}
    assert set(by_type) == {"INIT", "REMINDER_1D", "REMINDER_2H"}
    reminder = by_type["REMINDER_2H"]
    assert reminder["send_at_local"] == "2027-01-10T08:00:00+01:00"
    assert reminder["send_at"] == "2027-01-10T07:00:00+00:00"
    assert reminder["expires_at"] == "2027-01-10T09:00:00+00:00"
    assert (reminder["status"], reminder["reason_code"]) == ("scheduled", None)
    assert set(reminder) == {
        "id", "type", "send_at_local", "send_at", "expires_at", "status", "reason_code",
    }  # fmt: skip
    assert (elsewhere.returncode, missing.returncode) == (2, 2)
