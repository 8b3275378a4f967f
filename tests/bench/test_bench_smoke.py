"""`bench/run.py --smoke` still runs and prints every row of its table.

The benchmarks are not part of `make test` (they take minutes and need a quiet
machine), and neither is this (pytest does not recurse into tests/bench): `make
bench-smoke`, the first step of `make bench`, runs them at tiny sizes, one round each,
so that a change that breaks a bench script (an API it calls, a column it inserts)
fails in a minute instead of after a full run. It asserts nothing about speed.
"""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys

import pytest

from support.cli import REPO
from support.databases import PostgresDatabases

pytestmark = pytest.mark.postgres

DISPATCH = [
    f"dispatch: dispatch_due to SMTP, {store}, {n} conn{'s' if n > 1 else ''}"
    for store in ("SQLite", "PostgreSQL")
    for n in (1, 2, 4, 8)
]
# The CPU table: where each dispatch round's CPU went, per message.
CPU = [
    "raw smtplib, 1 conn",
    *(
        f"{store}, {n} conn{'s' if n > 1 else ''}"
        for store in ("SQLite", "PostgreSQL")
        for n in (1, 2, 4, 8)
    ),
]
WORKLOADS = [
    "tick: runs.materialise_due, PostgreSQL",
    *DISPATCH,
    "digest: planning, 5 notifications/user, PostgreSQL",
    "digest: planning, 5 notifications/user, SQLite",
    "digest: planning, 5 notifications/user, PostgreSQL (render floor)",
    "digest: planning, 5 notifications/user, SQLite (render floor)",
    "distribute: run_distribute, PostgreSQL",
    "metrics: render_metrics, PostgreSQL",
    "metrics: render_metrics, SQLite",
]
PEER = "peer: APScheduler 4 SQLAlchemyDataStore, PostgreSQL"
STARTUP = {
    "`schedctl --help`": 300,
    "`schedctl tick`, idle (SQLite)": 400,
    "`schedctl tick`, idle (PostgreSQL)": 400,
}
SIZES = {"tick": 20, "peer": 20, "dispatch": 20, "digest": 50, "distribute": 500, "metrics": 1000}


def _number(cell: str) -> float:
    return float(cell.split()[0].replace(",", ""))


def test_bench_smoke_prints_every_row(postgres: PostgresDatabases) -> None:
    peer = all(importlib.util.find_spec(m) for m in ("apscheduler", "asyncpg"))
    result = subprocess.run(
        [sys.executable, str(REPO / "bench" / "run.py"), "--smoke"],
        capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr + result.stdout
    out = result.stdout
    assert "- CPUs: " in out
    assert "- PostgreSQL server " in out
    assert "Command: `" in out
    rows = {}
    for line in out.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.startswith("| ") and not line.startswith(
            ("| workload", "| start-up", "| dispatch: CPU per message")
        ):
            rows[cells[0]] = cells

    expected = [*WORKLOADS, PEER] if peer else WORKLOADS
    if not peer:
        assert PEER not in rows
        assert "APScheduler row left out" in out
    for workload in expected:
        cells = rows.pop(workload)
        size, rate, baseline, ratio, peak, work, note = cells[1:]
        assert _number(size) == SIZES[workload.split(":")[0]], cells
        assert _number(rate) > 0, cells
        assert _number(baseline) > 0, cells
        assert _number(ratio) == pytest.approx(
            _number(rate) / _number(baseline), rel=0.02, abs=0.01
        )
        assert 10 < _number(peak) < 2000, cells
        assert _number(work) >= 0, cells
        assert note, cells
        if workload in DISPATCH:
            connections = workload.rsplit(", ", 1)[1]
            assert note.startswith(connections), cells  # "1 conn ...", "4 conns ..."
    for what in CPU:
        cells = rows.pop(what)
        size, sender, server, database, total, ceiling, its_ratio, ratio = map(_number, cells[1:])
        assert size == SIZES["dispatch"], cells
        assert sender > 0, cells
        assert server > 0, cells
        assert (database > 0) == what.startswith("PostgreSQL"), cells
        assert total == pytest.approx(sender + server + database, abs=2), cells
        cpus = len(os.sched_getaffinity(0))
        assert ceiling == pytest.approx(cpus * 1e6 / total, rel=0.02), cells
        assert its_ratio > 0, cells
        assert ratio > 0, cells
    for command, target in STARTUP.items():
        cells = rows.pop(command)
        median, target_ms, verdict, runs, baseline_ms, baseline = cells[1:]
        assert _number(median) > 0, cells
        assert _number(target_ms) == target, cells
        assert verdict == ("met" if _number(median) <= target else "missed"), cells
        assert _number(runs) == 1, cells
        assert _number(baseline_ms) > 0, cells
        assert baseline.startswith("python"), cells
    assert not rows, f"rows nobody expected: {rows}"
    assert not re.search(r"\bnan\b|\binf\b", out)
