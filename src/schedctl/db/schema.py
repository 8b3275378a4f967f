"""Table metadata: what the code expects the migrations in ``sql/`` to have built.

The schema itself is created only by the SQL migrations; this metadata is used to
build queries and, in the tests, to prove each dialect's migrations match it.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Dialect

from schedctl.db.types import UTCDateTime

metadata = sa.MetaData()

# Integer keys: BIGINT identity on PostgreSQL, an AUTOINCREMENT rowid on SQLite; on
# neither is a deleted row's id ever handed out again (keys are built from ids).
Id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


class _Json(sa.types.TypeDecorator[Any]):
    """JSON; ``jsonb`` on PostgreSQL, whose dialect package is imported only by a
    process that uses it (a SQLite process's start-up is spared it)."""

    impl = sa.JSON
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> sa.types.TypeEngine[Any]:
        if dialect.name == "postgresql":
            from sqlalchemy.dialects.postgresql import JSONB

            return dialect.type_descriptor(JSONB())
        return dialect.type_descriptor(sa.JSON())


Json = _Json()


def partial_index(
    name: str,
    *columns: str,
    where: str,
    unique: bool = False,
    dialects: tuple[str, ...] = ("postgresql", "sqlite"),
) -> sa.Index:
    """An index over the rows matching ``where`` (SQL, the same on both dialects),
    built by the migrations of ``dialects``.

    The predicate is kept in ``info["where"]`` rather than as the dialects'
    ``*_where`` options, which would import both dialect packages into every process;
    the migrations build the index, and a test compares their predicate with this.
    """
    return sa.Index(name, *columns, unique=unique, info={"where": where, "dialects": dialects})


schema_migrations = sa.Table(
    "schema_migrations",
    metadata,
    sa.Column("version", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("name", sa.Text, nullable=False),
    sa.Column("checksum", sa.Text, nullable=False),
    sa.Column("applied_at", UTCDateTime, nullable=False),
)

# One row: this database's random id, made by migration 0005 (Message-IDs hash it).
installation = sa.Table(
    "installation",
    metadata,
    sa.Column("singleton", sa.Boolean, primary_key=True, server_default=sa.true()),
    sa.Column("id", sa.Text, nullable=False),
    sa.Column("created_at", UTCDateTime, nullable=False),
)

accounts = sa.Table(
    "accounts",
    metadata,
    sa.Column("id", Id, primary_key=True),
    sa.Column("name", sa.Text, nullable=False, unique=True),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sqlite_autoincrement=True,
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
    # started_at and finished_at are the database's clock; this is the SCHEDCTL_NOW
    # instant the command ran under (NULL: the real clock).
    sa.Column("simulated_now", UTCDateTime),
    sa.Index("heartbeats_command_outcome_finished", "command", "outcome", "finished_at"),
    sa.Index("heartbeats_started", "started_at"),  # reconcile's purge
    sqlite_autoincrement=True,
)

# --- Schedules and runs (SPEC §3, §4) ------------------------------------------------

schedules = sa.Table(
    "schedules",
    metadata,
    sa.Column("id", Id, primary_key=True),
    sa.Column("account_id", Id, sa.ForeignKey("accounts.id"), nullable=False),
    sa.Column("name", sa.Text, nullable=False),
    sa.Column("kind", sa.Text, nullable=False),  # report kind: "sql" or a plugin's name
    sa.Column("cadence", sa.Text, nullable=False),  # daily | weekly | monthly | cron
    sa.Column("at_time", sa.Text),  # local HH:MM
    sa.Column("weekday", sa.Integer),  # 0 = Monday
    sa.Column("day_of_month", sa.Text),  # "1".."31" | "last"
    sa.Column("cron", sa.Text),
    sa.Column("tz", sa.Text, nullable=False),
    sa.Column("recipients", Json, nullable=False),  # list of e-mail addresses
    sa.Column("params", Json, nullable=False),  # dict of string -> string
    sa.Column("active", sa.Boolean, nullable=False),
    sa.Column("catchup", sa.Text, nullable=False),  # latest | all | none
    sa.Column("max_lateness_s", sa.Integer),
    sa.Column("next_run_at", UTCDateTime),
    sa.Column("last_run_at", UTCDateTime),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("updated_at", UTCDateTime, nullable=False),
    # The IANA release (e.g. "2026a") of the zone data that computed next_run_at;
    # NULL when unknown (computed before it was recorded) or next_run_at is NULL.
    sa.Column("tzdata_version", sa.Text),
    sa.UniqueConstraint("account_id", "name", name="schedules_account_name_key"),
    sa.Index("schedules_due", "active", "next_run_at"),
    # A tick finds the next_run_at computed under other zone data (another release).
    partial_index(
        "schedules_tzdata_version",
        "tzdata_version",
        where="next_run_at IS NOT NULL",
    ),
    sa.UniqueConstraint("id", "account_id", name="schedules_id_account_key"),
    sqlite_autoincrement=True,
)

schedule_runs = sa.Table(
    "schedule_runs",
    metadata,
    sa.Column("id", Id, primary_key=True),
    sa.Column("account_id", Id, sa.ForeignKey("accounts.id"), nullable=False),
    sa.Column("schedule_id", Id, nullable=False),
    sa.Column("slot", UTCDateTime, nullable=False),  # the UTC instant the run was due
    sa.Column("manual", sa.Boolean, nullable=False),
    # queued | running | succeeded | failed | skipped
    sa.Column("status", sa.Text, nullable=False),
    sa.Column("attempt", sa.Integer, nullable=False),
    sa.Column("lease_owner", sa.Text),
    sa.Column("lease_expires_at", UTCDateTime),
    sa.Column("next_attempt_at", UTCDateTime),  # when a failed run may be retried
    sa.Column("started_at", UTCDateTime),
    sa.Column("finished_at", UTCDateTime),
    sa.Column("error", sa.Text),
    sa.Column("created_at", UTCDateTime, nullable=False),
    # One run per due slot; manual runs (send-now --schedule) are not slots.
    partial_index(
        "schedule_runs_schedule_slot",
        "schedule_id",
        "slot",
        unique=True,
        where="NOT manual",
    ),
    sa.Index("schedule_runs_claim", "status", "lease_expires_at"),
    # `schedules runs ID` reads one schedule's history, newest slot first.
    sa.Index("schedule_runs_history", "schedule_id", "slot"),
    sa.Index("schedule_runs_finished", "finished_at"),  # reconcile's purge
    sa.ForeignKeyConstraint(
        ["schedule_id", "account_id"],
        ["schedules.id", "schedules.account_id"],
        ondelete="CASCADE",
        name="schedule_runs_schedule_fkey",
    ),
    sa.UniqueConstraint("id", "account_id", name="schedule_runs_id_account_key"),
    sqlite_autoincrement=True,
)

# --- Outbox and delivery (SPEC §5 quota, §7) ----------------------------------------

messages = sa.Table(
    "messages",
    metadata,
    sa.Column("id", Id, primary_key=True),
    sa.Column("account_id", Id, sa.ForeignKey("accounts.id"), nullable=False),
    sa.Column("type", sa.Text, nullable=False),  # REPORT, DIGEST, ALERT, INIT, REMINDER...
    sa.Column("priority", sa.Text, nullable=False),  # normal | critical
    sa.Column("recipient", sa.Text),  # NULL: nothing to send to (MISSING_RECIPIENT)
    sa.Column("subject", sa.Text, nullable=False),
    sa.Column("body_text", sa.Text, nullable=False),
    sa.Column("body_html", sa.Text),
    sa.Column("attachments", Json),  # [{"filename", "content_type", "content_b64"}]
    sa.Column("subscription", sa.Boolean, nullable=False),  # carries unsubscribe headers
    sa.Column("send_at", UTCDateTime, nullable=False),
    # scheduled | paused | blocked | retrying | sent | failed | skipped
    sa.Column("status", sa.Text, nullable=False),
    sa.Column("reason_code", sa.Text),
    sa.Column("attempts", sa.Integer, nullable=False),
    sa.Column("next_attempt_at", UTCDateTime),
    sa.Column("lease_owner", sa.Text),
    sa.Column("lease_expires_at", UTCDateTime),
    sa.Column("idempotency_key", sa.Text, nullable=False, unique=True),
    sa.Column("message_id", sa.Text, nullable=False),  # the RFC 5322 Message-ID
    sa.Column("schedule_run_id", Id),
    sa.Column("event_id", Id),
    sa.Column("sent_at", UTCDateTime),
    sa.Column("last_error", sa.Text),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("updated_at", UTCDateTime, nullable=False),
    sa.Column("expires_at", UTCDateTime),  # not sent by then: skipped, EXPIRED (NULL: never)
    sa.Index("messages_due", "status", "send_at"),
    sa.Index("messages_status_type", "status", "type"),  # metrics: the outbox by status, type
    sa.Index("messages_schedule_run", "schedule_run_id"),  # a run's purge sets it NULL
    # The claim, in its order (outbox.claimable; SQLite reads messages_due in order),
    # and leases.recover: the rows leased now, few whatever the outbox's size (0017).
    partial_index(
        "messages_claimable",
        "send_at",
        "id",
        where="status IN ('scheduled', 'retrying') AND lease_expires_at IS NULL",
        dialects=("postgresql",),
    ),
    partial_index(
        "messages_leased", "status", "lease_expires_at", where="lease_expires_at IS NOT NULL"
    ),
    partial_index(
        "messages_event_type",
        "event_id",
        "type",
        unique=True,
        where="event_id IS NOT NULL",
    ),
    sa.ForeignKeyConstraint(
        ["schedule_run_id", "account_id"],
        ["schedule_runs.id", "schedule_runs.account_id"],
        ondelete="SET NULL (schedule_run_id)",
        name="messages_schedule_run_fkey",
    ),
    sa.ForeignKeyConstraint(
        ["event_id", "account_id"],
        ["events.id", "events.account_id"],
        ondelete="CASCADE",
        name="messages_event_fkey",
    ),
    sa.UniqueConstraint("id", "account_id", name="messages_id_account_key"),
    sqlite_autoincrement=True,
)

email_log = sa.Table(
    "email_log",
    metadata,
    sa.Column("id", Id, primary_key=True),
    sa.Column("account_id", Id, sa.ForeignKey("accounts.id"), nullable=False),
    sa.Column("message_id", Id),
    sa.Column("provider", sa.Text, nullable=False),
    sa.Column("recipients", sa.Text, nullable=False),
    sa.Column("outcome", sa.Text, nullable=False),  # sent | retry | failed | deferred | unknown
    sa.Column("response_code", sa.Integer),
    sa.Column("error", sa.Text),
    sa.Column("attempted_at", UTCDateTime, nullable=False),
    sa.Index("email_log_message", "message_id"),
    sa.Index("email_log_attempted", "attempted_at"),  # reconcile's snapshot and purge
    sa.ForeignKeyConstraint(
        ["message_id", "account_id"],
        ["messages.id", "messages.account_id"],
        ondelete="SET NULL (message_id)",
        name="email_log_message_fkey",
    ),
    sqlite_autoincrement=True,
)

suppressions = sa.Table(
    "suppressions",
    metadata,
    sa.Column("id", Id, primary_key=True),
    sa.Column("account_id", Id, sa.ForeignKey("accounts.id"), nullable=False),
    sa.Column("email", sa.Text, nullable=False),  # normalised (validate_email)
    sa.Column("reason", sa.Text, nullable=False),  # unsubscribe | manual | bounce
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.UniqueConstraint("account_id", "email", name="suppressions_account_email_key"),
    sqlite_autoincrement=True,
)

send_counters = sa.Table(
    "send_counters",
    metadata,
    sa.Column("day", sa.Text, primary_key=True),  # UTC date YYYY-MM-DD
    sa.Column("sent", sa.Integer, nullable=False),  # normal mail handed over to the server
    # Units held by sends in progress; the limit applies to sent + reserved.
    sa.Column("reserved", sa.Integer, nullable=False, server_default=sa.text("0")),
)

# Login roles bound to one account: their sessions see only its rows (SPEC §13). An
# account with a role bound to it cannot be deleted (RESTRICT: see sql/postgresql/0020).
account_roles = sa.Table(
    "account_roles",
    metadata,
    sa.Column("role_name", sa.Text, primary_key=True),
    sa.Column("account_id", Id, sa.ForeignKey("accounts.id", ondelete="RESTRICT"), nullable=False),
)

quota_alerts = sa.Table(
    "quota_alerts",
    metadata,
    sa.Column("day", sa.Text, primary_key=True),
    sa.Column("threshold", sa.Integer, primary_key=True, autoincrement=False),  # 80 | 90 | 100
    sa.Column("sent_at", UTCDateTime, nullable=False),
)


def quarantine_columns() -> list[sa.Column[Any]]:
    """A table applications write: a row schedctl could not read or render is set
    aside (schedctl.quarantine) with when and why."""
    return [sa.Column("quarantined_at", UTCDateTime), sa.Column("quarantine_reason", sa.Text)]


events = sa.Table(
    "events",
    metadata,
    sa.Column("id", Id, primary_key=True),
    sa.Column("account_id", Id, sa.ForeignKey("accounts.id"), nullable=False),
    sa.Column("name", sa.Text, nullable=False),
    sa.Column("starts_at", UTCDateTime, nullable=False),
    sa.Column("load_in_time", UTCDateTime),
    sa.Column("contact", sa.Text),
    sa.Column("tz", sa.Text, nullable=False),
    sa.Column("planned_at", UTCDateTime),  # NULL or < updated_at: tick (re)plans it
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("updated_at", UTCDateTime, nullable=False),
    *quarantine_columns(),
    sa.UniqueConstraint("id", "account_id", name="events_id_account_key"),
    sqlite_autoincrement=True,
)

# --- Users, notifications and digests (SPEC §5) -------------------------------------

# Instants the database fills in when an application inserts a row without them (the
# SQLite migration writes the same fixed-width UTC text UTCDateTime writes).
_NOW_DEFAULT = sa.text("CURRENT_TIMESTAMP")

users = sa.Table(
    "users",
    metadata,
    sa.Column("id", Id, primary_key=True),
    sa.Column("account_id", Id, sa.ForeignKey("accounts.id"), nullable=False),
    sa.Column("email", sa.Text, nullable=False),  # normalised (validate_email)
    sa.Column("tz", sa.Text, nullable=False, server_default=sa.text("'UTC'")),
    sa.Column("digest_enabled", sa.Boolean, nullable=False, server_default=sa.true()),
    sa.Column("digest_time", sa.Text, nullable=False, server_default=sa.text("'08:00'")),
    sa.Column("created_at", UTCDateTime, nullable=False, server_default=_NOW_DEFAULT),
    sa.Column("updated_at", UTCDateTime, nullable=False, server_default=_NOW_DEFAULT),
    *quarantine_columns(),
    sa.UniqueConstraint("account_id", "email", name="users_account_email_key"),
    sa.UniqueConstraint("id", "account_id", name="users_id_account_key"),
    sqlite_autoincrement=True,
)

# The digest's tracking: one row per (user, local day) it claimed.
digests = sa.Table(
    "digests",
    metadata,
    sa.Column("id", Id, primary_key=True),
    sa.Column("account_id", Id, sa.ForeignKey("accounts.id"), nullable=False),
    sa.Column("user_id", Id, nullable=False),
    sa.Column("local_date", sa.Date, nullable=False),  # the user's local day
    sa.Column("status", sa.Text, nullable=False),
    sa.Column("items", sa.Integer, nullable=False, server_default=sa.text("0")),
    sa.Column("message_id", Id),
    sa.Column("created_at", UTCDateTime, nullable=False, server_default=_NOW_DEFAULT),
    sa.Column("updated_at", UTCDateTime, nullable=False, server_default=_NOW_DEFAULT),
    sa.Column("expires_at", UTCDateTime, nullable=False),  # reconcile purges after it
    sa.CheckConstraint(
        "status IN ('scheduled', 'completed', 'skipped', 'failed', 'deferred')",
        name="digests_status_check",
    ),
    sa.UniqueConstraint("user_id", "local_date", name="digests_user_date_key"),
    sa.Index("digests_expires", "expires_at"),
    sa.Index("digests_created", "created_at", "status"),  # metrics: today's digests by status
    sa.Index("digests_message", "message_id"),
    partial_index(
        "digests_deferred",
        "status",
        where="status = 'deferred'",
    ),
    sa.ForeignKeyConstraint(
        ["user_id", "account_id"],
        ["users.id", "users.account_id"],
        ondelete="CASCADE",
        name="digests_user_fkey",
    ),
    sa.ForeignKeyConstraint(
        ["message_id", "account_id"],
        ["messages.id", "messages.account_id"],
        ondelete="SET NULL (message_id)",
        name="digests_message_fkey",
    ),
    sa.UniqueConstraint("id", "account_id", name="digests_id_account_key"),
    sqlite_autoincrement=True,
)

# A public interface: applications insert rows directly (README documents it).
_UNDIGESTED = (
    "priority = 'normal' AND digest_id IS NULL AND message_id IS NULL"
    " AND read_at IS NULL AND consumed_at IS NULL"
)
_CRITICAL_PENDING = (
    "priority = 'critical' AND message_id IS NULL AND read_at IS NULL AND consumed_at IS NULL"
)

notifications = sa.Table(
    "notifications",
    metadata,
    sa.Column("id", Id, primary_key=True),
    sa.Column("account_id", Id, sa.ForeignKey("accounts.id"), nullable=False),
    sa.Column("user_id", Id, nullable=False),
    sa.Column("priority", sa.Text, nullable=False, server_default=sa.text("'normal'")),
    sa.Column("digest_key", sa.Text),  # groups a digest's items
    sa.Column("title", sa.Text, nullable=False),
    sa.Column("body", sa.Text),
    sa.Column("created_at", UTCDateTime, nullable=False, server_default=_NOW_DEFAULT),
    sa.Column("read_at", UTCDateTime),  # seen by the user: never digested
    # What consumed it: the digest that listed it, or the message that carried it.
    sa.Column("digest_id", Id),
    sa.Column("message_id", Id),
    sa.Column("consumed_at", UTCDateTime),
    *quarantine_columns(),
    sa.CheckConstraint("priority IN ('normal', 'critical')", name="notifications_priority_check"),
    # The title is never blank: notifications_title_check, a CHECK constraint on
    # PostgreSQL and two triggers on SQLite (sql/*/0011_data_integrity.sql).
    partial_index(
        "notifications_undigested",
        "user_id",
        "id",
        where=_UNDIGESTED,
    ),
    partial_index(
        "notifications_critical_pending",
        "id",
        where=_CRITICAL_PENDING,
    ),
    sa.Index("notifications_user", "user_id"),
    sa.Index("notifications_digest", "digest_id"),
    sa.Index("notifications_message", "message_id"),
    sa.ForeignKeyConstraint(
        ["user_id", "account_id"],
        ["users.id", "users.account_id"],
        ondelete="CASCADE",
        name="notifications_user_fkey",
    ),
    sa.ForeignKeyConstraint(
        ["digest_id", "account_id"],
        ["digests.id", "digests.account_id"],
        ondelete="SET NULL (digest_id)",
        name="notifications_digest_fkey",
    ),
    sa.ForeignKeyConstraint(
        ["message_id", "account_id"],
        ["messages.id", "messages.account_id"],
        ondelete="SET NULL (message_id)",
        name="notifications_message_fkey",
    ),
    sqlite_autoincrement=True,
)

# --- The daily distribution (SPEC §6) ------------------------------------------------

# One row per business date: its state, the plan's parameters and the lease of the
# run copying it. Not account-owned (the distribution serves the installation).
distributions = sa.Table(
    "distributions",
    metadata,
    sa.Column("id", Id, primary_key=True),
    sa.Column("business_date", sa.Date, nullable=False),
    sa.Column("status", sa.Text, nullable=False),
    sa.Column("reason", sa.Text),
    sa.Column("stage", sa.Text),
    sa.Column("plan", Json),
    sa.Column("users", sa.BigInteger),
    sa.Column("source_rows", sa.BigInteger),
    sa.Column("attempts", sa.Integer, nullable=False, server_default=sa.text("0")),
    sa.Column("lease_owner", sa.Text),
    sa.Column("lease_expires_at", UTCDateTime),
    sa.Column("planned_at", UTCDateTime),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("updated_at", UTCDateTime, nullable=False),
    sa.Column("finished_at", UTCDateTime),
    sa.Column("expires_at", UTCDateTime),
    sa.Column("purged_at", UTCDateTime),
    sa.CheckConstraint(
        "status IN ('planned', 'copying', 'completed', 'skipped', 'failed')",
        name="distributions_status_check",
    ),
    sa.UniqueConstraint("business_date", name="distributions_business_date_key"),
    sqlite_autoincrement=True,
)

# The day's plan: every distinct user (the full ID: this is schedctl's own database),
# its place in the keyed-hash order, campaign and group, and the source's extras.
# Written whole by its day's planning transaction, read by position, deleted by day:
# no key or reference checked per row (0018). SQLite's planner, which adds users a
# batch at a time and skips an ID it has, keeps a unique (distribution_id, user_id).
distribution_users = sa.Table(
    "distribution_users",
    metadata,
    sa.Column("distribution_id", Id, nullable=False),
    sa.Column("user_id", sa.Text, nullable=False),
    sa.Column("sort_key", sa.LargeBinary, nullable=False),
    sa.Column("seq", sa.BigInteger),
    sa.Column("campaign_id", sa.Text),
    sa.Column("group_name", sa.Text),
    sa.Column("group_id", sa.Text),
    sa.Column("extras", sa.Text),  # JSON object of the source's extra columns
    sa.Index("distribution_users_seq", "distribution_id", "seq", unique=True),
    sa.Index(
        "distribution_users_user",
        "distribution_id",
        "user_id",
        unique=True,
        info={"dialects": ("sqlite",)},
    ),
)

# How far the copy of a plan to each destination has got.
distribution_destinations = sa.Table(
    "distribution_destinations",
    metadata,
    sa.Column(
        "distribution_id",
        Id,
        sa.ForeignKey("distributions.id", ondelete="CASCADE"),
        primary_key=True,
        autoincrement=False,
    ),
    sa.Column("name", sa.Text, primary_key=True),  # control | target | mirror
    sa.Column("status", sa.Text, nullable=False),  # pending | copying | completed
    sa.Column("rows_planned", sa.BigInteger, nullable=False),
    sa.Column("rows_inserted", sa.BigInteger, nullable=False, server_default=sa.text("0")),
    sa.Column("rows_existing", sa.BigInteger, nullable=False, server_default=sa.text("0")),
    sa.Column("last_seq", sa.BigInteger, nullable=False, server_default=sa.text("0")),
    sa.Column("updated_at", UTCDateTime, nullable=False),
    sa.Column("finished_at", UTCDateTime),
    sa.CheckConstraint(
        "name IN ('control', 'target', 'mirror')", name="distribution_destinations_name_check"
    ),
    sa.CheckConstraint(
        "status IN ('pending', 'copying', 'completed')",
        name="distribution_destinations_status_check",
    ),
)
# --- Reconcile (SPEC §8) -----------------------------------------------------------

# Each account's attempts of one UTC day by message type and outcome, from email_log;
# written by `reconcile` (a rerun updates the totals in place).
usage_history = sa.Table(
    "usage_history",
    metadata,
    sa.Column("id", Id, primary_key=True),
    sa.Column("account_id", Id, sa.ForeignKey("accounts.id"), nullable=False),
    sa.Column("day", sa.Date, nullable=False),  # the UTC date of the attempts
    sa.Column("message_type", sa.Text, nullable=False),  # UNKNOWN: the message was deleted
    sa.Column("outcome", sa.Text, nullable=False),  # as email_log's
    sa.Column("total", sa.Integer, nullable=False),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("updated_at", UTCDateTime, nullable=False),
    sa.UniqueConstraint("account_id", "day", "message_type", "outcome", name="usage_history_key"),
    sa.Index("usage_history_day", "day"),
    sqlite_autoincrement=True,
)

# --- Alerts (SPEC §12, "Being told"; schedctl.alerts) -------------------------------

# What newly went wrong, once per unique key. ``account_id`` is the failed run's or
# message's account; NULL for what concerns the installation (heartbeat, distribution,
# mirror, quota), which row-level security shows every account.
alerts = sa.Table(
    "alerts",
    metadata,
    sa.Column("id", Id, primary_key=True),
    sa.Column("key", sa.Text, nullable=False),  # e.g. run_failed:42, quota:2026-11-18:80
    sa.Column("kind", sa.Text, nullable=False),
    sa.Column("summary", sa.Text, nullable=False),
    sa.Column("details", Json),  # label -> value, shown as fields (the quota's numbers)
    sa.Column("account_id", Id, sa.ForeignKey("accounts.id")),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.UniqueConstraint("key", name="alerts_key_key"),
    sa.Index("alerts_created", "created_at"),
    sqlite_autoincrement=True,
)

# Each channel's telling of an alert: taken (leased) by one command run, notified_at
# set once the channel took it; left unset when it failed, for a later run to retry.
alert_deliveries = sa.Table(
    "alert_deliveries",
    metadata,
    sa.Column(
        "alert_id",
        Id,
        sa.ForeignKey("alerts.id", ondelete="CASCADE"),
        primary_key=True,
        autoincrement=False,
    ),
    sa.Column("channel", sa.Text, primary_key=True),  # slack | webhook | mail
    sa.Column("attempts", sa.Integer, nullable=False, server_default=sa.text("0")),
    sa.Column("notified_at", UTCDateTime),
    sa.Column("lease_owner", sa.Text),
    sa.Column("lease_expires_at", UTCDateTime),
    sa.CheckConstraint(
        "channel IN ('slack', 'webhook', 'mail')", name="alert_deliveries_channel_check"
    ),
)


OWNERS_TABLES = frozenset({schema_migrations.name, installation.name, account_roles.name})
"""Written by the schema's owner only (`db upgrade`, binding login roles to accounts):
schedctl's login role reads them and writes the others."""
