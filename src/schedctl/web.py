"""The WSGI application that applies one-click unsubscribe links.

``schedctl.web:application`` reads its settings (database URL, unsubscribe secret)
from the environment or ``SCHEDCTL_CONFIG`` like every command, on the first
request. Serve it with any WSGI server behind your HTTPS proxy, at the URL that
``SCHEDCTL_UNSUBSCRIBE_BASE_URL`` names::

    gunicorn --workers 2 --bind 127.0.0.1:8080 'schedctl.web:application'

    python -c "from wsgiref.simple_server import make_server; \\
        from schedctl.web import application; \\
        make_server('127.0.0.1', 8080, application).serve_forever()"

``GET /unsubscribe?a=…&e=…&t=…`` only shows a confirmation page (link scanners must
not unsubscribe anyone); ``POST`` (the page's button, or a mail client's RFC 8058
one-click request) verifies the token and suppresses the address.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from wsgiref.types import StartResponse, WSGIApplication, WSGIEnvironment

from schedctl.config import Settings, load_settings
from schedctl.db.database import Database
from schedctl.db.migrations import check_schema
from schedctl.delivery.suppressions import apply_unsubscribe
from schedctl.delivery.unsubscribe_app import make_unsubscribe_app

__all__ = ["application", "make_application", "reset"]


def make_application(settings: Settings, db: Database | None = None) -> WSGIApplication:
    """The unsubscribe app over ``db`` (default: opened from ``settings``)."""
    database = db or Database(settings.database_url, retry_seconds=settings.db_retry_seconds)
    check_schema(database)

    def apply(account: str, email: str, token: str) -> bool:
        now = database.now()
        outcome = database.transaction(
            lambda conn: apply_unsubscribe(conn, settings, account, email, token, now)
        )
        return outcome is not None

    return make_unsubscribe_app(apply)


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
