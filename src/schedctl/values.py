"""Value parsers: durations, zones, times of day, dates, instants, e-mail addresses,
http URLs, ids and message types, as the command line and the config file give them.

Each parser takes text (or a TOML value and the place it came from) and returns the
value or raises ValidationError (a command-line value) or ConfigError (a file value,
the message starting with where it was given); both exit 2. This module imports
nothing else of schedctl's and only the standard library at import time, so every
layer may use it and it costs nothing on start-up.
"""

from __future__ import annotations

import math
import re
from datetime import UTC, date, datetime, time, timedelta
from functools import cache, lru_cache
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from schedctl.errors import ConfigError, ValidationError, did_you_mean, quoted

# --- where a config-file value was given -------------------------------------------------


def nested(origin: str, key: object) -> str:
    """Where ``key`` of the table given at ``origin`` is: ``f: [a] b`` → ``f: [a.b] key``."""
    head, bracket, table_key = origin.rpartition("] ")
    if not bracket:
        return f"{origin}.{key}"
    return f"{head}.{table_key}] {key}"


# --- durations ------------------------------------------------------------------------

_DURATION = re.compile(r"([0-9]+)([smhd])")
_DURATION_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}


def split_duration(text: str) -> tuple[int, str]:
    """The amount and unit (s, m, h or d) of a duration such as ``15m``."""
    match = _DURATION.fullmatch(text.strip())
    if match is None or int(match[1]) == 0:
        raise _invalid_duration(text)
    return int(match[1]), match[2]


def parse_duration(text: str) -> timedelta:
    """Parse a positive duration such as ``90s``, ``15m``, ``6h`` or ``2d``."""
    amount, unit = split_duration(text)
    try:
        return timedelta(**{_DURATION_UNITS[unit]: amount})
    except OverflowError:
        raise _invalid_duration(text) from None


def _invalid_duration(text: str) -> ValidationError:
    return ValidationError(
        f"invalid duration {text!r} (expected a positive whole number and a unit "
        "s, m, h or d, e.g. 15m)"
    )


def format_duration(value: timedelta) -> str:
    """A duration back in the ``90s``/``15m``/``6h``/``2d`` form, largest exact unit."""
    seconds = math.ceil(value.total_seconds())
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def duration_setting(value: Any, origin: str) -> timedelta:
    """A duration from the config file ("90s", "15m", "6h", "2d"), or ConfigError."""
    if not isinstance(value, str):
        raise ConfigError(f"{origin}: expected a duration like '15m', got {quoted(value)}")
    try:
        return parse_duration(value)
    except ValidationError as exc:
        raise ConfigError(f"{origin}: {exc.message}") from None


def duration_between(low: timedelta, high: timedelta) -> Any:
    """A parser of a config-file duration from ``low`` to ``high``."""

    def parse(value: Any, origin: str) -> timedelta:
        duration = duration_setting(value, origin)
        if not low <= duration <= high:
            raise ConfigError(
                f"{origin}: must be from {format_duration(low)} to {format_duration(high)}"
            )
        return duration

    return parse


# A query's timeout: PostgreSQL's statement_timeout holds at most 2147483647 ms (24.8 days).
query_timeout = duration_between(timedelta(seconds=1), timedelta(days=24))


# --- zones, times of day, dates, instants -----------------------------------------------

# Names zoneinfo can load that are not IANA zones but host aliases or variant trees.
_NOT_IANA = {"local", "localtime", "posixrules"}
_NOT_IANA_PREFIXES = ("posix/", "right/")
_HHMM = re.compile(r"([0-9]{1,2}):([0-9]{2})")
WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_DAY_NAMES = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
_WEEKDAY_NAMES = {name: i for i, name in enumerate(WEEKDAYS)} | {
    name: i for i, name in enumerate(_DAY_NAMES)
}
# The instants schedctl accepts: from the Unix epoch to a year before the end of
# datetime's range, so that arithmetic near them (a day, a reminder's lead, a zone's
# offset) cannot overflow.
EARLIEST_INSTANT = datetime(1970, 1, 1, tzinfo=UTC)
LATEST_INSTANT = datetime(9999, 1, 1, tzinfo=UTC)  # exclusive


def parse_timezone(name: str) -> ZoneInfo:
    """Load an IANA time zone such as ``Europe/Berlin``; a misspelt one gets a hint."""
    if name in _NOT_IANA or name.startswith(_NOT_IANA_PREFIXES):
        raise _invalid_zone(name)
    try:
        return ZoneInfo(name)
    # ValueError covers empty names, paths and files on the zone path that are not zones.
    except (ZoneInfoNotFoundError, ValueError, OSError):
        raise _invalid_zone(name) from None


def _invalid_zone(name: str) -> ValidationError:
    from zoneinfo import available_timezones  # only on an error path: it lists ~600 files

    hint = did_you_mean(name, available_timezones() - _NOT_IANA)
    return ValidationError(
        f"invalid time zone {name!r}{hint or ' (expected an IANA name such as Europe/Berlin)'}"
    )


# The tz database's names of a fixed UTC offset that read like a region's local time
# ("EST" never becomes EDT), with a zone for that region's local time. CET, EET, MET,
# WET and the EST5EDT-style names do observe DST; UTC and the Etc/GMT+5-style names
# say what they are.
_FIXED_OFFSET_NAMES = {
    "EST": "America/New_York",
    "MST": "America/Denver",
    "HST": "Pacific/Honolulu",
}


def fixed_offset_warning(name: str) -> str | None:
    """A warning for a legacy fixed-offset zone name (EST, MST, HST), else None."""
    instead = _FIXED_OFFSET_NAMES.get(name)
    if instead is None:
        return None
    offset = ZoneInfo(name).utcoffset(datetime(2000, 1, 1))  # any day: it never changes
    assert offset is not None
    hours, minutes = divmod(abs(int(offset.total_seconds())) // 60, 60)
    sign = "-" if offset < timedelta(0) else "+"
    return (
        f"time zone {name} is a fixed offset, UTC{sign}{hours:02d}:{minutes:02d}, that never"
        f" observes DST (for local time, use an IANA name such as {instead})"
    )


def zone_problem(name: str) -> str | None:
    """What is wrong with an IANA zone name, or None."""
    try:
        parse_timezone(name)
    except ValidationError as exc:
        return exc.message
    return None


def parse_hhmm(text: str) -> time:
    """Parse a local time of day written ``HH:MM`` (00:00..23:59)."""
    match = _HHMM.fullmatch(text.strip())
    if match is None or int(match[1]) > 23 or int(match[2]) > 59:
        raise ValidationError(f"invalid time {text!r} (expected HH:MM, 00:00..23:59)")
    return time(int(match[1]), int(match[2]))


def parse_weekday(text: str) -> int:
    """Parse ``mon``..``sun`` or a full day name, any case; 0 is Monday."""
    weekday = _WEEKDAY_NAMES.get(text.strip().lower())
    if weekday is None:
        raise ValidationError(f"invalid weekday {text!r} (expected mon..sun)")
    return weekday


def parse_day(text: str) -> int | Literal["last"]:
    """Parse a day of the month: ``1``..``31`` or ``last``."""
    value = text.strip().lower()
    if value == "last":
        return "last"
    if not re.fullmatch(r"[0-9]{1,2}", value) or not 1 <= int(value) <= 31:
        raise ValidationError(f"invalid day {text!r} (expected 1..31 or last)")
    return int(value)


def parse_date(text: str) -> date:
    """A ``YYYY-MM-DD`` date given on the command line (exit 2 if it is not one)."""
    try:
        return date.fromisoformat(text.strip())
    except ValueError:
        raise ValidationError(f"invalid date {text!r} (expected YYYY-MM-DD)") from None


def parse_local_or_instant(text: str) -> datetime:
    """Parse ISO 8601: aware UTC if it has an offset, else the naive wall time it names.

    Either must lie within EARLIEST_INSTANT..LATEST_INSTANT (a wall time as if UTC).
    """
    try:
        value = datetime.fromisoformat(text.strip())
    except ValueError:
        raise ValidationError(
            f"invalid instant {text!r} (expected ISO 8601, e.g. 2026-03-29T02:30:00Z)"
        ) from None
    if value.tzinfo is not None:
        try:
            value = value.astimezone(UTC)
        except OverflowError:  # 9999-12-31T23:00-05:00 is past datetime's last year
            raise _out_of_range(text) from None
    check_instant_range(value.replace(tzinfo=UTC), text)
    return value


def check_instant_range(instant: datetime, text: str) -> None:
    """Refuse an instant (written ``text``) outside EARLIEST_INSTANT..LATEST_INSTANT."""
    if not EARLIEST_INSTANT <= instant < LATEST_INSTANT:
        raise _out_of_range(text)


def _out_of_range(text: str) -> ValidationError:
    return ValidationError(
        f"instant {text!r} is out of range (expected {EARLIEST_INSTANT:%Y-%m-%d}"
        f" to {LATEST_INSTANT - timedelta(days=1):%Y-%m-%d})"
    )


# --- e-mail addresses -------------------------------------------------------------------

_FORBIDDEN = re.compile(r"[\s<>()\[\]\\,;:\"\x00-\x1f\x7f]")
_LABEL = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$")


@lru_cache(maxsize=4096)  # mail goes to few domains; IDNA encoding is the cost
def normalise_domain(domain: str) -> str | None:
    """The domain in lower-case ASCII (IDNA), or None when it is not a host name."""
    domain = domain.rstrip(".").lower()
    try:
        ascii_domain = domain.encode("idna").decode("ascii")
    except UnicodeError:
        return None
    if not ascii_domain or len(ascii_domain) > 253:
        return None
    labels = ascii_domain.split(".")
    if not all(_LABEL.match(label) for label in labels):
        return None
    return ascii_domain


def validate_email(addr: str) -> str:
    """Return the address normalised (trimmed, lower-case, IDNA domain) or raise.

    A pragmatic check, not RFC 5322: exactly one ``@``, a non-empty ASCII local part
    without spaces, quotes, brackets or control characters, and a dotted domain (or
    ``localhost``). Addresses are compared case-insensitively everywhere in schedctl
    (suppressions, tokens), so the whole address is lower-cased.
    """
    if not isinstance(addr, str):
        raise _invalid_address(addr)
    value = addr.strip()
    if len(value) > 254 or value.count("@") != 1 or _FORBIDDEN.search(value):
        raise _invalid_address(addr)
    local, _, domain = value.partition("@")
    if (
        not local
        or len(local) > 64
        or not local.isascii()
        or local.startswith(".")
        or local.endswith(".")
        or ".." in local
    ):
        raise _invalid_address(addr)
    ascii_domain = normalise_domain(domain)
    if ascii_domain is None or ("." not in ascii_domain and ascii_domain != "localhost"):
        raise _invalid_address(addr)
    return f"{local.lower()}@{ascii_domain}"


def _invalid_address(value: object) -> ValidationError:
    # Built only to be raised: validating an address is on every send's path.
    return ValidationError(f"invalid e-mail address {value!r}")


def written_bare(value: str) -> bool:
    """Whether ``value`` holds nothing a display name, angle brackets, a comment or a
    list of addresses is written with: a bare address, valid or not (a valid one the
    ``email`` package's parser reads back as it is)."""
    return not _FORBIDDEN.search(value.strip())


def address_of(value: str) -> str:
    """The normalised bare address of ``value``, which may be ``Name <addr>``."""
    return name_and_address(value)[1]


def name_and_address(value: str) -> tuple[str, str]:
    """(display name, normalised bare address) of ``value``: ``Name <addr>`` or a
    bare address (whose display name is "")."""
    if not isinstance(value, str):
        raise _invalid_address(value)
    if written_bare(value):
        return "", validate_email(value)
    from email.utils import parseaddr  # the email package only when an address is read

    name, addr = parseaddr(value)
    if not addr:
        raise _invalid_address(value)
    return name, validate_email(addr)


def one_address_problem(value: str) -> str | None:
    """What is wrong with one address written ``addr`` or ``Name <addr>``, or None."""
    from email.utils import getaddresses

    problem = f"must be one e-mail address, 'addr' or 'Name <addr>', got {quoted(value)}"
    # parseaddr quietly drops what follows a line break ("a@b.c\r\nBcc: x@y.z").
    if any(ord(c) < 32 or ord(c) == 127 for c in value) or len(getaddresses([value])) != 1:
        return problem
    try:
        address_of(value)
    except ValidationError:
        return problem
    return None


def addresses_setting(value: Any, origin: str, *, named: bool = False) -> tuple[str, ...]:
    """A list of e-mail addresses from the config file (a lone string is a list of one),
    without duplicates: bare addresses normalised, or with ``named`` also ``Name <addr>``,
    kept as written."""
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list):
        raise ConfigError(f"{origin}: must be a list of e-mail addresses")
    found = []
    for address in value:
        try:
            if not isinstance(address, str):
                raise ValidationError(f"invalid e-mail address {quoted(address)}")
            if named:
                address_of(address)
                found.append(address)
            else:
                found.append(validate_email(address))
        except ValidationError as exc:
            raise ConfigError(f"{origin}: {exc.message}") from None
    return tuple(dict.fromkeys(found))


# --- URLs -------------------------------------------------------------------------------


def http_url_problem(value: str) -> str | None:
    """What is wrong with an http(s) URL (never quoting it: it may hold a secret)."""
    from urllib.parse import urlsplit

    try:
        parts = urlsplit(value)
        usable = parts.scheme in ("http", "https") and bool(parts.hostname)
    except ValueError:
        usable = False
    # Never quoted: it may hold a secret (a token in the path, user:password@).
    if any(c.isspace() or ord(c) < 32 or ord(c) == 127 for c in value):
        return "must be a URL without spaces or control characters (percent-encode them)"
    if not usable:
        return "must be an http:// or https:// URL with a host"
    try:
        port = parts.port  # (refuses a port that is not a number from 0 to 65535)
    except ValueError:
        port = 0
    if port == 0:
        return "must be an http:// or https:// URL whose port is a number from 1 to 65535"
    return None


# --- SQL text given in the config file ----------------------------------------------------


@cache
def bind_names(sql: str) -> tuple[str, ...]:
    """The ``:name`` parameters a query refers to."""
    import sqlalchemy as sa  # only when a query is configured

    return tuple(sa.text(sql).compile().params)


def query_setting(value: Any, origin: str, binds: tuple[str, ...]) -> str:
    """A query from the config file: non-empty text whose parameters are all in ``binds``."""
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(f"{origin}: must be a non-empty string")
    unknown = set(bind_names(value)) - set(binds)
    if unknown:
        raise ConfigError(
            f"{origin}: uses unknown parameter(s) {', '.join(':' + b for b in sorted(unknown))}"
            f" (available: {', '.join(':' + b for b in binds)})"
        )
    return value


# --- ids and message types ------------------------------------------------------------------

# Every table's id is a BIGINT on PostgreSQL and an INTEGER on SQLite: a whole number
# 1..2**63-1. A string outside that range never reaches the database, whose drivers
# refuse it with an overflow error instead of "no such row".
MAX_ID = 2**63 - 1
_DIGITS = re.compile(r"[0-9]+")  # ASCII only: str.isdigit() also accepts "²" and "٣"
_TYPE = re.compile(r"[A-Z][A-Z0-9_]{0,63}")


def as_id(text: str) -> int | None:
    """The id written in ``text`` (surrounding spaces allowed), or None if it is not one."""
    value = text.strip()
    if not _DIGITS.fullmatch(value):
        return None
    number = int(value)
    return number if 1 <= number <= MAX_ID else None


def parse_id(text: str, what: str) -> int:
    """The id of a ``what`` ("message", "schedule"...) given on the command line (exit 2)."""
    number = as_id(text)
    if number is None:
        raise ValidationError(
            f"invalid {what} id {text!r} (expected a positive whole number below 2^63)"
        )
    return number


def normalise_type(value: str) -> str:
    """A message type in upper case (``report`` → ``REPORT``), or ValidationError."""
    candidate = value.strip().upper()
    if not _TYPE.fullmatch(candidate):
        raise ValidationError(
            f"invalid message type {value!r} (letters, digits and _, e.g. REPORT or REMINDER_1D)"
        )
    return candidate
