"""Distribute throughput and peak memory, beside a raw COPY baseline of the same rows.

N source rows (a tenth of them duplicates) in one PostgreSQL database, 10 active
campaigns, groups A-E (A control); the control and target tables in a second
database, the mirror in a third, schedctl's store in a fourth -- as in production.
Two figures per size, each in a fresh child process on fresh tables:

- raw: psycopg streams ``SELECT DISTINCT iin, tab1`` from the source (server-side
  cursor) and COPYs every row to its destination table(s) -- control for a fifth of
  them, target and mirror for the rest -- with a group id made in Python. No plan, no
  hash order, no crash safety: the floor for moving these rows;
- schedctl: `distribute.run.run_distribute` as the command calls it: the plan stored
  in one transaction (on PostgreSQL: the source COPYed into a temporary table,
  de-duplicated, keyed-hashed, numbered and split by the database), then copied in
  batches -- one INSERT ... SELECT ... WHERE NOT EXISTS each, the existence check
  included -- with a progress record per batch.

rows/s counts distinct users distributed per second (each written to one or two
tables). Peak memory is the child's peak RSS (VmHWM from /proc/self/status, not
ru_maxrss, which Linux carries over fork and exec from the parent), and in brackets how
much the work added to the peak reached by imports and connecting: schedctl's must not
grow with the number of users.

    .venv/bin/python bench/bench_distribute.py [--sizes 100000,1000000] [--batch 5000]
        [--postgres postgresql://127.0.0.1:5432/postgres] [--json-out FILE]

--json-out appends one JSON line per size (see benchlib.workload_row) for run.py.

Creates its own databases on $PGHOST:$PGPORT (default 127.0.0.1:5432), drops them.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

from benchlib import peak_kb, workload_row

NOW = datetime(2026, 11, 18, 4, 0, tzinfo=UTC)
DAY = date(2026, 11, 18)
CAMPAIGNS = 10
GROUPS = "ABCDE"
RAW_NOTE = (
    "raw psycopg: stream SELECT DISTINCT from the source, COPY each row to control or"
    " target + mirror; no plan, no crash safety. Size = source rows (a tenth duplicates),"
    " rates = distinct users/s"
)
TABLE = (
    "(iin VARCHAR(50), theory_id VARCHAR(50), date_start DATE, date_end DATE,"
    " insert_datetime TIMESTAMP, tab1 VARCHAR(255))"
)


def _admin(admin_url: str, *statements: str) -> None:
    import psycopg

    with psycopg.connect(admin_url, autocommit=True) as conn:
        for statement in statements:
            conn.execute(statement)  # type: ignore[arg-type]


def _url(admin_url: str, name: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(admin_url).set(database=name).render_as_string(hide_password=False)


def seed_source(url: str, rows: int) -> None:
    import psycopg

    rng = random.Random(rows)
    distinct = int(rows * 0.9)
    ids = [f"{rng.randrange(10**11, 10**12)}" for _ in range(distinct)]
    with psycopg.connect(url) as conn:
        conn.execute("CREATE TABLE sc_1_120 (iin VARCHAR(12), count_day INT, tab1 VARCHAR(255))")
        with conn.cursor().copy("COPY sc_1_120 FROM STDIN") as copy:
            for iin in ids + ids[: rows - distinct]:  # a duplicate is the same row again
                copy.write_row((iin, 5, f"r{int(iin) % 17}"))
        conn.execute(
            "CREATE TABLE theories (theory_id VARCHAR(50), s DATE, e DATE);"
            + "".join(
                f"INSERT INTO theories VALUES ('SC{n:08d}', '2026-01-01', '2026-12-31');"
                for n in range(1, CAMPAIGNS + 1)
            )
        )


def fresh_tables(targets: str, mirror: str) -> None:
    import psycopg

    for url, tables in ((targets, ["sc_control", "sc_target"]), (mirror, ["sc_mirror"])):
        with psycopg.connect(url) as conn:
            for table in tables:
                conn.execute(f"DROP TABLE IF EXISTS {table}")  # type: ignore[arg-type]
                conn.execute(f"CREATE TABLE {table} {TABLE}")  # type: ignore[arg-type]
                conn.execute(f"CREATE INDEX {table}_iin ON {table} (iin)")  # type: ignore[arg-type]


def _rss_kb() -> int:
    """The peak so far (VmHWM)."""
    return peak_kb()


def child(kind: str, spec: dict[str, Any]) -> dict[str, Any]:
    """One measured run in this (fresh) process."""
    if kind == "seed":  # in a child too: the parent's size would count in the runs' peaks
        seed_source(spec["source"], spec["rows"])
        return {}
    if kind == "raw":
        import psycopg

        source = psycopg.connect(spec["source"])
        controls = psycopg.connect(spec["targets"])  # one COPY at a time per connection
        targets = psycopg.connect(spec["targets"])
        mirror = psycopg.connect(spec["mirror"])
        base = _rss_kb()
        start = time.perf_counter()
        users = 0
        columns = "(iin, theory_id, date_start, date_end, insert_datetime, tab1)"
        with (
            source.cursor(name="src") as rows,
            controls.cursor().copy(f"COPY sc_control {columns} FROM STDIN") as control,
            targets.cursor().copy(f"COPY sc_target {columns} FROM STDIN") as target,
            mirror.cursor().copy(f"COPY sc_mirror {columns} FROM STDIN") as mirrored,
        ):
            rows.execute("SELECT DISTINCT iin, tab1 FROM sc_1_120 WHERE count_day = 5")
            for iin, tab1 in rows:
                group = users % 5
                row = (iin, f"SC{users % CAMPAIGNS + 1:08d}.{group + 1}", DAY, DAY, NOW, tab1)
                if group == 0:
                    control.write_row(row)
                else:
                    target.write_row(row)
                    mirrored.write_row(row)
                users += 1
        for conn in (controls, targets, mirror):
            conn.commit()
        seconds = time.perf_counter() - start
        for conn in (source, controls, targets, mirror):
            conn.close()
        return {
            "users": users,
            "seconds": seconds,
            "peak_kb": _rss_kb() - base,
            "max_kb": _rss_kb(),
        }

    from schedctl.config import load_settings
    from schedctl.db.database import Database
    from schedctl.distribute.run import run_distribute

    settings = load_settings({"config_path": spec["config"]}, environ={})
    with Database(spec["store"]) as db:
        db.now()
        base = _rss_kb()
        start = time.perf_counter()
        outcome = run_distribute(db, settings, NOW, DAY)
        seconds = time.perf_counter() - start
    assert outcome.data["status"] == "completed", outcome.data
    return {
        "users": outcome.data["distributed"],
        "seconds": seconds,
        "peak_kb": _rss_kb() - base,
        "max_kb": _rss_kb(),
    }


def _mb(kb: int) -> str:
    return f"{kb / 1024:.1f}MB"


def run_child(kind: str, spec: dict[str, Any]) -> dict[str, Any]:
    result = subprocess.run(
        [sys.executable, __file__, "--child", kind, json.dumps(spec)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    if result.returncode:
        raise SystemExit(f"{kind} child failed:\n{result.stderr}{result.stdout}")
    return json.loads(result.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def config(tmp: Path, source: str, targets: str, mirror: str, batch: int) -> Path:
    columns = (
        'columns = { id = "iin", group_id = "theory_id", date_start = "date_start",'
        ' date_end = "date_end", inserted_at = "insert_datetime" }'
    )
    path = tmp / "schedctl.toml"
    path.write_text(
        f"""
[distribute]
batch_size = {batch}
[distribute.source]
database_url = "{source}"
query = "select iin, tab1 from sc_1_120 where count_day = 5"
[distribute.campaigns]
database_url = "{source}"
query = "select theory_id, s, e from theories"
[distribute.control]
database_url = "{targets}"
table = "sc_control"
{columns}
[distribute.target]
database_url = "{targets}"
table = "sc_target"
{columns}
[distribute.mirror]
database_url = "{mirror}"
table = "sc_mirror"
{columns}
"""
    )
    return path


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", default="100000,1000000")
    parser.add_argument("--batch", type=int, default=5000)
    host = os.environ.get("PGHOST", "127.0.0.1")
    port = os.environ.get("PGPORT", "5432")
    parser.add_argument("--postgres", default=f"postgresql://{host}:{port}/postgres")
    parser.add_argument("--json-out", help="append machine-readable rows to this file")
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child[0], json.loads(args.child[1]))))
        return

    from schedctl.db.database import Database
    from schedctl.db.migrations import upgrade

    admin = args.postgres
    prefix = f"schedctl_bench_dist_{uuid.uuid4().hex[:6]}"
    names = {k: f"{prefix}_{k}" for k in ("source", "targets", "mirror", "store")}
    print(
        f"distribute: PostgreSQL source, destinations (2 databases) and store; batch {args.batch}"
    )
    print(f"{'users':>9}  {'raw rows/s':>11}  {'schedctl rows/s':>15}  {'ratio':>6}"
          f"  {'raw peak (+work)':>17}  {'schedctl peak (+work)':>21}")  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        try:
            for size in [int(s) for s in args.sizes.split(",")]:
                for name in names.values():
                    _admin(admin, f'DROP DATABASE IF EXISTS "{name}"', f'CREATE DATABASE "{name}"')
                urls = {k: _url(admin, n) for k, n in names.items()}
                run_child("seed", {"source": urls["source"], "rows": size})
                with Database(urls["store"]) as db:
                    upgrade(db)
                fresh_tables(urls["targets"], urls["mirror"])
                raw = run_child("raw", urls)
                fresh_tables(urls["targets"], urls["mirror"])
                path = config(
                    Path(tmp), urls["source"], urls["targets"], urls["mirror"], args.batch
                )
                ours = run_child("schedctl", {"config": str(path), "store": urls["store"]})
                assert raw["users"] == ours["users"], (raw, ours)
                raw_rate = raw["users"] / raw["seconds"]
                our_rate = ours["users"] / ours["seconds"]
                print(
                    f"{ours['users']:>9}  {raw_rate:>11,.0f}  {our_rate:>15,.0f}"
                    f"  {our_rate / raw_rate:>6.2f}"
                    f"  {_mb(raw['max_kb']):>7} (+{_mb(raw['peak_kb'])})"
                    f"  {_mb(ours['max_kb']):>11} (+{_mb(ours['peak_kb'])})",
                    flush=True,
                )
                workload_row(
                    args.json_out,
                    workload="distribute: run_distribute, PostgreSQL",
                    size=size,
                    unit="rows",
                    rate=our_rate,
                    baseline_rate=raw_rate,
                    peak_kb=ours["max_kb"],
                    work_kb=ours["peak_kb"],
                    note=RAW_NOTE,
                )
        finally:
            for name in names.values():
                _admin(admin, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


if __name__ == "__main__":
    main()
