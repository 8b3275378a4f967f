"""The CLI uses click's public API only, so click is not pinned; typer and pydantic are
not dependencies, and no module of schedctl imports them."""

from __future__ import annotations

import ast
import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SRC = ROOT / "src" / "schedctl"
CLI = SRC / "cli"


def _private(dotted: str) -> bool:
    return any(part.startswith("_") and not part.startswith("__") for part in dotted.split("."))


def _imported(tree: ast.AST) -> list[tuple[int, str]]:
    """Every module an import statement names, with its line."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found += [(node.lineno, f"{node.module}.{alias.name}") for alias in node.names]
        elif isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
    return found


def test_the_cli_touches_nothing_private_of_click() -> None:
    found = []
    for path in sorted(CLI.glob("*.py")):
        tree = ast.parse(path.read_text(), str(path))
        names = [(n, name) for n, name in _imported(tree) if name.split(".")[0] == "click"]
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and not (
                isinstance(node.value, ast.Name) and node.value.id in ("self", "cls")
            ):
                names.append((node.lineno, node.attr))  # another object's private attribute
        found += [f"{path.name}:{line}: {name}" for line, name in names if _private(name)]
    assert found == []


def test_click_has_no_upper_bound_and_typer_and_pydantic_are_no_dependencies() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    names = {re.split(r"[^\w-]", d, maxsplit=1)[0].lower(): d for d in project["dependencies"]}
    assert re.fullmatch(r"click>=[\d.]+", names["click"])
    assert not {"typer", "typer-slim", "pydantic", "pydantic-core"} & names.keys()


def test_no_module_imports_typer_or_pydantic() -> None:
    found = [
        f"{path.relative_to(SRC)}:{line}: {name}"
        for path in sorted(SRC.rglob("*.py"))
        for line, name in _imported(ast.parse(path.read_text(), str(path)))
        if name.split(".")[0] in {"typer", "pydantic", "pydantic_core"}
    ]
    assert found == []
