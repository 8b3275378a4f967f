"""schedctl's web application: unsubscribe links, status pages, badges, health.

``schedctl serve`` runs it in waitress. It is also a plain WSGI application for any
other server: ``schedctl.web:application`` reads its settings (database URL,
unsubscribe secret, ``[web]`` token and account) from the environment or
``SCHEDCTL_CONFIG`` like every command, on the first request::

    gunicorn --workers 2 --bind 127.0.0.1:8080 'schedctl.web:application'

:func:`make_application` builds one from given settings (and an open database).

Routes:

- ``/unsubscribe`` (public): ``GET /unsubscribe?a=…&e=…&t=…`` only shows a
  confirmation page (link scanners must not unsubscribe anyone); ``POST`` (the
  page's button, or a mail client's RFC 8058 one-click request) verifies the token
  and suppresses the address;
- ``/healthz`` (public): ``200 ok`` when the database answers, ``503`` otherwise;
- ``/static/schedctl.css`` (public): the pages' stylesheet;
- everything else: the status pages (:mod:`schedctl.pages.app`) and ``/metrics``
  (`schedctl metrics`' Prometheus text), behind the ``[web] token`` and limited to
  ``[web] account`` when it is set.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable
from wsgiref.types import StartResponse, WSGIApplication, WSGIEnvironment

import sqlalchemy as sa

from schedctl.accounts import account_name, resolve_account
from schedctl.config import Settings, load_settings
from schedctl.db.database import Database
from schedctl.db.migrations import check_schema
from schedctl.delivery.suppressions import apply_unsubscribe
from schedctl.delivery.unsubscribe_app import make_unsubscribe_app
from schedctl.pages.app import (
    STYLESHEET_PATH,
    Metrics,
    Response,
    StatusPages,
    request_path,
    send,
)
from schedctl.pages.app import stylesheet as read_stylesheet

__all__ = ["application", "make_application", "reset"]

log = logging.getLogger("schedctl.web")

_UNSUBSCRIBE = "/unsubscribe"
_HEALTHZ = "/healthz"
_READ_METHODS = ("GET", "HEAD")


def _text(status: int, text: str) -> Response:
    return Response(status, text.encode("utf-8"), "text/plain; charset=utf-8")


def database_answers(db: Database) -> bool:
    """Whether the database answers a query now (no retries: a probe must be quick)."""
    try:
        with db.engine.connect() as conn:
            conn.execute(sa.text("SELECT 1"))
    except Exception as exc:
        log.warning("healthz: the database does not answer: %s", type(exc).__name__)
        return False
    return True


def _metrics(settings: Settings) -> Metrics:
    """``GET /metrics``: `schedctl metrics`' text, counted over the pages' account."""

    def render(db: Database, account_id: int | None) -> tuple[str, str]:
        from schedctl import metrics  # prometheus_client: only when /metrics is asked for

        return metrics.CONTENT_TYPE, metrics.render_metrics(db, settings, account_id=account_id)

    return render


def make_application(settings: Settings, db: Database | None = None) -> WSGIApplication:
    """The whole web app over ``db`` (default: opened from ``settings``).

    Checks the schema, and resolves ``[web] account`` (NotFound if there is none).
    """
    database = db or Database(settings.database_url, retry_seconds=settings.db_retry_seconds)
    check_schema(database)

    def apply(account: str, email: str, token: str) -> bool:
        now = database.now()
        outcome = database.transaction(
            lambda conn: apply_unsubscribe(conn, settings, account, email, token, now)
        )
        return outcome is not None

    unsubscribe = make_unsubscribe_app(apply)
    pages_db, account_id, name = database, None, None
    if settings.web_account is not None:
        ref = settings.web_account

        def find(conn: sa.Connection) -> tuple[int, str]:
            found = resolve_account(conn, ref)
            return found, account_name(conn, found)

        account_id, name = database.transaction(find, read_only=True)
        pages_db = database.for_account(account_id)
    pages = StatusPages(
        pages_db, settings, account_id=account_id, account_name=name, metrics=_metrics(settings)
    )
    css = read_stylesheet()

    def app(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        path = request_path(environ).rstrip("/") or "/"
        method = str(environ.get("REQUEST_METHOD", "GET")).upper()
        if path == _UNSUBSCRIBE:
            return unsubscribe(environ, start_response)
        if path not in (_HEALTHZ, STYLESHEET_PATH):
            return pages(environ, start_response)
        if method not in _READ_METHODS:
            refused = _text(405, "method not allowed\n")
            refused.headers = (("Allow", "GET, HEAD"),)
            return send(start_response, method, refused)
        if path == STYLESHEET_PATH:
            return send(start_response, method, Response(200, css, "text/css; charset=utf-8"))
        if database_answers(database):
            return send(start_response, method, _text(200, "ok\n"))
        return send(start_response, method, _text(503, "unavailable\n"))

    return app


_app: WSGIApplication | None = None
_db: Database | None = None
_lock = threading.Lock()


def application(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
    """The WSGI entry point; builds the app from the environment on first use."""
    global _app, _db
    if _app is None:
        with _lock:
            if _app is None:
                settings = load_settings()
                _db = Database(settings.database_url, retry_seconds=settings.db_retry_seconds)
                _app = make_application(settings, _db)
    return _app(environ, start_response)


def reset() -> None:
    """Close the database the entry point opened; the next request opens it again."""
    global _app, _db
    with _lock:
        if _db is not None:
            _db.close()
        _app, _db = None, None
