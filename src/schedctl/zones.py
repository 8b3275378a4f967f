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

:func:`zone` is ``ZoneInfo(name)`` for code that builds the same few zones many
times over (the digest, a zone per user): zoneinfo keeps only its 8 most recent
zones alive, and builds any other anew from its file, so twenty zones taken in turn
are read from disk every time. :func:`zone` keeps every zone it has handed out
alive, so zoneinfo's own cache always has it; ``ZoneInfo.clear_cache()`` still
takes effect (the next call loads the zone again, and keeps that one).
"""

from __future__ import annotations

import zoneinfo

zoneinfo.reset_tzpath(to=[])
# A zone loaded from the host's files before this import (by the importing program)
# is not handed out again: zoneinfo caches zones by name.
zoneinfo.ZoneInfo.clear_cache()

# Every zone `zone` handed out, by name: what keeps it in zoneinfo's cache.
_loaded: dict[str, zoneinfo.ZoneInfo] = {}


def zone(name: str) -> zoneinfo.ZoneInfo:
    """``ZoneInfo(name)``, kept loaded for the rest of the process (a zone's file is
    read once, however many zones are in use); raises as ``ZoneInfo`` does."""
    found = zoneinfo.ZoneInfo(name)
    if _loaded.get(name) is not found:
        _loaded[name] = found
    return found


def tzdata_version() -> str:
    """The IANA release of the zone data in use, e.g. ``2026a``."""
    import tzdata  # a few constants: cheap, and only when asked

    return str(tzdata.IANA_VERSION)
