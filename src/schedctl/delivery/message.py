"""Building e-mail messages: header addresses, deterministic Message-IDs, multipart bodies
(addresses are checked by schedctl.values).

Everything here is pure (no network, no database): the outbox renders a message once,
stores it, and any later attempt rebuilds exactly the same bytes apart from the Date.
"""

from __future__ import annotations

import binascii
import email.policy
import functools
import hashlib
import random
import re
import sys
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from email import quoprimime
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import format_datetime, parseaddr

from schedctl.errors import ValidationError
from schedctl.values import address_of, normalise_domain

__all__ = [
    "POLICY",
    "Attachment",
    "PreparedEmail",
    "build_email",
    "make_message_id",
    "prepare_email",
]

# 7bit forces quoted-printable/base64 bodies for non-ASCII text, so a message never
# depends on the server's 8BITMIME support. refold_source="none" keeps raw header
# values (set with set_raw, or parsed back from stored bytes) exactly as written: the
# default would RFC 2047-encode a long List-Unsubscribe URL, which clients then ignore.
POLICY = email.policy.default.clone(cte_type="7bit", refold_source="none")

Attachment = tuple[str, str, bytes]
"""(filename, MIME type such as "text/csv", content)."""

_MESSAGE_ID = re.compile(r"^<[^<>@\s]+@[^<>@\s]+>$")
_UNSAFE_URL = re.compile(r"[\s<>\"\x00-\x1f\x7f]")
# Headers build_email owns; extra_headers may not replace them.
_RESERVED = frozenset(
    {
        "from",
        "to",
        "cc",
        "bcc",
        "subject",
        "date",
        "message-id",
        "mime-version",
        "content-type",
        "content-transfer-encoding",
        "list-unsubscribe",
        "list-unsubscribe-post",
    }
)


@functools.lru_cache(maxsize=1024)  # a batch mails few senders and often one recipient
def _header_address(value: str) -> Address:
    name, addr = parseaddr(value)
    local, _, domain = address_of(addr or value).partition("@")
    return Address(display_name=name, username=local, domain=domain)


def make_message_id(idempotency_key: str, domain: str, *, installation: str) -> str:
    """A deterministic Message-ID, ``<32 hex chars@domain>``, for one outbox row.

    It hashes the installation's id (``outbox.installation_id``) with the idempotency
    key: the same row always has the same Message-ID, so a resend after an
    ``unknown`` outcome can be de-duplicated by the receiving side, while another
    installation's mail with the same key (staging and production, a database made
    anew) never shares it.
    """
    if not idempotency_key:
        raise ValidationError("empty idempotency key")
    if not installation:
        raise ValidationError("empty installation id")
    ascii_domain = normalise_domain(domain)
    if ascii_domain is None:
        raise ValidationError(f"invalid Message-ID domain {domain!r}")
    # The installation id never contains a NUL, so the first one splits the pair.
    material = f"{installation}\0{idempotency_key}".encode()
    digest = hashlib.sha256(material).hexdigest()[:32]
    return f"<{digest}@{ascii_domain}>"


def _one_line(value: str) -> str:
    # A CR or LF in a header value would be a header injection; fold it to a space.
    return " ".join(value.split())


def build_email(
    *,
    sender: str,
    recipient: str,
    subject: str,
    text: str,
    html: str | None,
    message_id: str,
    attachments: Iterable[Attachment] = (),
    unsubscribe_url: str | None = None,
    extra_headers: Mapping[str, str] | None = None,
    date: datetime | None = None,
) -> EmailMessage:
    """Build a ready-to-send message.

    The body is ``multipart/alternative`` (text, then HTML) or ``text/plain`` when
    ``html`` is None; with attachments the whole is wrapped in ``multipart/mixed``.
    ``unsubscribe_url`` adds the RFC 8058 one-click headers. ``date`` defaults to now.
    Raises ValidationError for a bad address, Message-ID, URL or header.
    """
    _check_message_id(message_id)
    msg = EmailMessage(policy=POLICY)
    msg["From"] = _header_address(sender)
    msg["To"] = _header_address(recipient)
    msg["Subject"] = _one_line(subject)
    msg["Date"] = _date_text(date)
    msg.set_raw("Message-ID", message_id)
    # RFC 3834: tells auto-responders (vacation replies) not to answer.
    msg["Auto-Submitted"] = "auto-generated"
    if unsubscribe_url is not None:
        _check_unsubscribe_url(unsubscribe_url)
        msg.set_raw("List-Unsubscribe", f"<{unsubscribe_url}>")
        msg.set_raw("List-Unsubscribe-Post", "List-Unsubscribe=One-Click")
    for name, value in (extra_headers or {}).items():
        if name.lower() in _RESERVED or not re.fullmatch(r"[!-9;-~]+", name):
            raise ValidationError(f"header {name!r} cannot be set as an extra header")
        del msg[name]
        msg[name] = _one_line(value)

    msg.set_content(text)
    if html is not None:
        msg.add_alternative(html, subtype="html")
    for filename, mimetype, content in attachments:
        maintype, _, subtype = mimetype.partition("/")
        if not maintype or not subtype or "/" in subtype:
            raise ValidationError(f"invalid MIME type {mimetype!r} for {filename!r}")
        msg.add_attachment(content, maintype=maintype, subtype=subtype, filename=filename)
    for part in msg.walk():
        if part is not msg:
            # add_alternative/add_attachment copy MIME-Version into every part.
            del part["MIME-Version"]
    return msg


def _check_message_id(message_id: str) -> None:
    if not _MESSAGE_ID.match(message_id):
        raise ValidationError(f"invalid Message-ID {message_id!r}")


def _date_text(date: datetime | None) -> str:
    when = date if date is not None else datetime.now(UTC)
    if when.tzinfo is None:
        raise ValidationError("the Date of a message must be timezone-aware")
    return format_datetime(when)


def _check_unsubscribe_url(url: str) -> None:
    # The header is never folded, so keep it under RFC 5322's 998-octet line limit.
    if not url.startswith(("https://", "http://")) or _UNSAFE_URL.search(url) or len(url) > 900:
        raise ValidationError("invalid unsubscribe URL")


# --- the same message as bytes, without the email package's object model -------------


class PreparedEmail:
    """A message ready to send: its envelope and, for a plain message, its bytes.

    Building an EmailMessage and serialising it costs more than sending it over SMTP
    (each header becomes a parse tree, each part a set of header objects). A plain
    message -- ASCII header values that need no folding or quoting, a text and an
    optional HTML body, no attachments or extra headers -- is written out directly
    instead (:func:`prepare_email`): the bytes build_email's message serialises to, up
    to the random MIME boundary (tests/unit/test_delivery_message.py compares them).
    Any other message is built with build_email. :meth:`message` gives the
    EmailMessage either way, for the backends that show or store messages.
    """

    def __init__(
        self,
        fields: Mapping[str, object],
        sender: str,
        recipient: str,
        data: bytes | None,
        message: EmailMessage | None,
    ) -> None:
        self.fields = dict(fields)
        self.sender = sender  # bare envelope addresses
        self.recipient = recipient
        self.data = data  # CRLF line ends, no dot-stuffing; None: serialise message()
        self._message = message

    def message(self) -> EmailMessage:
        if self._message is None:
            self._message = build_email(**self.fields)  # type: ignore[arg-type]
        return self._message


def prepare_email(
    *,
    sender: str,
    recipient: str,
    subject: str,
    text: str,
    html: str | None,
    message_id: str,
    attachments: Iterable[Attachment] = (),
    unsubscribe_url: str | None = None,
    date: datetime | None = None,
) -> PreparedEmail:
    """build_email's message, prepared for sending (see PreparedEmail).

    Raises ValidationError where build_email does, for the same input.
    """
    attachments = list(attachments)
    fields: dict[str, object] = {
        "sender": sender, "recipient": recipient, "subject": subject, "text": text,
        "html": html, "message_id": message_id, "attachments": attachments,
        "unsubscribe_url": unsubscribe_url, "date": date,
    }  # fmt: skip
    if attachments:
        message = build_email(**fields)  # type: ignore[arg-type]
        return PreparedEmail(fields, _bare(sender), _bare(recipient), None, message)
    # Checked in build_email's order, so that a bad message fails with the same error.
    _check_message_id(message_id)
    from_address = _header_address(sender)
    to_address = _header_address(recipient)
    envelope = (_spec(from_address), _spec(to_address))  # as address_of reads them
    from_line = _plain_address_line("From", from_address)
    to_line = _plain_address_line("To", to_address)
    lines: list[str] | None = None
    if from_line is not None and to_line is not None:
        lines = [from_line, to_line]
    subject = _one_line(subject)
    if lines is not None and _plain_unstructured(subject) and len(subject) <= 78 - 9:
        lines.append(f"Subject: {subject}")
    else:
        lines = None
    date_line = f"Date: {_date_text(date)}"
    if unsubscribe_url is not None:
        _check_unsubscribe_url(unsubscribe_url)
    if lines is None:
        message = build_email(**fields)  # type: ignore[arg-type]
        return PreparedEmail(fields, *envelope, None, message)
    lines += [date_line, f"Message-ID: {message_id}", "Auto-Submitted: auto-generated"]
    if unsubscribe_url is not None:
        lines.append(f"List-Unsubscribe: <{unsubscribe_url}>")
        lines.append("List-Unsubscribe-Post: List-Unsubscribe=One-Click")
    text_part = _text_part("plain", text)
    if html is None:
        # set_content adds MIME-Version after its own headers ...
        body = text_part.replace("\n\n", "\nMIME-Version: 1.0\n\n", 1)
    else:
        # ... and a multipart's goes before its Content-Type.
        parts = [text_part, _text_part("html", html)]
        boundary = _boundary(parts)
        lines.append("MIME-Version: 1.0")
        lines.append("Content-Type: multipart/alternative;")
        lines.append(f' boundary="{boundary}"')
        body = "".join(f"\n--{boundary}\n{part}" for part in parts) + f"\n--{boundary}--\n"
    data = ("\n".join(lines) + "\n" + body).replace("\n", "\r\n").encode("ascii")
    return PreparedEmail(fields, *envelope, data, None)


def _spec(address: Address) -> str:
    return f"{address.username}@{address.domain}"


def _bare(value: str) -> str:
    """The envelope address of a From or To value (as the SMTP backend reads it)."""
    return address_of(value)


# A display name the email package writes as it is: no specials that need quoting.
_PLAIN_NAME = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9 _'-]*[A-Za-z0-9])?")
_PLAIN_TEXT = re.compile(r"[ -~]*")  # printable ASCII


def _plain_address_line(name: str, address: Address) -> str | None:
    """The header line for an address, or None when the email package would quote,
    encode or fold it."""
    display = address.display_name
    if display and (not _PLAIN_NAME.fullmatch(display) or "  " in display):
        return None
    spec = _spec(address)
    line = f"{name}: {display} <{spec}>" if display else f"{name}: {spec}"
    return line if len(line) <= 78 else None


def _plain_unstructured(value: str) -> bool:
    # "=?" would be read as an RFC 2047 encoded word and re-encoded.
    return bool(value) and _PLAIN_TEXT.fullmatch(value) is not None and "=?" not in value


def _text_part(subtype: str, content: str) -> str:
    """A text/* part as set_content writes it with POLICY: its headers, a blank line
    and the body, with LF line ends."""
    cte, payload = _encode_text(content)
    return (
        f'Content-Type: text/{subtype}; charset="utf-8"\n'
        f"Content-Transfer-Encoding: {cte}\n\n{payload}"
    )


_MAX_LINE = 78  # POLICY.max_line_length


def _encode_text(content: str) -> tuple[str, str]:
    """(Content-Transfer-Encoding, body) for UTF-8 text under POLICY (7-bit only):
    the email package's own choice -- 7bit when every line is ASCII and short enough,
    else whichever of quoted-printable and base64 is shorter on the first ten lines."""
    lines = content.encode("utf-8").splitlines()

    def normal_body(chosen: list[bytes]) -> bytes:
        return b"\n".join(chosen) + b"\n"

    if max((len(line) for line in lines), default=0) <= _MAX_LINE:
        try:
            return "7bit", normal_body(lines).decode("ascii")
        except UnicodeDecodeError:
            pass
    sniff = normal_body(lines[:10])
    sniff_qp = quoprimime.body_encode(sniff.decode("latin-1"), _MAX_LINE)
    sniff_base64 = binascii.b2a_base64(sniff)
    if len(sniff_qp) <= len(sniff_base64):
        if len(lines) <= 10:
            return "quoted-printable", sniff_qp
        return "quoted-printable", quoprimime.body_encode(
            normal_body(lines).decode("latin-1"), _MAX_LINE
        )
    data = normal_body(lines)
    step = _MAX_LINE // 4 * 3
    encoded = "".join(
        binascii.b2a_base64(data[i : i + step]).decode("ascii") for i in range(0, len(data), step)
    )
    return "base64", encoded


_BOUNDARY_DIGITS = len(repr(sys.maxsize - 1))


def _boundary(parts: list[str]) -> str:
    """A boundary as the email package makes one, not occurring in the parts."""
    while True:
        token = random.randrange(sys.maxsize)
        boundary = f"{'=' * 15}{token:0{_BOUNDARY_DIGITS}d}=="
        if not any(boundary in part for part in parts):
            return boundary
