"""What must hold before a migration may apply, checked by `db upgrade`.

A migration that adds a constraint would fail half-way (PostgreSQL) or leave old
rows breaking it (SQLite's triggers check only new writes) if existing rows already
break it; the check names those rows instead, and nothing is applied.
"""

from __future__ import annotations

from dataclasses import dataclass

import sqlalchemy as sa

from schedctl.errors import SchemaMismatch

# Shown per broken rule: at most this many row ids, then "…".
SHOWN_IDS = 10


@dataclass(frozen=True)
class Reference:
    """``child.column`` refers to a row of ``parent``; both carry ``account_id``."""

    child: str
    column: str
    parent: str

    def violations(self) -> sa.TextClause:
        return sa.text(
            f"SELECT c.id FROM {self.child} c JOIN {self.parent} p ON p.id = c.{self.column}"
            " WHERE p.account_id <> c.account_id ORDER BY c.id"
        )


# Every reference between account-owned rows (SPEC §13), as 0010_tenancy enforces.
ACCOUNT_REFERENCES = (
    Reference("schedule_runs", "schedule_id", "schedules"),
    Reference("messages", "schedule_run_id", "schedule_runs"),
    Reference("messages", "event_id", "events"),
    Reference("email_log", "message_id", "messages"),
    Reference("digests", "user_id", "users"),
    Reference("digests", "message_id", "messages"),
    Reference("notifications", "user_id", "users"),
    Reference("notifications", "digest_id", "digests"),
    Reference("notifications", "message_id", "messages"),
)

_CHECKS: dict[int, tuple[Reference, ...]] = {10: ACCOUNT_REFERENCES}


def check_before(conn: sa.Connection, version: int, name: str) -> None:
    """Refuse (SchemaMismatch, exit 2) to apply migration ``version`` over rows it forbids."""
    problems = []
    for reference in _CHECKS.get(version, ()):
        ids = [row[0] for row in conn.execute(reference.violations()).fetchmany(SHOWN_IDS + 1)]
        if ids:
            shown = ", ".join(str(i) for i in ids[:SHOWN_IDS])
            more = ", …" if len(ids) > SHOWN_IDS else ""
            problems.append(
                f"{reference.child} {shown}{more} refer through {reference.column}"
                f" to a {reference.parent} row of another account"
            )
    if problems:
        raise SchemaMismatch(
            f"migration {version:04d}_{name} not applied: {'; '.join(problems)};"
            " delete or correct these rows, then run `schedctl db upgrade` again"
        )
