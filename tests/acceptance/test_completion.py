"""Tab completion: `schedctl completion bash|zsh|fish` prints the script, and the
installed schedctl answers the shell's requests through it."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from support.cli import SCHEDCTL, CliRunner, run_cli


def bash_completions(script: Path, words: list[str]) -> list[str]:
    """What bash offers for the last of ``words``, with the script sourced."""
    bash = shutil.which("bash")
    assert bash is not None
    command = (
        f"source {script}; COMP_WORDS=({' '.join(words)}); COMP_CWORD={len(words) - 1};"
        ' _schedctl_completion schedctl; printf "%s\\n" "${COMPREPLY[@]}"'
    )
    env = {**os.environ, "PATH": f"{SCHEDCTL.parent}{os.pathsep}{os.environ['PATH']}"}
    done = subprocess.run(
        [bash, "--norc", "--noprofile", "-c", command],
        capture_output=True, text=True, env=env, check=False, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return done.stdout.split()


def test_bash_completes_commands_and_options_through_the_printed_script(
    tmp_path: Path,
) -> None:
    printed = run_cli("completion", "bash")
    assert printed.returncode == 0, printed.stderr
    script = tmp_path / "schedctl.bash"
    script.write_text(printed.stdout)

    assert bash_completions(script, ["schedctl", "sched"]) == ["schedules"]
    assert bash_completions(script, ["schedctl", "schedules", "cr"]) == ["create"]
    assert "--catchup" in bash_completions(script, ["schedctl", "schedules", "create", "--ca"])


@pytest.mark.parametrize(
    ("shell", "marker"),
    [("zsh", "#compdef schedctl"), ("fish", "complete --no-files --command schedctl")],
)
def test_zsh_and_fish_scripts_are_printed(cli: CliRunner, shell: str, marker: str) -> None:
    result = cli("completion", shell)
    assert result.returncode == 0, result.stderr
    assert marker in result.stdout
    assert f"_SCHEDCTL_COMPLETE={shell}_complete" in result.stdout


def test_an_unknown_shell_is_a_usage_error(cli: CliRunner) -> None:
    result = cli("completion", "tcsh")
    assert (result.returncode, result.stdout) == (2, "")
    assert result.stderr == "schedctl: error: invalid shell 'tcsh' (expected bash, zsh or fish)\n"


@pytest.mark.parametrize("flag", ["--install-completion", "--show-completion"])
def test_install_and_show_completion_point_to_the_completion_command(
    cli: CliRunner, flag: str
) -> None:
    result = cli(flag)
    assert (result.returncode, result.stdout) == (2, "")
    [line] = result.stderr.splitlines()
    assert line.startswith(f"schedctl: error: {flag} is not an option of schedctl:")
    assert "`schedctl completion bash|zsh|fish`" in line
