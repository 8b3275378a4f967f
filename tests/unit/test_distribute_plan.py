"""The distribution's pure rules (SPEC §6): order, even split, layout, masking."""

from __future__ import annotations

from datetime import date
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from schedctl.distribute.endpoints import StageError, parse_campaigns
from schedctl.distribute.plan import (
    Campaign,
    as_extra,
    as_user_id,
    balanced,
    counts,
    hash_key,
    layout,
    mask_id,
    scrub,
    sort_key,
    source_users,
    split,
)
from schedctl.errors import ValidationError

DAY = date(2026, 11, 18)
CAMPAIGNS = [Campaign(f"SC{n:08d}", date(2026, 1, 1), date(2026, 12, 31)) for n in (1, 2, 3)]


def test_the_seed_example_splits_33_33_34() -> None:
    assert split(100, 3) == [33, 33, 34]
    assert split(7, 5) == [1, 1, 1, 2, 2]
    assert split(3, 5) == [0, 0, 1, 1, 1]
    assert split(0, 2) == [0, 0]


@given(st.integers(0, 10**7), st.integers(1, 200))
def test_shares_add_up_and_differ_by_at_most_one(n: int, k: int) -> None:
    shares = split(n, k)
    assert sum(shares) == n
    assert max(shares) - min(shares) <= 1
    assert shares == sorted(shares)  # the remainder goes to the last ones


@given(st.integers(0, 5000), st.integers(1, 12), st.integers(1, 7))
def test_the_layout_covers_every_position_once_and_is_balanced(
    n: int, campaigns: int, groups: int
) -> None:
    chosen = [Campaign(f"C{i:03d}", DAY, DAY) for i in range(campaigns)]
    letters = [chr(ord("A") + i) for i in range(groups)]
    slots = layout(n, chosen, letters, letters[:1], "{campaign}.{n}")
    positions = [p for s in slots for p in range(s.first, s.last + 1)]
    assert positions == list(range(1, n + 1))
    per_campaign = counts(slots, chosen, letters)
    assert balanced(per_campaign)
    assert sum(c["users"] for c in per_campaign) == n
    assert all(s.control == (s.group == "A") for s in slots)


def test_group_ids_follow_the_format() -> None:
    slots = layout(10, CAMPAIGNS[:1], ["A", "B"], ["A"], "{campaign}.{n}")
    assert [(s.group, s.group_id, s.size) for s in slots] == [
        ("A", "SC00000001.1", 5),
        ("B", "SC00000001.2", 5),
    ]
    slots = layout(2, CAMPAIGNS[:1], ["A", "B"], ["A"], "{campaign}-{group}")
    assert [s.group_id for s in slots] == ["SC00000001-A", "SC00000001-B"]


def test_the_order_is_keyed_by_the_date_and_the_salt_only() -> None:
    ids = [f"{n:012d}" for n in range(200)]

    def order(day: date, salt: str | None) -> list[str]:
        key = hash_key(day, salt)
        return sorted(ids, key=lambda i: (sort_key(key, i), i))

    assert order(DAY, None) == order(DAY, None)  # no randomness
    assert order(DAY, None) != order(date(2026, 11, 19), None)
    assert order(DAY, None) != order(DAY, "2026-campaigns")
    assert order(DAY, None) != sorted(ids)


def test_balanced_says_when_counts_differ_by_more_than_one() -> None:
    assert balanced([{"users": 3, "groups": {"A": 1, "B": 2}}])
    assert not balanced([{"users": 3, "groups": {"A": 0, "B": 3}}])
    assert not balanced([{"users": 1, "groups": {}}, {"users": 3, "groups": {}}])


def test_ids_are_masked_and_scrubbed() -> None:
    assert mask_id("890123456734") == "8901******34"
    assert mask_id("1234567") == "*******"
    text = "Duplicate entry '890123456734' for key 'PRIMARY' (row 42, 2026-11-18)"
    assert scrub(text) == "Duplicate entry '8901******34' for key 'PRIMARY' (row 42, 2026-11-18)"
    assert scrub("id AB12CD34 failed", ["AB12CD34"]) == "id AB12**34 failed"


@pytest.mark.parametrize(
    ("value", "expected"),
    [("890123456734", "890123456734"), (890123456734, "890123456734"),
     (Decimal("890123456734"), "890123456734"), (Decimal("12.5"), "12.5"),
     (12.0, "12"), (b"abc", "abc"), (None, None), ("", None), ("   ", None), ("\t\n", None),
     (" 000000000150  ", "000000000150"), ("AB12cd", "AB12cd"), (b" 7 ", "7")],
)  # fmt: skip
def test_source_ids_become_text(value: object, expected: str | None) -> None:
    assert as_user_id(value) == expected


def test_a_binary_id_that_is_not_utf8_is_refused_without_quoting_it() -> None:
    # Found by review: a VARBINARY 0xFF ID gave "internal error: UnicodeDecodeError".
    with pytest.raises(ValidationError, match="select it as text") as refused:
        as_user_id(b"\xff\x01secret")
    assert "secret" not in refused.value.message


def test_source_users_are_the_rows_with_an_id_in_order() -> None:
    rows = [(None, "a"), ("", "b"), (" 0150 ", "c"), ("  ", "d"), ("ab", "e"), ("AB", None)]
    assert source_users(rows) == [("0150", ("c",)), ("ab", ("e",)), ("AB", (None,))]


def test_extra_values_are_text_as_read() -> None:
    assert [as_extra(v) for v in ("", " x ", None, 12.0, True, date(2026, 1, 2))] == [
        "", " x ", None, "12", "1", "2026-01-02",
    ]  # fmt: skip


def test_campaigns_are_ordered_by_id_and_need_dates() -> None:
    rows = [
        (10, "2026-01-01", "2026-12-31"),
        (9, date(2026, 1, 1), "2026-12-31 00:00:00"),
        (11, None, "2026-12-31"),  # never active
    ]
    assert [c.id for c in parse_campaigns(rows)] == ["9", "10"]  # numerically
    with pytest.raises(StageError, match="returned twice"):
        parse_campaigns([("SC1", DAY, DAY), ("SC1", DAY, DAY)])
    with pytest.raises(StageError, match="not a date"):
        parse_campaigns([("SC1", "soon", DAY)])
    # An empty id named groups ".1" (found by review); NULL was refused already.
    for no_id in [None, "", "   "]:
        with pytest.raises(StageError, match="has no id"):
            parse_campaigns([(no_id, DAY, DAY)])
    assert CAMPAIGNS[0].is_active(DAY)
    assert not Campaign("X", date(2026, 11, 19), date(2026, 12, 1)).is_active(DAY)
