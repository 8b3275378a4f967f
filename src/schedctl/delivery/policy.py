"""Delivery policy: the ``[messages]`` table of the config file, and its pure rules.

```toml
[messages]
enabled = true           # false: `tick` dispatches nothing (send-now still works)
weekend = "send"         # default weekend rule for every type: "send" | "postpone"
tz = "UTC"               # weekend zone for messages with no event or schedule zone
max_attempts = 5         # a message that keeps getting 4xx replies fails after this
retry_base = "1m"        # first retry delay; doubled per attempt ...
retry_max = "1h"         # ... up to this
lease = "10m"            # how long a dispatcher owns the messages it claimed;
                         # at least max(1m, 4 * smtp_timeout)
batch_size = 50          # messages claimed per short claim transaction
provider_backoff = "15m" # wait after the provider refuses us for its own quota
alert_to = ["ops@example.com"]  # also e-mail the daily-quota alerts here

[messages.types.INIT]    # per type (REPORT, DIGEST, ALERT, INIT, REMINDER_1D, ...)
enabled = false          # held: due messages of this type stay scheduled, untouched
weekend = "postpone"     # a Saturday/Sunday send moves to Monday, same local time
```

The weekend zone is the message's event zone, else its schedule's zone, else
``tz``. Nothing here touches the network or the database.

A lease is renewed only between two messages, and one SMTP send can take several
``smtp_timeout`` periods (connect, greeting, each command, the data, the reply), so
a lease shorter than :func:`min_lease` could expire mid-send and let another tick
take the message and send it again; such a lease is a configuration error.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal
from zoneinfo import ZoneInfo

from schedctl.cadence import first_instant_at_or_after, format_duration, parse_timezone
from schedctl.config import duration_setting
from schedctl.delivery.message import validate_email
from schedctl.errors import ConfigError, ValidationError

__all__ = [
    "DeliveryPolicy",
    "TypeRule",
    "min_lease",
    "normalise_type",
    "retry_delay",
    "weekend_postponement",
]

WeekendRule = Literal["send", "postpone"]
_WEEKEND_RULES = ("send", "postpone")
_TYPE = re.compile(r"[A-Z][A-Z0-9_]{0,63}")
_TOP_KEYS = frozenset(
    {
        "enabled",
        "weekend",
        "tz",
        "max_attempts",
        "retry_base",
        "retry_max",
        "lease",
        "batch_size",
        "provider_backoff",
        "alert_to",
        "types",
    }
)
_TYPE_KEYS = frozenset({"enabled", "weekend"})
MIN_LEASE = timedelta(minutes=1)
LEASE_SMTP_TIMEOUTS = 4  # SMTP timeouts one send may take before its lease is renewed


def min_lease(smtp_timeout: float | None = None) -> timedelta:
    """The shortest message lease allowed: max(1 minute, 4 * ``smtp_timeout`` seconds)."""
    if smtp_timeout is None or not smtp_timeout > 0:
        return MIN_LEASE
    return max(MIN_LEASE, timedelta(seconds=math.ceil(LEASE_SMTP_TIMEOUTS * smtp_timeout)))


def normalise_type(value: str) -> str:
    """A message type in upper case (``report`` → ``REPORT``), or ValidationError."""
    candidate = value.strip().upper()
    if not _TYPE.fullmatch(candidate):
        raise ValidationError(
            f"invalid message type {value!r} (letters, digits and _, e.g. REPORT or REMINDER_1D)"
        )
    return candidate


@dataclass(frozen=True)
class TypeRule:
    enabled: bool = True
    weekend: WeekendRule = "send"


@dataclass(frozen=True)
class DeliveryPolicy:
    """How dispatch treats the outbox; built from ``[messages]`` by :meth:`from_table`."""

    enabled: bool = True
    weekend: WeekendRule = "send"
    tz: str = "UTC"
    max_attempts: int = 5
    retry_base: timedelta = timedelta(minutes=1)
    retry_max: timedelta = timedelta(hours=1)
    lease: timedelta = timedelta(minutes=10)
    batch_size: int = 50
    provider_backoff: timedelta = timedelta(minutes=15)
    alert_to: tuple[str, ...] = ()
    types: Mapping[str, TypeRule] = field(default_factory=dict)

    def rule(self, message_type: str) -> TypeRule:
        return self.types.get(message_type, TypeRule(weekend=self.weekend))

    @property
    def disabled_types(self) -> list[str]:
        return sorted(name for name, rule in self.types.items() if not rule.enabled)

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.tz)

    @classmethod
    def from_table(
        cls, table: Any, origin: str = "[messages]", *, smtp_timeout: float | None = None
    ) -> DeliveryPolicy:
        """Parse the raw ``[messages]`` table; ConfigError (exit 2) for bad values.

        ``lease`` must be at least :func:`min_lease` of ``smtp_timeout`` (one minute
        when no timeout is given); this also applies to the default lease.
        """
        if table is None:
            return cls()._check_lease(origin, smtp_timeout)
        if not isinstance(table, Mapping):
            raise ConfigError(f"{origin} must be a table")
        unknown = sorted(set(table) - _TOP_KEYS)
        if unknown:
            raise ConfigError(f"{origin}: unknown setting {unknown[0]!r}")
        values: dict[str, Any] = {}
        if "enabled" in table:
            values["enabled"] = _bool(table["enabled"], f"{origin} enabled")
        default_weekend = _weekend(table.get("weekend", "send"), f"{origin} weekend")
        values["weekend"] = default_weekend
        if "tz" in table:
            values["tz"] = _zone(table["tz"], f"{origin} tz")
        if "max_attempts" in table:
            values["max_attempts"] = _positive_int(table["max_attempts"], f"{origin} max_attempts")
        if "batch_size" in table:
            values["batch_size"] = _positive_int(table["batch_size"], f"{origin} batch_size")
        for key in ("retry_base", "retry_max", "lease", "provider_backoff"):
            if key in table:
                values[key] = duration_setting(table[key], f"{origin} {key}")
        if "alert_to" in table:
            values["alert_to"] = _addresses(table["alert_to"], f"{origin} alert_to")
        types = table.get("types", {})
        if not isinstance(types, Mapping):
            raise ConfigError(f"{origin}: types must be a table of [messages.types.NAME]")
        rules: dict[str, TypeRule] = {}
        for raw_name, spec in types.items():
            where = f"{origin} types.{raw_name}"
            try:
                name = normalise_type(str(raw_name))
            except ValidationError as exc:
                raise ConfigError(f"{where}: {exc.message}") from None
            if not isinstance(spec, Mapping):
                raise ConfigError(f"{where} must be a table")
            bad = sorted(set(spec) - _TYPE_KEYS)
            if bad:
                raise ConfigError(f"{where}: unknown setting {bad[0]!r}")
            rules[name] = TypeRule(
                enabled=_bool(spec.get("enabled", True), f"{where} enabled"),
                weekend=_weekend(spec.get("weekend", default_weekend), f"{where} weekend"),
            )
        values["types"] = rules
        policy = cls(**values)
        if policy.retry_max < policy.retry_base:
            raise ConfigError(f"{origin}: retry_max must not be shorter than retry_base")
        return policy._check_lease(origin, smtp_timeout)

    def _check_lease(self, origin: str, smtp_timeout: float | None) -> DeliveryPolicy:
        floor = min_lease(smtp_timeout)
        if self.lease < floor:
            rule = ""
            if smtp_timeout is not None:
                times = f"{LEASE_SMTP_TIMEOUTS} x smtp_timeout ({smtp_timeout:g}s)"
                rule = f", the larger of 1m and {times}"
            raise ConfigError(
                f"{origin} lease = {format_duration(self.lease)} is too short: it must be"
                f" at least {format_duration(floor)}{rule}; a shorter lease can expire"
                " while a message is being sent, and another tick would send it again"
            )
        return self


def retry_delay(attempts: int, base: timedelta, cap: timedelta) -> timedelta:
    """Exponential backoff after the ``attempts``-th failed attempt: base·2^(n-1), capped.

    The same computation as tenacity's ``wait_exponential(multiplier=base, max=cap)``;
    no jitter, since cron's interval already spreads retries and tests stay exact.
    """
    exponent = min(max(attempts, 1) - 1, 32)
    return min(base * (1 << exponent), cap)


def weekend_postponement(due: datetime, zone: ZoneInfo) -> datetime | None:
    """Monday at the same local time when ``due`` falls on a Saturday or Sunday there.

    None when ``due`` is a weekday. A Monday wall time that does not exist (a DST gap)
    becomes the first instant after the gap, as for schedules.
    """
    local = due.astimezone(zone)
    if local.weekday() < 5:
        return None
    monday = local.replace(tzinfo=None, fold=0) + timedelta(days=7 - local.weekday())
    return first_instant_at_or_after(monday, zone).astimezone(UTC)


def _bool(value: Any, where: str) -> bool:
    if not isinstance(value, bool):
        raise ConfigError(f"{where} must be true or false")
    return value


def _weekend(value: Any, where: str) -> WeekendRule:
    if value not in _WEEKEND_RULES:
        raise ConfigError(f'{where} must be "send" or "postpone", not {value!r}')
    return "postpone" if value == "postpone" else "send"


def _zone(value: Any, where: str) -> str:
    try:
        parse_timezone(str(value))
    except ValidationError as exc:
        raise ConfigError(f"{where}: {exc.message}") from None
    return str(value)


def _positive_int(value: Any, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"{where} must be a positive integer")
    return value


def _addresses(value: Any, where: str) -> tuple[str, ...]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list):
        raise ConfigError(f"{where} must be a list of e-mail addresses")
    try:
        return tuple(validate_email(str(v)) for v in value)
    except ValidationError as exc:
        raise ConfigError(f"{where}: {exc.message}") from None
