"""`schedctl schedules` commands (placeholder until built; see cli/pending.py)."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    """Register this module's commands on the root app (none yet)."""
