"""`schedctl config check`: is this installation's configuration safe to run (SPEC §12)."""

from __future__ import annotations

import sys

import click

from schedctl.cli.params import command_group, flag
from schedctl.cli.runtime import command, current
from schedctl.redaction import redact

config_app = command_group("Check the configuration.")


@command(config_app, "check")
@flag(
    "--smtp",
    help="Also open a session with the configured mail server (EHLO, STARTTLS and"
    " AUTH as configured, then QUIT); nothing is sent.",
)
def check_command(smtp: bool) -> int:
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
    return 2 if found.errors else 1 if found.warnings else 0


def register(app: click.Group) -> None:
    app.add_command(config_app, "config")
