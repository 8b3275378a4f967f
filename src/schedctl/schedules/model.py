"""A schedule as stored, and its options parsed and checked (pure; SPEC §3, §4)."""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from schedctl.cadence import Cadence, make_cadence
from schedctl.errors import ValidationError, quoted
from schedctl.values import (
    WEEKDAYS,
    format_duration,
    parse_duration,
    parse_id,
    split_duration,
    validate_email,
)

CATCHUP_POLICIES = ("latest", "all", "none")
DEFAULT_CATCHUP = "latest"
MAX_NAME_LENGTH = 200
_PARAM_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]{0,63}")
_NO_LATENESS = {"none", "off"}


@dataclass(frozen=True)
class Schedule:
    """One row of ``schedules``, decoded."""

    id: int
    account_id: int
    name: str
    kind: str
    cadence: Cadence
    recipients: tuple[str, ...]
    params: Mapping[str, str]
    active: bool
    catchup: str
    max_lateness: timedelta | None
    next_run_at: datetime | None
    last_run_at: datetime | None
    created_at: datetime
    updated_at: datetime

    @classmethod
    def from_row(cls, row: Any) -> Schedule:
        """Decode a row; ValidationError if it holds a cadence, recipients or params
        schedctl cannot use (a row edited by hand)."""
        if not isinstance(row.params or {}, dict):
            raise ValidationError(f"invalid params {row.params!r} (expected a JSON object)")
        if not isinstance(row.recipients or [], list):
            raise ValidationError(f"invalid recipients {row.recipients!r} (expected a list)")
        return cls(
            id=int(row.id),
            account_id=int(row.account_id),
            name=row.name,
            kind=row.kind,
            cadence=stored_cadence(row),
            recipients=tuple(row.recipients or ()),
            params=dict(row.params or {}),
            active=bool(row.active),
            catchup=row.catchup,
            max_lateness=(
                None if row.max_lateness_s is None else timedelta(seconds=row.max_lateness_s)
            ),
            next_run_at=row.next_run_at,
            last_run_at=row.last_run_at,
            created_at=row.created_at,
            updated_at=row.updated_at,
        )

    def summary(self) -> dict[str, Any]:
        """The keys of `schedules list` (SPEC §11)."""
        return {
            "id": str(self.id),
            "name": self.name,
            "kind": self.kind,
            "cadence": self.cadence.kind,
            "tz": self.cadence.tz,
            "active": self.active,
            "next_run_at": self.next_run_at,
            "last_run_at": self.last_run_at,
            "description": self.cadence.describe(),
        }

    def as_dict(self) -> dict[str, Any]:
        """Everything `schedules show` prints."""
        cadence = self.cadence
        return {
            **self.summary(),
            "account_id": str(self.account_id),
            "at": None if cadence.at is None else f"{cadence.at:%H:%M}",
            "weekday": None if cadence.weekday is None else WEEKDAYS[cadence.weekday],
            "day": None if cadence.day is None else str(cadence.day),
            "cron": cadence.cron,
            "recipients": list(self.recipients),
            "params": dict(self.params),
            "catchup": self.catchup,
            "max_lateness": format_optional_duration(self.max_lateness),
            "created_at": self.created_at,
            "updated_at": self.updated_at,
        }


def stored_cadence(row: Any) -> Cadence:
    """The cadence a ``schedules`` row stores; ValidationError if schedctl cannot use it."""
    return _decode_cadence(
        row.cadence, row.tz, row.at_time, row.weekday, row.day_of_month, row.cron
    )


@functools.lru_cache(maxsize=1024)
def _decode_cadence(
    kind: str, tz: str, at: str | None, weekday: int | None, day: str | None, cron: str | None
) -> Cadence:
    # Decoded once per process for each stored definition: a tick reads thousands of
    # rows that share a few ("daily at 09:00" in one zone), and a Cadence is immutable.
    # An invalid one raises again each time (lru_cache keeps no exceptions).
    if weekday is not None and weekday not in range(len(WEEKDAYS)):
        raise ValidationError(f"invalid weekday {weekday!r} (expected 0..6)")
    return make_cadence(
        kind,
        tz=tz,
        at=at,
        weekday=None if weekday is None else WEEKDAYS[weekday],
        day=day,
        cron=cron,
    )


@dataclass(frozen=True)
class ScheduleOptions:
    """Raw option values from the command line; None means "not given"."""

    name: str | None = None
    kind: str | None = None
    cadence: str | None = None
    at: str | None = None
    weekday: str | None = None
    day: str | None = None
    cron: str | None = None
    tz: str | None = None
    to: Sequence[str] | None = None
    params: Sequence[str] | None = None
    catchup: str | None = None
    max_lateness: str | None = None
    paused: bool = False


# --- parsing and validation (pure) ---------------------------------------------------


def parse_schedule_id(text: str) -> int:
    return parse_id(text, "schedule")


def parse_params(items: Sequence[str]) -> dict[str, str]:
    """Parse ``KEY=VALUE`` items; a key may appear once."""
    params: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or not _PARAM_KEY.fullmatch(key):
            raise ValidationError(
                f"invalid --param {item!r} (expected KEY=VALUE, KEY made of letters,"
                " digits, '_', '.', '-')"
            )
        if key in params:
            raise ValidationError(f"--param {key} given twice")
        params[key] = value
    return params


def parse_recipients(items: Sequence[str]) -> tuple[str, ...]:
    """Validate and normalise e-mail addresses; duplicates are dropped, order kept."""
    return tuple(dict.fromkeys(validate_email(item) for item in items))


def parse_catchup(text: str) -> str:
    value = text.strip().lower()
    if value not in CATCHUP_POLICIES:
        raise ValidationError(f"invalid --catchup {text!r} (expected latest, all or none)")
    return value


# Stored in whole seconds in a 32-bit integer column (max_lateness_s): 24855 days.
MAX_LATENESS = timedelta(seconds=2**31 - 1)


def parse_max_lateness(text: str) -> timedelta | None:
    """A duration such as ``6h``, or ``none`` for no limit."""
    if text.strip().lower() in _NO_LATENESS:
        return None
    too_long = ValidationError(
        f"invalid max lateness {quoted(text)} (at most {MAX_LATENESS.days}d, or none)"
    )
    amount, _ = split_duration(text)  # (a well-formed amount past timedelta's range too)
    if amount > MAX_LATENESS.total_seconds():  # in any unit, more than the bound's seconds
        raise too_long
    value = parse_duration(text)
    if value > MAX_LATENESS:
        raise too_long
    return value


def parse_name(text: str) -> str:
    name = " ".join(text.split())
    if not name or len(name) > MAX_NAME_LENGTH:
        raise ValidationError(f"invalid schedule name {text!r} (1-{MAX_NAME_LENGTH} characters)")
    return name


def format_optional_duration(value: timedelta | None) -> str | None:
    return None if value is None else format_duration(value)


def merge_cadence(options: ScheduleOptions, existing: Cadence | None) -> Cadence:
    """The cadence after applying ``options`` to ``existing`` (None when creating).

    Fields the resulting cadence kind does not use are dropped, so switching a weekly
    schedule to daily clears its weekday; a field given on the command line that
    the kind does not use is an error.
    """
    kind = options.cadence if options.cadence is not None else (existing.kind if existing else None)
    if kind is None:
        raise ValidationError("--cadence is required (daily, weekly, monthly or cron)")
    kind = kind.strip().lower()
    old: dict[str, str | None] = {"at": None, "weekday": None, "day": None, "cron": None}
    if existing is not None and existing.kind == kind:
        old = {
            "at": None if existing.at is None else f"{existing.at:%H:%M}",
            "weekday": None if existing.weekday is None else WEEKDAYS[existing.weekday],
            "day": None if existing.day is None else str(existing.day),
            "cron": existing.cron,
        }
    elif (
        existing is not None and existing.at is not None and kind in {"daily", "weekly", "monthly"}
    ):
        # A time of day carries over between the kinds that have one.
        old["at"] = f"{existing.at:%H:%M}"
    given = {name: getattr(options, name) for name in ("at", "weekday", "day", "cron")}
    values = {name: given[name] if given[name] is not None else old[name] for name in given}
    tz = options.tz if options.tz is not None else (existing.tz if existing else "UTC")
    return make_cadence(kind, tz=tz.strip(), **values)
