"""reconcile's distribution step through the CLI: the mirror check, two
concurrent ``--repair`` runs inserting each missing row once, a day's dead lease
freed and stored plans purged in bounded batches.

The day's source, campaigns and destinations come from the `files` fixture
(tests/support/distribute_files.py).
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import time
from typing import Any

import sqlalchemy as sa

from support.cli import SCHEDCTL
from support.distribute_files import NOW, Files, store
from support.processes import Schedctl


def reconcile(files: Files, *args: str) -> Any:
    env = {
        "SCHEDCTL_CONFIG": str(files.config()),
        "SCHEDCTL_NOW": NOW,
        "SCHEDCTL_RECONCILE_BATCH_SIZE": "50",
    }
    return files.cli("reconcile", "--json", *args, db_url=files.db_url, env=env, timeout=120)


def _exec(files: Files, sql: str) -> None:
    engine = sa.create_engine(files.db_url)
    try:
        with engine.begin() as conn:
            conn.exec_driver_sql(sql)
    finally:
        engine.dispose()


def test_mirror_check_and_two_concurrent_repairs_insert_each_row_once(files: Files) -> None:
    assert files.run("--json").returncode == 0
    full = sorted(files.rows("spss", "sc_mirror"))
    assert len(full) == 320
    with sqlite3.connect(files.path("spss")) as conn:
        conn.execute("DELETE FROM sc_mirror WHERE rowid IN (SELECT rowid FROM sc_mirror LIMIT 17)")
    check = reconcile(files)
    assert check.returncode == 1, check.stderr
    data = json.loads(check.stdout)
    assert (data["distributions"], data["mirror_checked"], data["mirror_missing"]) == (
        "checked",
        320,
        17,
    )
    assert data["mirror_repaired"] == 0
    dry = json.loads(reconcile(files, "--dry-run", "--repair").stdout)
    assert (dry["mirror_missing"], dry["mirror_repaired"]) == (17, 0)
    assert len(files.rows("spss", "sc_mirror")) == 303

    env = {k: v for k, v in os.environ.items() if not k.startswith("SCHEDCTL_")}
    env.update(
        SCHEDCTL_DATABASE_URL=files.db_url,
        SCHEDCTL_CONFIG=str(files.config()),
        SCHEDCTL_NOW=NOW,
        SCHEDCTL_RECONCILE_BATCH_SIZE="50",
    )
    # The mirror's write lock is held while both processes start, so that both find
    # the 17 rows missing before either can repair: the repairs really overlap, and
    # the writer's check under the lock is what keeps the second from inserting.
    blocker = sqlite3.connect(files.path("spss"), isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")
    try:
        processes = [
            Schedctl(
                [str(SCHEDCTL), "reconcile", "--json", "--repair"],
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for _ in range(2)
        ]
        time.sleep(6)  # well within the writers' 10 s busy timeout
    finally:
        blocker.execute("COMMIT")
        blocker.close()
    outcomes = [p.communicate(timeout=120) for p in processes]
    reports = [json.loads(out) for out, _ in outcomes]
    assert [p.returncode for p in processes] == [0, 0], outcomes  # repaired: nothing missing
    assert [r["mirror_missing"] for r in reports] == [17, 17]  # both checked before a repair
    assert sorted(r["mirror_repaired"] for r in reports) == [0, 17]
    assert sorted(r["mirror_repaired_elsewhere"] for r in reports) == [0, 17]
    assert sorted(files.rows("spss", "sc_mirror")) == full
    after = json.loads(reconcile(files).stdout)
    assert (after["mirror_missing"], after["mirror_repaired"]) == (0, 0)


def test_expired_day_lease_freed_and_plans_purged(files: Files) -> None:
    assert files.run("--json").returncode == 0
    _exec(
        files,
        "UPDATE distributions SET status = 'copying', lease_owner = 'gone:1:x',"
        " lease_expires_at = '2026-11-18 05:00:00.000000'",
    )
    data = json.loads(reconcile(files).stdout)
    assert data["distributions_recovered"] == 1
    assert store(files, "SELECT lease_owner FROM distributions") == [(None,)]
    _exec(
        files,
        "UPDATE distributions SET status = 'completed', expires_at = '2026-11-18 05:00:00.000000'",
    )
    data = json.loads(reconcile(files).stdout)
    assert data["plans_purged"] == 400
    assert data["largest_batch"] <= 50
    assert store(files, "SELECT count(*) FROM distribution_users") == [(0,)]
