"""Building one digest's mail from its items: grouped, the newest listed, bodies cut
(pure; SPEC §5).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date

# --- building one digest (pure) --------------------------------------------------------


@dataclass(frozen=True)
class Item:
    """One notification as a digest lists it."""

    title: str
    body: str | None
    created_at: str  # local time, "YYYY-MM-DD HH:MM"
    key: str | None


@dataclass(frozen=True)
class Group:
    key: str | None
    notifications: list[Item]


def group_items(items: Sequence[Item]) -> list[Group]:
    """Items by ``digest_key`` (alphabetical; the ones without a key last), each
    group in the order given."""
    keyed: dict[str | None, list[Item]] = {}
    for item in items:
        keyed.setdefault(item.key, []).append(item)
    order = sorted(k for k in keyed if k is not None) + ([None] if None in keyed else [])
    return [Group(key, keyed[key]) for key in order]


def date_label(day: date) -> str:
    return f"{day:%A} {day.day} {day:%B %Y}"


def render_digest(
    local_date: date,
    items: Sequence[Item],
    total: int,
    *,
    unsubscribe_url: str | None = None,
) -> tuple[str, str, str]:
    """(subject, text, html) of a digest listing ``items`` out of ``total``."""
    from schedctl.render import render_pair  # jinja2 on demand

    label = date_label(local_date)
    text, html = render_pair(
        "digest",
        notifications=list(items),
        groups=group_items(items),
        total=total,
        more=total - len(items),
        date_label=label,
        unsubscribe_url=unsubscribe_url,
    )
    plural = "" if total == 1 else "s"
    return f"Your daily digest for {label}: {total} new notification{plural}", text, html
