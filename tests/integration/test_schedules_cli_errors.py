"""Every invalid `schedules` option through the real command line, in-process.

Processes are exercised by tests/acceptance; here `schedctl.cli.run` (the
same parser and error boundary, minus the process start-up) walks the whole matrix
of bad values quickly: each is one line on stderr, exit 2, nothing written, and the
line says what was wrong. Values the bad-input sweep (tests/acceptance/
test_bad_input_sweep.py) already gives `schedules create` are here only where this
checks a message the sweep does not: --tz '', --at noon, --max-lateness -5m and --day
first are the sweep's alone, and their messages are checked here with another value.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import sqlalchemy as sa

from schedctl.cli import run
from schedctl.db.database import Database
from schedctl.db.schema import schedules

CONFIG = '[reports.queries.ping]\nsql = "select 1"\n'
GOOD = ["--name", "n", "--kind", "sql", "--param", "query=ping", "--cadence", "daily",
        "--to", "ops@example.com"]  # fmt: skip


@pytest.fixture
def schedctl(db_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    config = tmp_path / "schedctl.toml"
    config.write_text(CONFIG)

    def invoke(*args: str) -> tuple[int, str, str]:
        code = run(["--database-url", db_url, "--config", str(config), *args])
        out, err = capsys.readouterr()
        return code, out, err

    return invoke


def count_schedules(db_url: str) -> int:
    with Database(db_url, environ={}) as db:
        return int(db.scalar(sa.select(sa.func.count()).select_from(schedules)))


@pytest.mark.parametrize("dialect", ["sqlite"])
@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--at", "09:00", "--tz", "Mars/Base"], "invalid time zone 'Mars/Base'"),
        (["--at", "9:75"], "invalid time '9:75'"),
        (["--at", "09:00", "--weekday", "mon"], "--weekday does not apply"),
        (["--at", "09:00", "--to", "ops"], "invalid e-mail address 'ops'"),
        (["--at", "09:00", "--to", "a@b.example", "--to", "x@"], "invalid e-mail address 'x@'"),
        (["--at", "09:00", "--max-lateness", "5 minutes"], "invalid duration"),
        (["--at", "09:00", "--catchup", "some"], "invalid --catchup 'some'"),
        (["--at", "09:00", "--param", "subject"], "invalid --param 'subject'"),
        (["--at", "09:00", "--param", "colour=red"], "unknown --param colour"),
        (["--at", "09:00", "--param", "query=other"], "given twice"),
        (["--at", "09:00", "--kind", "pdf"], "unknown report kind 'pdf'"),
        (["--cadence", "weekly", "--at", "09:00", "--weekday", "moon"], "invalid weekday"),
        (["--cadence", "weekly", "--at", "09:00"], "needs --weekday"),
        (["--cadence", "monthly", "--at", "09:00", "--day", "32"], "invalid day '32'"),
        (["--cadence", "cron", "--cron", "0 9 * *"], "expected 5 fields"),
        (["--cadence", "cron", "--cron", "0 25 * * *"], "invalid cron expression"),
        (["--cadence", "cron", "--cron", "0 9 * * *", "--at", "09:00"], "--at does not apply"),
        (["--cadence", "fortnightly"], "invalid cadence 'fortnightly'"),
        (["--at", "09:00", "--name", " "], "invalid schedule name"),
        (["--at", "09:00", "--account", "nobody"], "no account 'nobody'"),
    ],
)
def test_each_invalid_value_is_one_line_exit_2_and_writes_nothing(
    schedctl, db_url: str, args: list[str], message: str
) -> None:
    code, out, err = schedctl("schedules", "create", *GOOD, *args)
    assert code == 2
    assert out == ""
    assert err.count("\n") == 1
    assert err.startswith("schedctl: error: ")
    assert message in err
    assert count_schedules(db_url) == 0


@pytest.mark.parametrize("dialect", ["sqlite"])
def test_an_invalid_update_is_refused_and_changes_nothing(schedctl, db_url: str) -> None:
    code, _, err = schedctl("schedules", "create", *GOOD, "--at", "09:00", "--json")
    assert code == 0, err
    for args, message in [
        (["--tz", "Atlantis/Capital"], "invalid time zone"),
        (["--cadence", "monthly"], "needs --day"),
        (["--to", "nobody"], "invalid e-mail"),
        (["--param", "query=gone"], "no report query 'gone'"),
    ]:
        code, out, err = schedctl("schedules", "update", "1", *args)
        assert (code, out) == (2, ""), args
        assert message in err
    code, out, _ = schedctl("schedules", "show", "1", "--json")
    assert '"tz": "UTC"' in out
    assert '"cadence": "daily"' in out
    for args in [["show", "x1"], ["runs", "0"], ["pause", "12"], ["delete", "1"]]:
        code, out, err = schedctl("schedules", *args)
        assert (code, out) == (2, ""), args
        assert err.count("\n") == 1
    assert count_schedules(db_url) == 1
