"""Another release of the IANA zone data, in this process, for the zone data tests.

schedctl reads every zone from the ``tzdata`` package: importing it empties zoneinfo's
search path (``zoneinfo.reset_tzpath``), and zoneinfo looks a zone up there before it
falls back to the package. :func:`zone_data` puts a directory holding a build of some
zones on that path, and labels the data with that build's release
(``tzdata.IANA_VERSION``, which schedctl reads), for the duration of a ``with`` block;
every other zone still comes from the package.

:data:`ALMATY_2023` is Asia/Almaty as releases before 2024a had it: UTC+6, which it
left for UTC+5 on 2024-03-01.
"""

from __future__ import annotations

import struct
import zoneinfo
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

import tzdata

OLD_RELEASE = "2023c"


def fixed_offset_tzif(hours: int) -> bytes:
    """The TZif file zic compiles from ``Zone NAME <hours>:00 - <+HH>``: one UTC offset
    and no transitions (RFC 8536, version 2: a 32-bit block, a 64-bit block and the
    POSIX TZ footer, e.g. ``<+06>-6``)."""
    name = f"{hours:+03d}".encode()
    counts = struct.pack(">6l", 0, 0, 0, 0, 1, len(name) + 1)  # ...timecnt, typecnt, charcnt
    block = b"TZif2" + bytes(15) + counts + struct.pack(">lBB", hours * 3600, 0, 0) + name + b"\0"
    return block + block + b"\n<" + name + b">" + str(-hours).encode() + b"\n"


ALMATY_2023 = {"Asia/Almaty": fixed_offset_tzif(6)}


def write_zones(directory: Path, zones: Mapping[str, bytes]) -> Path:
    """A zoneinfo directory holding ``zones`` (name -> TZif file), as a host's is laid out."""
    for name, content in zones.items():
        path = directory / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)
    return directory


@contextmanager
def zone_data(
    directory: Path, zones: Mapping[str, bytes], release: str = OLD_RELEASE
) -> Iterator[None]:
    """Within the block, ``zones`` (name -> TZif file) come from ``directory`` and the
    zone data's release reads ``release``; afterwards the packaged data is back."""
    write_zones(directory, zones)
    packaged = tzdata.IANA_VERSION
    tzdata.IANA_VERSION = release
    zoneinfo.reset_tzpath(to=[str(directory)])
    zoneinfo.ZoneInfo.clear_cache()  # zones are cached by name
    try:
        yield
    finally:
        tzdata.IANA_VERSION = packaged
        zoneinfo.reset_tzpath(to=[])
        zoneinfo.ZoneInfo.clear_cache()
