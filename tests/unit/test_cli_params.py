"""The CLI uses typer through its public API only, so typer is not pinned."""

from __future__ import annotations

import ast
import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CLI = ROOT / "src" / "schedctl" / "cli"


def _private(dotted: str) -> bool:
    return any(part.startswith("_") and not part.startswith("__") for part in dotted.split("."))


def test_the_cli_touches_nothing_private_of_typer() -> None:
    found = []
    for path in sorted(CLI.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("typer"):
                names = [f"{node.module}.{alias.name}" for alias in node.names]
            elif isinstance(node, ast.Import):
                names = [alias.name for alias in node.names if alias.name.startswith("typer")]
            elif isinstance(node, ast.Attribute) and not (
                isinstance(node.value, ast.Name) and node.value.id in ("self", "cls")
            ):
                names = [node.attr]  # another object's private attribute
            else:
                continue
            found += [f"{path.name}:{node.lineno}: {name}" for name in names if _private(name)]
    assert found == []


def test_typer_has_no_upper_bound() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    [typer] = [d for d in project["dependencies"] if re.match(r"typer\b", d)]
    assert "<" not in typer
    assert re.fullmatch(r"typer>=[\d.]+", typer)
