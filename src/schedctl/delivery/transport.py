"""What every mail backend shares: the result of one send and its outcome, the backend
protocol, and how an SMTP reply is classified (SPEC §7; backends.py has the table).
"""

from __future__ import annotations

import copy
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from email.generator import BytesGenerator
from email.message import EmailMessage
from email.policy import Policy
from email.utils import getaddresses, parseaddr
from io import BytesIO
from types import TracebackType
from typing import Literal, NamedTuple, Protocol, Self

from schedctl.delivery.message import POLICY, SMTP_POLICY
from schedctl.errors import ValidationError
from schedctl.values import validate_email, written_bare

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

    def send(
        self,
        msg: EmailMessage,
        meanwhile: Callable[[], object] | None = None,
        *,
        ready: Callable[[], object] | None = None,
    ) -> SendResult:
        """Deliver one message; never raises for a delivery problem.

        ``meanwhile``: work of the caller's to do while the server reads the message
        (a backend that waits for one calls it once, after the message was handed
        over and before it waits for the reply; the others need not call it). It
        must not raise.

        ``ready``: what must be done before the message can be accepted (a
        dispatcher's previous outcome made durable). Called once, before the
        message's last byte is handed over (an SMTP backend: after the server's 354,
        while the envelope's replies came back in the meantime); if it raises, the
        message is not handed over, the connection is given up and its error
        propagates.
        """
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


_ENVELOPE_HEADERS = frozenset({"sender", "from", "to", "cc", "bcc"})


def _envelope(msg: EmailMessage, envelope_from: str | None) -> tuple[str, list[str]]:
    """(MAIL FROM, RCPT TO list) from the headers, like smtplib.send_message.

    The headers are read as stored (raw_items): reading one through the message would
    parse a value build_email stored as written into a header object, only for its text.
    """
    fields: dict[str, list[str]] = {}
    for name, value in msg.raw_items():
        if (key := name.lower()) in _ENVELOPE_HEADERS:
            # Unfolded as the email package unfolds a value it hands out.
            fields.setdefault(key, []).append(re.sub(r"[\r\n]", "", str(value)))
    written = (fields.get("sender") or fields.get("from") or [""])[0]
    sender = envelope_from or _as_written(written) or parseaddr(written)[1]
    recipients: list[str] = []
    for header in ("to", "cc", "bcc"):
        for addr in _addresses_in(fields.get(header, [])):
            if addr and addr not in recipients:
                recipients.append(addr)
    if not recipients:
        raise ValidationError("the message has no recipients")
    return validate_email(sender), [validate_email(r) for r in recipients]


def _addresses_in(values: list[str]) -> list[str]:
    """The addresses the header ``values`` hold, in order, as getaddresses reads them
    (without it when each is one valid bare address, as build_email writes To)."""
    bare = [_as_written(value) for value in values]
    if all(bare):
        return [address for address in bare if address]
    return [addr for _, addr in getaddresses(values)]


def _as_written(value: str) -> str | None:
    """``value`` when it is one valid bare address with nothing around it, which the
    address parser would read back as it is; else None (the parser decides)."""
    if value != value.strip() or not written_bare(value):
        return None
    try:
        validate_email(value)
    except ValidationError:
        return None
    return value


class Written(NamedTuple):
    """A message as SMTP carries it: its envelope (MAIL FROM, RCPT TO) and its DATA
    payload (see :func:`written`)."""

    sender: str
    recipients: list[str]
    payload: bytes


def written(msg: EmailMessage, envelope_from: str | None = None) -> Written:
    """``msg`` as SMTP carries it: the envelope from its headers (``envelope_from``,
    when given, as MAIL FROM), and its bytes with CRLF lines, without Bcc,
    dot-stuffed and ending in CRLF.CRLF. ValidationError when it has no valid
    recipient or sender."""
    sender, recipients = _envelope(msg, envelope_from)
    return Written(sender, recipients, _wire_bytes(msg))


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
