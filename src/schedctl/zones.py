"""The IANA time zone database schedctl reads: the ``tzdata`` package's (SPEC §12).

Python's zoneinfo looks a zone up on its search path first (``PYTHONTZPATH``, else
the host's ``/usr/share/zoneinfo``) and only then in the ``tzdata`` package. Hosts
with different system packages would then compute different slots for one schedule
(a zone that changed its offset, as Asia/Almaty did on 2024-03-01, reads one way on
each). Importing this module empties the search path, so every zone comes from the
packaged database that schedctl depends on, whatever the host or ``PYTHONTZPATH``
hold; ``schedctl/__init__`` imports it, so this holds in every process that imports
any part of schedctl, before it builds a zone.

The version of that database (``tzdata_version``) is stored with each schedule's
``next_run_at``; a tick running another version recomputes it (schedules/runs.py).
"""

from __future__ import annotations

import zoneinfo

zoneinfo.reset_tzpath(to=[])
# A zone loaded from the host's files before this import (by the importing program)
# is not handed out again: zoneinfo caches zones by name.
zoneinfo.ZoneInfo.clear_cache()


def tzdata_version() -> str:
    """The IANA release of the zone data in use, e.g. ``2026a``."""
    import tzdata  # a few constants: cheap, and only when asked

    return str(tzdata.IANA_VERSION)
