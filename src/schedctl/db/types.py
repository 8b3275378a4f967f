"""Column types shared by every dialect."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Dialect


class UTCDateTime(sa.types.TypeDecorator[datetime]):
    """An instant: stored in UTC, always returned as an aware UTC datetime.

    PostgreSQL keeps it in ``timestamptz``; SQLite in a fixed-width text column whose
    lexical order is the chronological order, so comparisons work in SQL on both.
    """

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given where an instant is required")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return as_instant(value)


def as_instant(value: Any) -> datetime:
    """An instant as the driver gives it (SQLite: text, or a datetime SQLAlchemy
    parsed from it, naive in UTC; PostgreSQL: an aware datetime) as an aware UTC
    datetime. ValueError when text is not an ISO 8601 date and time (or is out of
    Python's range); TypeError for any other value."""
    instant = datetime.fromisoformat(value) if isinstance(value, str) else value
    if not isinstance(instant, datetime):
        raise TypeError(f"expected a datetime from the database, got {type(value).__name__}")
    if instant.tzinfo is None:
        return instant.replace(tzinfo=UTC)
    return instant.astimezone(UTC)
