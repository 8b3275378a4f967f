"""`schedctl demo`: the first thing a new user runs must work and tell the truth."""

from __future__ import annotations

import json
from pathlib import Path


def test_demo_runs_tick_twice_and_sends_each_mail_once(cli, tmp_path: Path) -> None:
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
    # every mail sent was printed by the console backend, once
    assert result.stderr.count("Message-ID: <") == first["messages_sent"]
    sent = [m for m in data["messages"] if m["status"] == "sent"]
    assert len(sent) == first["messages_sent"]
    assert "INIT" in {m["type"] for m in sent}
    assert data["heartbeat"]["commands"][0] == {
        **data["heartbeat"]["commands"][0],
        "command": "tick",
        "status": "green",
    }


def test_demo_human_output(cli, tmp_path: Path) -> None:
    result = cli("demo", "--path", str(tmp_path / "demo.db"), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "second tick: 0 due, 0 runs, 0 sent" in result.stdout
    assert "daily-accounts" in result.stdout
