"""The status pages as a WSGI application, called in this process (SPEC §12).

Access (the token, loopback without one), read-only methods, `[web] account`,
escaping and what a page must never show; `schedctl serve`'s refusals. The pages
in a real browser, against a real server process: tests/acceptance/test_status_pages.py.
"""

from __future__ import annotations

import base64
import io
import shutil
import socket
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from wsgiref.util import setup_testing_defaults

import pytest
import sqlalchemy as sa

from schedctl import web
from schedctl.config import Settings
from schedctl.db.database import Database
from schedctl.db.schema import distributions, schedules
from support.cli import CliRunner
from support.reconcile import Seed

TOKEN = "web-token-0123456789abcdef"
SMTP_PASSWORD = "SmtpPassw0rdSecret"
HOSTILE = "<img src=x onerror=alert(1)>"
STATUS_PAGES = ["/", "/schedules", "/schedules/1", "/messages", "/messages/1", "/badge/tick.svg"]


@dataclass
class Answer:
    status: int
    headers: dict[str, list[str]]
    body: str


def call(
    app: Any,
    path: str,
    *,
    token: str | None = TOKEN,
    method: str = "GET",
    remote: str = "192.0.2.10",
    authorization: str | None = None,
    query: str = "",
    host: str | None = None,
    extra: dict[str, str] | None = None,
) -> Answer:
    environ: dict[str, Any] = {
        "REQUEST_METHOD": method,
        "PATH_INFO": path,
        "QUERY_STRING": query,
        "REMOTE_ADDR": remote,
        "wsgi.input": io.BytesIO(b""),
        "CONTENT_LENGTH": "0",
    }
    if authorization is not None:
        environ["HTTP_AUTHORIZATION"] = authorization
    elif token is not None:
        environ["HTTP_AUTHORIZATION"] = f"Bearer {token}"
    if host is not None:
        environ["HTTP_HOST"] = host
    environ.update(extra or {})
    setup_testing_defaults(environ)
    seen: dict[str, Any] = {}

    def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
        seen["status"] = int(status.split()[0])
        seen["headers"] = {}
        for name, value in headers:
            seen["headers"].setdefault(name.lower(), []).append(value)
        return lambda data: None

    body = b"".join(app(environ, start_response)).decode()
    return Answer(seen["status"], seen["headers"], body)


@pytest.fixture
def world(cli: CliRunner, db_url: str, tmp_path: Path) -> str:
    """Two accounts: `default` with a hostile-named schedule, a run and a message;
    `acme` with its own schedule and message."""
    config = tmp_path / "c.toml"
    config.write_text('[reports.queries.q]\nsql = "select 1"\naccounts = "*"\n')
    env = {"SCHEDCTL_CONFIG": str(config)}
    for args in [
        ["schedules", "create", "--name", HOSTILE, "--kind", "sql", "--param", "query=q",
         "--to", "a@example.com", "--cadence", "daily", "--at", "02:30", "--tz", "Europe/Berlin"],
        ["accounts", "create", "acme"],
        ["schedules", "create", "--name", "acme-report", "--kind", "sql", "--param", "query=q",
         "--to", "b@example.com", "--cadence", "daily", "--at", "07:00", "--account", "acme"],
    ]:  # fmt: skip
        result = cli(*args, db_url=db_url, env=env)
        assert result.returncode == 0, result.stderr
    seed = Seed(db_url)
    seed.run(1, status="failed", error=f"SMTP said no to secret {SMTP_PASSWORD}",
             finished_at=datetime.now(UTC))  # fmt: skip
    seed.message(subject=HOSTILE, status="failed", last_error=f"auth {SMTP_PASSWORD} refused")
    seed.message(account_id=2, subject="acme-only subject")
    return db_url


def settings_for(db_url: str, **values: Any) -> Settings:
    return Settings(database_url=db_url, smtp_password=SMTP_PASSWORD, **values)


@pytest.fixture
def app_for(world: str) -> Iterator[Any]:
    """`app_for(**settings)`: the web app over the world's database."""
    opened: list[Database] = []

    def make(**values: Any) -> Any:
        db = Database(world, environ={})
        opened.append(db)
        return web.make_application(settings_for(world, **values), db)

    yield make
    for db in opened:
        db.close()


# --- access ----------------------------------------------------------------------------


def test_every_status_page_needs_the_token(app_for: Any) -> None:
    app = app_for(web_token=TOKEN)
    for path in STATUS_PAGES:
        missing = call(app, path, token=None)
        wrong = call(app, path, token="not-the-token-at-all")
        right = call(app, path)

        assert (missing.status, wrong.status, right.status) == (401, 401, 200), path
        assert 'Bearer realm="schedctl"' in missing.headers["www-authenticate"]
        assert TOKEN not in missing.body + wrong.body + right.body


def test_a_browser_may_send_the_token_as_the_basic_password(app_for: Any) -> None:
    app = app_for(web_token=TOKEN)
    good = base64.b64encode(f"ops:{TOKEN}".encode()).decode()
    bad = base64.b64encode(b"ops:guess-the-token-here").decode()

    assert call(app, "/", authorization=f"Basic {good}").status == 200
    assert call(app, "/", authorization=f"Basic {bad}").status == 401
    assert call(app, "/", authorization="Basic !!not-base64!!").status == 401


def test_unsubscribe_healthz_and_the_stylesheet_need_no_token(app_for: Any) -> None:
    app = app_for(web_token=TOKEN, unsubscribe_secret="u" * 20)

    unsubscribe = call(app, "/unsubscribe", token=None, query="a=1&e=x%40example.org&t=bad")
    health = call(app, "/healthz", token=None)
    css = call(app, "/static/schedctl.css", token=None)

    assert unsubscribe.status == 200
    assert "<form" in unsubscribe.body
    assert (health.status, health.body) == (200, "ok\n")
    assert css.status == 200
    assert css.headers["content-type"] == ["text/css; charset=utf-8"]


def test_without_a_token_the_pages_answer_only_loopback_clients(app_for: Any) -> None:
    app = app_for()

    assert call(app, "/", token=None, remote="127.0.0.1").status == 200
    assert call(app, "/schedules", token=None, remote="::1").status == 200
    assert call(app, "/", token=None, remote="192.0.2.10").status == 403
    assert call(app, "/healthz", token=None, remote="192.0.2.10").status == 200
    for host in ["localhost:8080", "LOCALHOST", "127.0.0.2", "[::1]:8080"]:
        assert call(app, "/", token=None, remote="127.0.0.1", host=host).status == 200, host
    # Found by review: another site's name resolved to 127.0.0.1 (DNS rebinding), and a
    # proxy on this host relaying a remote client, were answered.
    for host in ["attacker.example:8080", "attacker.example", "localhost.attacker.example"]:
        assert call(app, "/", token=None, remote="127.0.0.1", host=host).status == 403, host
    for header in ["HTTP_X_FORWARDED_FOR", "HTTP_FORWARDED", "HTTP_X_REAL_IP"]:
        proxied = call(app, "/", token=None, remote="127.0.0.1", extra={header: "8.8.8.8"})
        assert proxied.status == 403, header


def test_under_serve_a_proxy_on_this_host_gets_403_too(world: str) -> None:
    # Found by review: waitress dropped X-Forwarded-For and Forwarded before the app
    # could see them, so a proxy on this host still reached the pages.
    import subprocess
    import time
    import urllib.error
    import urllib.request

    from support.cli import SCHEDCTL, process_env
    from support.processes import Schedctl

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = Schedctl(
        [str(SCHEDCTL), "serve", "--port", str(port), "--quiet"],
        env=process_env(world, {}),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert server.poll() is None, "serve ended"
                assert time.monotonic() < deadline, "serve did not start"
                time.sleep(0.05)
        for headers, status in [
            ({}, 200),
            ({"X-Forwarded-For": "1.2.3.4"}, 403),
            ({"Forwarded": "for=1.2.3.4"}, 403),
            ({"X-Real-IP": "1.2.3.4"}, 403),
        ]:
            request = urllib.request.Request(f"http://127.0.0.1:{port}/", headers=headers)
            try:
                with urllib.request.urlopen(request, timeout=10) as answer:  # noqa: S310 (loopback http)
                    got = answer.status
            except urllib.error.HTTPError as refused:
                got = refused.code
            assert got == status, headers
    finally:
        server.kill()
        server.communicate(timeout=30)


def test_no_page_accepts_anything_but_get_and_head(app_for: Any) -> None:
    app = app_for(web_token=TOKEN)
    for path in [*STATUS_PAGES, "/healthz", "/static/schedctl.css"]:
        for method in ["POST", "PUT", "DELETE", "PATCH"]:
            answer = call(app, path, method=method)

            assert answer.status == 405, (method, path)
            assert answer.headers["allow"] == ["GET, HEAD"]


def test_head_answers_without_a_body(app_for: Any) -> None:
    answer = call(app_for(web_token=TOKEN), "/schedules", method="HEAD")

    assert answer.status == 200
    assert answer.body == ""
    assert int(answer.headers["content-length"][0]) > 0


def test_the_pages_allow_no_script(app_for: Any) -> None:
    app = app_for(web_token=TOKEN)
    for path in STATUS_PAGES[:-1]:
        answer = call(app, path)
        assert "<script" not in answer.body.lower(), path
        policy = answer.headers["content-security-policy"][0]
        assert "default-src 'none'" in policy
        assert "script-src" not in policy


# --- what is shown --------------------------------------------------------------------


def test_values_are_escaped(app_for: Any) -> None:
    app = app_for(web_token=TOKEN)
    for path in ["/", "/schedules", "/schedules/1", "/messages", "/messages/1"]:
        body = call(app, path).body

        assert "<img" not in body, path
        assert "&lt;img src=x onerror=alert(1)&gt;" in body, path


def test_no_page_shows_a_secret(app_for: Any) -> None:
    app = app_for(web_token=TOKEN)
    for path in ["/", "/schedules/1", "/messages/1"]:
        body = call(app, path).body

        assert SMTP_PASSWORD not in body, path
        assert "***" in body, path  # the error is shown, masked


def test_a_distribution_reason_shows_no_user_id(app_for: Any, world: str) -> None:
    at = datetime.now(UTC)
    with Database(world, environ={}) as db:
        db.transaction(
            lambda conn: conn.execute(
                distributions.insert().values(
                    business_date=at.date(), status="failed", attempts=1, created_at=at,
                    updated_at=at, reason="duplicate key (user_id)=(4400123456789) in target",
                )
            )
        )  # fmt: skip

    body = call(app_for(web_token=TOKEN), "/").body

    assert "4400123456789" not in body
    assert "4400*******89" in body


def test_a_schedule_page_lists_its_next_ten_slots_as_schedules_next_does(
    world: str, cli: CliRunner
) -> None:
    now = "2027-03-25T00:00:00Z"
    with Database(world, environ={"SCHEDCTL_NOW": now}) as db:
        body = call(web.make_application(settings_for(world, web_token=TOKEN), db),
                    "/schedules/1").body  # fmt: skip
    listed = cli("schedules", "next", "1", "--from", now, "--json", db_url=world).json

    table = body[body.index('id="next-slots"') : body.index("</table>", body.index("next-slots"))]
    assert table.count("<tr><td>") == 10
    for slot in listed["slots"]:
        assert f'<time datetime="{slot["utc"]}">' in table
    assert "02:30 does not exist on 2027-03-28 in Europe/Berlin: runs at 03:00 CEST" in table
    assert "2027-03-28 03:00 CEST" in table
    assert "2027-03-28 01:00 UTC" in table


def test_a_message_page_lists_every_attempt(app_for: Any, world: str) -> None:
    at = datetime.now(UTC).replace(microsecond=0)
    seed = Seed(world)
    seed.attempts(1, at - timedelta(minutes=5), outcome="retry")
    seed.attempts(1, at, outcome="failed")

    body = call(app_for(web_token=TOKEN), "/messages/1").body

    assert '<span id="attempt-count">2</span>' in body
    assert body.index("st-retry") < body.index("st-failed", body.index('id="attempts"'))


def test_unknown_pages_and_ids_are_404(app_for: Any) -> None:
    app = app_for(web_token=TOKEN)

    for path in ["/nothing", "/schedules/999", "/schedules/abc", "/messages/0", "/badge/bogus.svg"]:
        assert call(app, path).status == 404, path


def test_bad_filters_are_400(app_for: Any) -> None:
    app = app_for(web_token=TOKEN)

    for query in ["status=bogus", "type=bad type!", "page=0", "page=x", f"status={HOSTILE}"]:
        answer = call(app, "/messages", query=query)
        assert answer.status == 400, query
        assert "<img" not in answer.body


def test_messages_are_filtered_and_paged(app_for: Any, world: str) -> None:
    seed = Seed(world)
    for _ in range(55):
        seed.message(type="DIGEST", status="sent")
    app = app_for(web_token=TOKEN)

    first = call(app, "/messages", query="status=sent&type=digest")
    second = call(app, "/messages", query="status=sent&type=DIGEST&page=2")
    failed = call(app, "/messages", query="status=failed")

    assert '<span id="message-total">55</span>' in first.body
    assert first.body.count('<tr data-id="') == 50
    assert second.body.count('<tr data-id="') == 5
    assert 'rel="prev" href="/messages?page=1&amp;status=sent&amp;type=DIGEST"' in second.body
    assert '<span id="message-total">1</span>' in failed.body


def test_links_carry_the_prefix_the_app_is_mounted_at(app_for: Any) -> None:
    app = app_for(web_token=TOKEN)
    environ_prefix = {"SCRIPT_NAME": "/status"}

    def prefixed(environ: dict[str, Any], start_response: Any) -> Any:
        return app({**environ, **environ_prefix}, start_response)

    body = call(prefixed, "/schedules").body

    assert 'href="/status/schedules/1"' in body
    assert 'href="/status/static/schedctl.css"' in body


def test_the_badge_is_svg_coloured_by_the_heartbeat(app_for: Any, world: str) -> None:
    Seed(world).heartbeat("tick", datetime.now(UTC) - timedelta(minutes=2))
    app = app_for(web_token=TOKEN)

    tick = call(app, "/badge/tick.svg")
    digest = call(app, "/badge/digest.svg")

    assert tick.headers["content-type"] == ["image/svg+xml"]
    assert ET.fromstring(tick.body).tag == "{http://www.w3.org/2000/svg}svg"  # noqa: S314 (our own SVG)
    assert "tick: green" in tick.body
    assert "digest: unknown" in digest.body


def test_metrics_needs_the_token_and_counts_the_pages_account(app_for: Any) -> None:
    everyone = app_for(web_token=TOKEN)
    acme = app_for(web_token=TOKEN, web_account="acme")

    missing = call(everyone, "/metrics", token=None)
    posted = call(everyone, "/metrics", method="POST")
    every = call(everyone, "/metrics")
    one = call(acme, "/metrics")

    assert (missing.status, posted.status) == (401, 405)
    assert every.status == 200
    assert every.headers["content-type"] == ["text/plain; version=0.0.4; charset=utf-8"]
    assert 'schedctl_messages{status="failed",type="REPORT"} 1.0' in every.body
    assert 'schedctl_messages{status="scheduled",type="REPORT"} 1.0' in every.body
    assert 'schedctl_messages{status="failed"' not in one.body  # default's, not acme's
    assert 'schedctl_messages{status="scheduled",type="REPORT"} 1.0' in one.body


def test_heartbeats_are_judged_on_the_servers_clock(world: str) -> None:
    """As `heartbeat` judges them: a SCHEDCTL_NOW two days on does not turn them red."""
    Seed(world).heartbeat("tick", datetime.now(UTC) - timedelta(minutes=2))
    later = (datetime.now(UTC) + timedelta(days=2)).isoformat()
    with Database(world, environ={"SCHEDCTL_NOW": later}) as db:
        app = web.make_application(settings_for(world, web_token=TOKEN), db)
        badge = call(app, "/badge/tick.svg").body
        front = call(app, "/").body

    assert "tick: green" in badge
    row = front[front.index('<tr data-command="tick">') :]
    assert "st-green" in row[: row.index("</tr>")]


@pytest.mark.parametrize("dialect", ["sqlite"])  # a file can be taken from under the app
def test_healthz_is_503_when_the_database_does_not_answer(tmp_path: Path, world: str) -> None:
    path = Path(world.removeprefix("sqlite:///"))
    with Database(world, environ={}, create=False) as db:
        app = web.make_application(settings_for(world), db)
        assert call(app, "/healthz").status == 200
        db.engine.dispose()
        shutil.move(path, tmp_path / "elsewhere.db")

        answer = call(app, "/healthz")

    assert (answer.status, answer.body) == (503, "unavailable\n")


# --- [web] account ----------------------------------------------------------------------


def test_web_account_limits_every_page_to_that_account(app_for: Any) -> None:
    app = app_for(web_token=TOKEN, web_account="acme")

    schedules_page = call(app, "/schedules").body
    messages_page = call(app, "/messages").body
    front = call(app, "/").body

    assert "acme-report" in schedules_page
    assert "onerror" not in schedules_page
    assert "acme-only subject" in messages_page
    assert "onerror" not in messages_page
    assert '<span id="message-total">1</span>' in messages_page
    assert 'id="outbox-failed">0</td>' in front  # default's failure not counted
    assert call(app, "/schedules/1").status == 404  # default's
    assert call(app, "/messages/1").status == 404
    assert call(app, "/schedules/2").status == 200


def test_without_web_account_every_account_is_shown(app_for: Any) -> None:
    body = call(app_for(web_token=TOKEN), "/schedules").body

    assert "acme-report" in body
    assert "onerror" in body
    assert "<th>account</th>" in body


def test_an_unknown_web_account_is_refused_when_the_app_is_made(world: str) -> None:
    with (
        Database(world, environ={}) as db,
        pytest.raises(Exception, match="no account 'nope'"),
    ):
        web.make_application(settings_for(world, web_account="nope"), db)


@pytest.mark.postgres
@pytest.mark.parametrize("dialect", ["postgresql"])
def test_the_pages_session_is_scoped_for_row_level_security(world: str, tenant_url: str) -> None:
    """The pages' database handle sets the account for PostgreSQL's policies, as the
    CLI's --account does: a query that forgot its filter still sees one account."""
    count = sa.select(sa.func.count()).select_from(schedules)
    with Database(tenant_url, environ={}) as db:
        everything = db.scalar(count)
        scoped = db.for_account(2).scalar(count)

    assert (everything, scoped) == (2, 1)


# --- serve's refusals -------------------------------------------------------------------


def test_serve_refuses_a_public_address_without_a_token(cli: CliRunner, world: str) -> None:
    for host in ["0.0.0.0", "192.0.2.10", "::", "example.com"]:
        result = cli("serve", "--host", host, db_url=world)
        assert result.returncode == 2, host
        assert result.stderr.count("\n") == 1
        assert "without a [web] token" in result.stderr
        assert result.stdout == ""


def test_serve_refuses_a_malformed_host(cli: CliRunner, world: str) -> None:
    for host in ["bad host", "", "a..b", "-x.example.com", "x" * 300]:
        result = cli("serve", "--host", host, db_url=world, env={"SCHEDCTL_WEB_TOKEN": TOKEN})

        assert result.returncode == 2, host
        assert result.stderr.startswith("schedctl: error: invalid --host")


def test_serve_refuses_an_unknown_account_and_a_short_token(cli: CliRunner, world: str) -> None:
    unknown = cli("serve", db_url=world, env={"SCHEDCTL_WEB_ACCOUNT": "nope"})
    short = cli("serve", db_url=world, env={"SCHEDCTL_WEB_TOKEN": "short"})

    assert unknown.returncode == 2
    assert "no account 'nope'" in unknown.stderr
    assert short.returncode == 2
    assert "SCHEDCTL_WEB_TOKEN" in short.stderr
    assert "short" not in short.stderr.replace("SCHEDCTL_WEB_TOKEN", "")


def test_serve_says_when_it_cannot_listen(cli: CliRunner, world: str) -> None:
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = cli("serve", "--port", str(port), db_url=world)

    assert result.returncode == 2
    assert f"cannot listen on 127.0.0.1:{port}" in result.stderr


def test_settings_keep_the_token_out_of_describe() -> None:
    from schedctl.config import describe

    shown = describe(replace(Settings(), web_token=TOKEN, web_account="acme"))

    assert shown["web_token"] == "***"
    assert shown["web_account"] == "acme"


def test_the_last_run_shown_is_the_newest_slots_as_schedules_list_says(
    world: str, cli: CliRunner
) -> None:
    # A backfill of older slots, made after a manual run, used to become the page's
    # "last run" while `schedules list` showed the manual run's slot.
    from schedctl.pages.data import schedule_rows

    seed = Seed(world)
    manual = datetime.now(UTC).replace(microsecond=0)
    seed.run(1, slot=manual, manual=True, status="succeeded")
    seed.run(1, slot=manual - timedelta(days=30), status="queued")  # made later, older
    with Database(world, environ={}) as db:
        [row] = [r for r in schedule_rows(db, None) if r.id == 1]
    assert (row.last_run_slot, row.last_run_status, row.last_run_manual) == (
        manual,
        "succeeded",
        True,
    )
