"""Shared by the distribute tests: real MariaDB and PostgreSQL databases of their own,
the seed's tables, and an independent model of SPEC §6's assignment.

The model recomputes from the spec what every destination table must hold -- the
de-duplicated IDs ordered by HMAC-SHA256 keyed by the date (and salt), split evenly
among the active campaigns and then their groups -- so a test compares what
`schedctl distribute` wrote against it, not against another run of the same code.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import uuid
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date
from typing import Any

import pymysql
import pytest
import sqlalchemy as sa

MYSQL_HOST = os.environ.get("MYSQL_HOST", "127.0.0.1")
MYSQL_PORT = int(os.environ.get("MYSQL_PORT", "3306"))
REQUIRE_SERVERS = os.environ.get("SCHEDCTL_TEST_REQUIRE_POSTGRES") == "1"

GROUPS = ("A", "B", "C", "D", "E")
CONTROL = ("A",)


def _mysql_admin() -> pymysql.Connection[Any]:
    return pymysql.connect(
        host=MYSQL_HOST, port=MYSQL_PORT, user="root", password="", connect_timeout=5
    )


def mariadb_url(database: str) -> str:
    return f"mysql+pymysql://root@{MYSQL_HOST}:{MYSQL_PORT}/{database}"


@contextmanager
def mariadb_database() -> Iterator[str]:
    """A fresh MariaDB database of this test's own (its URL), dropped afterwards."""
    try:
        admin = _mysql_admin()
    except pymysql.err.OperationalError as exc:
        reason = f"MariaDB not reachable at {MYSQL_HOST}:{MYSQL_PORT}: {exc}"
        if REQUIRE_SERVERS:
            pytest.fail(reason)
        pytest.skip(reason)
    name = f"schedctl_t_{uuid.uuid4().hex[:12]}"
    with admin.cursor() as cursor:
        cursor.execute(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4")
    try:
        yield mariadb_url(name)
    finally:
        with admin.cursor() as cursor:
            cursor.execute(f"DROP DATABASE IF EXISTS `{name}`")
        admin.close()


def seed_table(engine: sa.Engine, name: str, *, extras: Sequence[str] = ("tab1", "tab2")) -> None:
    """A destination table as the seed has them (no unique key), indexed on the ID."""
    columns = ", ".join(f"{e} VARCHAR(255)" for e in extras)
    with engine.begin() as conn:
        conn.exec_driver_sql(
            f"CREATE TABLE {name} (iin VARCHAR(50), theory_id VARCHAR(50), date_start DATE,"
            f" date_end DATE, insert_datetime TIMESTAMP{', ' + columns if columns else ''})"
        )
        conn.exec_driver_sql(f"CREATE INDEX {name}_iin ON {name} (iin)")


def destination_toml(name: str, url: str, table: str) -> str:
    return f"""
[distribute.{name}]
database_url = "{url}"
table = "{table}"
columns = {{ id = "iin", group_id = "theory_id", date_start = "date_start", \
date_end = "date_end", inserted_at = "insert_datetime" }}
"""


@dataclass(frozen=True)
class Campaign:
    id: str
    start: date
    end: date


def expected_rows(
    ids_with_extras: dict[str, tuple[Any, ...]],
    day: date,
    campaigns: Sequence[Campaign],
    *,
    salt: str | None = None,
    groups: Sequence[str] = GROUPS,
    control: Sequence[str] = CONTROL,
    fmt: str = "{campaign}.{n}",
) -> dict[str, Counter[tuple[Any, ...]]]:
    """SPEC §6 computed independently: {"control"|"target": Counter of rows}, a row
    being (id, group id, date start, date end, *extras)."""
    active = sorted((c for c in campaigns if c.start <= day <= c.end), key=lambda c: c.id)
    key = hashlib.sha256(
        b"\0".join([b"schedctl-distribute-v1", day.isoformat().encode(), (salt or "").encode()])
    ).digest()
    ordered = sorted(
        ids_with_extras,
        key=lambda i: (hmac.new(key, i.encode(), hashlib.sha256).digest(), i),
    )
    out: dict[str, Counter[tuple[Any, ...]]] = {"control": Counter(), "target": Counter()}
    position = 0
    for campaign, share in zip(active, _split(len(ordered), len(active)), strict=True):
        for n, (group, size) in enumerate(zip(groups, _split(share, len(groups)), strict=True), 1):
            gid = fmt.format(campaign=campaign.id, n=n, group=group)
            where = out["control" if group in control else "target"]
            for user in ordered[position : position + size]:
                where[(user, gid, campaign.start, campaign.end, *ids_with_extras[user])] += 1
            position += size
    return out


def _split(n: int, k: int) -> list[int]:
    base, remainder = divmod(n, k)
    return [base] * (k - remainder) + [base + 1] * remainder


def table_rows(
    engine: sa.Engine, table: str, extras: Sequence[str] = ("tab1", "tab2")
) -> Counter[tuple[Any, ...]]:
    """A destination table's rows as the model writes them."""
    columns = ", ".join(["iin", "theory_id", "date_start", "date_end", *extras])
    with engine.connect() as conn:
        return Counter(tuple(r) for r in conn.exec_driver_sql(f"SELECT {columns} FROM {table}"))
