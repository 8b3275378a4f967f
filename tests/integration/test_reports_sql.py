"""The built-in `sql` report kind against real databases (SPEC §4)."""

from __future__ import annotations

import csv
import io
import sqlite3
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from schedctl.config import Settings
from schedctl.db.database import Database
from schedctl.db.schema import accounts
from schedctl.errors import ConfigError, ValidationError
from schedctl.schedules import reports
from schedctl.schedules.model import Schedule, ScheduleOptions
from schedctl.schedules.store import create_schedule
from support.delivery import load_with

T0 = datetime(2026, 6, 1, 8, 0, tzinfo=UTC)
# Dialect-independent logic: SQLite only, to keep PostgreSQL for the SQL that differs.
sqlite_only = pytest.mark.parametrize("dialect", ["sqlite"])

SLOT = datetime(2026, 6, 1, 7, 0, tzinfo=UTC)  # 09:00 in Berlin
COUNT_TO = "WITH RECURSIVE r(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM r WHERE n < {}) "


def settings_with(db_url: str, **queries: dict[str, Any]) -> Settings:
    return load_with({"reports": {"queries": queries}}, database_url=db_url)


def produce(db: Database, settings: Settings, query: str, **params: str) -> reports.Report:
    options = ScheduleOptions(
        name="Weekly numbers",
        kind="sql",
        cadence="daily",
        at="09:00",
        tz="Europe/Berlin",
        to=["ops@example.com"],
        params=[f"query={query}", *(f"{k}={v}" for k, v in params.items())],
    )
    schedule: Schedule = create_schedule(db, settings, 1, options, T0)
    return reports.produce_report(settings, schedule, SLOT)


def csv_rows(report: reports.Report) -> list[list[str]]:
    [attachment] = report.attachments
    assert attachment.content_type == "text/csv"
    return list(csv.reader(io.StringIO(attachment.content.decode("utf-8"))))


def test_a_query_becomes_an_escaped_html_table_and_a_csv(db: Database, db_url: str) -> None:
    sql = "SELECT '<script>alert(1)</script>' AS label, 42 AS n"
    settings = settings_with(db_url, numbers={"sql": sql, "title": "Numbers & more"})
    report = produce(db, settings, "numbers")
    assert report.subject == "Numbers & more (2026-06-01)"
    assert report.html is not None
    assert "<script>" not in report.html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in report.html
    assert "Numbers &amp; more" in report.html
    assert "<script>alert(1)</script>" in report.text  # the text part is verbatim
    assert "Scheduled for 2026-06-01 09:00 Europe/Berlin" in report.text
    assert csv_rows(report) == [["label", "n"], ["<script>alert(1)</script>", "42"]]
    assert report.attachments[0].filename == "numbers-2026-06-01.csv"


@sqlite_only
def test_the_subject_param_overrides_the_title(db: Database, db_url: str) -> None:
    settings = settings_with(db_url, q={"sql": "SELECT 1 AS one", "title": "T"})
    assert produce(db, settings, "q", subject="Board pack").subject == "Board pack (2026-06-01)"


def test_rows_are_bounded(db: Database, db_url: str) -> None:
    sql = COUNT_TO.format(reports.MAX_ROWS + 5) + "SELECT n FROM r"
    report = produce(db, settings_with(db_url, big={"sql": sql}), "big")
    assert len(csv_rows(report)) == reports.MAX_ROWS + 1  # with the header
    assert report.html is not None
    assert report.html.count("<tr>") == reports.HTML_ROWS + 1
    assert f"more than {reports.MAX_ROWS} rows" in report.text


def test_the_query_can_use_the_slot_and_schedule(db: Database, db_url: str) -> None:
    sql = "SELECT :schedule_id AS schedule_id, :account_id AS account_id, :slot AS slot"
    report = produce(db, settings_with(db_url, binds={"sql": sql}), "binds")
    [_, row] = csv_rows(report)
    assert row[:2] == ["1", "1"]
    assert row[2].startswith("2026-06-01")


@pytest.mark.parametrize(
    "sql",
    [
        "INSERT INTO accounts (name, created_at) VALUES ('evil', '2026-01-01')",
        "UPDATE accounts SET name = 'x'",
        "CREATE TABLE t (a int)",
    ],
)
def test_the_query_runs_read_only(db: Database, db_url: str, sql: str) -> None:
    settings = settings_with(db_url, evil={"sql": sql})
    with pytest.raises(reports.ReportFailed, match=r"evil.*read-?only"):
        produce(db, settings, "evil")
    names = db.transaction(lambda c: c.execute(sa.select(accounts.c.name)).scalars().all())
    assert names == ["default"]


@pytest.mark.postgres
@pytest.mark.parametrize("dialect", ["postgresql"])
def test_a_slow_query_hits_the_statement_timeout(db: Database, db_url: str) -> None:
    slow = "SELECT count(*) FROM generate_series(1, 1000000000)"
    settings = settings_with(db_url, slow={"sql": slow, "timeout": "1s"})
    with pytest.raises(reports.ReportFailed, match=r"statement timeout|after its timeout"):
        produce(db, settings, "slow")


@sqlite_only
def test_a_query_may_read_another_database(db: Database, db_url: str, tmp_path: Path) -> None:
    source = tmp_path / "warehouse.db"
    with sqlite3.connect(source) as conn:
        conn.execute("CREATE TABLE sales (region TEXT, total INTEGER)")
        conn.executemany("INSERT INTO sales VALUES (?, ?)", [("north", 3), ("south", 5)])
    conn.close()
    query = {"sql": "SELECT region, total FROM sales ORDER BY region"}
    settings = settings_with(db_url, sales={**query, "database_url": f"sqlite:///{source}"})
    report = produce(db, settings, "sales")
    assert csv_rows(report) == [["region", "total"], ["north", "3"], ["south", "5"]]


@sqlite_only
def test_a_source_database_password_never_shows_in_the_error(db: Database, db_url: str) -> None:
    url = "postgresql://reporter:Sup3r-Secret-pw@127.0.0.1:1/warehouse"
    settings = settings_with(db_url, remote={"sql": "SELECT 1", "database_url": url})
    with pytest.raises(reports.ReportFailed) as caught:
        produce(db, settings, "remote")
    assert "remote" in caught.value.message
    assert "Sup3r-Secret-pw" not in caught.value.message


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ({"title": "no sql"}, "needs sql"),
        ({"sql": ""}, r"\[reports.queries.q\] sql: must be a non-empty string"),
        ({"sql": "SELECT 1", "colour": "red"}, r"unknown setting \[reports.queries.q\] colour"),
        ({"sql": "SELECT :nope"}, "unknown parameter"),
        ({"sql": "SELECT 1", "timeout": "soon"}, "invalid duration"),
        ({"sql": "SELECT 1", "database_url": "mongodb://x"}, "unsupported database"),
    ],
)
def test_malformed_query_config_is_a_config_error(query: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message) as caught:
        reports.validate_params(settings_with("sqlite://", q=query), "sql", {"query": "q"})
    assert caught.value.exit_code == 2


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({}, "needs --param query"),
        ({"query": "missing"}, "no report query 'missing'"),
        ({"query": "q", "colour": "red"}, "unknown --param colour"),
    ],
)
def test_sql_params_are_checked(params: dict[str, str], message: str) -> None:
    settings = settings_with("sqlite://", q={"sql": "SELECT 1"})
    with pytest.raises(ValidationError, match=message):
        reports.validate_params(settings, "sql", params)


def test_unknown_kinds_are_refused() -> None:
    with pytest.raises(ValidationError, match=r"unknown report kind 'pdf'.*sql"):
        reports.validate_params(Settings(), "pdf", {})
