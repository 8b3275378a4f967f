"""`schedctl config check`: is this installation's configuration safe to run (SPEC §12)."""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from schedctl.cli.params import command_group
from schedctl.cli.runtime import command, current
from schedctl.redaction import redact

config_app = command_group("Check the configuration.")


@command(config_app, "check")
def check_command(
    smtp: Annotated[
        bool,
        typer.Option(
            "--smtp",
            help="Also open a session with the configured mail server (EHLO, STARTTLS and"
            " AUTH as configured, then QUIT); nothing is sent.",
        ),
    ] = False,
) -> None:
    """Check the config file, the database and what they hold: exit 0 clean, 1 warnings,
    2 errors."""
    from schedctl.checks import check_installation

    runtime = current()
    found = check_installation(runtime.settings, smtp=smtp)
    data = {"ok": not found.errors, "warnings": found.warnings, "errors": found.errors}
    lines = [f"error: {e}" for e in found.errors] + [f"warning: {w}" for w in found.warnings]
    out = runtime.output
    if out.options.quiet and not out.options.json:
        # Quiet (cron): nothing when clean, each problem on stderr.
        for line in lines:
            print(f"schedctl: {redact(line)}", file=sys.stderr)
    else:
        out.result(data, "\n".join(lines) or "configuration ok")
    code = 2 if found.errors else 1 if found.warnings else 0
    if code:
        raise typer.Exit(code)


def register(app: typer.Typer) -> None:
    app.add_typer(config_app, name="config")
