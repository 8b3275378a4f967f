"""`schedctl completion bash|zsh|fish`: print the shell's tab-completion script.

The script calls schedctl back with ``_SCHEDCTL_COMPLETE`` set; :func:`prepare` then
readies typer's completion for that one call. Both import typer's completion code
only when used, so no other command pays for it. (typer's own --install-completion
is off: it edits the user's shell start-up files.)
"""

from __future__ import annotations

import os
from typing import Annotated

import typer

from schedctl.cli.runtime import command, current
from schedctl.errors import UsageError

SHELLS = ("bash", "zsh", "fish")
PROG_NAME = "schedctl"
COMPLETE_VAR = "_SCHEDCTL_COMPLETE"


def prepare() -> None:
    """Ready typer's completion classes when a shell asks schedctl for completions."""
    if COMPLETE_VAR in os.environ:
        from typer.completion import get_completion_inspect_parameters

        get_completion_inspect_parameters()  # registers typer's bash, zsh and fish handlers


def completion_command(
    shell: Annotated[
        str,
        typer.Argument(metavar="bash|zsh|fish", help="The shell.", show_default=False),
    ],
) -> None:
    """Print the tab-completion script for bash, zsh or fish.

    Install it where the shell reads completions, e.g.

    \b
      schedctl completion bash > ~/.local/share/bash-completion/completions/schedctl
      schedctl completion zsh > ~/.zfunc/_schedctl   # with fpath+=~/.zfunc in ~/.zshrc
      schedctl completion fish > ~/.config/fish/completions/schedctl.fish
    """
    runtime = current()
    _ = runtime.settings  # a broken configuration is refused here too, as by every command
    name = shell.strip().lower()
    if name not in SHELLS:
        raise UsageError(f"invalid shell {shell!r} (expected bash, zsh or fish)")
    # typer.completion has the scripts its --show-completion prints, without an __all__.
    from typer.completion import get_completion_script  # type: ignore[attr-defined]

    script = get_completion_script(prog_name=PROG_NAME, complete_var=COMPLETE_VAR, shell=name)
    runtime.output.result({"shell": name, "script": script}, script)


def register(app: typer.Typer) -> None:
    command(app, "completion")(completion_command)
