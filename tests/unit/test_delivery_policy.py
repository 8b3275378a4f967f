"""Pure delivery rules: [messages] settings, backoff, the weekend rule, reminders, quota."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from schedctl.config import Settings
from schedctl.delivery.policy import DeliveryPolicy, TypeRule, retry_delay, weekend_postponement
from schedctl.delivery.quota import next_day_start, quota_day, thresholds_reached
from schedctl.errors import ConfigError, ValidationError
from schedctl.events import reminders_for
from schedctl.values import normalise_type
from support.delivery import load_with

BERLIN = ZoneInfo("Europe/Berlin")


def policy(table: dict[str, object] | None = None, **flags: object) -> DeliveryPolicy:
    """The delivery policy of a config file whose ``[messages]`` is ``table``."""
    return DeliveryPolicy.from_settings(load_with({"messages": table or {}}, **flags))


def test_defaults() -> None:
    default = policy()
    assert default.enabled
    assert default.max_attempts == 5
    assert default.rule("REPORT") == TypeRule(enabled=True, weekend="send")
    assert default.disabled_types == []
    assert DeliveryPolicy.from_settings(Settings()) == default


def test_parses_global_and_per_type_settings() -> None:
    parsed = policy(
        {
            "enabled": True,
            "weekend": "postpone",
            "max_attempts": 3,
            "retry_base": "30s",
            "retry_max": "10m",
            "alert_to": ["Ops@Example.com"],
            "types": {"init": {"enabled": False}, "REPORT": {"weekend": "send"}},
        }
    )
    assert parsed.rule("INIT") == TypeRule(enabled=False, weekend="postpone")
    assert parsed.rule("REPORT").weekend == "send"
    assert parsed.rule("DIGEST").weekend == "postpone"  # the table's default
    assert parsed.disabled_types == ["INIT"]
    assert parsed.retry_base == timedelta(seconds=30)


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ({"enable": True}, r"unknown setting \[messages\] enable \(did you mean 'enabled'\?\)"),
        ({"enabled": "yes"}, r"\[messages\] enabled: must be true or false"),
        ({"weekend": "skip"}, r"\[messages\] weekend: must be one of send\|postpone"),
        ({"tz": "Mars/Olympus"}, r"\[messages\] tz: invalid time zone"),
        ({"max_attempts": 0}, r"\[messages\] max_attempts: must be a whole number >= 1"),
        ({"retry_base": "soon"}, r"\[messages\] retry_base: invalid duration"),
        ({"retry_base": "1h", "retry_max": "1m"}, r"\[messages\] retry_max: .* must not be"),
        ({"alert_to": ["not an address"]}, r"\[messages\] alert_to: invalid e-mail address"),
        ({"types": {"INIT": {"enabled": False, "colour": "red"}}},
         r"unknown setting \[messages.types.INIT\] colour"),
        ({"types": {"INIT": {"weekend": "skip"}}}, r"\[messages.types.INIT\] weekend: must be"),
        ({"types": {"bad type": {}}}, r"\[messages.types\] bad type: invalid message type"),
        ({"types": ["INIT"]}, r"\[messages\] types: must be a table"),
    ],
)  # fmt: skip
def test_invalid_tables_are_configuration_errors(table: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        policy(table)


@pytest.mark.parametrize("lease", ["1s", "59s"])
def test_a_lease_shorter_than_a_minute_is_refused(lease: str) -> None:
    with pytest.raises(ConfigError, match=r"\[messages\] lease"):
        policy({"lease": lease}, smtp_timeout=1)


def test_the_lease_must_cover_four_smtp_timeouts() -> None:
    assert policy({"lease": "1m"}, smtp_timeout=15).lease == timedelta(minutes=1)
    assert policy({"lease": "4m"}, smtp_timeout=60).lease == timedelta(minutes=4)
    with pytest.raises(ConfigError, match=r"at least 4m"):
        policy({"lease": "3m"}, smtp_timeout=60)
    with pytest.raises(ConfigError, match="the default lease, 10m, is too short"):
        # The default lease (10m) is too short for a 5-minute SMTP timeout.
        policy(None, smtp_timeout=300)


def test_every_command_refuses_a_lease_too_short_for_the_smtp_timeout() -> None:
    assert policy({"lease": "90s"}, smtp_timeout=20).lease == timedelta(seconds=90)
    with pytest.raises(ConfigError, match="smtp_timeout"):
        policy({"lease": "90s"}, smtp_timeout=30)


def test_message_types_are_normalised_or_refused() -> None:
    assert normalise_type(" reminder_1d ") == "REMINDER_1D"
    with pytest.raises(ValidationError):
        normalise_type("1ST")
    with pytest.raises(ValidationError):
        normalise_type("NO SPACES")


def test_backoff_doubles_up_to_the_cap() -> None:
    base, cap = timedelta(minutes=1), timedelta(minutes=10)
    delays = [retry_delay(n, base, cap) for n in range(1, 7)]
    assert delays == [timedelta(minutes=m) for m in (1, 2, 4, 8, 10, 10)]
    assert retry_delay(1000, base, cap) == cap


@pytest.mark.parametrize(
    ("local", "monday"),
    [
        (datetime(2026, 11, 21, 10, 30), datetime(2026, 11, 23, 10, 30)),  # Saturday
        (datetime(2026, 11, 22, 23, 59), datetime(2026, 11, 23, 23, 59)),  # Sunday
        # The Sunday of the October DST change: Monday keeps the wall time, not the offset.
        (datetime(2026, 10, 25, 9, 0), datetime(2026, 10, 26, 9, 0)),
    ],
)
def test_weekend_sends_move_to_monday_same_local_time(local: datetime, monday: datetime) -> None:
    due = local.replace(tzinfo=BERLIN).astimezone(UTC)
    assert weekend_postponement(due, BERLIN) == monday.replace(tzinfo=BERLIN).astimezone(UTC)


def test_a_weekday_in_the_zone_is_not_postponed_even_if_utc_says_saturday() -> None:
    # Friday 23:30 in New York is already Saturday in UTC.
    friday = datetime(2026, 11, 20, 23, 30, tzinfo=ZoneInfo("America/New_York"))
    assert weekend_postponement(friday.astimezone(UTC), ZoneInfo("America/New_York")) is None
    assert weekend_postponement(friday.astimezone(UTC), ZoneInfo("UTC")) is not None


def test_reminders_from_the_events_table() -> None:
    settings = load_with({"events": {"reminders": ["1d", "90m", "1d"]}})
    reminders = reminders_for(settings)
    assert [(r.type, r.lead, r.label) for r in reminders] == [
        ("REMINDER_1D", timedelta(days=1), "1 day"),
        ("REMINDER_90M", timedelta(minutes=90), "90 minutes"),
    ]
    assert [r.type for r in reminders_for(Settings())] == ["REMINDER_1D", "REMINDER_2H"]


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ({"reminders": "1d"}, r"\[events\] reminders: must be a list of durations"),
        ({"reminders": ["tomorrow"]}, r"\[events\] reminders: invalid duration 'tomorrow'"),
        ({"reminders": ["367d"]}, r"\[events\] reminders: '367d' is longer than 366d"),
        ({"remind": ["1d"]}, r"unknown setting \[events\] remind \(did you mean 'reminders'"),
    ],
)
def test_invalid_reminders_are_configuration_errors(table: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_with({"events": table})


def test_quota_day_and_thresholds() -> None:
    late = datetime(2026, 11, 18, 23, 59, tzinfo=ZoneInfo("Asia/Tokyo"))  # 14:59 UTC
    assert quota_day(late) == "2026-11-18"
    assert next_day_start(late) == datetime(2026, 11, 19, tzinfo=UTC)
    assert thresholds_reached(7, 10) == []
    assert thresholds_reached(8, 10) == [80]
    assert thresholds_reached(10, 10) == [80, 90, 100]
    assert thresholds_reached(180, 200) == [80, 90]
    assert thresholds_reached(5, 0) == []
