"""Ids on the command line (schedctl.values): whole numbers 1..2**63-1, nothing else."""

from __future__ import annotations

import pytest

from schedctl.errors import ValidationError
from schedctl.values import MAX_ID, as_id, parse_id


def test_ids() -> None:
    assert as_id(" 42 ") == 42
    assert as_id(str(MAX_ID)) == MAX_ID
    for bad in ["", "0", "-1", "+1", "1.0", "1e3", "²", "٣", str(MAX_ID + 1), "9" * 30]:
        assert as_id(bad) is None, bad
    with pytest.raises(ValidationError, match=r"invalid event id '0' \(expected a positive"):
        parse_id("0", "event")
