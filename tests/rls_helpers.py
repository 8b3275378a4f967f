"""Row-level security tests' login role: superusers bypass RLS, so the PostgreSQL
tests connect as a plain role made for each test, with the usual table rights."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import psycopg
import pytest
from sqlalchemy.engine import make_url

from conftest import PG_HOST, PG_PORT, PG_USER


def connect_pg(dbname: str) -> psycopg.Connection:
    """An autocommit connection to ``dbname`` as the test suite's superuser."""
    return psycopg.connect(host=PG_HOST, port=PG_PORT, user=PG_USER, dbname=dbname, autocommit=True)


@pytest.fixture(name="tenant_url")
def tenant_url_fixture(db_url: str) -> Iterator[str]:
    """A URL of the test database for a login role that RLS applies to."""
    role = f"schedctl_tenant_{uuid.uuid4().hex[:12]}"
    dbname = str(make_url(db_url).database)
    with connect_pg("postgres") as admin:
        admin.execute(f'CREATE ROLE "{role}" LOGIN')  # type: ignore[arg-type]
    try:
        with connect_pg(dbname) as conn:
            conn.execute(
                f'GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO "{role}"'  # type: ignore[arg-type]
            )
            conn.execute(f'GRANT USAGE ON ALL SEQUENCES IN SCHEMA public TO "{role}"')  # type: ignore[arg-type]
        yield f"postgresql+psycopg://{role}@{PG_HOST}:{PG_PORT}/{dbname}"
    finally:
        with connect_pg(dbname) as conn:
            conn.execute(f'DROP OWNED BY "{role}"')  # type: ignore[arg-type]
        with connect_pg("postgres") as admin:
            admin.execute(f'DROP ROLE "{role}"')  # type: ignore[arg-type]
