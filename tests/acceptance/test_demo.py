"""`schedctl demo`: the first thing a new user runs must work and tell the truth."""

from __future__ import annotations

import json
from pathlib import Path


def test_demo_runs_tick_and_digest_twice_and_sends_each_mail_once(cli, tmp_path: Path) -> None:
    path = tmp_path / "demo.db"
    result = cli("demo", "--path", str(path), "--json", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    first, second = data["first_tick"], data["second_tick"]
    assert first["due"] == 4
    assert first["messages_sent"] > 0
    assert first["messages_failed"] == 0
    assert second["runs_created"] == 0
    assert second["messages_sent"] == 0
    # Users in three zones: two digests (one holds 4 notifications in groups), one
    # user with nothing new (skipped); the critical notification went out with tick.
    digest, again = data["first_digest"], data["second_digest"]
    assert (digest["users_due"], digest["digests_sent"], digest["skipped_empty"]) == (3, 2, 1)
    assert digest["notifications_digested"] == 5
    assert (again["users_due"], again["digests_sent"]) == (0, 0)
    assert "billing\n-------" in result.stderr
    assert "security\n--------" in result.stderr
    # every mail sent was printed by the console backend, once
    mails = first["messages_sent"] + digest["digests_sent"]
    assert result.stderr.count("Message-ID: <") == mails
    sent = [m for m in data["messages"] if m["status"] == "sent"]
    assert len(sent) == mails
    assert {"INIT", "NOTIFICATION", "DIGEST"} <= {m["type"] for m in sent}
    assert sorted(m["recipient"] for m in sent if m["type"] == "DIGEST") == [
        "ana@example.com", "ben@example.com"
    ]  # fmt: skip
    assert data["heartbeat"]["commands"][0] == {
        **data["heartbeat"]["commands"][0],
        "command": "tick",
        "status": "green",
    }


def test_demo_human_output(cli, tmp_path: Path) -> None:
    result = cli("demo", "--path", str(tmp_path / "demo.db"), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "second tick: 0 due, 0 runs, 0 sent" in result.stdout
    assert "first digest: 3 users due, 2 digests sent (5 notifications)" in result.stdout
    assert "second digest: 0 users due, 0 sent" in result.stdout
    assert "daily-accounts" in result.stdout
