"""`heartbeat` judges what the deployment runs, distrusts the future,
and `--check` keeps to the monitoring codes 0/1/2/3 with a matching end ping."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa

from schedctl.db.database import Database
from schedctl.db.schema import heartbeats

T0 = datetime(2026, 11, 20, 8, 0, tzinfo=UTC)
FAST = {"SCHEDCTL_DB_RETRY_SECONDS": "0"}


def at(instant: datetime) -> dict[str, str]:
    return {"SCHEDCTL_NOW": instant.isoformat()}


def run_ok(cli, db_url: str, *args: str, when: datetime = T0) -> None:
    result = cli(*args, db_url=db_url, env=at(when))
    assert result.returncode == 0, result.stderr


def check(cli, db_url: str | None, *args: str, when: datetime | None = T0, env=None):
    full_env = {**FAST, **(at(when) if when else {}), **(env or {})}
    return cli("heartbeat", "--check", *args, db_url=db_url, env=full_env)


def heartbeat_rows(db_url: str) -> int:
    with Database(db_url) as db:
        return int(db.scalar(sa.select(sa.func.count()).select_from(heartbeats)))


# --- What is judged -------------------------------------------------------------------


def test_a_fresh_install_that_only_runs_tick_is_green(cli, db_url: str) -> None:
    run_ok(cli, db_url, "tick")
    run_ok(cli, db_url, "schedules", "list", when=T0 - timedelta(days=3))
    result = check(cli, db_url, "--json", when=T0 + timedelta(minutes=5))
    assert result.returncode == 0, result.stdout + result.stderr
    data = json.loads(result.stdout)
    assert data["status"] == "green"
    commands = {c["command"]: c for c in data["commands"]}
    assert commands["tick"]["status"] == "green"
    assert commands["tick"]["monitored"] is True
    # Jobs that never ran are not judged; an operator command is shown, not judged.
    assert not {"digest", "distribute", "reconcile"} & commands.keys()
    assert commands["schedules list"]["monitored"] is False
    assert commands["schedules list"]["status"] is None


def test_nothing_ran_yet_is_unknown_and_says_why(cli, db_url: str) -> None:
    result = check(cli, db_url)
    assert result.returncode == 3, result.stdout + result.stderr
    assert "no scheduled job has run yet" in result.stdout


def test_configured_commands_are_judged_even_if_they_never_ran(
    cli, db_url: str, tmp_path: Path
) -> None:
    config = tmp_path / "schedctl.toml"
    config.write_text('[heartbeat]\ncommands = ["tick", "digest"]\n')
    run_ok(cli, db_url, "tick")
    result = check(cli, db_url, "--json", env={"SCHEDCTL_CONFIG": str(config)})
    assert result.returncode == 3, result.stdout + result.stderr
    commands = {c["command"]: c for c in json.loads(result.stdout)["commands"]}
    assert commands["digest"]["status"] == "unknown"
    assert commands["digest"]["note"] == "never ran"
    assert commands["tick"]["status"] == "green"


def test_the_table_shows_unjudged_commands_without_a_status(cli, db_url: str) -> None:
    run_ok(cli, db_url, "tick", when=T0)
    run_ok(cli, db_url, "schedules", "list", when=T0 - timedelta(days=3))
    result = check(cli, db_url)
    assert result.returncode == 0, result.stdout + result.stderr
    line = next(x for x in result.stdout.splitlines() if x.startswith("schedules list"))
    assert re.search(r"\bred\b", line) is None, line
    assert "not monitored" in line


def test_an_unknown_command_name_is_refused_with_nothing_written(cli, db_url: str) -> None:
    result = cli("heartbeat", "-c", "nosuchcmd", db_url=db_url)
    assert result.returncode == 2, result.stdout + result.stderr
    assert result.stderr.count("\n") == 1
    assert "nosuchcmd" in result.stderr
    assert heartbeat_rows(db_url) == 0
    assert cli("heartbeat", "-c", "schedules list", db_url=db_url).returncode == 0


# --- Timestamps from the future -------------------------------------------------------


def test_a_heartbeat_from_the_future_is_not_green(cli, db_url: str) -> None:
    """Its only run is dated a year ahead: no success counts, so it never succeeded
    (UNKNOWN, 3), and the note says why."""
    run_ok(cli, db_url, "tick", when=T0 + timedelta(days=365))
    result = check(cli, db_url, "--json")
    assert result.returncode == 3, result.stdout + result.stderr
    tick = json.loads(result.stdout)["commands"][0]
    assert (tick["command"], tick["status"], tick["age_s"]) == ("tick", "unknown", None)
    assert "future" in tick["note"]
    assert "future" in check(cli, db_url).stdout  # the table says why, too


def test_a_future_run_does_not_hide_the_age_of_the_real_last_success(cli, db_url: str) -> None:
    run_ok(cli, db_url, "tick", when=T0)
    run_ok(cli, db_url, "tick", when=T0 + timedelta(days=365))
    result = check(cli, db_url, "--json", when=T0 + timedelta(minutes=5))
    assert result.returncode == 1, result.stdout + result.stderr
    tick = json.loads(result.stdout)["commands"][0]
    assert (tick["status"], tick["age_s"]) == ("yellow", 300)


def test_a_small_clock_skew_is_tolerated(cli, db_url: str) -> None:
    run_ok(cli, db_url, "tick", when=T0 + timedelta(seconds=20))
    assert check(cli, db_url).returncode == 0


# --- Failures are UNKNOWN, with a matching end ping -----------------------------------


def test_database_down_is_unknown_and_pings_fail(cli, closed_port: int, http_server) -> None:
    url = f"postgresql+psycopg://schedctl@127.0.0.1:{closed_port}/schedctl"
    result = check(cli, url, "--ping-url", f"{http_server.url}/p")
    assert result.returncode == 3, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert "database unavailable" in result.stderr
    assert http_server.paths == ["/p/start", "/p/fail"]


def test_without_check_database_down_is_75_and_still_pings_fail(
    cli, closed_port: int, http_server
) -> None:
    url = f"postgresql+psycopg://schedctl@127.0.0.1:{closed_port}/schedctl"
    result = cli("heartbeat", "--ping-url", f"{http_server.url}/p", db_url=url, env=FAST)
    assert result.returncode == 75, result.stderr
    assert http_server.paths == ["/p/start", "/p/fail"]


def test_no_schema_is_unknown_and_pings_fail(cli, empty_db_url: str, http_server) -> None:
    result = check(cli, empty_db_url, "--ping-url", f"{http_server.url}/p")
    assert result.returncode == 3, result.stderr
    assert "db upgrade" in result.stderr
    assert http_server.paths == ["/p/start", "/p/fail"]


def test_unreadable_config_is_unknown_and_pings_the_configured_url(
    cli, db_url: str, tmp_path: Path, http_server
) -> None:
    env = {
        "SCHEDCTL_CONFIG": str(tmp_path / "missing.toml"),
        "SCHEDCTL_PING_URL": f"{http_server.url}/env",
    }
    result = check(cli, db_url, env=env)
    assert result.returncode == 3, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert http_server.paths == ["/env/start", "/env/fail"]


def test_unknown_command_under_check_is_unknown(cli, db_url: str, http_server) -> None:
    result = check(cli, db_url, "-c", "nosuchcmd", "--ping-url", f"{http_server.url}/p")
    assert result.returncode == 3, result.stderr
    assert http_server.paths == ["/p/start", "/p/fail"]
    assert heartbeat_rows(db_url) == 0


@pytest.mark.parametrize("when", [T0, T0 + timedelta(hours=5)])
def test_every_check_pings_start_and_one_end(cli, db_url: str, http_server, when) -> None:
    run_ok(cli, db_url, "tick")
    result = check(cli, db_url, "--ping-url", f"{http_server.url}/p", when=when)
    assert result.returncode == (0 if when == T0 else 2)
    end = "/p" if when == T0 else "/p/fail"
    assert http_server.paths == ["/p/start", end]
