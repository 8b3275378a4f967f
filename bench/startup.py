"""Start-up cost: `schedctl --help`, a no-op command, and each dependency's import.

Every figure is the median of several fresh processes, printed beside a baseline
measured the same way in the same run (a bare interpreter, and a raw-sqlite3 /
raw-psycopg process doing the same minimal database round trip), so the output
is ratios rather than absolute times on a noisy shared machine.

schedctl's modules are byte-compiled first, as installing its wheel does (pip writes
a .pyc for every module). A checkout installed in editable mode has none, and where
PYTHONDONTWRITEBYTECODE is set (this project's CI machine sets it) every process would
compile schedctl's sources again: about 100 ms of each `tick`, which no installed copy
pays.

    .venv/bin/python bench/startup.py [--runs 9] [--postgres URL] [--no-imports]
        [--json-out FILE]

Unless --no-imports, it also prints where an idle `schedctl tick`'s imports go: the
self time `python -X importtime` gives each module, summed by top-level package
(median of the runs), and each dependency's cumulative import cost.

--json-out appends one JSON line per target (`schedctl --help`, an idle `schedctl
tick` on SQLite and on PostgreSQL: median wall ms and the target) for bench/run.py.
"""

from __future__ import annotations

import argparse
import compileall
import importlib.util
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchlib import emit

BIN = Path(sys.executable).parent
SCHEDCTL = str(BIN / "schedctl")
HELP_TARGET_MS = 300
IDLE_TICK_TARGET_MS = 400
DEPENDENCIES = [
    "click", "sqlalchemy", "psycopg", "oracledb", "jinja2", "rich", "tenacity", "cronsim",
]  # fmt: skip
_IMPORT_LINE = re.compile(r"^import time:\s+(\d+) \|\s+\d+ \| ( *)([\w.]+)$")


def _package_dir(name: str) -> Path:
    """Where package ``name`` is installed, without importing it."""
    spec = importlib.util.find_spec(name)
    if spec is None or spec.origin is None:
        raise SystemExit(f"{name} is not installed")
    return Path(spec.origin).parent


def median_seconds(argv: list[str], runs: int, env: dict[str, str] | None = None) -> float:
    samples = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run(argv, env=env, check=True, capture_output=True)
        samples.append(time.perf_counter() - start)
    return statistics.median(samples)


def import_cost_ms(module: str, runs: int) -> float:
    """Cumulative import time of `module` in a fresh interpreter (-X importtime)."""
    samples = []
    for _ in range(runs):
        result = subprocess.run(
            [sys.executable, "-X", "importtime", "-c", f"import {module}"],
            capture_output=True, text=True, check=True,
        )  # fmt: skip
        pattern = re.compile(rf"\|\s*(\d+)\s*\|\s*{re.escape(module)}\s*$")
        for line in result.stderr.splitlines():
            match = pattern.search(line)
            if match:
                samples.append(int(match.group(1)) / 1000)
    return statistics.median(samples)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=9)
    parser.add_argument("--postgres", default="postgresql://127.0.0.1:5432/postgres")
    parser.add_argument("--no-imports", action="store_true", help="skip the import costs")
    parser.add_argument("--json-out", help="append machine-readable rows to this file")
    args = parser.parse_args()
    runs = args.runs
    compileall.compile_dir(_package_dir("schedctl"), quiet=1)

    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp) / "bench.db"
        env = {**os.environ, "SCHEDCTL_DATABASE_URL": f"sqlite:///{db}", "NO_COLOR": "1"}
        subprocess.run([SCHEDCTL, "db", "upgrade", "-q"], env=env, check=True)

        bare = median_seconds([sys.executable, "-c", "pass"], runs)
        raw_sqlite = median_seconds(
            [
                sys.executable,
                "-c",
                f"import sqlite3; sqlite3.connect({str(db)!r}).execute('select 1')",
            ],
            runs,
        )
        help_s = median_seconds([SCHEDCTL, "--help"], runs, env)
        noop = "tick"
        noop_sqlite = median_seconds([SCHEDCTL, noop, "-q"], runs, env)

        print(f"start-up, median of {runs} fresh processes")
        print(f"  python -c pass                    {bare * 1000:7.0f} ms")
        print(f"  raw sqlite3 connect + select 1    {raw_sqlite * 1000:7.0f} ms  (baseline)")
        print(
            f"  schedctl --help                   {help_s * 1000:7.0f} ms  "
            f"x{help_s / raw_sqlite:.1f} baseline"
        )
        print(
            f"  schedctl {noop} (no-op, SQLite)     {noop_sqlite * 1000:7.0f} ms  "
            f"x{noop_sqlite / raw_sqlite:.1f} baseline"
        )
        startup_row(args.json_out, "schedctl --help", help_s, HELP_TARGET_MS, runs, bare,
                    "python -c pass")  # fmt: skip
        startup_row(
            args.json_out, "schedctl tick, idle (SQLite)", noop_sqlite, IDLE_TICK_TARGET_MS,
            runs, raw_sqlite, "python: import sqlite3, connect, select 1",
        )  # fmt: skip

        pg = _postgres_database(args.postgres)
        if pg:
            url, cleanup = pg
            pg_env = {**env, "SCHEDCTL_DATABASE_URL": url}
            try:
                subprocess.run([SCHEDCTL, "db", "upgrade", "-q"], env=pg_env, check=True)
                raw_pg = median_seconds(
                    [sys.executable, "-c",
                     f"import psycopg; psycopg.connect({_libpq(url)!r}).execute('select 1')"],
                    runs,
                )  # fmt: skip
                noop_pg = median_seconds([SCHEDCTL, noop, "-q"], runs, pg_env)
                print(f"  raw psycopg connect + select 1    {raw_pg * 1000:7.0f} ms  (baseline)")
                print(
                    f"  schedctl {noop} (no-op, PostgreSQL) {noop_pg * 1000:5.0f} ms  "
                    f"x{noop_pg / raw_pg:.1f} baseline"
                )
                startup_row(
                    args.json_out, "schedctl tick, idle (PostgreSQL)", noop_pg,
                    IDLE_TICK_TARGET_MS, runs, raw_pg, "python: import psycopg, connect, select 1",
                )  # fmt: skip
            finally:
                cleanup()

    if args.no_imports:
        return
    print("\nidle `schedctl tick` (SQLite): import self time by package (median, ms)")
    for package, ms in idle_tick_imports(max(3, runs // 2)):
        print(f"  {package:22s} {ms:7.1f}")
    print("\nimport cost of each dependency (cumulative, median, ms)")
    for module in [*DEPENDENCIES, "schedctl.cli"]:
        print(f"  {module:14s} {import_cost_ms(module, max(3, runs // 2)):7.1f}")


def idle_tick_imports(runs: int) -> list[tuple[str, float]]:
    """Import self time of an idle `schedctl tick` summed by top-level package.

    schedctl's own modules are split by subpackage (``schedctl.cli``, ``schedctl.db``,
    ...), the rest summed under their distribution's top-level name; the last row is
    the total. -X importtime inflates every figure by its own bookkeeping, so read the
    shares, not the absolute sum.
    """
    totals: dict[str, list[float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        env = {**os.environ, "SCHEDCTL_DATABASE_URL": f"sqlite:///{tmp}/imports.db"}
        subprocess.run([SCHEDCTL, "db", "upgrade", "-q"], env=env, check=True)
        for run in range(runs):
            result = subprocess.run(
                [sys.executable, "-X", "importtime", "-m", "schedctl", "tick", "-q"],
                env=env, capture_output=True, text=True, check=True,
            )  # fmt: skip
            sums: dict[str, float] = {}
            for line in result.stderr.splitlines():
                match = _IMPORT_LINE.match(line)
                if match:
                    parts = match[3].split(".")
                    key = ".".join(parts[:2]) if parts[0] == "schedctl" else parts[0]
                    sums[key] = sums.get(key, 0.0) + int(match[1]) / 1000
            sums["(total)"] = sum(sums.values())
            for key, ms in sums.items():
                totals.setdefault(key, [0.0] * runs)[run] = ms
    medians = {key: statistics.median(samples) for key, samples in totals.items()}
    total = medians.pop("(total)")
    ranked = sorted(medians.items(), key=lambda item: -item[1])[:15]
    return [*ranked, ("(total)", total)]


def startup_row(
    path: str | None,
    command: str,
    seconds: float,
    target_ms: int,
    runs: int,
    base: float,
    baseline: str,
) -> None:
    emit(
        path,
        kind="startup",
        command=command,
        median_ms=seconds * 1000,
        target_ms=target_ms,
        met=seconds * 1000 <= target_ms,
        runs=runs,
        baseline_ms=base * 1000,
        baseline=baseline,
    )


def _libpq(url: str) -> str:
    return url.replace("postgresql+psycopg://", "postgresql://")


def _postgres_database(admin_url: str) -> tuple[str, object] | None:
    try:
        import psycopg

        name = f"schedctl_bench_{os.getpid()}"
        with psycopg.connect(_libpq(admin_url), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')  # type: ignore[arg-type]
    except Exception as exc:
        print(f"  (PostgreSQL skipped: {exc})")
        return None
    base = admin_url.rsplit("/", 1)[0]

    def cleanup() -> None:
        with psycopg.connect(_libpq(admin_url), autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')  # type: ignore[arg-type]

    return f"{base}/{name}", cleanup


if __name__ == "__main__":
    main()
