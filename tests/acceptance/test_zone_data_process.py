"""The installed schedctl reads its zones from the tzdata package, whatever zone files
the host has or PYTHONTZPATH names (SPEC §12 "Time zone data").

PYTHONTZPATH is read when Python imports zoneinfo, so only a process shows it: here
it names a directory holding Asia/Almaty as releases before 2024a had it (UTC+6);
the packaged data has Almaty at UTC+5 from 2024-03-01.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from support.cli import Result
from support.zone_data import ALMATY_2023, write_zones

CONFIG = '[reports.queries.ping]\nsql = "select 1 as one"\n'


def test_zone_files_on_pythons_search_path_are_not_read(
    cli_process: Callable[..., Result], db_url: str, tmp_path: Path
) -> None:
    config = tmp_path / "schedctl.toml"
    config.write_text(CONFIG)
    env = {
        "PYTHONTZPATH": str(write_zones(tmp_path / "zoneinfo", ALMATY_2023)),
        "SCHEDCTL_CONFIG": str(config),
        "SCHEDCTL_NOW": "2024-06-01T00:00:00Z",
    }
    result = cli_process(
        "schedules", "create", "--name", "almaty", "--kind", "sql", "--param", "query=ping",
        "--to", "ops@example.com", "--cadence", "daily", "--at", "09:00",
        "--tz", "Asia/Almaty", "--json", db_url=db_url, env=env,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.json["next_run_at"] == "2024-06-01T04:00:00+00:00"  # 09:00 at UTC+5
