"""The ledger's table adds up what the scenarios recorded."""

from __future__ import annotations

from pathlib import Path

import pytest

from support import fault_ledger


def test_the_ledger_totals_what_scenarios_record(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(fault_ledger.LEDGER_ENV, str(tmp_path))
    fault_ledger.record("b", "sqlite", "no slot twice", iterations=3, losses=0, duplicates=1)
    fault_ledger.record("a", "postgresql", "no mail lost", iterations=2, losses=1, duplicates=0)
    lines = fault_ledger.table(fault_ledger.read(tmp_path))
    assert lines[1].startswith("a ")
    assert lines[2].startswith("b ")
    assert lines[-1] == "2 scenario runs, 5 iterations, 1 lost, 1 duplicated"
