"""A run's duration in `schedules runs` (SPEC §12 History): known, or null."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from schedctl.schedules.runs import RunRecord, orphan_error

START = datetime(2026, 11, 18, 9, 0, 0, 123456, tzinfo=UTC)


def record(
    status: str, started: datetime | None, finished: datetime | None, error: str | None = None
) -> RunRecord:
    return RunRecord(1, START, status, False, 1, started, finished, error)


def test_a_finished_attempts_duration_to_the_millisecond() -> None:
    done = record("succeeded", START, START + timedelta(seconds=2, microseconds=345_678))
    failed = record("failed", START, START + timedelta(milliseconds=7), "boom")

    assert done.duration_s == 2.346
    assert failed.duration_s == 0.007
    assert done.as_dict()["duration_s"] == 2.346


@pytest.mark.parametrize(
    ("run", "why"),
    [
        (record("running", START, None), "still running"),
        (record("queued", None, None), "never started"),
        (record("skipped", None, START), "skipped, never started"),
        (record("skipped", START, START + timedelta(hours=1), "paused; last error: x"),
         "skipped after an attempt: the stored instants span the pause"),
        (record("failed", START, START + timedelta(minutes=10), orphan_error(1)),
         "its process died: when it stopped is unknown"),
        (record("succeeded", START, START - timedelta(seconds=1)), "clock went backwards"),
    ],
    ids=lambda v: v if isinstance(v, str) else "",
)  # fmt: skip
def test_no_duration_when_it_is_not_known(run: RunRecord, why: str) -> None:
    assert run.duration_s is None, why
