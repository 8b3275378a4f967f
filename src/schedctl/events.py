"""Events and the messages planned for them (SPEC §7; seed: Scheduler Behaviour Fixes).

An event (name, ``starts_at``, optional ``load_in_time``, contact, IANA zone) gets an
INIT message when it is first planned and a reminder at each configured lead time
before it starts::

    [events]
    reminders = ["1d", "2h"]   # the default; types REMINDER_1D, REMINDER_2H

Planning is idempotent: each message's idempotency key is ``event:{id}:{type}`` and
``(event_id, type)`` is unique, so any number of ticks plan each message once.
``events.planned_at`` records the last planning; an event is planned again only
after it changed, so an INIT an operator deleted is never recreated.

- Times without an offset are wall times in the event's zone (SPEC §3's DST rule); a
  load-in time after the start is refused.
- An event with a load-in time gets no INIT; a pending INIT is skipped with reason
  HAS_LOAD_IN_TIME when a load-in time is added later.
- Every message of an event expires at its start (``expires_at``): one not sent by
  then is skipped (EXPIRED) by dispatch, so no reminder goes out after its event.
- Moving ``starts_at`` moves the pending reminders and refreshes the text, expiry
  (and the recipient, should an application have changed the contact) of pending
  messages. A reminder whose new time has already passed is skipped (PAST_DUE); one
  skipped PAST_DUE or EXPIRED comes back if the event moves later again; one whose
  time had passed when the event was first planned is not created at all.
- Deleting an event skips its unsent messages (EVENT_DELETED) and keeps every one of
  its messages, sent or not, in the audit, detached from the event (``event_id``
  NULL; their idempotency key still names it, and ids are never reused).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import sqlalchemy as sa

from schedctl import leases, quarantine
from schedctl.cadence import to_instant
from schedctl.config import Settings
from schedctl.db.database import Database
from schedctl.db.owned import get_owned
from schedctl.db.schema import events, messages
from schedctl.delivery.outbox import EXPIRED, PENDING, NewMessage, enqueue, mail_domain
from schedctl.errors import TemporaryError, ValidationError
from schedctl.values import parse_duration, parse_timezone, split_duration, validate_email

INIT = "INIT"
HAS_LOAD_IN_TIME = "HAS_LOAD_IN_TIME"
PAST_DUE = "PAST_DUE"
EVENT_DELETED = "EVENT_DELETED"  # the reason code of a deleted event's unsent messages
# How long `events delete` waits for a dispatcher sending one of the event's messages.
DELETE_WAIT = timedelta(seconds=30)
PLAN_BATCH = 100
_UNITS = {"s": "second", "m": "minute", "h": "hour", "d": "day"}


@dataclass(frozen=True)
class Reminder:
    type: str  # REMINDER_1D
    lead: timedelta
    label: str  # "1 day"


def reminders_for(settings: Settings) -> tuple[Reminder, ...]:
    """The reminders of ``[events] reminders`` (checked when the settings were loaded)."""
    found = []
    for text in settings.events_reminders:
        amount, unit = split_duration(text)
        label = f"{amount} {_UNITS[unit]}{'' if amount == 1 else 's'}"
        found.append(Reminder(f"REMINDER_{amount}{unit.upper()}", parse_duration(text), label))
    return tuple(found)


def local_time(instant: datetime | None, zone: ZoneInfo) -> str:
    """An instant as the event's people read it: ``Sun 2027-01-10 10:00 CET``."""
    return instant.astimezone(zone).strftime("%a %Y-%m-%d %H:%M %Z") if instant else ""


def _content(event: Any, kind: str, lead: str = "") -> tuple[str, str, str]:
    """(subject, text, html) of one event message."""
    zone = ZoneInfo(event.tz)
    context = {
        "kind": kind,
        "name": event.name,
        "starts_local": local_time(event.starts_at, zone),
        "load_in_local": local_time(event.load_in_time, zone),
        "tz": event.tz,
        "lead": lead,
    }
    from schedctl.render import render_pair  # jinja2 on demand

    text, html = render_pair("event", **context)
    if kind == "init":
        subject = f"{event.name}: scheduled for {context['starts_local']}"
    else:
        subject = f"Reminder: {event.name} starts in {lead}"
    return subject, text, html


def plan_event(conn: sa.Connection, settings: Settings, event: Any, now: datetime) -> int:
    """Create or adjust one event's messages; returns how many were created or changed."""
    existing = {
        row.type: row
        for row in conn.execute(sa.select(messages).where(messages.c.event_id == event.id))
    }
    new: list[NewMessage] = []
    changed = 0

    def message(type_: str, send_at: datetime, content: tuple[str, str, str]) -> NewMessage:
        subject, text, html = content
        return NewMessage(
            account_id=event.account_id,
            type=type_,
            recipient=event.contact,
            subject=subject,
            body_text=text,
            body_html=html,
            send_at=send_at,
            idempotency_key=f"event:{event.id}:{type_}",
            event_id=event.id,
            expires_at=event.starts_at,
        )

    def update(row: Any, **values: Any) -> None:
        nonlocal changed
        if any(getattr(row, key) != value for key, value in values.items()):
            conn.execute(
                messages.update().where(messages.c.id == row.id).values(updated_at=now, **values)
            )
            changed += 1

    init = existing.get(INIT)
    if event.load_in_time is not None:
        if init is not None and init.status in PENDING:
            update(init, status="skipped", reason_code=HAS_LOAD_IN_TIME)
    elif init is None:
        # Only on the first planning: an INIT deleted by an operator stays deleted.
        if event.planned_at is None and event.starts_at > now:
            new.append(message(INIT, now, _content(event, "init")))
    elif init.status in PENDING:
        subject, text, html = _content(event, "init")
        update(
            init, subject=subject, body_text=text, body_html=html, recipient=event.contact,
            expires_at=event.starts_at,
        )  # fmt: skip

    for reminder in reminders_for(settings):
        send_at = event.starts_at - reminder.lead
        content = _content(event, "reminder", reminder.label)
        row = existing.get(reminder.type)
        if row is None:
            if send_at >= now:
                new.append(message(reminder.type, send_at, content))
            continue
        movable = row.status in PENDING or (
            row.status == "skipped" and row.reason_code in (PAST_DUE, EXPIRED)
        )
        if not movable:
            continue
        status, reason = row.status, row.reason_code
        if send_at < now:
            status, reason = "skipped", PAST_DUE
        elif row.status == "skipped":
            status, reason = "scheduled", None
        subject, text, html = content
        values: dict[str, Any] = {"subject": subject, "body_text": text, "body_html": html}
        values.update(recipient=event.contact, expires_at=event.starts_at)
        values.update(status=status, reason_code=reason, send_at=send_at)
        if row.send_at != send_at:
            values["next_attempt_at"] = None
        update(row, **values)

    created = enqueue(conn, new, now=now, domain=mail_domain(settings.mail_from))
    planned_at = max(now, event.updated_at)  # never "older than updated_at" again
    conn.execute(events.update().where(events.c.id == event.id).values(planned_at=planned_at))
    return len(created) + changed


def event_problem(settings: Settings, event: Any) -> str | None:
    """What makes an event row unusable (unreadable values, or messages that cannot
    be rendered from it), or None; checked before any of its messages is written."""
    problem = quarantine.first_problem(
        quarantine.text_problem(event.name, "name", required=True),
        quarantine.text_problem(event.contact, "contact"),
        quarantine.text_problem(event.tz, "tz", required=True),
    )
    if problem is not None:
        return problem
    try:
        _content(event, "init")
        for reminder in reminders_for(settings):
            _content(event, "reminder", reminder.label)
    except Exception as exc:  # one event's content must not stop the tick
        return f"its messages cannot be rendered ({type(exc).__name__}: {exc})"
    return None


def _plan_batch(
    conn: sa.Connection, settings: Settings, now: datetime
) -> tuple[int, int, dict[int, str]]:
    """Plan one batch of new or changed events: (messages created or changed, events
    claimed, events quarantined {id: reason})."""
    claim = (
        sa.select(events.c.id)
        .where(
            sa.or_(events.c.planned_at.is_(None), events.c.planned_at < events.c.updated_at),
            quarantine.active(events),
        )
        .order_by(events.c.id)
        .limit(PLAN_BATCH)
    )
    ids = [int(i) for i in conn.execute(claim.with_for_update(skip_locked=True)).scalars()]
    query = sa.select(events).order_by(events.c.id)
    rows, bad = quarantine.read_rows(conn, query, events.c.id, ids)
    planned = 0
    for row in rows:
        problem = event_problem(settings, row)
        if problem is None:
            planned += plan_event(conn, settings, row, now)
        else:
            bad[int(row.id)] = problem
    quarantine.mark(conn, events, bad, now)
    return planned, len(ids), bad


def plan_event_messages(
    db: Database, settings: Settings, now: datetime, found: quarantine.Found | None = None
) -> int:
    """Plan the messages of every new or changed event; returns messages created/changed.
    The events quarantined on the way are added to ``found``."""
    total = 0
    while True:
        planned, seen, bad = db.transaction(lambda conn: _plan_batch(conn, settings, now))
        total += planned
        if found is not None:
            found.add("events", bad)
        if seen < PLAN_BATCH:
            return total


# --- operator commands -----------------------------------------------------------


def _name(value: str) -> str:
    name = " ".join(value.split())
    if not name or len(name) > 200:
        raise ValidationError("an event name must be 1-200 characters")
    return name


def _check_load_in(starts_at: datetime, load_in_time: datetime | None, zone: ZoneInfo) -> None:
    if load_in_time is not None and load_in_time > starts_at:
        raise ValidationError(
            f"the load-in time {local_time(load_in_time, zone)} is after the start"
            f" {local_time(starts_at, zone)}"
        )


def add_event(
    conn: sa.Connection,
    settings: Settings,
    *,
    account_id: int,
    name: str,
    starts_at: datetime,
    contact: str,
    now: datetime,
    tz: str = "UTC",
    load_in_time: datetime | None = None,
) -> tuple[int, int]:
    """Create an event and plan its messages: (event id, messages planned).

    A naive ``starts_at`` or ``load_in_time`` is a wall time in ``tz`` (SPEC §3's rule
    for times skipped or repeated by a DST change). A load-in after the start is refused.
    """
    zone = parse_timezone(tz)
    starts_at = to_instant(starts_at, zone)
    load_in_time = None if load_in_time is None else to_instant(load_in_time, zone)
    _check_load_in(starts_at, load_in_time, zone)
    values = {
        "account_id": account_id,
        "name": _name(name),
        "starts_at": starts_at,
        "load_in_time": load_in_time,
        "contact": validate_email(contact),
        "tz": tz,
        "created_at": now,
        "updated_at": now,
    }
    event_id = conn.execute(events.insert().values(**values).returning(events.c.id)).scalar_one()
    planned = plan_event(conn, settings, get_event(conn, account_id, int(event_id)), now)
    return int(event_id), planned


def get_event(conn: sa.Connection, account_id: int, event_id: int) -> sa.Row[Any]:
    return get_owned(conn, events, event_id, account_id, "event")


def update_event(
    conn: sa.Connection,
    settings: Settings,
    *,
    account_id: int,
    event_id: int,
    now: datetime,
    starts_at: datetime | None = None,
    load_in_time: datetime | None = None,
) -> tuple[sa.Row[Any], int]:
    """Change an event and re-plan its messages: (the event, messages changed).

    A naive time is a wall time in the event's zone, as in `add_event`.
    """
    if starts_at is None and load_in_time is None:
        raise ValidationError("nothing to change: give --starts-at and/or --load-in-time")
    existing = get_event(conn, account_id, event_id)
    zone = ZoneInfo(existing.tz)
    values: dict[str, Any] = {"updated_at": now}
    if starts_at is not None:
        values["starts_at"] = to_instant(starts_at, zone)
    if load_in_time is not None:
        values["load_in_time"] = to_instant(load_in_time, zone)
    _check_load_in(
        values.get("starts_at", existing.starts_at),
        values.get("load_in_time", existing.load_in_time),
        zone,
    )
    conn.execute(events.update().where(events.c.id == event_id).values(**values))
    changed = plan_event(conn, settings, get_event(conn, account_id, event_id), now)
    return get_event(conn, account_id, event_id), changed


def list_events(conn: sa.Connection, account_id: int) -> list[sa.Row[Any]]:
    """An account's events, soonest first."""
    query = (
        sa.select(events)
        .where(events.c.account_id == account_id)
        .order_by(events.c.starts_at, events.c.id)
    )
    return list(conn.execute(query))


def event_messages(
    conn: sa.Connection, account_id: int, event_id: int
) -> tuple[sa.Row[Any], list[dict[str, Any]]]:
    """An event and its messages, soonest first, as `events show` prints them: each
    one's send time in the event's zone beside UTC."""
    event = get_event(conn, account_id, event_id)
    zone = parse_timezone(event.tz)
    m = messages.c
    rows = conn.execute(
        sa.select(m.id, m.type, m.send_at, m.expires_at, m.status, m.reason_code)
        .where(m.event_id == event_id, m.account_id == account_id)
        .order_by(m.send_at, m.id)
    )
    return event, [
        {
            "id": str(r.id),
            "type": r.type,
            "send_at_local": r.send_at.astimezone(zone),
            "send_at": r.send_at,
            "expires_at": r.expires_at,
            "status": r.status,
            "reason_code": r.reason_code,
        }
        for r in rows
    ]


def event_summary(row: Any) -> dict[str, Any]:
    return {
        "id": str(row.id),
        "name": row.name,
        "starts_at": row.starts_at,
        "load_in_time": row.load_in_time,
        "contact": row.contact,
        "tz": row.tz,
    }


@dataclass(frozen=True)
class Deleted:
    """What `events delete` did."""

    id: int
    name: str
    messages_skipped: int  # unsent: now skipped, EVENT_DELETED
    messages_kept: int  # every message of the event, skipped ones included


class EventBusy(TemporaryError):
    """Some of the event's messages are being sent right now."""


def delete_event(conn: sa.Connection, account_id: int, event_id: int, now: datetime) -> Deleted:
    """Delete an event of ``account_id``: its unsent messages are skipped
    (EVENT_DELETED); all of its messages stay, with ``event_id`` NULL, so the event
    can go (the foreign key would delete them with it) and the audit keeps them.

    A message of the event under a live lease is being sent right now: EventBusy, and
    nothing is changed (see :func:`delete_event_waiting`).
    """
    event = get_owned(conn, events, event_id, account_id, "event", lock=True)
    m = messages.c
    own = [m.event_id == event_id, m.account_id == account_id]
    # Locked: a dispatcher cannot claim one of them between this look and the update.
    rows = list(
        conn.execute(sa.select(m.id, m.status, m.lease_expires_at).where(*own).with_for_update())
    )
    busy = sum(1 for r in rows if leases.is_live(r, now))
    if busy:
        raise EventBusy(
            f"event {event_id}: {busy} of its messages are being sent right now;"
            " nothing was deleted; try again shortly"
        )
    skipped = conn.execute(
        messages.update()
        .where(*own, m.status.in_(PENDING))
        .values(
            status="skipped",
            reason_code=EVENT_DELETED,
            next_attempt_at=None,
            updated_at=now,
            **leases.CLEARED,
        )
    ).rowcount
    conn.execute(messages.update().where(*own).values(event_id=None))
    conn.execute(events.delete().where(events.c.id == event_id, events.c.account_id == account_id))
    return Deleted(int(event.id), event.name, int(skipped or 0), len(rows))


def delete_event_waiting(
    db: Database, account_id: int, event_id: int, now: datetime, wait: timedelta | None = None
) -> Deleted:
    """:func:`delete_event`, waiting up to ``wait`` (default DELETE_WAIT) for a
    dispatcher sending one of the event's messages to record its outcome (then that
    message is sent, not skipped); still busy after that: EventBusy (exit 75, nothing
    changed)."""
    return leases.wait_while_held(
        lambda at: db.transaction(lambda conn: delete_event(conn, account_id, event_id, at)),
        now,
        DELETE_WAIT if wait is None else wait,
        EventBusy,
    )
