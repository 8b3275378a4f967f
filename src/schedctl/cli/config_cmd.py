"""`schedctl config check`: is this installation's configuration safe to run (SPEC §12)."""

from __future__ import annotations

import typer

from schedctl.cli.params import command_group
from schedctl.cli.runtime import command, current

config_app = command_group("Check the configuration.")


@command(config_app, "check")
def check_command() -> None:
    """Check the config file and the database: exit 0 clean, 1 warnings, 2 errors."""
    from schedctl.checks import check_installation

    runtime = current()
    warnings, errors = check_installation(runtime.settings)
    data = {"ok": not errors, "warnings": warnings, "errors": errors}
    lines = [f"error: {e}" for e in errors] + [f"warning: {w}" for w in warnings]
    runtime.output.result(data, "\n".join(lines) or "configuration ok")
    code = 2 if errors else 1 if warnings else 0
    if code:
        raise typer.Exit(code)


def register(app: typer.Typer) -> None:
    app.add_typer(config_app, name="config")
