"""Which zone data schedctl reads (the tzdata package's), and how a slot computed under
another release is read under this one (SPEC §12 "Time zone data")."""

from __future__ import annotations

import gc
import shutil
import subprocess
import weakref
import zoneinfo
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import tzdata

from schedctl.cadence import (
    OffsetChange,
    first_instant_at_or_after,
    make_cadence,
    next_slot,
    offset_changes,
    reread_slot,
    slots_between,
)
from schedctl.zones import tzdata_version, zone
from support.zone_data import ALMATY_2023, OLD_RELEASE, zone_data

ALMATY_DAILY = make_cadence("daily", tz="Asia/Almaty", at="09:00")
UNDER_UTC_6 = datetime(2024, 3, 1, 3, 0, tzinfo=UTC)  # 09:00 at UTC+6
UNDER_UTC_5 = datetime(2024, 3, 1, 4, 0, tzinfo=UTC)  # 09:00 at UTC+5


def test_zones_come_from_the_tzdata_package_and_its_release_is_known() -> None:
    assert zoneinfo.TZPATH == ()  # nothing of the host's is searched first
    assert tzdata_version() == tzdata.IANA_VERSION
    assert next_slot(ALMATY_DAILY, datetime(2024, 2, 29, 12, 0, tzinfo=UTC)) == UNDER_UTC_5


def test_the_test_build_of_old_almaty_is_what_zic_compiles(tmp_path: Path) -> None:
    zic = shutil.which("zic")
    if zic is None:
        pytest.skip("zic is not installed")
    source = tmp_path / "almaty.zi"
    source.write_text("Zone Asia/Almaty 6:00 - +06\n")
    subprocess.run([zic, "-d", str(tmp_path / "out"), str(source)], check=True)
    assert (tmp_path / "out" / "Asia" / "Almaty").read_bytes() == ALMATY_2023["Asia/Almaty"]


def test_the_old_build_computes_the_old_slot(tmp_path: Path) -> None:
    with zone_data(tmp_path, ALMATY_2023):
        assert tzdata_version() == OLD_RELEASE
        assert next_slot(ALMATY_DAILY, datetime(2024, 2, 29, 12, 0, tzinfo=UTC)) == UNDER_UTC_6
    assert tzdata_version() == tzdata.IANA_VERSION


def test_a_slot_of_the_old_offset_is_reread_as_the_same_wall_time_at_the_new(
    tmp_path: Path,
) -> None:
    assert reread_slot(ALMATY_DAILY, UNDER_UTC_6) == UNDER_UTC_5
    # And back: a slot of the current data read under the old build.
    with zone_data(tmp_path, ALMATY_2023):
        assert reread_slot(ALMATY_DAILY, UNDER_UTC_5) == UNDER_UTC_6
    # A day before the change both builds agree.
    assert reread_slot(ALMATY_DAILY, UNDER_UTC_6 - timedelta(days=1)) == UNDER_UTC_6 - timedelta(
        days=1
    )


@pytest.mark.parametrize(
    ("kind", "options"),
    [
        ("daily", {"at": "02:30"}),  # in the spring-forward gap, repeated in the fall
        ("daily", {"at": "00:00"}),
        ("weekly", {"weekday": "sun", "at": "02:15"}),
        ("monthly", {"day": "last", "at": "23:59"}),
        ("cron", {"cron": "*/20 * * * *"}),  # several wall times in one gap
        ("cron", {"cron": "30 1,2,3 * * *"}),
    ],
)
@pytest.mark.parametrize("tz", ["Europe/Berlin", "America/New_York", "Australia/Lord_Howe"])
def test_under_unchanged_zone_data_every_slot_rereads_as_itself(
    kind: str, options: dict[str, str], tz: str
) -> None:
    cadence = make_cadence(kind, tz=tz, **options)
    # A year of slots, both DST changes included.
    start = datetime(2026, 1, 1, tzinfo=UTC)
    slots = slots_between(cadence, start, start + timedelta(days=366), limit=100_000)
    assert slots
    assert [s for s in slots if reread_slot(cadence, s) != s] == []


def test_offset_changes_finds_almatys_move_to_utc_5() -> None:
    zone = zoneinfo.ZoneInfo("Asia/Almaty")
    changes = offset_changes(
        zone, datetime(2024, 1, 1, tzinfo=UTC), datetime(2025, 1, 1, tzinfo=UTC)
    )
    # Midnight of 2024-03-01 at UTC+6 became 23:00 on 2024-02-29 at UTC+5.
    assert changes == [
        OffsetChange(
            datetime(2024, 2, 29, 18, 0, tzinfo=UTC), timedelta(hours=6), timedelta(hours=5)
        )
    ]
    assert first_instant_at_or_after(datetime(2024, 3, 1, 9, 0), zone) == UNDER_UTC_5


def test_zone_keeps_every_zone_it_handed_out_loaded(tmp_path: Path) -> None:
    # zoneinfo keeps its 8 most recent zones alive: twenty taken in turn would each be
    # read from its file again, as the digest took a zone per user.
    names = sorted(zoneinfo.available_timezones())[:20]
    loaded = [weakref.ref(zone(name)) for name in names]  # nothing else holds them
    gc.collect()
    assert all(ref() is not None for ref in loaded)
    assert [zone(name) for name in names] == [ref() for ref in loaded]
    assert [zoneinfo.ZoneInfo(name) for name in names] == [ref() for ref in loaded]

    # New zone data (clear_cache) takes effect through zone() as through ZoneInfo.
    with zone_data(tmp_path, ALMATY_2023):
        old = zone("Asia/Almaty")
        assert old.utcoffset(datetime(2024, 3, 2)) == timedelta(hours=6)
    new = zone("Asia/Almaty")
    assert new is not old
    assert new.utcoffset(datetime(2024, 3, 2)) == timedelta(hours=5)
    assert zone("Asia/Almaty") is new is zoneinfo.ZoneInfo("Asia/Almaty")
