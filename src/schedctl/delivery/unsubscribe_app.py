"""A small stdlib WSGI app that applies unsubscribe links (RFC 8058 one-click).

``GET /unsubscribe?a=ACCOUNT&e=EMAIL&t=TOKEN`` only shows a confirmation page: mail
scanners and link previews fetch links, and must not unsubscribe anyone. ``POST`` to
the same URL (what a mail client sends for ``List-Unsubscribe-Post``, or the page's
button) calls ``apply(account, email, token)``, which verifies the token and records
the suppression; it returns False for a bad token.

Serve it with any WSGI server, e.g. ``wsgiref.simple_server`` behind a proxy.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from urllib.parse import parse_qsl, urlencode
from wsgiref.types import StartResponse, WSGIApplication, WSGIEnvironment

from schedctl.errors import SchedctlError, TemporaryError, ValidationError
from schedctl.render import render
from schedctl.values import validate_email

__all__ = ["make_unsubscribe_app"]

logger = logging.getLogger("schedctl.delivery")

_PATH = "/unsubscribe"
_MAX_BODY = 4096
_MAX_PARAM = 512
_STATUS = {
    200: "200 OK",
    400: "400 Bad Request",
    404: "404 Not Found",
    405: "405 Method Not Allowed",
    413: "413 Content Too Large",
    500: "500 Internal Server Error",
    503: "503 Service Unavailable",
}
# The token is in the URL: never leak it through Referer, caches or framing.
_HEADERS = [
    ("Content-Type", "text/html; charset=utf-8"),
    ("Cache-Control", "no-store"),
    ("Referrer-Policy", "no-referrer"),
    ("X-Content-Type-Options", "nosniff"),
    (
        "Content-Security-Policy",
        "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'",
    ),
]

ApplyUnsubscribe = Callable[[str, str, str], bool]


def _params(pairs: Iterable[tuple[str, str]]) -> dict[str, str]:
    params: dict[str, str] = {}
    for key, value in pairs:
        params.setdefault(key, value)  # the first value wins
    return params


def _read_form(environ: WSGIEnvironment) -> list[tuple[str, str]] | None:
    """The url-encoded POST body as pairs; None when it is too large."""
    try:
        length = int(environ.get("CONTENT_LENGTH") or 0)
    except ValueError:
        length = 0
    if length > _MAX_BODY:
        return None
    if length <= 0:
        return []
    body = environ["wsgi.input"].read(length)
    content_type = str(environ.get("CONTENT_TYPE", "")).split(";")[0].strip().lower()
    if content_type not in ("", "application/x-www-form-urlencoded"):
        return []
    return parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True)


def make_unsubscribe_app(apply: ApplyUnsubscribe, *, title: str = "schedctl") -> WSGIApplication:
    """Build the WSGI app; ``apply(account_id, email, token) -> bool`` does the work."""

    def respond(
        start_response: StartResponse,
        status: int,
        method: str,
        extra_headers: list[tuple[str, str]] | None = None,
        **context: str,
    ) -> list[bytes]:
        page = render("unsubscribe_page.html", title=title, **context).encode("utf-8")
        headers = [*_HEADERS, ("Content-Length", str(len(page))), *(extra_headers or [])]
        start_response(_STATUS[status], headers)
        return [] if method == "HEAD" else [page]

    def app(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        method = str(environ.get("REQUEST_METHOD", "GET")).upper()
        path = str(environ.get("PATH_INFO", "")).rstrip("/") or "/"
        if path != _PATH:
            return respond(start_response, 404, method, state="not_found")
        if method not in ("GET", "HEAD", "POST"):
            allow = [("Allow", "GET, HEAD, POST")]
            return respond(start_response, 405, method, allow, state="method")

        query = parse_qsl(str(environ.get("QUERY_STRING", "")), keep_blank_values=True)
        pairs = list(query)
        if method == "POST":
            form = _read_form(environ)
            if form is None:
                return respond(start_response, 413, method, state="invalid")
            pairs += form  # the query string (the signed link) wins over the body
        params = _params(pairs)
        account, token = params.get("a", ""), params.get("t", "")
        try:
            email = validate_email(params.get("e", ""))
        except ValidationError:
            email = ""
        if not (account and email and token) or any(
            len(v) > _MAX_PARAM for v in (account, email, token)
        ):
            return respond(start_response, 400, method, state="invalid")

        if method != "POST":
            link = urlencode([("a", account), ("e", email), ("t", token)])
            return respond(start_response, 200, method, state="confirm", email=email, query=link)
        try:
            applied = apply(account, email, token)
        except SchedctlError as exc:
            # What schedctl has already put in one line, so one line in the log, no
            # traceback: the database down or taking no writes is 503 (the click can be
            # repeated); a refusal (a role without INSERT on suppressions, a trigger's
            # RAISE) is 500, an operator's to mend. The same "nothing was changed" page.
            logger.error("unsubscribe for account %s not recorded: %s", account, exc.message)
            if isinstance(exc, TemporaryError):
                retry = [("Retry-After", "60")]
                return respond(start_response, 503, method, retry, state="error")
            return respond(start_response, 500, method, state="error")
        except Exception:
            # No token or address in the log: the log is not a place for either.
            logger.exception("unsubscribe failed for account %s", account)
            return respond(start_response, 500, method, state="error")
        if not applied:
            return respond(start_response, 400, method, state="invalid")
        return respond(start_response, 200, method, state="done", email=email)

    return app
