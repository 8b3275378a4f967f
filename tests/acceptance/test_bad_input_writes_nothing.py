"""Bad input: one line on stderr, exit 2, and not a single row written anywhere."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from schedctl.db.database import Database
from schedctl.db.schema import metadata

BAD_COMMANDS = [
    ["schedules", "create", "--name", "x", "--kind", "sql", "--param", "query=q",
     "--cadence", "daily", "--at", "07:00", "--tz", "Mars/Olympus"],
    ["schedules", "create", "--name", "x", "--kind", "sql", "--param", "query=q",
     "--cadence", "cron", "--cron", "61 * * * *"],
    ["schedules", "create", "--name", "x", "--kind", "sql", "--param", "query=q",
     "--cadence", "weekly", "--weekday", "funday", "--at", "07:00"],
    ["schedules", "create", "--name", "x", "--kind", "sql", "--param", "query=q",
     "--cadence", "daily", "--at", "07:00", "--to", "not-an-address"],
    ["messages", "edit", "1", "--send-at", "2000-01-01T00:00:00Z"],
    ["messages", "edit", "1", "--status", "exploded"],
    ["events", "add", "--name", "e", "--starts-at", "tomorrow", "--contact", "a@example.com"],
    ["suppressions", "add", "nobody"],
    ["schedules", "delete", "999"],
]  # fmt: skip


def _row_counts(db_url: str) -> dict[str, int]:
    with Database(db_url) as db:
        return db.transaction(
            lambda conn: {
                name: conn.execute(sa.select(sa.func.count()).select_from(table)).scalar_one()
                for name, table in metadata.tables.items()
            },
            read_only=True,
        )


@pytest.mark.parametrize("args", BAD_COMMANDS, ids=lambda a: " ".join(a[:2] + a[-2:]))
def test_bad_input_exits_2_on_one_line_and_writes_nothing(cli, db_url: str, args) -> None:
    before = _row_counts(db_url)
    result = cli(*args, db_url=db_url)
    assert result.returncode == 2, result.stdout + result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert result.stderr.startswith("schedctl: error: ")
    assert _row_counts(db_url) == before
