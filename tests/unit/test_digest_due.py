"""The digest's pure parts: when a zone's users are due, --date, grouping."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st

from schedctl.cadence import first_instant_at_or_after
from schedctl.config import load_settings
from schedctl.digest.compose import Item, group_items, render_digest
from schedctl.digest.due import check_date, due_cutoff, zone_day
from schedctl.errors import ConfigError, ValidationError


def at(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


@pytest.mark.parametrize(
    ("zone", "day", "now", "cutoff"),
    [
        ("UTC", date(2026, 11, 18), at(2026, 11, 18, 0, 0), "00:00"),
        ("UTC", date(2026, 11, 18), at(2026, 11, 18, 7, 59, 59), "07:59"),
        ("UTC", date(2026, 11, 18), at(2026, 11, 18, 8, 0), "08:00"),
        ("UTC", date(2026, 11, 18), at(2026, 11, 17, 23, 59), None),
        ("UTC", date(2026, 11, 18), at(2026, 11, 19, 0, 0), "23:59"),
        # Spring forward, 8 March 2026: 02:00-02:59 do not exist; all due at 03:00 EDT.
        ("America/New_York", date(2026, 3, 8), at(2026, 3, 8, 6, 59), "01:59"),
        ("America/New_York", date(2026, 3, 8), at(2026, 3, 8, 7, 0), "03:00"),
        # Fall back, 1 November 2026: at 01:10 EST (second pass) every 01:xx has been
        # seen once already, up to 01:59 (05:59 UTC).
        ("America/New_York", date(2026, 11, 1), at(2026, 11, 1, 5, 30), "01:30"),
        ("America/New_York", date(2026, 11, 1), at(2026, 11, 1, 6, 10), "01:59"),
        ("America/New_York", date(2026, 11, 1), at(2026, 11, 1, 7, 0), "02:00"),
    ],
)
def test_due_cutoff(zone: str, day: date, now: datetime, cutoff: str | None) -> None:
    assert due_cutoff(ZoneInfo(zone), day, now) == cutoff


@given(
    st.datetimes(min_value=datetime(2020, 1, 1), max_value=datetime(2030, 12, 31)),
    st.sampled_from(["America/New_York", "Europe/Berlin", "Australia/Sydney",
                     "Pacific/Chatham", "Asia/Kathmandu", "Etc/GMT+12"]),
)  # fmt: skip
def test_cutoff_is_exactly_the_due_times(naive: datetime, name: str) -> None:
    now = naive.replace(tzinfo=UTC)
    zone = ZoneInfo(name)
    day = now.astimezone(zone).date()
    cutoff = due_cutoff(zone, day, now)
    for minute in (0, 1, 59, 60, 119, 120, 121, 179, 180, 181, 719, 1439):
        wall = datetime.combine(day, datetime.min.time()) + timedelta(minutes=minute)
        due = first_instant_at_or_after(wall, zone) <= now
        assert due == (cutoff is not None and f"{wall:%H:%M}" <= cutoff), (wall, cutoff)


def test_the_same_instant_is_two_local_dates() -> None:
    now = at(2026, 11, 18, 10, 0)
    east = zone_day("Pacific/Kiritimati", now)
    west = zone_day("Etc/GMT+12", now)
    assert east is not None
    assert west is not None
    assert (east.today, east.cutoff) == (date(2026, 11, 19), "00:00")
    assert (west.today, west.cutoff) == (date(2026, 11, 17), "22:00")
    assert east.catch_up is None
    assert zone_day("Mars/Olympus", now) is None


def test_catch_up_day_and_day_start() -> None:
    day = zone_day("Europe/Berlin", at(2026, 11, 18, 5, 0), catch_up_days=1)
    assert day is not None
    assert day.catch_up == date(2026, 11, 17)
    assert day.today_start == at(2026, 11, 17, 23, 0)


def test_check_date() -> None:
    now = at(2026, 11, 18, 10, 0)
    for ok in (date(2026, 11, 17), date(2026, 11, 18), date(2026, 11, 19)):
        check_date(ok, now, 0)
    with pytest.raises(ValidationError, match="not the current local date in any time zone"):
        check_date(date(2026, 11, 20), now, 0)
    with pytest.raises(ValidationError, match="in any time zone"):
        check_date(date(2026, 11, 16), now, 0)
    check_date(date(2026, 11, 16), now, 1)
    check_date(date(2026, 11, 18), now, 0, "UTC")
    with pytest.raises(ValidationError, match=r"user's current local date \(2026-11-18 in UTC\)"):
        check_date(date(2026, 11, 17), now, 0, "UTC")
    check_date(date(2026, 11, 17), now, 1, "UTC")


def item(title: str, key: str | None) -> Item:
    return Item(title, None, "2026-11-18 08:00", key)


def test_groups_alphabetical_unkeyed_last_order_kept() -> None:
    items = [item("1", "zeta"), item("2", None), item("3", "alpha"), item("4", "zeta")]
    groups = group_items(items)
    assert [(g.key, [i.title for i in g.notifications]) for g in groups] == [
        ("alpha", ["3"]),
        ("zeta", ["1", "4"]),
        (None, ["2"]),
    ]


def test_rendered_digest_says_how_many_more() -> None:
    subject, text, html = render_digest(date(2026, 11, 18), [item("Shown", "k")], 4)
    assert subject == "Your daily digest for Wednesday 18 November 2026: 4 new notifications"
    assert "You have 4 new notifications." in text
    assert "k\n-\n\n* Shown (2026-11-18 08:00)" in text
    assert "... and 3 more notifications, not listed here." in text
    assert "Other" not in text  # no heading when there is only one group
    assert "&hellip; and 3 more notifications" in html
    _, text, _ = render_digest(date(2026, 11, 18), [item("Only", None)], 1)
    assert "1 new notification." in text
    assert "more" not in text


def test_digest_settings_are_declared(tmp_path: Path) -> None:
    config = tmp_path / "schedctl.toml"
    config.write_text('[digest]\nmax_items = 3\ncatch_up_days = 1\nretention = "7d"\n')
    settings = load_settings({"config_path": str(config)}, environ={})
    assert (settings.digest_max_items, settings.digest_catch_up_days) == (3, 1)
    assert settings.digest_retention == timedelta(days=7)
    defaults = load_settings({}, environ={})
    assert (defaults.digest_max_items, defaults.digest_catch_up_days) == (50, 0)
    assert defaults.digest_retention == timedelta(days=30)
    for text, message in [
        ("[digest]\nmax_item = 3\n", r"unknown setting \[digest\] max_item \(did you mean"),
        ("[digest]\ncatch_up_days = 2\n", r"\[digest\] catch_up_days: must be a whole number"),
        ('[digest]\nretention = "soon"\n', r"\[digest\] retention: invalid duration"),
    ]:
        config.write_text(text)
        with pytest.raises(ConfigError, match=message):
            load_settings({"config_path": str(config)}, environ={})
    with pytest.raises(ConfigError, match="SCHEDCTL_DIGEST_MAX_ITEMS"):
        load_settings({}, environ={"SCHEDCTL_DIGEST_MAX_ITEMS": "0"})
