"""Bad input, swept: every option of every command, with invalid values, writes nothing.

The cases are generated from the CLI itself: its click command tree
(`schedctl.cli.app`: groups, commands, parameters) is walked and each parameter's
invalid values come from what it means (its metavar, or an entry in `KIND_OF`): a
new option is covered as soon as it exists, and
`test_every_parameter_has_invalid_values` fails for one that has no invalid-value case
and no place in `NO_INVALID_VALUE` (with the reason). The
configuration cases are generated the same way from `schedctl.config.SCHEMA`: every
environment variable and every file key, each table's unknown key.

Every case must exit 2 (or the code the SPEC fixes for that situation: 75 for an
unreachable database, 3 for `heartbeat --check`), print exactly one line on stderr,
``schedctl: error: ...``, and nothing on stdout (with ``--json`` exactly
``{"error": {"code": ..., "message": ...}}``), leave every row of every table (and the
sequences) as it was, and print none of the secrets in force.

Speed: the SQLite sweep runs in this process (`CliRunner`: `schedctl.cli.run`, a
fresh Runtime per call), one seeded database copy per command, dumped around every
case. Each command's valid base line runs first on its own copy (the control: it
must succeed, so the refusal comes from the bad value). PostgreSQL gets one case per
command, the cases refused by what the database holds, and some settings, in-process
too. A sample runs as separate `schedctl` processes on both dialects, judged the same
way and compared with its in-process output (so the in-process runs carry no state
from one case to the next). The whole sweep on PostgreSQL, too slow for CI:
``SCHEDCTL_TEST_SWEEP_POSTGRES=1``.
"""

from __future__ import annotations

import getpass
import hashlib
import json
import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import click
import pytest
import sqlalchemy as sa

from schedctl.cli import app
from schedctl.config import SCHEMA, Setting
from schedctl.db.schema import metadata
from support.cli import CliRunner, run_cli
from support.databases import PG_HOST, PG_PORT, PG_USER
from support.http_server import ScriptedHTTPServer
from support.reconcile import Seed

# ---------------------------------------------------------------------------------
# The commands and their parameters, from the app itself.


@dataclass(frozen=True)
class Param:
    command: str  # "schedules create"; "" for the root's options
    name: str
    opts: tuple[str, ...]
    metavar: str | None
    is_argument: bool
    is_flag: bool
    multiple: bool


def _walk() -> tuple[list[str], list[Param], list[str]]:
    root = app
    commands: list[str] = []
    params: list[Param] = []
    groups: list[str] = []

    def visit(cmd: Any, path: list[str]) -> None:
        if isinstance(cmd, click.Group):
            groups.append(" ".join(path))
            if path:
                assert not [p for p in cmd.params if not str(p.name).startswith("_")], path
            for name, sub in sorted(cmd.commands.items()):
                visit(sub, [*path, name])
            return
        commands.append(" ".join(path))
        for p in cmd.params:
            if str(p.name).startswith("_"):  # --json, --quiet, -v (with_output_flags)
                continue
            params.append(_param(" ".join(path), p))

    for p in root.params:
        if not str(p.name).startswith("_"):
            params.append(_param("", p))
    visit(root, [])
    return commands, params, groups


def _param(command: str, p: Any) -> Param:
    return Param(
        command,
        str(p.name),
        tuple(p.opts),
        p.metavar,
        isinstance(p, click.Argument),
        isinstance(p, click.Option) and bool(p.is_flag),
        bool(p.multiple),
    )


COMMANDS, PARAMS, GROUPS = _walk()

# ---------------------------------------------------------------------------------
# Invalid values, by what a value means.

LONG = "x" * 5000
ABSENT_DIR = "/nonexistent-schedctl-dir"
# A value and the exit code it must give, when that is not 2.
Bad = str | tuple[str, int]

INVALID: dict[str, list[Bad]] = {
    "int": ["-1", "0", "abc", str(10**20), "1.5", ""],
    "account": ["no-such-account", "999999", "-3", LONG, ""],
    "id": ["999999", "-3", "abc", str(10**20), "0", LONG, ""],
    "user": ["nobody@example.com", "999999", "-3", "not-an-address", LONG, ""],
    "email": ["not-an-address", "a@", "@example.com", "a@b.c\r\nBcc: x@y.z", LONG + "@x.com", ""],
    "zone": ["Mars/Olympus", "../../etc/passwd", "localtime", LONG, ""],
    "clock": ["25:00", "7", "07:60", "noon", "-1:00", ""],
    "instant": ["2026-13-45", "tomorrow", "2026-02-30T10:00", "12:00", LONG, ""],
    "date": ["2026-13-45", "tomorrow", "2026-02-30", "2026-11", LONG, ""],
    "date_or_instant": ["2026-13-45", "tomorrow", "2026-02-30T10:00", LONG, ""],
    "duration": ["-5m", "10 parsecs", "5", "m", LONG, ""],
    "cron": ["61 * * * *", "* * *", "every day", "* * 32 * *", LONG, ""],
    "weekday": ["funday", "8", "", LONG],
    "monthday": ["32", "0", "-1", "first", ""],
    "choice": ["bogus", "", LONG],
    "type": ["bad type!", "", LONG],  # message types are open: REMINDER_1D, ...
    "kind": ["bogus-kind", "", LONG],
    "param": ["novalue", "=x", "query=no_such_query", "bogus=1", ""],
    "command": ["bogus-command", "", LONG],
    "url": ["ftp://x", "not a url", "http://", "", LONG],
    "token": ["bad-token", "", LONG],
    "name": ["", " ", LONG],
    "title": ["", " ", LONG],
    "text": [LONG * 30],  # bodies and keys: any text up to their limit is fine
    "path": [f"{ABSENT_DIR}/x", "/", "", "-q"],  # the last: an option in its place
    # serve's: no case may be a valid address, or the sweep would wait on a server
    "host": ["0.0.0.0", "::", "bad host", "a..b", "", LONG],  # public: no [web] token here
    "port": ["0", "-1", "65536", "abc", "1.5", ""],
}

# Parameters whose kind their metavar does not say.
KIND_OF: dict[tuple[str, str], str] = {
    ("", "database_url"): "database_url",
    ("", "config"): "path",
    ("accounts create", "name"): "name",
    ("events add", "name"): "name",
    ("schedules create", "name"): "name",
    ("schedules update", "name"): "name",
    ("notify", "title"): "title",
    ("notify", "body"): "text",
    ("notify", "key"): "text",
    ("suppressions add", "reason"): "text",
    ("demo", "path"): "path",
    ("serve", "host"): "host",
    ("serve", "port"): "port",
    ("metrics", "output"): "path",
}
BY_METAVAR = {
    "N": "int",
    "ACCOUNT": "account",
    "ID": "id",
    "MESSAGE_ID": "id",
    "ID_OR_EMAIL": "user",
    "EMAIL_OR_ID": "user",
    "EMAIL": "email",
    "ZONE": "zone",
    "HH:MM": "clock",
    "TIME": "instant",
    "YYYY-MM-DD": "date",
    "DATE|TIME": "date_or_instant",
    "DURATION": "duration",
    "EXPR": "cron",
    "mon..sun": "weekday",
    "1..31|last": "monthday",
    "TYPE": "type",
    "STATUS": "choice",
    "KIND": "kind",
    "KEY=VALUE": "param",
    "URL": "url",
    "COMMAND": "command",
    "TOKEN": "token",
}

# Invalid values only one parameter has (on top of its kind's).
EXTRA_INVALID: dict[tuple[str, str], list[Bad]] = {
    ("messages edit", "send_at"): ["2000-01-01T00:00:00Z"],  # in the past
    ("events update", "event_id"): ["2"],  # an id of nothing
    ("events show", "event_id"): ["2"],
    ("schedules next", "count"): ["1001"],  # at most 1000
    ("users next", "count"): ["1001"],
    ("digest", "on_date"): ["2026-01-01"],  # nobody's today (SCHEDCTL_NOW is 2026-11-18)
    ("reconcile", "on_date"): ["2099-01-01"],  # after today
    ("events add", "load_in_time"): ["2030-06-02T18:00:00Z"],  # after the start
    ("users add", "email"): ["seed@example.com", "SEED@example.com"],  # exists already
    ("users update", "email"): ["seed2@example.com\nBcc: x@example.com"],
    ("accounts create", "name"): ["default", "123", "a b", "x" * 101],
    # After --to; a range of more than 1000 slots.
    ("schedules backfill", "start"): ["2026-11-15T00:00:00Z", "2020-01-01T00:00:00Z"],
    ("schedules backfill", "end"): ["2026-12-01T00:00:00Z"],  # after now (2026-11-18)
}

# Flags have no invalid value; the reason each is still covered (or need not be).
NO_INVALID_VALUE: dict[tuple[str, str], str] = {
    ("", "version"): "a flag: present or not",
    ("config check", "smtp"): "a flag: present or not (config check writes nothing)",
    ("digest", "preview"): "a flag; preview writes nothing anyway",
    ("distribute", "preview"): "a flag; preview writes nothing anyway",
    ("heartbeat", "check"): "a flag; every heartbeat case also runs with --check (exit 3)",
    ("reconcile", "dry_run"): "a flag: present or not",
    ("reconcile", "repair"): "a flag: present or not",
    ("schedules create", "paused"): "a flag: present or not",
    ("schedules update", "paused"): "a flag: present or not",
    ("send-now", "force"): "a flag: present or not",
    ("users add", "digest"): "--digest/--no-digest: either is valid",
    ("users update", "digest"): "--digest/--no-digest: either is valid",
    ("messages delete-all", "confirm"): "the confirmation; its absence is a case (MISSING)",
    ("messages delete", "yes"): "the confirmation; its absence is a case (MISSING)",
    ("events delete", "yes"): "the confirmation; its absence is a case (MISSING)",
    ("schedules delete", "yes"): "the confirmation; its absence is a case (MISSING)",
    ("schedules backfill", "dry_run"): "a flag; a dry run writes nothing anyway",
    ("users remove", "yes"): "the confirmation; its absence is a case (MISSING)",
}


def kind_of(param: Param) -> str | None:
    key = (param.command, param.name)
    if key in KIND_OF:
        return KIND_OF[key]
    if param.metavar and "|" in param.metavar and param.metavar not in BY_METAVAR:
        return "choice"  # daily|weekly|monthly|cron, normal|critical, ...
    return BY_METAVAR.get(param.metavar or "")


# ---------------------------------------------------------------------------------
# Each command's valid line (the control), and per-parameter variants of it.

EVENT_AT = "2030-06-01T18:00:00Z"
SCHEDULE = ["--name", "sweep", "--kind", "sql", "--param", "query=q", "--to", "r@example.com"]
DAILY = [*SCHEDULE, "--cadence", "daily", "--at", "07:00"]
BASE_CREATE = ["schedules", "create", *DAILY]

BASE: dict[str, list[str]] = {
    "accounts create": ["accounts", "create", "acme"],
    "accounts list": ["accounts", "list"],
    "completion": ["completion", "bash"],
    "config check": ["config", "check"],
    "db status": ["db", "status"],
    "db upgrade": ["db", "upgrade"],
    "demo": ["demo", "--path", "{tmp}/demo.db"],
    "digest": ["digest"],
    "distribute": ["distribute", "--preview"],
    "events add": ["events", "add", "--name", "launch", "--starts-at", EVENT_AT,
                   "--contact", "c@example.com"],
    "events delete": ["events", "delete", "1", "--yes"],
    "events list": ["events", "list"],
    "events show": ["events", "show", "1"],
    "events update": ["events", "update", "1", "--starts-at", EVENT_AT],
    "heartbeat": ["heartbeat"],
    "messages delete": ["messages", "delete", "1", "--yes"],
    "messages delete-all": ["messages", "delete-all", "--confirm"],
    "messages edit": ["messages", "edit", "1", "--status", "paused"],
    "messages list": ["messages", "list"],
    "messages show": ["messages", "show", "1"],
    "metrics": ["metrics", "--output", "{tmp}/schedctl.prom"],
    "notify": ["notify", "--user", "seed@example.com", "--title", "hello"],
    "reconcile": ["reconcile", "--dry-run"],
    "schedules create": ["schedules", "create", *DAILY],
    "schedules delete": ["schedules", "delete", "1", "--yes"],
    "schedules list": ["schedules", "list"],
    "schedules next": ["schedules", "next", "1"],
    "schedules pause": ["schedules", "pause", "1"],
    "schedules resume": ["schedules", "resume", "1"],
    "schedules runs": ["schedules", "runs", "1"],
    "schedules backfill": ["schedules", "backfill", "1", "--from", "2026-11-01T00:00:00Z",
                           "--to", "2026-11-10T00:00:00Z"],
    "schedules show": ["schedules", "show", "1"],
    "schedules update": ["schedules", "update", "1", "--at", "08:00"],
    "send-now": ["send-now", "1"],
    "serve": ["serve"],
    "suppressions add": ["suppressions", "add", "s2@example.com"],
    "suppressions list": ["suppressions", "list"],
    "suppressions remove": ["suppressions", "remove", "sup@example.com"],
    "tick": ["tick"],
    "unsubscribe": ["unsubscribe", "seed@example.com", "--token", "{token}"],
    "unsubscribe-url": ["unsubscribe-url", "seed@example.com"],
    "users add": ["users", "add", "new@example.com"],
    "users list": ["users", "list"],
    "users next": ["users", "next", "seed@example.com"],
    "users remove": ["users", "remove", "seed@example.com", "--yes"],
    "users update": ["users", "update", "seed@example.com", "--tz", "Europe/Berlin"],
}  # fmt: skip

# Where a parameter only means something beside others, its base line says so.
VARIANT: dict[tuple[str, str], list[str]] = {
    ("schedules create", "weekday"): ["schedules", "create", *SCHEDULE, "--cadence", "weekly",
                                      "--at", "07:00"],
    ("schedules create", "day"): ["schedules", "create", *SCHEDULE, "--cadence", "monthly",
                                  "--at", "07:00"],
    ("schedules create", "cron"): ["schedules", "create", *SCHEDULE, "--cadence", "cron"],
    ("schedules update", "weekday"): ["schedules", "update", "1", "--cadence", "weekly"],
    ("schedules update", "day"): ["schedules", "update", "1", "--cadence", "monthly"],
    ("schedules update", "cron"): ["schedules", "update", "1", "--cadence", "cron"],
    ("send-now", "schedule"): ["send-now"],
    ("heartbeat", "only"): ["heartbeat", "--command", "tick"],
}  # fmt: skip

# What is invalid without any value: a confirmation left out, an argument missing, an
# argument too many. Each command gets the last two from `_structural_cases`.
MISSING: dict[str, list[list[str]]] = {
    "schedules create": [
        [*BASE_CREATE, "--weekday", "mon"],  # no weekday in a daily cadence
        [*BASE_CREATE, "--day", "5"],
        [*BASE_CREATE, "--cron", "* * * * *"],
        [
            "schedules",
            "create",
            *SCHEDULE,
            "--cadence",
            "cron",
            "--cron",
            "* * * * *",
            "--at",
            "07:00",
        ],
        [*BASE_CREATE, "--param", "query=q"],  # the same key twice
        ["schedules", "create", *SCHEDULE, "--at", "07:00"],  # no cadence
        ["schedules", "create", *SCHEDULE[2:], "--cadence", "daily", "--at", "07:00"],
        ["schedules", "create", *SCHEDULE[:2], *SCHEDULE[4:], "--cadence", "daily"],
    ],
    "schedules update": [["schedules", "update", "1", "--weekday", "mon"]],
    "messages delete-all": [["messages", "delete-all"]],
    "messages delete": [["messages", "delete", "1"]],
    "events delete": [["events", "delete", "1"]],
    "schedules delete": [["schedules", "delete", "1"]],
    "users remove": [["users", "remove", "seed@example.com"]],
    "send-now": [["send-now"], ["send-now", "1", "--schedule", "1"]],
}

# Commands whose base line cannot succeed here, and why the sweep still means something.
NO_CONTROL = {
    "distribute": "needs the [distribute] databases; --date is parsed before they are"
    " looked for (distribute_cmd), and the sweep of --date must name the date",
    "serve": "serves until stopped; tests/acceptance/test_status_pages.py runs it as a process",
}

# The exit code the SPEC fixes where it is not 2.
CHECK_UNKNOWN = 3  # heartbeat --check: UNKNOWN, whatever went wrong


@dataclass
class Case:
    label: str
    args: list[str]
    exit_code: int = 2
    env: dict[str, str] = field(default_factory=dict)
    config: str | bytes | None = None  # the TOML file, replacing the sweep's own
    mentions: str | None = None  # what the error line must name (the setting refused)
    # Refused by what is in the database (a name in use, nobody's date), not by its
    # form: such cases run on PostgreSQL too, where a refused INSERT can use up an id.
    stateful: bool = False


def _with(base: list[str], param: Param, value: str) -> list[str]:
    args = list(base)
    if param.is_argument:
        # Arguments stand right after the command's words; replace or insert.
        words = len(param.command.split())
        positional = [
            i for i in range(words, len(args)) if not args[i].startswith("-")
            and not args[i - 1].startswith("--")
        ]  # fmt: skip
        if positional:
            args[positional[0]] = value
        else:
            args.insert(words, value)
        return args
    if param.command == "":
        return [param.opts[0], value, *args]
    for opt in param.opts:
        if opt in args:
            args[args.index(opt) + 1] = value
            return args
    return [*args, param.opts[0], value]


def cases_for(command: str) -> list[Case]:
    cases: list[Case] = []
    base = BASE[command]
    for param in (p for p in PARAMS if p.command == command):
        kind = kind_of(param)
        if kind is None:
            continue
        line = VARIANT.get((command, param.name), base)
        extra = EXTRA_INVALID.get((command, param.name), [])
        for bad in [*INVALID[kind], *extra]:
            value, code = bad if isinstance(bad, tuple) else (bad, 2)
            shown = value if len(value) <= 30 else f"{value[:12]}...({len(value)})"
            case = Case(f"{param.opts[0]}={shown!r}", _with(line, param, value), code)
            case.stateful = bad in extra
            cases.append(case)
        if param.multiple:  # a bad value after a good one
            bad = INVALID[kind][0]
            good = [*line, param.opts[0], bad] if param.opts[0] in line else None
            if good is not None:
                cases.append(Case(f"{param.opts[0]} good then {bad!r}", good))
    for args in MISSING.get(command, []):
        cases.append(Case(f"missing: {' '.join(args)}", args, stateful=True))
    cases.append(Case("extra argument", [*base, "extra-argument"]))
    cases.append(Case("unknown option", [*base, "--no-such-option"]))
    if command == "heartbeat":
        cases += [Case(c.label + " --check", [*c.args, "--check"], CHECK_UNKNOWN) for c in cases]
    return cases


# ---------------------------------------------------------------------------------
# The root's options, the environment and the configuration file, from config.SCHEMA.

PASSWORD = "S3cretPw"
SMTP_PASSWORD = "SmtpS3cretPass"
WEBHOOK_TOKEN = "T0kenHookSecret"
UNSUBSCRIBE_SECRET = "UnsubS3cretKey-0123456789"
PING_TOKEN = "Ping5ecretToken"
# Part of the invalid values of secret settings: refused, never quoted.
LEAK = "Le4kT0k"
SECRETS = (PASSWORD, SMTP_PASSWORD, WEBHOOK_TOKEN, UNSUBSCRIBE_SECRET, PING_TOKEN, LEAK)

# A line whose settings are all read (the mail configuration too) and that writes.
SETTINGS_PROBE = ["users", "add", "probe@example.com"]

# Settings with no invalid text value (from the environment), and why.
ENV_ANY_TEXT = {
    "smtp_host": "any host name; an unreachable one is a send-time failure (75)",
    "smtp_user": "any user name (set alone it is a case: SMTP_USER without the password)",
    "smtp_password": "any password (set alone it is a case, like the user)",
    "mail_file_dir": "any path; it is created when the file backend first writes",
    "distribute_salt": "any text is a salt",
    "config_path": "covered by --config and the file cases",
    "web_account": "any account name; one that does not exist is refused by serve",
}


def invalid_settings(spec: Setting) -> list[Bad]:
    """Invalid environment (text) values of one setting, from its declaration."""
    if spec.name == "database_url":
        return DATABASE_URLS
    if spec.name == "account":
        # No name at all, refused by every command (first: heartbeat --check is judged on
        # the first value); no such account, by those with an --account option.
        return [" ", "no-such-account", "999999", LONG]
    values: list[Bad] = []
    if spec.kind in (int, float):
        values += ["abc", "1e400" if spec.kind is float else "25.9", "nan", "-1", LONG]
        if spec.at_least is not None:
            values.append(str(spec.at_least - 1))
        if spec.above is not None:
            values.append(str(spec.above))
        if spec.at_most is not None:
            values.append(str(spec.at_most + 1))
    elif spec.parse is not None:
        values += ["-5m", "10 parsecs", "0s", LONG]
    elif spec.choices:
        values += ["bogus", LONG]
    elif spec.check is not None:
        values += ["not-an-address", "a@", "ftp://x", "not a url", "x" * 5000]
    if spec.min_length:
        values.append("s" * (spec.min_length - 1))
    if spec.secret and spec.check:
        values += [f"ftp://u:{LEAK}@x/{LEAK}", f"not a url {LEAK}"]
    if spec.secret and spec.min_length:
        values.append(LEAK)  # too short
    return values


DATABASE_URLS: list[Bad] = [
    "not a url",
    "nosuchdialect://u:S3cretPw@localhost/db",
    "postgresql+nosuchdriver://u:S3cretPw@localhost/db",
    f"sqlite:///{ABSENT_DIR}/schedctl.db",
    "postgresql+psycopg://u:S3cretPw@127.0.0.1:5432/db?sslmode=bogus",
    "postgresql+psycopg://u:S3cretPw@127.0.0.1:99999/db",  # no such port: retrying cannot help
    "sqlite:///{tmp}/sweep.toml",  # a file, but not a database
    ("postgresql+psycopg://u:S3cretPw@127.0.0.1:{closed_port}/db", 75),
    "",
]


def env_cases() -> list[Case]:
    cases: list[Case] = []
    for name, spec in SCHEMA.items():
        if spec.env_name is None or name in ENV_ANY_TEXT:
            continue
        values = invalid_settings(spec)
        assert values, f"{spec.env_name} has no invalid value: add it here or to ENV_ANY_TEXT"
        for bad in values:
            value, code = bad if isinstance(bad, tuple) else (bad, 2)
            if value == "":
                continue  # an empty variable counts as unset
            shown = value if len(value) <= 30 else f"{value[:12]}...({len(value)})"
            mentions = spec.env_name if name != "database_url" else None
            cases.append(Case(f"{spec.env_name}={shown!r}", SETTINGS_PROBE, code,
                              env={spec.env_name: value}, mentions=mentions))  # fmt: skip
    # Read by the database layer, not a declared setting.
    for value in ["tomorrow", "2026-13-45", "9999-12-31T23:59:59Z", "2026-11-18T12:00+25:00", LONG]:
        cases.append(Case(f"SCHEDCTL_NOW={value[:30]!r}", SETTINGS_PROBE,
                          env={"SCHEDCTL_NOW": value}, mentions="SCHEDCTL_NOW"))  # fmt: skip
    cases.append(Case("SMTP_USER without password", SETTINGS_PROBE,
                      env={"SCHEDCTL_SMTP_PASSWORD": "", "SCHEDCTL_SMTP_USER": "u"}))  # fmt: skip
    cases.append(Case("smtp backend without host", SETTINGS_PROBE,
                      env={"SCHEDCTL_MAIL_BACKEND": "smtp"}))  # fmt: skip
    cases.append(Case("unsubscribe base URL without secret", SETTINGS_PROBE,
                      env={"SCHEDCTL_UNSUBSCRIBE_SECRET": ""}))  # fmt: skip
    return cases


def _names(err: str, setting: str) -> bool:
    """Whether an error line names a setting; ``[t] k`` is also named by a key of its own
    table, ``[t.k] x`` (or deeper, ``[t.k.x] y``)."""
    table, _, key = setting.partition("] ")
    tables = [f"{table}.{key}]", f"{table}.{key}."] if setting.startswith("[") and key else []
    return any(name in err for name in [setting, *tables])


def _toml(value: Any) -> str:
    return json.dumps(value) if not isinstance(value, dict) else (
        "{" + ", ".join(f"{k} = {_toml(v)}" for k, v in value.items()) + "}"
    )  # fmt: skip


def _wrong_types(spec: Setting) -> list[Any]:
    if spec.parse is not None:
        return [5, {"x": 1}] if spec.kind is not tuple else [5, "tick"]
    if spec.kind in (int, float):
        out: list[Any] = ["25", True, [1]]
        if spec.kind is int:
            out.append(25.9)
        if spec.at_least is not None:
            out.append(spec.kind(spec.at_least) - 1)
        if spec.at_most is not None:
            out.append(spec.kind(spec.at_most) + 1)
        return out
    return [12, ["a"], {"x": 1}]


def config_cases() -> list[Case]:
    cases: list[Case] = [
        Case("malformed TOML", SETTINGS_PROBE, config="[smtp\nport = 25\n"),
        Case("unterminated string", SETTINGS_PROBE, config='mail_from = "a@example.com\n'),
        Case("duplicate key", SETTINGS_PROBE, config="smtp_port = 25\nsmtp_port = 26\n"),
        Case("set twice", SETTINGS_PROBE, config="smtp_port = 25\n[smtp]\nport = 26\n"),
        Case("unknown top-level key", SETTINGS_PROBE, config="no_such_setting = 1\n"),
        Case("unknown top-level table", SETTINGS_PROBE, config="[no_such_table]\nx = 1\n"),
        Case("missing file", SETTINGS_PROBE, env={"SCHEDCTL_CONFIG": f"{ABSENT_DIR}/x.toml"}),
        Case("a directory", SETTINGS_PROBE, env={"SCHEDCTL_CONFIG": "/"}),
        Case("not UTF-8", SETTINGS_PROBE, config=b'mail_from = "\xff"\n'),
    ]
    tables = sorted({str(s.table) for s in SCHEMA.values() if s.in_file})
    for table in tables:
        cases.append(Case(f"[{table}] unknown key", SETTINGS_PROBE,
                          config=f"[{table}]\nno_such_key = 1\n"))  # fmt: skip
        cases.append(Case(f"[{table}] not a table", SETTINGS_PROBE, config=f"{table} = 3\n"))
        cases.append(Case(f"[{table}] a list", SETTINGS_PROBE, config=f"{table} = [1, 2]\n"))
    nested = {
        "[distribute.source] unknown key": "[distribute.source]\nno_such_key = 1\n",
        "[heartbeat.thresholds.tick] unknown key": (
            "[heartbeat.thresholds.tick]\nyellow = '1m'\nred = '2m'\nblue = '3m'\n"
        ),
        "[heartbeat.thresholds.tick] red < yellow": (
            "[heartbeat.thresholds.tick]\nyellow = '2m'\nred = '1m'\n"
        ),
        "[heartbeat.ping_urls] unknown command": (
            "[heartbeat.ping_urls]\nno_such_command = 'http://127.0.0.1/x'\n"
        ),
        "[heartbeat.ping_urls] ftp": "[heartbeat.ping_urls]\ntick = 'ftp://x'\n",
        "[heartbeat] commands unknown": "[heartbeat]\ncommands = ['bogus']\n",
        "[heartbeat] commands empty": "[heartbeat]\ncommands = []\n",
        "[distribute.source] a password in a bad URL": (
            f'[distribute.source]\ndatabase_url = "nosuch://u:{LEAK}@h/db"\nquery = "select 1"\n'
        ),
        "[distribute.source] a password, a bad driver": (
            f'[distribute.source]\ndatabase_url = "postgresql+psycopg2://u:{LEAK}@h/db"\n'
            'query = "select 1"\n'
        ),
    }
    cases += [Case(label, SETTINGS_PROBE, config=text) for label, text in nested.items()]
    query = '[reports.queries.q]\nsql = "select 1 as one"\n'
    features = {
        "[reports.queries.q] unknown key": query + "bogus = 1\n",
        "[reports.queries.q] no sql": "[reports.queries.q]\n",
        "[reports.queries.q] sql = 5": "[reports.queries.q]\nsql = 5\n",
        "[reports.queries.q] unknown bind": '[reports.queries.q]\nsql = "select :nope"\n',
        "[reports.queries.q] accounts = []": query + "accounts = []\n",
        "[reports.queries.q] a password in a bad URL": (
            query + f'database_url = "nosuch://u:{LEAK}@h/db"\n'
        ),
        "[messages] lease = '1s'": "[messages]\nlease = '1s'\n",
        "[messages.types.INIT] unknown key": "[messages.types.INIT]\nno_such_key = 1\n",
        "[events] reminders = ['-5m']": "[events]\nreminders = ['-5m']\n",
        "[events] reminders = '1d'": "[events]\nreminders = '1d'\n",
    }
    cases += [Case(label, SETTINGS_PROBE, config=text) for label, text in features.items()]
    for spec in SCHEMA.values():
        if not spec.in_file:
            continue
        wrong = _wrong_types(spec)
        if spec.secret:  # the refused value is never quoted
            wrong += [[LEAK], {"k": LEAK}]
            wrong += [f"ftp://x/{LEAK}"] if spec.check else [LEAK] if spec.min_length else []
        for value in wrong:
            cases.append(Case(f"[{spec.table}] {spec.key} = {_toml(value)}", SETTINGS_PROBE,
                              config=f"[{spec.table}]\n{spec.key} = {_toml(value)}\n",
                              mentions=f"[{spec.table}] {spec.key}"))  # fmt: skip
    return cases


def root_cases() -> list[Case]:
    return [
        c for param in PARAMS if param.command == ""
        for c in _root_param_cases(param)
    ]  # fmt: skip


def _root_param_cases(param: Param) -> list[Case]:
    kind = kind_of(param)
    if kind is None:
        return []
    values = DATABASE_URLS if kind == "database_url" else INVALID[kind]
    out = []
    for bad in values:
        value, code = bad if isinstance(bad, tuple) else (bad, 2)
        out.append(Case(f"{param.opts[0]}={value[:40]!r}", _with(SETTINGS_PROBE, param, value),
                        code))  # fmt: skip
    return out


# ---------------------------------------------------------------------------------
# Running a case and judging it.


@dataclass
class Sweep:
    """One database, its settings, and how to run schedctl against it."""

    db_url: str
    tmp: Path
    env: dict[str, str]
    run: Any  # (args, env) -> (exit code, stdout, stderr)
    closed_port: int
    reset: Any = None  # puts the seeded rows back after a case that wrote
    failures: list[str] = field(default_factory=list)
    counted: int = 0
    engine: sa.Engine = field(init=False)
    last: tuple[int, str, str] = (0, "", "")  # what the last case printed
    # The dump after the last case: the next case's "before". Anything that writes
    # between two cases shows as a write of the second, never as no write.
    snapshot: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        self.engine = sa.create_engine(self.db_url, poolclass=sa.pool.NullPool)

    def expand(self, args: list[str]) -> list[str]:
        token = self.env.get("SWEEP_TOKEN", "")
        return [
            a.replace("{tmp}", str(self.tmp)).replace("{token}", token)
            .replace("{closed_port}", str(self.closed_port))
            for a in args
        ]  # fmt: skip

    def case_env(self, case: Case) -> dict[str, str]:
        env = dict(self.env)
        env.pop("SWEEP_TOKEN", None)
        if case.config is not None:
            text = case.config if isinstance(case.config, bytes) else case.config.encode()
            path = self.tmp / f"case-{hashlib.sha256(text).hexdigest()[:12]}.toml"
            path.write_bytes(text)
            env["SCHEDCTL_CONFIG"] = str(path)
        env.update({k: self.expand([v])[0] for k, v in case.env.items()})
        return env

    def check(self, case: Case, *, as_json: bool = False) -> None:
        self.counted += 1
        args = self.expand(case.args)
        if as_json and "--json" not in args:
            args = [*args, "--json"] if "--" not in args else ["--json", *args]
        before = self.snapshot if self.snapshot is not None else full_dump(self.engine)
        code, out, err = self.last = self.run(args, self.case_env(case))
        after = self.snapshot = full_dump(self.engine)
        problems = judge(case, code, out, err, as_json=as_json)
        if after != before:
            changed = sorted(
                k for k in before.keys() | after.keys() if before.get(k) != after.get(k)
            )
            problems.append(f"wrote to {changed}")
            if self.reset is not None:  # so the next case starts from the seeded rows
                self.reset()
                self.snapshot = None
        if problems:
            label = f"{case.label}{' --json' if as_json else ''}"
            self.failures.append(
                f"{' '.join(a[:40] for a in args)} [{label}]: {'; '.join(problems)}"
                f"\n    exit {code}; stderr: {err[:400]!r}; stdout: {out[:200]!r}"
            )


def judge(case: Case, code: int, out: str, err: str, *, as_json: bool) -> list[str]:
    problems = []
    if code != case.exit_code:
        problems.append(f"exit {code}, not {case.exit_code}")
    lines = err.splitlines()
    if len(lines) != 1 or not lines[0].startswith("schedctl: error: "):
        problems.append(f"{len(lines)} stderr lines, not one 'schedctl: error:' line")
    if case.mentions and not _names(err, case.mentions):
        problems.append(f"the error does not name {case.mentions}")
    if "Traceback" in err or "Traceback" in out:
        problems.append("traceback")
    leaked = [s for s in SECRETS if s in out or s in err]
    if leaked:
        problems.append(f"secret in output: {leaked}")
    if as_json:
        try:
            doc = json.loads(out)
        except ValueError:
            problems.append("stdout is not one JSON document")
        else:
            message = lines[0].removeprefix("schedctl: error: ") if lines else None
            if doc != {"error": {"code": case.exit_code, "message": message}}:
                problems.append(f"JSON is {doc!r}")
    elif out:
        problems.append("stdout not empty")
    return problems


def full_dump(engine: sa.Engine) -> dict[str, Any]:
    """Every row of every table (all columns, ordered), and where each id sequence stands.

    One engine per sweep without a pool (a connection per dump), so a database file
    put back by `Sweep.reset` is never read through a stale connection.
    """
    with engine.connect() as conn:
        rows: dict[str, Any] = {
            name: sorted(tuple(map(repr, r)) for r in conn.execute(sa.select(table)))
            for name, table in metadata.tables.items()
        }
        if conn.dialect.name == "postgresql":
            query = "SELECT sequencename, last_value FROM pg_sequences ORDER BY 1"
        elif conn.exec_driver_sql(
            "SELECT 1 FROM sqlite_master WHERE name = 'sqlite_sequence'"
        ).first():
            query = "SELECT name, seq FROM sqlite_sequence ORDER BY 1"
        else:
            query = "SELECT 1 WHERE 0"
        rows["(sequences)"] = [tuple(r) for r in conn.exec_driver_sql(query)]
    return rows


def judge_control(command: str, code: int, out: str, err: str) -> str | None:
    if code != 0:
        return f"control `{' '.join(BASE[command])}` exit {code}: {err[:300]!r}"
    return None


# ---------------------------------------------------------------------------------
# The databases: seeded once, copied per command.


def sweep_env(tmp: Path, server: ScriptedHTTPServer) -> dict[str, str]:
    config = tmp / "sweep.toml"
    config.write_text('[reports.queries.q]\nsql = "select 1 as one"\n', encoding="utf-8")
    return {
        "SCHEDCTL_CONFIG": str(config),
        "SCHEDCTL_NOW": "2026-11-18T12:00:00Z",
        "SCHEDCTL_DB_RETRY_SECONDS": "0",
        "SCHEDCTL_SMTP_USER": "mailer",
        "SCHEDCTL_SMTP_PASSWORD": SMTP_PASSWORD,
        "SCHEDCTL_SLACK_WEBHOOK_URL": f"{server.url}/hooks/{WEBHOOK_TOKEN}",
        "SCHEDCTL_UNSUBSCRIBE_SECRET": UNSUBSCRIBE_SECRET,
        "SCHEDCTL_UNSUBSCRIBE_BASE_URL": f"{server.url}/u",
        "SCHEDCTL_PING_URL": f"{server.url}/ping/{PING_TOKEN}",
    }


SEED = [
    ["users", "add", "seed@example.com", "--tz", "UTC", "--digest-at", "23:00"],
    ["schedules", "create", *DAILY[2:], "--name", "seeded"],
    ["notify", "--user", "seed@example.com", "--title", "seeded"],
    ["events", "add", "--name", "seeded", "--starts-at", EVENT_AT, "--contact",
     "c@example.com"],
    ["suppressions", "add", "sup@example.com"],
]  # fmt: skip


def seed(run: Any, db_url: str, env: dict[str, str]) -> str:
    """Rows for the update commands to (not) change; the unsubscribe token for seed@."""
    for args in SEED:
        code, out, err = run(args, env)
        assert code == 0, (args, out, err)
    Seed(db_url).message(recipient="seed@example.com")
    code, out, err = run(["--json", "unsubscribe-url", "seed@example.com"], env)
    assert code == 0, err
    from urllib.parse import parse_qs, urlsplit

    return parse_qs(urlsplit(json.loads(out)["url"]).query)["t"][0]


@pytest.fixture(scope="module")
def http() -> Iterator[ScriptedHTTPServer]:
    server = ScriptedHTTPServer()
    yield server
    server.close()


def _in_process(cli: CliRunner, db_url: str) -> Any:
    def run(args: list[str], env: dict[str, str]) -> tuple[int, str, str]:
        # Every SCHEDCTL_* of the case, set or (empty) unset.
        try:
            result = cli(*args, db_url=env.get("SCHEDCTL_DATABASE_URL", db_url), env=env)
        except BaseException as exc:  # escaped the error boundary
            return -1, "", f"escaped run(): {type(exc).__name__}: {exc}"
        return result.returncode, result.stdout, result.stderr

    return run


def _quick_run(db_url: str) -> Any:
    """In this process, for the seeding (a module fixture: no capsys)."""

    def run(args: list[str], env: dict[str, str]) -> tuple[int, str, str]:
        import contextlib
        import io

        from schedctl.cli import run as schedctl

        out, err = io.StringIO(), io.StringIO()
        with pytest.MonkeyPatch.context() as patch:
            for key, value in {"SCHEDCTL_DATABASE_URL": db_url, **env}.items():
                patch.setenv(key, value)
            with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
                code = schedctl(args)
        return code, out.getvalue(), err.getvalue()

    return run


@pytest.fixture(scope="module")
def seeded_sqlite(
    tmp_path_factory: pytest.TempPathFactory, sqlite_template: Path, http: ScriptedHTTPServer
) -> tuple[Path, dict[str, str]]:
    tmp = tmp_path_factory.mktemp("sweep-seed")
    path = tmp / "seeded.db"
    shutil.copyfile(sqlite_template, path)
    env = sweep_env(tmp, http)

    url = f"sqlite:///{path}"
    env["SWEEP_TOKEN"] = seed(_quick_run(url), url, env)
    return path, env


@pytest.fixture
def sweep_on_sqlite(
    seeded_sqlite: tuple[Path, dict[str, str]],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    closed_port: int,
) -> Any:
    seeded, env = seeded_sqlite

    def make(name: str) -> Sweep:
        path = tmp_path / f"{name}.db"
        shutil.copyfile(seeded, path)
        url = f"sqlite:///{path}"
        cli = CliRunner(monkeypatch, capsys)
        return Sweep(
            url, tmp_path, dict(env), _in_process(cli, url), closed_port,
            reset=lambda: shutil.copyfile(seeded, path),
        )  # fmt: skip

    return make


# The whole sweep on PostgreSQL too (slow: a seeded database per command and control):
# SCHEDCTL_TEST_SWEEP_POSTGRES=1. CI runs one case per command there, as processes.
FULL_SWEEP_ON_POSTGRES = os.environ.get("SCHEDCTL_TEST_SWEEP_POSTGRES") == "1"


@pytest.fixture
def sweep_on_postgresql(
    postgres: Any,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    closed_port: int,
    http: ScriptedHTTPServer,
) -> Iterator[Any]:
    """A seeded database per call, its URL carrying a password (trust auth ignores it)."""
    created: list[str] = []

    def make(name: str) -> Sweep:
        database = postgres.new()
        created.append(database)
        user = PG_USER or getpass.getuser()
        url = f"postgresql+psycopg://{user}:{PASSWORD}@{PG_HOST}:{PG_PORT}/{database}"
        env = sweep_env(tmp_path, http)
        env["SWEEP_TOKEN"] = seed(_quick_run(url), url, env)
        cli = CliRunner(monkeypatch, capsys)
        return Sweep(url, tmp_path, env, _in_process(cli, url), closed_port)

    yield make
    for database in created:
        postgres.release(database)


@pytest.fixture(
    params=["sqlite", *([pytest.param("postgresql", marks=pytest.mark.postgres)]
                       if FULL_SWEEP_ON_POSTGRES else [])]
)  # fmt: skip
def sweep_db(request: pytest.FixtureRequest) -> Any:
    return request.getfixturevalue(f"sweep_on_{request.param}")


# ---------------------------------------------------------------------------------
# The tests.


def test_every_parameter_has_invalid_values() -> None:
    uncovered = [
        f"{p.command or '(root)'} {p.opts[0]}"
        for p in PARAMS
        if (p.command, p.name) not in NO_INVALID_VALUE
        and not (kind_of(p) and (kind_of(p) == "database_url" or INVALID[str(kind_of(p))]))
    ]
    assert not uncovered, (
        f"no invalid-value case (add a kind or a NO_INVALID_VALUE reason): {uncovered}"
    )
    known = {(p.command, p.name) for p in PARAMS}
    stale = [k for k in [*NO_INVALID_VALUE, *KIND_OF, *VARIANT, *EXTRA_INVALID] if k not in known]
    assert not stale, f"entries for parameters that no longer exist: {stale}"
    assert sorted(BASE) == sorted(COMMANDS), "every command needs a valid base line in BASE"
    valued = [f"{p.command} {p.opts[0]}" for p in PARAMS
              if (p.command, p.name) in NO_INVALID_VALUE and not p.is_flag]  # fmt: skip
    assert not valued, f"only flags may go without invalid values: {valued}"
    for key, reason in NO_INVALID_VALUE.items():
        if "MISSING" in reason:
            assert key[0] in MISSING, key


@pytest.mark.parametrize("command", COMMANDS)
def test_bad_values_of_every_option(command: str, sweep_db: Any) -> None:
    if command not in NO_CONTROL:
        control = sweep_db(f"control-{command.replace(' ', '-')}")
        env = control.case_env(Case("", []))
        code, out, err = control.run(control.expand(BASE[command]), env)
        problem = judge_control(command, code, out, err)
        assert problem is None, problem
    sweep = sweep_db(f"sweep-{command.replace(' ', '-')}")
    cases = cases_for(command)
    seen_params: set[str] = set()
    for case in cases:
        sweep.check(case)
        option = case.label.split("=")[0] + (" --check" if case.exit_code == CHECK_UNKNOWN else "")
        if option not in seen_params:  # one --json variant per parameter
            seen_params.add(option)
            sweep.check(case, as_json=True)
    assert not sweep.failures, f"{len(sweep.failures)} of {sweep.counted} cases:\n" + "\n".join(
        sweep.failures
    )


@pytest.mark.parametrize("group", ["root", "env", "config"])
def test_bad_settings(group: str, sweep_db: Any) -> None:
    control = sweep_db(f"settings-control-{group}")
    code, _, err = control.run(SETTINGS_PROBE, control.case_env(Case("", [])))
    assert code == 0, f"the probe {SETTINGS_PROBE} fails with valid settings: {err}"
    sweep = sweep_db(f"settings-{group}")
    cases = {"root": root_cases, "env": env_cases, "config": config_cases}[group]()
    for case in cases:
        sweep.check(case)
    for case in cases[:3]:
        sweep.check(case, as_json=True)
    # heartbeat --check reads UNKNOWN (3) into any broken configuration.
    judged: set[str] = set()
    for case in cases:
        args = (
            case.args[: -len(SETTINGS_PROBE)]
            if case.args[-len(SETTINGS_PROBE) :] == (SETTINGS_PROBE)
            else None
        )
        setting = case.mentions or case.label
        if args is not None and setting not in judged:  # one per setting is enough
            judged.add(setting)
            sweep.check(Case(case.label + " heartbeat --check", [*args, "heartbeat", "--check"],
                             CHECK_UNKNOWN, case.env, case.config, case.mentions))  # fmt: skip
    assert not sweep.failures, f"{len(sweep.failures)} of {sweep.counted} cases:\n" + "\n".join(
        sweep.failures
    )


@pytest.mark.postgres
def test_one_case_per_command_on_postgresql(sweep_on_postgresql: Any) -> None:
    """The first case of every command, and some of the settings, on PostgreSQL."""
    sweep = sweep_on_postgresql("subset")
    for command in COMMANDS:
        first, *rest = cases_for(command)
        sweep.check(first, as_json=command.startswith("schedules"))
        for case in rest:
            if case.stateful:
                sweep.check(case)
    for case in [*root_cases()[-3:], *env_cases()[:2], *config_cases()[:2]]:
        sweep.check(case)
    assert not sweep.failures, f"{len(sweep.failures)} of {sweep.counted}:\n" + "\n".join(
        sweep.failures
    )


def test_a_group_without_a_command_under_json(sweep_on_sqlite: Any) -> None:
    """`schedctl --json schedules` is an error document, not the group's help."""
    sweep = sweep_on_sqlite("groups")
    for group in GROUPS:
        sweep.check(Case(f"{group or 'schedctl'} without a command",
                         ["--json", *group.split()]), as_json=True)  # fmt: skip
    assert not sweep.failures, "\n".join(sweep.failures)


# A sample across commands and settings, after the other cases ran in this process.
SAME_IN_A_PROCESS = [
    ("tick", 1), ("schedules create", 5), ("users update", 0), ("heartbeat", 3),
    ("messages edit", 2), ("notify", 0),
]  # fmt: skip


@pytest.mark.parametrize(
    "dialect_name", ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]
)
def test_in_process_runs_match_separate_processes(
    dialect_name: str, request: pytest.FixtureRequest
) -> None:
    """The in-process sweep sees what cron would: same exit, stdout and stderr (and the
    separate processes are judged like every case: one line, nothing written)."""
    sweep = request.getfixturevalue(f"sweep_on_{dialect_name}")("same")
    cases = [cases_for(command)[i] for command, i in SAME_IN_A_PROCESS]
    cases += [env_cases()[0], config_cases()[0], root_cases()[-1]]
    for case in cases:  # first in this process, so later runs follow earlier ones
        sweep.check(case)
    inside = sweep.run
    outside = Sweep(sweep.db_url, sweep.tmp, sweep.env, _processes(sweep.db_url), 0)
    for case in cases:
        outside.check(case)
        args, env = sweep.expand(case.args), sweep.case_env(case)
        assert inside(args, env) == outside.last, case.label
    assert not sweep.failures + outside.failures, sweep.failures + outside.failures


def _processes(db_url: str) -> Any:
    def run(args: list[str], env: dict[str, str]) -> tuple[int, str, str]:
        result = run_cli(*args, db_url=db_url, env=env)
        return result.returncode, result.stdout, result.stderr

    return run
