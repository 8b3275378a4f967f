"""Finding the due users, page by page, with one query per page over the zones in use
(set-based; SPEC §5).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any, NamedTuple

import sqlalchemy as sa

from schedctl import quarantine
from schedctl.db.schema import digests, users
from schedctl.digest.due import ZoneDay, zone_day
from schedctl.errors import ValidationError, quoted
from schedctl.values import parse_hhmm, parse_timezone
from schedctl.zones import zone

log = logging.getLogger("schedctl.digest")

PAGE = 500  # users claimed per transaction, at most
# A run's first page is smaller, and each next one twice the size up to PAGE: a run
# with little to do commits it soon, and runs started together share the first
# users at a fine grain before pages grow to where their fixed costs are amortised.
FIRST_PAGE = 100
_IN_CHUNK = 500  # ids per IN (...) list


@dataclass(frozen=True)
class DigestOptions:
    """Which digests one run handles."""

    account_id: int | None = None  # None: every account
    user_id: int | None = None
    local_date: date | None = None  # only this local date (today, or a catch-up day)
    limit: int | None = None  # users (digest days) handled at most


def _chunks(values: Sequence[Any], size: int = _IN_CHUNK) -> Iterator[Sequence[Any]]:
    for start in range(0, len(values), size):
        yield values[start : start + size]


# --- planning (set-based) -------------------------------------------------------------


class DueUser(NamedTuple):
    """One (user, local date) a digest is owed for (a tuple: a page makes hundreds of
    them, and a frozen dataclass took four times as long to make)."""

    user_id: int
    account_id: int
    email: str
    tz: str
    local_date: date
    digest_id: int | None = None  # set for a deferred day being retried
    enabled: bool = True
    problem: str | None = None  # the user's row cannot be used: it is quarantined


def _scope(table: sa.Table, options: DigestOptions) -> list[sa.ColumnElement[bool]]:
    where = []
    if options.account_id is not None:
        where.append(table.c.account_id == options.account_id)
    if options.user_id is not None:
        where.append((table.c.id if table is users else table.c.user_id) == options.user_id)
    return where


def load_zones(
    conn: sa.Connection,
    now: datetime,
    options: DigestOptions,
    catch_up_days: int,
    bad: dict[int, str] | None = None,
) -> dict[str, ZoneDay]:
    """The local day of every zone an opted-in user (in scope) lives in. Users whose
    zone cannot be read are left out and added to ``bad`` ({id: reason}), for the
    caller to quarantine."""
    where = [users.c.digest_enabled, quarantine.active(users), *_scope(users, options)]
    try:
        names: list[Any] | None = list(
            conn.execute(sa.select(users.c.tz).distinct().where(*where)).scalars()
        )
    except quarantine.READ_ERRORS as exc:
        if quarantine.undecodable(exc) is None:
            raise
        names = None
    if names is None or not all(isinstance(name, str) for name in names):
        names = _readable_zones(conn, where, {} if bad is None else bad)
    if bad is not None:
        _misspelt_digest_times(conn, where, bad)
    zones = {}
    for tz in names:
        day = zone_day(tz, now, catch_up_days)
        if day is None:
            log.warning("users in zone %r are skipped: it is not a known IANA time zone", tz)
        else:
            zones[tz] = day
            zone(tz)  # kept loaded for the run: each user's zone is read per user
    return zones


def _readable_zones(
    conn: sa.Connection, where: list[sa.ColumnElement[bool]], bad: dict[int, str]
) -> list[str]:
    """The zones of the users ``where`` selects, read row by row (the slow path, taken
    only when some user's zone cannot be read); the unreadable ones go to ``bad``."""
    ids = [int(i) for i in conn.execute(sa.select(users.c.id).where(*where)).scalars()]
    query = sa.select(users.c.id, users.c.tz)
    names: set[str] = set()
    for chunk in _chunks(ids):
        rows, unreadable = quarantine.read_rows(conn, query, users.c.id, chunk)
        bad.update(unreadable)
        for row in rows:
            problem = quarantine.text_problem(row.tz, "tz", required=True)
            if problem:
                bad[int(row.id)] = problem
            else:
                names.add(row.tz)
    return sorted(names)


def _misspelt_digest_times(
    conn: sa.Connection, where: list[sa.ColumnElement[bool]], bad: dict[int, str]
) -> None:
    """Add to ``bad`` the users ``where`` selects whose digest time is not stored as
    ``users add`` stores it (``HH:MM``, 00:00-23:59): the due query compares it as
    text, so `8:00` or `8am`, written by an application, would never be due."""
    t = users.c.digest_time
    try:
        times = list(conn.execute(sa.select(t).distinct().where(*where)).scalars())
    except quarantine.READ_ERRORS as exc:
        if quarantine.undecodable(exc) is None:
            raise
        times = None
    if times is not None:
        wrong = [value for value in times if not _stored_hhmm(value)]
        if not wrong:
            return
        rows = conn.execute(sa.select(users.c.id, t).where(*where, t.in_(wrong))).all()
    else:  # some time cannot be read: each row alone (the slow path)
        ids = [int(i) for i in conn.execute(sa.select(users.c.id).where(*where)).scalars()]
        rows = []
        for chunk in _chunks(ids):
            found, unreadable = quarantine.read_rows(
                conn, sa.select(users.c.id, t), users.c.id, chunk
            )
            bad.update(unreadable)
            rows += [row for row in found if not _stored_hhmm(row[1])]
    for user_id, value in rows:
        shown = quoted(value) if isinstance(value, str) else type(value).__name__
        bad.setdefault(int(user_id), f"digest_time {shown} is not HH:MM (00:00-23:59)")


def _stored_hhmm(value: Any) -> bool:
    if not isinstance(value, str):
        return False
    try:
        return f"{parse_hhmm(value):%H:%M}" == value
    except ValidationError:
        return False


def _by_zone(zones: Iterable[ZoneDay], value: Any, type_: Any) -> sa.ColumnElement[Any]:
    """``CASE users.tz WHEN zone THEN value(zone) ... END``, typed ``type_``."""
    return sa.case({zone.tz: sa.literal(value(zone), type_) for zone in zones}, value=users.c.tz)


def _no_digest_on(day: sa.ColumnElement[Any]) -> sa.ColumnElement[bool]:
    return ~sa.exists().where(digests.c.user_id == users.c.id, digests.c.local_date == day)


def due_query(
    zones: dict[str, ZoneDay],
    options: DigestOptions,
    *,
    catch_up: bool = False,
    lock: bool = False,
) -> sa.Select[Any] | None:
    """The query of a page of due users, or None when no zone has any: those with id
    above the parameter ``after``, at most ``size`` of them, each with their address
    (built once, executed per page); ``lock``: it claims their rows (SKIP LOCKED).

    ``catch_up``: the users owed their previous local day instead (catch_up_days):
    not due yet today, existing before today began, and with no row for that day.
    """
    u = users.c
    if catch_up:
        chosen = [z for z in zones.values() if z.catch_up is not None]
    else:
        chosen = [z for z in zones.values() if z.cutoff is not None]
    if options.local_date is not None:
        wanted = options.local_date
        chosen = [z for z in chosen if (z.catch_up if catch_up else z.today) == wanted]
    if not chosen:
        return None
    if catch_up:
        day = _by_zone(chosen, lambda z: z.catch_up, sa.Date())
        # Not yet due today ('' is before every HH:MM: none is due).
        cutoff = _by_zone(chosen, lambda z: z.cutoff or "", sa.Text())
        started = _by_zone(chosen, lambda z: z.today_start, users.c.created_at.type)
        condition = sa.and_(u.digest_time > cutoff, u.created_at < started)
    else:
        day = _by_zone(chosen, lambda z: z.today, sa.Date())
        condition = u.digest_time <= _by_zone(chosen, lambda z: z.cutoff, sa.Text())
    query = (
        sa.select(u.id, u.account_id, u.tz, day.label("local_date"), u.email)
        .where(
            u.digest_enabled,
            quarantine.active(users),
            u.tz.in_([z.tz for z in chosen]),
            condition,
            _no_digest_on(day),
            u.id > sa.bindparam("after", type_=u.id.type),
            *_scope(users, options),
        )
        .order_by(u.id)
        .limit(sa.bindparam("size", type_=sa.Integer()))
    )
    return query.with_for_update(skip_locked=True, key_share=True) if lock else query


def due_page(
    conn: sa.Connection,
    zones: dict[str, ZoneDay],
    options: DigestOptions,
    *,
    catch_up: bool = False,
    after: int = 0,
    size: int = PAGE,
    lock: bool = False,
    query: sa.Select[Any] | None = None,
) -> list[DueUser]:
    """One page of due users, ordered by id; ``lock``: claim their rows (SKIP LOCKED).
    ``query``: the page's query built already (:func:`due_query`, with the same
    arguments). A user whose address cannot be used comes with its ``problem``."""
    if query is None:
        query = due_query(zones, options, catch_up=catch_up, lock=lock)
        if query is None:
            return []
    params = {"after": after, "size": size}
    checked: dict[tuple[type, Any], str | None] = {}  # a page's users share a few zones
    try:
        rows = [
            (user_id, account_id, tz, local_date, email, _user_problem(email, tz, checked))
            for user_id, account_id, tz, local_date, email in conn.execute(query, params)
        ]
    except quarantine.READ_ERRORS as exc:
        if quarantine.undecodable(exc) is None:
            raise
        # Some address cannot be read: the page without them, then each user's row.
        without = query.with_only_columns(*query.selected_columns[:4])
        page = list(conn.execute(without, params))
        found, bad = _read_users(conn, [int(r.id) for r in page])
        rows = [
            (*r, found[int(r.id)].email if int(r.id) in found else None, bad.get(int(r.id)))
            for r in page
            if int(r.id) in found or int(r.id) in bad
        ]
    return [
        DueUser(
            int(user_id),
            int(account_id),
            email if problem is None else "",
            tz,
            _as_date(local_date),
            problem=problem,
        )
        for user_id, account_id, tz, local_date, email, problem in rows
    ]


def _user_problem(
    email: Any, tz: Any, zones: dict[tuple[type, Any], str | None] | None = None
) -> str | None:
    """What makes a user's row unusable for a digest (see schedctl.quarantine), or None.
    ``zones``: each zone's problem found so far, by value (its type included)."""
    zones = {} if zones is None else zones
    key = (type(tz), tz)
    if key not in zones:
        zones[key] = _zone_problem(tz)
    return quarantine.text_problem(email, "email", required=True) or zones[key]


def _zone_problem(tz: Any) -> str | None:
    problem = quarantine.text_problem(tz, "tz", required=True)
    if problem is None:
        try:
            parse_timezone(tz)
        except ValidationError:
            problem = f"tz {tz[:60]!r} is not a known time zone"
    return problem


def _read_users(conn: sa.Connection, user_ids: list[int]) -> tuple[dict[int, Any], dict[int, str]]:
    """The users' rows (email, tz, digest_enabled) by id, and those that cannot be
    used, with the reason."""
    query = sa.select(users.c.id, users.c.email, users.c.tz, users.c.digest_enabled)
    rows, bad = quarantine.read_rows(conn, query, users.c.id, user_ids)
    found = {}
    for row in rows:
        problem = _user_problem(row.email, row.tz)
        if problem:
            bad[int(row.id)] = problem
        else:
            found[int(row.id)] = row
    return found, bad


def _as_date(value: Any) -> date:
    return value if isinstance(value, date) else date.fromisoformat(str(value))


def deferred_query(options: DigestOptions, *, after: int = 0, size: int = PAGE) -> sa.Select[Any]:
    """The next page of deferred days to retry (digest id > ``after``), oldest first."""
    d = digests.c
    query = (
        sa.select(d.id, d.user_id, d.account_id, d.local_date)
        .select_from(digests.join(users, users.c.id == d.user_id))
        .where(d.status == "deferred", d.id > after, *_scope(digests, options))
        .where(quarantine.active(users))
        .order_by(d.id)
        .limit(size)
    )
    if options.local_date is not None:
        query = query.where(d.local_date == options.local_date)
    return query


def deferred_page(
    conn: sa.Connection,
    options: DigestOptions,
    *,
    after: int = 0,
    size: int = PAGE,
    lock: bool = False,
) -> list[DueUser]:
    """One page of deferred days (their users' current address and zone)."""
    query = deferred_query(options, after=after, size=size)
    if lock:
        query = query.with_for_update(skip_locked=True, key_share=True)
    page = list(conn.execute(query))
    found, bad = _read_users(conn, sorted({int(r.user_id) for r in page}))
    days = []
    for r in page:
        user = found.get(int(r.user_id))
        days.append(
            DueUser(
                int(r.user_id),
                int(r.account_id),
                user.email if user else "",
                user.tz if user else "UTC",
                _as_date(r.local_date),
                digest_id=int(r.id),
                enabled=bool(user.digest_enabled) if user else False,
                problem=None if user else bad.get(int(r.user_id), "the user cannot be read"),
            )
        )
    return days
