"""schedctl's command line, run two ways with one result type.

:class:`CliRunner` (the ``cli`` fixture) calls ``schedctl.cli.run`` in the test's own
process with its own environment and captured output, the way sqlite-utils' and
click's ``CliRunner`` do: 50-100 ms a command. :func:`run_cli` (the ``cli_process``
fixture) starts the installed ``schedctl`` as cron would, 0.35-0.5 s a command, for
what only a started interpreter shows (start-up, the console script, plugins found on
``PYTHONPATH``). Concurrency, SIGKILL and faults use ``support.processes.Schedctl``:
separate processes, forked from a parent with schedctl already imported.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
SCHEDCTL = Path(sys.executable).with_name("schedctl")


@dataclass
class Result:
    """What one schedctl command did: its exit code and its two streams."""

    returncode: int
    stdout: str
    stderr: str

    @property
    def json(self) -> Any:
        return json.loads(self.stdout)


def process_env(db_url: str | None, env: dict[str, str] | None) -> dict[str, str]:
    """This process's environment without any SCHEDCTL_ setting, plus ``env``."""
    full = {k: v for k, v in os.environ.items() if not k.startswith("SCHEDCTL_")}
    full["NO_COLOR"] = "1"
    if db_url:
        full["SCHEDCTL_DATABASE_URL"] = db_url
    full.update(env or {})
    return full


def run_cli(
    *args: str,
    db_url: str | None = None,
    env: dict[str, str] | None = None,
    timeout: float = 60,
    cwd: Path | None = None,
) -> Result:
    """Run the installed `schedctl` as cron would: a separate process."""
    done = subprocess.run(
        [str(SCHEDCTL), *args],
        capture_output=True,
        text=True,
        env=process_env(db_url, env),
        timeout=timeout,
        cwd=cwd,
        check=False,
    )
    return Result(done.returncode, done.stdout, done.stderr)


class CliRunner:
    """Runs `schedctl` in this process, with its own environment and captured output.

    Called like :func:`run_cli`. The environment is the test's (conftest removes the
    developer's SCHEDCTL_ settings at start-up, and a test may monkeypatch more)
    plus ``db_url`` and ``env``, restored afterwards; ``cwd`` likewise.
    """

    def __init__(self, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]):
        self.monkeypatch = monkeypatch
        self.capsys = capsys

    def __call__(
        self,
        *args: str,
        db_url: str | None = None,
        env: dict[str, str] | None = None,
        timeout: float | None = None,  # a process's limit; accepted, not used here
        cwd: Path | None = None,
    ) -> Result:
        from schedctl.cli import run

        with self.monkeypatch.context() as patch:
            patch.setenv("NO_COLOR", "1")
            if db_url:
                patch.setenv("SCHEDCTL_DATABASE_URL", db_url)
            for key, value in (env or {}).items():
                patch.setenv(key, value)
            if cwd is not None:
                patch.chdir(cwd)
            self.capsys.readouterr()
            code = run(list(args))
            out, err = self.capsys.readouterr()
        return Result(code, out, err)
