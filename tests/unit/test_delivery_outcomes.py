"""The pure delivery decisions: before a send (dispatch, send-now) and after its result."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from schedctl.config import Settings
from schedctl.delivery.outcomes import (
    Change,
    Facts,
    Refusal,
    before_dispatch,
    before_send_now,
    error_text,
    invalid_message,
    quota_deferral,
    settle_result,
)
from schedctl.delivery.policy import DeliveryPolicy
from schedctl.delivery.transport import SendResult

NOW = datetime(2026, 11, 18, 9, 0, tzinfo=UTC)  # a Wednesday
SATURDAY = datetime(2026, 11, 21, 9, 0, tzinfo=UTC)
BERLIN = ZoneInfo("Europe/Berlin")
POLICY = DeliveryPolicy.from_settings(Settings())  # 5 attempts, 1m doubling to 1h, 15m backoff
ADDRESS = "ann@example.org"


@pytest.mark.parametrize(
    ("facts", "expected"),
    [
        (Facts(ADDRESS), None),
        (Facts(None), Change("failed", "MISSING_RECIPIENT", status="failed")),
        (Facts(None, suppressed=True), Change("failed", "MISSING_RECIPIENT", status="failed")),
        (Facts(ADDRESS, suppressed=True), Change("skipped", "SUPPRESSED", status="skipped")),
        (
            Facts(ADDRESS, suppressed=True, weekend_zone=BERLIN, due=SATURDAY),
            Change("skipped", "SUPPRESSED", status="skipped"),
        ),
        (
            Facts(ADDRESS, weekend_zone=BERLIN, due=SATURDAY),
            Change("postponed", "WEEKEND_POSTPONED", send_at=SATURDAY + timedelta(days=2)),
        ),
        (Facts(ADDRESS, weekend_zone=BERLIN, due=NOW), None),  # a weekday
        (Facts(ADDRESS, due=SATURDAY), None),  # its type sends at weekends
        (Facts(ADDRESS, expires_at=NOW), Change("skipped", "EXPIRED", status="skipped")),
        (
            Facts(ADDRESS, expires_at=NOW - timedelta(days=21)),
            Change("skipped", "EXPIRED", status="skipped"),
        ),
        (Facts(ADDRESS, expires_at=NOW + timedelta(seconds=1)), None),
        (
            Facts(ADDRESS, suppressed=True, expires_at=NOW),
            Change("skipped", "SUPPRESSED", status="skipped"),
        ),
        (
            Facts(ADDRESS, expires_at=NOW, weekend_zone=BERLIN, due=SATURDAY),
            Change("skipped", "EXPIRED", status="skipped"),
        ),
    ],
    ids=[
        "sendable",
        "no recipient",
        "no recipient before suppressed",
        "suppressed",
        "suppressed before the weekend rule",
        "weekend postponed to Monday",
        "weekday",
        "weekend sent",
        "expiring now",
        "expired weeks ago",
        "expiring in a second",
        "suppressed before expired",
        "expired before the weekend rule",
    ],
)
def test_before_dispatch(facts: Facts, expected: Change | None) -> None:
    assert before_dispatch(facts, NOW) == expected


@pytest.mark.parametrize(
    ("facts", "force", "expected"),
    [
        (Facts(ADDRESS), False, None),
        (Facts(ADDRESS, leased=True), True, Refusal("IN_PROGRESS")),
        (Facts(ADDRESS, status="sent"), False, Refusal("ALREADY_SENT")),
        (Facts(ADDRESS, status="sent"), True, None),
        (Facts(None), False, Refusal("MISSING_RECIPIENT")),
        (
            Facts(ADDRESS, suppressed=True),
            False,
            Refusal("SUPPRESSED", Change("skipped", "SUPPRESSED", status="skipped")),
        ),
        (Facts(ADDRESS, status="sent", suppressed=True), True, Refusal("SUPPRESSED")),
        (Facts(ADDRESS, status="failed", weekend_zone=BERLIN, due=SATURDAY), False, None),
        (
            Facts(ADDRESS, expires_at=NOW),
            False,
            Refusal("EXPIRED", Change("skipped", "EXPIRED", status="skipped")),
        ),
        (Facts(ADDRESS, status="skipped", expires_at=NOW), False, Refusal("EXPIRED")),
        (Facts(ADDRESS, expires_at=NOW), True, None),
        (Facts(ADDRESS, status="skipped", expires_at=NOW), True, None),
        (Facts(ADDRESS, status="sent", expires_at=NOW), False, Refusal("ALREADY_SENT")),
        (
            Facts(ADDRESS, suppressed=True, expires_at=NOW),
            True,
            Refusal("SUPPRESSED", Change("skipped", "SUPPRESSED", status="skipped")),
        ),
    ],
    ids=[
        "sendable",
        "being sent",
        "already sent",
        "sent again with force",
        "no recipient (not recorded)",
        "suppressed: skipped",
        "suppressed after a send: left sent",
        "failed, at a weekend: sent",
        "expired: skipped",
        "expired, already skipped: left as it is",
        "expired, with force: sent",
        "skipped expired, with force: sent",
        "sent and expired",
        "force never bypasses suppression",
    ],
)
def test_before_send_now(facts: Facts, force: bool, expected: Refusal | None) -> None:
    assert before_send_now(facts, NOW, force=force) == expected


def test_changes_name_their_row_values() -> None:
    assert Change("failed", "MISSING_RECIPIENT", status="failed").values() == {
        "status": "failed", "reason_code": "MISSING_RECIPIENT"
    }  # fmt: skip
    assert quota_deferral(NOW).values() == {
        "reason_code": "QUOTA_DEFERRED",
        "send_at": datetime(2026, 11, 19, tzinfo=UTC),
        "next_attempt_at": None,
    }
    assert invalid_message("x" * 2000).values() == {
        "status": "failed", "reason_code": "INVALID_MESSAGE", "last_error": "x" * 1000
    }  # fmt: skip


def result(outcome: str, code: int | None = None, detail: str = "reply") -> SendResult:
    return SendResult(outcome, code, detail)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("sent", "attempts", "values", "delivery"),
    [
        (
            result("sent", 250), 0,
            {"status": "sent", "attempts": 1, "sent_at": NOW, "reason_code": None,
             "next_attempt_at": None, "last_error": None},
            "sent",
        ),
        (
            result("failed", 550), 0,
            {"status": "failed", "attempts": 1, "reason_code": "PERMANENT_FAILURE",
             "next_attempt_at": None, "last_error": "reply"},
            "failed",
        ),
        (
            result("retry", 451), 0,
            {"status": "retrying", "attempts": 1, "reason_code": "TEMPORARY_FAILURE",
             "next_attempt_at": NOW + timedelta(minutes=1), "last_error": "reply"},
            "retrying",
        ),
        (
            result("retry", 451), 3,
            {"status": "retrying", "attempts": 4, "reason_code": "TEMPORARY_FAILURE",
             "next_attempt_at": NOW + timedelta(minutes=8), "last_error": "reply"},
            "retrying",
        ),
        (
            result("retry", 451), 4,
            {"status": "failed", "attempts": 5, "reason_code": "RETRIES_EXHAUSTED",
             "next_attempt_at": None, "last_error": "reply"},
            "failed",
        ),
        (
            result("retry", None, "connection lost in the data"), 0,
            {"status": "retrying", "attempts": 1, "reason_code": "TEMPORARY_FAILURE",
             "next_attempt_at": NOW + timedelta(minutes=1),
             "last_error": "connection lost in the data"},
            "retrying",
        ),
        (
            result("unknown", None, "no reply after the data"), 0,
            {"status": "failed", "attempts": 1, "reason_code": "UNKNOWN_DELIVERY",
             "next_attempt_at": None, "last_error": "no reply after the data"},
            "unknown",
        ),
        (
            result("unknown"), 4,
            {"status": "failed", "attempts": 5, "reason_code": "UNKNOWN_DELIVERY",
             "next_attempt_at": None, "last_error": "reply"},
            "unknown",
        ),
        (
            result("deferred", 550), 2,
            {"reason_code": "PROVIDER_DEFERRED", "next_attempt_at": NOW + timedelta(minutes=15),
             "last_error": "reply"},
            "provider_deferred",
        ),
    ],
    ids=[
        "2xx sent",
        "5xx permanent",
        "4xx first retry",
        "4xx fourth, backoff doubled",
        "4xx at max attempts",
        "connection lost before the end of the data",
        "unknown after the data",
        "unknown at max attempts still unknown",
        "provider deferral: not an attempt",
    ],
)  # fmt: skip
def test_settle_result(
    sent: SendResult, attempts: int, values: dict[str, object], delivery: str
) -> None:
    settled = settle_result(sent, attempts, NOW, POLICY)

    assert settled.delivery == delivery
    assert settled.values() == values


def test_backoff_is_capped_by_retry_max() -> None:
    settled = settle_result(result("retry", 421), 3, NOW, DeliveryPolicy.from_settings(
        Settings(messages_retry_max=timedelta(minutes=5))
    ))  # fmt: skip

    assert settled.next_attempt_at == NOW + timedelta(minutes=5)


def test_error_text_names_refused_recipients_and_is_capped() -> None:
    refused = SendResult("failed", 550, "refused", refused={ADDRESS: (550, "no such user")})

    assert error_text(refused) == f"refused (refused: {ADDRESS}: 550 no such user)"
    assert len(error_text(result("failed", 550, "x" * 5000))) == 1000
