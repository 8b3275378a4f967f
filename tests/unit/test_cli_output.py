"""The output layer's tables and lines with values a user typed (names, subjects), and
the commands it suggests."""

from __future__ import annotations

import io
import sys
from pathlib import Path

import pytest

from schedctl.cli.output import Output, OutputOptions, printable


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


NAMES = ["[bold red]pwn[/] [/x]", "esc\x1b[2Jclear", "c1\x9bz", "lf\r\nschedctl: all green"]


@pytest.mark.parametrize("terminal", [True, False])
def test_names_are_shown_as_text_never_as_markup_or_control(terminal: bool) -> None:
    # "[/x]" in a name crashed every listing on a terminal (rich read it as markup), a
    # "[reverse]" styled it, and an escape sequence reached the terminal raw.
    stream = Terminal() if terminal else io.StringIO()
    output = Output(OutputOptions(), stream=stream)
    output.table(
        {}, ["id", "name"], [(n, name) for n, name in enumerate(NAMES)], title=f"of {NAMES[0]}"
    )
    shown = stream.getvalue()
    assert "[bold red]pwn[/] [/x]" in shown
    assert "\x1b[2J" not in shown  # (rich's own styles stay)
    assert "\x9b" not in shown
    assert "esc\\x1b[2Jclear" in shown
    assert "c1\\x9bz" in shown
    # A line feed in a cell would start a line that passes for the output's own.
    assert "\nschedctl: all green" not in shown
    assert "lf\\x0d\\x0aschedctl: all green" in shown


def test_a_human_result_keeps_its_lines_and_escapes_control_characters() -> None:
    stream = io.StringIO()
    Output(OutputOptions(), stream=stream).result({}, "name: a\x1b[2Jb\n\tnext line")
    assert stream.getvalue() == "name: a\\x1b[2Jb\n\tnext line\n"
    assert printable("plain, ünïcode ✓") == "plain, ünïcode ✓"


def test_the_demo_names_schedctl_as_this_shell_can_run_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # `make demo` ended with "look around: schedctl …", which a new shell cannot find
    # (.venv/bin is not on PATH).
    from schedctl.cli.demo_cmd import _program

    script = tmp_path / ".venv" / "bin" / "schedctl"
    script.parent.mkdir(parents=True)
    script.write_text("#!/bin/sh\n")
    script.chmod(0o755)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", [str(script), "demo"])
    monkeypatch.setenv("PATH", "/usr/bin:/bin")
    assert _program() == ".venv/bin/schedctl"
    monkeypatch.setenv("PATH", f"{script.parent}:/usr/bin:/bin")
    assert _program() == "schedctl"
