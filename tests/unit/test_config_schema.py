"""One declared schema of every setting, checked once at start-up."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import fields
from datetime import timedelta
from pathlib import Path

import pytest

from schedctl.commands import COMMAND_NAMES
from schedctl.config import SCHEMA, SECRET_KEYS, Settings, load_settings
from schedctl.errors import ConfigError


def from_file(tmp_path: Path, text: str) -> Settings:
    path = tmp_path / "schedctl.toml"
    path.write_text(text)
    return load_settings({"config_path": str(path)}, environ={})


def test_every_setting_is_declared_with_a_place_to_give_it() -> None:
    undeclared = {f.name for f in fields(Settings)} - set(SCHEMA)
    assert undeclared == set()
    for spec in SCHEMA.values():
        assert spec.places(), spec.name
    assert {"smtp_password", "unsubscribe_secret", "slack_webhook_url", "ping_urls"} <= SECRET_KEYS


@pytest.mark.parametrize(
    ("env", "name", "value"),
    [
        ({"SCHEDCTL_SMTP_PORT": "2525"}, "smtp_port", 2525),
        ({"SCHEDCTL_SMTP_TIMEOUT": "2.5"}, "smtp_timeout", 2.5),
        ({"SCHEDCTL_SMTP_TIMEOUT": "7"}, "smtp_timeout", 7.0),
        ({"SCHEDCTL_DAILY_QUOTA": "300"}, "daily_quota", 300),
        ({"SCHEDCTL_DAILY_QUOTA": ""}, "daily_quota", None),  # empty means unset
        ({"SCHEDCTL_DB_RETRY_SECONDS": "0"}, "db_retry_seconds", 0.0),
        ({"SCHEDCTL_MAIL_FROM": "Reports <reports@example.com>"}, "mail_from",
         "Reports <reports@example.com>"),
        ({}, "smtp_connections", 4),
        ({"SCHEDCTL_SMTP_CONNECTIONS": "1"}, "smtp_connections", 1),
        ({"SCHEDCTL_SMTP_CONNECTIONS": "32"}, "smtp_connections", 32),
        ({}, "smtp_max_per_second", None),  # no limit
        ({"SCHEDCTL_SMTP_MAX_PER_SECOND": "0.5"}, "smtp_max_per_second", 0.5),
    ],
)  # fmt: skip
def test_environment_strings_are_parsed_by_the_declared_type(
    env: dict[str, str], name: str, value: object
) -> None:
    assert getattr(load_settings({}, environ=env), name) == value


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"SCHEDCTL_SMTP_PORT": "25.9"}, "SCHEDCTL_SMTP_PORT: must be a whole number"),
        ({"SCHEDCTL_SMTP_PORT": "25.0"}, "SCHEDCTL_SMTP_PORT: must be a whole number"),
        ({"SCHEDCTL_SMTP_PORT": "0"}, "from 1 to 65535"),
        ({"SCHEDCTL_SMTP_TIMEOUT": "inf"}, "finite number of seconds > 0"),
        ({"SCHEDCTL_SMTP_TIMEOUT": "NaN"}, "finite number of seconds > 0"),
        ({"SCHEDCTL_SMTP_TIMEOUT": "-1"}, "> 0"),
        ({"SCHEDCTL_DB_RETRY_SECONDS": "-0.5"}, ">= 0"),
        ({"SCHEDCTL_DAILY_QUOTA": "0"}, "leave it unset for no quota"),
        ({"SCHEDCTL_DAILY_QUOTA": "3000000000"}, "from 1 to 2147483647 [(]leave it unset"),
        ({"SCHEDCTL_MAIL_FROM": "a@b.c\nBcc: x@y.z"}, "one e-mail address"),
        ({"SCHEDCTL_MAIL_FROM": "Name <a@b.c> extra"}, "one e-mail address"),
        ({"SCHEDCTL_MAIL_FROM": "@b.c"}, "one e-mail address"),
        ({"SCHEDCTL_UNSUBSCRIBE_SECRET": "x" * 15}, "at least 16 characters"),
        ({"SCHEDCTL_PING_URL": "ftp://hc.example/x"}, "http:// or https:// URL"),
        ({"SCHEDCTL_SMTP_CONNECTIONS": "0"}, "CONNECTIONS: must be a whole number from 1 to 32"),
        ({"SCHEDCTL_SMTP_CONNECTIONS": "33"}, "must be a whole number from 1 to 32"),
        ({"SCHEDCTL_SMTP_CONNECTIONS": "2.5"}, "must be a whole number from 1 to 32"),
        ({"SCHEDCTL_SMTP_MAX_PER_SECOND": "0"}, "> 0 [(]leave it unset for no limit"),
        ({"SCHEDCTL_SMTP_MAX_PER_SECOND": "-3"}, "> 0 [(]leave it unset for no limit"),
        ({"SCHEDCTL_SMTP_MAX_PER_SECOND": "fast"}, "must be a finite number > 0"),
    ],
)  # fmt: skip
def test_bad_environment_values(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("(", r"\(")):
        load_settings({}, environ=env)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("daily_quota = true\n", r"daily_quota: must be a whole number"),
        ("smtp_timeout = true\n", r"smtp_timeout: must be a finite number"),
        ("[smtp]\nport = 25.0\n", r"\[smtp\] port: must be a whole number"),
        ('[smtp]\nport = "25"\n', r"\[smtp\] port: must be a whole number"),
        ('[smtp]\nhost = "mail.example.com"\nmail_from = "a@b.c"\n', r"\[smtp\] mail_from"),
        ("[heartbeat]\ncommands = []\n", "non-empty list"),
        ('[heartbeat]\ncommands = "tick"\n', "non-empty list"),
        ("heartbeat = 5\n", r"heartbeat must be a table"),
        ("messages = 5\n", r"messages must be a table"),
        ('[heartbeat.thresholds]\ntick = "1h"\n', "needs 'yellow' and 'red'"),
        ('[heartbeat.ping_urls]\ntick = 5\n', r"\[heartbeat.ping_urls\] tick: must be an http"),
        ('mail_backend = "smtp"\n', r"mail_backend: the smtp mail backend needs smtp_host"),
        ('database_url = ""\n', r"database_url: must not be empty"),
        ("[smtp]\nconnections = 33\n", r"\[smtp\] connections: must be a whole number from 1"),
        ("[smtp]\nconnections = 0\n", r"\[smtp\] connections: must be a whole number from 1"),
        ('[smtp]\nconnections = "4"\n', r"\[smtp\] connections: must be a whole number"),
        ("[smtp]\nmax_per_second = 0\n", r"\[smtp\] max_per_second: must be a finite number >"),
        # One send may wait connections / max_per_second for its turn: the lease covers it.
        ("[smtp]\nconnections = 32\nmax_per_second = 0.1\n",
         r"\[smtp\] max_per_second: the default lease, 10m, is too short: it must be at least"
         r" 760s, the larger of 1m and 4 x smtp_timeout \(30s\) \+ 2 x connections /"
         r" max_per_second \(32 / 0.1\)"),
    ],
)  # fmt: skip
def test_bad_file_values(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        from_file(tmp_path, text)


def test_file_forms_top_level_and_table(tmp_path: Path) -> None:
    settings = from_file(
        tmp_path,
        'smtp_timeout = 12\ndaily_quota = 40\n[smtp]\nhost = "mail.example.com"\nuser = ""\n'
        '[heartbeat]\ncommands = ["tick", "schedules list", "tick"]\n'
        '[messages]\nlease = "10m"\n',
    )
    assert settings.smtp_timeout == 12.0
    assert isinstance(settings.smtp_timeout, float)
    assert settings.daily_quota == 40
    assert settings.smtp_host == "mail.example.com"
    assert settings.smtp_user is None  # an empty optional string is unset
    assert settings.heartbeat_commands == ("tick", "schedules list")
    assert settings.messages_lease == timedelta(minutes=10)


def test_flag_origin_is_named() -> None:
    with pytest.raises(ConfigError, match=r"^--database-url: must not be empty"):
        load_settings({"database_url": ""}, environ={})


@pytest.mark.parametrize(
    ("env", "secret"),
    [
        ({"SCHEDCTL_UNSUBSCRIBE_SECRET": "short-Secret"}, "short-Secret"),
        ({"SCHEDCTL_SLACK_WEBHOOK_URL": "hooks.example/xyz-Secret"}, "xyz-Secret"),
        ({"SCHEDCTL_PING_URL": "hc.example/uuid-Secret"}, "uuid-Secret"),
        ({"SCHEDCTL_SMTP_PASSWORD": "pw-Secret-1"}, "pw-Secret-1"),
    ],
)
def test_errors_never_quote_a_secret(env: dict[str, str], secret: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings({}, environ=env)
    assert secret not in caught.value.message


def test_secret_of_the_wrong_type_is_not_quoted(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        from_file(tmp_path, "[unsubscribe]\nsecret = 1234567890123456789\n")
    assert "1234567890123456789" not in caught.value.message


def test_quoted_input_is_capped() -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings({}, environ={"SCHEDCTL_SMTP_TLS": "x" * 100_000})
    assert len(caught.value.message) < 200


def test_the_command_contract_is_what_the_cli_registers() -> None:
    from schedctl.cli import app

    def walk(command: object, prefix: tuple[str, ...] = ()) -> set[str]:
        children = getattr(command, "commands", None)
        if children is None:
            return {" ".join(prefix)}
        return set().union(*(walk(c, (*prefix, n)) for n, c in children.items()))

    assert walk(app) == COMMAND_NAMES


def test_importing_config_stays_cheap() -> None:
    """Settings are loaded on every cron tick: no mail, database or CLI modules."""
    code = (
        "import sys, schedctl.config; print(sorted(m for m in sys.modules if m.split('.')[0]"
        " in {'email', 'sqlalchemy', 'click', 'difflib'} or m.startswith('schedctl.')))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == (
        "['schedctl.config', 'schedctl.distribute', 'schedctl.distribute.config',"
        " 'schedctl.errors', 'schedctl.redaction', 'schedctl.values', 'schedctl.zones']"
    )


def test_the_readme_configuration_example_is_valid(tmp_path: Path) -> None:
    readme = (Path(__file__).parents[2] / "README.md").read_text()
    section = readme.split("## Configuration", 1)[1]
    example = section.split("```toml\n", 1)[1].split("```", 1)[0]
    settings = from_file(tmp_path, example)
    assert settings.mail_backend == "smtp"
    assert settings.heartbeat_commands == ("tick", "digest", "reconcile")


def test_the_readme_distribute_example_is_valid(tmp_path: Path) -> None:
    readme = (Path(__file__).parents[2] / "README.md").read_text()
    section = readme.split("## Distribute", 1)[1]
    example = section.split("```toml\n", 1)[1].split("```", 1)[0]
    settings = from_file(tmp_path, example)
    assert settings.distribute_tz == "Asia/Almaty"
    assert settings.distribute_control is not None
    assert settings.distribute_control.table_name == "sc_local_control"
    assert settings.distribute_source is not None
    assert "@spss" in settings.distribute_source.database_url


def test_the_readme_alerts_example_is_valid(tmp_path: Path) -> None:
    readme = (Path(__file__).parents[2] / "README.md").read_text()
    section = readme.split("### Alerts: being told", 1)[1]
    example = section.split("```toml\n", 1)[1].split("```", 1)[0]
    settings = from_file(tmp_path, example)
    assert settings.alerts_webhook_url == "https://alerts.example.com/schedctl"
    assert settings.alerts_mail_to == ("ops@example.com",)
