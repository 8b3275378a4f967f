"""`schedctl config check [--smtp]` (SPEC §12): warnings and errors, exit 0/1/2; and
configuration warnings shown there and by `heartbeat`, never by every run."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.engine import make_url

from support.databases import connect_pg, login_role
from support.smtp_server import SmtpServer

QUERIES = '[reports.queries.ping]\nsql = "select 1 as one"\n'
UNSUBSCRIBE = (
    '[unsubscribe]\nbase_url = "https://mail.example.com/u"\n'
    'secret = "an-unsubscribe-secret-of-32-chars"\n'
)


def configure(tmp_path: Path, text: str) -> dict[str, str]:
    path = tmp_path / "schedctl.toml"
    path.write_text(text)
    return {"SCHEDCTL_CONFIG": str(path)}


def checked(cli: Any, db_url: str, env: dict[str, str], *args: str) -> tuple[int, Any]:
    result = cli("config", "check", "--json", *args, db_url=db_url, env=env)
    return result.returncode, json.loads(result.stdout)


def add_schedule(cli: Any, db_url: str, env: dict[str, str]) -> None:
    created = cli(
        "schedules", "create", "--name", "Ping", "--kind", "sql", "--param", "query=ping",
        "--cadence", "daily", "--at", "07:00", "--to", "r@example.com",
        db_url=db_url, env={**env, "SCHEDCTL_NOW": "2026-06-01T08:00:00Z"},
    )  # fmt: skip
    assert created.returncode == 0, created.stderr


def test_a_clean_installation_exits_0(cli, db_url: str, tmp_path: Path) -> None:
    env = configure(tmp_path, QUERIES + UNSUBSCRIBE)
    add_schedule(cli, db_url, env)
    assert checked(cli, db_url, env) == (0, {"ok": True, "warnings": [], "errors": []})
    human = cli("config", "check", db_url=db_url, env=env)
    assert (human.returncode, human.stdout) == (0, "configuration ok\n")
    quiet = cli("--quiet", "config", "check", db_url=db_url, env=env)
    assert (quiet.returncode, quiet.stdout, quiet.stderr) == (0, "", "")


def test_subscription_mail_without_an_unsubscribe_link_is_a_warning(
    cli, db_url: str, tmp_path: Path
) -> None:
    env = configure(tmp_path, QUERIES)
    assert checked(cli, db_url, env)[0] == 0  # nothing sends subscription mail yet
    add_schedule(cli, db_url, env)
    assert cli("users", "add", "u@example.com", db_url=db_url, env=env).returncode == 0
    code, data = checked(cli, db_url, env)
    assert (code, data["ok"], data["errors"]) == (1, True, [])
    [warning] = data["warnings"]
    assert warning.startswith(
        "subscription mail (1 active schedule(s), 1 digest user(s)) is sent without an"
        " unsubscribe link: set SCHEDCTL_UNSUBSCRIBE_BASE_URL"
    )
    quiet = cli("--quiet", "config", "check", db_url=db_url, env=env)
    assert (quiet.returncode, quiet.stdout) == (1, "")
    assert quiet.stderr.splitlines() == [f"schedctl: warning: {warning}"]


def test_a_schedule_whose_report_query_is_not_configured_is_an_error(
    cli, db_url: str, tmp_path: Path
) -> None:
    env = configure(tmp_path, QUERIES + UNSUBSCRIBE)
    add_schedule(cli, db_url, env)
    env = configure(tmp_path, UNSUBSCRIBE)  # the query went missing from the file
    code, data = checked(cli, db_url, env)
    assert (code, data["ok"], data["warnings"]) == (2, False, [])
    [error] = data["errors"]
    assert "schedule 1 ('Ping'): report query 'ping' is not in the configuration" in error


def test_heartbeat_names_of_commands_that_only_read_are_warnings(
    cli, db_url: str, tmp_path: Path
) -> None:
    env = configure(
        tmp_path, '[heartbeat]\ncommands = ["tick", "users list"]\n[heartbeat.ping_urls]\n'
        '"db status" = "https://hc.example.com/p"\n',
    )  # fmt: skip
    code, data = checked(cli, db_url, env)
    assert code == 1
    assert data["warnings"] == [
        "[heartbeat] commands: 'users list' only reads and records no heartbeat: it is not judged",
        "[heartbeat.ping_urls]: 'db status' only reads and records no heartbeat: its URL is"
        " never pinged",
    ]


def test_a_job_run_never_prints_configuration_warnings_heartbeat_lists_them(
    cli, db_url: str, tmp_path: Path, mailbox: list[Any]
) -> None:
    """A report (subscription mail) sent with no unsubscribe link configured: the run is
    silent under --quiet; `heartbeat` and `config check` say it."""
    env = {**configure(tmp_path, QUERIES), "SCHEDCTL_MAIL_BACKEND": "memory"}
    add_schedule(cli, db_url, env)
    tick = cli("--quiet", "tick", db_url=db_url, env={**env, "SCHEDCTL_NOW": "2026-06-02T08:00Z"})
    assert (tick.returncode, tick.stdout, tick.stderr) == (0, "", "")
    assert len(mailbox) == 1
    beat = cli("heartbeat", "--json", db_url=db_url, env=env)
    [warning] = json.loads(beat.stdout)["warnings"]
    assert "without an unsubscribe link" in warning
    assert f"warning: {warning}" in cli("heartbeat", db_url=db_url, env=env).stdout
    green = cli("--quiet", "heartbeat", "--check", db_url=db_url, env=env)
    assert (green.returncode, green.stdout, green.stderr) == (0, "", "")


# --- --smtp: a session with the configured mail server ---------------------------------


def test_smtp_says_ehlo_to_the_configured_server(cli, db_url: str, smtp: SmtpServer) -> None:
    code, data = checked(cli, db_url, smtp.env, "--smtp")
    assert (code, data) == (0, {"ok": True, "warnings": [], "errors": []})
    assert smtp.accepted == []  # nothing was sent


def test_smtp_with_the_configured_credentials_logs_in(cli, db_url: str) -> None:
    with SmtpServer(credentials=("mailer", "right-password")) as server:
        assert checked(cli, db_url, server.env, "--smtp")[0] == 0
        assert server.logins == 1
        wrong = {**server.env, "SCHEDCTL_SMTP_PASSWORD": "wrong-password"}
        code, data = checked(cli, db_url, wrong, "--smtp")
    assert code == 2
    [error] = data["errors"]
    assert error.startswith("mail server: SMTP authentication failed: 535")
    assert "wrong-password" not in error


def test_smtp_to_a_closed_port_is_an_error(cli, db_url: str, closed_port: int) -> None:
    env = {
        "SCHEDCTL_MAIL_BACKEND": "smtp",
        "SCHEDCTL_SMTP_HOST": "127.0.0.1",
        "SCHEDCTL_SMTP_PORT": str(closed_port),
        "SCHEDCTL_SMTP_TLS": "none",
    }
    code, data = checked(cli, db_url, env, "--smtp")
    assert (code, data["ok"]) == (2, False)
    [error] = data["errors"]
    assert error.startswith(f"mail server: cannot use SMTP server 127.0.0.1:{closed_port}: ")
    quiet = cli("--quiet", "config", "check", "--smtp", db_url=db_url, env=env)
    assert (quiet.returncode, quiet.stdout) == (2, "")
    assert quiet.stderr.splitlines() == [f"schedctl: error: {error}"]


@pytest.mark.parametrize("dialect", ["sqlite"])
def test_smtp_without_a_mail_server_configured_is_an_error(cli, db_url: str) -> None:
    code, data = checked(cli, db_url, {}, "--smtp")
    assert code == 2
    assert data["errors"] == [
        "--smtp: no mail server to check: smtp_host is not set (SCHEDCTL_SMTP_HOST or [smtp] host)"
    ]
    assert checked(cli, db_url, {})[0] == 0  # without --smtp, the console backend is fine


@pytest.mark.parametrize("dialect", [pytest.param("postgresql", marks=pytest.mark.postgres)])
def test_grants_the_jobs_need_and_a_read_only_server_are_errors(
    cli, db_url: str, tmp_path: Path
) -> None:
    env = configure(tmp_path, QUERIES)
    name = str(make_url(db_url).database)
    with login_role(db_url, "schedctl_checked") as url:
        assert checked(cli, url, env) == (0, {"ok": True, "warnings": [], "errors": []})
        role = make_url(url).username
        with connect_pg(name) as admin:
            admin.execute(f'REVOKE INSERT ON email_log FROM "{role}"')  # type: ignore[arg-type]
            admin.execute(f'REVOKE DELETE ON messages FROM "{role}"')  # type: ignore[arg-type]
        code, report = checked(cli, url, env)
    assert code == 2
    [error] = report["errors"]
    assert error.startswith("schedctl's login role lacks DELETE on messages, INSERT on email_log")
    with connect_pg() as admin:
        admin.execute(f'ALTER DATABASE "{name}" SET default_transaction_read_only = on')  # type: ignore[arg-type]
    try:
        code, report = checked(cli, db_url, env)
    finally:
        with connect_pg() as admin:
            admin.execute(f'ALTER DATABASE "{name}" RESET default_transaction_read_only')  # type: ignore[arg-type]
    assert code == 2
    assert report["errors"] == [
        "the database takes no writes (a hot standby, or default_transaction_read_only is on):"
        " every job that writes will exit 75"
    ]


@pytest.mark.parametrize("dialect", [pytest.param("postgresql", marks=pytest.mark.postgres)])
def test_an_account_other_than_the_one_the_role_is_bound_to(
    cli, db_url: str, tmp_path: Path
) -> None:
    # A role bound to `acme` sees only acme's rows, whatever --account says: with
    # SCHEDCTL_ACCOUNT unset or naming another account, every list came back empty.
    env = configure(tmp_path, QUERIES)
    assert cli("accounts", "create", "acme", db_url=db_url).returncode == 0
    with login_role(db_url, "schedctl_bound") as url:
        role = make_url(url).username
        with connect_pg(str(make_url(db_url).database)) as owner:
            owner.execute(
                "INSERT INTO account_roles (role_name, account_id)"
                " SELECT %s, id FROM accounts WHERE name = 'acme'",
                (role,),
            )
        unset = checked(cli, url, env)
        other = checked(cli, url, {**env, "SCHEDCTL_ACCOUNT": "default"})
        bound = checked(cli, url, {**env, "SCHEDCTL_ACCOUNT": "acme"})
        by_id = checked(cli, url, {**env, "SCHEDCTL_ACCOUNT": " 02 "})  # as --account reads it
        listed = cli("heartbeat", "--json", db_url=url, env={**env, "SCHEDCTL_ACCOUNT": "default"})
        # A superuser bound by a stray row is bound to nothing: row security skips it.
        with connect_pg(str(make_url(db_url).database)) as owner:
            owner.execute(
                "INSERT INTO account_roles (role_name, account_id)"
                " SELECT current_user, id FROM accounts WHERE name = 'acme'"
            )
        superuser = checked(cli, db_url, env)
    assert unset == (1, {"ok": True, "errors": [], "warnings": [
        "the login role is bound to account 'acme' and SCHEDCTL_ACCOUNT is not set: commands"
        " that take --account default to 'default', whose rows this role can neither see nor"
        " write (set SCHEDCTL_ACCOUNT=acme)"
    ]})  # fmt: skip
    assert other == (2, {"ok": False, "warnings": [], "errors": [
        "SCHEDCTL_ACCOUNT names account 'default', but the login role is bound to account"
        " 'acme': commands that take --account will see none of its rows and be refused"
        " every write to it (set SCHEDCTL_ACCOUNT=acme)"
    ]})  # fmt: skip
    assert bound == by_id == (0, {"ok": True, "warnings": [], "errors": []})
    assert json.loads(listed.stdout)["warnings"] == other[1]["errors"]  # heartbeat warns
    assert not any("bound" in line for line in superuser[1]["errors"] + superuser[1]["warnings"])
