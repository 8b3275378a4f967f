"""The distribution's rules, as pure functions (SPEC §6).

Order. The day's distinct IDs are ordered by HMAC-SHA256(key, ID), the ID breaking a
tie, where the key is derived from the business date and the optional configured
salt -- never from anything random -- so two runs (or two installations) given the
same IDs on the same date assign them the same way, and a different date shuffles
them differently.

Split. ``n`` users among ``k`` campaigns (ordered by campaign id): ``n // k`` each and
the remainder one each to the last campaigns (100 users, 3 campaigns: 33, 33, 34);
each campaign's share into its groups the same way. So the user at position ``seq``
(1-based) of the order falls in one contiguous range, and the plan is a list of
ranges: `layout`.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from schedctl.errors import ValidationError

_KEY_CONTEXT = b"schedctl-distribute-v1"


def hash_key(business_date: date, salt: str | None) -> bytes:
    """The HMAC key of a business date: SHA-256 of the date and the salt."""
    material = b"\0".join(
        [_KEY_CONTEXT, business_date.isoformat().encode(), (salt or "").encode("utf-8")]
    )
    return hashlib.sha256(material).digest()


def sort_key(key: bytes, user_id: str) -> bytes:
    """A user's place in the day's order: HMAC-SHA256(key, ID) (ties: by ID)."""
    return hmac.new(key, user_id.encode("utf-8"), hashlib.sha256).digest()


def split(n: int, k: int) -> list[int]:
    """``n`` items in ``k`` shares differing by at most one, the larger ones last."""
    if k <= 0:
        return []
    base, remainder = divmod(n, k)
    return [base] * (k - remainder) + [base + 1] * remainder


@dataclass(frozen=True)
class Campaign:
    """A campaign as the campaigns query returns it."""

    id: str
    start: date
    end: date

    def is_active(self, business_date: date) -> bool:
        return self.start <= business_date <= self.end

    def as_json(self) -> dict[str, str]:
        return {"id": self.id, "start": self.start.isoformat(), "end": self.end.isoformat()}

    @classmethod
    def from_json(cls, data: dict[str, str]) -> Campaign:
        return cls(data["id"], date.fromisoformat(data["start"]), date.fromisoformat(data["end"]))


def campaign_order(campaign_id: Any) -> tuple[int, Any]:
    """Campaigns are ordered by id: numerically when the ids are numbers."""
    if isinstance(campaign_id, int) and not isinstance(campaign_id, bool):
        return (0, campaign_id)
    return (1, str(campaign_id))


def group_id(fmt: str, campaign: str, position: int, group: str) -> str:
    """A group's id, e.g. ``SC00000001.1`` for group A (position 1) of SC00000001."""
    return fmt.format(campaign=campaign, n=position, group=group)


@dataclass(frozen=True)
class Slot:
    """The users at positions ``first``..``last`` (inclusive) of the order."""

    first: int
    last: int
    campaign: Campaign
    group: str
    group_id: str
    control: bool

    @property
    def size(self) -> int:
        return self.last - self.first + 1


def layout(
    n: int,
    campaigns: Sequence[Campaign],
    groups: Sequence[str],
    control_groups: Iterable[str],
    group_id_format: str,
) -> list[Slot]:
    """Where each position of the order goes: one slot per (campaign, group) that
    receives at least one user, in order."""
    control = set(control_groups)
    slots = []
    first = 1
    for campaign, share in zip(campaigns, split(n, len(campaigns)), strict=True):
        for position, (group, size) in enumerate(
            zip(groups, split(share, len(groups)), strict=True), start=1
        ):
            if size:
                gid = group_id(group_id_format, campaign.id, position, group)
                slots.append(Slot(first, first + size - 1, campaign, group, gid, group in control))
            first += size
    return slots


def counts(
    slots: Sequence[Slot], campaigns: Sequence[Campaign], groups: Sequence[str]
) -> list[dict[str, Any]]:
    """Users per campaign and group: ``[{"id", "users", "groups": {"A": n, ...}}]``."""
    users = dict.fromkeys((c.id for c in campaigns), 0)
    per_group = {c.id: dict.fromkeys(groups, 0) for c in campaigns}
    for slot in slots:
        users[slot.campaign.id] += slot.size
        per_group[slot.campaign.id][slot.group] += slot.size
    return [{"id": c.id, "users": users[c.id], "groups": per_group[c.id]} for c in campaigns]


def balanced(per_campaign: Sequence[dict[str, Any]]) -> bool:
    """Whether campaigns' counts differ by at most one, and each campaign's groups too."""

    def within_one(values: Sequence[int]) -> bool:
        return not values or max(values) - min(values) <= 1

    return within_one([c["users"] for c in per_campaign]) and all(
        within_one(list(c["groups"].values())) for c in per_campaign
    )


# --- personal data ---------------------------------------------------------------------

_LONG_DIGITS = re.compile(r"\d{6,}")


def mask_id(user_id: str) -> str:
    """An ID as it may be shown: ``8901******34`` (short IDs are starred out whole)."""
    if len(user_id) >= 8:
        return user_id[:4] + "*" * (len(user_id) - 6) + user_id[-2:]
    return "*" * len(user_id)


def scrub(text: str, ids: Iterable[str] = ()) -> str:
    """``text`` with the given IDs, and any run of 6 or more digits, masked: what a
    database error says about a row may quote its ID."""
    for user_id in sorted(set(ids), key=len, reverse=True):
        if len(user_id) >= 4:
            text = text.replace(user_id, mask_id(user_id))
    return _LONG_DIGITS.sub(lambda m: mask_id(m.group(0)), text)


# --- values from a data source -----------------------------------------------------------


def as_user_id(value: Any) -> str | None:
    """A source's ID value as the plan keeps it, or None when the row has no ID.

    Text with the blanks around it trimmed (a CHAR(n) column pads the ID), its case
    kept (``ab12`` and ``AB12`` are two users); NULL, empty and blank values are no
    ID. A number is its text, without a fraction or exponent when it is whole. The
    run and the preview both read IDs through `source_users`, which calls this.
    """
    if value is None:
        return None
    text = (value if type(value) is str else _as_text(value)).strip()
    return text if text != "" else None


def source_users(rows: Iterable[Sequence[Any]]) -> list[tuple[str, Sequence[Any]]]:
    """The users of a chunk of source rows: (ID, the row's other values) for each row
    with an ID (`as_user_id`), in order; duplicates are the plan's to drop."""
    users = []
    for row in rows:
        user_id = as_user_id(row[0])
        if user_id is not None:
            users.append((user_id, row[1:]))
    return users


def extras_json(names: Sequence[str], values: Sequence[Any]) -> str | None:
    """A source row's extra columns as the plan stores them: a JSON object of each
    column's name and value (`as_extra`); None when the source has none."""
    if not names:
        return None
    return json.dumps(
        {name: as_extra(value) for name, value in zip(names, values, strict=True)},
        ensure_ascii=False,
    )


def _as_text(value: Any) -> str:
    """A value from a data source as text (numbers without a fraction or exponent)."""
    if isinstance(value, bytes):
        try:
            value = value.decode("utf-8")
        except UnicodeDecodeError:  # (the value is an ID: it is not quoted)
            raise ValidationError(
                "a user ID from the source is binary, not UTF-8 text: have the source"
                " query select it as text (its hex, say)"
            ) from None
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    text = str(value)
    if hasattr(value, "as_integer_ratio") and not isinstance(value, float | int):
        # Decimal('8901234567.0') from a NUMBER column: the integer it is.
        try:
            if value == value.to_integral_value():
                text = str(int(value))
        except (AttributeError, ArithmeticError, ValueError):
            pass
    return text


def as_date(value: Any) -> date | None:
    """A campaign date: a date, a datetime (its date) or ISO text; None if it is not."""
    if isinstance(value, datetime):
        return value.date()
    if isinstance(value, date):
        return value
    if isinstance(value, str):
        try:
            return date.fromisoformat(value.strip()[:10])
        except ValueError:
            return None
    return None


def as_extra(value: Any) -> Any:
    """An extra column's value as the plan stores it (JSON): text, or None."""
    if value is None or type(value) is str:
        return value
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, bool):
        return "1" if value else "0"
    return _as_text(value)
