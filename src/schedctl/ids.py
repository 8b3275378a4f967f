"""Row ids as the command line gives them (SPEC §11: ids are strings).

Every table's id is a BIGINT on PostgreSQL and an INTEGER on SQLite: a whole number
1..2**63-1. A string outside that range never reaches the database, whose drivers
refuse it with an overflow error instead of "no such row".
"""

from __future__ import annotations

import re

from schedctl.errors import ValidationError

MAX_ID = 2**63 - 1
_DIGITS = re.compile(r"[0-9]+")  # ASCII only: str.isdigit() also accepts "²" and "٣"


def as_id(text: str) -> int | None:
    """The id written in ``text`` (surrounding spaces allowed), or None if it is not one."""
    value = text.strip()
    if not _DIGITS.fullmatch(value):
        return None
    number = int(value)
    return number if 1 <= number <= MAX_ID else None


def parse_id(text: str, what: str) -> int:
    """The id of a ``what`` ("message", "schedule"...) given on the command line (exit 2)."""
    number = as_id(text)
    if number is None:
        raise ValidationError(
            f"invalid {what} id {text!r} (expected a positive whole number below 2^63)"
        )
    return number
