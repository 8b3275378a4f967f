"""A secret a URL carries is printed by no command: not its ``user:password@``, not a
``?password=``/``?sslpassword=`` query parameter, in human output, --json documents,
errors, warnings and -v's debug lines alike (SPEC §11, README "Secrets").

Run in-process against a real PostgreSQL server (trust authentication, so a password
in the URL connects as well as none), a closed loopback port and a Unix socket
directory that does not exist.
"""

from __future__ import annotations

import getpass
from pathlib import Path

import pytest
from sqlalchemy.engine import make_url

from support.cli import CliRunner, Result
from support.databases import PG_USER

SECRET = "S3cret"
# libpq's option names are lower case (?PassWord= is refused, below).
PLACES = ["userinfo", "password", "sslpassword"]
FLAGS = [[], ["--json"], ["-v"]]
# SCHEDCTL_NOW when the schedule below is due.
CREATED = "2026-06-01T08:00:00Z"
DUE = "2026-06-01T09:00:05Z"

postgresql_only = pytest.mark.parametrize(
    "dialect", [pytest.param("postgresql", marks=pytest.mark.postgres)]
)


def with_secret(url: str, place: str) -> str:
    """`url` carrying SECRET in its userinfo or as the query parameter `place`."""
    parsed = make_url(url)
    if place == "userinfo":
        parsed = parsed.set(username=parsed.username or PG_USER or getpass.getuser())
        parsed = parsed.set(password=SECRET)
    else:
        parsed = parsed.update_query_dict({place: SECRET})
    return parsed.render_as_string(hide_password=False)


def assert_not_printed(result: Result, *context: object) -> None:
    assert SECRET not in result.stdout, (context, result.stdout)
    assert SECRET not in result.stderr, (context, result.stderr)


@postgresql_only
@pytest.mark.parametrize("place", PLACES)
def test_commands_on_a_reachable_database_never_print_its_password(
    cli: CliRunner, db_url: str, place: str
) -> None:
    url = with_secret(db_url, place)
    for flags in FLAGS:
        for args in (
            ["db", "upgrade"], ["db", "status"], ["heartbeat"], ["tick"], ["config", "check"],
        ):  # fmt: skip
            result = cli(*args, *flags, db_url=url)
            assert result.returncode == 0, (args, flags, result.stderr)
            assert_not_printed(result, args, flags)


def unreachable_urls(closed_port: int, tmp_path: Path) -> list[str]:
    return [
        f"postgresql://schedctl@127.0.0.1:{closed_port}/schedctl",
        f"postgresql://schedctl@/schedctl?host={tmp_path / 'no-such-socket-dir'}",
    ]


@pytest.mark.parametrize("place", PLACES)
def test_an_unreachable_database_never_prints_its_password(
    cli: CliRunner, closed_port: int, tmp_path: Path, place: str
) -> None:
    env = {"SCHEDCTL_DB_RETRY_SECONDS": "0"}
    for target in unreachable_urls(closed_port, tmp_path):
        url = with_secret(target, place)
        for flags in FLAGS:
            for args in (["db", "upgrade"], ["db", "status"], ["heartbeat"], ["tick"]):
                result = cli(*args, *flags, db_url=url, env=env)
                assert result.returncode == 75, (url, args, flags, result.stderr)
                assert "database unavailable" in result.stderr
                assert_not_printed(result, url, args, flags)
            checked = cli("config", "check", *flags, db_url=url, env=env)
            assert checked.returncode == 2, (url, flags, checked.stderr)  # an error it lists
            assert "database unavailable" in checked.stdout + checked.stderr
            assert_not_printed(checked, url, flags)


@pytest.mark.parametrize(
    "url",
    [
        f"foo://schedctl@localhost/db?password={SECRET}",
        f"foo://schedctl:{SECRET}@localhost/db?password={SECRET}",
        f"postgresql+psycopg2://schedctl@localhost/db?sslpassword={SECRET}",
        f"postgresql://schedctl@localhost:notaport/db?password={SECRET}",
        f"postgresql://schedctl@127.0.0.1:1/db?password={SECRET}&sslmode=bogus",
        f"mysql+pymysql://schedctl@127.0.0.1:1/db?password={SECRET}",
        f"postgresql://schedctl@127.0.0.1:1/db?PassWord={SECRET}",
        f"postgresql://schedctl@127.0.0.1:1/db?SSLPASSWORD={SECRET}&sslmode=bogus",
    ],
)
def test_a_refused_database_url_is_never_quoted_with_its_password(cli: CliRunner, url: str) -> None:
    for flags in FLAGS:
        result = cli("db", "status", *flags, db_url=url)
        assert result.returncode == 2, (url, flags, result.stderr)
        assert_not_printed(result, url, flags)


@pytest.mark.parametrize("place", PLACES)
def test_a_report_query_source_that_fails_never_prints_its_password(
    cli: CliRunner, db_url: str, closed_port: int, tmp_path: Path, place: str
) -> None:
    source = with_secret(f"postgresql://schedctl@127.0.0.1:{closed_port}/reports", place)
    config = tmp_path / "schedctl.toml"
    config.write_text(f'[reports.queries.q]\nsql = "select 1 as one"\ndatabase_url = "{source}"\n')
    env = {"SCHEDCTL_CONFIG": str(config), "SCHEDCTL_MAIL_BACKEND": "memory"}
    created = cli(
        "schedules", "create", "--name", "r", "--kind", "sql", "--param", "query=q",
        "--cadence", "daily", "--at", "09:00", "--to", "ops@example.com", "--json",
        db_url=db_url, env={**env, "SCHEDCTL_NOW": CREATED},
    )  # fmt: skip
    assert created.returncode == 0, created.stderr
    for flags in FLAGS:
        result = cli("tick", *flags, db_url=db_url, env={**env, "SCHEDCTL_NOW": DUE})
        assert_not_printed(result, flags)
        assert result.returncode in (0, 1), result.stderr
    runs = cli("schedules", "runs", created.json["id"], "--json", db_url=db_url, env=env)
    assert runs.returncode == 0, runs.stderr
    assert runs.json["runs"][0]["error"], runs.json  # the failure is recorded...
    assert_not_printed(runs)  # ...without the password


def test_a_ping_url_password_is_never_printed(
    cli: CliRunner, db_url: str, closed_port: int
) -> None:
    url = f"http://monitor:{SECRET}@127.0.0.1:{closed_port}/ping/check"
    for flags in FLAGS:
        result = cli("heartbeat", "--ping-url", url, *flags, db_url=db_url)
        assert result.returncode == 0, result.stderr
        assert "ping" in result.stderr  # the failed ping is reported, masked
        assert_not_printed(result, flags)
