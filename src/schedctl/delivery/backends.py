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

import os
import ssl
import sys
import tempfile
from collections.abc import Callable, Mapping
from email.message import EmailMessage, MIMEPart
from email.utils import getaddresses
from pathlib import Path
from typing import TextIO, cast

from schedctl.delivery.smtp import SmtpBackend
from schedctl.delivery.transport import (
    MailBackend,
    SendResult,
    TlsMode,
    _Backend,
    _crlf,
    _safe_filename,
)
from schedctl.errors import ConfigError, ValidationError
from schedctl.values import validate_email

__all__ = [
    "ConsoleBackend",
    "FileBackend",
    "MemoryBackend",
    "clear_outbox",
    "make_backend",
    "outbox",
]


# --------------------------------------------------------------------------- helpers


# ---------------------------------------------------------------- console/file/memory


class ConsoleBackend(_Backend):
    """Prints a readable summary and the text body of each message.

    Writes to stderr by default so that a command's stdout (e.g. ``--json``) stays
    machine-readable.
    """

    name = "console"

    def __init__(self, stream: TextIO | None = None) -> None:
        self._stream = stream

    def send(
        self,
        msg: EmailMessage,
        meanwhile: Callable[[], object] | None = None,
        *,
        ready: Callable[[], object] | None = None,
    ) -> SendResult:
        if ready is not None:
            ready()
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

    def send(
        self,
        msg: EmailMessage,
        meanwhile: Callable[[], object] | None = None,
        *,
        ready: Callable[[], object] | None = None,
    ) -> SendResult:
        if ready is not None:
            ready()
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

    def send(
        self,
        msg: EmailMessage,
        meanwhile: Callable[[], object] | None = None,
        *,
        ready: Callable[[], object] | None = None,
    ) -> SendResult:
        if ready is not None:
            ready()
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
