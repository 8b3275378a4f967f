"""The ``[distribute]`` settings: declared in `schedctl.config`, parsed and checked here.

Everything is checked when schedctl starts, before it connects to anything: a bad
value stops the command with one line naming the key (``[distribute] target.table``)
and exit 2. A database URL is parsed (its dialect must be one schedctl can drive) but
never quoted whole: its password is a secret.

This module imports only the standard library and `schedctl.errors`, because
`schedctl.config` imports it to declare the settings.
"""

from __future__ import annotations

import re
import string
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from schedctl.errors import ConfigError, did_you_mean, quoted

DEFAULT_GROUPS = ("A", "B", "C", "D", "E")
DEFAULT_CONTROL_GROUPS = ("A",)
DEFAULT_GROUP_ID_FORMAT = "{campaign}.{n}"
DEFAULT_QUERY_TIMEOUT = timedelta(minutes=30)
# Values a source or campaigns query may refer to as :name.
QUERY_BINDS = ("business_date",)
# The destination column roles; id and group_id are required.
COLUMN_ROLES = ("id", "group_id", "date_start", "date_end", "inserted_at")
REQUIRED_ROLES = ("id", "group_id")

_GROUP = re.compile(r"[A-Za-z0-9_]{1,16}")
# A plain SQL identifier (Oracle allows $ and #); the table may be schema-qualified.
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_$#]{0,127}")


@dataclass(frozen=True)
class Source:
    """A query on a database: ``[distribute.source]`` or ``[distribute.campaigns]``."""

    database_url: str
    query: str
    timeout: timedelta = DEFAULT_QUERY_TIMEOUT


@dataclass(frozen=True)
class Destination:
    """A table the day's rows are copied to: control, target or mirror."""

    name: str  # control | target | mirror
    database_url: str
    table: str  # table or schema.table
    columns: Mapping[str, str]  # role -> column (id, group_id, date_start, ...)
    # Destination column -> source column; None: every extra column, same name.
    extra_columns: Mapping[str, str] | None = None
    schema: str | None = field(default=None, init=False)
    table_name: str = field(default="", init=False)

    def __post_init__(self) -> None:
        schema, _, name = self.table.rpartition(".")
        object.__setattr__(self, "schema", schema or None)
        object.__setattr__(self, "table_name", name)


# --- parsers (called by schedctl.config with the value and where it came from) -------


def _table_of(value: Any, origin: str, keys: set[str]) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ConfigError(f"{origin}: must be a table")
    for key in value:
        if key not in keys:
            raise ConfigError(f"{origin}: unknown key {quoted(key)}{did_you_mean(key, keys)}")
    return value


def _text(value: Any, origin: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(f"{origin}: must be a non-empty string")
    return value


def _url(value: Any, origin: str) -> str:
    from schedctl.db.engine import parse_url  # sqlalchemy: only when it is configured

    if not isinstance(value, str) or not value.strip():
        raise ConfigError(f"{origin}: must be a database URL")  # never quoted: a secret
    try:
        parse_url(value)
    except ConfigError as exc:
        raise ConfigError(f"{origin}: {exc.message}") from None
    return value


def _timeout(value: Any, origin: str) -> timedelta:
    from schedctl.config import duration_setting

    return duration_setting(value, origin)


def _query(value: Any, origin: str) -> str:
    import sqlalchemy as sa

    query = _text(value, origin)
    binds = set(sa.text(query).compile().params)
    unknown = binds - set(QUERY_BINDS)
    if unknown:
        raise ConfigError(
            f"{origin}: uses unknown parameter(s) {', '.join(':' + b for b in sorted(unknown))}"
            f" (available: {', '.join(':' + b for b in QUERY_BINDS)})"
        )
    return query


def parse_source(value: Any, origin: str) -> Source:
    """A ``[distribute.source]`` or ``[distribute.campaigns]`` table."""
    table = _table_of(value, origin, {"database_url", "query", "timeout"})
    for key in ("database_url", "query"):
        if key not in table:
            raise ConfigError(f"{origin}: needs {key}")
    timeout = DEFAULT_QUERY_TIMEOUT
    if "timeout" in table:
        timeout = _timeout(table["timeout"], f"{origin}.timeout")
    return Source(
        database_url=_url(table["database_url"], f"{origin}.database_url"),
        query=_query(table["query"], f"{origin}.query"),
        timeout=timeout,
    )


def _identifier(value: Any, origin: str, *, qualified: bool = False) -> str:
    parts = value.split(".") if isinstance(value, str) else [None]
    if not parts or len(parts) > (2 if qualified else 1):
        parts = [None]
    if not all(isinstance(p, str) and _IDENTIFIER.fullmatch(p) for p in parts):
        what = "a table name (or schema.table)" if qualified else "a column name"
        raise ConfigError(f"{origin}: must be {what} of letters, digits and _, got {quoted(value)}")
    return str(value)


def _destination(name: str) -> Any:
    def parse(value: Any, origin: str) -> Destination:
        table = _table_of(value, origin, {"database_url", "table", "columns", "extra_columns"})
        for key in ("database_url", "table", "columns"):
            if key not in table:
                raise ConfigError(f"{origin}: needs {key}")
        columns = _table_of(table["columns"], f"{origin}.columns", set(COLUMN_ROLES))
        for role in REQUIRED_ROLES:
            if role not in columns:
                raise ConfigError(f"{origin}.columns: needs {role} (the column it goes to)")
        mapped = {
            role: _identifier(col, f"{origin}.columns.{role}") for role, col in columns.items()
        }
        extra = None
        if "extra_columns" in table:
            raw = table["extra_columns"]
            if not isinstance(raw, dict):
                raise ConfigError(
                    f"{origin}.extra_columns: must be a table of destination column ="
                    ' "source column"'
                )
            extra = {
                _identifier(dest, f"{origin}.extra_columns"): _identifier(
                    src, f"{origin}.extra_columns.{dest}"
                )
                for dest, src in raw.items()
            }
        seen: dict[str, str] = {}
        for role, column in [*mapped.items(), *((d, d) for d in extra or {})]:
            if column.lower() in seen:
                raise ConfigError(
                    f"{origin}: column {quoted(column)} is given twice"
                    f" ({seen[column.lower()]} and {role})"
                )
            seen[column.lower()] = role
        return Destination(
            name=name,
            database_url=_url(table["database_url"], f"{origin}.database_url"),
            table=_identifier(table["table"], f"{origin}.table", qualified=True),
            columns=mapped,
            extra_columns=extra,
        )

    return parse


parse_control = _destination("control")
parse_target = _destination("target")
parse_mirror = _destination("mirror")


def parse_groups(value: Any, origin: str) -> tuple[str, ...]:
    """A list of group letters (or short names): distinct, at most 100."""
    if not isinstance(value, list) or len(value) > 100:
        raise ConfigError(f'{origin}: must be a list of group names, e.g. ["A", "B"]')
    for group in value:
        if not isinstance(group, str) or not _GROUP.fullmatch(group):
            raise ConfigError(
                f"{origin}: a group name is 1-16 letters, digits or _, got {quoted(group)}"
            )
    if len(set(value)) != len(value):
        raise ConfigError(f"{origin}: a group is listed twice")
    return tuple(value)


def parse_addresses(value: Any, origin: str) -> tuple[str, ...]:
    """The operators' e-mail addresses."""
    from schedctl.delivery.message import address_of
    from schedctl.errors import ValidationError

    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list):
        raise ConfigError(f"{origin}: must be a list of e-mail addresses")
    found = []
    for address in value:
        try:
            if not isinstance(address, str):
                raise ValidationError("")
            address_of(address)
        except ValidationError:
            raise ConfigError(f"{origin}: not an e-mail address: {quoted(address)}") from None
        found.append(address)
    return tuple(dict.fromkeys(found))


def check_group_id_format(value: str) -> str | None:
    """The problem with a ``group_id_format``, or None."""
    fields = set()
    try:
        for _, name, spec, conversion in string.Formatter().parse(value):
            if name is not None:
                fields.add(name)
                if spec or conversion:
                    return f"{{{name}}} takes no format spec or conversion"
    except ValueError as exc:
        return f"is not a valid format ({exc})"
    unknown = fields - {"campaign", "n", "group"}
    if unknown:
        return (
            f"unknown field {{{sorted(unknown)[0]}}} (available: {{campaign}}, {{n}} the"
            " group's 1-based position, {group} its name)"
        )
    if "campaign" not in fields or not fields & {"n", "group"}:
        return "must contain {campaign} and {n} (or {group}), so that every group id differs"
    return None


def check_zone(value: str) -> str | None:
    from schedctl.cadence import parse_timezone
    from schedctl.errors import ValidationError

    try:
        parse_timezone(value)
    except ValidationError as exc:
        return exc.message
    return None


def duration_between(low: timedelta, high: timedelta) -> Any:
    """A parser of a duration from ``low`` to ``high``."""

    def parse(value: Any, origin: str) -> timedelta:
        from schedctl.cadence import format_duration

        duration = _timeout(value, origin)
        if not low <= duration <= high:
            raise ConfigError(
                f"{origin}: must be from {format_duration(low)} to {format_duration(high)}"
            )
        return duration

    return parse


def check_groups(groups: tuple[str, ...], control: tuple[str, ...], origin: str) -> None:
    """The rules between ``groups`` and ``control_groups``."""
    if not groups:
        raise ConfigError(f"{origin}: groups must name at least one group")
    missing = [g for g in control if g not in groups]
    if missing:
        raise ConfigError(
            f"{origin}: control group {quoted(missing[0])} is not one of groups"
            f" ({', '.join(groups)})"
        )
