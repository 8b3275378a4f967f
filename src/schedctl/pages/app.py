"""The status pages as a WSGI application (SPEC §12): read-only, server-rendered.

Routes (GET and HEAD only; any other method is 405):

- ``/``: heartbeat per command, today's quota, the outbox by status, the last 24 h's
  failures, today's digests, the latest distribution;
- ``/schedules`` and ``/schedules/{id}``: schedules with their last and next runs; one
  schedule's next slots (with the DST and month-end adjustments named) and history;
- ``/messages?status=&type=&page=`` and ``/messages/{id}``: the outbox, paged; one
  message with every attempt to send it;
- ``/badge/{command}.svg``: the command's heartbeat badge;
- ``/metrics``: the Prometheus text format (`schedctl metrics`), when a ``metrics``
  function is given (web.py gives schedctl.metrics.render_metrics).

Access: with ``[web] token`` set, every route here needs ``Authorization: Bearer
TOKEN`` (or HTTP basic authentication with the token as the password, which a
browser can send), else 401. Without a token they answer only clients on this host
(a loopback client, through no proxy, naming a loopback host: not a page of another
site whose name was made to resolve to 127.0.0.1), else 403: `schedctl serve` binds
nothing else without one, and the same holds for the app under any other WSGI server.

Every value shown is escaped by the templates' autoescaping; the Content-Security-
Policy allows no script at all and only this app's stylesheet, so the pages work
without JavaScript by construction.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import ipaddress
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import parse_qsl
from wsgiref.types import StartResponse, WSGIEnvironment

from schedctl.cadence import PlannedSlot, upcoming_slots
from schedctl.commands import COMMAND_NAMES
from schedctl.config import Settings
from schedctl.db.database import Database
from schedctl.errors import NotFound, TemporaryError, ValidationError
from schedctl.pages import data
from schedctl.pages.badge import badge_svg
from schedctl.render import render
from schedctl.values import as_id, normalise_type
from schedctl.vocabulary import MESSAGE_STATUSES

__all__ = ["STYLESHEET_PATH", "Metrics", "StatusPages", "stylesheet"]

log = logging.getLogger("schedctl.web")

STYLESHEET_PATH = "/static/schedctl.css"
NEXT_SLOTS = 10  # shown on a schedule's page

_REASONS = {
    200: "OK",
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    500: "Internal Server Error",
    503: "Service Unavailable",
}
_SECURITY_HEADERS = [
    ("Cache-Control", "no-store"),
    ("Referrer-Policy", "no-referrer"),
    ("X-Content-Type-Options", "nosniff"),
    (
        "Content-Security-Policy",
        "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self';"
        " base-uri 'none'; frame-ancestors 'none'",
    ),
]
_CHALLENGE = [
    ("WWW-Authenticate", 'Bearer realm="schedctl"'),
    ("WWW-Authenticate", 'Basic realm="schedctl", charset="UTF-8"'),
]
_READ_METHODS = ("GET", "HEAD")

Metrics = Callable[[Database, int | None], tuple[str, str]]  # -> (content type, body)


@dataclass
class Response:
    status: int
    body: bytes
    content_type: str = "text/html; charset=utf-8"
    headers: tuple[tuple[str, str], ...] = ()


def status_line(code: int) -> str:
    return f"{code} {_REASONS[code]}"


def stylesheet() -> bytes:
    """The pages' one stylesheet."""
    from importlib.resources import files

    return (files("schedctl") / "templates" / "pages" / "schedctl.css").read_bytes()


def send(start_response: StartResponse, method: str, response: Response) -> list[bytes]:
    """Start a response with the security headers; no body for HEAD."""
    headers = [
        ("Content-Type", response.content_type),
        ("Content-Length", str(len(response.body))),
        *_SECURITY_HEADERS,
        *response.headers,
    ]
    start_response(status_line(response.status), headers)
    return [] if method == "HEAD" else [response.body]


def request_path(environ: WSGIEnvironment) -> str:
    """PATH_INFO as text (WSGI hands it over as latin-1 decoded bytes)."""
    raw = str(environ.get("PATH_INFO", "") or "/")
    try:
        return raw.encode("latin-1").decode("utf-8")
    except (UnicodeEncodeError, UnicodeDecodeError):
        return raw


def _given_token(header: str) -> str | None:
    scheme, _, value = header.strip().partition(" ")
    if scheme.lower() == "bearer":
        return value.strip()
    if scheme.lower() == "basic":
        try:
            decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            return None
        return decoded.partition(":")[2]
    return None


def _is_loopback(address: object) -> bool:
    try:
        return ipaddress.ip_address(str(address)).is_loopback
    except ValueError:
        return False


# Headers a proxy adds: the client it speaks for may be anywhere.
_FORWARDED = ("HTTP_FORWARDED", "HTTP_X_FORWARDED_FOR", "HTTP_X_REAL_IP")


def _on_this_host(environ: WSGIEnvironment) -> bool:
    """A request from this host to this host: a loopback client, through no proxy,
    naming a loopback host (a page a browser loaded from another site, whose name
    was made to resolve to 127.0.0.1, names that site)."""
    if not _is_loopback(environ.get("REMOTE_ADDR")) or any(h in environ for h in _FORWARDED):
        return False
    host = str(environ.get("HTTP_HOST") or environ.get("SERVER_NAME") or "")
    if host.startswith("["):
        name = host[1:].partition("]")[0]
    else:
        name = host.rpartition(":")[0] if host.count(":") == 1 else host
    return name.lower().rstrip(".") == "localhost" or _is_loopback(name)


class StatusPages:
    """The status pages over one database, limited to ``account_id`` when given.

    ``db`` must already be scoped to that account (Database.for_account) so that
    PostgreSQL's row-level security applies too.
    """

    def __init__(
        self,
        db: Database,
        settings: Settings,
        *,
        account_id: int | None = None,
        account_name: str | None = None,
        metrics: Metrics | None = None,
    ) -> None:
        self.db = db
        self.settings = settings
        self.account_id = account_id
        self.account_name = account_name
        self.metrics = metrics
        self.token = settings.web_token

    # --- the WSGI entry ---------------------------------------------------------------

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        method = str(environ.get("REQUEST_METHOD", "GET")).upper()
        denied = self._check_access(environ)
        if denied is not None:
            return send(start_response, method, denied)
        if method not in _READ_METHODS:
            page = self._error(405, "These pages are read-only.")
            page.headers = (("Allow", "GET, HEAD"),)
            return send(start_response, method, page)
        path = request_path(environ).rstrip("/") or "/"
        query = dict(parse_qsl(str(environ.get("QUERY_STRING", "")), keep_blank_values=True))
        # Links carry the prefix the app is mounted at (a proxy's /status, say).
        base = str(environ.get("SCRIPT_NAME", "")).rstrip("/")
        try:
            response = self._route(path, query, base)
        except NotFound as exc:
            response = self._error(404, exc.message, base)
        except ValidationError as exc:
            response = self._error(400, exc.message, base)
        except TemporaryError:
            response = self._error(503, "The database is unavailable; try again shortly.", base)
        except Exception:
            log.exception("status page %s failed", path)
            response = self._error(500, "Something went wrong; nothing was changed.", base)
        return send(start_response, method, response)

    def _check_access(self, environ: WSGIEnvironment) -> Response | None:
        if self.token is None:
            if _on_this_host(environ):
                return None
            return self._error(
                403,
                "Without a [web] token the status pages answer only on this host"
                " (a loopback client and host name, through no proxy).",
            )
        given = _given_token(str(environ.get("HTTP_AUTHORIZATION", "")))
        if given is not None and hmac.compare_digest(given.encode(), self.token.encode()):
            return None
        page = self._error(401, "These pages need the [web] token (Authorization: Bearer).")
        page.headers = tuple(_CHALLENGE)
        return page

    def _route(self, path: str, query: dict[str, str], base: str) -> Response:
        parts = path.strip("/").split("/") if path != "/" else []
        if not parts:
            return self.index(base)
        if parts == ["schedules"]:
            return self.schedules(base)
        if parts == ["messages"]:
            return self.messages(base, query)
        if len(parts) == 2 and parts[0] in ("schedules", "messages"):
            number = as_id(parts[1])
            if number is None:
                raise NotFound(f"no {parts[0][:-1]} {parts[1][:40]!r}")
            if parts[0] == "schedules":
                return self.schedule(base, number)
            return self.message(base, number)
        if len(parts) == 2 and parts[0] == "badge" and parts[1].endswith(".svg"):
            return self.badge(parts[1].removesuffix(".svg"))
        if parts == ["metrics"] and self.metrics is not None:
            content_type, body = self.metrics(self.db, self.account_id)
            return Response(200, body.encode("utf-8"), content_type)
        raise NotFound("no such page")

    # --- pages ------------------------------------------------------------------------

    def _now(self) -> datetime:
        return self.db.now()

    def _page(self, template: str, base: str, title: str, section: str, **context: Any) -> Response:
        html = render(
            f"pages/{template}",
            title=title,
            section=section,
            account=self.account_name,
            base=base,
            stylesheet=STYLESHEET_PATH,
            **context,
        )
        return Response(200, html.encode("utf-8"))

    def _error(self, status: int, message: str, base: str = "") -> Response:
        html = render(
            "pages/error.html",
            title=f"{status} {_REASONS[status]}",
            section="",
            account=self.account_name,
            base=base,
            stylesheet=STYLESHEET_PATH,
            message=message,
        )
        return Response(status, html.encode("utf-8"))

    def index(self, base: str) -> Response:
        board = data.dashboard(self.db, self.settings, self._now(), self.account_id)
        return self._page("index.html", base, "schedctl status", "index", board=board)

    def schedules(self, base: str) -> Response:
        rows = data.schedule_rows(self.db, self.account_id)
        return self._page(
            "schedules.html",
            base,
            "Schedules",
            "schedules",
            rows=rows,
            show_account=self.account_id is None,
        )

    def schedule(self, base: str, schedule_id: int) -> Response:
        detail = data.schedule_detail(self.db, self.settings, self.account_id, schedule_id)
        return self._page(
            "schedule.html",
            base,
            f"Schedule {detail.row.name}",
            "schedules",
            detail=detail,
            slots=self._next_slots(detail),
        )

    def _next_slots(self, detail: data.ScheduleDetail) -> list[PlannedSlot]:
        """The schedule's next slots, as `schedules next` lists them."""
        schedule = detail.row.schedule
        if schedule is None:
            return []
        return upcoming_slots(schedule.cadence, self._now(), NEXT_SLOTS)

    def messages(self, base: str, query: dict[str, str]) -> Response:
        status = query.get("status", "").strip().lower() or None
        if status is not None and status not in MESSAGE_STATUSES:
            raise ValidationError(
                f"invalid status {status[:40]!r} (one of {', '.join(MESSAGE_STATUSES)})"
            )
        raw_type = query.get("type", "").strip()
        message_type = normalise_type(raw_type) if raw_type else None
        raw_page = query.get("page", "").strip() or "1"
        page = as_id(raw_page)
        if page is None or page > 10**9:
            raise ValidationError(f"invalid page {raw_page[:40]!r} (a whole number from 1)")
        listing = data.message_page(
            self.db, self.account_id, status=status, type=message_type, page=page
        )
        return self._page(
            "messages.html",
            base,
            "Messages",
            "messages",
            listing=listing,
            statuses=MESSAGE_STATUSES,
            show_account=self.account_id is None,
        )

    def message(self, base: str, message_id: int) -> Response:
        detail = data.message_detail(self.db, self.settings, self.account_id, message_id)
        return self._page(
            "message.html", base, f"Message {detail.message.id}", "messages", detail=detail
        )

    def badge(self, command: str) -> Response:
        if command not in COMMAND_NAMES:
            raise NotFound(f"no command {command[:40]!r}")
        status = data.command_status(self.db, self.settings, command)
        return Response(200, badge_svg(command, status).encode("utf-8"), "image/svg+xml")
