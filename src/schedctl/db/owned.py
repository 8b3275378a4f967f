"""One account's row, or NotFound: how every command looks up what it acts on."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa

from schedctl.db.schema import accounts
from schedctl.errors import NotFound


def get_owned(
    conn: sa.Connection,
    table: sa.Table,
    key: int | sa.ColumnElement[bool],
    account_id: int | None,
    what: str = "schedule",
    *,
    label: object = None,
    lock: bool = False,
    columns: Sequence[sa.ColumnElement[Any]] = (),
) -> sa.Row[Any]:
    """The row of ``table`` whose id is ``key`` (or that matches ``key``, a condition)
    in account ``account_id``; else NotFound "no {what} {label or key} in account
    '{name}'" (exit 2). ``account_id`` None: an operator's look-up in any account,
    and the message names no account. ``lock``: the row is locked until the
    transaction ends. ``columns``: only these (default: the whole row)."""
    where = key if isinstance(key, sa.ColumnElement) else table.c.id == key
    query = sa.select(*columns) if columns else sa.select(table)
    query = query.where(where)
    if account_id is not None:
        query = query.where(table.c.account_id == account_id)
    if lock:
        query = query.with_for_update()
    row = conn.execute(query).first()
    if row is None:
        scope = "" if account_id is None else f" in account {_account_label(conn, account_id)}"
        raise NotFound(f"no {what} {key if label is None else label}{scope}")
    return row


def _account_label(conn: sa.Connection, account_id: int) -> str:
    """How an error names an account: its name, quoted (the id if it has none)."""
    name = conn.execute(sa.select(accounts.c.name).where(accounts.c.id == account_id)).scalar()
    return str(account_id) if name is None else repr(str(name))
