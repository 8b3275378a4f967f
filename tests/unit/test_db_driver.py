"""Statements compiled to run on the driver (schedctl.db.driver): what is refused."""

from __future__ import annotations

import pytest
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from schedctl.db.driver import compile_for_driver

_metadata = sa.MetaData()
_things = sa.Table(
    "things",
    _metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("name", sa.Text),
    sa.Column("kind", sa.Text, default="plain"),
    sa.Column("stamp", sa.Text, onupdate=lambda: "changed"),
)
DIALECTS = [sqlite.dialect(), postgresql.psycopg.dialect()]  # type: ignore[attr-defined]


@pytest.mark.parametrize("dialect", DIALECTS, ids=lambda d: d.name)
def test_a_column_default_computed_in_python_is_left_to_sqlalchemy(dialect: sa.Dialect) -> None:
    """SQLAlchemy computes a Python-side default (or onupdate) on each execution; the
    compiled statement alone would write NULL there, so it is not run on the driver."""
    one = _things.c.id == sa.bindparam("i")
    insert = _things.insert().values(name=sa.bindparam("n"))
    update = _things.update().where(one).values(name=sa.bindparam("n"))
    plain = _things.update().where(one).values(stamp="x")

    assert compile_for_driver(insert, dialect, ["n"]) is None
    assert compile_for_driver(update, dialect, ["n", "i"]) is None
    assert compile_for_driver(plain, dialect, ["i"]) is not None


@pytest.mark.parametrize("dialect", DIALECTS, ids=lambda d: d.name)
def test_an_expanding_in_is_left_to_sqlalchemy(dialect: sa.Dialect) -> None:
    delete = _things.delete().where(_things.c.id.in_(sa.bindparam("ids", expanding=True)))

    assert compile_for_driver(delete, dialect, ["ids"]) is None


def test_parameters_are_converted_and_ordered_as_the_statement_names_them() -> None:
    update = (
        _things.update()
        .where(_things.c.id == sa.bindparam("i"))
        .values(name=sa.bindparam("n"), stamp=None)
    )
    compiled = compile_for_driver(update, sqlite.dialect(), ["i", "n"])

    assert compiled is not None
    assert compiled.sql.startswith("UPDATE things SET name=?, stamp=? WHERE things.id = ?")
    assert compiled.arguments({"n": "x", "i": 7, "extra": 1}) == ("x", None, 7)
