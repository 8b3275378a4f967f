"""The one output layer: JSON for scripts, rich tables on a terminal, plain text in cron.

Data goes to stdout, diagnostics to stderr. Every command hands its result here as a
dict with stable keys; with --json that dict is the whole of stdout. Everything printed
here -- documents, tables, errors, warnings -- is redacted first (schedctl.redaction).
"""

from __future__ import annotations

import json
import os
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any, TextIO

from schedctl.errors import ELLIPSIS, QUOTED_MAX
from schedctl.redaction import redact, redact_data


@dataclass
class OutputOptions:
    json: bool = False
    quiet: bool = False
    verbose: bool = False


def _default(value: Any) -> Any:
    if isinstance(value, datetime | date):
        return value.isoformat()
    return str(value)


def to_json(data: dict[str, Any]) -> str:
    """`data` as one line of JSON, every string in it redacted."""
    return json.dumps(
        redact_data(data), default=lambda v: redact_data(_default(v)), ensure_ascii=False
    )


@dataclass
class Output:
    """Renders one command's result according to the global output flags."""

    options: OutputOptions
    stream: TextIO = field(default_factory=lambda: sys.stdout)

    @property
    def is_terminal(self) -> bool:
        isatty = getattr(self.stream, "isatty", None)
        return bool(isatty and isatty())

    def result(
        self, data: dict[str, Any], human: str | None = None, *, failed: bool = False
    ) -> None:
        """Emit a command's result: its JSON, or a human line unless --quiet. A
        ``failed`` one (it exits non-zero) is one line on stderr under --quiet: cron
        mails only what is printed."""
        if self.options.json:
            print(to_json(data), file=self.stream)
        elif not self.options.quiet and human:
            print(printable(redact(human)), file=self.stream)
        elif failed and human:
            error_line(human)

    def table(
        self,
        data: dict[str, Any],
        columns: Sequence[str],
        rows: Sequence[Sequence[Any]],
        *,
        title: str | None = None,
        footer: str | None = None,
    ) -> None:
        """Emit a list result: JSON, a rich table on a terminal, or aligned plain text."""
        if self.options.json:
            print(to_json(data), file=self.stream)
            return
        if self.options.quiet:
            return
        cells = [
            ["" if v is None else printable(redact(cell_text(v)), cell=True) for v in row]
            for row in rows
        ]
        title = printable(redact(title)) if title else title
        footer = printable(redact(footer)) if footer else footer
        if self.is_terminal:
            # rich only for a person at a terminal: cron runs never pay for importing it.
            from rich.console import Console
            from rich.table import Table
            from rich.text import Text

            # Cells as Text, never markup: a name like "[/x]" is shown, not parsed.
            table = Table(title=Text(title) if title else None, title_justify="left")
            for column in columns:
                table.add_column(column)
            for row in cells:
                table.add_row(*(Text(cell) for cell in row))
            console = Console(
                file=self.stream,
                no_color=bool(os.environ.get("NO_COLOR")) or None,
                highlight=False,
                soft_wrap=True,
            )
            console.print(table)
        else:
            if title:
                print(title, file=self.stream)
            widths = [max([len(c)] + [len(r[i]) for r in cells]) for i, c in enumerate(columns)]
            for row in [list(columns), *cells]:
                line = "  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True))
                print(line.rstrip(), file=self.stream)
        if footer:
            print(footer, file=self.stream)


def cell_text(value: Any) -> str:
    """A value as a table cell shows it (instants to the second, in UTC as Z)."""
    if isinstance(value, datetime):
        return value.strftime("%Y-%m-%d %H:%M:%S%z").replace("+0000", "Z")
    if isinstance(value, bool):
        return "yes" if value else "no"
    return str(value)


def in_zone(instant: datetime | None, tz: str) -> str | None:
    """An instant as a listing shows it (SPEC §12): in the item's own zone, and in UTC
    (only in UTC where the zone is UTC, or cannot be read)."""
    if instant is None:
        return None
    utc = cell_text(instant)
    if tz == "UTC":
        return utc
    from schedctl.zones import zone

    try:
        local = instant.astimezone(zone(tz))
    except (ValueError, OSError, KeyError):  # (a zone edited by hand into nonsense)
        return utc
    return f"{local:%Y-%m-%d %H:%M:%S} {local.tzname()} ({utc})"


# A quoted value is cut to QUOTED_MAX characters (errors.quoted), the whole message
# to MESSAGE_MAX.
MESSAGE_MAX = 300
# A quote that opens after a non-word character and closes before one ('x', "x"), so
# the apostrophe in "file's" opens nothing.
_QUOTED = re.compile(rf"""(?<!\w)(['"])((?:(?!\1).){{{QUOTED_MAX + 1},}})\1(?!\w)""")


# Control characters a terminal would act on (an escape sequence in a schedule's name
# clearing the screen): all of C0 but tab and newline, DEL, and C1.
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")
# In a table cell, a line feed too: a value that starts a line of its own would pass
# for a line of the output ("schedctl: all green" in a forged command name).
_CONTROL_IN_CELL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f-\x9f]")


def printable(text: str, *, cell: bool = False) -> str:
    """``text`` with each control character a terminal would act on written as an
    escape (``\x1b``), as an error line quotes it; a ``cell`` keeps no line feed."""
    return (_CONTROL_IN_CELL if cell else _CONTROL).sub(lambda m: f"\\x{ord(m[0]):02x}", text)


def error_text(message: str) -> str:
    """`message` as a failure is reported: redacted, one line, with what it quotes cut
    short."""
    text = " ".join(redact(message).split())
    text = _QUOTED.sub(lambda m: f"{m[1]}{m[2][:QUOTED_MAX]}{ELLIPSIS}{m[1]}", text)
    return text if len(text) <= MESSAGE_MAX else text[:MESSAGE_MAX] + ELLIPSIS


def error_line(message: str) -> None:
    """One line on stderr, as every failure is reported."""
    print(f"schedctl: error: {error_text(message)}", file=sys.stderr)


def report_error(message: str, exit_code: int, *, as_json: bool) -> None:
    """Report a failure: one line on stderr and, with --json, one object on stdout.

    Scripts reading --json output get a document whatever happened:
    ``{"error": {"code": <the exit code>, "message": <the line on stderr>}}``.
    """
    error_line(message)
    if as_json:
        print(to_json({"error": {"code": exit_code, "message": error_text(message)}}))


def warn(message: str) -> None:
    print(f"schedctl: warning: {printable(redact(message))}", file=sys.stderr)
