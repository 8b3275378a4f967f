"""`heartbeat` judges what the deployment runs, distrusts the future,
and `--check` keeps to the monitoring codes 0/1/2/3 with a matching end ping."""

from __future__ import annotations

import json
import re
from datetime import datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa

from schedctl import heartbeat
from schedctl.commands import READ_ONLY
from schedctl.db.database import Database
from schedctl.db.schema import heartbeats

FAST = {"SCHEDCTL_DB_RETRY_SECONDS": "0"}


def at(instant: datetime) -> dict[str, str]:
    return {"SCHEDCTL_NOW": instant.isoformat()}


def run_ok(cli, db_url: str, *args: str, when: datetime | None = None) -> None:
    result = cli(*args, db_url=db_url, env=at(when) if when else None)
    assert result.returncode == 0, result.stderr


def check(cli, db_url: str | None, *args: str, env=None):
    return cli("heartbeat", "--check", *args, db_url=db_url, env={**FAST, **(env or {})})


def record(db_url: str, command: str, ago: timedelta) -> None:
    """A successful run of `command` `ago` before the database's clock (negative: after,
    as rows written on a simulated clock by versions before heartbeats kept the
    database's)."""
    with Database(db_url, environ={}) as db:
        when = db.now() - ago  # no SCHEDCTL_NOW here: the database clock
        row = heartbeat.start_run(db, command, when)
        heartbeat.finish_run(db, row, finished_at=when, exit_code=0, counts={})


def heartbeat_rows(db_url: str) -> int:
    with Database(db_url) as db:
        return int(db.scalar(sa.select(sa.func.count()).select_from(heartbeats)))


# --- What is judged -------------------------------------------------------------------


def test_a_fresh_install_that_only_runs_tick_is_green(cli, db_url: str) -> None:
    run_ok(cli, db_url, "tick")
    record(db_url, "accounts create", timedelta(days=3))
    result = check(cli, db_url, "--json")
    assert result.returncode == 0, result.stdout + result.stderr
    data = json.loads(result.stdout)
    assert data["status"] == "green"
    commands = {c["command"]: c for c in data["commands"]}
    assert commands["tick"]["status"] == "green"
    assert commands["tick"]["monitored"] is True
    # Jobs that never ran are not judged; an operator command is shown, not judged.
    assert not {"digest", "distribute", "reconcile"} & commands.keys()
    assert commands["accounts create"]["monitored"] is False
    assert commands["accounts create"]["status"] is None


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
    run_ok(cli, db_url, "tick")
    record(db_url, "schedules create", timedelta(days=3))
    result = check(cli, db_url)
    assert result.returncode == 0, result.stdout + result.stderr
    line = next(x for x in result.stdout.splitlines() if x.startswith("schedules create"))
    assert re.search(r"\bred\b", line) is None, line
    assert "not monitored" in line


def test_an_unknown_command_name_is_refused_with_nothing_written(cli, db_url: str) -> None:
    result = cli("heartbeat", "-c", "nosuchcmd", db_url=db_url)
    assert result.returncode == 2, result.stdout + result.stderr
    assert result.stderr.count("\n") == 1
    assert "nosuchcmd" in result.stderr
    assert heartbeat_rows(db_url) == 0
    assert cli("heartbeat", "-c", "schedules create", db_url=db_url).returncode == 0


# --- Timestamps from the future -------------------------------------------------------


def test_a_heartbeat_from_the_future_is_not_green(cli, db_url: str) -> None:
    """Its only run is dated a year ahead: no success counts, so it never succeeded
    (UNKNOWN, 3), and the note says why."""
    record(db_url, "tick", -timedelta(days=365))
    result = check(cli, db_url, "--json")
    assert result.returncode == 3, result.stdout + result.stderr
    tick = json.loads(result.stdout)["commands"][0]
    assert (tick["command"], tick["status"], tick["age_s"]) == ("tick", "unknown", None)
    assert "future" in tick["note"]
    assert "future" in check(cli, db_url).stdout  # the table says why, too


def test_a_future_run_does_not_hide_the_age_of_the_real_last_success(cli, db_url: str) -> None:
    record(db_url, "tick", timedelta(minutes=5))
    record(db_url, "tick", -timedelta(days=365))
    result = check(cli, db_url, "--json")
    assert result.returncode == 1, result.stdout + result.stderr
    tick = json.loads(result.stdout)["commands"][0]
    assert tick["status"] == "yellow"
    assert 300 <= tick["age_s"] < 360


def test_a_small_clock_skew_is_tolerated(cli, db_url: str) -> None:
    record(db_url, "tick", -timedelta(seconds=20))
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


@pytest.mark.parametrize(("ago", "code"), [(timedelta(), 0), (timedelta(hours=5), 2)])
def test_every_check_pings_start_and_one_end(
    cli, db_url: str, http_server, ago: timedelta, code: int
) -> None:
    record(db_url, "tick", ago)
    result = check(cli, db_url, "--ping-url", f"{http_server.url}/p")
    assert result.returncode == code
    end = "/p" if code == 0 else "/p/fail"
    assert http_server.paths == ["/p/start", end]


# --- The database's clock, whatever SCHEDCTL_NOW says ---------------------------------


def heartbeat_row(db_url: str) -> sa.Row:
    with Database(db_url, environ={}) as db:
        return db.transaction(lambda conn: conn.execute(sa.select(heartbeats)).one())


def server_now(db_url: str) -> datetime:
    with Database(db_url, environ={}) as db:
        return db.now()  # no SCHEDCTL_NOW: the database server's clock


@pytest.mark.parametrize("offset", [timedelta(days=365), -timedelta(days=30)])
def test_a_run_under_a_simulated_clock_is_dated_by_the_database(
    cli, db_url: str, offset: timedelta
) -> None:
    """A run under SCHEDCTL_NOW is a run, now: its row carries the database's clock and
    the simulated instant beside it, and never makes the heartbeat look ahead."""
    before = server_now(db_url)
    simulated = before + offset
    run_ok(cli, db_url, "tick", when=simulated)
    after = server_now(db_url)
    row = heartbeat_row(db_url)
    assert (row.command, row.simulated_now) == ("tick", simulated)
    assert before <= row.started_at <= row.finished_at <= after
    result = check(cli, db_url, "--json")
    assert result.returncode == 0, result.stdout + result.stderr
    assert json.loads(result.stdout)["commands"][0]["status"] == "green"


def test_a_run_on_the_real_clock_records_no_simulated_instant(cli, db_url: str) -> None:
    run_ok(cli, db_url, "tick")
    assert heartbeat_row(db_url).simulated_now is None


def test_heartbeat_judges_on_the_database_clock_whatever_schedctl_now_says(
    cli, db_url: str
) -> None:
    run_ok(cli, db_url, "tick")
    for offset in (timedelta(days=2), -timedelta(days=2)):
        result = check(cli, db_url, env=at(server_now(db_url) + offset))
        assert result.returncode == 0, result.stdout + result.stderr


# --- Commands that only read record no heartbeat --------------------------------------

ONLY_READ = {
    "heartbeat": ["heartbeat"],
    "db status": ["db", "status"],
    "config check": ["config", "check"],
    "accounts list": ["accounts", "list"],
    "schedules list": ["schedules", "list"],
    "schedules show": ["schedules", "show", "{schedule}"],
    "schedules runs": ["schedules", "runs", "{schedule}"],
    "messages list": ["messages", "list"],
    "messages show": ["messages", "show", "{message}"],
    "metrics": ["metrics"],
    "users list": ["users", "list"],
    "events list": ["events", "list"],
    "suppressions list": ["suppressions", "list"],
    "unsubscribe-url": ["unsubscribe-url", "u@example.com"],
    "schedules next": ["schedules", "next", "{schedule}"],
    "users next": ["users", "next", "u@example.com"],
    "events show": ["events", "show", "1"],
}
# `serve` runs until stopped: test_status_pages.py checks the server recorded nothing.
SERVES = {"serve"}
READING_CONFIG = """
[unsubscribe]
base_url = "https://mail.example.com/u"
secret = "an-unsubscribe-secret-of-32-chars"

[reports.queries.ping]
sql = "select 1 as one"
"""


def test_commands_that_only_read_record_no_heartbeat(cli, db_url: str, tmp_path: Path) -> None:
    assert set(ONLY_READ) == READ_ONLY - SERVES
    config = tmp_path / "schedctl.toml"
    config.write_text(READING_CONFIG)
    env = {"SCHEDCTL_CONFIG": str(config)}
    created = cli(
        "schedules", "create", "--name", "n", "--kind", "sql", "--param", "query=ping",
        "--cadence", "daily", "--at", "07:00", "--to", "r@example.com", "--json",
        db_url=db_url, env=env,
    )  # fmt: skip
    assert created.returncode == 0, created.stderr
    assert heartbeat_rows(db_url) == 1  # a command that writes records its run
    schedule = json.loads(created.stdout)["id"]
    sent = cli("send-now", "--schedule", schedule, db_url=db_url,
               env={**env, "SCHEDCTL_MAIL_BACKEND": "memory"})  # fmt: skip
    assert sent.returncode == 0, sent.stderr
    for args in (["users", "add", "u@example.com"],
                 ["events", "add", "--name", "e", "--starts-at", "2030-01-01T10:00:00Z",
                  "--contact", "c@example.com"]):  # fmt: skip
        assert cli(*args, db_url=db_url, env=env).returncode == 0
    assert heartbeat_rows(db_url) == 4
    listed = cli("messages", "list", "--json", db_url=db_url, env=env)
    message = json.loads(listed.stdout)["messages"][0]["id"]
    for name, args in [*ONLY_READ.items(), ("heartbeat --check", ["heartbeat", "--check"])]:
        words = [a.replace("{schedule}", schedule).replace("{message}", message) for a in args]
        result = cli(*words, db_url=db_url, env=env)
        assert result.returncode in (0, 3), (name, result.stdout, result.stderr)
    assert heartbeat_rows(db_url) == 4


def test_rows_of_commands_that_only_read_are_not_listed(cli, db_url: str) -> None:
    """Rows such commands recorded before they stopped recording are left out."""
    run_ok(cli, db_url, "tick")
    for name in ("users list", "db status", "heartbeat"):
        record(db_url, name, timedelta(hours=2))
    for args in (["--check", "--json"], ["--json"]):
        result = cli("heartbeat", *args, db_url=db_url)
        assert result.returncode == 0, result.stdout + result.stderr
        assert [c["command"] for c in json.loads(result.stdout)["commands"]] == ["tick"]


def test_a_command_that_only_reads_cannot_be_judged(cli, db_url: str) -> None:
    for args, code in [([], 2), (["--check"], 3)]:
        result = cli("heartbeat", *args, "-c", "users list", db_url=db_url)
        assert result.returncode == code, result.stdout + result.stderr
        assert len(result.stderr.strip().splitlines()) == 1, result.stderr
        assert "'users list' only reads" in result.stderr


def test_a_configured_command_that_only_reads_is_not_judged_but_warned_of(
    cli, db_url: str, tmp_path: Path
) -> None:
    config = tmp_path / "schedctl.toml"
    config.write_text('[heartbeat]\ncommands = ["tick", "db status"]\n')
    run_ok(cli, db_url, "tick")
    result = check(cli, db_url, "--json", env={"SCHEDCTL_CONFIG": str(config)})
    assert result.returncode == 0, result.stdout + result.stderr
    data = json.loads(result.stdout)
    assert [c["command"] for c in data["commands"]] == ["tick"]
    [warning] = data["warnings"]
    assert warning.startswith("[heartbeat] commands: 'db status' only reads")


# --- --check --quiet: silent when green, one line otherwise ---------------------------


def test_check_quiet_prints_nothing_when_green(cli, db_url: str) -> None:
    run_ok(cli, db_url, "tick")
    result = cli("--quiet", "heartbeat", "--check", db_url=db_url)
    assert (result.returncode, result.stdout, result.stderr) == (0, "", "")


def test_check_quiet_prints_one_line_naming_the_status_and_the_worst_command(
    cli, db_url: str
) -> None:
    record(db_url, "digest", timedelta(minutes=20))  # yellow
    record(db_url, "tick", timedelta(hours=2))  # red
    result = cli("--quiet", "heartbeat", "--check", db_url=db_url)
    assert result.returncode == 2
    assert result.stdout == ""
    [line] = result.stderr.splitlines()
    assert line == "schedctl: heartbeat red: tick: last success 2h ago (and 1 more not green)"


def test_check_quiet_says_why_when_unknown(cli, db_url: str, tmp_path: Path) -> None:
    nothing = cli("--quiet", "heartbeat", "--check", db_url=db_url)
    assert nothing.returncode == 3
    assert nothing.stdout == ""
    [line] = nothing.stderr.splitlines()
    assert line.startswith("schedctl: heartbeat unknown: nothing to judge")
    config = tmp_path / "schedctl.toml"
    config.write_text('[heartbeat]\ncommands = ["digest"]\n')
    never = check(cli, db_url, "--quiet", env={"SCHEDCTL_CONFIG": str(config)})
    assert never.returncode == 3
    assert never.stderr.splitlines() == ["schedctl: heartbeat unknown: digest: never ran"]


def test_check_prints_the_table_and_the_line_without_quiet(cli, db_url: str) -> None:
    record(db_url, "tick", timedelta(minutes=20))
    result = check(cli, db_url)
    assert result.returncode == 1
    assert "overall: yellow" in result.stdout
    assert result.stderr.splitlines() == ["schedctl: heartbeat yellow: tick: last success 20m ago"]
