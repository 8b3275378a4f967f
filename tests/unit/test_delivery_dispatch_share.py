"""The share of one dispatch's connections: which given-back messages count deferred."""

from __future__ import annotations

from types import SimpleNamespace

from schedctl.delivery.dispatch import _Share


def rows(*ids: int) -> list[SimpleNamespace]:
    return [SimpleNamespace(id=i) for i in ids]


def test_a_message_given_back_and_not_claimed_again_counts_deferred() -> None:
    share = _Share(limit=10, claim_size=3)
    claims = share.claimed(rows(1, 2, 3))
    share.put_aside(rows(1, 2, 3), claims, lost="refused")

    assert share.still_set_aside() == 3


def test_a_message_claimed_again_before_it_was_put_aside_is_not_deferred() -> None:
    """The other connection may claim it between the give-back and put_aside."""
    share = _Share(limit=10, claim_size=3)
    claims = share.claimed(rows(1, 2))
    share.claimed(rows(1))  # another connection, right after the give-back
    share.put_aside(rows(1, 2), claims, lost="refused")

    assert share.still_set_aside() == 1


def test_a_message_given_back_twice_counts_once() -> None:
    share = _Share(limit=10, claim_size=3)
    share.put_aside(rows(1), share.claimed(rows(1)), lost="refused")
    share.put_aside(rows(1), share.claimed(rows(1)), lost="refused")

    assert share.still_set_aside() == 1
