"""The ``[distribute]`` settings: declared in `schedctl.config` (keys included), parsed
and checked here.

Everything is checked when schedctl starts, before it connects to anything: a bad
value stops the command with one line naming the key (``[distribute.target] table``)
and exit 2. A database URL is parsed (its dialect must be one schedctl can drive) but
never quoted whole: its password is a secret.

This module imports only the standard library, `schedctl.errors` and `schedctl.values`
at import time, because `schedctl.config` imports it to declare the settings.
"""

from __future__ import annotations

import re
import string
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from schedctl.errors import ConfigError, quoted
from schedctl.values import nested, query_setting, query_timeout

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


def _table(value: Any, origin: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ConfigError(f"{origin}: must be a table")
    return value  # its keys are checked against their declaration in schedctl.config


def _url(value: Any, origin: str) -> str:
    from schedctl.db.engine import url_setting  # sqlalchemy: only when it is configured

    return url_setting(value, origin)


def parse_source(value: Any, origin: str) -> Source:
    """A ``[distribute.source]`` or ``[distribute.campaigns]`` table."""
    table = _table(value, origin)
    for key in ("database_url", "query"):
        if key not in table:
            raise ConfigError(f"{origin}: needs {key}")
    timeout = DEFAULT_QUERY_TIMEOUT
    if "timeout" in table:
        timeout = query_timeout(table["timeout"], nested(origin, "timeout"))
    return Source(
        database_url=_url(table["database_url"], nested(origin, "database_url")),
        query=query_setting(table["query"], nested(origin, "query"), QUERY_BINDS),
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
        table = _table(value, origin)
        for key in ("database_url", "table", "columns"):
            if key not in table:
                raise ConfigError(f"{origin}: needs {key}")
        where = nested(origin, "columns")
        columns = _table(table["columns"], where)
        for role in REQUIRED_ROLES:
            if role not in columns:
                raise ConfigError(f"{where}: needs {role} (the column it goes to)")
        mapped = {role: _identifier(col, nested(where, role)) for role, col in columns.items()}
        extra = None
        if "extra_columns" in table:
            raw = table["extra_columns"]
            where = nested(origin, "extra_columns")
            if not isinstance(raw, dict):
                raise ConfigError(
                    f'{where}: must be a table of destination column = "source column"'
                )
            extra = {
                _identifier(dest, where): _identifier(src, nested(where, dest))
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
            database_url=_url(table["database_url"], nested(origin, "database_url")),
            table=_identifier(table["table"], nested(origin, "table"), qualified=True),
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
