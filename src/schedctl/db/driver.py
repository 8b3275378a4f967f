"""Statements run on the DBAPI connection itself: for the one write a dispatcher makes
per message, where SQLAlchemy's execution (parameter processing, result set-up,
events) and the transaction wrapper cost more than the SQL (see Database.write_alone).

A statement is compiled once for the engine's dialect by SQLAlchemy, as it would be
for any execution; what this module adds is only running the compiled text with its
parameters, each converted by its column type's own bind processor, as SQLAlchemy
would convert it. A statement this cannot run the same way (a column default
computed in Python, an expanding IN, a post-compile literal, a bind whose name the
dialect escapes) is left to SQLAlchemy.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, cast

import sqlalchemy as sa

__all__ = ["DriverStatement", "compile_for_driver"]


@dataclass(frozen=True)
class DriverStatement:
    """A statement compiled for one dialect, with what turns parameters into the
    driver's: the bind names in order (positional paramstyles) or by name."""

    sql: str
    compiled: Any  # sqlalchemy's SQLCompiler
    positional: bool
    names: tuple[str, ...]
    processors: dict[str, Callable[[Any], Any]]

    def arguments(self, params: dict[str, Any]) -> tuple[Any, ...] | dict[str, Any]:
        """The driver's parameters for ``params`` (by bind name; extra keys ignored)."""
        values = self.compiled.construct_params(params)
        for name, process in self.processors.items():
            values[name] = process(values[name])
        if self.positional:
            return tuple(values[name] for name in self.names)
        return {name: values[name] for name in self.names}


def compile_for_driver(
    statement: sa.Executable, dialect: sa.Dialect, keys: Sequence[str]
) -> DriverStatement | None:
    """``statement`` compiled for ``dialect`` to run on its driver with parameters
    named ``keys``, or None when it must run through SQLAlchemy (see the module
    docstring). Compiled as SQLAlchemy compiles it for an execution with those keys:
    an INSERT or UPDATE without values of its own takes its columns from them."""
    compiled: Any = cast(Any, statement).compile(dialect=dialect, column_keys=list(keys))
    binds = compiled.binds
    if compiled.insert_prefetch or compiled.update_prefetch:
        return None  # a column's Python-side default, which SQLAlchemy computes per run
    if compiled.escaped_bind_names or any(
        bind.expanding or bind.literal_execute for bind in binds.values()
    ):
        return None
    rendered = dict.fromkeys(compiled.bind_names.values())  # in order, once each
    names = tuple(compiled.positiontup) if dialect.positional else tuple(rendered)
    processors = {}
    for name in names:
        if name not in binds:
            return None
        process = binds[name].type.dialect_impl(dialect).bind_processor(dialect)
        if process is not None:
            processors[name] = process
    return DriverStatement(compiled.string, compiled, dialect.positional, names, processors)
