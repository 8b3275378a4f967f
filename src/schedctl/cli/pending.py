"""Contract commands whose behaviour is not built yet.

They exist so that `schedctl --help` shows the whole contract and scripts get a
clear answer: exit 2 and "not implemented yet", never a pretend success.
"""

from __future__ import annotations

from collections.abc import Callable

import typer

from schedctl.cli.runtime import command
from schedctl.commands import GROUPS, TOP_LEVEL
from schedctl.errors import NotImplementedYet

_ANY_ARGS = {"allow_extra_args": True, "ignore_unknown_options": True}


def _pending(name: str, help_text: str) -> Callable[[typer.Context], None]:
    def not_implemented(ctx: typer.Context) -> None:
        raise NotImplementedYet(f"`schedctl {name}` is not implemented yet")

    not_implemented.__doc__ = f"{help_text} (not implemented yet)"
    return not_implemented


def register(app: typer.Typer) -> None:
    """Add a placeholder for every contract command no real module has registered."""
    taken = {c.name for c in app.registered_commands} | {g.name for g in app.registered_groups}
    for name, help_text in TOP_LEVEL.items():
        if name not in taken:
            command(app, name, context_settings=_ANY_ARGS)(_pending(name, help_text))
    for group, (help_text, subcommands) in GROUPS.items():
        if group in taken:
            continue
        sub_app = typer.Typer(help=help_text, no_args_is_help=True)
        for sub in subcommands:
            command(sub_app, sub, context_settings=_ANY_ARGS)(
                _pending(f"{group} {sub}", f"{sub.capitalize()} {group}.")
            )
        app.add_typer(sub_app, name=group)
