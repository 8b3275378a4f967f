"""The unsubscribe WSGI app, called directly (and through wsgiref's validator)."""

from __future__ import annotations

import io
from typing import Any
from urllib.parse import urlencode
from wsgiref.util import setup_testing_defaults
from wsgiref.validate import validator

import pytest

from schedctl.delivery.tokens import make_token, verify_token
from schedctl.delivery.unsubscribe_app import make_unsubscribe_app
from schedctl.errors import DatabaseUnavailable, PermissionDenied

SECRET = "wsgi-test-secret"
ACCOUNT = "acc-1"
EMAIL = "bob@example.org"


class Recorder:
    def __init__(self) -> None:
        self.calls: list[tuple[str, str, str]] = []

    def __call__(self, account: str, email: str, token: str) -> bool:
        self.calls.append((account, email, token))
        return verify_token(SECRET, account, email, token)


def query(email: str = EMAIL, token: str | None = None, account: str = ACCOUNT) -> str:
    if token is None:
        token = make_token(SECRET, account, email)
    return urlencode({"a": account, "e": email, "t": token})


def call(
    app: Any,
    method: str = "GET",
    path: str = "/unsubscribe",
    query_string: str = "",
    body: bytes = b"",
    content_type: str = "application/x-www-form-urlencoded",
) -> tuple[str, dict[str, str], str]:
    environ: dict[str, Any] = {
        "REQUEST_METHOD": method,
        "SCRIPT_NAME": "",
        "PATH_INFO": path,
        "QUERY_STRING": query_string,
        "CONTENT_LENGTH": str(len(body)),
        "CONTENT_TYPE": content_type,
        "wsgi.input": io.BytesIO(body),
    }
    setup_testing_defaults(environ)
    seen: dict[str, Any] = {}

    def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
        seen["status"], seen["headers"] = status, dict(headers)
        return lambda data: None

    result = validator(app)(environ, start_response)
    try:
        payload = b"".join(result)
    finally:
        result.close()  # type: ignore[attr-defined]
    return seen["status"], seen["headers"], payload.decode("utf-8")


@pytest.fixture
def apply() -> Recorder:
    return Recorder()


@pytest.fixture
def app(apply: Recorder) -> Any:
    return make_unsubscribe_app(apply, title="Acme Reports")


def test_get_shows_confirmation_and_changes_nothing(app: Any, apply: Recorder) -> None:
    status, headers, page = call(app, "GET", query_string=query())
    assert status == "200 OK"
    assert apply.calls == []
    assert headers["Content-Type"] == "text/html; charset=utf-8"
    assert headers["Referrer-Policy"] == "no-referrer"
    assert headers["Cache-Control"] == "no-store"
    assert '<form method="post"' in page
    assert 'name="List-Unsubscribe" value="One-Click"' in page
    assert EMAIL in page
    assert "Acme Reports" in page


def test_head_changes_nothing(app: Any, apply: Recorder) -> None:
    status, _, page = call(app, "HEAD", query_string=query())
    assert status == "200 OK"
    assert page == ""
    assert apply.calls == []


def test_one_click_post_applies(app: Any, apply: Recorder) -> None:
    token = make_token(SECRET, ACCOUNT, EMAIL)
    status, headers, page = call(
        app, "POST", query_string=query(token=token), body=b"List-Unsubscribe=One-Click"
    )
    assert status == "200 OK"
    assert "Location" not in headers
    assert apply.calls == [(ACCOUNT, EMAIL, token)]
    assert "has been unsubscribed" in page


def test_post_params_may_come_from_the_form_body(app: Any, apply: Recorder) -> None:
    body = f"List-Unsubscribe=One-Click&{query()}".encode()
    status, _, _ = call(app, "POST", body=body)
    assert status == "200 OK"
    assert len(apply.calls) == 1


def test_post_normalises_the_address(app: Any, apply: Recorder) -> None:
    token = make_token(SECRET, ACCOUNT, EMAIL)
    status, _, _ = call(app, "POST", query_string=query(email="BOB@Example.org", token=token))
    assert status == "200 OK"
    assert apply.calls == [(ACCOUNT, EMAIL, token)]


def test_bad_token_is_400(app: Any, apply: Recorder) -> None:
    status, _, page = call(app, "POST", query_string=query(token="forged"))
    assert status == "400 Bad Request"
    assert len(apply.calls) == 1
    assert "invalid" in page


@pytest.mark.parametrize(
    "query_string",
    ["", "a=acc-1&e=bob%40example.org", "a=acc-1&t=x", "a=acc-1&e=not-an-address&t=x"],
)
def test_incomplete_link_is_400_without_apply(app: Any, apply: Recorder, query_string: str) -> None:
    for method in ("GET", "POST"):
        status, _, _ = call(app, method, query_string=query_string)
        assert status == "400 Bad Request"
    assert apply.calls == []


@pytest.mark.parametrize("method", ["PUT", "DELETE", "PATCH", "OPTIONS"])
def test_other_methods_are_405(app: Any, apply: Recorder, method: str) -> None:
    status, headers, _ = call(app, method, query_string=query())
    assert status == "405 Method Not Allowed"
    assert headers["Allow"] == "GET, HEAD, POST"
    assert apply.calls == []


@pytest.mark.parametrize("path", ["/", "/unsubscribe/extra", "/admin", "/unsubscribex"])
def test_unknown_path_is_404(app: Any, apply: Recorder, path: str) -> None:
    status, _, _ = call(app, "POST", path=path, query_string=query())
    assert status == "404 Not Found"
    assert apply.calls == []


def test_values_are_escaped(apply: Recorder) -> None:
    app = make_unsubscribe_app(apply, title="<b>Acme</b>")
    evil_account = '"><script>alert(1)</script>'
    status, _, page = call(app, "GET", query_string=query(account=evil_account))
    assert status == "200 OK"
    assert "<script>" not in page
    assert "<b>" not in page
    assert "&lt;b&gt;Acme&lt;/b&gt;" in page
    # The account only travels in the form's action, URL-encoded and attribute-escaped.
    assert 'action="?a=%22%3E%3Cscript%3Ealert%281%29%3C%2Fscript%3E&amp;e=' in page


def test_oversized_body_is_413(app: Any, apply: Recorder) -> None:
    status, _, _ = call(app, "POST", query_string=query(), body=b"x=" + b"y" * 10_000)
    assert status == "413 Content Too Large"
    assert apply.calls == []


def test_apply_error_is_500_and_logged_without_token(caplog: pytest.LogCaptureFixture) -> None:
    def broken(account: str, email: str, token: str) -> bool:
        raise RuntimeError("database is down")

    app = make_unsubscribe_app(broken)
    token = make_token(SECRET, ACCOUNT, EMAIL)
    status, _, page = call(app, "POST", query_string=query(token=token))
    assert status == "500 Internal Server Error"
    assert "nothing was changed" in page
    assert token not in caplog.text
    assert "unsubscribe failed" in caplog.text


@pytest.mark.parametrize(
    ("error", "status", "retry_after"),
    [
        # The database down or taking no writes: the click can be repeated.
        (DatabaseUnavailable("database unavailable (x): it takes no writes"), "503", "60"),
        # A refusal (a role without INSERT on suppressions) logged a traceback per click.
        (
            PermissionDenied(
                "database error (x): permission denied for table suppressions", refusal="x"
            ),
            "500",
            None,
        ),
    ],
)
def test_a_database_that_is_down_or_refuses_the_write_is_one_log_line(
    caplog: pytest.LogCaptureFixture, error: Exception, status: str, retry_after: str | None
) -> None:
    def failing(account: str, email: str, token: str) -> bool:
        raise error

    app = make_unsubscribe_app(failing)
    token = make_token(SECRET, ACCOUNT, EMAIL)
    answered, headers, page = call(app, "POST", query_string=query(token=token))
    assert answered.split()[0] == status
    assert headers.get("Retry-After") == retry_after
    assert "nothing was changed" in page
    assert token not in caplog.text
    [record] = caplog.records
    assert record.exc_info is None  # one line, no traceback
    assert str(error) in record.getMessage()
