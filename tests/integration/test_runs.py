"""Materialising and executing schedule runs on real databases (SPEC §3, §4)."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa

from schedctl.accounts import create_account
from schedctl.config import Settings, report_queries
from schedctl.db.database import Database
from schedctl.db.schema import messages, schedule_runs, schedules
from schedctl.errors import NotFound
from schedctl.schedules import catchup, runs
from schedctl.schedules.model import Schedule, ScheduleOptions
from schedctl.schedules.store import create_schedule, get_schedule

T0 = datetime(2026, 6, 1, 8, 0, tzinfo=UTC)  # a Monday; schedules are created now
# Dialect-independent logic: SQLite only, to keep PostgreSQL for the SQL that differs.
sqlite_only = pytest.mark.parametrize("dialect", ["sqlite"])

NINE = datetime(2026, 6, 1, 9, 0, tzinfo=UTC)
QUERIES = {
    "ping": {"sql": "select 1 as one"},
    "broken": {"sql": "select * from no_such_table"},
}


@pytest.fixture
def settings(db_url: str) -> Settings:
    return Settings(database_url=db_url, reports_queries=report_queries(QUERIES))


def make(db: Database, settings: Settings, *, now: datetime = T0, **options: Any) -> Schedule:
    values: dict[str, Any] = {
        "name": "report",
        "kind": "sql",
        "cadence": "daily",
        "at": "09:00",
        "to": ["a@example.com", "b@example.com"],
        "params": ["query=ping"],
    }
    values.update(options)
    return create_schedule(db, settings, 1, ScheduleOptions(**values), now)


def run_rows(db: Database, schedule_id: int | None = None) -> list[Any]:
    query = sa.select(schedule_runs).order_by(schedule_runs.c.slot, schedule_runs.c.id)
    if schedule_id is not None:
        query = query.where(schedule_runs.c.schedule_id == schedule_id)
    return db.transaction(lambda c: c.execute(query).all())


def message_rows(db: Database) -> list[Any]:
    query = sa.select(messages).order_by(messages.c.id)
    return db.transaction(lambda c: c.execute(query).all())


def slots(rows: list[Any], status: str) -> list[datetime]:
    return [r.slot for r in rows if r.status == status]


def days(*offsets: int, at: datetime = NINE) -> list[datetime]:
    return [at + timedelta(days=n) for n in offsets]


# --- materialise and execute -----------------------------------------------------------


def test_a_due_schedule_runs_once_with_one_message_per_recipient(
    db: Database, settings: Settings
) -> None:
    schedule = make(db, settings)
    assert schedule.next_run_at == NINE
    assert runs.run_schedules(db, settings, NINE - timedelta(seconds=1))["due"] == 0

    counts = runs.run_schedules(db, settings, NINE + timedelta(seconds=30))
    assert counts["due"] == counts["runs_created"] == counts["runs_succeeded"] == 1
    assert counts["messages_enqueued"] == 2
    assert counts["runs_failed"] == counts["runs_skipped"] == 0
    # A second tick at the same instant finds nothing to do.
    again = runs.run_schedules(db, settings, NINE + timedelta(seconds=40))
    assert again["due"] == again["runs_created"] == again["messages_enqueued"] == 0

    [run] = run_rows(db)
    assert (run.slot, run.status, run.attempt, run.manual) == (NINE, "succeeded", 1, False)
    assert run.lease_owner is None
    mails = message_rows(db)
    assert [m.recipient for m in mails] == ["a@example.com", "b@example.com"]
    assert {m.type for m in mails} == {"REPORT"}
    assert all(m.subscription and m.schedule_run_id == run.id for m in mails)
    assert len({m.idempotency_key for m in mails}) == 2
    assert mails[0].attachments[0]["filename"] == "ping-2026-06-01.csv"
    assert mails[0].subject == "report (2026-06-01)"
    after = get_schedule(db, 1, schedule.id)
    assert after.next_run_at == NINE + timedelta(days=1)
    assert after.last_run_at == NINE


@sqlite_only
def test_paused_schedules_are_not_due(db: Database, settings: Settings) -> None:
    make(db, settings, paused=True)
    counts = runs.run_schedules(db, settings, NINE + timedelta(days=3))
    assert counts["due"] == 0
    assert run_rows(db) == []


@sqlite_only
def test_limit_bounds_the_schedules_of_one_tick(db: Database, settings: Settings) -> None:
    for n in range(5):
        make(db, settings, name=f"r{n}")
    first = runs.materialise_due(db, NINE, limit=3)
    assert (first.due, first.runs_created) == (3, 3)
    rest = runs.materialise_due(db, NINE, limit=3)
    assert (rest.due, rest.runs_created) == (2, 2)


def test_runs_another_tick_made_are_neither_made_again_nor_counted(
    db: Database, settings: Settings
) -> None:
    schedule = make(db, settings)  # catch-up latest
    later = NINE + timedelta(days=2, hours=3)
    first = runs.materialise_due(db, later)
    assert (first.due, first.runs_created, first.runs_skipped) == (1, 1, 2)
    # As a tick finds it that claimed the schedule row before another's runs committed:
    # every slot's run (the queued one and the skipped ones) exists already.
    db.transaction(
        lambda c: c.execute(
            schedules.update().where(schedules.c.id == schedule.id).values(next_run_at=NINE)
        )
    )
    again = runs.materialise_due(db, later)
    assert (again.due, again.runs_created, again.runs_skipped) == (1, 0, 0)
    assert [r.status for r in run_rows(db, schedule.id)] == ["skipped", "skipped", "queued"]


# --- catch-up ----------------------------------------------------------------------------


@sqlite_only
@pytest.mark.parametrize(
    ("catchup", "max_lateness", "queued", "skipped"),
    [
        ("latest", None, [3], [1, 2]),
        ("all", None, [1, 2, 3], []),
        ("none", None, [], [1, 2, 3]),
        ("all", "1d", [3], [1, 2]),
        ("latest", "2h", [], [1, 2, 3]),
    ],
)
def test_catch_up_after_a_three_day_outage(
    db: Database,
    settings: Settings,
    catchup: str,
    max_lateness: str | None,
    queued: list[int],
    skipped: list[int],
) -> None:
    schedule = make(db, settings, catchup=catchup, max_lateness=max_lateness)
    runs.materialise_due(db, NINE + timedelta(seconds=30))  # day 0 runs on time
    # The ticks stop for three days; the next one comes at 12:00 on day 3.
    counts = runs.materialise_due(db, NINE + timedelta(days=3, hours=3))
    assert (counts.runs_created, counts.runs_skipped) == (len(queued), len(skipped))
    rows = [r for r in run_rows(db, schedule.id) if r.slot > NINE]
    assert slots(rows, "queued") == days(*queued)
    assert slots(rows, "skipped") == days(*skipped)
    assert all(r.error for r in rows if r.status == "skipped")
    assert get_schedule(db, 1, schedule.id).next_run_at == NINE + timedelta(days=4)


@sqlite_only
def test_catch_up_none_still_runs_a_slot_cron_fired_late_for(
    db: Database, settings: Settings
) -> None:
    make(db, settings, name="late", catchup="none")
    make(db, settings, name="very-late", catchup="none", at="08:40")
    runs.materialise_due(db, NINE + timedelta(minutes=10))
    rows = run_rows(db)
    assert [(r.slot, r.status) for r in rows] == [
        (NINE - timedelta(minutes=20), "skipped"),  # 30 minutes late: beyond the grace
        (NINE, "queued"),  # 10 minutes late: within it
    ]


@sqlite_only
def test_catch_up_all_is_bounded_to_the_newest_100_slots(db: Database, settings: Settings) -> None:
    schedule = make(db, settings, cadence="cron", at=None, cron="*/5 * * * *", catchup="all")
    now = T0 + timedelta(days=3)
    counts = runs.materialise_due(db, now)
    assert counts.runs_created == catchup.MAX_CATCHUP_SLOTS == 100
    queued = slots(run_rows(db, schedule.id), "queued")
    assert queued[-1] == now
    assert queued[0] == now - timedelta(minutes=5 * 99)


# --- DST and month ends --------------------------------------------------------------------


DST_NIGHTS = [
    # spring forward: 02:30 does not exist, the run comes at the first instant after
    ("Europe/Berlin", date(2026, 3, 29), "02:30", datetime(2026, 3, 29, 1, 0, tzinfo=UTC)),
    ("America/New_York", date(2026, 3, 8), "02:30", datetime(2026, 3, 8, 7, 0, tzinfo=UTC)),
    # fall back: the repeated time runs once, at its first occurrence
    ("Europe/Berlin", date(2026, 10, 25), "02:30", datetime(2026, 10, 25, 0, 30, tzinfo=UTC)),
    ("America/New_York", date(2026, 11, 1), "01:30", datetime(2026, 11, 1, 5, 30, tzinfo=UTC)),
]
# Both cadence kinds on SQLite; the daily one on PostgreSQL too (timestamptz storage).
DST_CASES = [
    pytest.param(
        dialect, cadence, *night,
        id=f"{dialect}-{cadence}-{night[0]}-{night[1]}",
        marks=[pytest.mark.postgres] if dialect == "postgresql" else [],
    )
    for night in DST_NIGHTS
    for dialect, cadence in [("sqlite", "daily"), ("sqlite", "cron"), ("postgresql", "daily")]
]  # fmt: skip


@pytest.mark.parametrize(("dialect", "cadence", "tz", "night", "local_time", "expected"), DST_CASES)
def test_dst_nights_run_each_slot_once(
    db: Database,
    settings: Settings,
    tz: str,
    night: date,
    local_time: str,
    expected: datetime,
    cadence: str,
) -> None:
    hour, minute = local_time.split(":")
    options: dict[str, Any] = {"cadence": cadence, "tz": tz}
    if cadence == "cron":
        options.update(at=None, cron=f"{int(minute)} {int(hour)} * * *")
    else:
        options["at"] = local_time
    start = datetime.combine(night, datetime.min.time(), UTC) - timedelta(hours=12)
    schedule = make(db, settings, now=start, **options)
    # A tick every 10 minutes through the 24 hours around the night.
    for step in range(0, 24 * 6 + 1):
        runs.materialise_due(db, start + timedelta(minutes=10 * step))
    rows = run_rows(db, schedule.id)
    assert [(r.slot, r.status) for r in rows] == [(expected, "queued")]


@sqlite_only
@pytest.mark.parametrize(("year", "february"), [(2027, 28), (2028, 29)])
def test_monthly_day_31_runs_on_the_last_day_of_shorter_months(
    db: Database, settings: Settings, year: int, february: int
) -> None:
    start = datetime(year, 1, 15, 10, 0, tzinfo=UTC)
    schedule = make(db, settings, now=start, cadence="monthly", day="31")
    for n in range(0, 112):  # one tick a day at 10:00 until early May
        runs.materialise_due(db, start + timedelta(days=n))
    assert slots(run_rows(db, schedule.id), "queued") == [
        datetime(year, 1, 31, 9, 0, tzinfo=UTC),
        datetime(year, 2, february, 9, 0, tzinfo=UTC),
        datetime(year, 3, 31, 9, 0, tzinfo=UTC),
        datetime(year, 4, 30, 9, 0, tzinfo=UTC),
    ]


# --- leases and retries -------------------------------------------------------------------


def test_a_run_whose_process_died_is_retried_after_its_lease_expires(
    db: Database, settings: Settings
) -> None:
    make(db, settings)
    runs.materialise_due(db, NINE)
    claimed, _ = runs.claim_runs(db, NINE, owner="dead-host:1")  # then the process dies
    assert [r.attempt for r in claimed] == [1]

    before_expiry = runs.run_schedules(db, settings, NINE + timedelta(minutes=9))
    assert before_expiry["runs_succeeded"] == 0
    assert run_rows(db)[0].status == "running"

    after_expiry = runs.run_schedules(db, settings, NINE + timedelta(minutes=11))
    assert after_expiry["runs_succeeded"] == 1
    [run] = run_rows(db)
    assert (run.status, run.attempt) == ("succeeded", 2)
    assert len(message_rows(db)) == 2


def test_a_run_whose_lease_was_taken_over_enqueues_nothing(
    db: Database, settings: Settings
) -> None:
    make(db, settings)
    runs.materialise_due(db, NINE)
    [slow], _ = runs.claim_runs(db, NINE, owner="slow:1")
    later = NINE + runs.RUN_LEASE + timedelta(seconds=1)
    [fast], _ = runs.claim_runs(db, later, owner="fast:2")
    assert fast.id == slow.id

    fast_result = runs.execute_run(db, settings, fast, "fast:2", lambda: later)
    slow_result = runs.execute_run(db, settings, slow, "slow:1", lambda: later)
    assert (fast_result.outcome, fast_result.messages) == ("succeeded", 2)
    assert (slow_result.outcome, slow_result.messages) == ("lost", 0)
    assert len(message_rows(db)) == 2
    [run] = run_rows(db)
    assert (run.status, run.attempt) == ("succeeded", 2)


def test_a_run_whose_schedule_is_deleted_as_it_runs_says_so_not_lease_lost(
    db: Database, settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    # It said "lease lost to another process": an operator went looking for a second
    # ticking host that did not exist.
    schedule = make(db, settings)
    runs.materialise_due(db, NINE)
    [run], _ = runs.claim_runs(db, NINE, owner="tick:1")
    db.transaction(lambda conn: conn.execute(sa.delete(schedule_runs)))
    db.transaction(
        lambda conn: conn.execute(sa.delete(schedules).where(schedules.c.id == schedule.id))
    )

    with caplog.at_level("INFO", logger="schedctl"):
        result = runs.execute_run(db, settings, run, "tick:1", lambda: NINE)

    assert (result.outcome, result.messages) == ("lost", 0)
    assert message_rows(db) == []
    assert f"run {run.id}: its schedule was deleted while it ran" in caplog.text
    assert "lease lost" not in caplog.text


@sqlite_only
def test_runs_a_slow_batch_cannot_start_in_time_are_released_not_started_late(
    db: Database, settings: Settings
) -> None:
    for n in range(3):
        make(db, settings, name=f"r{n}")
    runs.materialise_due(db, NINE)
    ticks = iter(NINE + timedelta(minutes=3 * n) for n in range(1000))

    def slow_clock() -> datetime:  # every step of the tick takes three minutes
        return next(ticks)

    counts = runs.execute_due_runs(db, settings, slow_clock, "slow:1")
    assert (counts.runs_succeeded, counts.runs_failed, counts.messages_enqueued) == (3, 0, 6)
    rows = run_rows(db)
    assert [(r.status, r.attempt) for r in rows] == [("succeeded", 1)] * 3  # no attempt burnt
    assert len(message_rows(db)) == 6


def test_a_failing_run_is_retried_with_backoff_then_stays_failed(
    db: Database, settings: Settings
) -> None:
    make(db, settings, params=["query=broken"])
    first = runs.run_schedules(db, settings, NINE)
    assert (first["runs_created"], first["runs_failed"]) == (1, 1)
    [run] = run_rows(db)
    assert (run.status, run.attempt) == ("failed", 1)
    assert "no_such_table" in run.error
    # The tick's clock moves on from its start by the time it took.
    assert (
        timedelta(0) <= run.next_attempt_at - (NINE + timedelta(minutes=5)) < timedelta(seconds=5)
    )

    timeline = [
        (NINE + timedelta(minutes=4), 0, 1),  # too early for the retry
        (NINE + timedelta(minutes=6), 1, 2),  # retry 1; the next waits 10 minutes
        (NINE + timedelta(minutes=15), 0, 2),
        (NINE + timedelta(minutes=17), 1, 3),  # the last attempt
        (NINE + timedelta(hours=5), 0, 3),  # given up: no more attempts
    ]
    for now, failed, attempt in timeline:
        counts = runs.run_schedules(db, settings, now)
        assert counts["runs_failed"] == failed, now
        [run] = run_rows(db)
        assert (run.status, run.attempt) == ("failed", attempt), now
    assert run.next_attempt_at is None
    assert message_rows(db) == []


@sqlite_only
def test_a_failed_run_succeeds_on_retry_once_the_cause_is_fixed(db: Database, db_url: str) -> None:
    def with_flaky(sql: str) -> Settings:
        queries = {**QUERIES, "flaky": {"sql": sql}}
        return Settings(database_url=db_url, reports_queries=report_queries(queries))

    broken, fixed = with_flaky("select * from no_such_table"), with_flaky("select 1 as one")
    make(db, broken, params=["query=flaky"])
    assert runs.run_schedules(db, broken, NINE)["runs_failed"] == 1
    assert runs.run_schedules(db, fixed, NINE + timedelta(minutes=6))["runs_succeeded"] == 1
    [run] = run_rows(db)
    assert (run.status, run.attempt, run.error) == ("succeeded", 2, None)
    assert len(message_rows(db)) == 2


def test_a_run_that_dies_on_its_last_attempt_is_marked_failed(
    db: Database, settings: Settings
) -> None:
    make(db, settings)
    runs.materialise_due(db, NINE)
    now = NINE
    for attempt in range(1, runs.MAX_ATTEMPTS + 1):
        [claimed], _ = runs.claim_runs(db, now, owner=f"dies:{attempt}")
        assert claimed.attempt == attempt
        now += runs.RUN_LEASE + timedelta(seconds=1)
    counts = runs.run_schedules(db, settings, now)
    assert (counts["runs_failed"], counts["runs_succeeded"]) == (1, 0)
    [run] = run_rows(db)
    assert run.status == "failed"
    assert "lease expired" in run.error
    assert message_rows(db) == []


@sqlite_only
@pytest.mark.parametrize(
    "edit",
    [
        {"tz": "Mars/Base"},
        # Found by review: these made every tick an internal error (TypeError, IndexError).
        {"cadence": "weekly", "at_time": "09:00", "weekday": 42},
        {"params": [1, 2]},
        {"recipients": {"to": "a@example.com"}},
    ],
)
def test_an_unreadable_schedule_is_paused_and_its_runs_fail_not_the_tick(
    db: Database, settings: Settings, edit: dict[str, Any]
) -> None:
    bad = make(db, settings, name="bad")
    good = make(db, settings, name="good")
    runs.materialise_due(db, NINE)  # each has a queued run
    db.transaction(
        lambda c: c.execute(schedules.update().where(schedules.c.id == bad.id).values(**edit))
    )
    counts = runs.run_schedules(db, settings, NINE + timedelta(days=1))
    # A cadence that cannot be read pauses the schedule; other fields fail each run.
    cadence = "params" not in edit and "recipients" not in edit
    bad_runs = 1 if cadence else 2  # (its next day's run is made, and fails too)
    assert (counts["schedules_invalid"], counts["runs_succeeded"], counts["runs_failed"]) == (
        int(cadence),
        2,
        bad_runs,
    )
    rows = run_rows(db)
    bad_rows = [r for r in rows if r.schedule_id == bad.id]
    assert [r.status for r in bad_rows] == ["failed"] * bad_runs
    assert all("cannot be read" in r.error for r in bad_rows)
    assert [r.status for r in rows if r.schedule_id == good.id] == ["succeeded"] * 2
    active = db.transaction(
        lambda c: c.execute(sa.select(schedules.c.active).where(schedules.c.id == bad.id)).scalar()
    )
    assert active is not cadence


def test_pausing_stops_queued_retrying_and_orphaned_runs(db: Database, settings: Settings) -> None:
    """A paused schedule's waiting runs are recorded skipped ("paused"), never run later."""
    from schedctl.schedules.store import set_active

    failing = make(db, settings, name="failing", params=["query=broken"])
    assert runs.run_schedules(db, settings, NINE)["runs_failed"] == 1  # a retry is due at 09:05
    queued = make(db, settings, name="queued")
    orphan = make(db, settings, name="orphan")
    other = make(db, settings, name="other")
    assert runs.materialise_due(db, NINE).runs_created == 3
    # The orphan's process died holding its lease, which expires at 09:10.
    db.transaction(
        lambda c: c.execute(
            schedule_runs.update()
            .where(schedule_runs.c.schedule_id == orphan.id)
            .values(
                status="running",
                attempt=1,
                lease_owner="dead-host:1",
                lease_expires_at=NINE + timedelta(minutes=10),
            )
        )
    )
    for schedule in (failing, queued, orphan):
        set_active(db, 1, schedule.id, False, NINE + timedelta(minutes=1))

    counts = runs.run_schedules(db, settings, NINE + timedelta(minutes=30))
    assert (counts["runs_succeeded"], counts["runs_failed"], counts["runs_skipped"]) == (1, 0, 3)
    assert counts["messages_enqueued"] == 2
    rows = {r.schedule_id: r for r in run_rows(db)}
    assert rows[other.id].status == "succeeded"
    for schedule in (failing, queued, orphan):
        run = rows[schedule.id]
        assert run.status == "skipped", schedule.name
        assert run.error.startswith("paused"), schedule.name
        assert (run.lease_owner, run.next_attempt_at) == (None, None)
    assert "no_such_table" in rows[failing.id].error  # the last failure is kept
    assert [m.schedule_run_id for m in message_rows(db)] == [rows[other.id].id] * 2
    # Nothing is claimable any more, paused or not.
    assert runs.claim_runs(db, NINE + timedelta(hours=1), owner="me:1", limit=10) == ([], 0)

    # Resumed, each runs from its next slot; the skipped runs stay skipped.
    for schedule in (failing, queued, orphan):
        set_active(db, 1, schedule.id, True, NINE + timedelta(hours=2))
    later = runs.run_schedules(db, settings, NINE + timedelta(days=1))
    assert (later["runs_created"], later["runs_succeeded"], later["runs_failed"]) == (4, 3, 1)
    assert [r.status for r in run_rows(db, queued.id)] == ["skipped", "succeeded"]


def test_a_paused_schedules_runs_are_not_claimed(db: Database, settings: Settings) -> None:
    from schedctl.schedules.store import set_active

    paused = make(db, settings, name="paused")
    make(db, settings, name="active")
    runs.materialise_due(db, NINE)
    set_active(db, 1, paused.id, False, NINE)
    claimed, given_up = runs.claim_runs(db, NINE, owner="me:1", limit=10)
    assert [r.schedule.name for r in claimed] == ["active"]
    assert given_up == 0
    assert [r.status for r in run_rows(db, paused.id)] == ["queued"]  # skipped by the tick


# --- manual runs -------------------------------------------------------------------------------


def test_run_schedule_now_is_a_manual_run_that_keeps_next_run_at(
    db: Database, settings: Settings
) -> None:
    schedule = make(db, settings)
    now = T0 + timedelta(minutes=5)
    first = runs.run_schedule_now(db, settings, 1, schedule.id, now)
    second = runs.run_schedule_now(db, settings, 1, schedule.id, now)
    assert first[1] == second[1] == runs.ENQUEUED
    assert first[0] != second[0]  # manual runs are not slots: both are kept
    rows = run_rows(db)
    assert [(r.manual, r.status, r.slot) for r in rows] == [(True, "succeeded", now)] * 2
    assert len(message_rows(db)) == 4
    after = get_schedule(db, 1, schedule.id)
    assert after.next_run_at == NINE
    # The scheduled slot still runs, once, at its time.
    assert runs.run_schedules(db, settings, NINE)["runs_created"] == 1


@sqlite_only
def test_run_schedule_now_reason_codes(db: Database, settings: Settings) -> None:
    silent = make(db, settings, name="silent", paused=True)
    db.transaction(  # stored without recipients (before create refused that)
        lambda c: c.execute(
            schedules.update().where(schedules.c.id == silent.id).values(recipients=[])
        )
    )
    broken = make(db, settings, name="broken", params=["query=broken"])
    silent_run, reason = runs.run_schedule_now(db, settings, 1, silent.id, T0)
    assert reason == runs.MISSING_RECIPIENT
    run_id, reason = runs.run_schedule_now(db, settings, 1, broken.id, T0)
    assert reason == runs.REPORT_FAILED
    statuses = {r.id: r.status for r in run_rows(db)}
    assert statuses == {silent_run: "failed", run_id: "failed"}
    assert message_rows(db) == []


@sqlite_only
def test_run_schedule_now_stays_inside_its_account(db: Database, settings: Settings) -> None:
    schedule = make(db, settings)
    other = db.transaction(lambda c: create_account(c, "other", T0))
    with pytest.raises(NotFound):
        runs.run_schedule_now(db, settings, other, schedule.id, T0)
    with pytest.raises(NotFound):
        runs.run_schedule_now(db, settings, 1, 999, T0)
    assert run_rows(db) == []
