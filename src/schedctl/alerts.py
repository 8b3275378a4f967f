"""Alerts: what newly went wrong, recorded once, told once per channel (SPEC §12).

Recording. What goes wrong is recorded as an alert by the transaction that records
it going wrong, with ``INSERT ... ON CONFLICT (key) DO NOTHING`` under a key naming
it, so processes that see the same failure at once, and reruns, record it once:

===================  ==================================================================
kind                 key: when
===================  ==================================================================
run_failed           ``run_failed:<run id>``: a schedule run failed for good (its last
                     attempt, a failure no retry mends, its process died on its last
                     attempt, its schedule could not be read)
message_failed       ``message_failed:<id>``: a message failed for good
message_unknown      ``message_unknown:<id>``: no reply after the data: it may have been
                     delivered, and is not resent
alert_mail_failed    ``alert_mail_failed:<id>``: an ALERT mail failed (either way); told
                     by the HTTP channels only, so a failing mailbox is no loop
heartbeat_red        ``heartbeat_red:<command>:<last success>``: `heartbeat --check`
                     found a judged command red; once per red spell
distribution_failed  ``distribution_failed:<date>:<attempt>``: a `distribute` run failed
mirror_missing       ``mirror_missing:<UTC day>``: `reconcile` found target rows missing
                     from the mirror and did not repair them
quota                ``quota:<day>:<threshold>``: the daily quota reached 80, 90, 100 %
===================  ==================================================================

Telling. At the end of each job command (tick, digest, distribute, reconcile,
send-now, heartbeat: ``cli/runtime.run_command``) :func:`notify` sends each
configured channel at most one notification, listing the alerts of the last
:data:`PENDING_FOR` that channel has not been told yet (at most :data:`MAX_LISTED`
lines, then "and N more"):

- ``slack``: ``[alerts] slack_webhook_url``, default ``SCHEDCTL_SLACK_WEBHOOK_URL``; a
  text plus Block Kit blocks (a section per alert, its details as fields);
- ``webhook``: ``[alerts] webhook_url``; a JSON POST of
  ``{"alerts": [{"kind", "key", "summary", "at"}], "count"}``: at most
  :data:`MAX_LISTED` alerts, ``count`` all of them;
- ``mail``: ``[alerts] mail_to`` (default ``[messages] alert_to``); one ALERT message
  per address put in the outbox, critical (outside the daily quota), with an
  idempotency key, sent by the normal dispatch (the next `tick`).

A run takes the alerts it tells a channel by inserting their ``alert_deliveries``
rows under a short lease (a concurrent run's insert of the same row does nothing,
so two runs never tell one alert twice), posts, and then records them told or, when
the channel failed, gives them back for a later run to take again. The mail channel
queues and records in one transaction. The HTTP channels are posted at once, side
by side, one attempt each, all within :data:`BUDGET` seconds; a channel that hangs
is given up. Telling never raises and never changes a command's exit code; a failure
is logged as a warning naming at most the URL's host (URLs are secrets).
"""

from __future__ import annotations

import functools
import hashlib
import logging
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from schedctl import leases
from schedctl.db import dialect
from schedctl.db.schema import alert_deliveries, alerts, messages, schedule_runs, schedules

if TYPE_CHECKING:
    from schedctl.config import Settings
    from schedctl.db.database import Database

log = logging.getLogger("schedctl.alerts")

CHANNELS = ("mail", "slack", "webhook")
MAX_LISTED = 20  # alerts one notification lists; the rest are counted ("and N more")
BUDGET = 5.0  # seconds one command run spends at most posting to the HTTP channels
PENDING_FOR = timedelta(days=1)  # an alert no run could tell a channel by then is dropped
BATCH = 1000  # alerts one run takes for a channel at most; the next run takes the rest
LEASE = timedelta(minutes=1)  # how long a run holds the alerts it is telling
MAX_SUMMARY = 500  # characters of an alert's summary (an error quoted in it is cut)

RUN_FAILED = "run_failed"
MESSAGE_FAILED = "message_failed"
MESSAGE_UNKNOWN = "message_unknown"
ALERT_MAIL_FAILED = "alert_mail_failed"
HEARTBEAT_RED = "heartbeat_red"
DISTRIBUTION_FAILED = "distribution_failed"
MIRROR_MISSING = "mirror_missing"
QUOTA = "quota"

MESSAGE_TYPE = "ALERT"


@dataclass(frozen=True)
class Alert:
    """One thing that went wrong, under the key that names it."""

    kind: str
    key: str
    summary: str
    account_id: int | None = None  # the failed item's account; None: the installation's
    # Label -> value, shown as fields (Slack) or lines (mail) beside the summary.
    details: Mapping[str, str] = field(default_factory=dict)


# --- recording ---------------------------------------------------------------------------


def record(conn: sa.Connection, items: Iterable[Alert], now: datetime) -> int:
    """Record alerts in the caller's transaction, each unless its key is recorded
    already (by another process, or an earlier run); how many were new."""
    rows = [
        {
            "key": item.key,
            "kind": item.kind,
            "summary": _cut(item.summary, MAX_SUMMARY),
            "details": dict(item.details) or None,
            "account_id": item.account_id,
            "created_at": now,
        }
        for item in items
    ]
    return dialect.insert_ignore_count(conn, alerts, rows, ["key"])


def record_failed_runs(conn: sa.Connection, run_ids: Sequence[int], now: datetime) -> None:
    """Record ``run_failed`` for runs just marked failed for good (in that transaction)."""
    if not run_ids:
        return
    r = schedule_runs.c
    query = (
        sa.select(r.id, r.account_id, r.schedule_id, r.slot, r.manual, r.error, schedules.c.name)
        .select_from(schedule_runs.outerjoin(schedules, schedules.c.id == r.schedule_id))
        .where(r.id.in_(list(run_ids)))
        .order_by(r.id)
    )
    found = [
        Alert(
            RUN_FAILED,
            f"{RUN_FAILED}:{row.id}",
            f"{'manual run' if row.manual else 'run'} {row.id} of schedule {row.schedule_id}"
            f" ({row.name}) for {row.slot.isoformat()} failed for good: {row.error or 'no error'}",
            account_id=int(row.account_id),
        )
        for row in conn.execute(query)
    ]
    record(conn, found, now)


def record_failed_messages(conn: sa.Connection, message_ids: Sequence[int], now: datetime) -> None:
    """Record ``message_failed``, ``message_unknown`` or (for an ALERT mail)
    ``alert_mail_failed`` for messages just marked failed (in that transaction)."""
    if not message_ids:
        return
    m = messages.c
    query = (
        sa.select(m.id, m.account_id, m.type, m.recipient, m.reason_code, m.last_error)
        .where(m.id.in_(list(message_ids)))
        .order_by(m.id)
    )
    found = []
    for row in conn.execute(query):
        what = f"message {row.id} ({row.type} to {row.recipient or 'nobody'})"
        unknown = row.reason_code == "UNKNOWN_DELIVERY"
        if unknown:
            summary = (
                f"{what}: no reply after the data ({row.reason_code}): it may have been"
                " delivered; not resent automatically"
            )
        else:
            error = f": {row.last_error}" if row.last_error else ""
            summary = f"{what} failed for good: {row.reason_code}{error}"
        kind = MESSAGE_UNKNOWN if unknown else MESSAGE_FAILED
        if row.type == MESSAGE_TYPE:
            kind = ALERT_MAIL_FAILED
        found.append(Alert(kind, f"{kind}:{row.id}", summary, account_id=int(row.account_id)))
    record(conn, found, now)


def _cut(text: str, limit: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


# --- telling ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Told:
    """An alert as a notification lists it."""

    id: int
    kind: str
    key: str
    summary: str
    at: datetime
    fields: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class Targets:
    """The configured channels: who is told."""

    slack: str | None
    webhook: str | None
    mail_to: tuple[str, ...]

    def channels(self) -> list[str]:
        given = {"slack": self.slack, "webhook": self.webhook, "mail": self.mail_to}
        return [name for name in CHANNELS if given[name]]


def targets(settings: Settings) -> Targets:
    """The channels of ``[alerts]``, with their defaults."""
    return Targets(
        slack=settings.alerts_slack_webhook_url or settings.slack_webhook_url,
        webhook=settings.alerts_webhook_url,
        mail_to=settings.alerts_mail_to or settings.messages_alert_to,
    )


def title(count: int) -> str:
    return f"schedctl: {count} new alert{'' if count == 1 else 's'}"


def listing(items: Sequence[Told]) -> tuple[list[Told], int]:
    """The alerts a notification lists, and how many more it only counts."""
    return list(items[:MAX_LISTED]), max(0, len(items) - MAX_LISTED)


def slack_message(items: Sequence[Told]) -> tuple[str, list[dict[str, Any]]]:
    """A Slack notification: its text (the fallback, one line per alert) and blocks (a
    header, a section per alert with its details as fields, "and N more")."""
    listed, more = listing(items)
    heading = title(len(items))
    lines = [f"• [{_mrkdwn(t.kind)}] {_mrkdwn(t.summary)}" for t in listed]
    if more:
        lines.append(f"and {more} more")
    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": {"type": "plain_text", "text": heading}}
    ]
    for item in listed:
        section: dict[str, Any] = {
            "type": "section",
            "text": {"type": "mrkdwn", "text": f"*{_mrkdwn(item.kind)}* {_mrkdwn(item.summary)}"},
        }
        if item.fields:
            section["fields"] = [
                {"type": "mrkdwn", "text": f"*{_mrkdwn(label)}*\n{_mrkdwn(value)}"}
                for label, value in item.fields[:10]
            ]
        blocks.append(section)
    if more:
        blocks.append({"type": "context", "elements": [{"type": "mrkdwn", "text": lines[-1]}]})
    return "\n".join([heading, *lines]), blocks


def _mrkdwn(text: str) -> str:
    """Text as Slack shows it literally: &, < and > escaped (Slack's own rule)."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def webhook_document(items: Sequence[Told]) -> dict[str, Any]:
    """The generic webhook's JSON: ``{"alerts": [{"kind", "key", "summary", "at"}],
    "count"}``, at most MAX_LISTED alerts listed, ``count`` all of them."""
    listed, _ = listing(items)
    return {
        "alerts": [
            {"kind": t.kind, "key": t.key, "summary": t.summary, "at": t.at.isoformat()}
            for t in listed
        ],
        "count": len(items),
    }


def mail_parts(items: Sequence[Told]) -> tuple[str, str, str]:
    """The ALERT mail: (subject, text, html)."""
    from schedctl.render import render_pair  # jinja2 on demand

    listed, more = listing(items)
    heading = title(len(items))
    context = [
        {
            "kind": t.kind,
            "summary": t.summary,
            "at": t.at.replace(microsecond=0).isoformat(sep=" "),
            "fields": list(t.fields),
        }
        for t in listed
    ]
    text, html = render_pair("alerts", title=heading, items=context, more=more)
    return heading, text, html


def notify(db: Database, settings: Settings, *, budget: float = BUDGET) -> dict[str, int]:
    """Tell each configured channel, once, about the alerts it was not told yet;
    returns how many alerts each channel that was told something was told. Never
    raises.

    With nothing to tell (the usual end of a job) it only reads, in one read-only
    transaction: no write lock is taken."""
    chosen = targets(settings)
    if not chosen.channels():
        return {}
    deadline = time.monotonic() + budget
    told: dict[str, int] = {}
    try:
        clock = leases.clock_from(db.now())
        owner = leases.new_owner()
        look = functools.partial(_untold, channels=chosen.channels(), now=clock())
        untold = db.transaction(look, read_only=True)
    except Exception as exc:  # a side channel never fails the job
        _not_sent(settings, exc)
        return {}
    if "mail" in untold:
        try:
            told["mail"] = _tell_by_mail(db, settings, chosen.mail_to, clock(), owner)
        except Exception as exc:
            _not_sent(settings, exc)
    posting: list[str] = [c for c in ("slack", "webhook") if c in untold]
    try:
        taken: dict[str, list[Told]] = {}
        for channel in posting:
            take = functools.partial(_take, channel=channel, now=clock(), owner=owner)
            items = db.transaction(take)
            if items:
                taken[channel] = [_redacted(settings, t) for t in items]
        if taken:
            posted = _post_all(chosen, taken, deadline)
            db.transaction(lambda conn: _settle_posts(conn, taken, posted, owner, clock()))
            told.update({channel: len(taken[channel]) for channel in taken if posted[channel]})
    except Exception as exc:
        _not_sent(settings, exc)
    told = {name: count for name, count in told.items() if count}
    for name, count in told.items():
        log.info("told %s about %d alert%s", name, count, "" if count == 1 else "s")
    return told


def _not_sent(settings: Settings, exc: Exception) -> None:
    log.warning("alerts not sent: %s", settings.redact(_describe(exc)))
    log.debug("alerts not sent", exc_info=True)


def _describe(exc: Exception) -> str:
    message = getattr(exc, "message", None)
    return str(message) if message else f"{type(exc).__name__}: {exc}"


def _redacted(settings: Settings, item: Told) -> Told:
    """No secret in what goes out (an error quoted in a summary may hold one)."""
    clean = settings.redact
    return Told(
        item.id,
        item.kind,
        clean(item.key),
        clean(item.summary),
        item.at,
        tuple((clean(k), clean(v)) for k, v in item.fields),
    )


def _wanted(channel: str, now: datetime) -> list[sa.ColumnElement[bool]]:
    """The alerts ``channel`` may be told at ``now``: recent ones, and for mail not
    those about a failed ALERT mail."""
    a = alerts.c
    wanted: list[sa.ColumnElement[bool]] = [a.created_at >= now - PENDING_FOR]
    if channel == "mail":
        wanted.append(a.kind != ALERT_MAIL_FAILED)
    return wanted


def _untold(conn: sa.Connection, channels: Sequence[str], now: datetime) -> set[str]:
    """The channels with something to tell: an alert never taken for them, or one a
    run failed to tell that nobody holds now."""
    a, d = alerts.c, alert_deliveries.c
    found = set()
    for channel in channels:
        ours = sa.and_(d.alert_id == a.id, d.channel == channel)
        given_back = sa.and_(ours, d.notified_at.is_(None), leases.free(alert_deliveries, now))
        pending = sa.or_(~sa.exists().where(ours), sa.exists().where(given_back))
        query = sa.select(a.id).where(*_wanted(channel, now), pending).limit(1)
        if conn.execute(query).first() is not None:
            found.add(channel)
    return found


def _take(conn: sa.Connection, channel: str, now: datetime, owner: str) -> list[Told]:
    """Take, under a lease, the recent alerts ``channel`` was not told: those never
    taken for it (a concurrent run's insert of the same row makes ours do nothing),
    then those a run failed to tell (SKIP LOCKED)."""
    a, d = alerts.c, alert_deliveries.c
    wanted = _wanted(channel, now)
    held = leases.held(owner, now + LEASE)
    untold = (
        sa.select(a.id)
        .where(*wanted, ~sa.exists().where(d.alert_id == a.id, d.channel == channel))
        .order_by(a.id)
        .limit(BATCH)
    )
    fresh = [
        {"alert_id": int(i), "channel": channel, "attempts": 0, **held}
        for i in conn.execute(untold).scalars()
    ]
    taken = {
        int(row.alert_id)
        for row in dialect.insert_ignore(
            conn, alert_deliveries, fresh, ["alert_id", "channel"], returning=[d.alert_id]
        )
    }
    if len(taken) < BATCH:
        again = (
            sa.select(d.alert_id)
            .where(
                d.channel == channel,
                d.notified_at.is_(None),
                leases.free(alert_deliveries, now),
                d.alert_id.in_(sa.select(a.id).where(*wanted)),
            )
            .order_by(d.alert_id)
            .limit(BATCH - len(taken))
            .with_for_update(skip_locked=True)
        )
        retried = [int(i) for i in conn.execute(again).scalars()]
        if retried:
            conn.execute(
                alert_deliveries.update()
                .where(d.channel == channel, d.alert_id.in_(retried))
                .values(**held)
            )
        taken.update(retried)
    if not taken:
        return []
    rows = conn.execute(sa.select(alerts).where(a.id.in_(sorted(taken))).order_by(a.id))
    return [
        Told(
            int(row.id),
            row.kind,
            row.key,
            row.summary,
            row.created_at,
            tuple((str(k), str(v)) for k, v in (row.details or {}).items()),
        )
        for row in rows
    ]


def _settle(
    conn: sa.Connection, channel: str, ids: Sequence[int], owner: str, now: datetime, *, ok: bool
) -> None:
    """End this run's lease on the alerts it took for ``channel``: told, or given back."""
    d = alert_deliveries.c
    values: dict[str, Any] = {"attempts": d.attempts + 1, **leases.CLEARED}
    if ok:
        values["notified_at"] = now
    conn.execute(
        alert_deliveries.update()
        .where(d.channel == channel, d.alert_id.in_(list(ids)), d.lease_owner == owner)
        .values(**values)
    )


def _settle_posts(
    conn: sa.Connection,
    taken: Mapping[str, list[Told]],
    posted: Mapping[str, bool],
    owner: str,
    now: datetime,
) -> None:
    for channel, items in taken.items():
        _settle(conn, channel, [t.id for t in items], owner, now, ok=posted[channel])


def _tell_by_mail(
    db: Database, settings: Settings, addresses: Sequence[str], now: datetime, owner: str
) -> int:
    """Queue one ALERT message per address listing the untold alerts, and record them
    told, in one transaction."""
    from schedctl.accounts import resolve_account
    from schedctl.delivery.outbox import NewMessage, enqueue, mail_domain

    def work(conn: sa.Connection) -> int:
        items = [_redacted(settings, t) for t in _take(conn, "mail", now, owner)]
        if not items:
            return 0
        subject, text, html = mail_parts(items)
        # The key names the alerts: a rerun never queues the same notification twice.
        batch = hashlib.sha256(",".join(str(t.id) for t in items).encode()).hexdigest()[:16]
        account_id = db.account_id or resolve_account(conn, None)
        enqueue(
            conn,
            [
                NewMessage(
                    account_id=account_id,
                    type=MESSAGE_TYPE,
                    recipient=address,
                    subject=subject,
                    body_text=text,
                    body_html=html,
                    send_at=now,
                    # An alert about the quota must not wait for the quota.
                    priority="critical",
                    idempotency_key=f"alerts:{batch}:{address}",
                )
                for address in addresses
            ],
            now=now,
            domain=mail_domain(settings.mail_from),
        )
        _settle(conn, "mail", [t.id for t in items], owner, now, ok=True)
        return len(items)

    return int(db.transaction(work))


def _post_all(chosen: Targets, taken: Mapping[str, list[Told]], deadline: float) -> dict[str, bool]:
    """Post each channel's notification, side by side, within the deadline."""
    results: dict[str, bool] = {}

    def post(channel: str, items: list[Told]) -> None:
        results[channel] = _post(chosen, channel, items, max(0.1, deadline - time.monotonic()))

    workers = [
        threading.Thread(target=post, args=(channel, items), name=f"schedctl-alert-{channel}")
        for channel, items in taken.items()
    ]
    for worker in workers:
        worker.daemon = True
        worker.start()
    for worker in workers:
        # Each post gives up by the deadline itself (webhook.py); a little slack here.
        worker.join(max(0.0, deadline - time.monotonic()) + 1.0)
    return {channel: results.get(channel, False) for channel in taken}


def _post(chosen: Targets, channel: str, items: list[Told], timeout: float) -> bool:
    from schedctl import webhook

    if channel == "slack" and chosen.slack:
        text, blocks = slack_message(items)
        return webhook.post_slack_alert(chosen.slack, text, blocks, timeout=timeout, max_attempts=1)
    if channel == "webhook" and chosen.webhook:
        return webhook.post_json(
            chosen.webhook, webhook_document(items), timeout=timeout, max_attempts=1
        )
    return False
