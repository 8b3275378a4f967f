"""Dialect differences stay in ``schedctl.db`` (STYLE.md): outside it, code asks a
capability flag (``db.dialect.capabilities``), never which dialect it runs on."""

from __future__ import annotations

import ast
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

import schedctl

SRC = Path(schedctl.__file__).parent
DIALECT_NAMES = {"postgresql", "postgres", "sqlite", "mysql", "mariadb", "oracle"}


def _decisions_by_dialect_name(path: Path, root: Path = SRC) -> list[str]:
    """The lines of ``path`` that compare something with a dialect name, or read
    ``<something>.dialect.name``."""
    tree = ast.parse(path.read_text(), filename=str(path))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Compare):
            operands = [node.left, *node.comparators]
            named = [o for o in operands if isinstance(o, ast.Constant)]
            if any(o.value in DIALECT_NAMES for o in named):
                found.append(f"{path.relative_to(root)}:{node.lineno}")
        elif isinstance(node, ast.Attribute) and node.attr == "name":
            value = node.value
            if isinstance(value, ast.Attribute) and value.attr == "dialect":
                found.append(f"{path.relative_to(root)}:{node.lineno}")
    return sorted(found)


def test_no_code_outside_db_decides_by_the_dialects_name() -> None:
    outside = [p for p in sorted(SRC.rglob("*.py")) if p.relative_to(SRC).parts[0] != "db"]
    assert outside  # the scan reads the package
    assert [line for path in outside for line in _decisions_by_dialect_name(path)] == []


def test_the_scan_finds_a_decision_by_dialect_name(tmp_path: Path) -> None:
    sample = tmp_path / "sample.py"
    sample.write_text(
        "def f(conn, db):\n"
        '    if conn.dialect.name == "postgresql":\n'
        "        return 1\n"
        '    return db.dialect != "sqlite"\n'
    )
    # line 2 twice: the comparison and the ``dialect.name`` it reads
    assert _decisions_by_dialect_name(sample, tmp_path) == ["sample.py:2"] * 2 + ["sample.py:4"]


def test_sqlite_compiles_a_row_lock_away_so_one_statement_serves_both() -> None:
    """Why callers write ``.with_for_update(...)`` without asking the dialect: SQLite
    has no row locks (its write transaction excludes other writers) and SQLAlchemy's
    SQLite compiler renders no FOR UPDATE; PostgreSQL gets the lock asked for."""
    table = sa.table("t", sa.column("id"))
    for lock in (
        {},
        {"skip_locked": True},
        {"skip_locked": True, "key_share": True},
        {"key_share": True},
    ):
        statement = sa.select(table).with_for_update(**lock)
        assert "FOR" not in str(statement.compile(dialect=sqlite.dialect()))
        assert " FOR " in str(statement.compile(dialect=postgresql.dialect()))
