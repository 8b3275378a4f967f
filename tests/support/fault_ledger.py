"""The fault suite's ledger: what each scenario tried and what it found.

Every fault scenario (tests/faults/) ends by calling ``record`` with the invariant
it checked, how many iterations it ran, and how many losses and duplicates it
counted from the database and from what the loopback servers received. The
checks themselves are the scenario's assertions; the ledger only makes the totals
visible: ``pytest_terminal_summary`` (tests/conftest.py) prints one table for the
whole run, across xdist workers, and ``make soak`` prints the same at its size.

``soak(small, large)`` picks a scenario's iteration count: ``small`` in `make test`,
``large`` under ``FAULT_SOAK=1`` (`make soak`).
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

LEDGER_ENV = "FAULT_LEDGER_DIR"  # not SCHEDCTL_-prefixed: conftest clears those
SOAK = os.environ.get("FAULT_SOAK") == "1"


@dataclass(frozen=True)
class Entry:
    scenario: str
    dialect: str
    invariant: str
    iterations: int
    losses: int
    duplicates: int
    note: str = ""


def soak(small: int, large: int) -> int:
    return large if SOAK else small


def record(
    scenario: str,
    dialect: str,
    invariant: str,
    *,
    iterations: int,
    losses: int,
    duplicates: int,
    note: str = "",
) -> None:
    """Append one scenario's totals to the run's ledger (a no-op outside pytest)."""
    directory = os.environ.get(LEDGER_ENV)
    if not directory:
        return
    entry = Entry(scenario, dialect, invariant, iterations, losses, duplicates, note)
    worker = os.environ.get("PYTEST_XDIST_WORKER", "main")
    with open(Path(directory) / f"{worker}.jsonl", "a", encoding="utf-8") as out:
        out.write(json.dumps(asdict(entry)) + "\n")


def read(directory: Path) -> list[Entry]:
    entries = []
    for path in sorted(directory.glob("*.jsonl")):
        for line in path.read_text(encoding="utf-8").splitlines():
            entries.append(Entry(**json.loads(line)))
    return sorted(entries, key=lambda e: (e.scenario, e.dialect))


def table(entries: list[Entry]) -> list[str]:
    """The summary lines: one per scenario and dialect, then the totals."""
    if not entries:
        return []
    width = max(len(e.scenario) for e in entries)
    lines = [
        f"{'scenario':<{width}}  {'dialect':<10} {'iter':>5} {'lost':>5} {'dup':>5}  invariant"
    ]
    for e in entries:
        lines.append(
            f"{e.scenario:<{width}}  {e.dialect:<10} {e.iterations:>5} {e.losses:>5}"
            f" {e.duplicates:>5}  {e.invariant}" + (f" ({e.note})" if e.note else "")
        )
    scenarios = len({(e.scenario, e.dialect) for e in entries})
    lines.append(
        f"{scenarios} scenario runs, {sum(e.iterations for e in entries)} iterations,"
        f" {sum(e.losses for e in entries)} lost, {sum(e.duplicates for e in entries)}"
        " duplicated"
    )
    return lines
