"""Delivery policy: the ``[messages]`` settings as dispatch applies them, and its pure
rules (backoff, the weekend rule). Nothing here touches the network or the database.

The keys and their checks are declared in `schedctl.config` (README, Configuration):

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
alert_to = ["ops@example.com"]  # older name of [alerts] mail_to (schedctl.alerts)

[messages.types.INIT]    # per type (REPORT, DIGEST, ALERT, INIT, REMINDER_1D, ...)
enabled = false          # held: due messages of this type stay scheduled, untouched
weekend = "postpone"     # a Saturday/Sunday send moves to Monday, same local time
```

The weekend zone is the message's event zone, else its schedule's zone, else ``tz``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Literal
from zoneinfo import ZoneInfo

from schedctl.cadence import first_instant_at_or_after
from schedctl.config import Settings

__all__ = [
    "DeliveryPolicy",
    "TypeRule",
    "retry_delay",
    "weekend_postponement",
]

WeekendRule = Literal["send", "postpone"]


@dataclass(frozen=True)
class TypeRule:
    enabled: bool = True
    weekend: WeekendRule = "send"


@dataclass(frozen=True)
class DeliveryPolicy:
    """How dispatch treats the outbox: the ``[messages]`` settings (`from_settings`)."""

    enabled: bool
    weekend: WeekendRule
    tz: str
    max_attempts: int
    retry_base: timedelta
    retry_max: timedelta
    lease: timedelta
    batch_size: int
    provider_backoff: timedelta
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
    def from_settings(cls, settings: Settings) -> DeliveryPolicy:
        """The policy of checked settings (load_settings refused any bad value)."""
        weekend = _weekend(settings.messages_weekend)
        return cls(
            enabled=settings.messages_enabled,
            weekend=weekend,
            tz=settings.messages_tz,
            max_attempts=settings.messages_max_attempts,
            retry_base=settings.messages_retry_base,
            retry_max=settings.messages_retry_max,
            lease=settings.messages_lease,
            batch_size=settings.messages_batch_size,
            provider_backoff=settings.messages_provider_backoff,
            types={
                name: TypeRule(
                    enabled=bool(rule.get("enabled", True)),
                    weekend=_weekend(rule.get("weekend", weekend)),
                )
                for name, rule in settings.messages_types.items()
            },
        )


def _weekend(value: object) -> WeekendRule:
    return "postpone" if value == "postpone" else "send"


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
