"""Help costs no database layer: `--help` imports neither SQLAlchemy, a driver nor jinja2.

Those packages are most of schedctl's start-up time; each command imports
them where it first needs them. `schedctl --help` processes no option, so typer's
Pydantic-based coercion does not load either; a command's --help comes after the root
options (--database-url, --config), which typer coerces with it. The assertions are
about modules, not timing (bench/startup.py times them).
"""

from __future__ import annotations

import re
import subprocess
import sys

from schedctl.commands import COMMAND_NAMES
from support.cli import SCHEDCTL

HEAVY = {"sqlalchemy", "psycopg", "psycopg2", "oracledb", "pymysql", "jinja2", "tenacity"}
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
    assert {"typer", "schedctl"} <= imported  # the listing was read
    assert imported & (HEAVY | {"pydantic"}) == set()


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
    assert {"typer", "schedctl"} <= imported
    assert imported & HEAVY == set()
