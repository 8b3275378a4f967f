"""`schedctl events add | update | list` (in-process CLI)."""

from __future__ import annotations

import pytest

from support.cli import CliRunner
from support.delivery import T0, all_messages

NOW = {"SCHEDCTL_NOW": T0.isoformat()}
ADD = ["events", "add", "--name", "Gala", "--starts-at", "2026-12-01T18:00:00Z",
       "--contact", "host@example.org", "--tz", "Europe/Berlin"]  # fmt: skip


def test_add_update_list(cli: CliRunner, db_url: str) -> None:
    added = cli(*ADD, "--json", db_url=db_url, env=NOW)
    event_id = added.json["id"]
    updated = cli("events", "update", event_id, "--load-in-time", "2026-12-01T15:00:00Z",
                  "--json", db_url=db_url, env=NOW)  # fmt: skip
    listed = cli("events", "list", "--json", db_url=db_url)

    assert added.returncode == 0, added.stderr
    assert added.json["messages_planned"] == 3
    assert updated.returncode == 0, updated.stderr
    assert updated.json["load_in_time"] == "2026-12-01T15:00:00+00:00"
    assert listed.json["count"] == 1
    assert listed.json["events"][0] | {"id": "x"} == {
        "id": "x", "name": "Gala", "starts_at": "2026-12-01T18:00:00+00:00",
        "load_in_time": "2026-12-01T15:00:00+00:00", "contact": "host@example.org",
        "tz": "Europe/Berlin",
    }  # fmt: skip
    init = next(m for m in all_messages(db_url) if m.type == "INIT")
    assert (init.status, init.reason_code) == ("skipped", "HAS_LOAD_IN_TIME")


def test_a_deleted_events_mail_is_never_sent_by_hand(cli: CliRunner, db_url: str) -> None:
    # Found by review: `send-now` sent a deleted event's INIT, no --force needed.
    event_id = cli(*ADD, "--json", db_url=db_url, env=NOW).json["id"]
    assert cli("events", "delete", event_id, "--yes", db_url=db_url, env=NOW).returncode == 0
    env = {**NOW, "SCHEDCTL_MAIL_BACKEND": "memory"}
    for message in all_messages(db_url):
        sent = cli("send-now", str(message.id), "--force", "--json", db_url=db_url, env=env)
        assert sent.returncode == 1, sent.stderr
        assert sent.json["reason_code"] == "EVENT_DELETED", sent.json
    assert {(m.status, m.reason_code) for m in all_messages(db_url)} == {
        ("skipped", "EVENT_DELETED")
    }


def test_the_list_shows_each_instant_in_the_events_zone_and_in_utc(
    cli: CliRunner, db_url: str
) -> None:
    # SPEC §12: "Every listing shows instants in the item's own zone and in UTC"; it
    # showed UTC only (found by review).
    assert (
        cli(*ADD, "--load-in-time", "2026-12-01T15:00:00Z", db_url=db_url, env=NOW).returncode == 0
    )
    listed = cli("events", "list", db_url=db_url)
    assert listed.returncode == 0, listed.stderr
    [row] = [line for line in listed.stdout.splitlines() if "Gala" in line]
    assert "2026-12-01 19:00:00 CET (2026-12-01 18:00:00Z)" in row
    assert "2026-12-01 16:00:00 CET (2026-12-01 15:00:00Z)" in row


def test_add_with_a_load_in_time_plans_no_init(cli: CliRunner, db_url: str) -> None:
    result = cli(*ADD, "--load-in-time", "2026-12-01T15:00:00Z", db_url=db_url, env=NOW)

    assert result.returncode == 0, result.stderr
    assert sorted(m.type for m in all_messages(db_url)) == ["REMINDER_1D", "REMINDER_2H"]


@pytest.mark.parametrize("dialect", ["sqlite"])
@pytest.mark.parametrize(
    "args",
    [
        [*ADD[:-2], "--tz", "Mars/Olympus"],
        [*ADD[:5], "next week", *ADD[5:]],
        [*ADD[:7], "not-an-address", *ADD[8:]],
        [*ADD, "--load-in-time", "soon"],
        ["events", "update", "1"],
        ["events", "update", "7", "--starts-at", "2026-12-02T18:00:00Z"],
        ["events", "update", "one", "--starts-at", "2026-12-02T18:00:00Z"],
    ],
    ids=lambda a: " ".join(a[1:3] + a[-2:]),
)
def test_invalid_input_is_exit_2_and_writes_nothing(
    cli: CliRunner, db_url: str, args: list[str]
) -> None:
    result = cli(*args, db_url=db_url, env=NOW)

    assert result.returncode == 2, result.stdout
    assert len(result.stderr.strip().splitlines()) == 1
    assert cli("events", "list", "--json", db_url=db_url).json["count"] == 0
    assert all_messages(db_url) == []
