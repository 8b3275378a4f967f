"""The status pages in a real browser (SPEC §12): `schedctl serve` as a process, headless
Chromium driven by Selenium (Debian's chromium and chromedriver: scripts/ensure-chromium).

The database is filled by a real day: schedules created, `distribute` distributing
the day's users to two campaigns (source and destinations are SQLite files), `tick`
running the reports (one query fails) and delivering to a loopback SMTP server (one
address refused), `notify` and `digest` sending digests. Then, for every page: it
renders with its title, the numbers it shows are the database's (read here with SQL
and compared with text read from the DOM), a schedule named like an XSS attack shows
as text, a 375 px wide window has no horizontal scroll, and no page has a script.
The token is sent as the Authorization header (the DevTools protocol's extra
headers); without it a page is 401, while /healthz answers. One browser serves the
whole module.

Every page is saved as a full-length PNG at 1280 and 390 px wide into
``$SCHEDCTL_TEST_ARTIFACTS`` (default build/test-artifacts/screenshots/), named
``<page>-<width>-<database>.png``, for a person to look at.
"""

from __future__ import annotations

import contextlib
import io
import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import sqlalchemy as sa

from schedctl.db.schema import distributions
from schedctl.db.schema import schedules as table
from support.cli import REPO, SCHEDCTL, process_env, run_cli
from support.databases import pg_url
from support.distribute import Campaign
from support.distribute_files import Files, make_files
from support.processes import Schedctl
from support.smtp_server import SmtpServer

selenium = pytest.importorskip("selenium")

from selenium import webdriver  # noqa: E402
from selenium.common.exceptions import NoAlertPresentException  # noqa: E402
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
TOKEN = "browser-token-0123456789"
HOSTILE = "<img src=x onerror=alert(1)>"
PAGES = {  # path -> the page's <title>
    "/": "schedctl status · schedctl",
    "/schedules": "Schedules · schedctl",
    "/schedules/1": f"Schedule {HOSTILE} · schedctl",
    "/messages": "Messages · schedctl",
    "/messages?status=sent": "Messages · schedctl",
    "/messages/1": "Message 1 · schedctl",
}
SHOTS = {  # path -> its screenshots' name
    "/": "overview",
    "/schedules": "schedules",
    "/schedules/1": "schedule-1",
    "/messages": "messages",
    "/messages?status=sent": "messages-sent",
    "/messages/1": "message-1",
}
SHOT_WIDTHS = (1280, 390)  # a desktop's, a phone's
ARTIFACTS = Path(
    os.environ.get("SCHEDCTL_TEST_ARTIFACTS") or REPO / "build" / "test-artifacts" / "screenshots"
)
DISTRIBUTE_TZ = "Asia/Almaty"  # the distribute files' [distribute] tz

if not (os.access(CHROMIUM, os.X_OK) and os.access(CHROMEDRIVER, os.X_OK)):
    pytest.skip(
        "chromium and chromedriver are not installed (scripts/ensure-chromium)",
        allow_module_level=True,
    )


# --- the day -----------------------------------------------------------------------------


def schedctl(args: list[str], env: dict[str, str]) -> str:
    """Run one command in this process (as the sweep's seeding does); its stdout."""
    from schedctl.cli import run

    out, err = io.StringIO(), io.StringIO()
    with pytest.MonkeyPatch.context() as patch:
        for key, value in env.items():
            patch.setenv(key, value)
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = run(args)
    assert code in (0, 1), (args, code, err.getvalue())
    return out.getvalue()


@dataclass
class Site:
    """A served database: its URL, the server's base URL, an engine to check it with."""

    db_url: str
    url: str
    engine: sa.Engine
    database: str  # sqlite or postgresql
    files: Files  # the distribution's source and destinations

    def query(self, sql: str, **params: Any) -> list[Any]:
        with self.engine.connect() as conn:
            return list(conn.execute(sa.text(sql), params))

    def scalar(self, sql: str, **params: Any) -> Any:
        return self.query(sql, **params)[0][0]


def fill_a_day(db_url: str, tmp: Path, smtp_port: int) -> tuple[dict[str, str], Files]:
    """Run the day; the settings `serve` shares with it (the config file, the quota)
    and the distribution's files."""
    now = datetime.now(UTC).replace(second=0, microsecond=0)
    business_date = now.astimezone(ZoneInfo(DISTRIBUTE_TZ)).date()
    (tmp / "distribute").mkdir()
    files = make_files(
        db_url,
        tmp / "distribute",
        run_cli,
        campaigns=[
            Campaign("SC00000001", business_date - timedelta(days=10), business_date),
            Campaign("SC00000002", business_date, business_date + timedelta(days=30)),
        ],
    )
    config = tmp / "schedctl.toml"
    config.write_text(
        '[reports.queries.ok]\nsql = "select 1 as one"\n'
        '[reports.queries.broken]\nsql = "select * from no_such_table"\n'
        + files.config("batch_size = 1000").read_text()
    )
    env = {
        "SCHEDCTL_DATABASE_URL": db_url,
        "SCHEDCTL_CONFIG": str(config),
        "SCHEDCTL_MAIL_BACKEND": "smtp",
        "SCHEDCTL_SMTP_HOST": "127.0.0.1",
        "SCHEDCTL_SMTP_PORT": str(smtp_port),
        "SCHEDCTL_DAILY_QUOTA": "500",
    }
    earlier = {**env, "SCHEDCTL_NOW": (now - timedelta(hours=2)).isoformat()}
    report = ["--kind", "sql", "--param", "query=ok", "--cadence", "daily"]
    at = (now - timedelta(hours=1)).strftime("%H:%M")
    for args in [
        ["schedules", "create", "--name", HOSTILE, *report, "--at", at, "--tz", "UTC",
         "--to", "a@example.com", "--to", "b@example.com"],
        ["schedules", "create", "--name", "refused", *report, "--at", at, "--tz", "UTC",
         "--to", "bad@example.com"],
        ["schedules", "create", "--name", "broken", "--kind", "sql", "--param", "query=broken",
         "--cadence", "daily", "--at", at, "--tz", "UTC", "--to", "c@example.com"],
        ["schedules", "create", "--name", "berlin", *report, "--at", "02:30",
         "--tz", "Europe/Berlin", "--to", "d@example.com"],
        ["schedules", "create", "--name", "later", *report, "--at", "07:00", "--tz", "Asia/Tokyo",
         "--to", "e@example.com", "--paused"],
        ["users", "add", "u1@example.com", "--tz", "UTC", "--digest-at", "00:00"],
        ["users", "add", "u2@example.com", "--tz", "UTC", "--digest-at", "00:00"],
        ["events", "add", "--name", "launch", "--starts-at", "2030-01-10T10:00",
         "--tz", "Europe/Berlin", "--contact", "e@example.com"],
    ]:  # fmt: skip
        schedctl(args, earlier)
    schedctl(["notify", "--user", "u1@example.com", "--title", "report ready"], earlier)
    schedctl(["distribute"], {**env, "SCHEDCTL_NOW": now.isoformat()})
    schedctl(["tick"], {**env, "SCHEDCTL_NOW": now.isoformat()})
    schedctl(["digest"], {**env, "SCHEDCTL_NOW": now.isoformat()})
    return {"SCHEDCTL_CONFIG": str(config), "SCHEDCTL_DAILY_QUOTA": "500"}, files


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def get(url: str, token: str | None = TOKEN) -> tuple[int, bytes]:
    request = urllib.request.Request(url)  # noqa: S310 (http on loopback)
    if token is not None:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=10) as answer:  # noqa: S310 (loopback)
            return answer.status, answer.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


@contextlib.contextmanager
def serving(db_url: str, settings: dict[str, str]) -> Iterator[str]:
    """`schedctl serve` as a process on a free loopback port, with the token."""
    port = free_port()
    env = process_env(db_url, {**settings, "SCHEDCTL_WEB_TOKEN": TOKEN})
    server = Schedctl(
        [str(SCHEDCTL), "serve", "--port", str(port), "--quiet"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(150):
            if server.poll() is not None:
                raise AssertionError(f"serve exited {server.returncode}: {server.stderr.read()!r}")
            with contextlib.suppress(OSError):
                if get(f"{url}/healthz", token=None)[0] == 200:
                    break
            time.sleep(0.1)
        else:
            raise AssertionError("serve did not answer /healthz")
        yield url
    finally:
        server.send_signal(signal.SIGTERM)
        _, stderr = server.communicate(timeout=15)
    assert server.returncode == 0, stderr  # SIGTERM stops it cleanly


@pytest.fixture(
    scope="module",
    params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)],
)
def site(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Site]:
    tmp = tmp_path_factory.mktemp("status-pages")
    if request.param == "postgresql":
        databases = request.getfixturevalue("postgres")
        name = databases.new()
        db_url = pg_url(name)
    else:
        import shutil

        db_url = f"sqlite:///{tmp / 'schedctl.db'}"
        shutil.copyfile(request.getfixturevalue("sqlite_template"), tmp / "schedctl.db")
    with SmtpServer(rcpt_replies={"bad@example.com": "550 5.1.1 no such user"}) as smtp:
        settings, files = fill_a_day(db_url, tmp, smtp.port)
    engine = sa.create_engine(db_url, poolclass=sa.pool.NullPool)
    with serving(db_url, settings) as url:
        yield Site(db_url, url, engine, request.param, files)
    engine.dispose()
    if request.param == "postgresql":
        databases.release(name)


@pytest.fixture(scope="module")
def browser() -> Iterator[webdriver.Chrome]:
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in ["--headless=new", "--no-sandbox", "--disable-dev-shm-usage",
                     "--disable-gpu", "--window-size=1280,900"]:  # fmt: skip
        options.add_argument(argument)
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    driver.execute_cdp_cmd("Network.enable", {})
    with_token(driver, TOKEN)
    yield driver
    driver.quit()


def with_token(driver: webdriver.Chrome, token: str | None) -> None:
    headers = {} if token is None else {"Authorization": f"Bearer {token}"}
    driver.execute_cdp_cmd("Network.setExtraHTTPHeaders", {"headers": headers})


def open_page(driver: webdriver.Chrome, site: Site, path: str) -> None:
    driver.get(f"{site.url}{path}")


def text(driver: webdriver.Chrome, element_id: str) -> str:
    return str(driver.find_element(By.ID, element_id).text)


# --- the tests ---------------------------------------------------------------------------


def test_every_page_renders_with_its_title_and_no_script(
    browser: webdriver.Chrome, site: Site
) -> None:
    for path, title in PAGES.items():
        open_page(browser, site, path)
        assert browser.title == title, path
        assert browser.find_element(By.TAG_NAME, "h1").text
        assert "<script" not in browser.page_source.lower(), path


def test_the_front_page_numbers_are_the_databases(browser: webdriver.Chrome, site: Site) -> None:
    open_page(browser, site, "/")
    outbox = dict(site.query("select status, count(*) from messages group by status"))
    today = datetime.now(UTC).date().isoformat()
    sent_today = site.query("select sent from send_counters where day = :day", day=today)
    digests = dict(site.query("select status, count(*) from digests group by status"))
    failed_runs = site.scalar("select count(*) from schedule_runs where status = 'failed'")
    failed_messages = site.scalar("select count(*) from messages where status = 'failed'")
    failed_commands = site.scalar(
        "select count(*) from heartbeats where outcome in ('failed', 'error', 'temporary')"
    )

    for status in ("scheduled", "sent", "failed", "skipped", "retrying"):
        assert int(text(browser, f"outbox-{status}")) == outbox.get(status, 0), status
    assert int(text(browser, "quota-used")) == (sent_today[0][0] if sent_today else 0)
    assert text(browser, "quota-limit") == "500"
    for status in ("completed", "skipped", "scheduled"):
        assert int(text(browser, f"digests-{status}")) == digests.get(status, 0), status
    assert int(text(browser, "failures")) == failed_runs + failed_messages + failed_commands
    # The day did what it was meant to: something of each kind to compare.
    assert outbox["sent"] >= 3
    assert failed_runs == 1
    assert failed_messages == 1
    assert digests["completed"] == 1
    rows = browser.find_elements(By.CSS_SELECTOR, "#heartbeat tbody tr")
    commands = {row.get_attribute("data-command") for row in rows}
    assert {"tick", "digest"} <= commands


def test_the_latest_distribution_is_the_databases(browser: webdriver.Chrome, site: Site) -> None:
    with site.engine.connect() as conn:  # the table's types decode the date and the plan
        latest = conn.execute(
            sa.select(distributions).order_by(distributions.c.business_date.desc()).limit(1)
        ).one()
    written = sum(len(site.files.rows("dssb", t)) for t in ("sc_control", "sc_target"))
    open_page(browser, site, "/")

    assert text(browser, "distribution-date") == latest.business_date.isoformat()
    assert text(browser, "distribution-status") == latest.status
    assert int(text(browser, "distribution-users")) == latest.users
    assert int(text(browser, "distribution-campaigns")) == len(latest.plan["campaigns"])
    # The day's run did what it was meant to: every user of the source, in two campaigns,
    # written to the destinations.
    today = datetime.now(UTC).astimezone(ZoneInfo(DISTRIBUTE_TZ)).date()
    assert latest.business_date in (today, today - timedelta(days=1))  # across midnight
    assert latest.status == "completed"
    assert latest.users == len(site.files.ids) == written
    assert len(latest.plan["campaigns"]) == 2


def test_the_schedule_pages_show_the_databases_schedules_and_runs(
    browser: webdriver.Chrome, site: Site
) -> None:
    with site.engine.connect() as conn:  # the table's types decode SQLite's instants
        schedules = list(conn.execute(sa.select(table).order_by(table.c.id)))
    open_page(browser, site, "/schedules")

    assert int(text(browser, "schedule-count")) == len(schedules)
    for row in schedules:
        shown = browser.find_element(By.CSS_SELECTOR, f'#schedules tr[data-id="{row.id}"]')
        assert shown.find_element(By.CSS_SELECTOR, "td.name").text == row.name
        state = shown.find_element(By.CSS_SELECTOR, "td.state").text
        assert state == ("active" if row.active else "paused")
        times = shown.find_elements(By.CSS_SELECTOR, "td.next time")
        if row.next_run_at is None:
            assert times == []
        else:
            expected = row.next_run_at.astimezone(UTC).replace(microsecond=0).isoformat()
            assert times[0].get_attribute("datetime") == expected

    for schedule_id in (1, 3):
        runs = site.query(
            "select id, status from schedule_runs where schedule_id = :id", id=schedule_id
        )
        open_page(browser, site, f"/schedules/{schedule_id}")
        assert int(text(browser, "run-count")) == len(runs)
        for run in runs:
            status = browser.find_element(
                By.CSS_SELECTOR, f'#runs tr[data-id="{run.id}"] td.status'
            )
            assert status.text.split()[0] == run.status
        assert len(browser.find_elements(By.CSS_SELECTOR, "#next-slots tbody tr")) == 10


def test_the_message_pages_show_the_databases_messages_and_attempts(
    browser: webdriver.Chrome, site: Site
) -> None:
    total = site.scalar("select count(*) from messages")
    sent = site.scalar("select count(*) from messages where status = 'sent'")
    open_page(browser, site, "/messages")
    assert int(text(browser, "message-total")) == total
    assert len(browser.find_elements(By.CSS_SELECTOR, "#messages tbody tr")) == min(total, 50)

    open_page(browser, site, "/messages?status=sent")
    assert int(text(browser, "message-total")) == sent

    for message_id, status in site.query("select id, status from messages order by id"):
        attempts = site.scalar(
            "select count(*) from email_log where message_id = :id", id=message_id
        )
        open_page(browser, site, f"/messages/{message_id}")
        assert int(text(browser, "attempt-count")) == attempts
        assert text(browser, "message-status").split()[0] == status


def test_a_hostile_schedule_name_is_shown_as_text(browser: webdriver.Chrome, site: Site) -> None:
    for path in ("/schedules", "/schedules/1"):
        open_page(browser, site, path)
        assert browser.find_elements(By.TAG_NAME, "img") == [], path
        with pytest.raises(NoAlertPresentException):
            browser.switch_to.alert  # noqa: B018
        shown = [e.text for e in browser.find_elements(By.XPATH, f"//*[text()='{HOSTILE}']")]
        assert HOSTILE in shown, path


def test_a_phone_wide_window_has_no_horizontal_scroll(
    browser: webdriver.Chrome, site: Site
) -> None:
    browser.set_window_size(375, 812)
    try:
        for path in PAGES:
            open_page(browser, site, path)
            width, inner = browser.execute_script(
                "return [document.documentElement.scrollWidth, window.innerWidth]"
            )
            assert inner <= 400, "the window is not phone-wide"
            assert width <= inner, f"{path}: {width} px wide in a {inner} px window"
    finally:
        browser.set_window_size(1280, 900)


def png_size(path: Path) -> tuple[int, int]:
    """A PNG's width and height, from its IHDR chunk."""
    header = path.read_bytes()[:24]
    assert header[:8] == b"\x89PNG\r\n\x1a\n", path
    return int.from_bytes(header[16:20], "big"), int.from_bytes(header[20:24], "big")


def test_every_page_is_saved_as_a_full_length_screenshot_at_desktop_and_phone_width(
    browser: webdriver.Chrome, site: Site
) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    try:
        for width in SHOT_WIDTHS:
            for path, name in SHOTS.items():
                browser.set_window_size(width, 600)  # shorter than any page: scrollHeight
                open_page(browser, site, path)  # is then the page's own length
                height, chrome, scroll_width, inner = browser.execute_script(
                    "const d = document.documentElement;"
                    " return [d.scrollHeight, window.outerHeight - window.innerHeight,"
                    " d.scrollWidth, window.innerWidth]"
                )
                browser.set_window_size(width, height + chrome)  # the page's height inside
                shot = ARTIFACTS / f"{name}-{width}-{site.database}.png"
                assert browser.save_screenshot(str(shot)), shot
                assert png_size(shot) == (width, height), shot
                assert scroll_width <= inner, f"{path}: {scroll_width} px wide at {width} px"
    finally:
        browser.set_window_size(1280, 900)


def test_without_the_token_a_page_is_401_and_healthz_answers(
    browser: webdriver.Chrome, site: Site
) -> None:
    with_token(browser, None)
    try:
        open_page(browser, site, "/schedules")
        shown = browser.find_elements(By.ID, "schedules")
    finally:
        with_token(browser, TOKEN)

    assert shown == []  # the browser asks for credentials instead
    for path in [*PAGES, "/badge/tick.svg", "/metrics"]:
        assert get(f"{site.url}{path}", token=None)[0] == 401, path
        assert get(f"{site.url}{path}", token="not-the-token-at-all")[0] == 401, path
    assert get(f"{site.url}/healthz", token=None) == (200, b"ok\n")


def test_metrics_are_served_with_the_token(site: Site) -> None:
    sent = site.scalar("select count(*) from messages where status = 'sent'")
    status, body = get(f"{site.url}/metrics")
    text = body.decode()

    assert status == 200
    assert "schedctl_quota_limit 500.0" in text
    assert (
        sum(
            float(line.rsplit(" ", 1)[1])
            for line in text.splitlines()
            if line.startswith('schedctl_messages{status="sent"')
        )
        == sent
    )


def test_the_readmes_prometheus_scrape_config_reads_the_metrics(site: Site) -> None:
    """The job the README shows, as Prometheus sends it: its path, its authorization
    type, and the token as credentials_file holds it."""
    import yaml

    readme = (REPO / "README.md").read_text()
    section = readme[readme.index("### Monitoring: metrics (Prometheus)") :]
    start = section.index("```yaml\n") + len("```yaml\n")
    (job,) = yaml.safe_load(section[start : section.index("```\n", start)])["scrape_configs"]
    authorization = job["authorization"]
    assert set(authorization) == {"type", "credentials_file"}

    request = urllib.request.Request(f"{site.url}{job['metrics_path']}")  # noqa: S310 (loopback)
    request.add_header("Authorization", f"{authorization['type']} {TOKEN}")
    with urllib.request.urlopen(request, timeout=10) as answer:  # noqa: S310 (loopback)
        assert answer.status == 200
        assert b"schedctl_info{" in answer.read()


def test_the_badges_are_svg_of_the_heartbeat(site: Site) -> None:
    """digest succeeded a moment ago: green; tick's runs had failures (exit 1), so it
    never succeeded: unknown, as `heartbeat` judges it."""
    ticks = site.scalar("select count(*) from heartbeats where command = 'tick'")
    tick_successes = site.scalar(
        "select count(*) from heartbeats where command = 'tick' and outcome = 'success'"
    )
    titles = {}
    for command in ("digest", "tick"):
        status, body = get(f"{site.url}/badge/{command}.svg")
        root = ET.fromstring(body)  # noqa: S314 (our own server's SVG)
        assert status == 200
        assert root.tag == "{http://www.w3.org/2000/svg}svg"
        titles[command] = root.findtext("{http://www.w3.org/2000/svg}title")

    assert (ticks, tick_successes) == (1, 0)
    assert titles == {"digest": "digest: green", "tick": "tick: unknown"}
    # Serving only reads: whatever the server answered, it recorded no heartbeat.
    assert site.scalar("select count(*) from heartbeats where command = 'serve'") == 0
