"""The suppression list: addresses an account must never mail again (SPEC §7).

Per account, stored normalised (lower case, IDNA domain), added idempotently. Dispatch
and send-now consult it before every send; nothing bypasses it, not even critical
mail. Unsubscribe links carry an HMAC token over (account id, address), verified in
constant time, so the list can be written to from a public URL without a login.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from schedctl.config import Settings
from schedctl.db import dialect
from schedctl.db.schema import accounts, suppressions
from schedctl.delivery.tokens import unsubscribe_url, verify_token
from schedctl.errors import ConfigError
from schedctl.values import validate_email
from schedctl.vocabulary import SUPPRESSION_REASONS

REASONS = SUPPRESSION_REASONS


def add_suppression(
    conn: sa.Connection, account_id: int, email: str, now: datetime, reason: str = "manual"
) -> bool:
    """Suppress an address; False when it was already suppressed (idempotent)."""
    row = {
        "account_id": account_id,
        "email": validate_email(email),
        "reason": reason,
        "created_at": now,
    }
    inserted = dialect.insert_ignore(
        conn, suppressions, [row], ["account_id", "email"], returning=[suppressions.c.id]
    )
    return bool(inserted)


def remove_suppression(conn: sa.Connection, account_id: int, email: str) -> bool:
    """Lift a suppression; False when the address was not suppressed."""
    result = conn.execute(
        suppressions.delete().where(
            suppressions.c.account_id == account_id,
            suppressions.c.email == validate_email(email),
        )
    )
    return bool(result.rowcount)


def list_suppressions(conn: sa.Connection, account_id: int) -> list[sa.Row[Any]]:
    return list(
        conn.execute(
            sa.select(suppressions)
            .where(suppressions.c.account_id == account_id)
            .order_by(suppressions.c.email)
        )
    )


def suppressed_among(conn: sa.Connection, account_id: int, emails: Iterable[str]) -> set[str]:
    """Which of the (normalised) addresses are suppressed for the account."""
    wanted = sorted(set(emails))
    if not wanted:
        return set()
    rows = conn.execute(
        sa.select(suppressions.c.email).where(
            suppressions.c.account_id == account_id, suppressions.c.email.in_(wanted)
        )
    )
    return {str(email) for (email,) in rows}


def _secret(settings: Settings) -> str:
    if not settings.unsubscribe_secret:
        raise ConfigError("unsubscribe tokens need SCHEDCTL_UNSUBSCRIBE_SECRET")
    return settings.unsubscribe_secret


def unsubscribe_link(settings: Settings, account_id: int, email: str) -> str:
    """The signed one-click link for (account, address)."""
    if not settings.unsubscribe_base_url:
        raise ConfigError("unsubscribe links need SCHEDCTL_UNSUBSCRIBE_BASE_URL")
    return unsubscribe_url(settings.unsubscribe_base_url, str(account_id), email, _secret(settings))


def apply_unsubscribe(
    conn: sa.Connection, settings: Settings, account: str, email: str, token: str, now: datetime
) -> bool | None:
    """Verify ``token`` for (account id, address) and suppress the address.

    Returns None for a token that does not verify (nothing written), else whether
    this call added the suppression (False: it existed already).
    """
    if not verify_token(_secret(settings), account, email, token):
        return None
    if not account.isdigit():
        return None
    exists = conn.execute(sa.select(accounts.c.id).where(accounts.c.id == int(account)))
    if exists.first() is None:
        return None
    return add_suppression(conn, int(account), email, now, reason="unsubscribe")
