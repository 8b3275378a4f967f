"""`schedctl completion bash|zsh|fish`: print the shell's tab-completion script.

The script is click's own (click.shell_completion): it calls schedctl back with
``_SCHEDCTL_COMPLETE`` set, which click answers before running any command. Its code
is imported only when used, so no other command pays for it.
"""

from __future__ import annotations

import click

from schedctl.cli.params import argument
from schedctl.cli.runtime import command, current
from schedctl.errors import UsageError

SHELLS = ("bash", "zsh", "fish")
PROG_NAME = "schedctl"
COMPLETE_VAR = "_SCHEDCTL_COMPLETE"


@argument("shell", metavar="bash|zsh|fish", help="The shell.")
def completion_command(shell: str) -> None:
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
    from click.shell_completion import get_completion_class

    completion = get_completion_class(name)
    assert completion is not None  # click has all three
    root = click.get_current_context().find_root().command
    script = completion(root, {}, PROG_NAME, COMPLETE_VAR).source()
    runtime.output.result({"shell": name, "script": script}, script)


def register(app: click.Group) -> None:
    command(app, "completion")(completion_command)
