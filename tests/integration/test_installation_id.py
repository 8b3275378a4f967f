"""Migration 0005 on databases that exist already: the installation id and quota reservations."""

from __future__ import annotations

import re

import pytest
import sqlalchemy as sa

from schedctl.db import migrations
from schedctl.db.database import Database
from schedctl.db.schema import installation, messages, send_counters
from schedctl.delivery import quota
from schedctl.delivery.message import make_message_id
from schedctl.delivery.outbox import installation_id
from support.cli import CliRunner
from support.delivery import T0, all_messages, enqueue_all, message


def read_installation(db_url: str) -> list[tuple[bool, str]]:
    with Database(db_url) as db:
        return db.transaction(
            lambda conn: [
                (bool(r.singleton), str(r.id)) for r in conn.execute(sa.select(installation))
            ],
            read_only=True,
        )


def test_db_upgrade_again_keeps_the_installation_id(cli: CliRunner, db_url: str) -> None:
    """A restored or re-upgraded database keeps its id (its outbox names its mail)."""
    before = read_installation(db_url)
    upgraded = cli("db", "upgrade", db_url=db_url)

    assert upgraded.returncode == 0, upgraded.stderr
    assert read_installation(db_url) == before
    [(singleton, value)] = before
    assert singleton
    assert re.fullmatch("[0-9a-f]{32}", value), value  # 128 random bits, as hex


def test_the_installation_table_holds_one_row(db_url: str) -> None:
    with (
        Database(db_url) as db,
        pytest.raises(sa.exc.IntegrityError),
        db.engine.begin() as conn,
    ):
        conn.execute(installation.insert().values(id="other", created_at=T0))


def test_upgrading_a_version_4_database_keeps_its_mail_and_counts(
    empty_db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    every = migrations.load_migrations
    with Database(empty_db_url) as db:
        monkeypatch.setattr(migrations, "load_migrations", lambda name: every(name)[:4])
        migrations.upgrade(db)
        now = db.now()
        db.transaction(
            lambda conn: conn.execute(
                sa.text("INSERT INTO send_counters (day, sent) VALUES (:day, 7)"),
                {"day": quota.quota_day(T0)},
            )
        )
        db.transaction(
            lambda conn: conn.execute(
                messages.insert().values(
                    account_id=1, type="REPORT", priority="normal", recipient="a@example.com",
                    subject="s", body_text="b", subscription=False, send_at=now,
                    status="scheduled", attempts=0, idempotency_key="old:1",
                    message_id="<minted-before@example.com>", created_at=now, updated_at=now,
                )
            )
        )  # fmt: skip
        monkeypatch.setattr(migrations, "load_migrations", every)
        applied = migrations.upgrade(db)
        counter = db.transaction(lambda conn: conn.execute(sa.select(send_counters)).one())
        install = db.transaction(installation_id)

    assert applied[0].version == 5  # and any later migrations
    assert (counter.sent, counter.reserved) == (7, 0)
    assert [m.message_id for m in all_messages(empty_db_url)] == ["<minted-before@example.com>"]
    # New mail hashes the installation id the upgrade made.
    enqueue_all(empty_db_url, [message(1)])
    minted = all_messages(empty_db_url)[-1].message_id
    assert minted == make_message_id("test:1", "example.com", installation=install)
