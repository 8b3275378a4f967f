"""Prometheus metrics (SPEC §12): what `schedctl metrics` prints and `/metrics` serves.

:func:`collect` reads a :class:`Snapshot` -- heartbeat health judged by
:mod:`schedctl.heartbeat` itself, then one read-only transaction of one query per
family -- and :func:`exposition` writes it in the Prometheus text format through
``prometheus_client`` (imported only here, on use: it costs the other commands
nothing). :func:`render_metrics` does both, for any caller holding a database.

Every family is a gauge with fixed names and labels (monitors depend on them):

- ``schedctl_last_success_timestamp_seconds{command}``: each command that has
  succeeded (those `heartbeat` shows: judged, or run and not judged);
- ``schedctl_heartbeat_status{command}``: 0 green, 1 yellow, 2 red, 3 unknown (the
  monitoring codes of `heartbeat --check`) for each command `heartbeat` judges;
- ``schedctl_messages{status,type}``: the outbox, one sample per status and type held;
- ``schedctl_oldest_due_message_age_seconds``: how long the oldest message dispatch
  may send now (scheduled or retrying, send time and retry time reached) has been
  due since its send time; 0 when none is;
- ``schedctl_runs_last_24h{status}``: schedule runs that finished in the last 24 h,
  by outcome (succeeded, failed, skipped; each present, 0 included);
- ``schedctl_quota_used`` / ``schedctl_quota_limit``: normal mail handed over today
  (the quota's UTC day) and the daily quota; the limit has no sample without a quota;
- ``schedctl_digests_today{status}``: digests claimed since 00:00 UTC by status (every
  status present, 0 included);
- ``schedctl_distribution_last_completed_timestamp_seconds``: when the latest
  completed distribution finished; no sample before the first;
- ``schedctl_info{version,tzdata}``: 1.

Tenancy: the heartbeats, the quota and the distribution belong to the installation.
The outbox, runs and digests are counted over every account, or over one account's
rows when ``account_id`` is given (a status page limited to one account). On
PostgreSQL a session scoped to an account (or a login role bound to one) sees only
that account's rows whatever is asked, so these are counts it may read anyway.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from schedctl import __version__, heartbeat
from schedctl.config import Settings
from schedctl.db.database import Database
from schedctl.db.schema import digests, distributions, messages, schedule_runs
from schedctl.delivery import quota
from schedctl.delivery.outbox import CLAIMED_FROM
from schedctl.errors import ConfigError, quoted
from schedctl.redaction import redact
from schedctl.vocabulary import CHECK_EXIT
from schedctl.zones import tzdata_version

if TYPE_CHECKING:
    from prometheus_client.metrics_core import Metric

# The Prometheus text format's media type (version 0.0.4), for an HTTP response.
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

# The values of schedctl_heartbeat_status are the monitoring codes of `heartbeat --check`.
STATUS_VALUE = CHECK_EXIT
# Outcomes of a finished schedule run, and a digest's statuses (its CHECK constraint).
RUN_OUTCOMES = ("succeeded", "failed", "skipped")
DIGEST_STATUSES = ("scheduled", "completed", "skipped", "failed", "deferred")
RUNS_WINDOW = timedelta(hours=24)


@dataclass(frozen=True)
class Snapshot:
    """Everything the metrics say, read at one instant."""

    now: datetime
    health: list[heartbeat.CommandHealth]
    messages: list[tuple[str, str, int]]  # (status, type, count)
    oldest_due_at: datetime | None
    runs: dict[str, int]
    quota_used: int
    quota_limit: int | None
    digests: dict[str, int]
    distribution_completed_at: datetime | None
    version: str
    tzdata: str


def _own(table: sa.Table, account_id: int | None) -> list[sa.ColumnElement[bool]]:
    return [] if account_id is None else [table.c.account_id == account_id]


def _utc_midnight(instant: datetime) -> datetime:
    day = instant.astimezone(UTC).date()
    return datetime(day.year, day.month, day.day, tzinfo=UTC)


def collect(
    db: Database, settings: Settings, now: datetime, *, account_id: int | None = None
) -> Snapshot:
    """Read the metrics at ``now``: all accounts' rows, or only ``account_id``'s."""
    health = heartbeat.report_now(db, settings)
    m = messages.c
    by_status_type = (
        sa.select(m.status, m.type, sa.func.count())
        .where(*_own(messages, account_id))
        .group_by(m.status, m.type)
        .order_by(m.status, m.type)
    )
    # What dispatch would claim now, leased or not (a stuck lease is still waiting).
    # One minimum per status: each reads messages_due (status, send_at) in order and
    # stops at the first due row, where one minimum over both statuses reads them all.
    oldest_due = sa.select(
        *(
            sa.select(sa.func.min(m.send_at))
            .where(
                m.status == status,
                m.send_at <= now,
                sa.or_(m.next_attempt_at.is_(None), m.next_attempt_at <= now),
                *_own(messages, account_id),
            )
            .scalar_subquery()
            for status in CLAIMED_FROM
        )
    )
    r = schedule_runs.c
    runs = (
        sa.select(r.status, sa.func.count())
        .where(r.finished_at > now - RUNS_WINDOW)
        .where(*_own(schedule_runs, account_id))
        .group_by(r.status)
    )
    d = digests.c
    midnight = _utc_midnight(now)
    digests_today = (
        sa.select(d.status, sa.func.count())
        .where(d.created_at >= midnight, d.created_at < midnight + timedelta(days=1))
        .where(*_own(digests, account_id))
        .group_by(d.status)
    )
    completed = sa.select(sa.func.max(distributions.c.finished_at)).where(
        distributions.c.status == "completed"
    )

    def work(conn: sa.Connection) -> Snapshot:
        run_counts = dict.fromkeys(RUN_OUTCOMES, 0)
        run_counts.update({status: n for status, n in conn.execute(runs)})
        digest_counts = dict.fromkeys(DIGEST_STATUSES, 0)
        digest_counts.update({status: n for status, n in conn.execute(digests_today)})
        return Snapshot(
            now=now,
            health=health,
            messages=[(s, t, n) for s, t, n in conn.execute(by_status_type)],
            oldest_due_at=min((t for t in conn.execute(oldest_due).one() if t), default=None),
            runs=run_counts,
            quota_used=quota.used(conn, quota.quota_day(now)),
            quota_limit=quota.daily_limit(settings),
            digests=digest_counts,
            distribution_completed_at=conn.execute(completed).scalar(),
            version=__version__,
            tzdata=tzdata_version(),
        )

    return db.transaction(work, read_only=True)


def families(snapshot: Snapshot) -> list[Metric]:
    """The snapshot as Prometheus metric families (every one, samples or not)."""
    from prometheus_client.core import GaugeMetricFamily

    def gauge(name: str, text: str, labels: tuple[str, ...] = ()) -> GaugeMetricFamily:
        return GaugeMetricFamily(f"schedctl_{name}", text, labels=list(labels))

    def label(value: str) -> str:
        # Label values come from rows (a message type is the application's word).
        return redact(value)

    success = gauge(
        "last_success_timestamp_seconds",
        "When the command last finished successfully (Unix time).",
        ("command",),
    )
    status = gauge(
        "heartbeat_status",
        "Heartbeat status of a judged command: 0 green, 1 yellow, 2 red, 3 unknown.",
        ("command",),
    )
    for h in snapshot.health:
        if h.last_success_at is not None:
            success.add_metric([h.command], h.last_success_at.timestamp())
        if h.status is not None:
            status.add_metric([h.command], STATUS_VALUE[h.status])

    outbox = gauge("messages", "Messages in the outbox by status and type.", ("status", "type"))
    for message_status, message_type, count in snapshot.messages:
        outbox.add_metric([label(message_status), label(message_type)], count)

    oldest = gauge(
        "oldest_due_message_age_seconds",
        "Seconds since the send time of the oldest message due now and not yet sent"
        " (0: none is due).",
    )
    due_at = snapshot.oldest_due_at
    oldest.add_metric([], max(0.0, (snapshot.now - due_at).total_seconds()) if due_at else 0.0)

    runs = gauge(
        "runs_last_24h", "Schedule runs that finished in the last 24 hours, by status.", ("status",)
    )
    for run_status, count in sorted(snapshot.runs.items()):
        runs.add_metric([label(run_status)], count)

    used = gauge("quota_used", "Normal mail handed over today (UTC day) against the quota.")
    used.add_metric([], snapshot.quota_used)
    limit = gauge("quota_limit", "The daily quota of normal mail (no sample: no quota).")
    if snapshot.quota_limit is not None:
        limit.add_metric([], snapshot.quota_limit)

    digest = gauge(
        "digests_today", "Digests claimed since 00:00 UTC today, by status.", ("status",)
    )
    for digest_status, count in sorted(snapshot.digests.items()):
        digest.add_metric([label(digest_status)], count)

    distribution = gauge(
        "distribution_last_completed_timestamp_seconds",
        "When the latest completed distribution finished (Unix time).",
    )
    if snapshot.distribution_completed_at is not None:
        distribution.add_metric([], snapshot.distribution_completed_at.timestamp())

    info = gauge("info", "schedctl's version and its time zone data (tzdata) version.",
                 ("version", "tzdata"))  # fmt: skip
    info.add_metric([snapshot.version, snapshot.tzdata], 1)
    return [success, status, outbox, oldest, runs, used, limit, digest, distribution, info]


class _Families:
    """A prometheus_client collector of fixed families, for one exposition."""

    def __init__(self, found: list[Metric]) -> None:
        self.found = found

    def collect(self) -> Iterator[Metric]:
        return iter(self.found)


def exposition(snapshot: Snapshot) -> str:
    """The snapshot in the Prometheus text format (HELP and TYPE for every family)."""
    from prometheus_client.exposition import generate_latest
    from prometheus_client.registry import CollectorRegistry

    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Families(families(snapshot)))
    return generate_latest(registry).decode()


def samples(snapshot: Snapshot) -> list[dict[str, Any]]:
    """Every sample as ``{"name", "labels", "value"}`` (the --json document)."""
    return [
        {"name": s.name, "labels": dict(s.labels), "value": s.value}
        for family in families(snapshot)
        for s in family.samples
    ]


def render_metrics(db: Database, settings: Settings, *, account_id: int | None = None) -> str:
    """The metrics as Prometheus text now, for ``GET /metrics`` or any other caller."""
    return exposition(collect(db, settings, db.now(), account_id=account_id))


# --- the textfile collector's file ---------------------------------------------------


def output_problem(name: str) -> str | None:
    """Why the file ``name`` cannot be the metrics file (checked before anything is read)."""
    if not name.strip():
        return "--output: empty file name"
    path = Path(name)
    if path.is_dir():
        return f"--output: {quoted(str(path))} is a directory, not a file"
    parent = path.parent
    if not parent.is_dir():
        return f"--output: directory {quoted(str(parent))} does not exist"
    if not os.access(parent, os.W_OK | os.X_OK):
        return f"--output: cannot write in directory {quoted(str(parent))}"
    return None


def write_atomically(path: Path, text: str) -> None:
    """Replace ``path`` with ``text`` so that a reader sees the old file or the new one.

    A temporary file in the same directory (node_exporter's textfile collector reads
    only ``*.prom``, and the temporary name does not end so) is written, flushed to
    disk and renamed over ``path``. It gets the mode of the file it replaces, or the
    mode a new file would get, since the collector usually runs as another user.
    """
    problem = output_problem(str(path))
    if problem:
        raise ConfigError(problem)
    try:
        mode = path.stat().st_mode & 0o7777
    except FileNotFoundError:
        umask = os.umask(0)
        os.umask(umask)
        mode = 0o666 & ~umask
    temporary: str | None = None
    try:
        fd, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(text)
            out.flush()
            os.fchmod(out.fileno(), mode)
            os.fsync(out.fileno())
        os.replace(temporary, path)
    except OSError as exc:
        if temporary is not None:
            Path(temporary).unlink(missing_ok=True)
        raise ConfigError(
            f"--output: cannot write {quoted(str(path))}: {exc.strerror or exc}"
        ) from None
    _sync_directory(path.parent)


def _sync_directory(directory: Path) -> None:
    """Make the rename itself durable (best effort: not every file system allows it)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError:
        pass
