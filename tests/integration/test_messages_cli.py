"""`schedctl messages list | edit | delete-all`: the contract, run in-process (`show` and
`delete`: test_history)."""

from __future__ import annotations

from datetime import timedelta

import pytest

from support.cli import CliRunner
from support.delivery import T0, all_messages, enqueue_all, message, one

NOW = {"SCHEDCTL_NOW": T0.isoformat()}


@pytest.fixture
def three(db_url: str) -> list[int]:
    return enqueue_all(
        db_url,
        [
            message(1, send_at=T0 + timedelta(days=2)),
            message(2, type="INIT", send_at=T0 + timedelta(hours=1)),
            message(3, send_at=T0 - timedelta(days=1), status="sent"),
        ],
    )


def test_list_is_sorted_by_send_at_with_the_contract_keys(
    cli: CliRunner, db_url: str, three: list[int]
) -> None:
    result = cli("messages", "list", "--json", db_url=db_url)

    assert result.returncode == 0, result.stderr
    data = result.json
    assert data["count"] == 3
    assert [m["id"] for m in data["messages"]] == [str(three[2]), str(three[1]), str(three[0])]
    first = data["messages"][0]
    assert set(first) == {
        "id", "type", "recipient", "subject", "send_at", "status", "reason_code", "attempts",
        "expires_at", "sent_at",
    }  # fmt: skip
    assert first["send_at"] == (T0 - timedelta(days=1)).isoformat()


@pytest.mark.parametrize("dialect", ["sqlite"])
@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--type", "init"], [1]),
        (["--status", "scheduled"], [1, 0]),
        (["--from", "2026-11-18", "--until", "2026-11-18"], [1]),
        (["--from", "2026-11-18T09:30:00Z"], [1, 0]),
        (["--until", "2026-11-18"], [2, 1]),
    ],
)
def test_list_filters(
    cli: CliRunner, db_url: str, three: list[int], args: list[str], expected: list[int]
) -> None:
    result = cli("messages", "list", "--json", *args, db_url=db_url)

    assert result.returncode == 0, result.stderr
    assert [m["id"] for m in result.json["messages"]] == [str(three[i]) for i in expected]


def test_list_plain_text_for_humans(cli: CliRunner, db_url: str, three: list[int]) -> None:
    result = cli("messages", "list", db_url=db_url)

    assert result.returncode == 0
    title, header = result.stdout.splitlines()[:2]
    assert title == "messages in account 'default':"
    assert header.split()[:3] == ["id", "type", "recipient"]
    assert "3 message(s)" in result.stdout


@pytest.mark.parametrize("dialect", ["sqlite"])
@pytest.mark.parametrize(
    "args",
    [
        ["messages", "list", "--status", "queued"],
        ["messages", "list", "--type", "no spaces"],
        ["messages", "list", "--from", "yesterday"],
        ["messages", "edit", "1", "--status", "done"],
        ["messages", "edit", "1", "--send-at", "2026-11-18T08:54:00Z"],
        ["messages", "edit", "1", "--send-at", "tomorrow"],
        ["messages", "edit", "1"],
        ["messages", "edit", "x1", "--status", "paused"],
        ["messages", "edit", "999", "--status", "paused"],
        ["messages", "delete-all"],
        ["messages", "delete-all", "--confirm", "--type", "bad type"],
    ],
    ids=" ".join,
)
def test_invalid_input_is_one_line_exit_2_and_writes_nothing(
    cli: CliRunner, db_url: str, three: list[int], args: list[str]
) -> None:
    before = all_messages(db_url)

    result = cli(*args, db_url=db_url, env=NOW)

    assert result.returncode == 2, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert result.stderr.startswith("schedctl: error: ")
    assert all_messages(db_url) == before


def test_edit_send_time_within_the_grace_and_status(
    cli: CliRunner, db_url: str, three: list[int]
) -> None:
    target = three[0]
    within_grace = (T0 - timedelta(minutes=4)).isoformat()

    moved = cli("messages", "edit", str(target), "--send-at", within_grace, "--json",
                db_url=db_url, env=NOW)  # fmt: skip
    paused = cli("messages", "edit", str(target), "--status", "paused", db_url=db_url, env=NOW)

    assert moved.returncode == 0, moved.stderr
    assert moved.json["send_at"] == within_grace
    assert paused.returncode == 0
    assert "paused" in paused.stdout
    row = one(db_url, target)
    assert (row.status, row.reason_code) == ("paused", "MANUAL")


def test_setting_sent_by_hand_warns_on_stderr(
    cli: CliRunner, db_url: str, three: list[int]
) -> None:
    result = cli("messages", "edit", str(three[0]), "--status", "SENT", "--json",
                 db_url=db_url, env=NOW)  # fmt: skip

    assert result.returncode == 0
    assert result.json["status"] == "sent"
    assert "warning" in result.stderr
    assert "by hand" in result.stderr
    assert one(db_url, three[0]).sent_at == T0


@pytest.mark.parametrize("status", ["scheduled", "retrying"])
def test_a_sent_message_is_not_scheduled_again_by_editing_its_status(
    cli: CliRunner, db_url: str, three: list[int], status: str
) -> None:
    # `--status scheduled` on a sent message made the next tick send it again, silently;
    # a resend is asked for by name: send-now ID --force.
    target = three[0]
    assert cli("messages", "edit", str(target), "--status", "sent", db_url=db_url, env=NOW)
    before = all_messages(db_url)
    result = cli("messages", "edit", str(target), "--status", status, db_url=db_url, env=NOW)
    assert result.returncode == 2, result
    [line] = result.stderr.strip().splitlines()
    assert line == (
        f"schedctl: error: message {target} is not scheduled again: it was sent"
        f" (`schedctl send-now {target} --force` sends it again)"
    )
    assert all_messages(db_url) == before
    paused = cli("messages", "edit", str(target), "--status", "paused", db_url=db_url, env=NOW)
    assert paused.returncode == 0  # (what does not send it again stays allowed)


def test_a_message_being_sent_cannot_be_edited(cli: CliRunner, db_url: str) -> None:
    from schedctl.db.database import Database
    from schedctl.db.schema import messages

    [mid] = enqueue_all(db_url, [message(1)])
    with Database(db_url) as db:
        db.transaction(
            lambda conn: conn.execute(
                messages.update().values(
                    lease_owner="h:1:x", lease_expires_at=T0 + timedelta(minutes=5)
                )
            )
        )

    result = cli("messages", "edit", str(mid), "--status", "paused", db_url=db_url, env=NOW)

    assert result.returncode == 75
    assert one(db_url, mid).status == "scheduled"


def test_delete_all_by_type_then_all(cli: CliRunner, db_url: str, three: list[int]) -> None:
    by_type = cli("messages", "delete-all", "--confirm", "--type", "INIT", "--json", db_url=db_url)
    rest = cli("messages", "delete-all", "--confirm", "--json", db_url=db_url)

    assert (by_type.json, rest.json) == (
        {"deleted": 1, "in_flight": 0}, {"deleted": 2, "in_flight": 0}
    )  # fmt: skip
    assert all_messages(db_url) == []


def test_delete_all_leaves_messages_being_sent_and_says_how_many(
    cli: CliRunner, db_url: str, three: list[int]
) -> None:
    from schedctl.db.database import Database
    from schedctl.db.schema import messages

    with Database(db_url) as db:
        for mid, expiry in [
            (three[0], T0 + timedelta(minutes=5)),  # a dispatcher is sending it
            (three[1], T0 - timedelta(seconds=1)),  # its dispatcher died
        ]:
            db.transaction(
                lambda conn, mid=mid, expiry=expiry: conn.execute(
                    messages.update()
                    .where(messages.c.id == mid)
                    .values(lease_owner="h:1:x", lease_expires_at=expiry)
                )
            )

    result = cli("messages", "delete-all", "--confirm", "--json", db_url=db_url, env=NOW)
    plain = cli("messages", "delete-all", "--confirm", db_url=db_url, env=NOW)

    assert result.returncode == 0, result.stderr
    assert result.json == {"deleted": 2, "in_flight": 1}
    assert [m.id for m in all_messages(db_url)] == [three[0]]
    assert plain.returncode == 0, plain.stderr
    assert "deleted 0 message(s)" in plain.stdout
    assert "1 being sent" in plain.stdout


def test_another_accounts_messages_are_invisible(
    cli: CliRunner, db_url: str, three: list[int]
) -> None:
    assert cli("accounts", "create", "acme", db_url=db_url).returncode == 0

    listed = cli("messages", "list", "--account", "acme", "--json", db_url=db_url)
    edit = cli("messages", "edit", str(three[0]), "--status", "paused", "--account", "acme",
               db_url=db_url, env=NOW)  # fmt: skip
    deleted = cli("messages", "delete-all", "--confirm", "--account", "acme", "--json",
                  db_url=db_url)  # fmt: skip

    assert listed.json == {"messages": [], "count": 0, "account": "acme"}
    assert edit.returncode == 2
    assert "no message" in edit.stderr
    assert deleted.json == {"deleted": 0, "in_flight": 0}
    assert len(all_messages(db_url)) == 3
