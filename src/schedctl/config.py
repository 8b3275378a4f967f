"""Settings: command-line flags > SCHEDCTL_* environment > TOML file > defaults.

Every setting is declared once, as a field of `Settings` made with `setting()`: its
type (the annotation), default, range or choices, the file table it belongs to and
whether it is a secret. `load_settings` checks each value against that declaration
once, at start-up, together with the rules that span settings (the whole mail
configuration), so a bad value is one line and exit 2 before anything is opened or
written. Error lines name where the value came from (flag, environment variable, or
file and key) and never quote a secret.

In the TOML file a setting is written under its own name at the top level
(``mail_backend = "smtp"``) or in its table under the rest of its name (``[mail]
backend = "smtp"``, ``[smtp] host = "..."``); the table is the name's first word
unless declared otherwise. A structured setting declares the keys of its tables
(``keys``; ``each`` for a table of tables such as ``[reports.queries.NAME]``). An
unknown key, at the top level or in any table however deep, is refused with one
message, ``FILE: unknown setting [TABLE] KEY (did you mean 'K'?)``, and a bad value
with ``FILE: [TABLE] KEY: problem``. The value parsers are in `schedctl.values`.
"""

from __future__ import annotations

import math
import os
import tomllib
import typing
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, fields, replace
from datetime import timedelta
from pathlib import Path
from types import NoneType
from typing import Any

from schedctl.distribute import config as dist
from schedctl.errors import ConfigError, ValidationError, did_you_mean, quoted
from schedctl.redaction import redact, remember, secrets_in
from schedctl.values import (
    addresses_setting,
    duration_between,
    duration_setting,
    format_duration,
    http_url_problem,
    nested,
    normalise_type,
    one_address_problem,
    query_setting,
    query_timeout,
    zone_problem,
)

DEFAULT_DATABASE_URL = "sqlite:///schedctl.db"
ENV_PREFIX = "SCHEDCTL_"
MIN_SECRET_LENGTH = 16  # the unsubscribe HMAC key, the [web] token: shorter is guessable
DEFAULT_DIGEST_RETENTION = timedelta(days=30)  # how long a digests row is kept
DEFAULT_RECONCILE_RETENTION = timedelta(days=90)  # heartbeats, email_log, finished runs
DEFAULT_ACCOUNT = "default"  # the account of an installation that never named one
# A message lease is renewed only between two messages, and one SMTP send can take
# several smtp_timeout periods: a shorter lease could expire mid-send and let another
# tick send the message again (SPEC §5).
MIN_LEASE = timedelta(minutes=1)
LEASE_SMTP_TIMEOUTS = 4  # SMTP timeouts one send may take before its lease is renewed
# With [smtp] max_per_second, a send may first wait for its turn, up to connections /
# max_per_second seconds: the lease covers twice that too.
LEASE_TURNS = 2
MAX_REMINDER_LEAD = timedelta(days=366)  # the start minus the lead stays a date


@dataclass(frozen=True)
class HeartbeatThresholds:
    """Ages after which a command's heartbeat turns yellow and red."""

    yellow_after: timedelta
    red_after: timedelta


# Frequent jobs are expected every few minutes; daily ones once a day (SPEC §9).
DEFAULT_THRESHOLDS: Mapping[str, HeartbeatThresholds] = {
    "tick": HeartbeatThresholds(timedelta(minutes=15), timedelta(minutes=60)),
    "digest": HeartbeatThresholds(timedelta(minutes=15), timedelta(minutes=60)),
    "distribute": HeartbeatThresholds(timedelta(hours=25), timedelta(hours=49)),
    "reconcile": HeartbeatThresholds(timedelta(hours=25), timedelta(hours=49)),
}
FALLBACK_THRESHOLDS = HeartbeatThresholds(timedelta(minutes=15), timedelta(minutes=60))


@dataclass(frozen=True)
class Setting:
    """The declaration of one setting; `name`, `kind`, `optional` and `default` are
    filled in from the `Settings` field it is attached to."""

    table: str | None = None  # the file table it may be grouped in (default: first word)
    key: str | None = None  # its key in that table (default: the rest of the name)
    env: str | None = ""  # "" = SCHEDCTL_<NAME>; None = not read from the environment
    flag: str | None = None  # the command-line flag, when there is one
    in_file: bool = True
    choices: tuple[str, ...] = ()
    at_least: float | None = None
    above: float | None = None
    at_most: float | None = None
    unit: str = ""  # "seconds": said in the error line
    hint: str = ""  # appended to an out-of-range error
    min_length: int = 0
    secret: bool = False  # never printed, logged or quoted in an error
    # An extra rule for a text value: the problem (never quoting a secret), or None.
    check: Callable[[str], str | None] | None = None
    # A structured value (list or table) from the file: the value, or ConfigError.
    parse: Callable[[Any, str], Any] | None = None
    # The keys of a table value (a key's own table of keys, or None for any value) and,
    # for a table of tables, of each of its tables; checked before `parse` runs.
    keys: Mapping[str, Any] | None = None
    each: Mapping[str, Any] | None = None
    name: str = ""
    kind: Any = str
    optional: bool = False
    default: Any = None

    @property
    def env_name(self) -> str | None:
        if self.env is None:
            return None
        return self.env or f"{ENV_PREFIX}{self.name.upper()}"

    def places(self) -> str:
        """Where this setting can be given, for an error line."""
        options = [self.flag, self.env_name]
        if self.in_file and self.table and self.key:
            options.append(f"[{self.table}] {self.key}")
        return " or ".join(o for o in options if o)


def setting(default: Any = None, *, factory: Callable[[], Any] | None = None, **spec: Any) -> Any:
    """A `Settings` field declared in the schema (see `Setting` for `spec`)."""
    metadata = {"setting": Setting(**spec)}
    if factory is not None:
        return field(default_factory=factory, metadata=metadata)
    return field(default=default, metadata=metadata)


def _command(name: Any, origin: str) -> str:
    from schedctl.commands import unknown_command

    problem = unknown_command(name)
    if problem:
        raise ConfigError(f"{origin}: {problem}")
    return str(name)


def _heartbeat_commands(value: Any, origin: str) -> tuple[str, ...]:
    if not isinstance(value, list) or not value:
        raise ConfigError(
            f"{origin}: must be a non-empty list of command names"
            " (leave it out to judge every command that has run)"
        )
    return tuple(dict.fromkeys(_command(name, origin) for name in value))


def _heartbeat_thresholds(value: Any, origin: str) -> dict[str, HeartbeatThresholds]:
    if not isinstance(value, dict):
        raise ConfigError(f"{origin}: must be a table of commands")
    thresholds = dict(DEFAULT_THRESHOLDS)
    for command, spec in value.items():
        where = nested(origin, _command(command, nested(origin, command)))
        if not isinstance(spec, dict) or not {"yellow", "red"} <= spec.keys():
            raise ConfigError(f"{where} needs 'yellow' and 'red' durations")
        yellow = duration_setting(spec["yellow"], where)
        red = duration_setting(spec["red"], where)
        if red < yellow:
            raise ConfigError(f"{where}: red must not be shorter than yellow")
        thresholds[command] = HeartbeatThresholds(yellow, red)
    return thresholds


# Longer, a purge's cut-off could fall before the first year a date can hold.
MAX_RETENTION = timedelta(days=36500)


def _retention(minimum: timedelta, why: str) -> Callable[[Any, str], timedelta]:
    """A parser of a retention: a duration of at least ``minimum`` (``why`` says why),
    at most MAX_RETENTION."""

    def parse(value: Any, origin: str) -> timedelta:
        kept = duration_setting(value, origin)
        if kept < minimum:
            raise ConfigError(f"{origin}: must be at least {_days(minimum)} ({why})")
        if kept > MAX_RETENTION:
            raise ConfigError(f"{origin}: must be at most {_days(MAX_RETENTION)}")
        return kept

    return parse


def _days(length: timedelta) -> str:
    return f"{length.days}d" if length.days and not length.seconds else str(length)


def _ping_urls(value: Any, origin: str) -> dict[str, str]:
    if not isinstance(value, dict):
        raise ConfigError(f"{origin}: must map command names to URLs")
    for command, url in value.items():
        where = nested(origin, _command(command, nested(origin, command)))
        problem = http_url_problem(url) if isinstance(url, str) else "must be an http(s) URL"
        if problem:
            raise ConfigError(f"{where}: {problem}")
    return dict(value)


def _named_addresses(value: Any, origin: str) -> tuple[str, ...]:
    return addresses_setting(value, origin, named=True)  # "Ops <ops@example.com>" too


def _message_types(value: Any, origin: str) -> dict[str, dict[str, Any]]:
    """``[messages.types.NAME]``: each type's own ``enabled`` and ``weekend``, checked as
    ``[messages]`` checks its own (the rest is taken from ``[messages]``)."""
    if not isinstance(value, dict):
        raise ConfigError(f"{origin}: must be a table of [messages.types.NAME]")
    rules: dict[str, dict[str, Any]] = {}
    for raw_name, table in value.items():
        where = nested(origin, raw_name)
        try:
            name = normalise_type(str(raw_name))
        except ValidationError as exc:
            raise ConfigError(f"{where}: {exc.message}") from None
        if not isinstance(table, dict):
            raise ConfigError(f"{where}: must be a table")
        rules[name] = {
            key: _check(SCHEMA[f"messages_{key}"], raw, nested(where, key), text=False)
            for key, raw in table.items()
        }
    return rules


def _reminders(value: Any, origin: str) -> tuple[str, ...]:
    """``[events] reminders``: lead times of at most MAX_REMINDER_LEAD, each once."""
    if not isinstance(value, list) or not all(isinstance(r, str) for r in value):
        raise ConfigError(f'{origin}: must be a list of durations such as ["1d", "2h"]')
    for text in value:
        if duration_setting(text, origin) > MAX_REMINDER_LEAD:
            raise ConfigError(f"{origin}: {text!r} is longer than {MAX_REMINDER_LEAD.days}d")
    return tuple(dict.fromkeys(value))


# --- [reports.queries.NAME] -------------------------------------------------------------

ALL_ACCOUNTS = "*"
DEFAULT_QUERY_TIMEOUT = timedelta(seconds=60)
# Values a report query may refer to as :name.
QUERY_BINDS = ("slot", "schedule_id", "account_id")


@dataclass(frozen=True)
class ReportQuery:
    """One ``[reports.queries.NAME]`` table of the config file."""

    name: str
    sql: str
    database_url: str | None = None
    title: str | None = None
    timeout: timedelta = DEFAULT_QUERY_TIMEOUT
    # The accounts whose schedules may use it (SPEC §13); ("*",) is every account.
    # Without `accounts = [...]` in the config, only the default account's.
    accounts: tuple[str, ...] = (DEFAULT_ACCOUNT,)

    def allows(self, account: str) -> bool:
        return ALL_ACCOUNTS in self.accounts or account in self.accounts


def report_queries(value: Any, origin: str = "[reports] queries") -> dict[str, ReportQuery]:
    """The ``[reports.queries]`` table, checked (ConfigError naming the key if not)."""
    if not isinstance(value, dict):
        raise ConfigError(f"{origin}: must be a table of tables, [reports.queries.NAME]")
    return {name: _report_query(name, table, nested(origin, name)) for name, table in value.items()}


def _report_query(name: str, table: Any, origin: str) -> ReportQuery:
    if not isinstance(table, dict):
        raise ConfigError(f"{origin}: must be a table")
    if "sql" not in table:
        raise ConfigError(f'{origin}: needs sql = "SELECT ..."')
    values: dict[str, Any] = {}
    for key in ("database_url", "title"):
        if table.get(key) is not None and not isinstance(table[key], str):
            raise ConfigError(f"{nested(origin, key)}: must be a string")
        values[key] = table.get(key) or None
    if values["database_url"]:
        from schedctl.db.engine import url_setting  # sqlalchemy: only when one is given

        url_setting(values["database_url"], nested(origin, "database_url"))
    if "timeout" in table:  # (0 or "" is a bad value, not no value)
        values["timeout"] = query_timeout(table["timeout"], nested(origin, "timeout"))
    return ReportQuery(
        name,
        query_setting(table["sql"], nested(origin, "sql"), QUERY_BINDS),
        accounts=_query_accounts(table.get("accounts", [DEFAULT_ACCOUNT]), origin),
        **values,
    )


def _query_accounts(value: object, origin: str) -> tuple[str, ...]:
    if value == ALL_ACCOUNTS:
        return (ALL_ACCOUNTS,)
    names = value if isinstance(value, list) else None
    if not names or not all(isinstance(n, str) and n.strip() for n in names):
        raise ConfigError(
            f'{nested(origin, "accounts")}: must be "*" or a non-empty list of account names'
            ' (accounts = ["acme"])'
        )
    return tuple(n.strip() for n in names)


_SOURCE_KEYS = dict.fromkeys(("database_url", "query", "timeout"))
_DESTINATION_KEYS = {
    "database_url": None,
    "table": None,
    "columns": dict.fromkeys(dist.COLUMN_ROLES),
    "extra_columns": None,  # destination column = "source column", any names
}


def _account_problem(text: str) -> str | None:
    return None if text.strip() else "must name an account (its name or id)"


@dataclass(frozen=True)
class Settings:
    """Resolved configuration for one schedctl process; every field is a declared
    setting."""

    database_url: str = setting(DEFAULT_DATABASE_URL, flag="--database-url")
    # The account an --account option means when it is not given (None: `default`).
    account: str | None = setting(in_file=False, check=_account_problem)
    config_path: str | None = setting(env="SCHEDCTL_CONFIG", flag="--config", in_file=False)
    mail_backend: str = setting("console", choices=("smtp", "console", "file", "memory"))
    mail_from: str = setting("schedctl@localhost", check=one_address_problem)
    smtp_host: str | None = setting()
    smtp_port: int = setting(25, at_least=1, at_most=65535)
    smtp_user: str | None = setting()
    smtp_password: str | None = setting(secret=True)
    smtp_tls: str = setting("none", choices=("none", "starttls", "ssl"))
    # Seconds per SMTP socket operation; message leases are at least 4 of them.
    smtp_timeout: float = setting(30.0, above=0, at_most=3600, unit="seconds")
    # SMTP connections one dispatch sends over at once, each with its own database
    # connection; a crash may resend at most one accepted message per connection.
    smtp_connections: int = setting(4, at_least=1, at_most=32)
    # Sends per second over all of one process's connections (None: no limit).
    smtp_max_per_second: float | None = setting(above=0, hint="leave it unset for no limit")
    mail_file_dir: str = setting("outbox")
    # Normal sends per UTC day; unset (None) means no quota (SPEC §7: opt-in).
    daily_quota: int | None = setting(
        at_least=1, at_most=2**31 - 1, hint="leave it unset for no quota"
    )  # (the day's counters are 32-bit integer columns)
    slack_webhook_url: str | None = setting(secret=True, check=http_url_problem)
    unsubscribe_secret: str | None = setting(secret=True, min_length=MIN_SECRET_LENGTH)
    unsubscribe_base_url: str | None = setting(check=http_url_problem)
    ping_url: str | None = setting(secret=True, check=http_url_problem)
    # The status pages ([web] in the file, SPEC §12): the bearer token they need (a
    # secret; without one `serve` binds only loopback) and the one account they show.
    web_token: str | None = setting(secret=True, min_length=MIN_SECRET_LENGTH)
    web_account: str | None = setting()
    db_retry_seconds: float = setting(20.0, at_least=0, at_most=3600, unit="seconds")
    # None: judge every command that has run at least once.
    heartbeat_commands: tuple[str, ...] | None = setting(env=None, parse=_heartbeat_commands)
    heartbeat_thresholds: Mapping[str, HeartbeatThresholds] = setting(
        factory=lambda: dict(DEFAULT_THRESHOLDS),
        env=None,
        parse=_heartbeat_thresholds,
        each=dict.fromkeys(("yellow", "red")),
    )
    # Per-command healthchecks-style ping URLs ([heartbeat.ping_urls] in the file).
    ping_urls: Mapping[str, str] = setting(
        factory=dict, table="heartbeat", key="ping_urls", env=None, secret=True, parse=_ping_urls
    )
    # The outbox's delivery policy ([messages] in the file, SPEC §5, §7; README): a
    # global switch, the weekend rule and its zone, retries, the claim's lease and
    # batch, the wait after a provider's refusal, and per message type
    # ([messages.types.NAME]) its own switch and weekend rule; alert_to is the older
    # name of [alerts] mail_to.
    messages_enabled: bool = setting(True, env=None)
    messages_weekend: str = setting("send", env=None, choices=("send", "postpone"))
    messages_tz: str = setting("UTC", env=None, check=zone_problem)
    messages_max_attempts: int = setting(5, env=None, at_least=1)
    messages_retry_base: timedelta = setting(timedelta(minutes=1), env=None, parse=duration_setting)
    messages_retry_max: timedelta = setting(timedelta(hours=1), env=None, parse=duration_setting)
    messages_lease: timedelta = setting(timedelta(minutes=10), env=None, parse=duration_setting)
    messages_batch_size: int = setting(50, env=None, at_least=1)
    messages_provider_backoff: timedelta = setting(
        timedelta(minutes=15), env=None, parse=duration_setting
    )
    messages_alert_to: tuple[str, ...] = setting((), env=None, parse=addresses_setting)
    messages_types: Mapping[str, Mapping[str, Any]] = setting(
        factory=dict, env=None, parse=_message_types, each=dict.fromkeys(("enabled", "weekend"))
    )
    # Being told ([alerts] in the file, SPEC §12; schedctl.alerts): where each job's
    # one notification of what newly went wrong goes. The Slack URL defaults to
    # slack_webhook_url (SCHEDCTL_SLACK_WEBHOOK_URL), the addresses to [messages]
    # alert_to.
    alerts_slack_webhook_url: str | None = setting(secret=True, check=http_url_problem)
    alerts_webhook_url: str | None = setting(secret=True, check=http_url_problem)
    alerts_mail_to: tuple[str, ...] = setting((), env=None, parse=addresses_setting)
    # Lead times of the reminders planned before each event ([events], SPEC §7).
    events_reminders: tuple[str, ...] = setting(("1d", "2h"), env=None, parse=_reminders)
    # The sql report kind's named queries ([reports.queries.NAME], SPEC §4, §13).
    reports_queries: Mapping[str, ReportQuery] = setting(
        factory=dict,
        env=None,
        parse=report_queries,
        each=dict.fromkeys(("sql", "database_url", "title", "timeout", "accounts")),
    )
    # The daily digest ([digest] in the file, SPEC §5): notifications listed in one
    # mail (the rest are counted, "and N more"); how many past local days a digest
    # that never ran may still be sent (0: only today); how long tracking rows live;
    # how much of a notification's body a digest (or a critical notification's
    # message) shows at most, the rest cut with a visible marker.
    digest_max_items: int = setting(50, at_least=1, at_most=10000)
    digest_max_body_chars: int = setting(2000, at_least=1, at_most=1_000_000)
    digest_catch_up_days: int = setting(0, at_least=0, at_most=1)
    digest_retention: timedelta = setting(
        DEFAULT_DIGEST_RETENTION, parse=duration_between(timedelta(seconds=1), MAX_RETENTION)
    )
    # The daily distribution ([distribute] in the file, SPEC §6; schedctl.distribute.config
    # parses the structured values). The data sources are in the file only (SPEC §11).
    distribute_source: dist.Source | None = setting(
        env=None, parse=dist.parse_source, keys=_SOURCE_KEYS
    )
    distribute_campaigns: dist.Source | None = setting(
        env=None, parse=dist.parse_source, keys=_SOURCE_KEYS
    )
    distribute_control: dist.Destination | None = setting(
        env=None, parse=dist.parse_control, keys=_DESTINATION_KEYS
    )
    distribute_target: dist.Destination | None = setting(
        env=None, parse=dist.parse_target, keys=_DESTINATION_KEYS
    )
    distribute_mirror: dist.Destination | None = setting(
        env=None, parse=dist.parse_mirror, keys=_DESTINATION_KEYS
    )
    distribute_groups: tuple[str, ...] = setting(
        dist.DEFAULT_GROUPS, env=None, parse=dist.parse_groups
    )
    distribute_control_groups: tuple[str, ...] = setting(
        dist.DEFAULT_CONTROL_GROUPS, env=None, parse=dist.parse_groups
    )
    distribute_group_id_format: str = setting(
        dist.DEFAULT_GROUP_ID_FORMAT, check=dist.check_group_id_format
    )
    distribute_locale: str = setting("en", choices=("en", "ru"))
    distribute_tz: str = setting("UTC", check=zone_problem)  # the business date's zone
    distribute_salt: str | None = setting()  # part of the assignment hash's key
    distribute_notify: tuple[str, ...] = setting((), env=None, parse=_named_addresses)
    distribute_batch_size: int = setting(5000, at_least=1, at_most=100_000)
    # How long a completed day's stored plan is kept (reconcile purges it after).
    distribute_retention: timedelta = setting(
        timedelta(days=30), parse=duration_between(timedelta(days=1), timedelta(days=3660))
    )
    # A run's hold on the day; renewed as it copies, so it only runs out when the
    # process died (then a rerun resumes after at most this long).
    distribute_lease: timedelta = setting(
        timedelta(minutes=5), parse=duration_between(timedelta(seconds=1), timedelta(days=1))
    )
    # How long a run waits for another run holding the day before it exits 75.
    distribute_wait: timedelta = setting(
        timedelta(minutes=30), parse=duration_between(timedelta(seconds=1), timedelta(days=1))
    )
    # Nightly housekeeping ([reconcile] in the file, SPEC §8): how long heartbeats,
    # email_log rows, finished schedule runs and alerts are kept, and the rows one purge
    # transaction deletes at most. (Digest days and distribution plans carry their
    # own expiry, from [digest] retention and [distribute] retention.)
    reconcile_heartbeats_retention: timedelta = setting(
        DEFAULT_RECONCILE_RETENTION,
        parse=_retention(timedelta(days=1), "heartbeat judges a day's runs"),
    )
    reconcile_email_log_retention: timedelta = setting(
        DEFAULT_RECONCILE_RETENTION,
        parse=_retention(timedelta(days=2), "the usage snapshot counts yesterday's attempts"),
    )
    reconcile_runs_retention: timedelta = setting(
        DEFAULT_RECONCILE_RETENTION,
        parse=_retention(timedelta(days=1), "a run's history outlives its retries"),
    )
    reconcile_alerts_retention: timedelta = setting(
        DEFAULT_RECONCILE_RETENTION,
        parse=_retention(timedelta(days=2), "an alert is told within a day of being raised"),
    )
    reconcile_batch_size: int = setting(5000, at_least=1, at_most=100_000)

    def thresholds_for(self, command: str) -> HeartbeatThresholds:
        return self.heartbeat_thresholds.get(command, FALLBACK_THRESHOLDS)

    def database_urls(self) -> list[str]:
        """schedctl's own database URL and those of the distribution's endpoints."""
        endpoints = (
            self.distribute_source,
            self.distribute_campaigns,
            self.distribute_control,
            self.distribute_target,
            self.distribute_mirror,
        )
        return [self.database_url, *(e.database_url for e in endpoints if e is not None)]

    def secrets(self) -> list[str]:
        """The secret values in force, for redaction of any text we print."""
        from schedctl.db.engine import url_secrets

        values: list[Any] = [s for url in self.database_urls() for s in url_secrets(url)]
        for name in SECRET_KEYS:
            value = getattr(self, name)
            urls = value.values() if isinstance(value, Mapping) else [value]
            # A secret URL (a ping or webhook URL) is masked whole, its password too.
            values.extend(urls)
            values.extend(s for url in urls if isinstance(url, str) for s in secrets_in(url))
        return [v for v in values if isinstance(v, str)]

    def redact(self, text: str) -> str:
        """`text` with every secret masked (schedctl.redaction), these settings' too."""
        return redact(text, self.secrets())


def _declare() -> dict[str, Setting]:
    hints = typing.get_type_hints(Settings)
    schema = {}
    for f in fields(Settings):
        spec = f.metadata.get("setting")
        if spec is None:
            continue
        args = typing.get_args(hints[f.name])
        optional = NoneType in args
        kind = next(a for a in args if a is not NoneType) if optional else hints[f.name]
        table, _, key = f.name.partition("_")
        schema[f.name] = replace(
            spec,
            name=f.name,
            kind=kind,
            optional=optional,
            default=f.default_factory() if callable(f.default_factory) else f.default,
            table=spec.table or table,
            key=spec.key or key,
        )
    return schema


def _bound(value: float) -> str:
    """A range's bound as written: 2147483647, not 2.14748e+09; 0.5 as 0.5."""
    return str(int(value)) if float(value).is_integer() else f"{value:g}"


SCHEMA: Mapping[str, Setting] = _declare()
"""Every setting, by name."""

# Settings whose values are secrets: never printed, logged or shown in tracebacks.
SECRET_KEYS = frozenset(name for name, spec in SCHEMA.items() if spec.secret)


def _range(spec: Setting) -> str:
    if spec.kind is int and spec.at_least is not None and spec.at_most is not None:
        return f" from {_bound(spec.at_least)} to {_bound(spec.at_most)}"
    bounds = [
        f"{op} {_bound(bound)}"
        for op, bound in ((">=", spec.at_least), (">", spec.above), ("<=", spec.at_most))
        if bound is not None
    ]
    return f" {' and '.join(bounds)}" if bounds else ""


def _number(kind: type, raw: Any, *, text: bool) -> float | None:
    """`raw` as a number of `kind` (int: never a bool, a float or "25.9"), or None."""
    if text and isinstance(raw, str):
        try:
            return int(raw) if kind is int else float(raw)
        except ValueError:
            return None
    if isinstance(raw, bool) or not isinstance(raw, int | float):
        return None
    return raw if kind is float or type(raw) is int else None


def _check(spec: Setting, raw: Any, origin: str, *, text: bool) -> Any:
    """The value of `spec` given as `raw` (a string when `text`: flag or environment)."""

    def refuse(problem: str) -> ConfigError:
        got = "" if spec.secret else f", got {quoted(raw)}"
        return ConfigError(f"{origin}: {problem}{got}")

    if spec.parse is not None:
        return spec.parse(raw, origin)
    if spec.kind is bool:
        words = {"true": True, "1": True, "false": False, "0": False}
        if text and isinstance(raw, str) and raw.strip().lower() in words:
            return words[raw.strip().lower()]
        if not text and isinstance(raw, bool):
            return raw
        raise refuse("must be true or false")
    if spec.kind in (int, float):
        number = _number(spec.kind, raw, text=text)
        if spec.kind is int:
            wanted = f"must be a whole number{_range(spec)}"
        else:
            wanted = f"must be a finite number{f' of {spec.unit}' if spec.unit else ''}"
            wanted += _range(spec)
        if spec.hint:
            wanted += f" ({spec.hint})"
        if number is None or not math.isfinite(number):
            raise refuse(wanted)
        if (
            (spec.at_least is not None and number < spec.at_least)
            or (spec.above is not None and number <= spec.above)
            or (spec.at_most is not None and number > spec.at_most)
        ):
            raise refuse(wanted)
        return spec.kind(number)
    if not isinstance(raw, str):
        raise refuse("must be a string")
    if raw == "":
        if spec.optional:
            return None
        raise refuse("must not be empty")
    if spec.choices and raw not in spec.choices:
        raise refuse(f"must be one of {'|'.join(spec.choices)}")
    if len(raw) < spec.min_length:
        raise ConfigError(f"{origin}: must be at least {spec.min_length} characters long")
    problem = spec.check(raw) if spec.check else None
    if problem:
        raise ConfigError(f"{origin}: {problem}")
    return raw


def _read_file(path: str) -> dict[str, Any]:
    try:
        with Path(path).open("rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: invalid TOML: {exc}") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: invalid TOML: not UTF-8 (at byte {exc.start})") from None
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from None


def _file_values(data: Mapping[str, Any], path: str) -> dict[str, tuple[Any, str]]:
    """The declared settings in a parsed file, as (value, origin)."""
    in_file = [spec for spec in SCHEMA.values() if spec.in_file]
    top = {spec.name: spec for spec in in_file}
    tables: dict[str, dict[str, Setting]] = {}
    for spec in in_file:
        tables.setdefault(str(spec.table), {})[str(spec.key)] = spec
    found: dict[str, tuple[Any, str]] = {}

    def put(spec: Setting, value: Any, origin: str) -> None:
        if spec.name in found:
            raise ConfigError(f"{origin}: {spec.name} is set twice (also {found[spec.name][1]})")
        _known_keys(value, spec.keys, spec.each, path, f"{spec.table}.{spec.key}")
        found[spec.name] = (value, origin)

    for key, value in data.items():
        if key in tables:
            if not isinstance(value, dict):
                raise ConfigError(f"{path}: {key} must be a table, [{key}]")
            for sub, subvalue in value.items():
                if sub not in tables[key]:
                    raise _unknown(path, key, sub, tables[key])
                put(tables[key][sub], subvalue, f"{path}: [{key}] {sub}")
        elif key in top:
            put(top[key], value, f"{path}: {key}")
        else:
            known = set(top) | set(tables)
            what = f"table [{key}]" if isinstance(value, dict) else f"setting {key!r}"
            raise ConfigError(f"{path}: unknown {what}{did_you_mean(key, known)}")
    return found


def _known_keys(
    value: Any,
    keys: Mapping[str, Any] | None,
    each: Mapping[str, Any] | None,
    path: str,
    table: str,
) -> None:
    """Refuse a key that `keys` (or `each`, for every table in `value`) does not declare,
    however deep; what is not a table is left to the setting's parser to refuse."""
    if not isinstance(value, dict):
        return
    for key, sub in value.items():
        if each is not None:
            _known_keys(sub, each, None, path, f"{table}.{key}")
        elif keys is not None and key not in keys:
            raise _unknown(path, table, key, keys)
        elif keys is not None and keys[key] is not None:
            _known_keys(sub, keys[key], None, path, f"{table}.{key}")


def _unknown(path: str, table: str, key: object, known: Iterable[str]) -> ConfigError:
    """The one message for a key no table declares, naming the closest one declared."""
    return ConfigError(f"{path}: unknown setting [{table}] {key}{did_you_mean(key, known)}")


def _resolve(
    spec: Setting,
    flags: Mapping[str, Any],
    environ: Mapping[str, str],
    file_values: Mapping[str, tuple[Any, str]],
) -> tuple[Any, str] | None:
    """The value of one setting and where it came from, or None for its default."""
    if spec.name in flags:
        raw = flags[spec.name]
        origin = spec.flag or f"--{spec.name.replace('_', '-')}"
        return _check(spec, raw, origin, text=isinstance(raw, str)), origin
    env_name = spec.env_name
    if env_name and environ.get(env_name, "") != "":
        return _check(spec, environ[env_name], env_name, text=True), env_name
    if spec.name in file_values:
        raw, origin = file_values[spec.name]
        return _check(spec, raw, origin, text=False), origin
    return None


def _check_mail(settings: Settings, origins: Mapping[str, str]) -> None:
    """The rules that span settings: the whole mail configuration must be usable, so a
    mistake stops every command at start-up instead of failing messages one by one."""

    def where(name: str) -> str:
        return origins.get(name, f"{name} (default)")

    if settings.mail_backend == "smtp" and not settings.smtp_host:
        raise ConfigError(
            f"{where('mail_backend')}: the smtp mail backend needs smtp_host"
            f" ({SCHEMA['smtp_host'].places()})"
        )
    if bool(settings.smtp_user) != bool(settings.smtp_password):
        given, missing = ("smtp_user", "smtp_password")
        if not settings.smtp_user:
            given, missing = missing, given
        raise ConfigError(
            f"{where(given)}: {given} is set but {missing} is not"
            f" ({SCHEMA[missing].places()}): set both or neither"
        )
    if settings.unsubscribe_base_url and not settings.unsubscribe_secret:
        raise ConfigError(
            f"{where('unsubscribe_base_url')}: unsubscribe links need unsubscribe_secret"
            f" ({SCHEMA['unsubscribe_secret'].places()})"
        )


def load_settings(
    flags: Mapping[str, Any] | None = None, environ: Mapping[str, str] | None = None
) -> Settings:
    """Resolve and check every setting from flags, the environment and the config file.

    Raises ConfigError (exit 2) for the first value that breaks its declaration.
    """
    flags = {k: v for k, v in (flags or {}).items() if v is not None}
    environ = os.environ if environ is None else environ

    values: dict[str, Any] = {}
    origins: dict[str, str] = {}
    config = _resolve(SCHEMA["config_path"], flags, environ, {})
    file_values: dict[str, tuple[Any, str]] = {}
    if config is not None:
        if config[0] is None:  # `--config ''`: an empty variable is unset, a flag is a mistake
            raise ConfigError(f"{config[1]}: must name a TOML file, got ''")
        values["config_path"], origins["config_path"] = config
        file_values = _file_values(_read_file(config[0]), config[0])

    for name, spec in SCHEMA.items():
        if name == "config_path":
            continue
        resolved = _resolve(spec, flags, environ, file_values)
        if resolved is not None:
            values[name], origins[name] = resolved
        if name in file_values and origins.get(name) != file_values[name][1]:
            # A flag or variable wins, but a bad value in the file is still a mistake:
            # it is refused now, not on the day the override goes away.
            _check(spec, *file_values[name], text=False)
    settings = Settings(**values)
    remember(*settings.secrets())
    _check_mail(settings, origins)
    _check_messages(settings, origins)
    _check_distribute(settings, origins)
    return settings


def min_lease(
    smtp_timeout: float, connections: int = 1, max_per_second: float | None = None
) -> timedelta:
    """The shortest message lease allowed: max(1 minute, 4 * ``smtp_timeout`` seconds
    + twice the longest wait for a send's turn, ``connections / max_per_second``)."""
    turn = connections / max_per_second if max_per_second else 0.0
    seconds = LEASE_SMTP_TIMEOUTS * smtp_timeout + LEASE_TURNS * turn
    return max(MIN_LEASE, timedelta(seconds=math.ceil(seconds)))


def _check_messages(settings: Settings, origins: Mapping[str, str]) -> None:
    """The rules between the ``[messages]`` keys, and the lease's floor (SPEC §5)."""
    base, most = settings.messages_retry_base, settings.messages_retry_max
    if most < base:
        where = origins.get("messages_retry_max") or origins["messages_retry_base"]
        raise ConfigError(
            f"{where}: retry_max ({format_duration(most)}) must not be shorter than"
            f" retry_base ({format_duration(base)})"
        )
    rate, connections = settings.smtp_max_per_second, settings.smtp_connections
    lease = settings.messages_lease
    floor = min_lease(settings.smtp_timeout, connections, rate)
    if lease < floor:
        given = origins.get("messages_lease")
        what = format_duration(lease) if given else f"the default lease, {format_duration(lease)},"
        paced = (
            f" + {LEASE_TURNS} x connections / max_per_second ({connections} / {rate:g})"
            if rate
            else ""
        )
        culprit = origins.get("smtp_max_per_second") if rate else None
        raise ConfigError(
            f"{given or culprit or origins['smtp_timeout']}: {what} is too short: it must be"
            f" at least {format_duration(floor)}, the larger of 1m and"
            f" {LEASE_SMTP_TIMEOUTS} x smtp_timeout ({settings.smtp_timeout:g}s){paced}; a"
            " shorter lease can expire while a message is being sent, and another tick"
            " would send it again"
        )


def _check_distribute(settings: Settings, origins: Mapping[str, str]) -> None:
    """The rules between the ``[distribute]`` keys."""
    where = origins.get("distribute_control_groups") or origins.get(
        "distribute_groups", "[distribute] groups (default)"
    )
    dist.check_groups(settings.distribute_groups, settings.distribute_control_groups, where)


def describe(settings: Settings) -> dict[str, Any]:
    """The scalar settings as printable values, secrets masked."""
    from schedctl.db.engine import mask_url

    shown: dict[str, Any] = {}
    for name, spec in SCHEMA.items():
        if spec.parse is not None or not spec.in_file:
            continue
        value = getattr(settings, name)
        if name == "database_url":
            value = mask_url(value)
        elif spec.secret and value:
            value = "***"
        shown[name] = value
    return shown
