"""Settings: command-line flags > SCHEDCTL_* environment > TOML file > defaults.

The TOML file uses the environment names in lower case without the prefix, either at
the top level (``mail_backend = "smtp"``) or grouped in a table named after the first
word (``[mail] backend = "smtp"``, ``[smtp] host = "..."``). Data sources for
``distribute`` and report queries live in the file only and are kept as raw tables.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from datetime import timedelta
from pathlib import Path
from typing import Any

from schedctl.errors import ConfigError, ValidationError

DEFAULT_DATABASE_URL = "sqlite:///schedctl.db"
ENV_PREFIX = "SCHEDCTL_"

# Settings whose values are secrets: never printed, logged or shown in tracebacks.
SECRET_KEYS = frozenset({"smtp_password", "slack_webhook_url", "unsubscribe_secret", "ping_url"})


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
class Settings:
    """Resolved configuration for one schedctl process."""

    database_url: str = DEFAULT_DATABASE_URL
    config_path: str | None = None
    mail_backend: str = "console"
    mail_from: str = "schedctl@localhost"
    smtp_host: str | None = None
    smtp_port: int = 25
    smtp_user: str | None = None
    smtp_password: str | None = None
    smtp_tls: str = "none"
    smtp_timeout: float = 30.0  # seconds per SMTP socket operation
    mail_file_dir: str = "outbox"
    daily_quota: int = 200
    slack_webhook_url: str | None = None
    unsubscribe_secret: str | None = None
    unsubscribe_base_url: str | None = None
    ping_url: str | None = None
    db_retry_seconds: float = 20.0
    heartbeat_commands: tuple[str, ...] = ("tick", "digest", "distribute", "reconcile")
    heartbeat_thresholds: Mapping[str, HeartbeatThresholds] = field(
        default_factory=lambda: dict(DEFAULT_THRESHOLDS)
    )
    # Per-command healthchecks-style ping URLs ([heartbeat.ping_urls] in the file).
    ping_urls: Mapping[str, str] = field(default_factory=dict)
    # Raw tables from the TOML file that belong to one feature (distribute, reports).
    file_tables: Mapping[str, Any] = field(default_factory=dict)

    def thresholds_for(self, command: str) -> HeartbeatThresholds:
        return self.heartbeat_thresholds.get(command, FALLBACK_THRESHOLDS)

    def secrets(self) -> list[str]:
        """The secret values in force, for redaction of any text we print."""
        values = [getattr(self, key) for key in SECRET_KEYS]
        values.extend(self.ping_urls.values())
        values.append(_url_password(self.database_url))
        return [v for v in values if isinstance(v, str) and len(v) >= 4]

    def redact(self, text: str) -> str:
        for secret in sorted(self.secrets(), key=len, reverse=True):
            text = text.replace(secret, "***")
        return text


_SCALAR_KEYS = {
    f.name: f.type
    for f in fields(Settings)
    if f.name
    not in {"config_path", "heartbeat_commands", "heartbeat_thresholds", "ping_urls", "file_tables"}
}
_INT_KEYS = {"smtp_port", "daily_quota"}
_FLOAT_KEYS = {"db_retry_seconds", "smtp_timeout"}
_CHOICES = {
    "mail_backend": {"smtp", "console", "file", "memory"},
    "smtp_tls": {"none", "starttls", "ssl"},
}
# Tables in the file that are passed through untouched to the feature that reads them.
_PASSTHROUGH_TABLES = {"distribute", "reports", "events", "messages", "digest", "accounts"}


def _url_password(url: str) -> str | None:
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        password = make_url(url).password
        return None if password is None else str(password)
    except (ArgumentError, ValueError):
        return None


def _flatten_file(data: Mapping[str, Any], path: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """Split a parsed TOML document into scalar settings and passthrough tables."""
    flat: dict[str, Any] = {}
    tables: dict[str, Any] = {}
    for key, value in data.items():
        if key in _PASSTHROUGH_TABLES or key == "heartbeat":
            tables[key] = value
        elif isinstance(value, dict):
            for sub, subvalue in value.items():
                name = sub if sub in _SCALAR_KEYS else f"{key}_{sub}"
                if name not in _SCALAR_KEYS:
                    raise ConfigError(f"{path}: unknown setting [{key}] {sub}")
                flat[name] = subvalue
        elif key in _SCALAR_KEYS:
            flat[key] = value
        else:
            raise ConfigError(f"{path}: unknown setting {key!r}")
    return flat, tables


def _coerce(name: str, value: Any, origin: str) -> Any:
    if name in _INT_KEYS:
        try:
            number = int(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{origin}: {name} must be an integer, got {value!r}") from None
        if number < 0:
            raise ConfigError(f"{origin}: {name} must not be negative")
        return number
    if name in _FLOAT_KEYS:
        try:
            return float(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{origin}: {name} must be a number, got {value!r}") from None
    if not isinstance(value, str):
        raise ConfigError(f"{origin}: {name} must be a string")
    if name in _CHOICES and value not in _CHOICES[name]:
        allowed = "|".join(sorted(_CHOICES[name]))
        raise ConfigError(f"{origin}: {name} must be one of {allowed}, got {value!r}")
    return value


def _read_file(path: str) -> dict[str, Any]:
    try:
        with Path(path).open("rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: invalid TOML: {exc}") from None
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from None


def duration_setting(value: Any, origin: str) -> timedelta:
    """A duration from the config file ("90s", "15m", "6h", "2d"), or ConfigError."""
    from schedctl.cadence import parse_duration

    if not isinstance(value, str):
        raise ConfigError(f"{origin}: expected a duration like '15m', got {value!r}")
    try:
        return parse_duration(value)
    except ValidationError as exc:
        raise ConfigError(f"{origin}: {exc.message}") from None


def _heartbeat_settings(
    table: Any, path: str
) -> tuple[tuple[str, ...] | None, dict[str, HeartbeatThresholds], dict[str, str]]:
    if not isinstance(table, dict):
        raise ConfigError(f"{path}: [heartbeat] must be a table")
    commands = table.get("commands")
    if commands is not None and (
        not isinstance(commands, list) or not all(isinstance(c, str) for c in commands)
    ):
        raise ConfigError(f"{path}: heartbeat.commands must be a list of command names")
    thresholds = dict(DEFAULT_THRESHOLDS)
    for command, spec in (table.get("thresholds") or {}).items():
        origin = f"{path}: heartbeat.thresholds.{command}"
        if not isinstance(spec, dict) or not {"yellow", "red"} <= spec.keys():
            raise ConfigError(f"{origin} needs 'yellow' and 'red' durations")
        yellow = duration_setting(spec["yellow"], origin)
        red = duration_setting(spec["red"], origin)
        if red < yellow:
            raise ConfigError(f"{origin}: red must not be shorter than yellow")
        thresholds[command] = HeartbeatThresholds(yellow, red)
    ping_urls = table.get("ping_urls") or {}
    if not isinstance(ping_urls, dict) or not all(isinstance(v, str) for v in ping_urls.values()):
        raise ConfigError(f"{path}: heartbeat.ping_urls must map command names to URLs")
    return (tuple(commands) if commands is not None else None), thresholds, ping_urls


def load_settings(
    flags: Mapping[str, Any] | None = None, environ: Mapping[str, str] | None = None
) -> Settings:
    """Resolve settings from flags, the environment and the config file."""
    flags = {k: v for k, v in (flags or {}).items() if v is not None}
    environ = os.environ if environ is None else environ

    config_path = flags.get("config_path") or environ.get(f"{ENV_PREFIX}CONFIG")
    file_values: dict[str, Any] = {}
    tables: dict[str, Any] = {}
    if config_path:
        file_values, tables = _flatten_file(_read_file(config_path), config_path)

    values: dict[str, Any] = {}
    for name in _SCALAR_KEYS:
        env_value = environ.get(f"{ENV_PREFIX}{name.upper()}")
        if name in flags:
            values[name] = _coerce(name, flags[name], f"--{name.replace('_', '-')}")
        elif env_value not in (None, ""):
            values[name] = _coerce(name, env_value, f"{ENV_PREFIX}{name.upper()}")
        elif name in file_values:
            values[name] = _coerce(name, file_values[name], str(config_path))

    heartbeat = tables.pop("heartbeat", None)
    if heartbeat is not None:
        commands, thresholds, ping_urls = _heartbeat_settings(heartbeat, str(config_path))
        if commands is not None:
            values["heartbeat_commands"] = commands
        values["heartbeat_thresholds"] = thresholds
        values["ping_urls"] = ping_urls
    return Settings(config_path=config_path, file_tables=tables, **values)


def describe(settings: Settings) -> dict[str, Any]:
    """The settings as printable values, secrets masked."""
    from schedctl.db.engine import mask_url

    shown: dict[str, Any] = {}
    for name in _SCALAR_KEYS:
        value = getattr(settings, name)
        if name == "database_url":
            value = mask_url(value)
        elif name in SECRET_KEYS and value:
            value = "***"
        shown[name] = value
    return shown
