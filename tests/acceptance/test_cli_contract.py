"""The CLI contract (SPEC §2, §11) exercised through the installed `schedctl`."""

from __future__ import annotations

import json

import pytest

CONTRACT = [
    ["db", "upgrade"], ["db", "status"], ["demo"], ["tick"], ["digest"], ["distribute"],
    ["reconcile"], ["send-now"], ["heartbeat"], ["accounts", "create"],
    ["schedules", "create"], ["schedules", "list"], ["schedules", "show"],
    ["schedules", "update"], ["schedules", "pause"], ["schedules", "resume"],
    ["schedules", "delete"], ["schedules", "runs"], ["users", "add"], ["notify"],
    ["events", "add"], ["events", "update"], ["messages", "list"], ["messages", "edit"],
    ["messages", "delete-all"], ["suppressions", "list"], ["suppressions", "add"],
    ["suppressions", "remove"], ["unsubscribe"], ["unsubscribe-url"],
]  # fmt: skip

CONTRACT += [["users", "list"], ["users", "update"], ["users", "remove"], ["serve"], ["metrics"]]
# SPEC §12 History.
CONTRACT += [["messages", "show"], ["messages", "delete"], ["events", "delete"]]
# SPEC §12 Seeing what will run.
CONTRACT += [["schedules", "next"], ["users", "next"], ["events", "show"]]


def test_top_level_help_lists_every_contract_command(cli) -> None:
    result = cli("--help")
    assert result.returncode == 0
    for name in {c[0] for c in CONTRACT}:
        assert f"  {name} " in result.stdout, name


@pytest.mark.parametrize("command", CONTRACT, ids=" ".join)
def test_every_command_has_help(cli, command: list[str]) -> None:
    result = cli(*command, "--help")
    assert result.returncode == 0, result.stderr
    assert "Usage: schedctl" in result.stdout
    assert "--json" in result.stdout
    # a real description, not an empty docstring
    assert len(result.stdout.split("Options:")[0].strip().splitlines()) >= 2


def test_unknown_option_is_a_usage_error_on_one_line(cli) -> None:
    result = cli("heartbeat", "--frobnicate")
    assert result.returncode == 2
    assert len(result.stderr.strip().splitlines()) == 1
    assert "--frobnicate" in result.stderr


def test_version(cli) -> None:
    result = cli("--version")
    assert result.returncode == 0
    assert result.stdout.startswith("schedctl ")


@pytest.mark.parametrize("place", ["before", "after"])
def test_json_before_or_after_the_subcommand(cli, db_url: str, place: str) -> None:
    args = ["--json", "db", "status"] if place == "before" else ["db", "status", "--json"]
    result = cli(*args, db_url=db_url)
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["up_to_date"] is True
    assert data["current"] == data["expected"]


@pytest.mark.parametrize("flag", ["--quiet", "-q"])
def test_quiet_prints_nothing_on_success(cli, db_url: str, flag: str) -> None:
    result = cli("db", "status", flag, db_url=db_url)
    assert result.returncode == 0
    assert result.stdout == ""


def test_piped_output_is_plain_text(cli, db_url: str) -> None:
    result = cli("db", "status", db_url=db_url)
    assert result.returncode == 0
    assert "\x1b[" not in result.stdout
    assert "version" in result.stdout
    assert "foundation" in result.stdout


def test_readme_names_every_contract_command() -> None:
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    for name in {c[0] for c in CONTRACT}:
        assert f"`{name}" in readme, f"README does not mention `{name}`"
    assert readme.startswith("# schedctl\n\n```sh\nmake demo")
