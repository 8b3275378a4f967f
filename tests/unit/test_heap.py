"""heap.fewer_collections: a run collects cycles less often, and puts it back."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from schedctl import heap


@pytest.fixture
def default_threshold() -> Iterator[tuple[int, int, int]]:
    before = gc.get_threshold()
    gc.set_threshold(700, 10, 10)
    yield gc.get_threshold()
    gc.set_threshold(*before)


def test_the_youngest_threshold_is_raised_for_the_block_only(
    default_threshold: tuple[int, int, int],
) -> None:
    with heap.fewer_collections():
        assert gc.get_threshold() == (heap.YOUNGEST, 10, 10)
        assert gc.isenabled()
    assert gc.get_threshold() == default_threshold


def test_an_error_in_the_block_puts_it_back(default_threshold: tuple[int, int, int]) -> None:
    with pytest.raises(RuntimeError), heap.fewer_collections():
        raise RuntimeError("the run failed")
    assert gc.get_threshold() == default_threshold


def test_nested_blocks_keep_the_outer_setting_and_a_higher_one_is_kept(
    default_threshold: tuple[int, int, int],
) -> None:
    with heap.fewer_collections():
        with heap.fewer_collections():
            assert gc.get_threshold()[0] == heap.YOUNGEST
        assert gc.get_threshold()[0] == heap.YOUNGEST
    assert gc.get_threshold() == default_threshold
    gc.set_threshold(100_000, 10, 10)  # a program that collects more rarely already
    with heap.fewer_collections():
        assert gc.get_threshold()[0] == 100_000
    assert gc.get_threshold() == (100_000, 10, 10)


def test_a_cycle_made_in_the_block_is_still_collected(
    default_threshold: tuple[int, int, int],
) -> None:
    class Node:
        other: Node | None = None

    collected = []

    class Watched(Node):
        def __del__(self) -> None:
            collected.append(True)

    with heap.fewer_collections():
        a, b = Watched(), Node()
        a.other, b.other = b, a  # type: ignore[assignment]
        del a, b
        assert collected == []
        kept = [[] for _ in range(heap.YOUNGEST * 2)]  # the collector counts what stays
        assert collected == [True]
        del kept


def test_a_program_that_collects_by_hand_keeps_doing_so() -> None:
    before = gc.get_threshold()
    try:
        gc.set_threshold(0)  # automatic collection off
        with heap.fewer_collections():
            assert gc.get_threshold()[0] == 0
        assert gc.get_threshold()[0] == 0
    finally:
        gc.set_threshold(*before)
