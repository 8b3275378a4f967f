"""A cross-engine distribution day, killed, raced and cut off ("Done when").

The source is a MariaDB table with duplicate IDs (the seed's SC_1_120, with two extra
columns); the campaigns and the control and target tables are in one PostgreSQL
database (the seed's DSSB_APP), the mirror in another (SPSS); schedctl's own store
is a third. `schedctl distribute` runs as cron runs it, a separate process per run;
what it writes is compared with an independent model of SPEC §6
(support.distribute.expected_rows).

- An uninterrupted day; a second run answers already_done; --preview changes no table.
- SIGKILLed during the plan, during the target copy and during the mirror copy (each
  on its own date, with its own campaigns), then rerun: the tables equal the model;
  the source changed between the crash and the rerun changes nothing.
- Three concurrent runs of one date: one writes, the others answer already_done.
- The target database refusing connections half-way: exit 75, and a rerun completes.

At `make test` size the source has 5,000 rows and 4 campaigns a day; ``SOAK_DISTRIBUTE=1``
(`make soak-distribute`) runs 1,000,000 rows and 10 campaigns.
"""

from __future__ import annotations

import email
import email.policy
import json
import os
import random
import re
import signal
import subprocess
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from support.cli import SCHEDCTL
from support.databases import PostgresDatabases, connect_pg, pg_url
from support.distribute import (
    Campaign,
    destination_toml,
    expected_rows,
    mariadb_database,
    seed_table,
    table_rows,
)
from support.processes import Schedctl

SOAK = os.environ.get("SOAK_DISTRIBUTE") == "1"
ROWS = 1_000_000 if SOAK else 5_000
DISTINCT = int(ROWS * 0.9)  # the other tenth are duplicates
CAMPAIGNS_PER_DAY = 10 if SOAK else 4
BATCH = 5000 if SOAK else 25
FIRST_DAY = date(2026, 3, 2)

pytestmark = [pytest.mark.postgres]


@dataclass
class World:
    """One distribution setup: MariaDB source, PostgreSQL targets, mirror and store."""

    tmp: Path
    store_url: str
    source: sa.Engine
    targets: sa.Engine
    mirror: sa.Engine
    store: sa.Engine
    targets_db: str
    ids: dict[str, tuple[Any, ...]]
    campaigns: list[Campaign] = field(default_factory=list)
    config: Path | None = None

    def env(self, day: date, **extra: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("SCHEDCTL_")}
        env.update(
            NO_COLOR="1",
            SCHEDCTL_DATABASE_URL=self.store_url,
            SCHEDCTL_CONFIG=str(self.config),
            SCHEDCTL_NOW=f"{day.isoformat()}T06:00:00Z",
            SCHEDCTL_MAIL_BACKEND="file",
            SCHEDCTL_MAIL_FILE_DIR=str(self.tmp / "mail"),
        )
        env.update(extra)
        return env

    def run(self, day: date, *args: str, **extra: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(SCHEDCTL), "distribute", "--json", *args],
            env=self.env(day, **extra), capture_output=True, text=True, timeout=1800, check=False,
        )  # fmt: skip

    def start(self, day: date, **extra: str) -> subprocess.Popen[str]:
        return Schedctl(
            [str(SCHEDCTL), "distribute", "--json"],
            env=self.env(day, **extra), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip

    def model(self, day: date) -> dict[str, Counter[tuple[Any, ...]]]:
        return expected_rows(self.ids, day, self.campaigns)

    def tables(self, day: date) -> dict[str, Counter[tuple[Any, ...]]]:
        """This date's rows in each destination (its campaigns are active that day only)."""
        prefix = f"D{day:%m%d}-"

        def of_day(rows: Counter[tuple[Any, ...]]) -> Counter[tuple[Any, ...]]:
            return Counter({r: n for r, n in rows.items() if str(r[1]).startswith(prefix)})

        return {
            "control": of_day(table_rows(self.targets, "sc_local_control")),
            "target": of_day(table_rows(self.targets, "sc_local_target")),
            "mirror": of_day(table_rows(self.mirror, "sc_theory_users")),
        }

    def check(self, day: date) -> dict[str, Counter[tuple[Any, ...]]]:
        expected, found = self.model(day), self.tables(day)
        assert max(found["control"].values(), default=1) == 1, "a control row written twice"
        assert max(found["target"].values(), default=1) == 1, "a target row written twice"
        assert found["control"] == expected["control"]
        assert found["target"] == expected["target"]
        assert found["mirror"] == expected["target"]  # the mirror gets the target groups
        assert sum(len(v) for v in expected.values()) == DISTINCT
        return found

    def store_scalar(self, sql: str) -> Any:
        with self.store.connect() as conn:
            return conn.exec_driver_sql(sql).scalar()


def _load_source(engine: sa.Engine, seed: int) -> dict[str, tuple[Any, ...]]:
    rng = random.Random(seed)
    ids: dict[str, tuple[Any, ...]] = {}
    while len(ids) < DISTINCT:
        iin = f"{rng.randrange(10**11, 10**12)}"
        ids[iin] = (f"region-{rng.randrange(20)}", rng.choice(["x", "y", None]))
    keys = list(ids)
    rows = [(i, 5, *ids[i]) for i in keys]
    rows += [(i, 5, *ids[i]) for i in rng.sample(keys, ROWS - DISTINCT)]  # duplicates
    rows += [(f"{rng.randrange(10**11, 10**12)}", 4, "other", None) for _ in range(500)]
    rng.shuffle(rows)
    raw = engine.raw_connection()
    try:
        with raw.cursor() as cursor:
            cursor.execute(
                "CREATE TABLE sc_1_120 (iin VARCHAR(12), count_day INT, tab1 VARCHAR(255),"
                " tab2 VARCHAR(255), KEY (count_day))"
            )
            for start in range(0, len(rows), 10_000):
                cursor.executemany(
                    "INSERT INTO sc_1_120 VALUES (%s, %s, %s, %s)", rows[start : start + 10_000]
                )
        raw.commit()
    finally:
        raw.close()
    return ids


@pytest.fixture
def world(postgres: PostgresDatabases, tmp_path: Path) -> Iterator[World]:
    with mariadb_database() as source_url:
        store_db, targets_db, mirror_db = (
            postgres.new(),
            postgres.new(migrated=False),
            (postgres.new(migrated=False)),
        )
        engines = [sa.create_engine(source_url)] + [
            sa.create_engine(pg_url(name)) for name in (targets_db, mirror_db, store_db)
        ]
        try:
            source, targets, mirror, store = engines
            ids = _load_source(source, seed=len(str(tmp_path)))
            seed_table(targets, "sc_local_control")
            seed_table(targets, "sc_local_target")
            seed_table(mirror, "sc_theory_users")
            campaigns = [
                Campaign(f"D{(FIRST_DAY + timedelta(days=d)):%m%d}-SC{n:08d}",
                         FIRST_DAY + timedelta(days=d), FIRST_DAY + timedelta(days=d))
                for d in range(8) for n in range(1, CAMPAIGNS_PER_DAY + 1)
            ]  # fmt: skip
            with targets.begin() as conn:
                conn.exec_driver_sql(
                    "CREATE TABLE softcollection_theories"
                    " (theory_id VARCHAR(50), theory_start_date DATE, theory_end_date DATE)"
                )
                conn.execute(
                    sa.text("INSERT INTO softcollection_theories VALUES (:i, :s, :e)"),
                    [{"i": c.id, "s": c.start, "e": c.end} for c in campaigns],
                )
            targets_url, mirror_url = pg_url(targets_db), pg_url(mirror_db)
            config = tmp_path / "schedctl.toml"
            config.write_text(
                f"""
[distribute]
notify = ["crm-ops@example.com"]
batch_size = {BATCH}
lease = "2s"
wait = "10m"

[distribute.source]
database_url = "{source_url}"
query = "select iin, tab1, tab2 from sc_1_120 where count_day = 5"

[distribute.campaigns]
database_url = "{targets_url}"
query = "select theory_id, theory_start_date, theory_end_date from softcollection_theories"
"""
                + destination_toml("control", targets_url, "sc_local_control")
                + destination_toml("target", targets_url, "sc_local_target")
                + destination_toml("mirror", mirror_url, "sc_theory_users")
            )
            yield World(
                tmp_path, pg_url(store_db), source, targets, mirror, store, targets_db, ids,
                campaigns, config,
            )  # fmt: skip
        finally:
            for engine in engines:
                engine.dispose()
            for name in (store_db, targets_db, mirror_db):
                postgres.release(name)


def _day(n: int) -> date:
    return FIRST_DAY + timedelta(days=n)


def _document(result: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    assert result.stdout.strip(), result.stderr
    return json.loads(result.stdout)  # type: ignore[no-any-return]


def _row_counts(world: World) -> dict[str, int]:
    counts = {}
    for engine, tables in (
        (world.source, ["sc_1_120"]),
        (world.targets, ["sc_local_control", "sc_local_target", "softcollection_theories"]),
        (world.mirror, ["sc_theory_users"]),
        (world.store, ["distributions", "distribution_users", "messages", "heartbeats"]),
    ):
        with engine.connect() as conn:
            for table in tables:
                counts[table] = conn.exec_driver_sql(f"SELECT count(*) FROM {table}").scalar()
    return counts


def _wait_for(condition: Callable[[], bool], process: subprocess.Popen[str], what: str) -> None:
    deadline = time.monotonic() + (1800 if SOAK else 120)
    while not condition():
        assert process.poll() is None, f"the run ended before {what}: {process.communicate()}"
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)


def _kill(process: subprocess.Popen[str]) -> None:
    process.send_signal(signal.SIGKILL)
    process.communicate()
    assert process.returncode == -signal.SIGKILL


def test_a_cross_engine_day_is_distributed_once(world: World) -> None:
    day = _day(0)
    before = _row_counts(world)
    preview = world.run(day, "--preview")
    assert preview.returncode == 0, preview.stderr
    shown = _document(preview)
    assert shown["status"] == "preview"
    assert (shown["available"], shown["distinct"]) == (ROWS, DISTINCT)
    assert [c["users"] for c in shown["campaigns"]] == _split_check(DISTINCT, CAMPAIGNS_PER_DAY)
    assert all(re.fullmatch(r"\d{4}\*{6}\d{2}", s) for s in shown["sample"]), shown["sample"]
    assert _row_counts(world) == before  # the preview wrote nothing anywhere

    result = world.run(day)
    assert result.returncode == 0, result.stderr
    done = _document(result)
    assert done["status"] == "completed"
    assert done["distributed"] == DISTINCT
    assert done["balanced"] is True
    assert [c["users"] for c in done["campaigns"]] == _split_check(DISTINCT, CAMPAIGNS_PER_DAY)
    world.check(day)

    again = world.run(day)
    assert again.returncode == 0, again.stderr
    assert _document(again)["status"] == "already_done"
    world.check(day)
    mails = [
        email.message_from_bytes(p.read_bytes(), policy=email.policy.default)
        for p in sorted((world.tmp / "mail").glob("*.eml"))
    ]
    assert [m["Subject"] for m in mails] == [
        f"\u2705 Distribution for 2026-03-02 completed: {DISTINCT} users distributed"
    ]
    text = "".join(p.read_text(errors="replace") for p in (world.tmp / "mail").glob("*.eml"))
    for part in mails[0].walk():
        if not part.is_multipart():
            text += part.get_content() if part.get_content_maintype() == "text" else ""
            if part.get_filename():
                text += part.get_payload(decode=True).decode()
    assert not set(re.findall(r"\d{12}", text)) & world.ids.keys()  # no ID in full
    for text in (preview.stdout, preview.stderr, result.stdout, result.stderr):
        assert not set(re.findall(r"\d{12}", text)) & world.ids.keys()


def _split_check(n: int, k: int) -> list[int]:
    base, remainder = divmod(n, k)
    return [base] * (k - remainder) + [base + 1] * remainder


def test_killed_during_plan_copy_and_mirror_then_rerun_equals_the_model(world: World) -> None:
    # 1. During the plan: the source is read slowly, the plan transaction is open.
    day = _day(1)
    slow = world.config.read_text().replace(  # type: ignore[union-attr]
        "where count_day = 5", "where count_day = 5 and sleep(0.0004) = 0"
    )
    slow_config = world.tmp / "slow.toml"
    slow_config.write_text(slow if not SOAK else world.config.read_text())  # type: ignore[union-attr]
    process = world.start(day, SCHEDCTL_CONFIG=str(slow_config))
    _wait_for(lambda: _planning(world), process, "the plan transaction")
    time.sleep(0.3)
    _kill(process)
    assert world.store_scalar("SELECT count(*) FROM distribution_users") == 0
    rerun = world.run(day)
    assert rerun.returncode == 0, rerun.stderr
    assert _document(rerun)["status"] == "completed"
    world.check(day)

    # 2. During the target copy; then the source changes before the rerun.
    day = _day(2)
    process = world.start(day)
    _wait_for(lambda: _copying(world, day, "target"), process, "the target copy")
    _kill(process)
    assert _destination(world, day, "target")[0] != "completed"
    with world.source.begin() as conn:
        conn.execute(sa.text("DELETE FROM sc_1_120 WHERE iin LIKE :p"), {"p": "1%"})
        conn.exec_driver_sql("UPDATE sc_1_120 SET tab1 = 'changed'")
        conn.exec_driver_sql("INSERT INTO sc_1_120 VALUES ('999999999999', 5, 'new', NULL)")
    rerun = world.run(day)
    assert rerun.returncode == 0, rerun.stderr
    resumed = _document(rerun)
    assert resumed["status"] == "completed"
    assert resumed["resumed"] is True
    world.check(day)  # the model of the source as it was when the plan was made

    # 3. During the mirror copy (the stored plan of a date planned before the change).
    with world.source.begin() as conn:
        conn.exec_driver_sql("DELETE FROM sc_1_120")
    _restore_source(world)
    day = _day(3)
    process = world.start(day)
    _wait_for(lambda: _copying(world, day, "mirror"), process, "the mirror copy")
    _kill(process)
    assert _destination(world, day, "target")[0] == "completed"
    assert _destination(world, day, "mirror")[0] != "completed"
    rerun = world.run(day)
    assert rerun.returncode == 0, rerun.stderr
    world.check(day)


def _restore_source(world: World) -> None:
    rows = [(i, 5, *extras) for i, extras in world.ids.items()]
    raw = world.source.raw_connection()
    try:
        with raw.cursor() as cursor:
            for start in range(0, len(rows), 10_000):
                cursor.executemany(
                    "INSERT INTO sc_1_120 VALUES (%s, %s, %s, %s)", rows[start : start + 10_000]
                )
        raw.commit()
    finally:
        raw.close()


def _planning(world: World) -> bool:
    """Whether a transaction of the store is writing the plan right now."""
    name = sa.engine.make_url(world.store_url).database
    with connect_pg() as admin:
        row = admin.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = %s AND xact_start IS NOT NULL"
            " AND query ILIKE %s",
            (name, "%distribution_users%"),
        ).fetchone()
    return bool(row and row[0])


def _destination(world: World, day: date, name: str) -> tuple[str, int]:
    with world.store.connect() as conn:
        row = conn.execute(
            sa.text(
                "SELECT dd.status, dd.last_seq FROM distribution_destinations dd"
                " JOIN distributions d ON d.id = dd.distribution_id"
                " WHERE d.business_date = :day AND dd.name = :name"
            ),
            {"day": day, "name": name},
        ).first()
    return (row[0], int(row[1])) if row else ("", 0)


def _copying(world: World, day: date, name: str) -> bool:
    status, last = _destination(world, day, name)
    return status == "copying" and last > 0


def test_concurrent_runs_write_once(world: World) -> None:
    day = _day(4)
    processes = [world.start(day) for _ in range(3)]
    outcomes = [p.communicate(timeout=1800) for p in processes]
    codes = [p.returncode for p in processes]
    assert codes == [0, 0, 0], outcomes
    statuses = sorted(json.loads(out)["status"] for out, _ in outcomes)
    assert statuses == ["already_done", "already_done", "completed"], outcomes
    world.check(day)


def test_a_destination_down_exits_75_and_a_rerun_completes(world: World) -> None:
    day = _day(5)
    process = world.start(day, SCHEDCTL_DB_RETRY_SECONDS="2")
    _wait_for(lambda: _copying(world, day, "target"), process, "the target copy")
    with connect_pg() as admin:
        admin.execute(f'ALTER DATABASE "{world.targets_db}" ALLOW_CONNECTIONS false')  # type: ignore[arg-type]
        admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE datname = %s AND pid <> pg_backend_pid()",
            (world.targets_db,),
        )
    try:
        out, err = process.communicate(timeout=600)
    finally:
        with connect_pg() as admin:
            admin.execute(f'ALTER DATABASE "{world.targets_db}" ALLOW_CONNECTIONS true')  # type: ignore[arg-type]
    assert process.returncode == 75, (out, err)
    failed = json.loads(out)
    assert failed["status"] == "failed"
    assert failed["stage"] in ("control", "target")
    assert len(err.strip().splitlines()) == 1, err
    world.targets.dispose()  # its connections were terminated
    rerun = world.run(day)
    assert rerun.returncode == 0, rerun.stderr
    assert _document(rerun)["status"] == "completed"
    world.check(day)
