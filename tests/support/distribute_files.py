"""The distribute day the CLI tests run: source, campaigns and destinations as SQLite
files (the cross-engine day is in test_distribute_day.py), for the ``files`` fixture.
Shared by test_distribute_cli.py and test_reconcile_mirror.py."""

from __future__ import annotations

import email
import email.policy
import random
import sqlite3
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

from support.cli import Result
from support.distribute import Campaign, destination_toml

NOW = "2026-11-18T06:00:00Z"  # 12:00 in Asia/Almaty: business date 2026-11-18
DAY = date(2026, 11, 18)
CAMPAIGNS = [
    Campaign("SC00000001", date(2026, 11, 1), date(2026, 11, 30)),
    Campaign("SC00000002", date(2026, 11, 18), date(2026, 11, 18)),
    Campaign("SC00000003", date(2026, 10, 1), date(2026, 10, 31)),  # over by then
]


@dataclass
class Files:
    tmp: Path
    db_url: str
    ids: dict[str, tuple[Any, ...]]
    cli: Callable[..., Result]  # how `run` runs schedctl: the cli fixture, in-process

    def path(self, name: str) -> Path:
        return self.tmp / f"{name}.db"

    def config(self, extra: str = "", **tables: str) -> Path:
        parts = {
            "source": f"""
[distribute.source]
database_url = "sqlite:///{self.path("source")}"
query = "select iin, tab1, tab2 from sc_1_120 where count_day = 5"
""",
            "campaigns": f"""
[distribute.campaigns]
database_url = "sqlite:///{self.path("dssb")}"
query = "select theory_id, theory_start_date, theory_end_date from theories"
""",
            "control": destination_toml("control", f"sqlite:///{self.path('dssb')}", "sc_control"),
            "target": destination_toml("target", f"sqlite:///{self.path('dssb')}", "sc_target"),
            "mirror": destination_toml("mirror", f"sqlite:///{self.path('spss')}", "sc_mirror"),
        }
        parts.update(tables)
        path = self.tmp / "schedctl.toml"
        header = {"tz": '"Asia/Almaty"', "batch_size": "37", "notify": '["ops@example.com"]'}
        lines = [f"{k} = {v}" for k, v in header.items() if not extra.startswith(f"{k} ")]
        path.write_text("\n".join(["[distribute]", *lines, extra, *parts.values()]))
        return path

    def run(self, *args: str, config: Path | None = None, **env: str) -> Any:
        full = {
            "SCHEDCTL_CONFIG": str(config or self.config()),
            "SCHEDCTL_NOW": NOW,
            "SCHEDCTL_MAIL_BACKEND": "file",
            "SCHEDCTL_MAIL_FILE_DIR": str(self.tmp / "mail"),
            **env,
        }
        return self.cli("distribute", *args, db_url=self.db_url, env=full, timeout=120)

    def rows(self, name: str, table: str) -> list[tuple[Any, ...]]:
        with sqlite3.connect(self.path(name)) as conn:
            return conn.execute(
                f"SELECT iin, theory_id, date_start, date_end, tab1, tab2 FROM {table}"
            ).fetchall()

    def counts(self) -> dict[str, int]:
        found = {}
        for name, tables in (
            ("source", ["sc_1_120"]),
            ("dssb", ["theories", "sc_control", "sc_target"]),
            ("spss", ["sc_mirror"]),
        ):
            with sqlite3.connect(self.path(name)) as conn:
                for table in tables:
                    found[table] = conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
        return found

    def mails(self) -> list[email.message.EmailMessage]:
        return [
            email.message_from_bytes(p.read_bytes(), policy=email.policy.default)  # type: ignore[misc]
            for p in sorted((self.tmp / "mail").glob("*.eml"))
        ]


def _table(conn: sqlite3.Connection, name: str) -> None:
    conn.execute(
        f"CREATE TABLE {name} (iin TEXT, theory_id TEXT, date_start DATE, date_end DATE,"
        " insert_datetime TIMESTAMP, tab1 TEXT, tab2 TEXT)"
    )


def make_files(
    db_url: str,
    tmp_path: Path,
    cli: Callable[..., Result],
    campaigns: Sequence[Campaign] = CAMPAIGNS,
) -> Files:
    """The day's source, campaigns and destinations (the ``files`` fixture); other
    ``campaigns`` for a day other than DAY."""
    rng = random.Random(5)
    ids = {f"{rng.randrange(10**11, 10**12)}": (f"t{n % 7}", None) for n in range(400)}
    with sqlite3.connect(tmp_path / "source.db") as conn:
        conn.execute("CREATE TABLE sc_1_120 (iin TEXT, count_day INT, tab1 TEXT, tab2 TEXT)")
        rows = [(i, 5, *e) for i, e in ids.items()]
        conn.executemany("INSERT INTO sc_1_120 VALUES (?, ?, ?, ?)", rows + rows[:50])
    with sqlite3.connect(tmp_path / "dssb.db") as conn:
        conn.execute("CREATE TABLE theories (theory_id TEXT, theory_start_date, theory_end_date)")
        conn.executemany(
            "INSERT INTO theories VALUES (?, ?, ?)",
            [(c.id, c.start.isoformat(), c.end.isoformat()) for c in campaigns],
        )
        _table(conn, "sc_control")
        _table(conn, "sc_target")
    with sqlite3.connect(tmp_path / "spss.db") as conn:
        _table(conn, "sc_mirror")
    return Files(tmp_path, db_url, ids, cli)


def store(files: Files, query: str) -> list[tuple[Any, ...]]:
    import sqlalchemy as sa

    engine = sa.create_engine(files.db_url)
    try:
        with engine.connect() as conn:
            return [tuple(r) for r in conn.exec_driver_sql(query)]
    finally:
        engine.dispose()
