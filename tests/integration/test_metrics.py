"""`schedctl metrics`: the Prometheus text format (SPEC §12), on both dialects.

The output is read back with prometheus_client's own parser, and every number is
compared with the rows it counts after real `tick` and `digest` runs against a
loopback SMTP server.
"""

from __future__ import annotations

import os
import stat
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from prometheus_client.parser import text_string_to_metric_families

from schedctl import __version__, heartbeat
from schedctl.db.database import Database
from schedctl.db.schema import (
    digests,
    distributions,
    heartbeats,
    messages,
    schedule_runs,
    send_counters,
)
from schedctl.zones import tzdata_version
from support.cli import CliRunner
from support.delivery import enqueue_all, message
from support.smtp_server import SmtpServer

CREATED = datetime(2026, 11, 18, 8, 0, tzinfo=UTC)
T0 = datetime(2026, 11, 18, 9, 0, tzinfo=UTC)
CONFIG = '[reports.queries.ping]\nsql = "select 1 as one"\n'
FAMILIES = {
    "schedctl_last_success_timestamp_seconds": ("command",),
    "schedctl_heartbeat_status": ("command",),
    "schedctl_messages": ("status", "type"),
    "schedctl_oldest_due_message_age_seconds": (),
    "schedctl_runs_last_24h": ("status",),
    "schedctl_quota_used": (),
    "schedctl_quota_limit": (),
    "schedctl_digests_today": ("status",),
    "schedctl_distribution_last_completed_timestamp_seconds": (),
    "schedctl_info": ("version", "tzdata"),
}

Samples = dict[str, dict[tuple[tuple[str, str], ...], float]]


def parse(text: str) -> Samples:
    """Every family's samples, keyed by their sorted labels; each family once, a gauge."""
    found: Samples = {}
    for family in text_string_to_metric_families(text):
        assert family.type == "gauge", family
        assert family.documentation, family.name
        assert family.name not in found, family.name
        found[family.name] = {tuple(sorted(s.labels.items())): s.value for s in family.samples}
    return found


def scrape(cli: CliRunner, db_url: str, env: dict[str, str] | None = None) -> Samples:
    result = cli("metrics", db_url=db_url, env=env)
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    return parse(result.stdout)


def by(samples: Samples, name: str, label: str) -> dict[str, float]:
    return {dict(key)[label]: value for key, value in samples[name].items()}


def one(samples: Samples, name: str) -> float | None:
    values = samples[name]
    assert set(values) <= {()}, values
    return values.get(())


def rows(db_url: str, query: sa.Select[Any]) -> list[Any]:
    with Database(db_url, environ={}) as db:
        return db.transaction(lambda conn: list(conn.execute(query)), read_only=True)


def heartbeat_count(db_url: str) -> int:
    return int(rows(db_url, sa.select(sa.func.count()).select_from(heartbeats))[0][0])


def record(db_url: str, command: str, at: datetime) -> None:
    with Database(db_url, environ={}) as db:
        row = heartbeat.start_run(db, command, at)
        heartbeat.finish_run(db, row, finished_at=at, exit_code=0, counts={})


@pytest.fixture
def world(cli: CliRunner, db_url: str, tmp_path: Path, smtp: SmtpServer) -> dict[str, str]:
    """A report schedule and two digest users; the environment every run uses."""
    config = tmp_path / "schedctl.toml"
    config.write_text(CONFIG)
    env = {**smtp.env, "SCHEDCTL_CONFIG": str(config), "SCHEDCTL_DAILY_QUOTA": "100"}
    setup = {**env, "SCHEDCTL_NOW": CREATED.isoformat()}
    for args in [
        ["schedules", "create", "--name", "daily", "--kind", "sql", "--param", "query=ping",
         "--cadence", "daily", "--at", "09:00", "--to", "ops@example.org",
         "--to", "dev@example.org"],
        ["users", "add", "ann@example.com", "--digest-at", "08:00"],
        ["users", "add", "bob@example.com", "--digest-at", "08:00"],
        ["notify", "--user", "ann@example.com", "--title", "Your invoice is ready"],
    ]:  # fmt: skip
        result = cli(*args, db_url=db_url, env=setup)
        assert result.returncode == 0, (args, result.stderr)
    return {**env, "SCHEDCTL_NOW": T0.isoformat()}


def test_every_family_has_its_fixed_name_labels_help_and_type(cli: CliRunner, db_url: str) -> None:
    result = cli("metrics", db_url=db_url)

    assert result.returncode == 0, result.stderr
    samples = parse(result.stdout)
    assert set(samples) == set(FAMILIES)
    for name, labels in FAMILIES.items():
        assert f"# HELP {name} " in result.stdout
        assert f"# TYPE {name} gauge" in result.stdout
        for key in samples[name]:
            assert tuple(sorted(labels)) == tuple(k for k, _ in key), (name, key)
    tzdata = tzdata_version()
    assert samples["schedctl_info"] == {(("tzdata", tzdata), ("version", __version__)): 1.0}


def test_after_a_tick_and_a_digest_the_metrics_match_the_database(
    cli: CliRunner, db_url: str, world: dict[str, str], smtp: SmtpServer
) -> None:
    for command in ["tick", "digest"]:
        result = cli(command, db_url=db_url, env=world)
        assert result.returncode == 0, (command, result.stderr)
    assert len(smtp.accepted) == 3  # two report mails, one digest

    samples = scrape(cli, db_url, world)

    m = messages.c
    outbox = rows(db_url, sa.select(m.status, m.type, sa.func.count()).group_by(m.status, m.type))
    assert samples["schedctl_messages"] == {
        (("status", s), ("type", t)): float(n) for s, t, n in outbox
    }
    assert by(samples, "schedctl_messages", "type") == {"REPORT": 2.0, "DIGEST": 1.0}
    assert one(samples, "schedctl_oldest_due_message_age_seconds") == 0.0
    r = schedule_runs.c
    runs = dict(rows(db_url, sa.select(r.status, sa.func.count()).group_by(r.status)))
    assert runs == {"succeeded": 1}
    assert by(samples, "schedctl_runs_last_24h", "status") == {
        "succeeded": 1.0, "failed": 0.0, "skipped": 0.0,
    }  # fmt: skip
    sent = rows(db_url, sa.select(send_counters.c.sent).where(send_counters.c.day == "2026-11-18"))
    assert sent == [(3,)]
    assert one(samples, "schedctl_quota_used") == 3.0
    assert one(samples, "schedctl_quota_limit") == 100.0
    d = digests.c
    today = dict(rows(db_url, sa.select(d.status, sa.func.count()).group_by(d.status)))
    assert today == {"completed": 1, "skipped": 1}
    assert by(samples, "schedctl_digests_today", "status") == {
        "scheduled": 0.0, "completed": 1.0, "skipped": 1.0, "failed": 0.0, "deferred": 0.0,
    }  # fmt: skip
    h = heartbeats.c
    last = rows(
        db_url,
        sa.select(h.command, sa.func.max(h.finished_at))
        .where(h.outcome == "success")
        .group_by(h.command),
    )
    assert by(samples, "schedctl_last_success_timestamp_seconds", "command") == pytest.approx(
        {command: at.timestamp() for command, at in last}
    )
    assert {"tick", "digest"} <= {command for command, _ in last}
    assert by(samples, "schedctl_heartbeat_status", "command") == {"tick": 0.0, "digest": 0.0}
    assert one(samples, "schedctl_distribution_last_completed_timestamp_seconds") is None


def test_the_distribution_timestamp_is_when_the_latest_completed_one_finished(
    cli: CliRunner, db_url: str
) -> None:
    finished = datetime(2026, 11, 17, 6, 30, tzinfo=UTC)
    with Database(db_url, environ={}) as db:
        db.transaction(
            lambda conn: conn.execute(
                distributions.insert(),
                [
                    {"business_date": day, "status": status, "created_at": at,
                     "updated_at": at, "finished_at": at}
                    for day, status, at in [
                        (datetime(2026, 11, 16).date(), "completed", finished - timedelta(1)),
                        (datetime(2026, 11, 17).date(), "completed", finished),
                        (datetime(2026, 11, 18).date(), "failed", finished + timedelta(1)),
                    ]
                ],
            )
        )  # fmt: skip

    samples = scrape(cli, db_url)

    assert one(samples, "schedctl_distribution_last_completed_timestamp_seconds") == (
        finished.timestamp()
    )


def test_heartbeat_status_is_0_green_1_yellow_2_red_3_unknown(
    cli: CliRunner, db_url: str, tmp_path: Path
) -> None:
    config = tmp_path / "schedctl.toml"
    config.write_text('[heartbeat]\ncommands = ["tick", "digest", "reconcile", "distribute"]\n')
    # Judged on the clock heartbeat rows carry: the database's, not SCHEDCTL_NOW.
    now = datetime.now(UTC)
    record(db_url, "tick", now - timedelta(minutes=5))
    record(db_url, "digest", now - timedelta(minutes=30))
    record(db_url, "reconcile", now - timedelta(days=3))
    # A command that only reads: a row from before such commands stopped recording is
    # neither judged nor exported, as `heartbeat` does not list it.
    record(db_url, "accounts list", now - timedelta(minutes=1))

    samples = scrape(cli, db_url, {"SCHEDCTL_CONFIG": str(config)})

    assert by(samples, "schedctl_heartbeat_status", "command") == {
        "tick": 0.0, "digest": 1.0, "reconcile": 2.0, "distribute": 3.0,
    }  # fmt: skip
    assert set(by(samples, "schedctl_last_success_timestamp_seconds", "command")) == {
        "tick", "digest", "reconcile",
    }  # fmt: skip
    checked = cli("heartbeat", "--json", db_url=db_url, env={"SCHEDCTL_CONFIG": str(config)})
    assert {c["command"]: c["status"] for c in checked.json["commands"] if c["monitored"]} == {
        "tick": "green", "digest": "yellow", "reconcile": "red", "distribute": "unknown",
    }  # fmt: skip


def test_the_oldest_due_message_is_one_dispatch_may_send_now(cli: CliRunner, db_url: str) -> None:
    now = T0
    enqueue_all(
        db_url,
        [
            message(1, send_at=now - timedelta(minutes=10)),  # due for 600 s
            message(2, send_at=now - timedelta(minutes=3)),
            message(3, send_at=now + timedelta(minutes=5)),  # not yet
            message(4, send_at=now - timedelta(days=2), status="paused"),  # not sendable
        ],
        now=now - timedelta(days=3),
    )
    # A retry waiting out its backoff is not due, however old its send time.
    with Database(db_url, environ={}) as db:
        db.transaction(
            lambda conn: conn.execute(
                messages.update()
                .where(messages.c.idempotency_key == "test:2")
                .values(send_at=now - timedelta(hours=5), status="retrying",
                        next_attempt_at=now + timedelta(minutes=1))
            )
        )  # fmt: skip

    samples = scrape(cli, db_url, {"SCHEDCTL_NOW": now.isoformat()})

    assert one(samples, "schedctl_oldest_due_message_age_seconds") == 600.0
    assert by(samples, "schedctl_messages", "status") == {
        "scheduled": 2.0, "retrying": 1.0, "paused": 1.0,
    }  # fmt: skip


def test_without_a_quota_the_limit_has_no_sample(cli: CliRunner, db_url: str) -> None:
    samples = scrape(cli, db_url)

    assert one(samples, "schedctl_quota_limit") is None
    assert one(samples, "schedctl_quota_used") == 0.0


def test_metrics_record_no_heartbeat_row(cli: CliRunner, db_url: str, tmp_path: Path) -> None:
    before = heartbeat_count(db_url)

    for args in [["metrics"], ["metrics", "--json"], ["metrics", "--output", str(tmp_path / "m")]]:
        assert cli(*args, db_url=db_url).returncode == 0, args

    assert heartbeat_count(db_url) == before


def test_json_lists_every_sample(cli: CliRunner, db_url: str) -> None:
    text = cli("metrics", db_url=db_url).stdout
    result = cli("metrics", "--json", db_url=db_url)

    assert result.returncode == 0, result.stderr
    data = result.json
    assert data["output"] is None
    assert data["count"] == len(data["samples"])
    assert {
        (s["name"], tuple(sorted(s["labels"].items()))): s["value"] for s in data["samples"]
    } == {
        (name, key): value for name, values in parse(text).items() for key, value in values.items()
    }


def test_output_replaces_the_file_atomically(cli: CliRunner, db_url: str, tmp_path: Path) -> None:
    target = tmp_path / "schedctl.prom"
    target.write_text("old\n")
    target.chmod(0o640)
    inode = target.stat().st_ino

    result = cli("metrics", "--output", str(target), db_url=db_url)

    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("wrote ")
    assert str(target) in result.stdout
    assert set(parse(target.read_text())) == set(FAMILIES)
    # A new file renamed over the old one: a reader never sees a half-written file.
    assert target.stat().st_ino != inode
    assert stat.S_IMODE(target.stat().st_mode) == 0o640
    assert [p.name for p in tmp_path.iterdir() if "prom" in p.name] == ["schedctl.prom"]


def test_a_new_output_file_is_readable_by_the_collector(
    cli: CliRunner, db_url: str, tmp_path: Path
) -> None:
    target = tmp_path / "new.prom"
    umask = os.umask(0o022)
    try:
        result = cli("metrics", "--output", str(target), "--quiet", db_url=db_url)
    finally:
        os.umask(umask)

    assert result.returncode == 0, result.stderr
    assert result.stdout == ""
    assert stat.S_IMODE(target.stat().st_mode) == 0o644


@pytest.mark.parametrize(
    ("output", "says"),
    [
        ("{tmp}/missing/schedctl.prom", "does not exist"),
        ("{tmp}", "is a directory"),
        ("", "empty file name"),
        ("-q", "'-q' looks like an option, not a file name (for a file of that name, write ./-q)"),
    ],
)
def test_a_bad_output_is_one_line_exit_2_and_writes_nothing(
    cli: CliRunner, db_url: str, tmp_path: Path, output: str, says: str
) -> None:
    before = sorted(tmp_path.rglob("*"))

    result = cli(
        "metrics", "--output", output.replace("{tmp}", str(tmp_path)), db_url=db_url, cwd=tmp_path
    )

    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr.count("\n") == 1, result.stderr
    assert result.stderr.startswith("schedctl: error: ")
    assert "--output" in result.stderr
    assert says in result.stderr
    assert sorted(tmp_path.rglob("*")) == before


def test_one_accounts_metrics_count_only_its_rows(db_url: str) -> None:
    from schedctl.accounts import create_account
    from schedctl.config import Settings
    from schedctl.metrics import render_metrics

    with Database(db_url, environ={}) as db:
        acme = db.transaction(lambda conn: create_account(conn, "acme", T0))
    enqueue_all(db_url, [message(1), message(2), message(3, account_id=acme, type="INIT")])

    with Database(db_url, environ={"SCHEDCTL_NOW": T0.isoformat()}) as db:
        everyone = parse(render_metrics(db, Settings(database_url=db_url)))
        only_acme = parse(render_metrics(db, Settings(database_url=db_url), account_id=acme))

    assert by(everyone, "schedctl_messages", "type") == {"REPORT": 2.0, "INIT": 1.0}
    assert by(only_acme, "schedctl_messages", "type") == {"INIT": 1.0}


@pytest.mark.postgres
@pytest.mark.parametrize("dialect", ["postgresql"])
def test_a_login_role_bound_to_an_account_counts_only_its_rows(
    cli: CliRunner, db_url: str, tenant_url: str
) -> None:
    from sqlalchemy.engine import make_url

    from schedctl.accounts import create_account
    from support.databases import connect_pg

    with Database(db_url, environ={}) as db:
        acme = db.transaction(lambda conn: create_account(conn, "acme", T0))
    enqueue_all(db_url, [message(1), message(2), message(3, account_id=acme, type="INIT")])
    with connect_pg(str(make_url(db_url).database)) as admin:
        admin.execute(
            "INSERT INTO account_roles (role_name, account_id) VALUES (%s, %s)",
            (make_url(tenant_url).username, acme),
        )

    samples = scrape(cli, tenant_url)

    assert by(samples, "schedctl_messages", "type") == {"INIT": 1.0}
