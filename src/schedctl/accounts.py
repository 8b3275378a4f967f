"""Accounts: the tenant every schedule, message and suppression belongs to."""

from __future__ import annotations

import unicodedata
from datetime import datetime
from typing import Any, NamedTuple

import sqlalchemy as sa

from schedctl.config import DEFAULT_ACCOUNT
from schedctl.db import dialect
from schedctl.db.schema import accounts
from schedctl.errors import ConflictError, NotFound, PermissionDenied, ValidationError, quoted
from schedctl.values import as_id


class AccountRef(NamedTuple):
    """An account a command works in: its id and its name."""

    id: int
    name: str


def find_account(conn: sa.Connection, ref: str | None, origin: str | None = None) -> AccountRef:
    """The account named or numbered `ref` (default: the `default` account).

    ``origin`` names where `ref` came from (an environment variable) in the error line.
    """
    # `--account ""` is a mistake (an unset shell variable), not the default account.
    ref = DEFAULT_ACCOUNT if ref is None else ref.strip()
    where = f"{origin}: " if origin else ""
    if not ref:
        raise ValidationError(f"{where}empty account")
    condition = accounts.c.name == ref
    number = as_id(ref)
    if number is not None:  # names are never all digits, so this is an id or no account
        condition = sa.or_(condition, accounts.c.id == number)
    found = conn.execute(sa.select(accounts.c.id, accounts.c.name).where(condition)).first()
    if found is None:
        raise NotFound(f"{where}no account {ref!r}")
    return AccountRef(int(found.id), str(found.name))


def resolve_account(conn: sa.Connection, ref: str | None) -> int:
    """The id of the account named or numbered `ref` (default: the `default` account)."""
    return find_account(conn, ref).id


def create_account(conn: sa.Connection, name: str, now: datetime) -> int:
    """Create an account; its name must be new (a ConflictError otherwise)."""
    name = name.strip()
    # "*" is what a report query's `accounts` says for every account. An invisible
    # character (a zero-width space, a direction mark) would make a name that lists
    # like another's.
    bad = not name or len(name) > 100 or name.isdigit()
    if bad or name == "*" or any(ch.isspace() or not ch.isprintable() for ch in name):
        raise ValidationError(
            f"invalid account name {quoted(name)} (1-100 visible characters, no spaces,"
            " not only digits, not '*')"
        )
    # Looked up first: on PostgreSQL a refused INSERT still uses up an id (SPEC §2:
    # refused input leaves no trace); the unique key still settles a race. So is a
    # login role bound to an account, which row-level security would refuse.
    if dialect.bound_account_id(conn) is not None:
        raise PermissionDenied(
            "a login role bound to an account cannot create or change accounts;"
            " run `accounts create` as the operator",
            refusal="bound to an account",
        )
    taken = conn.execute(sa.select(accounts.c.id).where(accounts.c.name == name)).first()
    if taken is not None:
        raise ConflictError(f"an account named {name!r} exists already")
    alike = _alike(name)
    for (other,) in conn.execute(sa.select(accounts.c.name)):
        if isinstance(other, str) and _alike(other) == alike:
            raise ConflictError(
                f"an account named {quoted(other)} exists already: {quoted(name)} differs"
                " from it only in case or in the width or form of its characters"
            )
    statement = accounts.insert().values(name=name, created_at=now).returning(accounts.c.id)
    return int(conn.execute(statement).scalar_one())


def _alike(name: str) -> str:
    """A name as people read it: case and compatibility forms (full-width letters,
    ligatures, a letter and its combining accent) folded."""
    return unicodedata.normalize("NFKC", name).casefold()


def list_accounts(conn: sa.Connection) -> list[sa.Row[Any]]:
    """Every account (id, name, created_at), oldest first."""
    return list(conn.execute(sa.select(accounts).order_by(accounts.c.id)).all())


def account_name(conn: sa.Connection, account_id: int) -> str:
    """The name of account ``account_id`` (NotFound if there is none)."""
    name = conn.execute(sa.select(accounts.c.name).where(accounts.c.id == account_id)).scalar()
    if name is None:
        raise NotFound(f"no account {account_id}")
    return str(name)
