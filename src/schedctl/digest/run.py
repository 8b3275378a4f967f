"""`digest`: each opted-in user's daily digest, exactly once per local day (SPEC §5).

Due. A user is due when ``digest_enabled``, their ``digest_time`` has passed on their
current local date (inclusive; a time in a spring-forward gap is due at the first
instant after it, a repeated one at its first occurrence: cadence's rule, §3), and
no ``digests`` row exists for (user, that date). Planning is set-based: the zones of
the opted-in users are read once per run; for each zone the local date and the
latest due ``HH:MM`` (its *cutoff*: due-ness is monotone in the wall time, so a
binary search over the day's minutes with ``cadence.first_instant_at_or_after``) are
computed in Python, and one query per page selects the due users with a CASE over
the zones. Only the current local date is sent: a day on which `digest` never ran
is not sent late, unless ``[digest] catch_up_days = 1``, which lets a user whose
digest time has not come yet today still get yesterday's (if they existed then).

Claim. A page of due users (100, then twice as many each page up to 500) is
claimed in one transaction: the page query locks their rows (FOR NO KEY UPDATE SKIP
LOCKED on PostgreSQL, so concurrent runs share the work; SQLite's write lock
serialises), the (user, local_date) rows are inserted with ON CONFLICT DO NOTHING (a
conflict: another process has that day), the users' undigested notifications are
selected (locked) with the content of each user's newest ``max_items``, one DIGEST
message per user is rendered (grouped by ``digest_key``, the newest ``max_items``
listed, "and N more") and enqueued (key ``digest:{user}:{date}``), the notifications
are marked consumed by the digest and the day recorded ``completed`` -- or
``skipped`` when there was nothing new -- and all of it commits together. A process
killed anywhere leaves a page done or untouched, so a digest day holds no lease
across transactions (the row locks are its lease; see leases.py); a notification
that arrives after the claim waits for the next local day.

On PostgreSQL a run keeps two claim transactions going at once (CLAIMERS, each on a
connection of its own): while one renders its page, the server runs the other's
statements. The next page always starts after the last user a page has taken, so no
two share a user; the first error stops both after their page. A page's transaction
made again (a transient error) starts where its first attempt did, and when that
happened a pass from the first user follows, which claims anyone a shorter second
attempt left behind (and so on while a pass made a page again). With --limit, and on
SQLite (one writer at a time), a run claims on one connection. The claimers are
``workers.Worker`` threads, waited for through Ctrl-C.

A page costs the same whatever the number of users: about ten statements, each
built once per run (:class:`_Statements`) and binding the page as a few parameters
(``dialect.one_of``, ``ValueRows``, ``RowInserter``: arrays on PostgreSQL, JSON rows
or an executemany on SQLite), planned as index probes and committed without waiting
for the disk (``dialect.for_bulk_pages``); rows are read as tuples, each user's zone
is loaded once (``zones.zone``).

Quota. With a daily quota each digest that has something to send reserves one unit
of the UTC day's budget in its claim transaction (``quota.reserve``, the guarded
statement dispatch uses) and its send uses that unit (``dispatch_due``'s
``prepaid``). When none is left the day is recorded ``deferred``: its notifications
stay unconsumed, and every later run first retries the deferred days (oldest first,
whatever their date: they are owed) once there is budget again -- the digest is then
built from what is unconsumed at that moment and sent, once.

Send. Finally the run dispatches due DIGEST messages through the dispatcher
(suppression, weekend, enabled and retry rules unchanged), including any a killed
run committed but never sent.

Preview. The same plan in read-only transactions, with each user's item count;
nothing is written.
"""

from __future__ import annotations

import functools
import logging
import sys
import threading
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime, tzinfo
from typing import Any

import sqlalchemy as sa

from schedctl import heap, leases, quarantine
from schedctl.config import Settings
from schedctl.db import dialect
from schedctl.db.database import Database
from schedctl.db.schema import Id, digests, messages, notifications, users
from schedctl.db.types import UTCDateTime, as_instant
from schedctl.delivery import quota
from schedctl.delivery.outbox import AlikeMessages, installation_id, mail_domain
from schedctl.digest.compose import Item, render_digest
from schedctl.digest.due import ZoneDay
from schedctl.digest.plan import (
    FIRST_PAGE,
    PAGE,
    DigestOptions,
    DueUser,
    _as_date,
    _chunks,
    deferred_page,
    due_page,
    due_query,
    load_zones,
)
from schedctl.errors import ValidationError
from schedctl.notifications import MAX_TITLE, clip, read_limited, text_problem
from schedctl.workers import Worker, wait_for
from schedctl.zones import zone

log = logging.getLogger("schedctl.digest")

MESSAGE_TYPE = "DIGEST"
# DIGEST messages one run dispatches at most (each run sends what it made, and more).
DISPATCH_LIMIT = 1_000_000

COUNT_KEYS = (
    "users_due",
    "digests_sent",
    "skipped_empty",
    "deferred_quota",
    "failed",
    "digests_created",
    "notifications_digested",
    "digests_retried",
    "messages_deferred",
    "quarantined",
)


# --- the run ---------------------------------------------------------------------------


def _undigested() -> list[sa.ColumnElement[bool]]:
    """A normal notification no digest or message has consumed and the user has not
    read: exactly the partial index notifications_undigested. consumed_at also keeps
    out one whose digest row was purged (digest_id SET NULL)."""
    n = notifications.c
    return [
        n.priority == "normal",
        n.digest_id.is_(None),
        n.message_id.is_(None),
        n.read_at.is_(None),
        n.consumed_at.is_(None),
    ]


class _Statements:
    """The claim transaction's statements, built once per run for its database: each
    binds a page whatever its size as a few parameters, so it is compiled (and
    parsed by the driver) once."""

    def __init__(self, sa_dialect: sa.Dialect, max_body: int) -> None:
        n = notifications.c
        claimed = (
            sa.select(n.id, n.user_id)
            .where(dialect.one_of(n.user_id, name="users"), *_undigested())
            .with_for_update(skip_locked=True)
        )
        self.pending = claimed.order_by(n.user_id, n.id)
        # The creation instant as the driver gives it, read by _item (types.as_instant):
        # the column type's processing, done for every row as it is fetched, took
        # twice as long for a page of 50,000 items on SQLite.
        created_at = sa.type_coerce(n.created_at, sa.types.NullType()).label("created_at")
        content = [
            n.digest_key, *read_limited(n.title, MAX_TITLE), *read_limited(n.body, max_body),
            created_at,
        ]  # fmt: skip
        self.items = sa.select(n.id, n.user_id, *content)
        # The pending ids and, for each user's newest ``max_items``, their content: one
        # statement (locked in a CTE: PostgreSQL locks no rows of a window query).
        locked = claimed.cte("locked")
        newest = sa.func.row_number().over(
            partition_by=locked.c.user_id, order_by=locked.c.id.desc()
        )
        ranked = sa.select(locked.c.id, locked.c.user_id, newest.label("rank")).subquery("ranked")
        listed = ranked.c.rank <= sa.bindparam("max_items", type_=sa.Integer())
        self.pending_items = (
            sa.select(
                ranked.c.id,
                ranked.c.user_id,
                *[sa.case((listed, column)).label(column.key) for column in content],
                sa.type_coerce(listed, sa.types.NullType()).label("listed"),  # (read as truthy)
            )
            .select_from(ranked.join(notifications, n.id == ranked.c.id))
            .order_by(ranked.c.user_id, ranked.c.id)
        )
        self.days = dialect.RowInserter(
            sa_dialect, digests, ["account_id", "user_id", "local_date"],
            same=["status", "items", "created_at", "updated_at", "expires_at"],
            conflict=["user_id", "local_date"], returning=["id", "user_id", "local_date"],
            json_rows=True,
        )  # fmt: skip
        self.messages = AlikeMessages(sa_dialect, MESSAGE_TYPE, subscription=True)
        now = sa.bindparam("now", type_=UTCDateTime)
        self.consumed = dialect.ValueRows(sa_dialect, "consumed", [("id", Id), ("digest_id", Id)])
        self.consume = (
            notifications.update()
            .where(n.id == self.consumed.c.id)
            .values(digest_id=self.consumed.c.digest_id, consumed_at=now)
        )
        self.outcomes = dialect.ValueRows(
            sa_dialect, "outcome",
            [("id", Id), ("status", sa.Text()), ("items", sa.Integer()), ("message_id", Id)],
        )  # fmt: skip
        o = self.outcomes.c
        self.record = (
            digests.update()
            .where(digests.c.id == o.id)
            .values(
                status=o["status"], items=o["items"], message_id=o["message_id"], updated_at=now
            )
        )


# Claim transactions a run keeps going at once on PostgreSQL. A page's time is about
# half rendering (Python) and half statements the server runs (marking 5,000
# notifications consumed, enqueueing the rendered mail): with two, one renders while
# the other's statements run. Pages never overlap (each takes the users after the
# last one a page has taken); their row locks keep them apart from other runs as
# before. SQLite writes one transaction at a time, so it claims on one.
CLAIMERS = 2


@dataclass
class _Pages:
    """What a run's claimers share: where the next page starts, and the stop."""

    after: int = 0  # the last user id a page has taken
    retried: bool = False  # some page's transaction was made again
    stop: threading.Event = field(default_factory=threading.Event)
    errors: list[BaseException] = field(default_factory=list)  # in the order raised
    lock: threading.Lock = field(default_factory=threading.Lock)

    def halt(self, error: BaseException) -> None:
        """Stop every claimer after its page, noting ``error``."""
        with self.lock:
            self.errors.append(error)
        self.stop.set()


@dataclass
class _Page:
    """What one committed claim transaction did (counted only once committed)."""

    counts: Counter[str] = field(default_factory=Counter)
    prepaid: dict[int, quota.Reservation] = field(default_factory=dict)
    handled: int = 0  # digest days this transaction took
    exhausted: bool = False
    found: quarantine.Found = field(default_factory=quarantine.Found)


class DigestRun:
    """One `digest` run: its clock, settings, quota state and counts."""

    def __init__(
        self, db: Database, settings: Settings, now: datetime, options: DigestOptions
    ) -> None:
        self.db = db
        self.settings = settings
        self.options = options
        self.start = now
        self.now = leases.clock_from(now)  # ``now`` advanced by the time run since
        self.max_items = settings.digest_max_items
        self.max_body = settings.digest_max_body_chars
        self.catch_up_days = settings.digest_catch_up_days
        self.retention = settings.digest_retention
        self.quota_limit = quota.daily_limit(settings)
        self.domain = mail_domain(settings.mail_from)
        self.counts: Counter[str] = Counter({key: 0 for key in COUNT_KEYS})
        self.prepaid: dict[int, quota.Reservation] = {}
        self.exhausted = False  # the day's budget ran out during this run
        self.handled = 0
        self.found = quarantine.Found()  # rows quarantined (schedctl.quarantine)
        self.page_size = FIRST_PAGE  # grows to PAGE (plan.FIRST_PAGE)
        self._statements: _Statements | None = None
        self._installation: str | None = None

    def statements(self, conn: sa.Connection) -> _Statements:
        if self._statements is None:
            self._statements = _Statements(conn.dialect, self.max_body)
        return self._statements

    def installation(self, conn: sa.Connection) -> str:
        """This database's installation id (which Message-IDs hash), read once."""
        if self._installation is None:
            self._installation = installation_id(conn)
        return self._installation

    @property
    def room(self) -> int:
        """How many digest days the next page may take (its size; --limit)."""
        if self.options.limit is None:
            return self.page_size
        return max(0, min(self.page_size, self.options.limit - self.handled))

    def _count(self, page: _Page, last: int) -> int:
        """Count a committed page's outcome (never inside the transaction: a retried
        one must not count twice); returns ``last``."""
        self.counts.update(page.counts)
        self.prepaid.update(page.prepaid)
        self.handled += page.handled
        self.exhausted = self.exhausted or page.exhausted
        self.found.merge(page.found)
        self.page_size = min(PAGE, self.page_size * 2)
        return last

    # ------------------------------------------------------------------ claiming

    def retry_deferred(self) -> None:
        """Build the deferred days again, oldest first, while there is budget."""
        after = 0
        while self.room and not self.exhausted and self._budget_left():
            done = self.db.transaction(functools.partial(self._retry_page, after=after))
            if done is None:
                return
            after = self._count(*done)

    def _budget_left(self) -> bool:
        limit = self.quota_limit
        if limit is None:
            return True
        day = quota.quota_day(self.now())
        return bool(self.db.transaction(lambda c: quota.remaining(c, day, limit), read_only=True))

    def _retry_page(self, conn: sa.Connection, *, after: int) -> tuple[_Page, int] | None:
        """Lock and build one page of deferred days: (outcome, last id), or None."""
        dialect.for_bulk_pages(conn)
        page = deferred_page(conn, self.options, after=after, size=self.room, lock=True)
        if not page:
            return None
        usable, found = self._set_aside(conn, page)
        done = self._fill(conn, usable, retried=True)
        done.found.merge(found)
        return done, max(_id(p) for p in page)

    def load_zones(self) -> dict[str, ZoneDay]:
        """The zones of the opted-in users; users whose zone cannot be read are
        quarantined (in a transaction of their own, the reading one is read-only)."""

        def read(conn: sa.Connection) -> tuple[dict[str, ZoneDay], dict[int, str]]:
            bad: dict[int, str] = {}
            zones = load_zones(conn, self.start, self.options, self.catch_up_days, bad)
            return zones, bad

        zones, bad = self.db.transaction(read, read_only=True)
        if bad:
            self.db.transaction(lambda conn: quarantine.mark(conn, users, bad, self.now()))
            self.found.add("users", bad)
        return zones

    def claim_due(self, zones: dict[str, ZoneDay], *, catch_up: bool) -> None:
        """Claim and build every due user's digest, a page per transaction; on
        PostgreSQL on CLAIMERS connections at once (see _Pages)."""
        query = due_query(zones, self.options, catch_up=catch_up, lock=True)
        if query is None:
            return
        claim = functools.partial(self._claim_page, zones=zones, catch_up=catch_up, query=query)
        pages = _Pages()
        self._claim_pages(claim, pages, self._claimers())
        while pages.retried and self.room:
            # A page made again may have ended before its first attempt had moved the
            # cursor (another run took some of its users meanwhile): a pass from the
            # start claims whoever is still due, and so on while a pass made a page
            # again (transient errors, whose retries are bounded, bound the passes).
            pages = _Pages()
            self._claim_pages(claim, pages, 1)

    def _claimers(self) -> int:
        """How many claim transactions run at once: CLAIMERS, unless the database
        writes one at a time or --limit counts the days (one keeps the count exact)."""
        if self.db.capabilities.single_writer:
            return 1  # SQLite: one write transaction at a time whatever the connections
        if self.options.limit is not None:
            return 1
        return CLAIMERS

    def _claim_pages(
        self, claim: Callable[..., tuple[_Page, int] | None], pages: _Pages, claimers: int
    ) -> None:
        """Claim pages until none is left, over ``claimers`` connections (the others in
        threads of their own); the first error any of them raises stops them all."""
        others = [
            Worker(functools.partial(self._claimer_beside, claim, pages), name=f"digest-{n}")
            for n in range(2, claimers + 1)
        ]
        try:
            for worker in others:
                worker.start()
            self._claimer(claim, pages)
        except BaseException as exc:
            pages.halt(exc)
            raise
        finally:
            raising = sys.exc_info()[1]
            try:
                wait_for(others, pages.halt)
            except BaseException as exc:  # an interrupt, raised once they have ended
                raising = exc
                raise
            finally:
                # The run reports one error, in one line; another is most often the
                # same cause (the database gone), so it is told at debug level.
                shown = raising or next(iter(pages.errors), None)
                for error in pages.errors:
                    if error is not shown:
                        log.debug("another claim transaction failed too", exc_info=error)
        if pages.errors:
            raise pages.errors[0]

    def _claimer(self, claim: Callable[..., tuple[_Page, int] | None], pages: _Pages) -> None:
        """One connection's pages, each in a transaction of its own."""
        while self.room and not pages.stop.is_set():
            start: list[int] = []  # the page's first user, fixed by its first attempt
            done = self.db.transaction(functools.partial(claim, pages=pages, start=start))
            if done is None:
                pages.stop.set()  # nobody is due after the cursor
                return
            with pages.lock:
                self._count(*done)

    def _claimer_beside(
        self, claim: Callable[..., tuple[_Page, int] | None], pages: _Pages
    ) -> None:
        """A claimer in a thread of its own: its error stops the others (and is the
        run's to raise)."""
        try:
            self._claimer(claim, pages)
        except BaseException as exc:
            pages.halt(exc)

    def _claim_page(
        self,
        conn: sa.Connection,
        *,
        zones: dict[str, ZoneDay],
        catch_up: bool,
        query: sa.Select[Any],
        pages: _Pages,
        start: list[int],
    ) -> tuple[_Page, int] | None:
        """Claim and build the next page of due users: (outcome, last user id), or None.

        ``start`` holds the user id the page starts after once its first attempt has
        read the cursor; a retried transaction starts there again.
        """
        dialect.for_bulk_pages(conn)
        with pages.lock:  # one page query at a time, so that pages do not overlap
            if start:
                pages.retried = True
            else:
                start.append(pages.after)
            page = due_page(
                conn, zones, self.options, catch_up=catch_up, after=start[0], size=self.room,
                lock=True, query=query,
            )  # fmt: skip
            if page:
                pages.after = max(pages.after, page[-1].user_id)
        if not page:
            return None
        usable, found = self._set_aside(conn, page)
        done = self._fill(conn, self._insert_days(conn, usable), retried=False)
        done.found.merge(found)
        return done, page[-1].user_id

    def _set_aside(
        self, conn: sa.Connection, page: list[DueUser]
    ) -> tuple[list[DueUser], quarantine.Found]:
        """Quarantine the page's users that cannot be used; the others."""
        bad = {p.user_id: p.problem for p in page if p.problem is not None}
        quarantine.mark(conn, users, bad, self.now())
        found = quarantine.Found()
        found.add("users", bad)
        return [p for p in page if p.problem is None], found

    def _insert_days(self, conn: sa.Connection, page: list[DueUser]) -> list[DueUser]:
        """Insert the page's (user, local_date) rows; those another process has are left."""
        now = self.now()
        inserted = self.statements(conn).days(
            conn,
            [(p.account_id, p.user_id, p.local_date) for p in page],
            {"status": "scheduled", "items": 0, "created_at": now, "updated_at": now,
             "expires_at": now + self.retention},
        )  # fmt: skip
        ids = {(int(user), _as_date(day)): int(key) for key, user, day in inserted}
        return [
            DueUser(p.user_id, p.account_id, p.email, p.tz, p.local_date, digest_id=key_id)
            for p in page
            if (key_id := ids.get((p.user_id, p.local_date))) is not None
        ]

    # ------------------------------------------------------------------ building

    def _fill(self, conn: sa.Connection, claimed: list[DueUser], *, retried: bool) -> _Page:
        """Build the claimed days' digests in the claim transaction; their outcome."""
        page = _Page(handled=len(claimed))
        if not claimed:  # another run took every day of this page since it was read
            return page
        page.counts["users_due"] += len(claimed)
        if retried:
            page.counts["digests_retried"] += len(claimed)
        now = self.now()
        pending, first = self._pending(conn, [c for c in claimed if c.enabled])
        outcome: dict[int, dict[str, Any]] = {}  # digest id -> new column values
        owners: dict[int, DueUser] = {}  # user id -> the day their notifications go to
        for day in claimed:
            if day.enabled and pending.get(day.user_id) and day.user_id not in owners:
                owners[day.user_id] = day  # a user's oldest claimed day takes them all
            else:
                outcome[_id(day)] = {"status": "skipped", "items": 0}
        exhausted = self.exhausted
        if exhausted:
            for day in owners.values():
                outcome[_id(day)] = {"status": "deferred", "items": 0}
            owners = {}
        built = self._build(conn, owners, pending, first, outcome, page.found)

        new: list[tuple[DueUser, _Mail, quota.Reservation | None]] = []
        for day, mail in built:
            reservation = None
            if self.quota_limit is not None and not exhausted:
                reservation = quota.reserve(conn, quota.quota_day(now), self.quota_limit)
                exhausted = reservation is None
            if exhausted:
                outcome[_id(day)] = {"status": "deferred", "items": 0}
                continue
            new.append((day, mail, reservation))
        page.exhausted = exhausted

        message_ids = self._enqueue(conn, [(day, mail) for day, mail, _ in new], now)
        consumed: dict[int, tuple[int, list[int]]] = {}
        for day, _, reservation in new:
            message_id = message_ids.get(_key(day))
            if message_id is None:  # the key exists: a row for this day was deleted by hand
                log.warning(
                    "user %s: a digest message for %s exists already; the day is failed and"
                    " the notifications wait for the next digest",
                    day.user_id,
                    day.local_date,
                )
                outcome[_id(day)] = {"status": "failed", "items": 0}
                if reservation is not None:
                    quota.release(conn, reservation)
                continue
            ids = pending[day.user_id]
            consumed[day.user_id] = (_id(day), ids)
            outcome[_id(day)] = {"status": "completed", "items": len(ids), "message_id": message_id}
            if reservation is not None:
                page.prepaid[message_id] = reservation
        self._consume(conn, consumed, now)
        statements = self.statements(conn)
        rows = [
            (digest_id, values["status"], values["items"], values.get("message_id"))
            for digest_id, values in outcome.items()
        ]
        conn.execute(statements.record, statements.outcomes.params(rows) | {"now": now})
        statuses = Counter(values["status"] for values in outcome.values())
        page.counts["skipped_empty"] += statuses["skipped"]
        page.counts["deferred_quota"] += statuses["deferred"]
        page.counts["failed"] += statuses["failed"]
        page.counts["digests_created"] += statuses["completed"]
        page.counts["notifications_digested"] += sum(len(ids) for _, ids in consumed.values())
        return page

    def _consume(
        self, conn: sa.Connection, consumed: dict[int, tuple[int, list[int]]], now: datetime
    ) -> None:
        """Mark notifications consumed by their digest ({user: (digest id, ids)}), with
        one UPDATE from the (notification, digest) pairs."""
        if not consumed:
            return
        statements = self.statements(conn)
        pairs = [(i, digest) for digest, ids in consumed.values() for i in ids]
        conn.execute(statements.consume, statements.consumed.params(pairs) | {"now": now})

    def _pending(
        self, conn: sa.Connection, days: list[DueUser]
    ) -> tuple[dict[int, list[int]], dict[int, tuple[int, Item | str]]]:
        """Each user's undigested notification ids, oldest first, locked; and their
        newest ``max_items`` as digest items ({id: (user, item or why it cannot be
        listed)}), read with them -- or, when some row cannot be read, none, for
        :meth:`_read_items` to read them one by one."""
        zones = _zones(days)
        if not zones:
            return {}, {}
        query = self.statements(conn).pending_items
        try:
            rows = conn.execute(query, {"users": list(zones), "max_items": self.max_items}).all()
        except quarantine.READ_ERRORS as exc:
            if quarantine.undecodable(exc) is None:
                raise
            return self._pending_ids(conn, list(zones)), {}
        pending: dict[int, list[int]] = {}
        first: dict[int, tuple[int, Item | str]] = {}
        for row in rows:
            notification_id, user_id = int(row[0]), int(row[1])
            pending.setdefault(user_id, []).append(notification_id)
            if row[-1]:
                first[notification_id] = (user_id, self._item(row, zones[user_id]))
        return pending, first

    def _pending_ids(self, conn: sa.Connection, user_ids: list[int]) -> dict[int, list[int]]:
        """Each user's undigested notification ids, oldest first, locked."""
        pending: dict[int, list[int]] = {}
        if not user_ids:
            return pending
        query = self.statements(conn).pending
        for notification_id, user_id in conn.execute(query, {"users": user_ids}).all():
            pending.setdefault(int(user_id), []).append(int(notification_id))
        return pending

    def _build(
        self,
        conn: sa.Connection,
        owners: dict[int, DueUser],
        pending: dict[int, list[int]],
        first: dict[int, tuple[int, Item | str]],
        outcome: dict[int, dict[str, Any]],
        found: quarantine.Found,
    ) -> list[tuple[DueUser, _Mail]]:
        """Render each owner's digest from their newest ``max_items`` notifications.

        A notification that cannot be read or rendered is quarantined and taken out
        of ``pending`` (so it is neither listed, counted nor consumed); an older one
        takes its place in the list.
        """
        items, bad = self._read_items(conn, owners, pending, first)
        built = []
        for user_id, day in owners.items():
            listed = [(i, items[i]) for i in pending[user_id][-self.max_items :]]
            rendered = self._render(day, listed, len(pending[user_id]), bad)
            if bad:
                pending[user_id] = [i for i in pending[user_id] if i not in bad]
            if not pending[user_id]:  # every one of them was quarantined
                outcome[_id(day)] = {"status": "skipped", "items": 0}
                continue
            if rendered is None:
                outcome[_id(day)] = {"status": "failed", "items": 0}
                continue
            built.append((day, rendered))
        quarantine.mark(conn, notifications, bad, self.now())
        found.add("notifications", bad)
        return built

    def _read_items(
        self,
        conn: sa.Connection,
        owners: dict[int, DueUser],
        pending: dict[int, list[int]],
        first: dict[int, tuple[int, Item | str]],
    ) -> tuple[dict[int, Item], dict[int, str]]:
        """The owners' newest ``max_items`` notifications as digest items (by id), and
        those that cannot be read ({id: reason}), which leave ``pending``; repeated
        until each owner's newest ``max_items`` are all readable. ``first``: those
        read already (:meth:`_pending`)."""
        n = notifications.c
        query = self.statements(conn).items
        zones = _zones(owners.values())
        items: dict[int, Item] = {}
        bad: dict[int, str] = {}
        for notification_id, (user_id, item) in first.items():
            if user_id not in owners:
                continue
            if isinstance(item, str):
                bad[notification_id] = item
            else:
                items[notification_id] = item
        if bad:
            for user in owners:
                pending[user] = [i for i in pending[user] if i not in bad]
        while wanted := [
            i for user in owners for i in pending[user][-self.max_items :] if i not in items
        ]:
            rows, unreadable = quarantine.read_rows(conn, query, n.id, wanted)
            bad.update(unreadable)
            for row in rows:
                notification_id = int(row[0])
                item = self._item(row, zones[int(row[1])])
                if isinstance(item, str):
                    bad[notification_id] = item
                else:
                    items[notification_id] = item
            if not bad:
                continue
            for user in owners:
                pending[user] = [i for i in pending[user] if i not in bad]
        return items, bad

    def _item(self, row: Any, local_zone: tzinfo) -> Item | str:
        """One notification (a row of the items query) as the digest lists it, or why
        it cannot be listed."""
        _, _, key, title, title_length, body, body_length, created_at = row[:8]
        if not (
            isinstance(title, str)
            and title.strip()
            and (body is None or isinstance(body, str))
            and (key is None or isinstance(key, str))
            and title_length >= 0
            and (body_length is None or body_length >= 0)
            and (key is None or "\x00" not in key)
        ):
            return text_problem(row) or "cannot be read"
        try:
            instant = as_instant(created_at)
        except (ValueError, TypeError, OverflowError) as exc:
            return f"a value cannot be read ({type(exc).__name__}: {exc})"
        try:
            # "YYYY-MM-DD HH:MM" (isoformat: strftime takes twice as long per item)
            local = instant.astimezone(local_zone).isoformat(" ", "minutes")[:16]
        except (ValueError, OverflowError, KeyError) as exc:
            return f"created_at cannot be shown ({type(exc).__name__}: {exc})"
        if title_length > MAX_TITLE:
            title = clip(title, MAX_TITLE, title_length)
        if body is not None and body_length > self.max_body:
            body = clip(body, self.max_body, body_length)
        return Item(title, body, local, key)

    def _render(
        self, day: DueUser, listed: list[tuple[int, Item]], total: int, bad: dict[int, str]
    ) -> _Mail | None:
        """(subject, text, html) of one digest of ``listed`` ((id, item) pairs) out of
        ``total``, or None when it cannot be rendered.

        When the whole fails, each item is rendered alone: those that fail are
        quarantined (added to ``bad``) and the digest is rendered without them.
        """
        url = self._unsubscribe_url(day)
        try:
            return render_digest(day.local_date, [i for _, i in listed], total, unsubscribe_url=url)
        except Exception:  # one notification's content must not stop everyone's digest
            log.debug("user %s: rendering the digest failed", day.user_id, exc_info=True)
        kept = []
        for notification_id, item in listed:
            try:
                render_digest(day.local_date, [item], 1)
            except Exception as exc:
                bad[notification_id] = f"cannot be rendered ({type(exc).__name__}: {exc})"
            else:
                kept.append(item)
        try:
            dropped = len(listed) - len(kept)
            return render_digest(day.local_date, kept, total - dropped, unsubscribe_url=url)
        except Exception:
            log.exception(
                "user %s: the digest for %s could not be built", day.user_id, day.local_date
            )
            return None

    def _unsubscribe_url(self, day: DueUser) -> str | None:
        base, secret = self.settings.unsubscribe_base_url, self.settings.unsubscribe_secret
        if not (base and secret):
            return None  # the dispatcher warns once that the link is missing
        from schedctl.delivery.tokens import unsubscribe_url

        try:
            return unsubscribe_url(base, str(day.account_id), day.email, secret)
        except ValidationError:  # an address the dispatcher will refuse anyway
            return None

    def _enqueue(
        self, conn: sa.Connection, mails: list[tuple[DueUser, _Mail]], now: datetime
    ) -> dict[str, int]:
        """Enqueue the digests; the new messages' ids by idempotency key (a key that
        existed already is absent)."""
        if not mails:
            return {}
        rows = [
            (day.account_id, day.email, subject, text, html, _key(day))
            for day, (subject, text, html) in mails
        ]
        return self.statements(conn).messages(
            conn, rows, send_at=self.now(), now=now, domain=self.domain,
            installation=self.installation(conn),
        )  # fmt: skip


# A digest's mail: (subject, text, html).
_Mail = tuple[str, str, str]


def _zones(days: Iterable[DueUser]) -> dict[int, tzinfo]:
    """Each user's zone, by user id; each zone looked up once."""
    by_name: dict[str, tzinfo] = {}
    return {
        day.user_id: by_name.get(day.tz) or by_name.setdefault(day.tz, zone(day.tz)) for day in days
    }


def _key(day: DueUser) -> str:
    """The idempotency key of a user's digest message for a day."""
    return f"digest:{day.user_id}:{day.local_date.isoformat()}"


def _id(day: DueUser) -> int:
    assert day.digest_id is not None
    return day.digest_id


def run_digest(
    db: Database, settings: Settings, now: datetime, options: DigestOptions
) -> dict[str, Any]:
    """One `digest` run at ``now``: retry deferred days, claim and build due digests,
    then send the DIGEST messages. Returns its counts (SPEC §11 keys first)."""
    from schedctl.delivery.dispatch import check_delivery_settings, dispatch_due

    check_delivery_settings(settings)  # a configuration error stops the run before any write
    run = DigestRun(db, settings, now, options)
    with heap.fewer_collections():
        run.retry_deferred()
        zones = run.load_zones()
        if run.catch_up_days:
            run.claim_due(zones, catch_up=True)
        run.claim_due(zones, catch_up=False)

    sent = dispatch_due(
        db,
        settings,
        run.now(),
        DISPATCH_LIMIT,
        types=(MESSAGE_TYPE,),
        only=_narrowed(options),
        prepaid=run.prepaid,
    )
    run.counts["digests_sent"] += sent["messages_sent"]
    run.counts["failed"] += sent["messages_failed"]
    run.counts["messages_deferred"] += sent["messages_deferred"]
    run.counts["quarantined"] = run.found.total
    run.found.warn("digest")
    return dict(run.counts)


def _narrowed(options: DigestOptions) -> list[sa.ColumnElement[bool]]:
    """The DIGEST messages a run narrowed by ``options`` may send: its account's, and
    with --user or --date only the mail of those users' or that date's digests. (An
    account's row security keeps the others out only for a login role it binds; the
    run must not send them either way.)"""
    m, d = messages.c, digests.c
    only = [] if options.account_id is None else [m.account_id == options.account_id]
    days = []
    if options.user_id is not None:
        days.append(d.user_id == options.user_id)
    if options.local_date is not None:
        days.append(d.local_date == options.local_date)
    if days:
        ids = sa.select(d.message_id).where(d.message_id.is_not(None), *days)
        only.append(m.id.in_(ids))
    return only


def digest_failed(counts: dict[str, Any]) -> bool:
    """Whether some digests failed, or rows were quarantined, in this run (exit 1)."""
    return bool(counts.get("failed") or counts.get("quarantined"))


# --- preview ---------------------------------------------------------------------------


def preview_digest(
    db: Database, settings: Settings, now: datetime, options: DigestOptions
) -> dict[str, Any]:
    """Who would get a digest now and with how many items; writes nothing."""
    catch_up_days = settings.digest_catch_up_days
    limit = options.limit

    def work(conn: sa.Connection) -> list[tuple[DueUser, bool]]:
        found: list[tuple[DueUser, bool]] = []

        def room() -> int:
            return PAGE if limit is None else max(0, min(PAGE, limit - len(found)))

        after = 0
        while room() and (page := deferred_page(conn, options, after=after)):
            found.extend((p, True) for p in page[: room()] if p.problem is None)
            after = max(p.digest_id or 0 for p in page)
        zones = load_zones(conn, now, options, catch_up_days)
        for catch_up in ([True] if catch_up_days else []) + [False]:
            after = 0
            while room() and (
                page := due_page(conn, zones, options, catch_up=catch_up, after=after, size=room())
            ):
                found.extend((p, False) for p in page if p.problem is None)
                after = page[-1].user_id
        return found

    found = db.transaction(work, read_only=True)

    def count(conn: sa.Connection) -> tuple[dict[int, int], int | None]:
        counts: dict[int, int] = {}
        n = notifications.c
        user_ids = sorted({p.user_id for p, _ in found})
        for chunk in _chunks(user_ids):
            query = (
                sa.select(n.user_id, sa.func.count())
                .where(n.user_id.in_(chunk), *_undigested())
                .group_by(n.user_id)
            )
            counts.update({int(u): int(c) for u, c in conn.execute(query)})
        limit = quota.daily_limit(settings)
        budget = None if limit is None else quota.remaining(conn, quota.quota_day(now), limit)
        return counts, budget

    items, budget = db.transaction(count, read_only=True)
    rows = []
    owners: set[int] = set()
    to_send = deferred = 0
    for day, retry in found:
        n = items.get(day.user_id, 0) if day.enabled and day.user_id not in owners else 0
        if n:
            owners.add(day.user_id)
            if budget is not None and to_send >= budget:
                deferred += 1
                outcome = "deferred"
            else:
                to_send += 1
                outcome = "digest"
        else:
            outcome = "skip"
        rows.append(
            {
                "id": str(day.user_id),
                "email": day.email,
                "tz": day.tz,
                "local_date": day.local_date.isoformat(),
                "items": n,
                "retry": retry,
                "outcome": outcome,
            }
        )
    return {
        "preview": True,
        "users_due": len(rows),
        "digests_sent": 0,
        "skipped_empty": sum(1 for r in rows if r["outcome"] == "skip"),
        "deferred_quota": deferred,
        "failed": 0,
        "digests_due": to_send,
        "notifications_due": sum(r["items"] for r in rows if r["outcome"] == "digest"),
        "users": rows,
        "count": len(rows),
    }
