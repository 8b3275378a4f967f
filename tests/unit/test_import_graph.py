"""schedctl's modules import each other without a cycle: read from the source, the
imports a module runs when it is loaded (not those inside functions, which are the
deliberate late imports, nor those under ``if TYPE_CHECKING``) form no loop."""

from __future__ import annotations

import ast
from graphlib import CycleError, TopologicalSorter
from pathlib import Path

import pytest

import schedctl

SRC = Path(schedctl.__file__).parent


def _module_name(path: Path, root: Path) -> str:
    parts = path.relative_to(root.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _load_time_imports(node: ast.AST) -> list[ast.Import | ast.ImportFrom]:
    found: list[ast.Import | ast.ImportFrom] = []
    for child in ast.iter_child_nodes(node):
        if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            continue
        if isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test):
            found += [i for n in child.orelse for i in _load_time_imports(n)]
            continue
        if isinstance(child, (ast.Import, ast.ImportFrom)):
            found.append(child)
        found += _load_time_imports(child)
    return found


def import_graph(root: Path) -> dict[str, set[str]]:
    """Each module of the package at ``root``: the package's modules it imports when loaded."""
    paths = {_module_name(p, root): p for p in sorted(root.rglob("*.py"))}
    graph: dict[str, set[str]] = {}
    for name, path in paths.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        edges = set()
        for node in _load_time_imports(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.Import):
                edges |= {a.name for a in node.names}
                continue
            base = node.module or ""
            if node.level:
                up = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*up, *([base] if base else [])])
            for alias in node.names:
                submodule = f"{base}.{alias.name}"
                edges.add(submodule if submodule in paths else base)
        graph[name] = {e for e in edges if e in paths and e != name}
    return graph


def test_schedctl_has_no_import_cycle() -> None:
    graph = import_graph(SRC)
    assert len(graph) > 50  # the scan reads the whole package
    assert "schedctl.delivery.dispatch" in graph["schedctl.tick"]
    TopologicalSorter(graph).prepare()  # raises CycleError naming the loop


def test_the_scan_finds_a_cycle_and_ignores_late_imports(tmp_path: Path) -> None:
    package = tmp_path / "pkg"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "a.py").write_text("from pkg import b\n")
    (package / "b.py").write_text(
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n    from pkg import a\n"
        "def f():\n    from pkg import a\n"
        "from . import c\n"
    )
    (package / "c.py").write_text("import pkg.a\n")

    graph = import_graph(package)

    assert graph == {"pkg": set(), "pkg.a": {"pkg.b"}, "pkg.b": {"pkg.c"}, "pkg.c": {"pkg.a"}}
    with pytest.raises(CycleError) as raised:
        TopologicalSorter(graph).prepare()
    assert set(raised.value.args[1]) == {"pkg.a", "pkg.b", "pkg.c"}
