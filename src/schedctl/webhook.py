"""Alert posts (a Slack incoming webhook, a generic JSON webhook) and
healthchecks.io-style pings, over urllib.

All are side channels: they return False on failure and never raise, so a broken
webhook never fails the job that called it. Their URLs are secrets (the path is the
credential), so logs name at most the host. A URL's ``user:password@`` is sent as HTTP
basic authentication, never as part of the host name.
"""

from __future__ import annotations

import base64
import json
import logging
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from email.utils import parsedate_to_datetime
from http.client import HTTPException
from typing import Any
from urllib.parse import unquote, urlsplit, urlunsplit

import tenacity

from schedctl import redaction

__all__ = ["MAX_RETRY_AFTER", "ping", "post_json", "post_slack_alert", "retry_after_seconds"]

logger = logging.getLogger("schedctl.delivery")

MAX_RETRY_AFTER = 30.0
"""Longest wait honoured from a ``Retry-After`` header, in seconds."""
_MAX_BACKOFF = 10.0
_MAX_PING_BODY = 100_000  # healthchecks.io keeps the first 100 kB


class _Retryable(Exception):
    def __init__(self, reason: str, retry_after: float | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retry_after = retry_after


class _Permanent(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    # A redirect would replay the request (and its secret path) somewhere else.
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


def retry_after_seconds(value: str | None, *, now: float | None = None) -> float | None:
    """Seconds to wait for a ``Retry-After`` value (delta-seconds or HTTP date), capped."""
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        seconds = when.timestamp() - (time.time() if now is None else now)
    if seconds != seconds:  # NaN
        return None
    return min(max(seconds, 0.0), MAX_RETRY_AFTER)


def _host(url: str) -> str:
    try:
        return urlsplit(url).hostname or "?"
    except ValueError:
        return "?"


def _split_credentials(url: str) -> tuple[str, dict[str, str]]:
    """The URL without its ``user:password@`` and the HTTP basic authentication header
    that carries them instead (urllib would take them for part of the host name).

    ValueError for a URL with no host or a port that is no number.
    """
    parts = urlsplit(url)
    if not parts.hostname or (parts.port or 0) < 0:  # .port raises for "h:abc"
        raise ValueError("no usable host")
    if parts.username is None and parts.password is None:
        return url, {}
    user, password = unquote(parts.username or ""), unquote(parts.password or "")
    redaction.remember(password, parts.password)
    netloc = parts.netloc.rpartition("@")[2]
    token = base64.b64encode(f"{user}:{password}".encode()).decode("ascii")
    return urlunsplit(parts._replace(netloc=netloc)), {"Authorization": f"Basic {token}"}


def _attempt(request: urllib.request.Request, timeout: float) -> None:
    """One HTTP exchange within ``timeout`` seconds overall: returns on 2xx, raises
    _Retryable or _Permanent otherwise.

    urllib's timeout bounds each socket operation only, so a server that sends a byte
    now and then would hold the job for as long as it likes; the exchange runs in a
    daemon thread and is given up (retryable, "timed out") once ``timeout`` has passed.
    The abandoned thread ends with its socket's own timeout, or with the process.
    """
    fresh = urllib.request.Request(  # noqa: S310  (the scheme was checked by _deliver)
        request.full_url,
        data=request.data,
        headers=dict(request.header_items()),
        method=request.get_method(),
    )
    outcome: list[BaseException | None] = []

    def exchange() -> None:
        try:
            _exchange(fresh, timeout)
        except BaseException as exc:  # handed to the caller's thread
            outcome.append(exc)
        else:
            outcome.append(None)

    worker = threading.Thread(target=exchange, name="schedctl-webhook", daemon=True)
    worker.start()
    worker.join(timeout)
    if not outcome:
        raise _Retryable("timed out")
    if outcome[0] is not None:
        raise outcome[0]


def _exchange(request: urllib.request.Request, timeout: float) -> None:
    opener = urllib.request.build_opener(_NoRedirect)
    try:
        with opener.open(request, timeout=timeout) as response:
            response.read(65536)
    except urllib.error.HTTPError as err:
        with err:  # an HTTPError holds the open response; close it
            status = err.code
            retry_after = err.headers.get("Retry-After") if err.headers else None
        if status == 429:
            raise _Retryable("HTTP 429", retry_after_seconds(retry_after)) from None
        if status >= 500:
            raise _Retryable(f"HTTP {status}") from None
        raise _Permanent(f"HTTP {status}") from None
    except urllib.error.URLError as err:
        raise _Retryable(_describe(err.reason)) from None
    except (OSError, HTTPException) as err:
        raise _Retryable(_describe(err)) from None


def _describe(reason: object) -> str:
    # Socket-level errors name at most the host, never the URL's path.
    if isinstance(reason, TimeoutError):
        return "timed out"
    if isinstance(reason, BaseException):
        text = str(reason)
        return f"{type(reason).__name__}: {text}" if text else type(reason).__name__
    return str(reason)


def _wait(backoff: float) -> tenacity.wait.wait_base:
    exponential = tenacity.wait_exponential(multiplier=backoff, max=_MAX_BACKOFF)

    class _RetryAfterOrExponential(tenacity.wait.wait_base):
        def __call__(self, retry_state: tenacity.RetryCallState) -> float:
            outcome = retry_state.outcome
            exc = outcome.exception() if outcome is not None else None
            if isinstance(exc, _Retryable) and exc.retry_after is not None:
                return exc.retry_after
            return float(exponential(retry_state))

    return _RetryAfterOrExponential()


def _deliver(
    what: str,
    url: str,
    *,
    data: bytes | None,
    headers: Mapping[str, str],
    timeout: float,
    max_attempts: int,
    backoff: float,
) -> bool:
    host = _host(url)
    try:
        url, credentials = _split_credentials(url)
        scheme = urlsplit(url).scheme
    except ValueError:
        scheme = ""
    if scheme not in ("http", "https"):
        logger.warning("%s not sent: the URL is not an http(s) URL with a host", what)
        return False
    headers = {**headers, **credentials}
    request = urllib.request.Request(  # noqa: S310  (scheme checked above)
        url, data=data, headers=headers, method="POST" if data is not None else "GET"
    )

    def before_sleep(state: tenacity.RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome is not None else None
        wait = state.next_action.sleep if state.next_action is not None else 0.0
        logger.info(
            "%s to %s failed (%s), attempt %d; retrying in %.2fs",
            what,
            host,
            exc,
            state.attempt_number,
            wait,
        )

    retrying = tenacity.Retrying(
        stop=tenacity.stop_after_attempt(max(1, max_attempts)),
        wait=_wait(backoff),
        retry=tenacity.retry_if_exception_type(_Retryable),
        before_sleep=before_sleep,
        reraise=True,
    )
    try:
        retrying(_attempt, request, timeout)
    except _Retryable as exc:
        attempts = max(1, max_attempts)
        logger.warning(
            "%s to %s failed (%s); gave up after %d attempt%s",
            what,
            host,
            exc,
            attempts,
            "" if attempts == 1 else "s",
        )
        return False
    except _Permanent as exc:
        logger.warning("%s to %s was rejected: %s", what, host, exc)
        return False
    except Exception as exc:
        # Never let a side channel fail the job; the type is enough to debug.
        logger.warning("%s to %s failed: %s", what, host, type(exc).__name__)
        return False
    return True


def post_slack_alert(
    url: str,
    text: str,
    blocks: Sequence[Mapping[str, Any]] | None = None,
    *,
    timeout: float = 5.0,
    max_attempts: int = 3,
    backoff: float = 0.5,
) -> bool:
    """Post ``{"text": ..., "blocks": [...]}`` to a Slack incoming webhook.

    True on 2xx. A 429 waits ``Retry-After`` (at most MAX_RETRY_AFTER seconds) and
    retries; a 5xx or a connection error retries with exponential backoff starting at
    ``backoff`` seconds; any other 4xx gives up at once. Never raises.
    """
    payload: dict[str, Any] = {"text": text}
    if blocks:
        payload["blocks"] = [dict(block) for block in blocks]
    return post_json(
        url,
        payload,
        what="Slack alert",
        timeout=timeout,
        max_attempts=max_attempts,
        backoff=backoff,
    )


def post_json(
    url: str,
    payload: Mapping[str, Any],
    *,
    what: str = "alert webhook",
    timeout: float = 5.0,
    max_attempts: int = 3,
    backoff: float = 0.5,
) -> bool:
    """POST ``payload`` as JSON; True on 2xx, retried as :func:`post_slack_alert` says.
    ``what`` names the post in the log lines. Never raises."""
    try:
        data = json.dumps(payload).encode("utf-8")
    except (TypeError, ValueError) as exc:
        logger.warning("%s not sent: the payload is not JSON (%s)", what, exc)
        return False
    return _deliver(
        what,
        url,
        data=data,
        headers={"Content-Type": "application/json; charset=utf-8"},
        timeout=timeout,
        max_attempts=max_attempts,
        backoff=backoff,
    )


def ping(
    url: str,
    suffix: str = "",
    body: bytes = b"",
    timeout: float = 5.0,
    *,
    max_attempts: int = 2,
    backoff: float = 0.5,
) -> bool:
    """Ping a healthchecks.io-style check: ``url + suffix`` (``""``, ``/start``, ``/fail``).

    With a ``body`` (e.g. the end of the command's output) the ping is a POST, otherwise
    a GET. True on 2xx; never raises.
    """
    if suffix and not suffix.startswith("/"):
        suffix = "/" + suffix
    target = _with_path_suffix(url, suffix) if suffix else url
    return _deliver(
        f"ping{suffix}" if suffix else "ping",
        target,
        data=body[:_MAX_PING_BODY] if body else None,
        headers={"Content-Type": "text/plain; charset=utf-8"} if body else {},
        timeout=timeout,
        max_attempts=max_attempts,
        backoff=backoff,
    )


def _with_path_suffix(url: str, suffix: str) -> str:
    """``url`` with ``suffix`` added to its path, before any query string (a push URL
    like ``https://status.example.com/api/push/KEY?status=up`` keeps its query)."""
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(url)
    return urlunsplit(parts._replace(path=parts.path.rstrip("/") + suffix))
