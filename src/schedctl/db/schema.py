"""Table metadata: what the code expects the migrations in ``sql/`` to have built.

The schema itself is created only by the SQL migrations; this metadata is used to
build queries and, in the tests, to prove each dialect's migrations match it.
"""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

from schedctl.db.types import UTCDateTime

metadata = sa.MetaData()

# Integer keys: BIGINT identity on PostgreSQL, SQLite's rowid alias elsewhere.
Id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
Json = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")

schema_migrations = sa.Table(
    "schema_migrations",
    metadata,
    sa.Column("version", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("name", sa.Text, nullable=False),
    sa.Column("checksum", sa.Text, nullable=False),
    sa.Column("applied_at", UTCDateTime, nullable=False),
)

accounts = sa.Table(
    "accounts",
    metadata,
    sa.Column("id", Id, primary_key=True),
    sa.Column("name", sa.Text, nullable=False, unique=True),
    sa.Column("created_at", UTCDateTime, nullable=False),
)

heartbeats = sa.Table(
    "heartbeats",
    metadata,
    sa.Column("id", Id, primary_key=True),
    sa.Column("command", sa.Text, nullable=False),
    sa.Column("host", sa.Text, nullable=False),
    sa.Column("pid", sa.Integer, nullable=False),
    sa.Column("version", sa.Text, nullable=False),
    sa.Column("started_at", UTCDateTime, nullable=False),
    sa.Column("finished_at", UTCDateTime),
    # running | success | failed (items failed) | error (usage/config) | temporary
    sa.Column("outcome", sa.Text, nullable=False),
    sa.Column("exit_code", sa.Integer),
    sa.Column("counts", Json),
    sa.Index("heartbeats_command_outcome_finished", "command", "outcome", "finished_at"),
)
