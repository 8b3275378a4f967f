"""The configuration: one declared schema, checked at every command's
start-up. A bad setting is one line on stderr naming where it came from, exit 2, and
nothing is written, not even a heartbeat row; a secret value is never echoed."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from schedctl.commands import COMMAND_NAMES
from schedctl.db.database import Database
from schedctl.db.schema import metadata
from support.cli import CliRunner
from support.delivery import T0, all_messages, enqueue_all, message
from support.smtp_server import SmtpServer

# The checks happen before any database is opened: one dialect is enough.
pytestmark = pytest.mark.parametrize("dialect", ["sqlite"])


def _snapshot(db_url: str) -> dict[str, Any]:
    """Row counts of every table, and SQLite's AUTOINCREMENT counters."""

    def read(conn: sa.Connection) -> dict[str, Any]:
        counts: dict[str, Any] = {
            name: conn.execute(sa.select(sa.func.count()).select_from(table)).scalar_one()
            for name, table in metadata.tables.items()
        }
        if conn.dialect.name == "sqlite":
            counts["sqlite_sequence"] = sorted(
                conn.execute(sa.text("select name, seq from sqlite_sequence")).all()
            )
        return counts

    with Database(db_url) as db:
        return db.transaction(read, read_only=True)


def _refused(cli: Any, db_url: str, env: dict[str, str], *args: str) -> str:
    """Run schedctl; assert exit 2, one stderr line, nothing written; return the line."""
    before = _snapshot(db_url)
    result = cli(*(args or ("db", "status")), db_url=db_url, env=env)
    assert result.returncode == 2, result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("schedctl: error: ")
    assert result.stdout == ""
    assert _snapshot(db_url) == before
    return lines[0]


def _id(env: dict[str, str]) -> str:
    return " ".join(f"{k}={v!r}" for k, v in env.items())


def _config(tmp_path: Path, text: str) -> dict[str, str]:
    path = tmp_path / "schedctl.toml"
    path.write_text(text)
    return {"SCHEDCTL_CONFIG": str(path)}


# A bad config file: (file text, the words the one line must contain) -----------------
BAD_FILES = [
    ("daily_quota = true\n", ["daily_quota", "whole number"]),
    ("[daily]\nquota = 2.5\n", ["[daily] quota", "whole number"]),
    ("[smtp]\nport = 25.9\n", ["[smtp] port", "whole number"]),
    ("smtp_port = 0\n", ["smtp_port", "65535"]),
    ('[heartbeat]\ncomands = ["tick"]\n', ["[heartbeat]", "comands"]),
    ('[heartbeat]\ncommands = ["tick", "nosuchcmd"]\n', ["[heartbeat] commands", "nosuchcmd"]),
    ('[heartbeat.thresholds.tik]\nyellow = "1h"\nred = "2h"\n', ["tik"]),
    ('[heartbeat.thresholds.tick]\nyellow = "1h"\nred = "2h"\nblue = "3h"\n', ["blue"]),
    ('[heartbeat.ping_urls]\nnosuchcmd = "https://hc.example/x"\n', ["nosuchcmd"]),
    ("db_retry_seconds = -1\n", ["db_retry_seconds", ">= 0"]),
    ('[smpt]\nhost = "mail.example.com"\n', ["[smpt]"]),
    ('[mail]\nbackend = "pigeon"\n', ["[mail] backend", "pigeon"]),
    ('smtp_port = 25\n[smtp]\nport = 26\n', ["smtp_port", "[smtp] port"]),
]  # fmt: skip


@pytest.mark.parametrize(("text", "words"), BAD_FILES, ids=[t for t, _ in BAD_FILES])
def test_bad_config_file_setting_is_refused(
    cli: Any, db_url: str, tmp_path: Path, text: str, words: list[str]
) -> None:
    line = _refused(cli, db_url, _config(tmp_path, text))
    assert str(tmp_path / "schedctl.toml") in line
    for word in words:
        assert word in line


# (environment, the words the one line must contain) ------------- items 5, 7, 8, 12
BAD_ENVIRONMENTS = [
    ({"SCHEDCTL_SMTP_TIMEOUT": "inf"}, ["SCHEDCTL_SMTP_TIMEOUT", "finite"]),
    ({"SCHEDCTL_SMTP_TIMEOUT": "nan"}, ["SCHEDCTL_SMTP_TIMEOUT", "finite"]),
    ({"SCHEDCTL_SMTP_TIMEOUT": "-inf"}, ["SCHEDCTL_SMTP_TIMEOUT"]),
    ({"SCHEDCTL_SMTP_TIMEOUT": "0"}, ["SCHEDCTL_SMTP_TIMEOUT", "> 0"]),
    ({"SCHEDCTL_SMTP_TIMEOUT": "1e9"}, ["SCHEDCTL_SMTP_TIMEOUT", "<= 3600"]),
    ({"SCHEDCTL_SMTP_PORT": "25.9"}, ["SCHEDCTL_SMTP_PORT", "whole number"]),
    ({"SCHEDCTL_SMTP_PORT": "70000"}, ["SCHEDCTL_SMTP_PORT", "65535"]),
    ({"SCHEDCTL_DB_RETRY_SECONDS": "-1"}, ["SCHEDCTL_DB_RETRY_SECONDS"]),
    ({"SCHEDCTL_DB_RETRY_SECONDS": "nan"}, ["SCHEDCTL_DB_RETRY_SECONDS", "finite"]),
    ({"SCHEDCTL_DAILY_QUOTA": "0"}, ["SCHEDCTL_DAILY_QUOTA", "unset"]),
    ({"SCHEDCTL_DAILY_QUOTA": "true"}, ["SCHEDCTL_DAILY_QUOTA", "whole number"]),
    ({"SCHEDCTL_SMTP_TLS": "maybe"}, ["SCHEDCTL_SMTP_TLS", "starttls"]),
]  # fmt: skip


@pytest.mark.parametrize(
    ("env", "words"), BAD_ENVIRONMENTS, ids=[_id(e) for e, _ in BAD_ENVIRONMENTS]
)
def test_bad_environment_setting_is_refused(
    cli: Any, db_url: str, env: dict[str, str], words: list[str]
) -> None:
    line = _refused(cli, db_url, env, "tick")
    for word in words:
        assert word in line


def test_a_short_unsubscribe_secret_is_refused_without_echoing_it(cli: Any, db_url: str) -> None:
    line = _refused(cli, db_url, {"SCHEDCTL_UNSUBSCRIBE_SECRET": "k3y!"})
    assert "SCHEDCTL_UNSUBSCRIBE_SECRET" in line
    assert "16" in line
    assert "k3y!" not in line


def test_a_secret_of_the_wrong_type_is_not_echoed(cli: Any, db_url: str, tmp_path: Path) -> None:
    line = _refused(cli, db_url, _config(tmp_path, "[smtp]\npassword = 987654321\n"))
    assert "[smtp] password" in line
    assert "987654321" not in line


def test_a_bad_ping_url_is_refused_without_echoing_it(
    cli: Any, db_url: str, tmp_path: Path
) -> None:
    text = '[heartbeat.ping_urls]\ntick = "hc-ping.com/uuid-secret-1234"\n'
    line = _refused(cli, db_url, _config(tmp_path, text))
    assert "[heartbeat.ping_urls] tick" in line
    assert "uuid-secret-1234" not in line


# --- bad mail settings, refused before anything is sent ------------------------------

BAD_MAIL = [
    ({"SCHEDCTL_MAIL_FROM": "a@b.c\r\nBcc: x@y.z"}, ["SCHEDCTL_MAIL_FROM"]),
    ({"SCHEDCTL_MAIL_FROM": "not an address"}, ["SCHEDCTL_MAIL_FROM"]),
    ({"SCHEDCTL_MAIL_FROM": "a@b.c, x@y.z"}, ["SCHEDCTL_MAIL_FROM"]),
    ({"SCHEDCTL_SMTP_HOST": ""}, ["SCHEDCTL_MAIL_BACKEND", "smtp_host"]),
    ({"SCHEDCTL_SMTP_USER": "reports"}, ["SCHEDCTL_SMTP_USER", "smtp_password"]),
    ({"SCHEDCTL_SMTP_PASSWORD": "pw-Secret-77"}, ["SCHEDCTL_SMTP_PASSWORD", "smtp_user"]),
    ({"SCHEDCTL_UNSUBSCRIBE_BASE_URL": "https://example.com/u"}, ["unsubscribe_secret"]),
    ({"SCHEDCTL_UNSUBSCRIBE_BASE_URL": "example.com/u",
      "SCHEDCTL_UNSUBSCRIBE_SECRET": "s" * 32}, ["SCHEDCTL_UNSUBSCRIBE_BASE_URL", "http"]),
    ({"SCHEDCTL_SLACK_WEBHOOK_URL": "hooks.example/T0/B0/xyz-Secret"},
     ["SCHEDCTL_SLACK_WEBHOOK_URL"]),
]  # fmt: skip


@pytest.mark.parametrize(("bad", "words"), BAD_MAIL, ids=[_id(b) for b, _ in BAD_MAIL])
def test_bad_mail_configuration_stops_tick_before_anything_is_written(
    cli: Any, db_url: str, smtp: SmtpServer, bad: dict[str, str], words: list[str]
) -> None:
    [mid] = enqueue_all(db_url, [message(1)])
    before = all_messages(db_url)
    env = {**smtp.env, "SCHEDCTL_NOW": T0.isoformat(), **bad}
    line = _refused(cli, db_url, env, "tick")
    for word in words:
        assert word in line
    assert "Secret" not in line
    assert all_messages(db_url) == before
    assert smtp.accepted == []
    # The same tick with a good configuration sends it.
    good = cli("tick", db_url=db_url, env={**smtp.env, "SCHEDCTL_NOW": T0.isoformat()})
    assert good.returncode == 0, good.stderr
    assert [m.status for m in all_messages(db_url) if m.id == mid] == ["sent"]


# --- one schema, checked at every command's start -----------------------------------
class _InProcess:
    """`cli(*args, db_url=, env=)` in this process, answering like a finished process."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]):
        self.run = CliRunner(monkeypatch, capsys)

    def __call__(self, *args: str, db_url: str, env: dict[str, str]) -> Any:
        result = self.run(*args, db_url=db_url, env={"SCHEDCTL_NOW": T0.isoformat(), **env})
        return subprocess.CompletedProcess(args, result.returncode, result.stdout, result.stderr)


@pytest.fixture
def in_process(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> Any:
    return _InProcess(monkeypatch, capsys)


# A mistyped key in each table a feature reads, and the one line every command prints.
TYPOS = [
    ("[messages]\nbatch_sise = 10\n",
     "unknown setting [messages] batch_sise (did you mean 'batch_size'?)"),
    ('[messages.types.INIT]\nenabld = false\n',
     "unknown setting [messages.types.INIT] enabld (did you mean 'enabled'?)"),
    ('[events]\nreminder = ["1d"]\n',
     "unknown setting [events] reminder (did you mean 'reminders'?)"),
    ('[reports.queries.q]\nsqll = "select 1"\n',
     "unknown setting [reports.queries.q] sqll (did you mean 'sql'?)"),
    ('[distribute]\nsault = "x"\n',
     "unknown setting [distribute] sault (did you mean 'salt'?)"),
    ('[distribute.source]\nquerry = "select 1"\n',
     "unknown setting [distribute.source] querry (did you mean 'query'?)"),
    ('[distribute.target.columns]\ngrup_id = "g"\n',
     "unknown setting [distribute.target.columns] grup_id (did you mean 'group_id'?)"),
    ('[heartbeat.thresholds.tick]\nyellow = "1m"\nred = "2m"\nred_ = "3m"\n',
     "unknown setting [heartbeat.thresholds.tick] red_ (did you mean 'red'?)"),
]  # fmt: skip


@pytest.mark.parametrize(("text", "message"), TYPOS, ids=[t.split("\n")[0] for t, _ in TYPOS])
def test_a_mistyped_key_is_refused_alike_by_every_kind_of_command(
    in_process: Any, db_url: str, tmp_path: Path, text: str, message: str
) -> None:
    env = _config(tmp_path, text)
    commands = [["tick"], ["schedules", "list"], ["users", "list"], ["heartbeat"]]
    lines = {_refused(in_process, db_url, env, *args) for args in commands}
    assert lines == {f"schedctl: error: {tmp_path / 'schedctl.toml'}: {message}"}


# Each command with arguments it accepts; the rows they name need not exist, since the
# settings are checked before the database is opened.
EVERY_COMMAND = {
    "accounts create": ["acme"], "accounts list": [], "completion": ["bash"],
    "config check": [], "db status": [],
    "db upgrade": [], "demo": ["--path", "{tmp}/demo.db"], "digest": [],
    "distribute": ["--preview"], "events list": [],
    "events add": ["--name", "x", "--starts-at", "2030-06-01T18:00:00Z", "--contact", "c@x.io"],
    "events update": ["1", "--starts-at", "2030-06-01T18:00:00Z"], "heartbeat": [],
    "messages delete-all": ["--confirm"], "messages edit": ["1", "--status", "paused"],
    "messages list": [], "messages show": ["1"], "messages delete": ["1", "--yes"],
    "events delete": ["1", "--yes"], "metrics": [],
    "notify": ["--user", "u@example.com", "--title", "hello"],
    "reconcile": ["--dry-run"], "schedules delete": ["1", "--yes"], "schedules list": [],
    "schedules create": ["--name", "s", "--kind", "sql", "--param", "query=q", "--to",
                         "r@example.com", "--cadence", "daily", "--at", "07:00"],
    "schedules pause": ["1"], "schedules resume": ["1"], "schedules runs": ["1"],
    "schedules backfill": ["1", "--from", "2026-01-01", "--to", "2026-01-02"],
    "schedules show": ["1"], "schedules update": ["1", "--at", "08:00"], "send-now": ["1"],
    "suppressions add": ["s@example.com"], "suppressions list": [],
    "suppressions remove": ["s@example.com"], "tick": [],
    "unsubscribe": ["u@example.com", "--token", "x"], "unsubscribe-url": ["u@example.com"],
    "users add": ["u@example.com"], "users list": [], "users remove": ["u@example.com", "--yes"],
    "users update": ["u@example.com", "--tz", "UTC"],
    "schedules next": ["1"], "users next": ["u@example.com"], "events show": ["1"],
    "serve": [],  # refused before it listens: the config is read first
}  # fmt: skip


def test_a_bad_report_query_is_refused_at_the_start_of_every_command(
    in_process: Any, db_url: str, tmp_path: Path
) -> None:
    assert set(EVERY_COMMAND) == COMMAND_NAMES
    env = _config(tmp_path, '[reports.queries.q]\nsqll = "select 1"\n')
    wanted = (
        f"schedctl: error: {tmp_path / 'schedctl.toml'}: unknown setting [reports.queries.q]"
        " sqll (did you mean 'sql'?)"
    )
    for name, args in EVERY_COMMAND.items():
        words = [a.replace("{tmp}", str(tmp_path)) for a in [*name.split(), *args]]
        assert _refused(in_process, db_url, env, *words) == wanted, name
    assert not (tmp_path / "demo.db").exists()
