from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from schedctl.config import describe, load_settings
from schedctl.db.engine import mask_url, parse_url
from schedctl.errors import ConfigError


def write(tmp_path: Path, text: str) -> str:
    path = tmp_path / "schedctl.toml"
    path.write_text(text)
    return str(path)


def test_defaults() -> None:
    settings = load_settings({}, environ={})
    assert settings.database_url == "sqlite:///schedctl.db"
    assert settings.mail_backend == "console"
    assert settings.daily_quota is None  # the quota is opt-in
    assert settings.heartbeat_commands is None  # judge what has run


def test_flags_beat_environment_beat_file_beat_defaults(tmp_path: Path) -> None:
    config = write(
        tmp_path,
        'database_url = "sqlite:///file.db"\n[mail]\nbackend = "file"\nfrom = "f@x.org"\n'
        "[smtp]\nport = 2525\n",
    )
    env = {
        "SCHEDCTL_CONFIG": config,
        "SCHEDCTL_DATABASE_URL": "sqlite:///env.db",
        "SCHEDCTL_MAIL_BACKEND": "memory",
    }
    settings = load_settings({"database_url": "sqlite:///flag.db"}, environ=env)
    assert settings.database_url == "sqlite:///flag.db"
    assert settings.mail_backend == "memory"
    assert settings.mail_from == "f@x.org"
    assert settings.smtp_port == 2525
    assert load_settings({}, environ=env).database_url == "sqlite:///env.db"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("nonsense = 1\n", "unknown setting"),
        ('[mail]\nbackend = "pigeon"\n', r"\[mail\] backend: must be one of"),
        ('daily_quota = "lots"\n', "daily_quota: must be a whole number"),
        ("this is not toml", "invalid TOML"),
        ('[heartbeat.thresholds.tick]\nyellow = "15m"\n', "needs 'yellow' and 'red'"),
        ('[heartbeat.thresholds.tick]\nyellow = "1h"\nred = "15m"\n', "red must not be shorter"),
        ('[heartbeat.thresholds.tick]\nyellow = "soon"\nred = "1h"\n', "soon"),
        # Found by review: passed every check, then failed the day at PostgreSQL
        # (statement_timeout stops at 24.8 days), or crashed reconcile after writing.
        ('[reports.queries.q]\nsql = "select 1 as x"\ntimeout = "25d"\n', "from 1s to 24d"),
        ('[reports.queries.q]\nsql = "select 1 as x"\ntimeout = 0\n', "expected a duration"),
        (
            '[distribute.source]\ndatabase_url = "sqlite:///s.db"\nquery = "select 1"\n'
            'timeout = "99999999d"\n',
            "from 1s to 24d",
        ),
        ('[reconcile]\nemail_log_retention = "3000000d"\n', "at most 36500d"),
        ('[digest]\nretention = "99999999d"\n', "from 1s to 36500d"),
    ],
)
def test_bad_file_is_a_config_error(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_settings({"config_path": write(tmp_path, text)}, environ={})


def test_missing_config_file() -> None:
    with pytest.raises(ConfigError, match="config file not found"):
        load_settings({"config_path": "/nonexistent/schedctl.toml"}, environ={})


def test_bad_environment_value() -> None:
    with pytest.raises(ConfigError, match="SCHEDCTL_SMTP_TLS"):
        load_settings({}, environ={"SCHEDCTL_SMTP_TLS": "maybe"})


def test_heartbeat_thresholds_and_commands_from_file(tmp_path: Path) -> None:
    config = write(
        tmp_path,
        '[heartbeat]\ncommands = ["tick", "reconcile"]\n'
        '[heartbeat.thresholds.reconcile]\nyellow = "26h"\nred = "2d"\n'
        '[heartbeat.ping_urls]\ntick = "https://hc.example/ping/abcd-1234"\n',
    )
    settings = load_settings({"config_path": config}, environ={})
    assert settings.heartbeat_commands == ("tick", "reconcile")
    assert settings.thresholds_for("reconcile").red_after == timedelta(days=2)
    assert settings.thresholds_for("tick").yellow_after == timedelta(minutes=15)
    assert settings.ping_urls["tick"].endswith("abcd-1234")
    assert "https://hc.example/ping/abcd-1234" in settings.secrets()


def test_secrets_are_masked_and_redacted() -> None:
    settings = load_settings(
        {"database_url": "postgresql://app:hunter22@db.internal/prod"},
        environ={
            "SCHEDCTL_SMTP_USER": "reports",
            "SCHEDCTL_SMTP_PASSWORD": "mail-pass-9",
            "SCHEDCTL_UNSUBSCRIBE_SECRET": "k3y!-0123456789abcdef",
        },
    )
    shown = describe(settings)
    assert "hunter22" not in str(shown)
    assert shown["smtp_password"] == "***"
    text = settings.redact("login app:hunter22 with mail-pass-9 and k3y!-0123456789abcdef")
    assert "hunter22" not in text
    assert "mail-pass-9" not in text
    assert "k3y!" not in text


def test_url_normalisation_and_masking() -> None:
    assert parse_url("postgresql://u@h/db").drivername == "postgresql+psycopg"
    assert parse_url("sqlite:///x.db").drivername == "sqlite+pysqlite"
    assert parse_url("oracle://u:p@h/svc").drivername == "oracle+oracledb"
    assert parse_url("mysql://u@h/db").drivername == "mysql+pymysql"  # a distribute source
    assert parse_url("mariadb://u@h/db").drivername == "mariadb+pymysql"
    assert "s3cret" not in mask_url("postgresql://u:s3cret@h:5432/db")
    assert "s3cret" not in mask_url("postgresql://u:s3cret@h:notaport/db")


@pytest.mark.parametrize(
    "url", ["not a url", "mssql+pyodbc://u@h/db", "postgresql+psycopg2://u@h/db"]
)
def test_bad_urls_are_config_errors(url: str) -> None:
    with pytest.raises(ConfigError):
        parse_url(url)
