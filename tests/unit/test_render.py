"""Mail templates: both parts render, HTML is autoescaped, text is not."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import pytest
from jinja2 import UndefinedError

from schedctl.render import (
    csv_cell,
    environment,
    render,
    render_pair,
    text_table,
)

EVIL = "<script>alert('x')</script>"


def test_one_shared_environment() -> None:
    assert environment() is environment()


def test_report_autoescapes_html_not_text() -> None:
    text, html = render_pair(
        "report", title="Accounts", columns=["name", "note"], rows=[("acme", EVIL)]
    )
    assert EVIL in text
    assert EVIL not in html
    assert "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;" in html


def test_report_table_and_footer() -> None:
    text, html = render_pair(
        "report",
        title="Active accounts",
        columns=["name", "created_at"],
        rows=[("acme", datetime(2025, 1, 6, 9, 0, 0, 123)), ("globex", None)],
        total_rows=3,
        attachment_name="active_accounts.csv",
        generated_at=datetime(2025, 1, 6, 9, 0, 5),
        unsubscribe_url="https://example.com/unsubscribe?a=1&e=b%40x.org&t=t",
    )
    assert "<th" in html
    assert html.count("<tr>") == 3
    assert '<td style="border-bottom:1px solid #eee;padding:4px 8px;">acme</td>' in html
    assert "2025-01-06 09:00:00" in html
    assert "Showing 2 of 3 rows" in html
    assert 'href="https://example.com/unsubscribe?a=1&amp;e=b%40x.org&amp;t=t"' in html
    assert "name    created_at" in text
    assert "acme    2025-01-06 09:00:00" in text
    assert "Unsubscribe: https://example.com/unsubscribe?a=1&e=b%40x.org&t=t" in text
    assert text.startswith("Active accounts\n===============\n")


def test_report_without_rows_or_unsubscribe() -> None:
    text, html = render_pair("report", title="Empty", columns=["a"], rows=[])
    assert "No rows." in text
    assert "No rows." in html
    assert "Unsubscribe" not in text
    assert "Unsubscribe" not in html


def test_digest_lists_notifications() -> None:
    notifications = [
        {"title": "Invoice paid", "body": "Invoice #12 was paid.\nThank you."},
        {"title": EVIL, "created_at": "2025-01-06 08:00"},
    ]
    text, html = render_pair(
        "digest", notifications=notifications, date_label="6 January 2025", recipient_name="Ann"
    )
    assert "Hello Ann, you have 2 new notifications." in text
    assert "* Invoice paid\n  Invoice #12 was paid.\n  Thank you." in text
    assert f"* {EVIL} (2025-01-06 08:00)" in text
    assert "Hello Ann" in html
    assert html.count("<li") == 2
    assert EVIL not in html


def test_digest_singular() -> None:
    text, _ = render_pair("digest", notifications=[{"title": "One"}])
    assert "You have 1 new notification." in text


def test_alerts_list_their_items_escaped_in_html_and_count_the_rest() -> None:
    items = [
        {"kind": "run_failed", "summary": EVIL, "at": "2026-11-18 09:00:00+00:00", "fields": []},
        {
            "kind": "quota",
            "summary": "Mail quota at 80%",
            "at": "2026-11-18 09:00:00+00:00",
            "fields": [("Used", "8"), ("Limit", "10")],
        },
    ]
    text, html = render_pair("alerts", title="schedctl: 7 new alerts", items=items, more=5)
    assert f"- [run_failed] {EVIL} (2026-11-18 09:00:00+00:00)" in text
    assert "    Used: 8\n    Limit: 10" in text
    assert "and 5 more" in text
    assert EVIL not in html
    assert html.count("<li") == 2
    assert "and 5 more" in html


def test_missing_variable_raises() -> None:
    with pytest.raises(UndefinedError):
        render_pair("report", title="x", rows=[("a",)])  # no columns


def test_unknown_template_raises() -> None:
    with pytest.raises(Exception, match="nope"):
        render("nope.txt")


def test_text_table_alignment_and_clipping() -> None:
    table = text_table([("a", 1), ("long value", None), ("x" * 60, "y")], ["col", "n"])
    lines = table.splitlines()
    assert lines[0] == "col" + " " * 39 + "n"
    assert lines[1].startswith("----")
    assert lines[2].startswith("a  ")
    assert lines[3] == "long value"
    assert lines[4].startswith("x" * 39 + "…")


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("=1+1", "'=1+1"),
        ("+41 22 000", "'+41 22 000"),
        ("-5", "'-5"),  # text, even when it looks like a number
        ("@SUM(A1)", "'@SUM(A1)"),
        ("\t=cmd", "'\t=cmd"),
        ("\r=cmd", "'\r=cmd"),
        ("plain", "plain"),
        ("a=b", "a=b"),
        ("", ""),
        (-5, "-5"),  # numbers from numeric columns stay numbers
        (-1.5, "-1.5"),
        (Decimal("-2.50"), "-2.50"),
        (None, ""),
        (datetime(2026, 1, 2, 3, 4, 5, 678, tzinfo=UTC), "2026-01-02 03:04:05+00:00"),
    ],
)
def test_csv_cell_neutralises_formula_text_only(value: object, expected: str) -> None:
    assert csv_cell(value) == expected
