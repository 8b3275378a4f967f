"""Every benchmark in one run, printed as one table (`make bench`).

Runs each bench script (each also works on its own) at a base size and at 10x that
size, collects the rows they append with --json-out, and prints the machine, the
command, then two markdown tables.

Workloads -- one row per workload and size; every baseline is measured by the same
script in the same run, on the same database server:

- workload: what schedctl does (the peer row: what APScheduler 4 does instead);
  dispatch has a row per ``[smtp] connections`` (1, 2, 4, 8 conns), each against
  the same baseline, raw smtplib over one connection;
- size: schedules, messages, users (digest) or source rows (distribute) in the run
  (metrics: messages in the database it reports on, at the base size only);
- schedctl/s: items per second through schedctl's own code (the peer row: through
  APScheduler's), timed in a fresh child process from after connecting; the median
  of the rounds given in the header;
- baseline/s: items per second through the baseline of the note column -- the same
  work written directly against the driver (psycopg, sqlite3, smtplib): the floor.
  The digest has two rows per store and size, one per baseline, from the same
  rounds: the raw SQL alone, and the render floor ("render" in its row): the same
  SQL plus rendering the same two templates per user in one process;
- ratio: schedctl/s / baseline/s (1.00 = as fast as the hand-written floor);
- peak MiB: the peak resident set (VmHWM) of the child process that did schedctl's
  part: interpreter, imports and the work;
- work MiB: how much of that peak the work added (peak minus the RSS just before it;
  distribute: minus the peak just before it) -- what should not grow with the size;
- note: how the baseline is defined.

Start-up -- median wall time of fresh processes (`schedctl --help`; an idle
`schedctl tick`: migrated database, nothing due), against the targets (--help <= 300
ms, idle tick <= 400 ms): met or missed; beside it the same median for a bare
interpreter doing the least of that work (baseline).

    .venv/bin/python bench/run.py [--smoke] [--scale 10] [--verbose]

--smoke: tiny sizes, one round each (`make bench-smoke` checks its table, so the bench
cannot rot unnoticed); APScheduler's row only when it is installed (`pip install -e
'.[bench]'`).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
HOST = os.environ.get("PGHOST", "127.0.0.1")
PORT = os.environ.get("PGPORT", "5432")
POSTGRES = f"postgresql://{HOST}:{PORT}/postgres"

# (base size, rounds at the base size, rounds at base x --scale) for a full run and for
# --smoke (a round at 10x takes up to minutes: one, but for dispatch, whose single
# rounds at 5,000 messages moved by 0.1 from one run to the next). The peer uses tick's
# size. start-up: (-, fresh processes per command, -).
FULL = {"tick": (2000, 3, 1), "peer": (2000, 3, 1), "dispatch": (500, 5, 3),
        "digest": (10_000, 3, 1), "distribute": (100_000, 1, 1), "metrics": (1_000_000, 7, 1),
        "startup": (0, 9, 1)}  # fmt: skip
SMOKE = {"tick": (20, 1, 1), "peer": (20, 1, 1), "dispatch": (20, 1, 1), "digest": (50, 1, 1),
         "distribute": (500, 1, 1), "metrics": (1000, 1, 1), "startup": (0, 1, 1)}  # fmt: skip
DIGEST_PER_USER = 5
DISPATCH_CONNECTIONS = "1,2,4,8"  # the [smtp] connections dispatch is measured with


def steps(sizes: dict[str, tuple[int, int, int]], scale: int, peer: bool) -> list[list[str]]:
    """Every script invocation, in table order (without --json-out)."""
    out: list[list[str]] = []

    def each(name: str) -> list[tuple[int, int]]:
        base, rounds, scaled_rounds = sizes[name]
        return [(base, rounds)] + ([(base * scale, scaled_rounds)] if scale > 1 else [])

    for n, r in each("tick"):
        out.append(["bench_tick.py", "--schedules", str(n), "--repeat", str(r), "--no-cli"])
    if peer:
        for n, r in each("peer"):
            out.append(["bench_peer_apscheduler.py", "--schedules", str(n), "--repeat", str(r)])
    for n, r in each("dispatch"):
        out.append(["bench_dispatch.py", "--messages", str(n), "--runs", str(r), "--brief",
                    "--connections", DISPATCH_CONNECTIONS, "--postgres", POSTGRES])  # fmt: skip
    for n, r in each("digest"):
        out.append(["bench_digest.py", "--sizes", f"{n}x{DIGEST_PER_USER}", "--repeat", str(r),
                    "--sqlite", "--postgres", POSTGRES])  # fmt: skip
    for n, _ in each("distribute"):  # one round: distribute always runs once per size
        out.append(["bench_distribute.py", "--sizes", str(n), "--postgres", POSTGRES])
    # At the base size only: a million messages is already the large case.
    n, r, _ = sizes["metrics"]
    out.append(["bench_metrics.py", "--messages", str(n), "--repeat", str(r), "--sqlite",
                "--postgres", POSTGRES])  # fmt: skip
    _, runs, _ = sizes["startup"]
    out.append(["startup.py", "--runs", str(runs), "--no-imports", "--postgres", POSTGRES])
    return out


def have_apscheduler() -> bool:
    try:
        import apscheduler  # noqa: F401
        import asyncpg  # noqa: F401
    except ImportError:
        return False
    return True


def machine() -> list[str]:
    model = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        import psycopg

        with psycopg.connect(POSTGRES, connect_timeout=5) as conn:
            row = conn.execute("SHOW server_version").fetchone()
        pg = str(row[0]) if row else "unknown"
    except Exception as exc:
        pg = f"unreachable ({type(exc).__name__})"
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    return [
        f"- CPUs: {os.cpu_count()} x {model}",
        f"- Python {platform.python_version()} ({sys.executable})",
        f"- PostgreSQL server {pg} at {HOST}:{PORT}",
        f"- load average at start (1, 5, 15 min): {load}",
    ]


def git_commit() -> str:
    result = subprocess.run(["git", "-C", str(HERE), "rev-parse", "--short", "HEAD"],
                            capture_output=True, text=True, check=False)  # fmt: skip
    return result.stdout.strip() or "unknown"


def run_all(invocations: list[list[str]], rows_file: Path, verbose: bool) -> None:
    for argv in invocations:
        command = [sys.executable, str(HERE / argv[0]), *argv[1:], "--json-out", str(rows_file)]
        started = time.monotonic()
        print(f"  {shlex.join(argv)} ...", end="", file=sys.stderr, flush=True)
        result = subprocess.run(command, capture_output=True, text=True, check=False)
        print(f" {time.monotonic() - started:.0f} s", file=sys.stderr, flush=True)
        if verbose or result.returncode != 0:
            print(result.stdout, end="", file=sys.stderr)
            print(result.stderr, end="", file=sys.stderr)
        if result.returncode != 0:
            raise SystemExit(f"bench: {argv[0]} failed (exit {result.returncode})")


def _int(value: float) -> str:
    return f"{value:,.0f}"


def tables(rows: list[dict[str, Any]]) -> list[str]:
    out = [
        "| workload | size | schedctl/s | baseline/s | ratio | peak MiB | work MiB | note |",
        "|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    noted: set[str] = set()
    workloads = [r for r in rows if r["kind"] == "workload"]
    first = {}
    for row in workloads:
        first.setdefault(row["workload"], len(first))
    workloads.sort(key=lambda r: (first[r["workload"]], r["size"]))
    for row in workloads:
        note = "" if row["workload"] in noted else row["note"]
        noted.add(row["workload"])
        out.append(
            f"| {row['workload']} | {_int(row['size'])} {row['unit']} | {_int(row['rate'])}"
            f" | {_int(row['baseline_rate'])} | {row['ratio']:.2f} | {row['peak_mib']:.1f}"
            f" | {row['work_mib']:.1f} | {note} |"
        )
    out += cpu_table([r for r in rows if r["kind"] == "cpu"])
    out += [
        "",
        "| start-up | median ms | target ms | target | runs | baseline ms | baseline |",
        "|---|---:|---:|---|---:|---:|---|",
    ]
    for row in (r for r in rows if r["kind"] == "startup"):
        out.append(
            f"| `{row['command'].split(',')[0]}`{_suffix(row['command'])} |"
            f" {row['median_ms']:.0f} | {row['target_ms']} |"
            f" {'met' if row['met'] else 'missed'} | {row['runs']} |"
            f" {row['baseline_ms']:.0f} | {row['baseline']} |"
        )
    return out


def cpu_table(rows: list[dict[str, Any]]) -> list[str]:
    """Dispatch's CPU per message, by part, and the rate it bounds (bench_dispatch.py)."""
    if not rows:
        return []
    cpus = rows[0]["cpus"]
    out = [
        "",
        f"| dispatch: CPU per message | size | sender µs | SMTP server µs | PostgreSQL µs"
        f" | total µs | at most/s on {cpus} CPUs | its ratio | measured ratio |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in sorted(rows, key=lambda r: r["size"]):
        total = row["sender_us"] + row["server_us"] + row["database_us"]
        ceiling = row["cpus"] / total * 1e6
        out.append(
            f"| {row['what']} | {_int(row['size'])} messages | {_int(row['sender_us'])}"
            f" | {_int(row['server_us'])} | {_int(row['database_us'])} | {_int(total)}"
            f" | {_int(ceiling)} | {ceiling / row['baseline_rate']:.2f}"
            f" | {row['rate'] / row['baseline_rate']:.2f} |"
        )
    return out


def _suffix(command: str) -> str:
    _, _, rest = command.partition(",")
    return f",{rest}" if rest else ""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, one round each")
    parser.add_argument("--scale", type=int, help="the second size is base x this (default 10;"
                        " --smoke: 1, one size only)")  # fmt: skip
    parser.add_argument("--no-peer", action="store_true", help="leave out APScheduler")
    parser.add_argument("--verbose", action="store_true", help="show each script's own output")
    args = parser.parse_args()
    sizes = SMOKE if args.smoke else FULL
    scale = args.scale or (1 if args.smoke else 10)
    peer = have_apscheduler() and not args.no_peer
    started = time.monotonic()
    rounds = (
        f"at the base size: tick {sizes['tick'][1]}, APScheduler {sizes['peer'][1]},"
        f" dispatch {sizes['dispatch'][1]}, digest {sizes['digest'][1]}, distribute"
        f" {sizes['distribute'][1]}, metrics {sizes['metrics'][1]} (base size only)"
        + (
            f"; at {scale}x: dispatch {sizes['dispatch'][2]}, digest {sizes['digest'][2]},"
            f" the others {sizes['tick'][2]}"
            if scale > 1
            else ""
        )
        + f"; start-up: {sizes['startup'][1]} processes per command"
    )
    sizes_text = "base" + (f" and {scale}x base" if scale > 1 else " only")
    invocation = shlex.join([os.path.relpath(sys.executable), *sys.argv])
    header = [
        f"# schedctl benchmarks ({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())},"
        f" commit {git_commit()})",
        "",
        f"Command: `{invocation}`" + ("" if args.smoke else " (what `make bench` runs)"),
        "",
        *machine(),
        f"- sizes: {sizes_text}; rounds (median of) {rounds}",
        f"- digest users have {DIGEST_PER_USER} unread notifications each, in 20 time zones;"
        " distribute has 10 campaigns, groups A-E",
    ]
    if args.no_peer:
        header.append("- APScheduler row left out (--no-peer)")
    elif not peer:
        header.append("- APScheduler row left out (not installed: pip install -e '.[bench]')")
    print("running (each script's own output: --verbose):", file=sys.stderr)
    with tempfile.TemporaryDirectory(prefix="schedctl-bench-") as tmp:
        rows_file = Path(tmp) / "rows.jsonl"
        rows_file.touch()
        run_all(steps(sizes, scale, peer), rows_file, args.verbose)
        rows = [json.loads(line) for line in rows_file.read_text().splitlines() if line]
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    header.append(f"- load average at the end: {load}; the whole run took"
                  f" {time.monotonic() - started:.0f} s")  # fmt: skip
    print("\n".join([*header, "", *tables(rows)]))


if __name__ == "__main__":
    main()
