"""get_owned (db/owned.py): one account's row or NotFound, on both dialects.

The messages are the CLI's (`no schedule 7 in account 'default'`): scripts match them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import sqlalchemy as sa

from schedctl.db.database import Database
from schedctl.db.owned import get_owned
from schedctl.db.schema import messages, schedules
from schedctl.errors import NotFound
from support.reconcile import Seed


def read(db_url: str, work: Callable[[sa.Connection], Any]) -> Any:
    with Database(db_url) as db:
        return db.transaction(work)


def test_the_accounts_row_is_found_and_another_accounts_is_not(db_url: str) -> None:
    seed = Seed(db_url)
    other = seed.account("other")
    mine, theirs = seed.schedule(1), seed.schedule(other)

    row = read(db_url, lambda conn: get_owned(conn, schedules, mine, 1, "schedule", lock=True))
    assert (row.id, row.account_id) == (mine, 1)
    only = read(db_url, lambda c: get_owned(c, schedules, mine, 1, columns=[schedules.c.id]))
    assert tuple(only) == (mine,)

    with pytest.raises(NotFound) as refused:
        read(db_url, lambda conn: get_owned(conn, schedules, theirs, 1, "schedule"))
    assert refused.value.message == f"no schedule {theirs} in account 'default'"


def test_a_condition_and_its_label_name_the_row_and_no_account_means_any(db_url: str) -> None:
    seed = Seed(db_url)
    other = seed.account("other")
    theirs = seed.message(account_id=other)

    with pytest.raises(NotFound) as by_key:
        read(
            db_url,
            lambda conn: get_owned(
                conn, messages, messages.c.message_id == "<nope>", 1, "message", label=" nope "
            ),
        )
    assert by_key.value.message == "no message  nope  in account 'default'"
    # An operator (no account): any account's row; the message says no account.
    assert (
        read(db_url, lambda conn: get_owned(conn, messages, theirs, None, "message")).id == theirs
    )
    with pytest.raises(NotFound) as anywhere:
        read(db_url, lambda conn: get_owned(conn, messages, 10**9, None, "message"))
    assert anywhere.value.message == f"no message {10**9}"
