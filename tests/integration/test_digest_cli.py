"""`schedctl digest` through the CLI, on both dialects (SPEC §5).

When a user is due (their own local day, §3's DST rules), what one digest holds and
how it reads in the mail a loopback SMTP server received, the quota's deferral,
``catch_up_days``, ``--preview`` writing nothing, and bad input exiting 2.
"""

from __future__ import annotations

import email
import email.policy
import json
from datetime import UTC, date, datetime, timedelta
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from schedctl.db.database import Database
from schedctl.db.schema import digests, messages, metadata, notifications, users
from support.smtp_server import SmtpServer

T0 = datetime(2026, 11, 18, 9, 0, tzinfo=UTC)  # a Wednesday
CREATED = datetime(2026, 10, 1, tzinfo=UTC)


# --- helpers ---------------------------------------------------------------------------


def add_user(
    db_url: str, email_address: str, tz: str = "UTC", at: str = "08:00", **extra: Any
) -> int:
    with Database(db_url) as db:
        return int(
            db.transaction(
                lambda conn: conn.execute(
                    users.insert()
                    .values(
                        account_id=1, email=email_address, tz=tz, digest_time=at,
                        created_at=CREATED, updated_at=CREATED, **extra,
                    )
                    .returning(users.c.id)
                ).scalar_one()
            )
        )  # fmt: skip


def notify(db_url: str, user_id: int, *titles: str, key: str | None = None, **extra: Any) -> None:
    with Database(db_url) as db:
        db.transaction(
            lambda conn: conn.execute(
                notifications.insert(),
                [
                    {"account_id": 1, "user_id": user_id, "title": t, "digest_key": key,
                     "created_at": CREATED, **extra}
                    for t in titles
                ],
            )
        )  # fmt: skip


def table(db_url: str, t: sa.Table) -> list[Any]:
    with Database(db_url) as db:
        return db.transaction(
            lambda conn: list(conn.execute(sa.select(t).order_by(*t.primary_key.columns))),
            read_only=True,
        )


def dump(db_url: str) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every table."""
    return {name: [tuple(r) for r in table(db_url, t)] for name, t in metadata.tables.items()}


def digest(cli: Any, db_url: str, now: datetime, *args: str, env: dict[str, str] | None = None,
           code: int = 0) -> dict[str, Any]:  # fmt: skip
    result = cli(
        "digest", "--json", *args, db_url=db_url,
        env={"SCHEDCTL_NOW": now.isoformat(), **(env or {})},
    )  # fmt: skip
    assert result.returncode == code, result.stderr
    return json.loads(result.stdout) if code == 0 else {}


def days(db_url: str) -> dict[tuple[int, date], Any]:
    return {
        (r.user_id, r.local_date if isinstance(r.local_date, date) else
         date.fromisoformat(r.local_date)): r
        for r in table(db_url, digests)
    }  # fmt: skip


def mails(smtp: SmtpServer) -> list[EmailMessage]:
    return [
        email.message_from_bytes(e.original_content or b"", policy=email.policy.default)  # type: ignore[misc]
        for e in smtp.accepted
    ]


def text_of(mail: EmailMessage) -> str:
    part = mail.get_body(("plain",))
    assert part is not None
    return str(part.get_content()).replace("\r\n", "\n")


def html_of(mail: EmailMessage) -> str:
    part = mail.get_body(("html",))
    assert part is not None
    return str(part.get_content())


# --- when a user is due --------------------------------------------------------------------


def test_due_from_the_digest_time_inclusive_not_a_minute_before(cli: Any, db_url: str) -> None:
    ann = add_user(db_url, "ann@example.com", at="08:00")
    notify(db_url, ann, "one")

    early = digest(cli, db_url, datetime(2026, 11, 18, 7, 59, tzinfo=UTC))
    on_time = digest(cli, db_url, datetime(2026, 11, 18, 8, 0, tzinfo=UTC))

    assert early["users_due"] == 0
    assert on_time["users_due"] == 1
    assert on_time["digests_created"] == 1
    assert on_time["digests_sent"] == 1
    assert on_time["notifications_digested"] == 1
    assert list(days(db_url)) == [(ann, date(2026, 11, 18))]


def test_utc_plus_14_and_minus_12_each_get_their_own_local_day(cli: Any, db_url: str) -> None:
    # At 10:00 UTC it is already 00:00 tomorrow at UTC+14 and still 22:00 yesterday at
    # UTC-12: both are due, each for its own date; 00:01 at UTC+14 is not due yet.
    east = add_user(db_url, "east@example.com", "Pacific/Kiritimati", "00:00")
    west = add_user(db_url, "west@example.com", "Etc/GMT+12", "22:00")
    later = add_user(db_url, "later@example.com", "Pacific/Kiritimati", "00:01")
    for user in (east, west, later):
        notify(db_url, user, "hello")

    counts = digest(cli, db_url, datetime(2026, 11, 18, 10, 0, tzinfo=UTC))

    assert counts["users_due"] == 2
    assert set(days(db_url)) == {(east, date(2026, 11, 19)), (west, date(2026, 11, 17))}
    assert {d.status for d in days(db_url).values()} == {"completed"}


def test_a_digest_time_in_the_spring_forward_gap_is_due_when_the_gap_ends(
    cli: Any, db_url: str
) -> None:
    # New York, 8 March 2026: 02:00 EST becomes 03:00 EDT (07:00 UTC); 02:30 never
    # happens, so it is due at 03:00 EDT.
    ny = add_user(db_url, "ny@example.com", "America/New_York", "02:30")
    notify(db_url, ny, "spring")

    before = digest(cli, db_url, datetime(2026, 3, 8, 6, 59, tzinfo=UTC))  # 01:59 EST
    at_gap_end = digest(cli, db_url, datetime(2026, 3, 8, 7, 0, tzinfo=UTC))  # 03:00 EDT

    assert before["users_due"] == 0
    assert at_gap_end["users_due"] == 1
    assert list(days(db_url)) == [(ny, date(2026, 3, 8))]


def test_a_repeated_digest_time_is_due_at_its_first_occurrence_only(cli: Any, db_url: str) -> None:
    # New York, 1 November 2026: 01:00-01:59 happens twice (EDT 05:00-05:59 UTC,
    # then EST 06:00-06:59 UTC).
    first = add_user(db_url, "first@example.com", "America/New_York", "01:30")
    late = add_user(db_url, "late@example.com", "America/New_York", "01:45")
    notify(db_url, first, "a")
    notify(db_url, late, "b")

    before = digest(cli, db_url, datetime(2026, 11, 1, 5, 29, tzinfo=UTC))
    first_pass = digest(cli, db_url, datetime(2026, 11, 1, 5, 30, tzinfo=UTC))  # 01:30 EDT
    notify(db_url, first, "arrived after the day's digest")
    # 01:10 EST, in the second pass: 01:45's first occurrence (05:45 UTC) has passed.
    second_pass = digest(cli, db_url, datetime(2026, 11, 1, 6, 10, tzinfo=UTC))
    repeated = digest(cli, db_url, datetime(2026, 11, 1, 6, 30, tzinfo=UTC))  # 01:30 EST
    next_day = digest(cli, db_url, datetime(2026, 11, 2, 7, 0, tzinfo=UTC))  # 02:00 EST

    assert (before["users_due"], first_pass["users_due"]) == (0, 1)
    assert second_pass["users_due"] == 1  # late@, for its first 01:45
    assert repeated["users_due"] == 0  # first@'s 01:30 does not come round again
    assert next_day["users_due"] == 2
    assert next_day["notifications_digested"] == 1  # what arrived after waited a day
    assert set(days(db_url)) == {
        (first, date(2026, 11, 1)), (late, date(2026, 11, 1)),
        (first, date(2026, 11, 2)), (late, date(2026, 11, 2)),
    }  # fmt: skip
    assert days(db_url)[(late, date(2026, 11, 2))].status == "skipped"


def test_disabled_users_and_read_or_critical_notifications_are_left_alone(
    cli: Any, db_url: str
) -> None:
    off = add_user(db_url, "off@example.com", digest_enabled=False)
    on = add_user(db_url, "on@example.com")
    notify(db_url, off, "never")
    notify(db_url, on, "read", read_at=CREATED)
    notify(db_url, on, "urgent", priority="critical")

    counts = digest(cli, db_url, T0)

    assert (counts["users_due"], counts["skipped_empty"], counts["digests_created"]) == (1, 1, 0)
    assert [(d.user_id, d.status, d.items, d.message_id) for d in days(db_url).values()] == [
        (on, "skipped", 0, None)
    ]
    assert {n.digest_id for n in table(db_url, notifications)} == {None}


def test_nothing_new_is_skipped_and_what_arrives_later_waits_for_the_next_day(
    cli: Any, db_url: str
) -> None:
    ann = add_user(db_url, "ann@example.com")

    first = digest(cli, db_url, T0)
    notify(db_url, ann, "late news")
    again = digest(cli, db_url, T0 + timedelta(hours=1))
    tomorrow = digest(cli, db_url, T0 + timedelta(days=1))

    assert (first["users_due"], first["skipped_empty"], first["digests_sent"]) == (1, 1, 0)
    assert again["users_due"] == 0
    assert (tomorrow["digests_created"], tomorrow["notifications_digested"]) == (1, 1)
    assert table(db_url, messages)[0].subject.startswith("Your daily digest for Thursday")


# --- what the mail says -----------------------------------------------------------------------


def test_grouped_by_key_newest_max_items_listed_and_n_more(
    cli: Any, db_url: str, smtp: SmtpServer, tmp_path: Path
) -> None:
    config = tmp_path / "schedctl.toml"
    config.write_text("[digest]\nmax_items = 3\n")
    ann = add_user(db_url, "ann@example.com", "Europe/Berlin")
    for title, key in [("N1 old invoice", "billing"), ("N2 old login", "security"),
                       ("N3 invoice paid", "billing"), ("N4 plain <b>news</b>", None),
                       ("N5 new login", "security")]:  # fmt: skip
        notify(db_url, ann, title, key=key)
    env = {
        **smtp.env,
        "SCHEDCTL_CONFIG": str(config),
        "SCHEDCTL_UNSUBSCRIBE_SECRET": "s" * 32,
        "SCHEDCTL_UNSUBSCRIBE_BASE_URL": "https://example.com/u",
    }

    counts = digest(cli, db_url, T0, env=env)

    assert (counts["digests_sent"], counts["notifications_digested"]) == (1, 5)
    [mail] = mails(smtp)
    assert mail["To"] == "ann@example.com"
    assert mail["Subject"] == (
        "Your daily digest for Wednesday 18 November 2026: 5 new notifications"
    )
    assert mail["List-Unsubscribe"].startswith("<https://example.com/u/unsubscribe?")
    assert mail["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    text = text_of(mail)
    assert "You have 5 new notifications." in text
    # The newest three, by key (alphabetical, the unkeyed last), then the rest counted.
    assert text.index("billing\n-------") < text.index("* N3 invoice paid")
    assert text.index("* N3 invoice paid") < text.index("security\n--------")
    assert text.index("security\n--------") < text.index("* N5 new login")
    assert text.index("* N5 new login") < text.index("Other\n-----")
    assert text.index("Other\n-----") < text.index("* N4 plain <b>news</b>")
    assert "N1" not in text
    assert "N2" not in text
    assert "and 2 more notifications" in text
    assert "(2026-10-01 02:00)" in text  # created_at in the user's zone (CEST)
    assert "Unsubscribe: https://example.com/u/unsubscribe?" in text
    html = html_of(mail)
    assert "<h2" in html
    assert ">billing</h2>" in html
    assert "N4 plain &lt;b&gt;news&lt;/b&gt;" in html
    assert "and 2 more notifications" in html
    # Every notification was consumed by this digest, listed or not.
    [day] = days(db_url).values()
    assert (day.status, day.items) == ("completed", 5)
    assert {n.digest_id for n in table(db_url, notifications)} == {day.id}


# --- the quota ---------------------------------------------------------------------------------


def test_quota_defers_a_digest_with_its_notifications_unconsumed_then_sends_it_once(
    cli: Any, db_url: str, smtp: SmtpServer
) -> None:
    people = [add_user(db_url, f"u{n}@example.com") for n in range(3)]
    for n, user in enumerate(people):
        notify(db_url, user, f"note {n}")
    env = {**smtp.env, "SCHEDCTL_DAILY_QUOTA": "2"}

    day_one = digest(cli, db_url, T0, env=env)
    deferred = [d for d in days(db_url).values() if d.status == "deferred"]
    [waiting] = deferred
    notify(db_url, waiting.user_id, "arrived while deferred")
    same_day = digest(cli, db_url, T0 + timedelta(hours=2), env=env)
    unconsumed = [n for n in table(db_url, notifications) if n.user_id == waiting.user_id]
    next_day = digest(cli, db_url, datetime(2026, 11, 19, 0, 5, tzinfo=UTC), env=env)
    again = digest(cli, db_url, datetime(2026, 11, 19, 0, 10, tzinfo=UTC), env=env)

    assert (day_one["digests_sent"], day_one["deferred_quota"]) == (2, 1)
    assert len(smtp.accepted) == 2 + next_day["digests_sent"]
    assert same_day["users_due"] == 0
    assert same_day["digests_sent"] == 0
    assert [(n.digest_id, n.consumed_at) for n in unconsumed] == [(None, None), (None, None)]
    assert (next_day["digests_retried"], next_day["digests_sent"]) == (1, 1)
    assert next_day["notifications_digested"] == 2
    assert again["users_due"] == 0
    assert again["digests_sent"] == 0
    # One mail per user, each once; the deferred one holds both notifications.
    assert set(smtp.id_counts().values()) == {1}
    assert sorted(smtp.recipients) == [f"u{n}@example.com" for n in range(3)]
    late = [m for m in mails(smtp) if m["To"] == f"u{people.index(waiting.user_id)}@example.com"]
    assert "arrived while deferred" in text_of(late[0])
    row = days(db_url)[(waiting.user_id, date(2026, 11, 18))]
    assert (row.status, row.items) == ("completed", 2)
    counters = metadata.tables["send_counters"]
    assert {r.day: (r.sent, r.reserved) for r in table(db_url, counters)} == {
        "2026-11-18": (2, 0), "2026-11-19": (1, 0)
    }  # fmt: skip


# --- catch_up_days -------------------------------------------------------------------------------


@pytest.mark.parametrize("catch_up", [0, 1])
def test_a_missed_day_is_sent_late_only_with_catch_up_days(
    cli: Any, db_url: str, tmp_path: Path, catch_up: int
) -> None:
    config = tmp_path / "schedctl.toml"
    config.write_text(f"[digest]\ncatch_up_days = {catch_up}\n")
    env = {"SCHEDCTL_CONFIG": str(config)}
    ann = add_user(db_url, "ann@example.com", at="13:00")
    notify(db_url, ann, "from yesterday")
    # Today's 13:00 has not come; yesterday's never ran; 12:30 UTC is past midnight
    # even at UTC-12, so 17 November is no one's today any more.
    early = T0.replace(hour=12, minute=30)

    counts = digest(cli, db_url, early, env=env)
    by_date = digest(cli, db_url, early, "--date", "2026-11-17", env=env, code=2 - 2 * catch_up)

    if catch_up:
        assert (counts["users_due"], counts["digests_created"]) == (1, 1)
        assert list(days(db_url)) == [(ann, date(2026, 11, 17))]
        assert by_date["users_due"] == 0  # done already
    else:
        assert counts["users_due"] == 0
        assert days(db_url) == {}


# --- --preview and bad input write nothing -------------------------------------------------


def test_preview_lists_who_would_get_what_and_writes_nothing(cli: Any, db_url: str) -> None:
    ann = add_user(db_url, "ann@example.com", "Europe/Berlin")
    add_user(db_url, "bob@example.com")
    add_user(db_url, "cat@example.com", at="23:00")
    notify(db_url, ann, "one", "two")
    before = dump(db_url)

    result = cli("digest", "--preview", "--json", db_url=db_url,
                 env={"SCHEDCTL_NOW": T0.isoformat()})  # fmt: skip
    human = cli("digest", "--preview", db_url=db_url, env={"SCHEDCTL_NOW": T0.isoformat()})

    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert (data["users_due"], data["digests_due"], data["skipped_empty"]) == (2, 1, 1)
    assert [(u["email"], u["local_date"], u["items"], u["outcome"]) for u in data["users"]] == [
        ("ann@example.com", "2026-11-18", 2, "digest"),
        ("bob@example.com", "2026-11-18", 0, "skip"),
    ]
    assert human.returncode == 0, human.stderr
    assert "ann@example.com" in human.stdout
    assert "nothing was written" in human.stdout
    assert dump(db_url) == before  # heartbeats included


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--date", "2026-13-01"], "invalid date '2026-13-01' (expected YYYY-MM-DD)"),
        (["--date", "tomorrow"], "invalid date 'tomorrow'"),
        (["--date", "2026-11-25"], "is not the current local date in any time zone"),
        (["--date", "2026-11-16"], "is not the current local date in any time zone"),
        (["--user", "nobody@example.com"], "no user nobody@example.com"),
        (["--user", "not an address"], "invalid user"),
        (["--user", "ann@example.com", "--date", "2026-11-19"], "not the user's current local"),
        (["--account", "nope"], "no account 'nope'"),
        (["--limit", "0"], "--limit"),
    ],
)
def test_bad_input_exits_2_on_one_line_and_writes_nothing(
    cli: Any, db_url: str, args: list[str], message: str
) -> None:
    ann = add_user(db_url, "ann@example.com")
    notify(db_url, ann, "one")
    before = dump(db_url)

    result = cli("digest", *args, db_url=db_url, env={"SCHEDCTL_NOW": T0.isoformat()})

    assert result.returncode == 2, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert message in result.stderr
    assert result.stdout == ""
    assert dump(db_url) == before


def test_user_and_date_narrow_the_run(cli: Any, db_url: str) -> None:
    ann = add_user(db_url, "ann@example.com")
    bob = add_user(db_url, "bob@example.com")
    notify(db_url, ann, "a")
    notify(db_url, bob, "b")

    only_bob = digest(cli, db_url, T0, "--user", "bob@example.com", "--date", "2026-11-18")
    by_id = digest(cli, db_url, T0, "--user", str(ann), "--limit", "1")

    assert (only_bob["users_due"], only_bob["digests_sent"]) == (1, 1)
    assert (by_id["users_due"], by_id["digests_sent"]) == (1, 1)
    assert set(days(db_url)) == {(ann, date(2026, 11, 18)), (bob, date(2026, 11, 18))}


def test_account_user_and_date_narrow_what_the_run_sends_too(
    cli: Any, db_url: str, smtp: SmtpServer, closed_port: int
) -> None:
    """DIGEST mail already queued (built while the mail server was down) goes out only for the
    run's own account, user and date: on SQLite, and on PostgreSQL as a role that row
    security does not bind (the test's), nothing else keeps the others out."""
    assert cli("accounts", "create", "acme", db_url=db_url).returncode == 0
    for address, account in [("d1@example.com", "default"), ("a1@example.com", "acme"),
                             ("a2@example.com", "acme")]:  # fmt: skip
        added = cli("users", "add", address, "--digest-at", "08:00", "--account", account,
                    db_url=db_url)  # fmt: skip
        assert added.returncode == 0, added.stderr
        noted = cli("notify", "--user", address, "--title", f"for {address}",
                    "--account", account, db_url=db_url)  # fmt: skip
        assert noted.returncode == 0, noted.stderr
    digest(cli, db_url, T0, env={**smtp.env, "SCHEDCTL_SMTP_PORT": str(closed_port)}, code=75)
    assert len(days(db_url)) == 3

    def sent_to() -> list[str]:
        return sorted(str(mail["To"]) for mail in mails(smtp))

    later = T0 + timedelta(minutes=5)  # the mail built at T0 is due
    digest(cli, db_url, later, "--account", "acme", "--user", "a1@example.com", env=smtp.env)
    after_user = sent_to()
    digest(cli, db_url, later, "--account", "acme", "--date", "2026-11-17", env=smtp.env)
    after_other_date = sent_to()
    acme = digest(cli, db_url, later, "--account", "acme", env=smtp.env)
    after_account = sent_to()
    everyone = digest(cli, db_url, later, env=smtp.env)

    assert after_user == ["a1@example.com"]
    assert after_other_date == ["a1@example.com"]
    assert after_account == ["a1@example.com", "a2@example.com"]
    assert acme["digests_sent"] == 1
    assert everyone["digests_sent"] == 1
    assert sent_to() == ["a1@example.com", "a2@example.com", "d1@example.com"]


def test_a_suppressed_user_gets_no_mail_and_the_digest_gives_its_quota_unit_back(
    cli: Any, db_url: str, smtp: SmtpServer
) -> None:
    ann = add_user(db_url, "ann@example.com")
    notify(db_url, ann, "one")
    assert cli("suppressions", "add", "ann@example.com", db_url=db_url).returncode == 0
    env = {**smtp.env, "SCHEDCTL_DAILY_QUOTA": "5"}

    counts = digest(cli, db_url, T0, env=env)

    assert (counts["digests_created"], counts["digests_sent"]) == (1, 0)
    assert smtp.accepted == []
    [message] = table(db_url, messages)
    assert (message.type, message.status, message.reason_code) == (
        "DIGEST",
        "skipped",
        "SUPPRESSED",
    )
    counters = metadata.tables["send_counters"]
    assert [(r.sent, r.reserved) for r in table(db_url, counters)] == [(0, 0)]
