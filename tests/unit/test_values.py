"""schedctl.values: the value parsers, a leaf module every layer imports."""

from __future__ import annotations

import ast
import subprocess
import sys
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from schedctl import values
from schedctl.errors import ConfigError, ValidationError

ORIGIN = "f.toml: [messages] lease"


def test_it_imports_nothing_of_schedctl_but_errors() -> None:
    tree = ast.parse(Path(values.__file__).read_text())
    imported = {
        node.module if isinstance(node, ast.ImportFrom) else alias.name
        for node in ast.walk(tree)
        if isinstance(node, ast.Import | ast.ImportFrom)
        for alias in node.names
    }
    assert {m for m in imported if m and m.startswith("schedctl")} == {"schedctl.errors"}


def test_importing_it_loads_no_heavy_module() -> None:
    code = (
        "import sys, schedctl.values; print(sorted(m for m in sys.modules if m.split('.')[0]"
        " in {'email', 'sqlalchemy', 'difflib', 'urllib'} or m.startswith('schedctl')))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    # schedctl.zones: the package's own import, which points zoneinfo at tzdata.
    assert result.stdout.strip() == (
        "['schedctl', 'schedctl.errors', 'schedctl.values', 'schedctl.zones']"
    )


@pytest.mark.parametrize(
    ("origin", "key", "where"),
    [
        ("f.toml: [distribute] target", "table", "f.toml: [distribute.target] table"),
        ("f.toml: [distribute.target] columns", "id", "f.toml: [distribute.target.columns] id"),
        ("[reports] queries", "q", "[reports.queries] q"),
        ("SCHEDCTL_X", "y", "SCHEDCTL_X.y"),
    ],
)
def test_nested_names_a_key_in_its_table(origin: str, key: str, where: str) -> None:
    assert values.nested(origin, key) == where


@pytest.mark.parametrize(
    ("text", "length"),
    [("90s", timedelta(seconds=90)), (" 15m ", timedelta(minutes=15)), ("2d", timedelta(days=2))],
)
def test_durations(text: str, length: timedelta) -> None:
    assert values.parse_duration(text) == length
    assert values.parse_duration(values.format_duration(length)) == length


@pytest.mark.parametrize("text", ["", "0m", "-5m", "1.5h", "15", "m", "1w", "9" * 30 + "d"])
def test_bad_durations(text: str) -> None:
    with pytest.raises(ValidationError, match="invalid duration"):
        values.parse_duration(text)


def test_split_duration_and_format() -> None:
    assert values.split_duration("90m") == (90, "m")
    assert values.format_duration(timedelta(seconds=5400)) == "90m"
    assert values.format_duration(timedelta(days=1)) == "1d"


@pytest.mark.parametrize("raw", [15, None, ["1m"], True])
def test_a_file_duration_must_be_text(raw: object) -> None:
    with pytest.raises(ConfigError) as caught:
        values.duration_setting(raw, ORIGIN)
    assert caught.value.message.startswith(f"{ORIGIN}: expected a duration like '15m'")


def test_duration_between() -> None:
    parse = values.duration_between(timedelta(seconds=1), timedelta(days=1))
    assert parse("1h", ORIGIN) == timedelta(hours=1)
    with pytest.raises(ConfigError, match="must be from 1s to 1d"):
        parse("2d", ORIGIN)


@pytest.mark.parametrize(
    "name", ["", "local", "localtime", "posix/UTC", "right/UTC", "../x", "Mars/X"]
)
def test_bad_zones(name: str) -> None:
    assert "invalid time zone" in str(values.zone_problem(name))


@pytest.mark.parametrize(
    ("name", "meant"),
    [("Europe/Berln", "Europe/Berlin"), ("europe/berlin", "Europe/Berlin"),
     ("America/New_Yrok", "America/New_York"), ("US/Eastren", "US/Eastern")],
)  # fmt: skip
def test_a_misspelt_zone_gets_a_did_you_mean(name: str, meant: str) -> None:
    assert values.zone_problem(name) == f"invalid time zone {name!r} (did you mean {meant!r}?)"


def test_a_zone_like_nothing_known_names_the_expected_form() -> None:
    assert values.zone_problem("Nowhere/Special") == (
        "invalid time zone 'Nowhere/Special' (expected an IANA name such as Europe/Berlin)"
    )


@pytest.mark.parametrize(
    ("name", "offset", "instead"),
    [("EST", "UTC-05:00", "America/New_York"), ("MST", "UTC-07:00", "America/Denver"),
     ("HST", "UTC-10:00", "Pacific/Honolulu")],
)  # fmt: skip
def test_a_legacy_fixed_offset_zone_is_valid_with_a_warning(
    name: str, offset: str, instead: str
) -> None:
    assert values.zone_problem(name) is None
    assert values.fixed_offset_warning(name) == (
        f"time zone {name} is a fixed offset, {offset}, that never observes DST"
        f" (for local time, use an IANA name such as {instead})"
    )


@pytest.mark.parametrize("name", ["UTC", "Europe/Berlin", "EST5EDT", "CET", "Etc/GMT+5"])
def test_zones_that_say_what_they_are_get_no_warning(name: str) -> None:
    assert values.fixed_offset_warning(name) is None


def test_zones_times_days_dates() -> None:
    assert values.zone_problem("Europe/Berlin") is None
    assert values.parse_hhmm(" 7:05 ") == time(7, 5)
    assert values.parse_weekday("Sunday") == values.parse_weekday("SUN") == 6
    assert values.parse_day("last") == "last"
    assert values.parse_day("31") == 31
    assert values.parse_date("2026-03-29") == date(2026, 3, 29)
    for bad, call in [("24:00", values.parse_hhmm), ("someday", values.parse_weekday),
                      ("32", values.parse_day), ("2026-02-30", values.parse_date)]:  # fmt: skip
        with pytest.raises(ValidationError):
            call(bad)


def test_instants_and_their_range() -> None:
    assert values.parse_local_or_instant("2026-03-29T02:30:00Z") == datetime(
        2026, 3, 29, 2, 30, tzinfo=UTC
    )
    assert values.parse_local_or_instant("2026-03-29T02:30").tzinfo is None
    for bad in ["1969-12-31T23:59Z", "9999-12-31T23:00-05:00", "tomorrow"]:
        with pytest.raises(ValidationError):
            values.parse_local_or_instant(bad)


def test_addresses() -> None:
    assert values.validate_email(" Ops@Example.COM ") == "ops@example.com"
    assert values.address_of("Ops <ops@b\u00fccher.example>") == "ops@xn--bcher-kva.example"
    assert values.one_address_problem("Ops <ops@example.com>") is None
    for bad in ["a@b.c\r\nBcc: x@y.z", "a@b.c, d@e.f", "nobody"]:
        assert "one e-mail address" in str(values.one_address_problem(bad))


def test_a_list_of_addresses_from_the_file() -> None:
    assert values.addresses_setting("A@example.com", ORIGIN) == ("a@example.com",)
    both = ["a@example.com", "A@example.com"]
    assert values.addresses_setting(both, ORIGIN) == ("a@example.com",)
    named = ["Ops <ops@example.com>", "Ops <ops@example.com>"]
    assert values.addresses_setting(named, ORIGIN, named=True) == ("Ops <ops@example.com>",)
    with pytest.raises(ConfigError, match="invalid e-mail address"):
        values.addresses_setting(named, ORIGIN)  # a name needs named=True
    for bad in [5, {"a": "b"}, ["ops"], [5]]:
        with pytest.raises(ConfigError, match=r"\[messages\] lease: "):
            values.addresses_setting(bad, ORIGIN)


def test_http_urls_are_checked_without_quoting_them() -> None:
    assert values.http_url_problem("https://hc.example/ping/x") is None
    for bad in ["ftp://h/x", "https://", "http://h:port/x", "http://h/a b", "hc.example/tok3n"]:
        problem = values.http_url_problem(bad)
        assert problem is not None
        assert "tok3n" not in problem
    # A space or a control character blamed the host.
    for spaced in ["http://h/SECRET PATH", "http://h/a\tb", "http://h/a\x7f"]:
        assert values.http_url_problem(spaced) == (
            "must be a URL without spaces or control characters (percent-encode them)"
        )
    # A port that is not a number blamed the host.
    for bad_port in ["http://u:tok3n@127.0.0.1:abc/ping", "http://h:0/x", "http://h:65536/x"]:
        assert values.http_url_problem(bad_port) == (
            "must be an http:// or https:// URL whose port is a number from 1 to 65535"
        )


def test_a_query_may_use_only_the_given_parameters() -> None:
    assert values.query_setting("select :slot", ORIGIN, ("slot",)) == "select :slot"
    with pytest.raises(ConfigError, match=r"unknown parameter\(s\) :nope \(available: :slot\)"):
        values.query_setting("select :nope", ORIGIN, ("slot",))
    for bad in ["", "  ", 5]:
        with pytest.raises(ConfigError, match="non-empty string"):
            values.query_setting(bad, ORIGIN, ("slot",))


def test_ids_and_message_types() -> None:
    assert values.as_id(" 42 ") == 42
    assert values.as_id(str(values.MAX_ID + 1)) is None
    assert values.as_id("\u00b2") is None
    with pytest.raises(ValidationError, match="invalid message id '0'"):
        values.parse_id("0", "message")
    assert values.normalise_type(" reminder_1d ") == "REMINDER_1D"
    with pytest.raises(ValidationError):
        values.normalise_type("1ST")


@settings(max_examples=500, deadline=None)
@given(st.text(alphabet="ab.@-_+=!#$%&'*/?^`{|}~ü1 ", max_size=16).map(lambda v: v + "@ex.org"))
def test_a_bare_address_is_read_as_the_email_package_reads_it(value: str) -> None:
    """name_and_address takes a value with none of the characters a name or brackets
    are written with as it is; the email package's parser agrees on every one."""
    from email.utils import parseaddr

    def parsed() -> tuple[str, str] | None:
        name, addr = parseaddr(value)
        try:
            return (name, values.validate_email(addr)) if addr else None
        except ValidationError:
            return None

    try:
        read: tuple[str, str] | None = values.name_and_address(value)
    except ValidationError:
        read = None
    assert read == parsed()


@pytest.mark.parametrize("value", [None, 5, ["a@example.com"]])
def test_an_address_that_is_not_text_is_invalid(value: object) -> None:
    with pytest.raises(ValidationError, match="invalid e-mail address"):
        values.address_of(value)  # type: ignore[arg-type]
