"""`schedctl schedules backfill`: runs recorded for past slots, executed by the next tick
(SPEC §12), on both dialects, in-process."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from schedctl.cadence import parse_instant
from schedctl.db.database import Database
from schedctl.db.schema import heartbeats, messages, schedule_runs, schedules
from support.cli import CliRunner, Result

CONFIG = '[reports.queries.ping]\nsql = "select 1 as one"\naccounts = "*"\n'
CREATED = "2026-06-01T08:00:00Z"  # a Monday; the first slot is 2026-06-01 09:00
NOW = "2026-06-10T08:00:00Z"
KEYS = {"slots", "runs_created", "already_recorded"}


@pytest.fixture
def run(cli: CliRunner, db_url: str, tmp_path: Path) -> Any:
    """`run(*args, now=ISO, env=...)`: schedctl in this process on this test's database."""
    config = tmp_path / "schedctl.toml"
    config.write_text(CONFIG)

    def invoke(*args: str, now: str = NOW, env: dict[str, str] | None = None) -> Result:
        extra = {
            "SCHEDCTL_CONFIG": str(config),
            "SCHEDCTL_NOW": now,
            "SCHEDCTL_MAIL_BACKEND": "memory",
            **(env or {}),
        }
        return cli(*args, db_url=db_url, env=extra)

    return invoke


def ok(result: Result) -> Any:
    assert result.returncode == 0, result.stderr
    return result.json


DAILY = ("--cadence", "daily", "--at", "09:00")


def create(run: Any, *extra: str, name: str = "daily", cadence: tuple[str, ...] = DAILY) -> str:
    created = run(
        "schedules", "create", "--name", name, "--kind", "sql", "--param", "query=ping",
        "--to", "a@example.com", "--to", "b@example.com", *cadence, *extra, "--json",
        now=CREATED,
    )  # fmt: skip
    return str(ok(created)["id"])


def backfill(run: Any, sid: str, start: str, end: str, *extra: str) -> Result:
    return run("schedules", "backfill", sid, "--from", start, "--to", end, *extra)


def runs_by_slot(db_url: str) -> dict[datetime, tuple[str, int, str | None]]:
    """Every run: slot -> (status, attempt, error); a slot twice would be lost, so the
    count of rows is checked against it."""
    c = schedule_runs.c
    with Database(db_url, environ={}) as db:
        rows = db.transaction(
            lambda conn: conn.execute(
                sa.select(c.slot, c.status, c.attempt, c.error).order_by(c.slot)
            ).all()
        )
    found = {r.slot: (r.status, r.attempt, r.error) for r in rows}
    assert len(found) == len(rows), "a slot has two runs"
    return found


def table_counts(db_url: str) -> dict[str, Any]:
    """What a refused or dry backfill must leave as it was."""

    def count(conn: sa.Connection, table: sa.Table) -> int:
        return int(conn.execute(sa.select(sa.func.count()).select_from(table)).scalar_one())

    last_runs = sa.select(schedules.c.id, schedules.c.last_run_at).order_by(schedules.c.id)
    with Database(db_url, environ={}) as db:
        return db.transaction(
            lambda conn: {
                "runs": count(conn, schedule_runs),
                "heartbeats": count(conn, heartbeats),
                "last_run_at": conn.execute(last_runs).all(),
            }
        )


def at(day: str) -> datetime:
    return parse_instant(f"{day}T09:00:00Z")


def test_backfilled_slots_run_once_at_the_next_tick_whatever_the_catchup_rules(
    run: Any, db_url: str
) -> None:
    # Catch-up `none` and a max-lateness of 1h would skip every one of these slots if
    # tick judged them as missed; a backfill is the operator's explicit request.
    sid = create(run, "--catchup", "none", "--max-lateness", "1h")

    first = ok(backfill(run, sid, "2026-05-01T00:00:00Z", "2026-05-03T23:59:00Z", "--json"))
    assert first == {"slots": 3, "runs_created": 3, "already_recorded": 0}
    assert runs_by_slot(db_url) == {
        at(day): ("queued", 0, None) for day in ("2026-05-01", "2026-05-02", "2026-05-03")
    }

    tick = ok(run("tick", "--json"))
    assert (tick["runs_succeeded"], tick["runs_failed"], tick["messages_enqueued"]) == (3, 0, 6)
    after_tick = runs_by_slot(db_url)
    for day in ("2026-05-01", "2026-05-02", "2026-05-03"):
        assert after_tick[at(day)] == ("succeeded", 1, None)
    # Their mail is not expired by the schedule's lateness bound: that counts from the
    # backfill, which asked for these runs explicitly.
    with Database(db_url, environ={}) as db:
        outcomes = db.transaction(
            lambda conn: conn.execute(sa.select(messages.c.status, messages.c.reason_code)).all()
        )
    assert {(o.status, o.reason_code) for o in outcomes} == {("sent", None)}
    # The slots tick found missed are judged by the catch-up rules as before.
    assert after_tick[at("2026-06-01")] == ("skipped", 0, "later than max-lateness")

    # An overlapping range: only the new slot is recorded; nothing runs twice.
    again = ok(backfill(run, sid, "2026-05-02T09:00:00Z", "2026-05-04T09:00:00Z", "--json"))
    assert again == {"slots": 3, "runs_created": 1, "already_recorded": 2}
    # Slots tick recorded as skipped stay skipped.
    skipped = ok(backfill(run, sid, "2026-06-01T00:00:00Z", "2026-06-03T12:00:00Z", "--json"))
    assert skipped == {"slots": 3, "runs_created": 0, "already_recorded": 3}

    tick = ok(run("tick", "--json"))
    assert (tick["runs_succeeded"], tick["messages_enqueued"]) == (1, 2)
    final = runs_by_slot(db_url)
    assert final[at("2026-05-04")] == ("succeeded", 1, None)
    assert final[at("2026-05-02")] == ("succeeded", 1, None)
    assert final[at("2026-06-02")][0] == "skipped"
    with Database(db_url, environ={}) as db:
        sent = db.transaction(
            lambda conn: conn.execute(sa.select(sa.func.count()).select_from(messages)).scalar()
        )
    assert sent == 4 * 2  # one message per recipient per backfilled slot


def test_a_dry_run_counts_the_slots_and_writes_nothing(run: Any, db_url: str) -> None:
    sid = create(run)
    ok(backfill(run, sid, "2026-05-01T00:00:00Z", "2026-05-02T23:00:00Z", "--json"))
    before = table_counts(db_url)

    dry = backfill(run, sid, "2026-05-02T00:00:00Z", "2026-05-05T23:00:00Z", "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert dry.stdout.startswith("schedule 1: dry run, nothing written: would record 3 run(s);")
    assert ok(
        backfill(run, sid, "2026-05-02T00:00:00Z", "2026-05-05T23:00:00Z", "--dry-run", "--json")
    ) == {"slots": 4, "runs_created": 3, "already_recorded": 1}
    assert table_counts(db_url) == before  # no run, no heartbeat, last_run_at unchanged


def test_a_range_of_exactly_the_limit_is_accepted_and_one_slot_more_is_not(
    run: Any, db_url: str
) -> None:
    sid = create(run, name="minutely", cadence=("--cadence", "cron", "--cron", "* * * * *"))
    start = "2026-06-05T00:00:00Z"
    within = ok(backfill(run, sid, start, "2026-06-05T16:39:00Z", "--dry-run", "--json"))
    assert within["slots"] == 1000
    over = backfill(run, sid, start, "2026-06-05T16:40:00Z")
    assert over.returncode == 2
    assert "more than 1000 slots" in over.stderr


REFUSED = [
    (["--from", "2026-05-03T00:00:00Z", "--to", "2026-05-01T00:00:00Z"], "is after --to"),
    (["--from", "tomorrow", "--to", "2026-05-01T00:00:00Z"], "--from: invalid instant"),
    (["--from", "2026-05-01", "--to", "2026-02-30T10:00"], "--to: invalid instant"),
    (["--from", "2023-01-01T00:00:00Z", "--to", "2026-06-01T00:00:00Z"], "more than 1000 slots"),
    (["--from", "2026-06-01T00:00:00Z", "--to", "2026-06-11T00:00:00Z"], "is after now"),
]


@pytest.mark.parametrize(("args", "message"), REFUSED)
def test_a_bad_range_is_refused_on_one_line_and_writes_nothing(
    run: Any, db_url: str, args: list[str], message: str
) -> None:
    sid = create(run)
    before = table_counts(db_url)
    result = run("schedules", "backfill", sid, *args)
    assert (result.returncode, result.stdout) == (2, "")
    assert result.stderr.count("\n") == 1, result.stderr
    assert result.stderr.startswith("schedctl: error: ")
    assert message in result.stderr
    assert table_counts(db_url) == before


def test_an_unknown_paused_or_other_accounts_schedule_is_refused(run: Any, db_url: str) -> None:
    sid = create(run)
    paused = create(run, "--paused", name="paused")
    ok(run("accounts", "create", "other", "--json"))
    before = table_counts(db_url)
    span = ["--from", "2026-05-01T00:00:00Z", "--to", "2026-05-02T00:00:00Z"]

    for args, message in [
        (["99", *span], "no schedule 99 in account 'default'"),
        ([sid, *span, "--account", "other"], f"no schedule {sid} in account 'other'"),
        ([paused, *span], f"schedule {paused} is paused"),
    ]:
        result = run("schedules", "backfill", *args)
        assert (result.returncode, result.stdout) == (2, ""), args
        assert result.stderr.count("\n") == 1, result.stderr
        assert message in result.stderr, args
    assert table_counts(db_url) == before
