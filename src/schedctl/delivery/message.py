"""Building e-mail messages: addresses, deterministic Message-IDs, multipart bodies.

Everything here is pure (no network, no database): the outbox renders a message once,
stores it, and any later attempt rebuilds exactly the same bytes apart from the Date.
"""

from __future__ import annotations

import email.policy
import hashlib
import re
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import format_datetime, parseaddr

from schedctl.errors import ValidationError

__all__ = [
    "POLICY",
    "Attachment",
    "address_of",
    "build_email",
    "make_message_id",
    "validate_email",
]

# 7bit forces quoted-printable/base64 bodies for non-ASCII text, so a message never
# depends on the server's 8BITMIME support. refold_source="none" keeps raw header
# values (set with set_raw, or parsed back from stored bytes) exactly as written: the
# default would RFC 2047-encode a long List-Unsubscribe URL, which clients then ignore.
POLICY = email.policy.default.clone(cte_type="7bit", refold_source="none")

Attachment = tuple[str, str, bytes]
"""(filename, MIME type such as "text/csv", content)."""

_FORBIDDEN = re.compile(r"[\s<>()\[\]\\,;:\"\x00-\x1f\x7f]")
_LABEL = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$")
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


def _normalise_domain(domain: str) -> str | None:
    """The domain in lower-case ASCII (IDNA), or None when it is not a host name."""
    domain = domain.rstrip(".").lower()
    try:
        ascii_domain = domain.encode("idna").decode("ascii")
    except UnicodeError:
        return None
    if not ascii_domain or len(ascii_domain) > 253:
        return None
    labels = ascii_domain.split(".")
    if not all(_LABEL.match(label) for label in labels):
        return None
    return ascii_domain


def validate_email(addr: str) -> str:
    """Return the address normalised (trimmed, lower-case, IDNA domain) or raise.

    A pragmatic check, not RFC 5322: exactly one ``@``, a non-empty ASCII local part
    without spaces, quotes, brackets or control characters, and a dotted domain (or
    ``localhost``). Addresses are compared case-insensitively everywhere in schedctl
    (suppressions, tokens), so the whole address is lower-cased.
    """
    error = ValidationError(f"invalid e-mail address {addr!r}")
    if not isinstance(addr, str):
        raise error
    value = addr.strip()
    if len(value) > 254 or value.count("@") != 1 or _FORBIDDEN.search(value):
        raise error
    local, _, domain = value.partition("@")
    if (
        not local
        or len(local) > 64
        or not local.isascii()
        or local.startswith(".")
        or local.endswith(".")
        or ".." in local
    ):
        raise error
    ascii_domain = _normalise_domain(domain)
    if ascii_domain is None or ("." not in ascii_domain and ascii_domain != "localhost"):
        raise error
    return f"{local.lower()}@{ascii_domain}"


def address_of(value: str) -> str:
    """The normalised bare address of ``value``, which may be ``Name <addr>``."""
    _, addr = parseaddr(value)
    if not addr:
        raise ValidationError(f"invalid e-mail address {value!r}")
    return validate_email(addr)


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
    ascii_domain = _normalise_domain(domain)
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
    if not _MESSAGE_ID.match(message_id):
        raise ValidationError(f"invalid Message-ID {message_id!r}")
    msg = EmailMessage(policy=POLICY)
    msg["From"] = _header_address(sender)
    msg["To"] = _header_address(recipient)
    msg["Subject"] = _one_line(subject)
    when = date if date is not None else datetime.now(UTC)
    if when.tzinfo is None:
        raise ValidationError("the Date of a message must be timezone-aware")
    msg["Date"] = format_datetime(when)
    msg.set_raw("Message-ID", message_id)
    # RFC 3834: tells auto-responders (vacation replies) not to answer.
    msg["Auto-Submitted"] = "auto-generated"
    if unsubscribe_url is not None:
        # The header is never folded, so keep it under RFC 5322's 998-octet line limit.
        if (
            not unsubscribe_url.startswith(("https://", "http://"))
            or _UNSAFE_URL.search(unsubscribe_url)
            or len(unsubscribe_url) > 900
        ):
            raise ValidationError("invalid unsubscribe URL")
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
