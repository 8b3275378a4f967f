"""Mail backends: smtp, console, file and memory, behind one small protocol.

A backend is a context manager around a batch: ``with make_backend(...) as mail:``
opens (at most) one connection, every ``mail.send(msg)`` reuses it, and the exit closes
it. ``send`` never raises for a delivery problem; it returns a SendResult whose
``outcome`` tells the outbox what to do:

=========  ==============================================================  ==============
outcome    when                                                            outbox action
=========  ==============================================================  ==============
sent       the server answered 2xx to the end of data (some recipients     done
           may be listed in ``refused``)
retry      a 4xx reply; connection refused/reset, TLS or auth failure or   retry with
           timeout before the terminating "." of the data was written      backoff
failed     a 5xx reply (bad recipient, policy rejection, ...)              permanent
deferred   the provider refuses *us* for a sending quota or rate limit:    keep for later,
           enhanced status X.4.5 (Gmail's "550 5.4.5 Daily sending quota   not an attempt,
           exceeded") or a reply mentioning quota/rate limit/throttling    stop the batch
           (SES "454 Throttling failure"), whatever its class; except a
           full recipient mailbox (X.2.2, "mailbox full"/"over quota"),
           which is that recipient's problem and follows 4xx/5xx
unknown    timeout or connection loss after the whole message was sent     never resend
           and before the final reply: the server may have accepted it     automatically
=========  ==============================================================  ==============

``send`` raises only ConfigError, when ``smtp_user`` is set but the server offers no
AUTH: nothing was offered, and retrying cannot help until the configuration is fixed
(exit 2). A server that offers no STARTTLS when ``starttls`` is configured is a
``retry`` at the connect stage instead: it may be an attacker stripping it on the way,
and schedctl never falls back to plain text.

``452 4.5.3 Too many recipients`` is a plain 4xx (retry): it is about the envelope,
not the sender's quota. When every recipient is refused, the outcome is that of their
replies (all permanent: failed; any quota: deferred; otherwise retry). A ``retry`` with
``stage == "connect"`` means the server could not be used at all (the message was never
offered), so the caller should stop the batch rather than try every message.
"""

from __future__ import annotations

import copy
import io
import logging
import os
import re
import smtplib
import socket
import ssl
import sys
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from email.generator import BytesGenerator
from email.message import EmailMessage, MIMEPart
from email.policy import Policy
from email.utils import getaddresses, parseaddr
from io import BytesIO
from pathlib import Path
from types import TracebackType
from typing import Any, Literal, Protocol, Self, TextIO, cast

from schedctl.delivery.message import POLICY, SMTP_POLICY
from schedctl.errors import ConfigError, ValidationError
from schedctl.values import validate_email

__all__ = [
    "ConsoleBackend",
    "FileBackend",
    "MailBackend",
    "MemoryBackend",
    "Outcome",
    "SendResult",
    "SmtpBackend",
    "classify_reply",
    "clear_outbox",
    "make_backend",
    "outbox",
]

logger = logging.getLogger("schedctl.delivery")

Outcome = Literal["sent", "retry", "failed", "deferred", "unknown"]
TlsMode = Literal["none", "starttls", "ssl"]


@dataclass(frozen=True)
class SendResult:
    """What happened to one message. ``detail`` is safe to log (no secrets)."""

    outcome: Outcome
    code: int | None = None
    detail: str = ""
    refused: dict[str, tuple[int, str]] = field(default_factory=dict)
    provider: str = ""
    stage: str = ""
    """Where an SMTP conversation stopped: connect, mail, rcpt, data, body or reply."""

    @property
    def ok(self) -> bool:
        return self.outcome == "sent"


class MailBackend(Protocol):
    """A mail transport for one batch of messages."""

    name: str

    def __enter__(self) -> Self: ...

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...

    def send(self, msg: EmailMessage) -> SendResult:
        """Deliver one message; never raises for a delivery problem."""
        ...

    def close(self) -> None:
        """Release the connection, if any; the backend can be used again."""
        ...


class _Backend:
    name = "base"

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        return None


# --------------------------------------------------------------------------- helpers

_ENHANCED = re.compile(r"^\s*([245])\.(\d{1,3})\.(\d{1,3})\b")
_SENDER_LIMIT = re.compile(
    r"quota|rate[ -]?limit|throttl|sending limit|too many (?:messages|mails|e-?mails)"
    r"|maximum sending rate|limit exceeded",
    re.IGNORECASE,
)
_MAILBOX_FULL = re.compile(r"mailbox (?:is )?full|over quota|insufficient storage", re.I)


def classify_reply(code: int, text: str) -> Outcome:
    """The outcome for an SMTP reply (see the module docstring for the rule)."""
    if 200 <= code < 300:
        return "sent"
    enhanced = _ENHANCED.match(text)
    subject_detail = (enhanced.group(2), enhanced.group(3)) if enhanced else None
    mailbox_full = subject_detail == ("2", "2") or bool(_MAILBOX_FULL.search(text))
    if not mailbox_full and (subject_detail == ("4", "5") or _SENDER_LIMIT.search(text)):
        return "deferred"
    if 400 <= code < 500:
        return "retry"
    if 500 <= code < 600:
        return "failed"
    # A reply outside 2xx-5xx is a protocol error: the message was not accepted.
    return "retry"


def _text(resp: bytes | str) -> str:
    raw = resp.decode("utf-8", "replace") if isinstance(resp, bytes) else resp
    return " ".join(raw.split())[:500]


def _envelope(msg: EmailMessage, envelope_from: str | None) -> tuple[str, list[str]]:
    """(MAIL FROM, RCPT TO list) from the headers, like smtplib.send_message."""
    sender = envelope_from or parseaddr(str(msg.get("Sender") or msg.get("From") or ""))[1]
    recipients: list[str] = []
    for header in ("To", "Cc", "Bcc"):
        values = [str(v) for v in msg.get_all(header, [])]
        for _, addr in getaddresses(values):
            if addr and addr not in recipients:
                recipients.append(addr)
    if not recipients:
        raise ValidationError("the message has no recipients")
    return validate_email(sender), [validate_email(r) for r in recipients]


def _crlf(msg: EmailMessage) -> Policy:
    """The message's policy with CRLF line ends (built once for build_email's)."""
    return SMTP_POLICY if msg.policy is POLICY else msg.policy.clone(linesep="\r\n")


def _wire_bytes(msg: EmailMessage) -> bytes:
    """The DATA payload: CRLF lines, dot-stuffed, without Bcc, ending in CRLF.CRLF."""
    stripped = msg
    if "Bcc" in msg or "Resent-Bcc" in msg:
        # A shallow copy is enough: deleting a header rebinds the copy's header list.
        stripped = copy.copy(msg)
        del stripped["Bcc"]
        del stripped["Resent-Bcc"]
    buf = BytesIO()
    BytesGenerator(buf, policy=_crlf(msg)).flatten(stripped)
    return _data_payload(buf.getvalue())


def _data_payload(message: bytes) -> bytes:
    """A message's bytes (CRLF lines) as the DATA payload: dot-stuffed, ending in CRLF.CRLF."""
    data = re.sub(rb"(?m)^\.", b"..", message)
    if not data.endswith(b"\r\n"):
        data += b"\r\n"
    return data + b".\r\n"


def _safe_filename(message_id: str) -> str:
    name = re.sub(r"[^A-Za-z0-9._@+-]", "_", message_id.strip().strip("<>"))
    return name.lstrip(".")[:200] or "message"


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

    def send(self, msg: EmailMessage) -> SendResult:
        """Send one message over the batch's connection (opened on first use).

        Raises ConfigError, before offering anything, when ``smtp_user`` is set but
        the server offers no AUTH.
        """
        try:
            sender, recipients = _envelope(msg, self.envelope_from)
            payload = _wire_bytes(msg)
        except (ValidationError, ValueError, LookupError) as exc:
            return self._result("failed", "mail", f"cannot send this message: {exc}")
        try:
            reused = self._conn is not None
            try:
                return self._transaction(self._open(), sender, recipients, payload)
            except _StaleConnection:
                if not reused:
                    raise
                # Dropped while idle between two messages: nothing of this message was
                # transmitted, so reconnecting once is safe.
                logger.debug("SMTP connection was closed by the server; reconnecting")
                return self._transaction(self._open(), sender, recipients, payload)
        except _Failure as exc:
            return exc.result

    def _open(self) -> smtplib.SMTP:
        if self._conn is None:
            self._conn = self._connect()
        return self._conn

    def _transaction(
        self, conn: smtplib.SMTP, sender: str, recipients: list[str], payload: bytes
    ) -> SendResult:
        stage = "mail"
        try:
            # SIZE lets a server refuse an oversized message before we upload it.
            options = [f"SIZE={len(payload)}"] if conn.has_extn("size") else []
            code, resp = conn.mail(sender, options)
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
                code, resp = conn.rcpt(rcpt)
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

            # Until the last byte (the terminating ".") is written the server cannot
            # accept the message, so a failure while writing is still "retry".
            stage = "body"
            conn.send(payload)
            stage = "reply"
            code, resp = conn.getreply()
        except OSError as exc:
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


# ---------------------------------------------------------------- console/file/memory


class ConsoleBackend(_Backend):
    """Prints a readable summary and the text body of each message.

    Writes to stderr by default so that a command's stdout (e.g. ``--json``) stays
    machine-readable.
    """

    name = "console"

    def __init__(self, stream: TextIO | None = None) -> None:
        self._stream = stream

    def send(self, msg: EmailMessage) -> SendResult:
        stream = self._stream or sys.stderr
        lines = ["=" * 72]
        for header in ("From", "To", "Cc", "Subject", "Date", "Message-ID", "List-Unsubscribe"):
            for value in msg.get_all(header, []):
                lines.append(f"{header}: {value}")
        text_part = msg.get_body(preferencelist=("plain",))
        html_part = msg.get_body(preferencelist=("html",))
        attachments = [
            f"{part.get_filename() or 'unnamed'} ({part.get_content_type()}, "
            f"{len(part.get_payload(decode=True) or b'')} bytes)"
            for part in msg.iter_attachments()
        ]
        if html_part is not None:
            lines.append("Parts: text + HTML" if text_part is not None else "Parts: HTML")
        if attachments:
            lines.append("Attachments: " + ", ".join(attachments))
        lines.append("-" * 72)
        if isinstance(text_part, MIMEPart):
            lines.append(str(text_part.get_content()).rstrip("\n"))
        lines.append("")
        stream.write("\n".join(lines) + "\n")
        stream.flush()
        return SendResult("sent", None, "printed", provider="console")


class FileBackend(_Backend):
    """Writes each message to ``DIRECTORY/<Message-ID>.eml`` (atomically).

    The same Message-ID overwrites the same file, so a repeated send is visible as
    one file, like a receiving server de-duplicating it.
    """

    name = "file"

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        if not str(directory):
            raise ConfigError("the file mail backend needs a directory (SCHEDCTL_MAIL_FILE_DIR)")
        self.directory = Path(directory)

    def path_for(self, msg: EmailMessage) -> Path:
        message_id = str(msg.get("Message-ID") or "")
        if not message_id:
            raise ValidationError("the message has no Message-ID")
        return self.directory / f"{_safe_filename(message_id)}.eml"

    def send(self, msg: EmailMessage) -> SendResult:
        try:
            target = self.path_for(msg)
        except ValidationError as exc:
            return SendResult("failed", None, exc.message, provider="file")
        data = msg.as_bytes(policy=_crlf(msg))
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=self.directory, prefix=".tmp-", suffix=".eml")
            try:
                with os.fdopen(fd, "wb") as fh:
                    fh.write(data)
                    fh.flush()
                    os.fsync(fh.fileno())
                os.replace(tmp, target)
            except BaseException:
                Path(tmp).unlink(missing_ok=True)
                raise
        except OSError as exc:
            return SendResult("retry", None, f"cannot write {target.name}: {exc}", provider="file")
        return SendResult("sent", None, str(target), provider="file")


outbox: list[EmailMessage] = []
"""Every message the memory backend accepted, in order (for tests)."""


def clear_outbox() -> None:
    """Empty the memory backend's outbox."""
    outbox.clear()


class MemoryBackend(_Backend):
    """Appends messages to the module-level ``outbox`` (for tests).

    ``results`` maps a recipient address to the SendResult to return for it instead
    of accepting the message, to exercise retry/failure paths without a server.
    """

    name = "memory"
    outbox = outbox

    def __init__(self, results: Mapping[str, SendResult] | None = None) -> None:
        self._results = {validate_email(k): v for k, v in (results or {}).items()}

    @staticmethod
    def clear() -> None:
        clear_outbox()

    def send(self, msg: EmailMessage) -> SendResult:
        for _, addr in getaddresses([str(v) for v in msg.get_all("To", [])]):
            try:
                scripted = self._results.get(validate_email(addr))
            except ValidationError:
                continue
            if scripted is not None:
                return scripted
        outbox.append(msg)
        return SendResult("sent", 250, "stored in memory", provider="memory")


# --------------------------------------------------------------------------- factory

_SETTINGS = frozenset(
    {
        "smtp_host",
        "smtp_port",
        "smtp_user",
        "smtp_password",
        "smtp_tls",
        "smtp_timeout",
        "smtp_local_hostname",
        "smtp_envelope_from",
        "smtp_ssl_context",
        "mail_file_dir",
        "mail_from",
        "stream",
        "results",
    }
)


def _number(settings: Mapping[str, object], key: str) -> float | None:
    value = settings.get(key)
    if value is None or value == "":
        return None
    try:
        number = float(str(value))
    except ValueError:
        raise ConfigError(f"{key} must be a number, not {value!r}") from None
    if number <= 0:
        raise ConfigError(f"{key} must be positive, not {value!r}")
    return number


def _text_setting(settings: Mapping[str, object], key: str) -> str | None:
    value = settings.get(key)
    return str(value) if value not in (None, "") else None


def make_backend(name: str, **settings: object) -> MailBackend:
    """Build the backend named by ``SCHEDCTL_MAIL_BACKEND`` from its settings.

    Settings use the configuration keys without the prefix, lower-case (``smtp_host``,
    ``smtp_port``, ``smtp_user``, ``smtp_password``, ``smtp_tls``, ``mail_file_dir``,
    ...); settings of other backends and None values are ignored, so the caller can
    pass the whole mail configuration. Raises ConfigError for an unknown backend, an
    unknown setting or a missing required one.
    """
    unknown = sorted(set(settings) - _SETTINGS)
    if unknown:
        raise ConfigError(f"unknown mail setting {unknown[0]!r}")
    backend = (name or "").strip().lower()
    if backend == "smtp":
        host = _text_setting(settings, "smtp_host")
        if host is None:
            raise ConfigError("the smtp mail backend needs a host (SCHEDCTL_SMTP_HOST)")
        tls = (_text_setting(settings, "smtp_tls") or "starttls").lower()
        if tls not in ("none", "starttls", "ssl"):
            raise ConfigError(f"SCHEDCTL_SMTP_TLS must be none, starttls or ssl, not {tls!r}")
        port = _number(settings, "smtp_port")
        if port is not None and (port != int(port) or port > 65535):
            raise ConfigError(f"smtp_port must be a port number, not {port!r}")
        context = settings.get("smtp_ssl_context")
        if context is not None and not isinstance(context, ssl.SSLContext):
            raise ConfigError("smtp_ssl_context must be an ssl.SSLContext")
        return SmtpBackend(
            host,
            int(port) if port is not None else None,
            _text_setting(settings, "smtp_user"),
            _text_setting(settings, "smtp_password"),
            cast(TlsMode, tls),
            _number(settings, "smtp_timeout") or 30.0,
            local_hostname=_text_setting(settings, "smtp_local_hostname"),
            envelope_from=_text_setting(settings, "smtp_envelope_from"),
            ssl_context=context,
        )
    if backend == "console":
        stream = settings.get("stream")
        if stream is not None and not callable(getattr(stream, "write", None)):
            raise ConfigError("the console mail backend's stream must be writable")
        return ConsoleBackend(cast(TextIO | None, stream))
    if backend == "file":
        directory = _text_setting(settings, "mail_file_dir")
        if directory is None:
            raise ConfigError("the file mail backend needs a directory (SCHEDCTL_MAIL_FILE_DIR)")
        return FileBackend(directory)
    if backend == "memory":
        results = settings.get("results")
        return MemoryBackend(results if isinstance(results, Mapping) else None)
    raise ConfigError(f"unknown mail backend {name!r} (use smtp, console, file or memory)")
