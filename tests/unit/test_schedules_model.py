"""Parsing and merging schedule options: pure functions, no database."""

from __future__ import annotations

from datetime import time, timedelta

import pytest

from schedctl.cadence import make_cadence
from schedctl.errors import ValidationError
from schedctl.schedules.model import (
    ScheduleOptions,
    merge_cadence,
    parse_catchup,
    parse_max_lateness,
    parse_name,
    parse_params,
    parse_recipients,
    parse_schedule_id,
)
from schedctl.values import format_duration


def test_params_are_key_value_pairs() -> None:
    assert parse_params(["query=daily_sales", "subject=Sales = revenue", "empty="]) == {
        "query": "daily_sales",
        "subject": "Sales = revenue",  # only the first '=' separates
        "empty": "",
    }
    assert parse_params([]) == {}


@pytest.mark.parametrize("item", ["query", "=x", "two words=x", "1abc=x", " =x", "a/b=c"])
def test_malformed_params_are_refused(item: str) -> None:
    with pytest.raises(ValidationError, match="expected KEY=VALUE"):
        parse_params([item])


def test_a_param_key_may_appear_once() -> None:
    with pytest.raises(ValidationError, match="given twice"):
        parse_params(["query=a", "query=b"])


def test_recipients_are_normalised_and_deduplicated() -> None:
    assert parse_recipients(["Ops@Example.com", "b@example.com", "ops@example.com "]) == (
        "ops@example.com",
        "b@example.com",
    )


@pytest.mark.parametrize("address", ["ops", "ops@", "a b@example.com", "x@@example.com"])
def test_bad_recipients_are_refused(address: str) -> None:
    with pytest.raises(ValidationError, match="invalid e-mail"):
        parse_recipients(["ok@example.com", address])


def test_catchup_policies() -> None:
    assert [parse_catchup(p) for p in ("latest", "ALL", " none ")] == ["latest", "all", "none"]
    with pytest.raises(ValidationError, match="latest, all or none"):
        parse_catchup("sometimes")


def test_max_lateness_is_a_duration_or_none() -> None:
    assert parse_max_lateness("90m") == timedelta(minutes=90)
    assert parse_max_lateness("none") is None
    with pytest.raises(ValidationError, match="invalid duration"):
        parse_max_lateness("10x")
    # Stored as whole seconds in a 32-bit column: PostgreSQL refused more at INSERT.
    assert parse_max_lateness("24855d") == timedelta(days=24855)
    assert parse_max_lateness("2147483647s") == timedelta(seconds=2**31 - 1)
    # (A number past what a timedelta holds said "expected a positive whole number".)
    for text in ("24856d", "2147483648s", "100000d", "99999999999999999999999s"):
        with pytest.raises(ValidationError, match=r"at most 24855d, or none"):
            parse_max_lateness(text)


@pytest.mark.parametrize(
    ("seconds", "text"), [(90, "90s"), (900, "15m"), (21600, "6h"), (172800, "2d"), (5400, "90m")]
)
def test_durations_format_back_to_their_shortest_form(seconds: int, text: str) -> None:
    assert format_duration(timedelta(seconds=seconds)) == text
    assert parse_max_lateness(text) == timedelta(seconds=seconds)


def test_names_and_ids() -> None:
    assert parse_name("  Weekly   sales ") == "Weekly sales"
    assert parse_schedule_id(" 42 ") == 42
    for bad in ["", "   ", "x" * 201]:
        with pytest.raises(ValidationError, match="schedule name"):
            parse_name(bad)
    for bad in ["abc", "-1", "1.5", ""]:
        with pytest.raises(ValidationError, match="schedule id"):
            parse_schedule_id(bad)


def test_creating_needs_a_cadence_and_its_fields() -> None:
    with pytest.raises(ValidationError, match="--cadence is required"):
        merge_cadence(ScheduleOptions(), None)
    with pytest.raises(ValidationError, match="weekly cadence needs --weekday"):
        merge_cadence(ScheduleOptions(cadence="weekly", at="09:00"), None)
    with pytest.raises(ValidationError, match="--weekday does not apply to a daily"):
        merge_cadence(ScheduleOptions(cadence="daily", at="09:00", weekday="mon"), None)


def test_updating_keeps_what_is_not_given() -> None:
    weekly = make_cadence("weekly", tz="Europe/Berlin", at="09:00", weekday="mon")
    moved = merge_cadence(ScheduleOptions(weekday="fri"), weekly)
    assert (moved.kind, moved.tz, moved.at, moved.weekday) == (
        "weekly",
        "Europe/Berlin",
        time(9),
        4,
    )


def test_a_new_cadence_kind_drops_the_fields_it_does_not_use() -> None:
    weekly = make_cadence("weekly", at="09:00", weekday="mon")
    daily = merge_cadence(ScheduleOptions(cadence="daily"), weekly)
    assert (daily.kind, daily.at, daily.weekday) == ("daily", time(9), None)
    cron = merge_cadence(ScheduleOptions(cadence="cron", cron="0 7 * * *"), weekly)
    assert (cron.at, cron.weekday, cron.cron) == (None, None, "0 7 * * *")
    with pytest.raises(ValidationError, match="monthly cadence needs --day"):
        merge_cadence(ScheduleOptions(cadence="monthly"), weekly)
    back = merge_cadence(ScheduleOptions(cadence="daily", at="06:15"), cron)
    assert back.at == time(6, 15)
