"""The SMTP backend: one conversation per batch over smtplib, with a deadline on each
whole reply (smtplib only bounds each socket read, so a server trickling a reply a
byte at a time would otherwise hold a batch for ever). Outcomes as backends.py
describes them; SPEC §7.
"""

from __future__ import annotations

import base64
import io
import smtplib
import socket
import ssl
import time
from collections.abc import Callable
from email.message import EmailMessage
from typing import Any

from schedctl.delivery.transport import (
    Outcome,
    SendResult,
    TlsMode,
    Written,
    _Backend,
    _text,
    classify_reply,
    logger,
    written,
)
from schedctl.errors import ConfigError, ValidationError
from schedctl.redaction import redact
from schedctl.values import validate_email

# ------------------------------------------------------------------------------ smtp


class _Failure(Exception):
    """Internal: carries the result of an aborted SMTP conversation."""

    def __init__(self, result: SendResult) -> None:
        super().__init__(result.detail)
        self.result = result


class _StaleConnection(_Failure):
    """The connection was gone before MAIL FROM was accepted: nothing was sent."""


class _ReplyReader(io.RawIOBase):
    """The connection's socket as smtplib reads replies from it, with a deadline.

    A socket timeout bounds each read alone: a server that sends its reply a byte at a
    time (a tarpit) would never let it fire, and a send could outlive its message's
    lease. Each read waits at most until ``deadline``; past it, TimeoutError.
    """

    def __init__(self, sock: socket.socket) -> None:
        super().__init__()
        self.sock = sock
        self.deadline: float | None = None

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        if self.deadline is not None:
            remaining = self.deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError("timed out")
            self.sock.settimeout(remaining)
        return self.sock.recv_into(buffer)


def _reply_within_timeout(
    conn: smtplib.SMTP, read: Callable[[], tuple[int, bytes]]
) -> tuple[int, bytes]:
    """smtplib's getreply, the whole reply (every line) within ``conn.timeout``."""
    timeout = conn.timeout
    if conn.sock is None or not isinstance(timeout, int | float):
        return read()
    if conn.file is None:
        conn.file = io.BufferedReader(_ReplyReader(conn.sock))
    reader = getattr(conn.file, "raw", None)
    if not isinstance(reader, _ReplyReader):
        return read()
    reader.deadline = time.monotonic() + timeout
    try:
        return read()
    finally:
        reader.deadline = None
        if conn.sock is not None:  # smtplib closes it on errors
            conn.sock.settimeout(timeout)


class _Smtp(smtplib.SMTP):
    def getreply(self) -> tuple[int, bytes]:
        return _reply_within_timeout(self, super().getreply)


class _SmtpSsl(smtplib.SMTP_SSL):
    def getreply(self) -> tuple[int, bytes]:
        return _reply_within_timeout(self, super().getreply)


class SmtpBackend(_Backend):
    """SMTP with STARTTLS or implicit TLS, AUTH, and one connection per batch.

    The conversation is driven step by step (MAIL, RCPT, DATA, body, final reply) so
    that a timeout before the body was sent (``retry``) is told apart from one after
    it (``unknown``). A connection the server dropped between two messages is
    re-opened transparently. Certificates are verified against the system CAs unless
    ``ssl_context`` is given. ``local_hostname`` is the EHLO name (default: this
    host's FQDN); ``envelope_from`` the bounce address (default: the From address).
    """

    name = "smtp"

    def __init__(
        self,
        host: str,
        port: int | None = None,
        user: str | None = None,
        password: str | None = None,
        tls: TlsMode = "starttls",
        timeout: float = 30.0,
        *,
        local_hostname: str | None = None,
        envelope_from: str | None = None,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        if not host:
            raise ConfigError("the smtp mail backend needs a host (SCHEDCTL_SMTP_HOST)")
        if tls not in ("none", "starttls", "ssl"):
            raise ConfigError(f"SMTP TLS mode must be none, starttls or ssl, not {tls!r}")
        if bool(user) != bool(password):
            raise ConfigError("SMTP user and password must be set together")
        if timeout <= 0:
            raise ConfigError("SMTP timeout must be positive")
        self.host = host
        self.port = port or {"none": 25, "starttls": 587, "ssl": 465}[tls]
        self.user = user or None
        self._password = password or None
        self._sent_secrets = _as_sent(self.user, self._password)
        self.tls: TlsMode = tls
        self.timeout = timeout
        self.local_hostname = local_hostname or socket.getfqdn()
        self.envelope_from = validate_email(envelope_from) if envelope_from else None
        self._ssl_context = ssl_context
        self._conn: smtplib.SMTP | None = None
        self.connections_opened = 0

    def __repr__(self) -> str:
        # Deliberately without the password.
        return (
            f"SmtpBackend(host={self.host!r}, port={self.port!r}, tls={self.tls!r}, "
            f"user={self.user!r}, timeout={self.timeout!r})"
        )

    @property
    def provider(self) -> str:
        return f"smtp:{self.host}:{self.port}"

    def _result(
        self,
        outcome: Outcome,
        stage: str,
        detail: str,
        code: int | None = None,
        refused: dict[str, tuple[int, str]] | None = None,
    ) -> SendResult:
        # A server may quote what it was sent (AUTH's base64 in a 535): never the password.
        detail = redact(detail, self._sent_secrets)
        return SendResult(outcome, code, detail, refused or {}, self.provider, stage)

    def _context(self) -> ssl.SSLContext:
        return self._ssl_context or ssl.create_default_context()

    def _connect(self) -> smtplib.SMTP:
        conn: smtplib.SMTP | None = None
        try:
            # smtplib connects in the constructor and closes the socket itself when
            # the greeting fails; it needs the host there for TLS hostname checks.
            if self.tls == "ssl":
                conn = _SmtpSsl(
                    self.host,
                    self.port,
                    local_hostname=self.local_hostname,
                    timeout=self.timeout,
                    context=self._context(),
                )
            else:
                conn = _Smtp(
                    self.host, self.port, local_hostname=self.local_hostname, timeout=self.timeout
                )
            conn.ehlo_or_helo_if_needed()
            if self.tls == "starttls":
                conn.starttls(context=self._context())
                conn.ehlo_or_helo_if_needed()
            if self.user and self._password:
                if not conn.has_extn("auth"):
                    # Retrying cannot help; fixing the configuration (or server) does.
                    _close(conn)
                    raise self._no_auth()
                conn.login(self.user, self._password)
        except smtplib.SMTPAuthenticationError as exc:
            _close(conn)
            detail = f"SMTP authentication failed: {exc.smtp_code} {_text(exc.smtp_error)}"
            raise _Failure(self._result("retry", "connect", detail, exc.smtp_code)) from None
        except smtplib.SMTPResponseException as exc:
            _close(conn)
            detail = f"SMTP server refused the session: {exc.smtp_code} {_text(exc.smtp_error)}"
            raise _Failure(self._result("retry", "connect", detail, exc.smtp_code)) from None
        except (OSError, ValueError) as exc:
            # OSError covers refused/reset/timeout, TLS errors (ssl.SSLError) and
            # smtplib's SMTPNotSupportedError (no STARTTLS on offer: misconfigured, or
            # stripped on the way; never fall back to plain text).
            _close(conn)
            detail = f"cannot use SMTP server {self.host}:{self.port}: {_describe(exc)}"
            raise _Failure(self._result("retry", "connect", detail)) from None
        self.connections_opened += 1
        return conn

    def check(self) -> str | None:
        """Open a session as a send would (greeting, EHLO, STARTTLS and AUTH as
        configured), then QUIT: why the server cannot be used, or None. Sends nothing."""
        try:
            self._conn = self._connect()
        except _Failure as exc:
            return exc.result.detail
        except ConfigError as exc:
            return exc.message
        self.close()
        return None

    def _no_auth(self) -> ConfigError:
        server = f"the SMTP server {self.host}:{self.port}"
        unset = "unset SCHEDCTL_SMTP_USER and SCHEDCTL_SMTP_PASSWORD"
        if self.tls == "none":
            advice = f" without TLS: set SCHEDCTL_SMTP_TLS, or {unset}"
        else:
            advice = f": {unset}, or use a server that offers it"
        return ConfigError(f"SCHEDCTL_SMTP_USER is set, but {server} offers no AUTH{advice}")

    def _drop(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()

    def _reset(self, conn: smtplib.SMTP) -> None:
        """RSET after a failed transaction so the connection can be reused."""
        try:
            code, _ = conn.rset()
        except OSError:
            code = 0
        if code != 250:
            self._drop()

    def send(
        self,
        msg: EmailMessage,
        meanwhile: Callable[[], object] | None = None,
        *,
        ready: Callable[[], object] | None = None,
    ) -> SendResult:
        """Send one message over the batch's connection (opened on first use);
        ``meanwhile`` runs once the whole message is written, before its reply is read;
        ``ready`` after the server's 354, before the message is written (if it raises,
        the connection is dropped in the middle of DATA: the server discards it).

        Raises ConfigError, before offering anything, when ``smtp_user`` is set but
        the server offers no AUTH.
        """
        try:
            message = written(msg, self.envelope_from)
        except (ValidationError, ValueError, LookupError) as exc:
            return self._result("failed", "mail", f"cannot send this message: {exc}")
        return self.send_written(message, meanwhile, ready=ready)

    def send_written(
        self,
        message: Written,
        meanwhile: Callable[[], object] | None = None,
        *,
        ready: Callable[[], object] | None = None,
    ) -> SendResult:
        """:meth:`send` for a message already written for SMTP (by
        :func:`~schedctl.delivery.transport.written`, with this backend's
        ``envelope_from``)."""
        sender, recipients, payload = message
        try:
            reused = self._conn is not None
            try:
                return self._transaction(
                    self._open(), sender, recipients, payload, meanwhile, ready
                )
            except _StaleConnection:
                if not reused:
                    raise
                # Dropped while idle between two messages: nothing of this message was
                # transmitted, so reconnecting once is safe.
                logger.debug("SMTP connection was closed by the server; reconnecting")
                return self._transaction(
                    self._open(), sender, recipients, payload, meanwhile, ready
                )
        except _Failure as exc:
            return exc.result

    def _open(self) -> smtplib.SMTP:
        if self._conn is None:
            self._conn = self._connect()
        return self._conn

    def _transaction(
        self,
        conn: smtplib.SMTP,
        sender: str,
        recipients: list[str],
        payload: bytes,
        meanwhile: Callable[[], object] | None = None,
        ready: Callable[[], object] | None = None,
    ) -> SendResult:
        stage = "mail"
        try:
            # SIZE lets a server refuse an oversized message before we upload it.
            size = f" SIZE={len(payload)}" if conn.has_extn("size") else ""
            # The envelope's addresses are validated bare addresses: nothing for
            # smtplib's mail() and rcpt() to parse (quoteaddr) before writing <addr>.
            code, resp = conn.docmd("mail", f"FROM:<{sender}>{size}")
            if code == 421:
                # The server is closing the channel (often its idle timeout).
                self._drop()
                raise _StaleConnection(self._reply(code, resp, stage))
            if not 200 <= code < 300:
                self._reset(conn)
                return self._reply(code, resp, stage)

            stage = "rcpt"
            refused: dict[str, tuple[int, str]] = {}
            for rcpt in recipients:
                code, resp = conn.docmd("rcpt", f"TO:<{rcpt}>")
                if code == 421:
                    self._drop()
                    return self._reply(code, resp, stage)
                if not 200 <= code < 300:
                    refused[rcpt] = (code, _text(resp))
            if len(refused) == len(recipients):
                self._reset(conn)
                return self._all_refused(refused)

            stage = "data"
            code, resp = conn.docmd("DATA")
            if code != 354:
                if code == 421:
                    self._drop()
                else:
                    self._reset(conn)
                return self._reply(code, resp, stage, refused)

            if ready is not None:
                stage = "ready"  # (its errors are the caller's, not the server's)
                try:
                    ready()
                except BaseException:
                    self._drop()  # in the middle of DATA: the server discards it
                    raise
            # Until the last byte (the terminating ".") is written the server cannot
            # accept the message, so a failure while writing is still "retry".
            stage = "body"
            conn.send(payload)
            stage = "reply"
            if meanwhile is not None:
                meanwhile()  # while the server reads it; the reply's timeout starts after
            code, resp = conn.getreply()
        except OSError as exc:
            if stage == "ready":
                raise
            # smtplib.SMTPServerDisconnected and socket timeouts are OSErrors.
            self._drop()
            if stage == "reply":
                detail = (
                    f"no reply after the message was sent ({_describe(exc)}); "
                    "it may have been delivered, so it is not resent automatically"
                )
                return self._result("unknown", stage, detail)
            result = self._result("retry", stage, f"SMTP connection lost: {_describe(exc)}")
            if stage == "mail" and not isinstance(_root_cause(exc), TimeoutError):
                # A closed connection fails fast; a slow server is not retried twice.
                raise _StaleConnection(result) from None
            return result
        if code == 421:
            self._drop()
        elif not 200 <= code < 300:
            self._reset(conn)
        return self._reply(code, resp, stage, refused)

    def _reply(
        self,
        code: int,
        resp: bytes | str,
        stage: str,
        refused: dict[str, tuple[int, str]] | None = None,
    ) -> SendResult:
        text = _text(resp)
        outcome = classify_reply(code, text)
        detail = f"{code} {text}".strip() if outcome == "sent" else f"{stage}: {code} {text}"
        return self._result(outcome, stage, detail, code, refused)

    def _all_refused(self, refused: dict[str, tuple[int, str]]) -> SendResult:
        outcomes = {classify_reply(code, text) for code, text in refused.values()}
        outcome: Outcome
        if outcomes == {"failed"}:
            outcome = "failed"
        elif "deferred" in outcomes:
            outcome = "deferred"
        else:
            outcome = "retry"
        first_code, first_text = next(iter(refused.values()))
        detail = f"rcpt: all recipients refused: {first_code} {first_text}"
        return self._result(outcome, "rcpt", detail, first_code, refused)

    def close(self) -> None:
        """QUIT politely and close; a later send opens a new connection."""
        conn, self._conn = self._conn, None
        if conn is None:
            return
        try:
            conn.quit()
        except OSError:
            pass
        finally:
            conn.close()


def _close(conn: smtplib.SMTP | None) -> None:
    if conn is not None:
        conn.close()


def _root_cause(exc: BaseException) -> BaseException:
    """The original error under smtplib's wrapping (it re-raises OSError as
    SMTPServerDisconnected, keeping the timeout only as the context)."""
    seen = 0
    while seen < 10:
        inner = exc.__cause__ or exc.__context__
        if inner is None:
            break
        exc, seen = inner, seen + 1
    return exc


def _describe(exc: BaseException) -> str:
    root = _root_cause(exc)
    if isinstance(root, TimeoutError):
        return "timed out"
    text = str(exc) or type(exc).__name__
    return f"{type(exc).__name__}: {_text(text)}"


def _as_sent(user: str | None, password: str | None) -> list[str]:
    """The password as AUTH sends it (base64: PLAIN's whole answer, LOGIN's password)."""
    if not user or not password:
        return []
    answers = [f"\0{user}\0{password}", password]
    return [password, *(base64.b64encode(a.encode()).decode("ascii") for a in answers)]
