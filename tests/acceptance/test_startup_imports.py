"""Help costs no database layer: `--help` imports neither SQLAlchemy, a driver nor jinja2;
and no command, whatever its options, loads typer or Pydantic.

Those packages are most of schedctl's start-up time; each command imports
them where it first needs them. The command line is click's, whose option types
convert values without Pydantic (typer, which wraps click, builds a Pydantic
validator for each option it converts). The assertions are about modules, not
timing (bench/startup.py times them).
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

from schedctl.commands import COMMAND_NAMES
from support.cli import SCHEDCTL, process_env

HEAVY = {"sqlalchemy", "psycopg", "psycopg2", "oracledb", "pymysql", "jinja2", "tenacity"}
NEVER = {"typer", "pydantic", "pydantic_core"}
_IMPORTED = re.compile(r"^import time:\s+\d+\s+\|\s+\d+\s+\|\s*([\w.]+)\s*$")


def test_top_level_help_imports_no_database_layer() -> None:
    # The installed entry point, as a person types it; -X importtime lists every import.
    result = subprocess.run(
        [sys.executable, "-X", "importtime", str(SCHEDCTL), "--help"],
        capture_output=True, text=True, check=False, timeout=60,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "Usage: schedctl" in result.stdout
    imported = {
        match[1].split(".")[0]
        for line in result.stderr.splitlines()
        if (match := _IMPORTED.match(line))
    }
    assert {"click", "schedctl"} <= imported  # the listing was read
    assert imported & (HEAVY | NEVER) == set()


def test_no_command_help_imports_the_database_layer() -> None:
    # Every command's --help in one fresh interpreter: whatever any of them imports stays.
    script = (
        "import contextlib, io, sys\n"
        "from schedctl.cli import run\n"
        "codes = []\n"
        "with contextlib.redirect_stdout(io.StringIO()):\n"
        "    for name in sys.argv[1:]:\n"
        "        codes.append(run([*name.split(), '--help']))\n"
        "print(codes)\n"
        "print(' '.join(sorted({m.split('.')[0] for m in sys.modules})))\n"
    )
    commands = sorted(COMMAND_NAMES)
    result = subprocess.run(
        [sys.executable, "-c", script, *commands],
        capture_output=True, text=True, check=False, timeout=60,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    codes, modules = result.stdout.splitlines()
    assert codes == str([0] * len(commands))
    imported = set(modules.split())
    assert {"click", "schedctl"} <= imported
    assert imported & (HEAVY | NEVER) == set()


# Lines that between them give every kind of value the command line converts: whole
# numbers and their ranges, repeated options, a flag pair, a path, a refused value.
LINES = [
    ["db", "upgrade"],
    ["tick", "--limit", "5"],
    ["users", "add", "a@example.com", "--no-digest", "--tz", "UTC", "--digest-at", "08:00"],
    ["users", "next", "a@example.com", "-n", "3"],
    ["schedules", "create", "--name", "s", "--kind", "sql", "--param", "query=q",
     "--to", "r@example.com", "--to", "s@example.com", "--cadence", "daily", "--at", "07:00"],
    ["schedules", "runs", "1", "--limit", "2"],
    ["heartbeat", "-c", "tick", "--check"],
    ["demo", "--path", "{tmp}/demo.db", "--quiet"],
    ["messages", "list", "--limit", "abc"],
    ["serve", "--port", "0"],
    ["--json", "accounts", "create", "acme"],
]  # fmt: skip


def test_no_command_loads_typer_or_pydantic(tmp_path: Path) -> None:
    # Every line in one fresh interpreter: whatever any of them imports stays.
    script = (
        "import contextlib, io, json, sys\n"
        "from schedctl.cli import run\n"
        "codes = []\n"
        "out, err = io.StringIO(), io.StringIO()\n"
        "with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):\n"
        "    for line in json.loads(sys.argv[1]):\n"
        "        codes.append(run(line))\n"
        "print(codes)\n"
        "print(' '.join(sorted({m.split('.')[0] for m in sys.modules})))\n"
    )
    lines = [[word.replace("{tmp}", str(tmp_path)) for word in line] for line in LINES]
    result = subprocess.run(
        [sys.executable, "-c", script, json.dumps(lines)],
        capture_output=True, text=True, check=False, timeout=120,
        env=process_env(f"sqlite:///{tmp_path / 'schedctl.db'}", {}),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    codes, modules = result.stdout.splitlines()
    # The lines ran (the bad ones refused): the imports below are those of commands.
    assert codes == str([0, 0, 0, 0, 2, 2, 0, 0, 2, 2, 0]), codes
    imported = set(modules.split())
    assert {"click", "sqlalchemy", "schedctl"} <= imported
    assert imported & NEVER == set()


def test_start_up_runs_without_the_collector_until_the_database_is_open(
    tmp_path: Path,
) -> None:
    """The entry point holds the cyclic garbage collector during start-up; opening the
    database resumes it with start-up's objects frozen. `--help` never resumes it (a
    short process), and an in-process `run` leaves the caller's collector alone."""
    script = (
        "import contextlib, gc, io, sys\n"
        "from schedctl.cli import run\n"
        "from schedctl.cli.runtime import pause_collector\n"
        "with contextlib.redirect_stdout(io.StringIO()):\n"
        "    codes = [run(['tick', '-q'])]\n"
        "    states = [(gc.isenabled(), gc.get_freeze_count() > 0)]\n"
        "    pause_collector()\n"
        "    codes.append(run(['--help']))\n"
        "    states.append((gc.isenabled(), gc.get_freeze_count() > 0))\n"
        "    codes.append(run(['tick', '-q']))\n"
        "    states.append((gc.isenabled(), gc.get_freeze_count() > 0))\n"
        "print(codes, states)\n"
        "print(' '.join(sorted(sys.modules)))\n"
    )
    db = f"sqlite:///{tmp_path / 'schedctl.db'}"
    subprocess.run([str(SCHEDCTL), "db", "upgrade", "-q"], env=process_env(db, {}), check=True)
    result = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True, text=True, check=False, timeout=60, env=process_env(db, {}),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    outcome, modules = result.stdout.splitlines()
    assert outcome == "[0, 0, 0] [(True, False), (False, False), (True, True)]"
    # An idle tick on SQLite loads no PostgreSQL dialect (the schema names no dialect).
    assert "sqlalchemy.dialects.sqlite" in modules.split()
    assert not {m for m in modules.split() if m.startswith("sqlalchemy.dialects.postgresql")}
