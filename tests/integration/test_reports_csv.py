"""The `sql` report's CSV attachment against spreadsheet formula injection.

A text cell that a spreadsheet would run as a formula (OWASP, "CSV Injection": it
starts with ``=``, ``+``, ``-``, ``@``, a tab or a carriage return) gets a leading
single quote; numbers from numeric columns stay numbers, negative ones included.
"""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime

from schedctl.config import Settings, report_queries
from schedctl.db.database import Database
from schedctl.schedules import reports
from schedctl.schedules.model import ScheduleOptions
from schedctl.schedules.store import create_schedule

T0 = datetime(2026, 6, 1, 8, 0, tzinfo=UTC)
SLOT = datetime(2026, 6, 1, 7, 0, tzinfo=UTC)


def test_formula_text_is_quoted_and_numbers_stay_numbers(db: Database, db_url: str) -> None:
    sql = (
        "SELECT '=HYPERLINK(\"http://x.example\",\"y\")' AS formula, '+1' AS plus,"
        " '-5' AS minus_text, '@SUM(A1)' AS at, -5 AS minus_int, -1.5 AS minus_dec,"
        " 'a=b' AS inner_equals"
    )
    settings = Settings(
        database_url=db_url, reports_queries=report_queries({"cells": {"sql": sql}})
    )
    options = ScheduleOptions(
        name="Cells", kind="sql", cadence="daily", at="09:00", tz="UTC",
        to=["ops@example.com"], params=["query=cells"],
    )  # fmt: skip
    schedule = create_schedule(db, settings, 1, options, T0)

    report = reports.produce_report(settings, schedule, SLOT)

    [attachment] = report.attachments
    [header, row] = list(csv.reader(io.StringIO(attachment.content.decode("utf-8"))))
    assert header[0] == "formula"
    assert row == [
        "'=HYPERLINK(\"http://x.example\",\"y\")", "'+1", "'-5", "'@SUM(A1)", "-5", "-1.5", "a=b",
    ]  # fmt: skip
