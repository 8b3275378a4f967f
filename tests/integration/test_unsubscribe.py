"""Suppressions and unsubscribe: CLI (in-process), tokens, and the WSGI app."""

from __future__ import annotations

import io
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qs, urlsplit
from wsgiref.util import setup_testing_defaults

import pytest
import sqlalchemy as sa

from schedctl import web
from schedctl.config import Settings
from schedctl.db.database import Database
from schedctl.db.schema import suppressions
from schedctl.delivery.tokens import make_token
from support.cli import CliRunner

SECRET = "unsubscribe-test-secret-0123456789"
ENV = {
    "SCHEDCTL_UNSUBSCRIBE_SECRET": SECRET,
    "SCHEDCTL_UNSUBSCRIBE_BASE_URL": "https://mail.example.com/",
}


def suppressed(db_url: str) -> list[tuple[int, str, str]]:
    with Database(db_url) as db:
        rows = db.transaction(
            lambda conn: conn.execute(
                sa.select(
                    suppressions.c.account_id, suppressions.c.email, suppressions.c.reason
                ).order_by(suppressions.c.id)
            ).all()
        )
    return [tuple(r) for r in rows]


def test_suppressions_add_list_remove_are_idempotent(cli: CliRunner, db_url: str) -> None:
    first = cli("suppressions", "add", "Bob@Example.org", "--json", db_url=db_url)
    second = cli("suppressions", "add", "bob@example.org", "--json", db_url=db_url)
    listed = cli("suppressions", "list", "--json", db_url=db_url)
    removed = cli("suppressions", "remove", "bob@example.org", "--json", db_url=db_url)
    again = cli("suppressions", "remove", "bob@example.org", "--json", db_url=db_url)

    assert first.json == {"email": "bob@example.org", "added": True}
    assert second.json == {"email": "bob@example.org", "added": False}
    assert [s["email"] for s in listed.json["suppressions"]] == ["bob@example.org"]
    assert listed.json["count"] == 1
    assert listed.json["suppressions"][0]["id"].isdigit()
    assert (removed.json["removed"], again.json["removed"]) == (True, False)
    assert suppressed(db_url) == []


@pytest.mark.parametrize("dialect", ["sqlite"])
@pytest.mark.parametrize(
    "args",
    [
        ["suppressions", "add", "not an address"],
        ["suppressions", "add", "a@example.org", "--reason", "dislike"],
        ["suppressions", "add", "a@example.org", "--account", "nope"],
        ["unsubscribe", "a@@example.org", "--token", "x"],
    ],
    ids=" ".join,
)
def test_invalid_input_is_exit_2(cli: CliRunner, db_url: str, args: list[str]) -> None:
    result = cli(*args, db_url=db_url, env=ENV)

    assert result.returncode == 2
    assert len(result.stderr.strip().splitlines()) == 1
    assert suppressed(db_url) == []


def test_unsubscribe_url_token_unsubscribes_once(cli: CliRunner, db_url: str) -> None:
    url = cli("unsubscribe-url", "Bob@Example.org", "--json", db_url=db_url, env=ENV).json["url"]
    query = parse_qs(urlsplit(url).query)

    first = cli("unsubscribe", "bob@example.org", "--token", query["t"][0], "--json",
                db_url=db_url, env=ENV)  # fmt: skip
    second = cli("unsubscribe", "bob@example.org", "--token", query["t"][0], "--json",
                 db_url=db_url, env=ENV)  # fmt: skip

    assert url.startswith("https://mail.example.com/unsubscribe?a=1&e=bob%40example.org&t=")
    assert first.json == {"email": "bob@example.org", "unsubscribed": True, "already": False}
    assert second.json["already"] is True
    assert suppressed(db_url) == [(1, "bob@example.org", "unsubscribe")]
    assert SECRET not in first.stdout + first.stderr + url


def test_a_token_for_another_address_or_account_is_refused(cli: CliRunner, db_url: str) -> None:
    assert cli("accounts", "create", "acme", db_url=db_url).returncode == 0
    bobs_token = make_token(SECRET, "1", "bob@example.org")

    other_address = cli("unsubscribe", "eve@example.org", "--token", bobs_token,
                        db_url=db_url, env=ENV)  # fmt: skip
    other_account = cli("unsubscribe", "bob@example.org", "--token", bobs_token,
                        "--account", "acme", db_url=db_url, env=ENV)  # fmt: skip

    assert other_address.returncode == 2
    assert "invalid unsubscribe token" in other_address.stderr
    assert other_account.returncode == 2
    assert suppressed(db_url) == []


def test_without_a_secret_unsubscribe_is_a_configuration_error(cli: CliRunner, db_url: str) -> None:
    url = cli("unsubscribe-url", "bob@example.org", db_url=db_url)
    apply = cli("unsubscribe", "bob@example.org", "--token", "x", db_url=db_url)

    assert (url.returncode, apply.returncode) == (2, 2)
    assert "SCHEDCTL_UNSUBSCRIBE" in url.stderr


# ---------------------------------------------------------------------- the WSGI app


def call(app: Any, method: str, query: str) -> tuple[str, str]:
    body = query.encode() if method == "POST" else b""
    environ: dict[str, Any] = {
        "REQUEST_METHOD": method,
        "PATH_INFO": "/unsubscribe",
        "QUERY_STRING": "" if method == "POST" else query,
        "CONTENT_TYPE": "application/x-www-form-urlencoded",
        "CONTENT_LENGTH": str(len(body)),
        "wsgi.input": io.BytesIO(body),
    }
    setup_testing_defaults(environ)
    seen: dict[str, str] = {}

    def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
        seen["status"] = status
        return lambda data: None

    page = b"".join(app(environ, start_response)).decode()
    return seen["status"], page


@pytest.fixture
def web_app(db_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """`schedctl.web:application`, configured from the environment as gunicorn runs it."""
    monkeypatch.setenv("SCHEDCTL_DATABASE_URL", db_url)
    monkeypatch.setenv("SCHEDCTL_UNSUBSCRIBE_SECRET", SECRET)
    web.reset()
    yield web.application
    web.reset()


def test_the_web_app_get_changes_nothing_and_post_unsubscribes(web_app: Any, db_url: str) -> None:
    query = f"a=1&e=bob%40example.org&t={make_token(SECRET, '1', 'bob@example.org')}"

    get_status, page = call(web_app, "GET", query)
    after_get = suppressed(db_url)
    post_status, _ = call(web_app, "POST", query)
    again_status, _ = call(web_app, "POST", query)

    assert get_status.startswith("200")
    assert "<form" in page
    assert after_get == []
    assert post_status.startswith("200")
    assert again_status.startswith("200")
    assert suppressed(db_url) == [(1, "bob@example.org", "unsubscribe")]


@pytest.mark.parametrize(
    "query",
    [
        f"a=1&e=eve%40example.org&t={make_token(SECRET, '1', 'bob@example.org')}",
        f"a=2&e=bob%40example.org&t={make_token(SECRET, '1', 'bob@example.org')}",
        f"a=9&e=bob%40example.org&t={make_token(SECRET, '9', 'bob@example.org')}",
        f"a=1&e=bob%40example.org&t={make_token('another-secret', '1', 'bob@example.org')}",
    ],
    ids=["other address", "other account", "no such account", "other secret"],
)
def test_the_web_app_refuses_a_bad_token(web_app: Any, db_url: str, query: str) -> None:
    status, _ = call(web_app, "POST", query)

    assert status.startswith("400")
    assert suppressed(db_url) == []


@pytest.mark.parametrize("dialect", ["sqlite"])
def test_make_application_over_an_open_database(db_url: str) -> None:
    settings = Settings(database_url=db_url, unsubscribe_secret=SECRET)
    with Database(db_url) as db:
        app = web.make_application(settings, db)
        status, _ = call(
            app, "POST", f"a=1&e=x%40example.org&t={make_token(SECRET, '1', 'x@example.org')}"
        )
    assert status.startswith("200")
    assert suppressed(db_url) == [(1, "x@example.org", "unsubscribe")]
