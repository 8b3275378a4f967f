"""`schedctl heartbeat`: status per command, --check exit codes, pings (SPEC §9)."""

from __future__ import annotations

import base64
import json
from contextlib import ExitStack
from datetime import timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import make_url

from schedctl import heartbeat
from schedctl.db.database import Database
from schedctl.db.schema import alerts
from support.databases import connect_pg, login_role


def record(db_url: str, command: str, ago: timedelta, exit_code: int = 0) -> None:
    """A finished run of `command`, `ago` before the database's clock (what rows carry)."""
    with Database(db_url, environ={}) as db:
        at = db.now() - ago  # no SCHEDCTL_NOW here: the database clock
        row = heartbeat.start_run(db, command, at)
        heartbeat.finish_run(db, row, finished_at=at, exit_code=exit_code, counts={})


def test_fresh_database_has_nothing_to_judge(cli, db_url: str) -> None:
    result = cli("heartbeat", "--json", db_url=db_url)
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["status"] == "unknown"
    assert data["note"].startswith("nothing to judge")
    assert not any(c["monitored"] for c in data["commands"])


def test_a_command_that_ran_is_green(cli, db_url: str) -> None:
    assert cli("tick", db_url=db_url).returncode == 0
    result = cli("heartbeat", "-c", "tick", "-c", "digest", "--json", db_url=db_url)
    commands = {c["command"]: c for c in json.loads(result.stdout)["commands"]}
    assert commands["tick"]["status"] == "green"
    assert commands["tick"]["last_outcome"] == "success"
    assert commands["tick"]["age_s"] < 60
    assert commands["digest"]["status"] == "unknown"
    assert commands["digest"]["note"] == "never ran"


def test_commands_not_judged_are_listed_without_a_status(cli, db_url: str) -> None:
    assert cli("users", "add", "u@example.com", db_url=db_url).returncode == 0
    data = json.loads(cli("heartbeat", "--json", db_url=db_url).stdout)
    (added,) = (c for c in data["commands"] if c["command"] == "users add")
    assert (added["status"], added["monitored"]) == (None, False)
    assert added["note"] == "not monitored"


@pytest.mark.parametrize(
    ("age", "status", "code"),
    [
        (timedelta(minutes=5), "green", 0),
        (timedelta(minutes=20), "yellow", 1),
        (timedelta(hours=2), "red", 2),
    ],
)
def test_check_exit_codes(cli, db_url: str, age: timedelta, status: str, code: int) -> None:
    record(db_url, "tick", age)
    result = cli("heartbeat", "--check", "-c", "tick", "--json", db_url=db_url)
    assert result.returncode == code, result.stderr
    assert json.loads(result.stdout)["status"] == status


def test_check_unknown_is_3(cli, db_url: str) -> None:
    result = cli("heartbeat", "--check", "-c", "digest", db_url=db_url)
    assert result.returncode == 3
    assert "unknown" in result.stdout


def test_without_check_the_exit_code_is_0_even_when_red(cli, db_url: str) -> None:
    record(db_url, "tick", timedelta(days=1))
    result = cli("heartbeat", "-c", "tick", db_url=db_url)
    assert result.returncode == 0
    assert "red" in result.stdout


def test_a_failed_run_does_not_refresh_the_last_success(cli, db_url: str) -> None:
    record(db_url, "tick", timedelta(minutes=55))
    record(db_url, "tick", timedelta(minutes=5), exit_code=1)
    result = cli("heartbeat", "-c", "tick", "--json", db_url=db_url)
    command = json.loads(result.stdout)["commands"][0]
    assert command["status"] == "yellow"
    assert command["last_outcome"] == "failed"


def test_thresholds_come_from_the_config_file(cli, db_url: str, tmp_path: Path) -> None:
    config = tmp_path / "schedctl.toml"
    config.write_text(
        '[heartbeat]\ncommands = ["tick"]\n[heartbeat.thresholds.tick]\nyellow = "2h"\nred = "3h"\n'
    )
    record(db_url, "tick", timedelta(minutes=90))
    result = cli("--config", str(config), "heartbeat", "--check", db_url=db_url)
    assert result.returncode == 0, result.stdout + result.stderr


def test_ping_url_gets_start_then_success_or_fail(cli, db_url: str, http_server) -> None:
    record(db_url, "tick", timedelta())
    record(db_url, "digest", timedelta(hours=3))
    url = f"{http_server.url}/ping/5e3c-check"
    green = cli("heartbeat", "-c", "tick", "--ping-url", url, db_url=db_url)
    assert green.returncode == 0, green.stderr
    red = cli("heartbeat", "--check", "-c", "digest", "--ping-url", url, db_url=db_url)
    assert red.returncode == 2
    assert http_server.paths == [
        "/ping/5e3c-check/start", "/ping/5e3c-check",
        "/ping/5e3c-check/start", "/ping/5e3c-check/fail",
    ]  # fmt: skip


def test_a_ping_url_with_a_query_gets_its_suffix_in_the_path(cli, db_url: str, http_server) -> None:
    # "/start" and "/fail" went after the query string (…?token=abc/start): a push
    # service could not tell a start from a success or a failure.
    record(db_url, "digest", timedelta(hours=3))
    url = f"{http_server.url}/api/push/abc/?status=up&msg=ok"
    red = cli("heartbeat", "--check", "-c", "digest", "--ping-url", url, db_url=db_url)
    assert red.returncode == 2
    assert http_server.paths == [
        "/api/push/abc/start?status=up&msg=ok", "/api/push/abc/fail?status=up&msg=ok"
    ]  # fmt: skip


def test_refused_ping_does_not_change_the_exit_code(cli, db_url: str, closed_port: int) -> None:
    record(db_url, "tick", timedelta())
    record(db_url, "digest", timedelta(minutes=30))
    url = f"http://127.0.0.1:{closed_port}/ping/abcdef-secret-uuid"
    for command, expected in [("tick", 0), ("digest", 1)]:
        result = cli("heartbeat", "--check", "-c", command, "--ping-url", url, db_url=db_url)
        assert result.returncode == expected, result.stderr
        assert "abcdef-secret-uuid" not in result.stdout + result.stderr


def test_job_commands_ping_their_configured_url(
    cli, db_url: str, http_server, tmp_path: Path
) -> None:
    config = tmp_path / "schedctl.toml"
    config.write_text(f'[heartbeat.ping_urls]\ntick = "{http_server.url}/p/tick"\n')
    result = cli("--config", str(config), "tick", db_url=db_url)
    assert result.returncode == 0, result.stderr
    assert http_server.paths == ["/p/tick/start", "/p/tick"]


def _with_credentials(url: str, userinfo: str) -> str:
    return url.replace("http://", f"http://{userinfo}@", 1)


def _basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def test_ping_url_credentials_are_sent_as_basic_auth_never_printed(
    cli, db_url: str, http_server, tmp_path: Path
) -> None:
    record(db_url, "tick", timedelta())
    # Percent-encoded in the URL, sent decoded: the password is "S3cret@:/x".
    url = _with_credentials(f"{http_server.url}/ping/check", "monitor:S3cret%40%3A%2Fx")
    flag = cli("heartbeat", "-c", "tick", "--ping-url", url, db_url=db_url)
    variable = cli(
        "heartbeat", "-c", "tick", "--json", db_url=db_url, env={"SCHEDCTL_PING_URL": url}
    )
    config = tmp_path / "schedctl.toml"
    config.write_text(f'[heartbeat.ping_urls]\ntick = "{url}"\n')
    job = cli("--config", str(config), "tick", "-v", db_url=db_url)
    for result in (flag, variable, job):
        assert result.returncode == 0, result.stderr
        assert "S3cret" not in result.stdout + result.stderr
        assert "ping" not in result.stderr  # every ping succeeded: no warning
    assert http_server.paths == ["/ping/check/start", "/ping/check"] * 3
    assert http_server.authorizations == [_basic("monitor", "S3cret@:/x")] * 6


@pytest.mark.parametrize(
    "url",
    ["http://monitor:S3cret@/ping/check", "http://monitor:S3cret@127.0.0.1:notaport/ping"],
)
def test_ping_url_with_credentials_but_no_usable_host_is_refused(
    cli, db_url: str, url: str
) -> None:
    for args, env, code in [
        (["heartbeat", "--ping-url", url], {}, 2),
        (["heartbeat"], {"SCHEDCTL_PING_URL": url}, 2),
        (["heartbeat", "--check", "--ping-url", url], {}, 3),
        (["heartbeat", "--check"], {"SCHEDCTL_PING_URL": url}, 3),
    ]:
        result = cli(*args, db_url=db_url, env=env)
        assert result.returncode == code, result.stderr
        assert result.stderr.startswith("schedctl: error: "), result.stderr
        assert len(result.stderr.strip().splitlines()) == 1, result.stderr
        assert "S3cret" not in result.stdout + result.stderr


@pytest.mark.parametrize("dialect", [pytest.param("postgresql", marks=pytest.mark.postgres)])
@pytest.mark.parametrize(
    "refusal",
    [
        "role without INSERT on alerts",
        "read-only database",
        "constraint added by hand",
        "trigger that fails",
        "role without SELECT on users",
    ],
)
def test_red_stays_red_when_the_database_refuses_part_of_the_check(
    cli, db_url: str, refusal: str
) -> None:
    # Recording the heartbeat_red alert, or reading the configuration warnings, used
    # to end the check: a monitor saw UNKNOWN (exit 3) for a red command.
    record(db_url, "tick", timedelta(hours=2))
    name = str(make_url(db_url).database)
    with ExitStack() as stack:
        url = db_url
        if refusal.startswith("role"):
            url = stack.enter_context(login_role(db_url, "schedctl_noalert"))
            revoke = "INSERT ON alerts" if "alerts" in refusal else "SELECT ON users"
            with connect_pg(name) as admin:
                admin.execute(f'REVOKE {revoke} FROM "{make_url(url).username}"')  # type: ignore[arg-type]
        elif refusal == "constraint added by hand":
            with connect_pg(name) as admin:
                admin.execute("ALTER TABLE alerts ADD CHECK (length(summary) < 5) NOT VALID")
        elif refusal == "trigger that fails":
            with connect_pg(name) as admin:
                admin.execute(
                    "CREATE FUNCTION fails() RETURNS trigger LANGUAGE plpgsql AS"
                    " $$ BEGIN PERFORM 1 / 0; RETURN NEW; END $$"
                )
                admin.execute(
                    "CREATE TRIGGER fails BEFORE INSERT ON alerts"
                    " FOR EACH ROW EXECUTE FUNCTION fails()"
                )
        else:
            with connect_pg() as admin:
                admin.execute(f'ALTER DATABASE "{name}" SET default_transaction_read_only = on')  # type: ignore[arg-type]
            stack.callback(_writable_again, name)
        result = cli("heartbeat", "--check", "-c", "tick", "--json", db_url=url)
        assert result.returncode == 2, result
        data = json.loads(result.stdout)
        assert data["status"] == "red"
        if refusal == "role without SELECT on users":
            [warning] = data["warnings"]
            assert warning.startswith("the configuration warnings could not be read: "), warning
            assert "permission denied for table users" in warning, warning
            return
        [warning] = [w for w in data["warnings"] if "heartbeat_red" in w]
        assert warning.startswith("the heartbeat_red alert was not recorded: "), warning
        with Database(db_url, environ={}) as db:
            count = sa.select(sa.func.count()).select_from(alerts)
            assert db.transaction(lambda c: c.scalar(count), read_only=True) == 0


def _writable_again(name: str) -> None:
    with connect_pg() as admin:
        admin.execute(f'ALTER DATABASE "{name}" RESET default_transaction_read_only')  # type: ignore[arg-type]
