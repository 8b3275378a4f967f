"""Shared by the distribute tests that vary the data sources' and destinations'
engines and column types: an empty database of each engine (SQLite file, PostgreSQL,
MariaDB), a day's config over them, and schedctl run in-process on it."""

from __future__ import annotations

import email
import email.policy
import json
import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from support.databases import PostgresDatabases, pg_url
from support.distribute import destination_toml, mariadb_database

NOW = "2026-11-18T06:00:00Z"  # 12:00 in Asia/Almaty: business date 2026-11-18
ENGINES = ("sqlite", "postgresql", "mariadb")


@contextmanager
def endpoint_database(engine: str, request: pytest.FixtureRequest, path: Path) -> Iterator[str]:
    """The URL of an empty database of ``engine`` of this test's own, dropped after."""
    if engine == "sqlite":
        yield f"sqlite:///{path}"
    elif engine == "postgresql":
        databases: PostgresDatabases = request.getfixturevalue("postgres")
        name = databases.new(migrated=False)
        try:
            yield pg_url(name)
        finally:
            databases.release(name)
    else:
        with mariadb_database() as url:
            yield url


def execute(url: str, *statements: str, params: Sequence[dict[str, Any]] = ()) -> None:
    """Run DDL/DML on an endpoint; ``params`` go to the last statement (executemany)."""
    engine = sa.create_engine(url)
    try:
        with engine.begin() as conn:
            for statement in statements[:-1]:
                conn.exec_driver_sql(statement)
            conn.execute(sa.text(statements[-1]), list(params) or None)
    finally:
        engine.dispose()


def fetch(url: str, query: str) -> list[tuple[Any, ...]]:
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            return [tuple(r) for r in conn.exec_driver_sql(query)]
    finally:
        engine.dispose()


def day_config(
    path: Path,
    *,
    source_url: str,
    source_query: str,
    campaigns_url: str,
    destinations_url: str,
    extra: str = "",
) -> Path:
    """A ``[distribute]`` config: control, target and mirror tables ``sc_control``,
    ``sc_target`` and ``sc_mirror`` in one database."""
    path.write_text(
        f"""
[distribute]
tz = "Asia/Almaty"
batch_size = 7
notify = ["ops@example.com"]
{extra}

[distribute.source]
database_url = "{source_url}"
query = "{source_query}"

[distribute.campaigns]
database_url = "{campaigns_url}"
query = "select theory_id, theory_start_date, theory_end_date from theories"
"""
        + "".join(
            destination_toml(name, destinations_url, f"sc_{name}")
            for name in ("control", "target", "mirror")
        )
    )
    return path


@dataclass
class Result:
    code: int
    out: str
    err: str

    @property
    def data(self) -> dict[str, Any]:
        assert self.out.strip(), self.err
        return json.loads(self.out)  # type: ignore[no-any-return]


class InProcess:
    """`schedctl` run in this process (`schedctl.cli.run`), as cron would run it."""

    def __init__(
        self,
        monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str],
        db_url: str,
        config: Path,
        mail_dir: Path,
    ) -> None:
        self.monkeypatch = monkeypatch
        self.capsys = capsys
        self.mail_dir = mail_dir
        for name in [k for k in os.environ if k.startswith("SCHEDCTL_")]:
            monkeypatch.delenv(name)
        self.env = {
            "SCHEDCTL_DATABASE_URL": db_url,
            "SCHEDCTL_CONFIG": str(config),
            "SCHEDCTL_NOW": NOW,
            "SCHEDCTL_MAIL_BACKEND": "file",
            "SCHEDCTL_MAIL_FILE_DIR": str(mail_dir),
            "NO_COLOR": "1",
        }

    def __call__(self, *args: str, **env: str) -> Result:
        from schedctl.cli import run

        with self.monkeypatch.context() as patch:
            for name, value in {**self.env, **env}.items():
                patch.setenv(name, value)
            self.capsys.readouterr()
            code = run(list(args))
            out, err = self.capsys.readouterr()
        return Result(code, out, err)

    def mails(self) -> list[email.message.EmailMessage]:
        return [
            email.message_from_bytes(p.read_bytes(), policy=email.policy.default)  # type: ignore[misc]
            for p in sorted(self.mail_dir.glob("*.eml"))
        ]
