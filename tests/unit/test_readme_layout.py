"""The README's layout table names every module of every schedctl package, so that a
rule is found from the folder names alone and the table stays true to the tree."""

from __future__ import annotations

import re
from pathlib import Path

import schedctl

SRC = Path(schedctl.__file__).parent
README = SRC.parents[1] / "README.md"


def _layout_rows() -> dict[str, str]:
    """Each row of the layout table by the folder it opens with (`db/` -> its text)."""
    text = README.read_text()
    table = text[text.index("Layout (`src/schedctl/`)") :]
    rows = {}
    for line in table.splitlines()[1:]:
        if line.startswith("| `"):
            for folder in re.findall(r"`(\w+)/`", line.split("|")[1]):
                rows[folder] = line
        elif rows and not line.startswith("|"):
            break
    return rows


def test_every_module_of_every_package_is_in_the_layout_table() -> None:
    rows = _layout_rows()
    packages = [p.parent for p in SRC.glob("*/__init__.py")]
    assert {"db", "delivery", "schedules", "digest", "distribute", "cli"} <= set(rows)
    missing = []
    for package in packages:
        row = rows.get(package.name, "")
        for module in sorted(package.glob("*.py")):
            name = module.stem
            if name == "__init__" or (package.name == "cli" and name.endswith("_cmd")):
                continue  # the cli row says "one module per group"
            if f"`{name}`" not in row and f"`{name}.py`" not in row:
                missing.append(f"{package.name}/{module.name}")
    assert missing == []
