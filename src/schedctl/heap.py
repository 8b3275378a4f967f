"""The cycle collector during a long run.

A digest page makes and drops a few hundred thousand small objects (rows, items,
template contexts, rendered strings), and reference counting frees nearly all of
them. CPython's cycle collector meanwhile examines its youngest generation every 700
net allocations of container objects (and the older generations every tenth of
those passes): work that frees next to nothing, since few of those objects are in a
cycle. On a digest on SQLite it was about 6 % of the run (``bench/bench_digest.py``).
:func:`fewer_collections` raises the youngest generation's threshold for the length
of a run and puts it back after: the collector still runs, some thirty times less
often, and the rare cycle it reclaims waits a little longer, which a run's flat
memory does not notice.
"""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Iterator

# Container allocations between two passes of the youngest generation during a run.
YOUNGEST = 20_000


@contextlib.contextmanager
def fewer_collections() -> Iterator[None]:
    """Collect cycles less often until the block ends (nested blocks keep the outer
    one's setting; a program that turned automatic collection off keeps it off)."""
    before = gc.get_threshold()
    if before[0]:  # 0: no automatic collection
        gc.set_threshold(max(before[0], YOUNGEST), *before[1:])
    try:
        yield
    finally:
        gc.set_threshold(*before)
