"""Help reads like a Unix command, and an empty update is refused.

A value is named by what it is (``EMAIL``, ``--account ACCOUNT``), never by a Python
type (``{EMAIL}``, ``EMAIL <str>``, ``--account TEXT``). Every command is registered
through ``runtime.command``, so every help page is checked here, not a chosen few.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import click
import pytest
import sqlalchemy as sa

from schedctl.cli import app, run
from schedctl.db.database import Database
from schedctl.db.schema import schedules


def _commands() -> list[list[str]]:
    found: list[list[str]] = []

    def walk(command: Any, path: list[str]) -> None:
        subcommands = getattr(command, "commands", None)
        if subcommands:
            for name, sub in subcommands.items():
                walk(sub, [*path, name])
        else:
            found.append(path)

    walk(app, [])
    return found


COMMANDS = _commands()


def help_of(args: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    capsys.readouterr()
    assert run([*args, "--help"]) == 0
    return capsys.readouterr().out


def test_every_command_is_checked() -> None:
    assert ["suppressions", "add"] in COMMANDS
    assert ["schedules", "update"] in COMMANDS
    assert ["send-now"] in COMMANDS
    assert len(COMMANDS) > 20


@pytest.mark.parametrize("args", COMMANDS, ids=" ".join)
def test_help_names_values_without_braces_or_python_types(
    args: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    text = help_of(args, capsys)

    usage = text.splitlines()[0]
    assert usage.startswith(f"Usage: schedctl {' '.join(args)} [OPTIONS]")
    assert "{" not in usage, usage
    assert "}" not in usage, usage
    assert not re.search(r"<(str|int|int range)>", text), text


def test_every_value_is_named_by_its_metavar_not_its_type() -> None:
    """Click would name a value without a metavar by its type (TEXT, INTEGER RANGE)."""
    unnamed: list[str] = []

    def walk(command: Any, path: list[str]) -> None:
        for name, sub in getattr(command, "commands", {}).items():
            walk(sub, [*path, name])
        for param in command.params:
            flag = isinstance(param, click.Option) and (param.is_flag or param.count)
            if not flag and param.expose_value and param.metavar is None:
                unnamed.append(f"{' '.join(path) or 'schedctl'} {param.opts[0]}")

    walk(app, [])
    assert unnamed == []


def test_suppressions_add_reads_email(capsys: pytest.CaptureFixture[str]) -> None:
    text = help_of(["suppressions", "add"], capsys)

    assert text.splitlines()[0] == "Usage: schedctl suppressions add [OPTIONS] EMAIL"
    assert re.search(r"^  EMAIL +The e-mail address\.  \[required\]$", text, re.M), text
    assert re.search(r"^  --account ACCOUNT +Account name or id", text, re.M), text


def test_an_optional_argument_is_in_brackets(capsys: pytest.CaptureFixture[str]) -> None:
    text = help_of(["send-now"], capsys)

    assert text.splitlines()[0] == "Usage: schedctl send-now [OPTIONS] [MESSAGE_ID]"


def test_a_missing_argument_is_named_by_its_metavar(capsys: pytest.CaptureFixture[str]) -> None:
    capsys.readouterr()
    assert run(["accounts", "create"]) == 2
    assert "Missing argument 'NAME'" in capsys.readouterr().err


CONFIG = '[reports.queries.ping]\nsql = "select 1"\n'


def test_schedules_update_with_no_options_changes_nothing(
    db_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "schedctl.toml"
    config.write_text(CONFIG)
    base = ["--database-url", db_url, "--config", str(config)]
    assert run([*base, "schedules", "create", "--name", "n", "--kind", "sql", "--param",
                "query=ping", "--cadence", "daily", "--at", "09:00",
                "--to", "ops@example.org"]) == 0  # fmt: skip
    with Database(db_url, environ={}) as db:
        before = db.transaction(lambda conn: conn.execute(sa.select(schedules)).one())
    capsys.readouterr()

    code = run([*base, "schedules", "update", str(before.id)])

    out, err = capsys.readouterr()
    assert (code, out) == (2, "")
    assert err == (
        "schedctl: error: nothing to update: give at least one option"
        " (schedctl schedules update --help)\n"
    )
    with Database(db_url, environ={}) as db:
        after = db.transaction(lambda conn: conn.execute(sa.select(schedules)).one())
    assert after == before


def test_top_level_help_names_values_without_python_types(
    capsys: pytest.CaptureFixture[str],
) -> None:
    text = help_of([], capsys)

    assert not re.search(r"<(str|int|int range)>", text), text
    assert re.search(r"^  --database-url URL ", text, re.M), text
    assert re.search(r"^  --config FILE ", text, re.M), text


def _groups() -> list[list[str]]:
    groups = {tuple(path[:-1]) for path in COMMANDS}
    return [list(group) for group in sorted(groups)]


def _listing(text: str, section: str) -> dict[str, str]:
    """The entries of a help section ("Commands", "Options"), wrapped lines joined."""
    entries: dict[str, str] = {}
    name = ""
    for line in text.split(f"{section}:\n", 1)[1].splitlines():
        if not line.strip():
            break
        match = re.match(r"^  (\S+(?: \S+)?)\s{2,}(.*)$", line)
        if match and not line.startswith("   "):
            name = match[1]
            entries[name] = match[2]
        else:
            entries[name] += " " + line.strip()
    return entries


@pytest.mark.parametrize("group", _groups(), ids=lambda g: " ".join(g) or "schedctl")
def test_a_groups_help_lists_each_commands_summary_whole(
    group: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    listing = _listing(help_of(group, capsys), "Commands")
    assert listing
    for name, summary in listing.items():
        assert not summary.endswith("..."), (name, summary)
        assert summary.endswith("."), (name, summary)
    if not group:
        assert listing["tick"] == (
            "Materialise due schedule runs, plan event messages, dispatch due messages."
        )


def test_max_lateness_help_shows_its_default(capsys: pytest.CaptureFixture[str]) -> None:
    options = _listing(help_of(["schedules", "create"], capsys), "Options")
    assert options["--max-lateness DURATION"].endswith(
        "(create: default none; update: kept unless given)."
    )
