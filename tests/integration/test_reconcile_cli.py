"""`schedctl reconcile` through the CLI, on both dialects (SPEC §8).

Each action: the usage snapshot and its reruns, dead leases of runs and messages
(and live ones left alone), past days' quota reservations, the purges past retention,
the distribution step's no-op, ``--dry-run`` writing nothing, and bad input, a clock
ahead and an unreachable database refused with their exit codes.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa

from schedctl import alerts as alerting
from schedctl.db.database import Database
from schedctl.db.schema import (
    alert_deliveries,
    alerts,
    digests,
    email_log,
    heartbeats,
    messages,
    metadata,
    schedule_runs,
    send_counters,
    usage_history,
)
from support.reconcile import Seed, count, dump, now, row, rows


def reconcile(cli: Any, db_url: str, *args: str, at: datetime | None = None, **env: str) -> Any:
    environ = {"SCHEDCTL_NOW": (at or now()).isoformat(), **env}
    return cli("reconcile", "--json", *args, db_url=db_url, env=environ)


def report(result: Any) -> dict[str, Any]:
    assert result.returncode == 0, result.stderr
    data: dict[str, Any] = json.loads(result.stdout)
    return data


def history(db_url: str) -> dict[tuple[int, str, str, str], int]:
    return {
        (r.account_id, r.day.isoformat(), r.message_type, r.outcome): r.total
        for r in rows(db_url, usage_history)
    }


# --- usage snapshot ---------------------------------------------------------------------


def test_snapshot_counts_each_accounts_day_by_type_and_outcome_and_a_rerun_updates(
    cli: Any, db_url: str
) -> None:
    seed = Seed(db_url)
    t = now()
    today, yesterday = t.date(), t.date() - timedelta(days=1)
    other = seed.account("acme")
    report_msg = seed.message("REPORT", status="sent")
    digest_msg = seed.message("DIGEST", status="sent")
    acme_msg = seed.message("REPORT", account_id=other, status="sent")
    start_of_today = datetime.combine(today, datetime.min.time(), tzinfo=t.tzinfo)
    seed.attempts(report_msg, start_of_today - timedelta(hours=3), "retry")
    seed.attempts(report_msg, start_of_today - timedelta(hours=2), "sent", n=2)
    seed.attempts(digest_msg, start_of_today, "sent")  # midnight: today's
    seed.attempts(acme_msg, start_of_today - timedelta(seconds=1), "failed", account_id=other)
    seed.attempts(report_msg, start_of_today - timedelta(days=2), "sent")  # not covered

    first = report(reconcile(cli, db_url))
    assert first["usage_dates"] == [yesterday.isoformat(), today.isoformat()]
    assert first["usage_snapshot"] == 4
    assert first["usage_accounts"] == 2
    expected = {
        (1, yesterday.isoformat(), "REPORT", "retry"): 1,
        (1, yesterday.isoformat(), "REPORT", "sent"): 2,
        (1, today.isoformat(), "DIGEST", "sent"): 1,
        (other, yesterday.isoformat(), "REPORT", "failed"): 1,
    }
    assert history(db_url) == expected

    # Unchanged: a rerun writes nothing and the rows keep their update time.
    stamped = {r.id: r.updated_at for r in rows(db_url, usage_history)}
    assert report(reconcile(cli, db_url))["usage_snapshot"] == 0
    assert {r.id: r.updated_at for r in rows(db_url, usage_history)} == stamped

    # More attempts today, and a deleted message: its attempts become UNKNOWN.
    seed.attempts(digest_msg, start_of_today + timedelta(minutes=1), "sent")
    with_deleted(db_url, report_msg)
    again = report(reconcile(cli, db_url))
    assert again["usage_snapshot"] == 5  # DIGEST updated, 2 REPORT removed, 2 UNKNOWN added
    expected.pop((1, yesterday.isoformat(), "REPORT", "retry"))
    expected.pop((1, yesterday.isoformat(), "REPORT", "sent"))
    expected[(1, yesterday.isoformat(), "UNKNOWN", "retry")] = 1
    expected[(1, yesterday.isoformat(), "UNKNOWN", "sent")] = 2
    expected[(1, today.isoformat(), "DIGEST", "sent")] = 2
    assert history(db_url) == expected


def with_deleted(db_url: str, message_id: int) -> None:
    from schedctl.db.database import Database

    with Database(db_url) as db:
        db.transaction(lambda c: c.execute(messages.delete().where(messages.c.id == message_id)))


def test_a_day_whose_log_shrank_keeps_its_snapshot(cli: Any, db_url: str) -> None:
    """Purged attempts (or a clock behind) never make a stored day smaller."""
    seed = Seed(db_url)
    at = now() - timedelta(minutes=5)  # (the day before, in the first minutes of a day)
    msg = seed.message("REPORT", status="sent")
    seed.attempts(msg, at, "sent", n=3)
    report(reconcile(cli, db_url))
    with_deleted(db_url, msg)  # attempts kept, as UNKNOWN
    from schedctl.db.database import Database

    with Database(db_url) as db:
        db.transaction(lambda c: c.execute(email_log.delete()))
    data = report(reconcile(cli, db_url))
    assert data["usage_kept"] == 1
    assert data["usage_snapshot"] == 0
    assert history(db_url) == {(1, at.date().isoformat(), "REPORT", "sent"): 3}


def test_date_snapshots_one_day(cli: Any, db_url: str) -> None:
    seed = Seed(db_url)
    t = now()
    day = t.date() - timedelta(days=5)
    msg = seed.message("ALERT", status="sent")
    seed.attempts(msg, datetime.combine(day, datetime.min.time(), tzinfo=t.tzinfo), "sent")
    data = report(reconcile(cli, db_url, "--date", day.isoformat()))
    assert data["usage_dates"] == [day.isoformat()]
    assert history(db_url) == {(1, day.isoformat(), "ALERT", "sent"): 1}


@pytest.mark.parametrize(
    ("args", "env", "says"),
    [
        (["--date", "2026-02-30"], {}, "invalid date"),
        (["--date", "tomorrow"], {}, "invalid date"),
        (["--date", "2999-01-01"], {}, "after today"),
        (["--date", "2001-01-01"], {}, "older than the email_log retention"),
        (["--frobnicate"], {}, "--frobnicate"),
        ([], {"SCHEDCTL_RECONCILE_BATCH_SIZE": "0"}, "SCHEDCTL_RECONCILE_BATCH_SIZE"),
        ([], {"SCHEDCTL_RECONCILE_EMAIL_LOG_RETENTION": "1d"}, "at least 2d"),
        ([], {"SCHEDCTL_RECONCILE_RUNS_RETENTION": "soon"}, "SCHEDCTL_RECONCILE_RUNS_RETENTION"),
    ],
)
def test_bad_input_is_one_line_exit_2_and_nothing_written(
    cli: Any, db_url: str, args: list[str], env: dict[str, str], says: str
) -> None:
    seeded = _everything(Seed(db_url))
    before = dump(db_url)
    result = reconcile(cli, db_url, *args, **env)
    assert result.returncode == 2, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert says in result.stderr
    assert json.loads(result.stdout)["error"]["code"] == 2
    assert dump(db_url) == before
    assert seeded


def test_a_clock_ahead_of_the_database_is_refused(cli: Any, db_url: str) -> None:
    """With SCHEDCTL_NOW ahead, live leases would look dead: exit 2, nothing written."""
    _everything(Seed(db_url))
    before = dump(db_url)
    result = reconcile(cli, db_url, at=now() + timedelta(hours=2))
    assert result.returncode == 2
    assert "ahead of the database's clock" in result.stderr
    assert dump(db_url) == before


def test_a_clock_behind_does_less_and_breaks_nothing(cli: Any, db_url: str) -> None:
    seed = Seed(db_url)
    seeded = _everything(seed)
    data = report(reconcile(cli, db_url, at=now() - timedelta(days=400)))
    assert data["leases_recovered"] == 0  # every lease is still live a year ago
    assert data["tracking_purged"] == data["email_log_purged"] == data["runs_purged"] == 0
    assert row(db_url, schedule_runs, seeded["dead_run"]).status == "running"


# --- leases -------------------------------------------------------------------------------


def test_dead_runs_become_retryable_or_failed_and_a_live_one_is_not_touched(
    cli: Any, db_url: str
) -> None:
    seed = Seed(db_url)
    t = now()
    schedule = seed.schedule()
    expired = {"lease_owner": "gone:1:x", "lease_expires_at": t - timedelta(minutes=1)}
    dead = seed.run(schedule, status="running", attempt=1, started_at=t, **expired)
    last = seed.run(schedule, status="running", attempt=3, started_at=t, **expired)
    live = seed.run(
        schedule, status="running", attempt=1, started_at=t,
        lease_owner="alive:2:y", lease_expires_at=t + timedelta(minutes=5),
    )  # fmt: skip
    live_before = row(db_url, schedule_runs, live)

    data = report(reconcile(cli, db_url, at=t))
    assert (data["runs_retryable"], data["runs_failed"]) == (1, 1)
    assert data["leases_recovered"] == 2

    retry = row(db_url, schedule_runs, dead)
    assert (retry.status, retry.attempt, retry.lease_owner) == ("failed", 1, None)
    assert retry.next_attempt_at == t  # tick takes it as any due retry
    assert retry.error == "the process running it stopped (lease expired) on attempt 1 of 3"
    final = row(db_url, schedule_runs, last)
    assert (final.status, final.next_attempt_at, final.lease_owner) == ("failed", None, None)
    assert "attempt 3 of 3" in final.error
    assert row(db_url, schedule_runs, live) == live_before

    assert report(reconcile(cli, db_url, at=t))["leases_recovered"] == 0  # done once


def test_dead_messages_count_the_lost_attempt_and_fail_at_the_limit(cli: Any, db_url: str) -> None:
    seed = Seed(db_url)
    t = now()
    expired = {"lease_owner": "gone:1:x", "lease_expires_at": t - timedelta(seconds=1)}
    first = seed.message(status="scheduled", attempts=0, **expired)
    retried = seed.message(status="retrying", attempts=4, **expired)
    live = seed.message(
        status="scheduled", lease_owner="alive:2:y", lease_expires_at=t + timedelta(minutes=9)
    )
    sent = seed.message(status="sent", attempts=1)
    untouched = {i: row(db_url, messages, i) for i in (live, sent)}

    data = report(reconcile(cli, db_url, at=t))
    assert (data["messages_retrying"], data["messages_failed"]) == (1, 1)

    again = row(db_url, messages, first)
    assert (again.status, again.attempts, again.reason_code) == ("retrying", 1, "LEASE_EXPIRED")
    assert (again.lease_owner, again.lease_expires_at, again.next_attempt_at) == (None,) * 3
    out = row(db_url, messages, retried)  # [messages] max_attempts = 5 by default
    assert (out.status, out.attempts, out.reason_code) == ("failed", 5, "LEASE_EXPIRED")
    assert {i: row(db_url, messages, i) for i in (live, sent)} == untouched


def test_max_attempts_comes_from_the_messages_table(cli: Any, db_url: str, tmp_path: Any) -> None:
    seed = Seed(db_url)
    t = now()
    message = seed.message(
        status="scheduled", lease_owner="gone:1:x", lease_expires_at=t - timedelta(minutes=1)
    )
    config = tmp_path / "schedctl.toml"
    config.write_text("[messages]\nmax_attempts = 1\n")
    data = report(reconcile(cli, db_url, at=t, SCHEDCTL_CONFIG=str(config)))
    assert data["messages_failed"] == 1
    assert row(db_url, messages, message).status == "failed"


def test_past_days_reservations_are_released_and_todays_kept(cli: Any, db_url: str) -> None:
    seed = Seed(db_url)
    t = now()
    seed.counter(t.date() - timedelta(days=2), sent=10, reserved=2)
    seed.counter(t.date() - timedelta(days=1), sent=7, reserved=1)
    seed.counter(t.date(), sent=3, reserved=4)
    data = report(reconcile(cli, db_url, at=t))
    assert data["reservations_released"] == 3
    assert [(r.sent, r.reserved) for r in sorted(rows(db_url, send_counters))] == [
        (10, 0), (7, 0), (3, 4),
    ]  # fmt: skip


# --- purges --------------------------------------------------------------------------------


def test_purges_what_is_past_retention_and_keeps_the_rest(cli: Any, db_url: str) -> None:
    seed = Seed(db_url)
    t = now()
    user = seed.user()
    old_day = seed.digest_day(user, t.date() - timedelta(days=40), t - timedelta(days=10))
    recent_day = seed.digest_day(user, t.date() - timedelta(days=3), t + timedelta(days=27))
    # Expired early ([digest] retention lowered) but possibly still someone's today: kept.
    today_row = seed.digest_day(user, t.date(), t - timedelta(minutes=1))

    old, new = t - timedelta(days=91), t - timedelta(days=1)
    stale_tick = seed.heartbeat("tick", old - timedelta(hours=1))
    kept_tick = seed.heartbeat("tick", new)
    last_success_of_distribute = seed.heartbeat("distribute", old - timedelta(hours=2))
    failed_after = seed.heartbeat("distribute", old, outcome="failed")  # newest run: kept

    msg = seed.message(status="sent")
    seed.attempts(msg, old, "sent", n=3)
    seed.attempts(msg, new, "sent")

    schedule = seed.schedule()
    old_done = seed.run(schedule, status="succeeded", finished_at=old)
    old_skipped = seed.run(schedule, status="skipped", finished_at=old)
    old_final = seed.run(schedule, status="failed", finished_at=old)
    old_retrying = seed.run(schedule, status="failed", finished_at=old, next_attempt_at=t)
    new_done = seed.run(schedule, status="succeeded", finished_at=new)

    data = report(reconcile(cli, db_url, at=t))
    assert data["tracking_purged"] == 1
    assert {r.id for r in rows(db_url, digests)} == {recent_day, today_row}
    assert old_day not in {r.id for r in rows(db_url, digests)}
    assert data["heartbeats_purged"] == 1
    assert {r.id for r in rows(db_url, heartbeats, heartbeats.c.command != "reconcile")} == {
        kept_tick, last_success_of_distribute, failed_after,
    }  # fmt: skip
    assert stale_tick not in {r.id for r in rows(db_url, heartbeats)}
    assert data["email_log_purged"] == 3
    assert count(db_url, email_log) == 1
    assert data["runs_purged"] == 3
    assert {r.id for r in rows(db_url, schedule_runs)} == {old_retrying, new_done}
    assert {old_done, old_skipped, old_final}.isdisjoint(r.id for r in rows(db_url, schedule_runs))
    assert data["largest_batch"] == 3
    # The snapshot ran before the purge: the day it counted is intact.
    assert report(reconcile(cli, db_url, at=t))["tracking_purged"] == 0


def test_retentions_are_configurable(cli: Any, db_url: str, tmp_path: Any) -> None:
    seed = Seed(db_url)
    t = now()
    msg = seed.message(status="sent")
    seed.attempts(msg, t - timedelta(days=3), "sent")
    seed.heartbeat("tick", t - timedelta(days=3))
    seed.heartbeat("tick", t)
    config = tmp_path / "schedctl.toml"
    config.write_text(
        '[reconcile]\nemail_log_retention = "2d"\nheartbeats_retention = "1d"\nbatch_size = 1\n'
    )
    data = report(reconcile(cli, db_url, at=t, SCHEDCTL_CONFIG=str(config)))
    assert (data["email_log_purged"], data["heartbeats_purged"]) == (1, 1)


def test_alerts_past_retention_are_purged_with_what_the_channels_were_told(
    cli: Any, db_url: str
) -> None:
    t = now()
    with Database(db_url, environ={}) as db:
        for key, at in [("quota:old:80", t - timedelta(days=91)), ("quota:new:80", t)]:
            db.transaction(
                lambda c, key=key, at=at: alerting.record(
                    c, [alerting.Alert("quota", key, "x")], at
                )
            )
        db.transaction(
            lambda c: c.execute(
                alert_deliveries.insert(),
                [{"alert_id": i, "channel": "slack", "attempts": 1, "notified_at": t}
                 for i in c.execute(sa.select(alerts.c.id)).scalars()],
            )
        )  # fmt: skip

    data = report(reconcile(cli, db_url, at=t))

    assert data["alerts_purged"] == 1
    assert [r.key for r in rows(db_url, alerts)] == ["quota:new:80"]
    assert len(rows(db_url, alert_deliveries)) == 1  # the old one's went with it


# --- distributions, dry run ------------------------------------------------------------


def test_without_distributions_or_a_mirror_the_mirror_step_is_a_no_op(
    cli: Any, db_url: str
) -> None:
    data = report(reconcile(cli, db_url, "--repair"))
    installed = "distributions" in metadata.tables  # once branch distribute is merged
    assert data["distributions"] == ("no mirror configured" if installed else "not installed")
    assert (data["mirror_missing"], data["mirror_repaired"], data["plans_purged"]) == (0, 0, 0)


def _everything(seed: Seed) -> dict[str, int]:
    """One of each thing reconcile acts on."""
    t = now()
    expired = {"lease_owner": "gone:1:x", "lease_expires_at": t - timedelta(minutes=1)}
    schedule = seed.schedule()
    dead_run = seed.run(schedule, status="running", attempt=1, started_at=t, **expired)
    seed.run(schedule, status="succeeded", finished_at=t - timedelta(days=100))
    msg = seed.message(status="scheduled", **expired)
    seed.attempts(msg, t - timedelta(hours=1), "retry")
    seed.attempts(msg, t - timedelta(days=100), "sent")
    user = seed.user()
    seed.digest_day(user, t.date() - timedelta(days=60), t - timedelta(days=30))
    seed.heartbeat("tick", t - timedelta(days=100))
    seed.heartbeat("tick", t)
    seed.counter(t.date() - timedelta(days=1), sent=1, reserved=1)
    return {"dead_run": dead_run, "dead_message": msg}


def test_dry_run_reports_everything_and_writes_nothing(cli: Any, db_url: str) -> None:
    seed = Seed(db_url)
    _everything(seed)
    before = dump(db_url)
    dry = report(reconcile(cli, db_url, "--dry-run", "--repair"))
    assert dump(db_url) == before  # every row of every table, heartbeats included
    assert dry["dry_run"] is True
    real = report(reconcile(cli, db_url))
    assert real["dry_run"] is False
    for key in (
        "leases_recovered", "tracking_purged", "usage_snapshot", "mirror_missing",
        "runs_retryable", "messages_retrying", "reservations_released",
        "heartbeats_purged", "email_log_purged", "runs_purged",
    ):  # fmt: skip
        assert dry[key] == real[key], key
    assert dry["leases_recovered"] == 2
    assert dry["usage_snapshot"] == 1


def test_a_run_records_its_heartbeat(cli: Any, db_url: str) -> None:
    report(reconcile(cli, db_url))
    beats = [r for r in rows(db_url, heartbeats) if r.command == "reconcile"]
    assert [(b.outcome, b.exit_code) for b in beats] == [("success", 0)]
    assert beats[0].counts["leases_recovered"] == 0


def test_human_output_is_a_short_plain_summary(cli: Any, db_url: str) -> None:
    result = cli("reconcile", db_url=db_url)
    assert result.returncode == 0, result.stderr
    assert "leases recovered: 0" in result.stdout
    assert "mirror: not checked" in result.stdout
    assert cli("reconcile", "--quiet", db_url=db_url).stdout == ""


def test_an_unreachable_database_exits_75(cli: Any, closed_port: int) -> None:
    url = f"postgresql://127.0.0.1:{closed_port}/schedctl?connect_timeout=2"
    result = cli("reconcile", db_url=url, env={"SCHEDCTL_DB_RETRY_SECONDS": "0"})
    assert result.returncode == 75, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
