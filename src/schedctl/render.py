"""Rendering from the Jinja2 templates in ``schedctl/templates``: mail bodies, and the
status pages (``templates/pages``).

Each mail kind has a pair, ``NAME.txt`` and ``NAME.html``; only ``.html`` templates
are autoescaped, so a value like ``<script>`` is inert in the HTML part and verbatim in
the text part. Undefined variables raise (StrictUndefined) instead of rendering blank.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime, tzinfo
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape

__all__ = [
    "cell", "csv_cell", "environment", "iso_time", "local_time", "render", "render_pair",
    "span", "text_table",
]  # fmt: skip

_MAX_CELL_WIDTH = 40
# What a spreadsheet reads as the start of a formula (OWASP, "CSV Injection").
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def cell(value: object) -> str:
    """One table cell as text: None is blank, instants are ISO 8601 without microseconds."""
    if value is None:
        return ""
    if isinstance(value, datetime):
        return value.replace(microsecond=0).isoformat(sep=" ")
    return str(value)


def csv_cell(value: object) -> str:
    """One CSV cell: :func:`cell`, with text that a spreadsheet would run as a formula
    (starting with ``= + - @``, tab or carriage return) prefixed with a single quote, as
    OWASP recommends. Only text is neutralised: a number from a numeric column (-5,
    -1.5, a Decimal) stays a number."""
    text = cell(value)
    if isinstance(value, str) and text.startswith(_FORMULA_START):
        return "'" + text
    return text


def text_table(rows: Iterable[Sequence[object]], columns: Sequence[str]) -> str:
    """A plain-text table with aligned columns, for the text part of a report."""

    def clip(text: str) -> str:
        text = " ".join(text.split())
        if len(text) > _MAX_CELL_WIDTH:
            return text[: _MAX_CELL_WIDTH - 1] + "…"
        return text

    header = [clip(str(c)) for c in columns]
    body = [[clip(cell(v)) for v in row] for row in rows]
    widths = [len(h) for h in header]
    for row in body:
        for i, text in enumerate(row[: len(widths)]):
            widths[i] = max(widths[i], len(text))

    def line(values: Sequence[str]) -> str:
        return "  ".join(v.ljust(w) for v, w in zip(values, widths, strict=False)).rstrip()

    rule = "  ".join("-" * w for w in widths)
    return "\n".join([line(header), rule, *(line(row) for row in body)])


def local_time(instant: datetime | None, tz: str | None = None) -> str:
    """An instant as wall-clock time in zone ``tz`` with its abbreviation, e.g.
    ``2027-03-28 03:00 CEST``; UTC when ``tz`` is None or not a zone; blank for None."""
    if instant is None:
        return ""
    zone: tzinfo = UTC
    if tz:
        try:
            zone = ZoneInfo(tz)
        except (ValueError, ZoneInfoNotFoundError):
            zone = UTC
    local = instant.astimezone(zone)
    return f"{local:%Y-%m-%d %H:%M} {local.tzname()}"


def span(seconds: float | None) -> str:
    """A length of time in its two largest units: ``42s``, ``3m 20s``, ``2d 3h``."""
    if seconds is None:
        return ""
    left = round(seconds)
    if left < 60:
        return f"{left}s"
    parts: list[str] = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        if left >= size or parts:
            parts.append(f"{left // size}{unit}")
            left %= size
        if len(parts) == 2:
            break
    return " ".join(p for p in parts if not p.startswith("0")) or "0s"


def iso_time(instant: datetime | None) -> str:
    """An instant as ISO 8601 UTC without microseconds (a ``<time datetime>``)."""
    if instant is None:
        return ""
    return instant.astimezone(UTC).replace(microsecond=0).isoformat()


@functools.cache
def environment() -> Environment:
    """The one template environment (built on first use, then shared)."""
    env = Environment(
        loader=PackageLoader("schedctl", "templates"),
        autoescape=select_autoescape(["html"]),
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
        auto_reload=False,
    )
    env.filters["cell"] = cell
    env.filters["text_table"] = text_table
    env.filters["local_time"] = local_time
    env.filters["iso_time"] = iso_time
    env.filters["span"] = span
    return env


def render(template: str, /, **context: Any) -> str:
    """Render one template by its file name, e.g. ``render("digest.txt", ...)``."""
    return environment().get_template(template).render(**context)


def render_pair(name: str, /, **context: Any) -> tuple[str, str]:
    """Render ``NAME.txt`` and ``NAME.html`` with the same context: (text, html)."""
    return render(f"{name}.txt", **context), render(f"{name}.html", **context)
