"""The CLI's error boundary (schedctl.cli.run, SPEC §11).

With --json, stdout is one JSON object on failure too,
``{"error": {"code": <exit code>, "message": ...}}``, whatever failed and wherever
--json was given. An error line never echoes a long input back in full.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from schedctl.db.database import Database
from schedctl.delivery import suppressions

FAST = {"SCHEDCTL_DB_RETRY_SECONDS": "1"}
CREATE = [
    "schedules", "create", "--name", "x", "--kind", "sql", "--param", "query=ping",
    "--cadence", "daily", "--at", "07:00", "--to", "ops@example.com",
]  # fmt: skip


@pytest.fixture
def config(tmp_path: Path) -> dict[str, str]:
    path = tmp_path / "schedctl.toml"
    path.write_text('[reports.queries.ping]\nsql = "select 1 as one"\n')
    return {"SCHEDCTL_CONFIG": str(path), **FAST}


def error_line(result: subprocess.CompletedProcess[str]) -> str:
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("schedctl: error: "), lines[0]
    return lines[0].removeprefix("schedctl: error: ")


def json_error(result: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    """The one JSON object on stdout, checked against the exit code and stderr."""
    document = json.loads(result.stdout)  # the whole of stdout: one object
    assert list(document) == ["error"], document
    error = document["error"]
    assert set(error) == {"code", "message"}, error
    assert error["code"] == result.returncode
    assert error["message"] == error_line(result)
    return dict(error)


# --- 11: --json on every failure path --------------------------------------------------


@pytest.fixture
def down_url(closed_port: int) -> str:
    return f"postgresql+psycopg://schedctl:Pw-Not-Shown@127.0.0.1:{closed_port}/schedctl"


@pytest.mark.parametrize(
    "args",
    [
        ["tick", "--json"],
        ["--json", "tick"],
        ["schedules", "list", "--json"],
        ["heartbeat", "--json"],
    ],
    ids=" ".join,
)
def test_database_down_with_json(cli, down_url: str, args: list[str]) -> None:
    result = cli(*args, db_url=down_url, env=FAST)
    assert result.returncode == 75, result.stderr
    error = json_error(result)
    assert error["message"].startswith("database unavailable")
    assert "Pw-Not-Shown" not in result.stdout + result.stderr


def test_heartbeat_check_with_json_and_the_database_down(cli, down_url: str) -> None:
    result = cli("heartbeat", "--check", "--json", db_url=down_url, env=FAST)
    assert result.returncode != 0
    assert "database unavailable" in json_error(result)["message"]


@pytest.mark.parametrize(
    "args",
    [
        ["tick", "--limit", "abc", "--json"],
        ["tick", "--json", "--limit", "abc"],
        ["--json", "tick", "--limit", "abc"],
        ["tick", "--no-such-flag", "--json"],
        ["--json", "no-such-command"],
        ["schedules", "show", "--json"],
    ],
    ids=" ".join,
)
def test_usage_errors_with_json(cli, db_url: str, args: list[str]) -> None:
    result = cli(*args, db_url=db_url)
    assert result.returncode == 2, result.stderr
    json_error(result)


def test_refused_input_with_json(cli, db_url: str, config: dict[str, str]) -> None:
    result = cli(*CREATE, "--tz", "Mars/Olympus", "--json", db_url=db_url, env=config)
    assert result.returncode == 2, result.stderr
    assert "Mars/Olympus" in json_error(result)["message"]


def test_no_schema_with_json(cli, empty_db_url: str) -> None:
    result = cli("--json", "schedules", "list", db_url=empty_db_url)
    assert result.returncode == 2, result.stderr
    assert "db upgrade" in json_error(result)["message"]


def test_internal_error_with_json(cli, db_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*args: object) -> None:
        raise RuntimeError("a bug")

    monkeypatch.setattr(suppressions, "list_suppressions", broken)
    result = cli("suppressions", "list", "--json", db_url=db_url)
    assert result.returncode == 1, result.stderr
    assert json_error(result)["message"] == "internal error: RuntimeError: a bug"


def test_a_table_dropped_by_hand_is_a_database_error(cli, db_url: str) -> None:
    with Database(db_url, environ={}) as db:
        cascade = " CASCADE" if db.dialect == "postgresql" else ""
        db.transaction(lambda c: c.exec_driver_sql(f"DROP TABLE suppressions{cascade}"))
    result = cli("suppressions", "list", "--json", db_url=db_url)
    assert result.returncode == 1, result.stderr
    message = json_error(result)["message"]
    assert message.startswith("database error"), message
    assert "suppressions" in message, message
    assert message.endswith("(was schedctl's schema changed by hand?)"), message


def test_without_json_stdout_stays_empty_on_failure(cli, down_url: str) -> None:
    result = cli("tick", db_url=down_url, env=FAST)
    assert result.returncode == 75
    assert result.stdout == ""


def test_success_with_json_is_unchanged(cli, db_url: str) -> None:
    result = cli("schedules", "list", "--json", db_url=db_url)
    assert result.returncode == 0, result.stderr
    assert "error" not in json.loads(result.stdout)


# --- 13: what an error line quotes is capped -------------------------------------------

HUGE = "a" * 100_000
SHORT = 320  # characters in a whole error line, not 100 KB


@pytest.mark.parametrize(
    "args",
    [
        [*CREATE[:3], HUGE, *CREATE[4:]],
        [*CREATE[:9], "cron", "--cron", " ".join(["1"] * 30000)],
        [*CREATE[:9], "cron", "--cron", HUGE],
        [*CREATE[:-1], HUGE],
        [*CREATE, "--tz", HUGE],
        [*CREATE[:7], f"query={HUGE}", *CREATE[8:]],
        [*CREATE[:5], HUGE, *CREATE[6:]],
        ["schedules", "show", HUGE],
        ["suppressions", "add", HUGE],
        ["tick", HUGE],
        ["tick", f"--{HUGE}"],
        [HUGE],
    ],
    ids=lambda a: " ".join(x[:12] for x in a[:2] + a[-2:]),
)
def test_error_lines_do_not_echo_a_huge_input(
    cli, db_url: str, config: dict[str, str], args: list[str]
) -> None:
    result = cli(*args, "--json", db_url=db_url, env=config)
    assert result.returncode == 2, result.stderr[:500]
    line = error_line(result)
    assert len(line) < SHORT, line[:500]
    assert "aaaaaaaa" in line or "1 1 1 1" in line  # it still shows what was wrong
    assert len(json_error(result)["message"]) < SHORT


def test_a_driver_warning_after_a_lost_connection_prints_nothing() -> None:
    """psycopg logs "error ignored terminating <Pipeline>" when a connection dies; in a
    process of its own (no handler of pytest's), it must not reach stderr beside
    schedctl's one error line."""
    import subprocess
    import sys

    code = (
        "import logging; from schedctl.cli import _configure_logging; _configure_logging();"
        " logging.getLogger('psycopg').warning("
        "'error ignored terminating <psycopg.Pipeline [BAD]>: the connection is lost')"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stderr == ""
