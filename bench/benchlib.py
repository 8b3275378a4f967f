"""What the bench scripts share: peak memory, fresh child processes, JSON rows.

Peak memory is read from /proc/self/status (VmHWM) in a fresh child process that does
only the measured work: not ru_maxrss, which Linux carries over fork and exec from the
parent's high-water mark (the parent holds the seed rows, so ru_maxrss grew with the
size seeded).
"""

from __future__ import annotations

import json
import resource
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any


def status_kb(field: str) -> int:
    """A size from /proc/self/status (Linux): VmRSS now, VmHWM the peak so far."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(f"{field}:"):
                return int(line.split()[1])
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def rss_kb() -> int:
    return status_kb("VmRSS")


def peak_kb() -> int:
    return status_kb("VmHWM")


def run_child(script: str, *args: str) -> dict[str, Any]:
    """Run `script --child ...` in a fresh interpreter; its last stdout line is JSON."""
    result = subprocess.run(
        [sys.executable, script, *args], capture_output=True, text=True, check=False
    )
    if result.returncode != 0:
        raise SystemExit(f"child {args} failed:\n{result.stderr}{result.stdout}")
    return dict(json.loads(result.stdout.strip().splitlines()[-1]))


class Samples:
    """Rounds of one measured part: median rate, largest peak and largest growth."""

    def __init__(self) -> None:
        self.seconds: list[float] = []
        self.peaks: list[int] = []
        self.growth: list[int] = []
        self.cpu: list[dict[str, float]] = []

    def add(self, result: dict[str, Any]) -> None:
        """One child's result: seconds, peak_kb (VmHWM), before_kb (RSS before the work)."""
        self.seconds.append(result["seconds"])
        self.peaks.append(result["peak_kb"])
        self.growth.append(result["peak_kb"] - result["before_kb"])
        if "cpu" in result:
            self.cpu.append(result["cpu"])

    def summary(self, count: int) -> dict[str, Any]:
        return {
            "rate": count / statistics.median(self.seconds),
            "peak_kb": max(self.peaks),
            "work_kb": max(self.growth),
            # CPU per message by part (µs), each the median over the rounds
            "cpu": {
                part: statistics.median(split[part] for split in self.cpu) for part in self.cpu[0]
            }
            if self.cpu
            else {},
        }


def emit(path: str | None, **row: Any) -> None:
    """Append one machine-readable row (a JSON line) to `path`, if given."""
    if path:
        with open(path, "a", encoding="utf-8") as out:
            out.write(json.dumps(row) + "\n")


def workload_row(
    path: str | None,
    *,
    workload: str,
    size: int,
    unit: str,
    rate: float,
    baseline_rate: float,
    peak_kb: int,
    work_kb: int,
    note: str,
) -> None:
    """One table row: schedctl's rate beside its baseline's, from the same run."""
    emit(
        path,
        kind="workload",
        workload=workload,
        size=size,
        unit=unit,
        rate=rate,
        baseline_rate=baseline_rate,
        ratio=rate / baseline_rate,
        peak_mib=peak_kb / 1024,
        work_mib=work_kb / 1024,
        note=note,
    )
