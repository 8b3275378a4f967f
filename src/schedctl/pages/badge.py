"""The heartbeat badge: a small SVG, ``command | status``, coloured by the status."""

from __future__ import annotations

from xml.sax.saxutils import escape

COLOURS = {"green": "#2e7d32", "yellow": "#b58900", "red": "#c62828", "unknown": "#6b6b6b"}
_LABEL = "#444"
_CHAR_WIDTH = 7  # px per character of the 11 px font, near enough for a badge
_PADDING = 10


def badge_svg(label: str, status: str) -> str:
    """The badge of one command's status (green, yellow, red or unknown)."""
    colour = COLOURS.get(status, COLOURS["unknown"])
    left = len(label) * _CHAR_WIDTH + _PADDING
    right = len(status) * _CHAR_WIDTH + _PADDING
    width = left + right
    text, value = escape(label), escape(status)
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="20"'
        f' role="img" aria-label="{text}: {value}">'
        f"<title>{text}: {value}</title>"
        f'<rect width="{left}" height="20" fill="{_LABEL}"/>'
        f'<rect x="{left}" width="{right}" height="20" fill="{colour}"/>'
        '<g fill="#fff" text-anchor="middle" font-family="Verdana,DejaVu Sans,sans-serif"'
        ' font-size="11">'
        f'<text x="{left / 2:g}" y="14">{text}</text>'
        f'<text x="{left + right / 2:g}" y="14">{value}</text>'
        "</g></svg>\n"
    )
