"""Building e-mail messages: header addresses, deterministic Message-IDs, multipart bodies
(addresses are checked by schedctl.values).

Every message is an EmailMessage built by :func:`build_email` with the standard
library's ``email`` package (SPEC §7 for what a message carries). Pure: no network, no
database; the outbox stores the rendered parts and any later attempt rebuilds the same
message apart from its Date.
"""

from __future__ import annotations

import email.policy
import functools
import hashlib
import random
import re
import sys
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from email.headerregistry import Address, BaseHeader, HeaderRegistry
from email.message import EmailMessage
from email.utils import format_datetime
from typing import Any

from schedctl.errors import ValidationError
from schedctl.values import name_and_address, normalise_domain

__all__ = [
    "POLICY",
    "SMTP_POLICY",
    "Attachment",
    "build_email",
    "make_message_id",
]


class _FoldedOnce(BaseHeader):
    """A header that remembers its folded text.

    Folding walks the header's parse tree, and a batch writes the same sender, Date
    and MIME headers again and again (one header object each, see _Headers). The
    email package folds by a policy's line length, line end and utf8 flag alone; the
    generator clones the policy for every part, so those settings are the key.
    """

    def fold(self, *, policy: Any) -> str:
        folds: dict[tuple[Any, ...], str] = self.__dict__.setdefault("_folds", {})
        key = (policy.max_line_length, policy.linesep, policy.utf8)
        text = folds.get(key)
        if text is None:
            text = folds[key] = super().fold(policy=policy)
        return text


class _Headers(HeaderRegistry):
    """The email package's header factory, making each header class once and each
    header object once per (name, text).

    HeaderRegistry builds a new class for every header it makes and parses every
    value anew; header objects are immutable, so one serves every message.
    """

    def __init__(self) -> None:
        super().__init__(base_class=_FoldedOnce)
        self._classes: dict[str, type[BaseHeader]] = {}

    def __getitem__(self, name: str) -> type[BaseHeader]:
        key = name.lower()
        cls = self._classes.get(key)
        if cls is None:
            cls = self._classes[key] = super().__getitem__(name)
        return cls

    def __call__(self, name: str, value: Any) -> BaseHeader:
        if type(value) is str:
            return _header(self, name, value)
        return super().__call__(name, value)

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_classes": {}}  # made classes cannot be pickled


@functools.lru_cache(maxsize=128)  # a batch repeats a dozen headers; the rest pass once
def _header(factory: _Headers, name: str, value: str) -> BaseHeader:
    return HeaderRegistry.__call__(factory, name, value)


# 7bit forces quoted-printable/base64 bodies for non-ASCII text, so a message never
# depends on the server's 8BITMIME support. refold_source="none" keeps raw header
# values (set with set_raw, or parsed back from stored bytes) exactly as written: the
# default would RFC 2047-encode a long List-Unsubscribe URL, which clients then ignore.
POLICY = email.policy.default.clone(
    cte_type="7bit", refold_source="none", header_factory=_Headers()
)
SMTP_POLICY = POLICY.clone(linesep="\r\n")
"""POLICY with CRLF line ends: how a message built here is written to SMTP or a file."""

Attachment = tuple[str, str, bytes]
"""(filename, MIME type such as "text/csv", content)."""

# Printable ASCII, not empty, no encoded word ("=?"), no leading or trailing space.
_WRITTEN_AS_IS = re.compile(r"(?!.*=\?)[!-~](?:[ -~]*[!-~])?")
_FOLD_AT = POLICY.max_line_length or sys.maxsize  # None: the policy never folds
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
def _header_address(value: str) -> str:
    """``value`` (``Name <addr>`` or a bare address) with the address normalised, as
    the email package writes it in a header."""
    name, addr = name_and_address(value)
    local, _, domain = addr.partition("@")
    return str(Address(display_name=name, username=local, domain=domain))


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


def _set_header(msg: EmailMessage, name: str, value: str) -> None:
    """Set a header that differs from message to message.

    A short, printable ASCII value is stored as written: the email package would parse
    it into a tree only to write the same text back (a recipient's address took a
    quarter of building a message). Anything else (non-ASCII, an encoded word, a value
    that needs folding) goes through the header factory, which encodes and folds it.
    """
    if _WRITTEN_AS_IS.fullmatch(value) and len(name) + 2 + len(value) <= _FOLD_AT:
        msg.set_raw(name, value)
    else:
        msg[name] = value


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
    _set_header(msg, "To", _header_address(recipient))
    _set_header(msg, "Subject", _one_line(subject))
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
    multiparts = []
    for part in msg.walk():
        if part is not msg:
            # add_alternative/add_attachment copy MIME-Version into every part.
            del part["MIME-Version"]
        if part.is_multipart():
            multiparts.append(part)
    if multiparts:
        _set_boundaries(msg, multiparts)
    return msg


def _set_boundaries(msg: EmailMessage, multiparts: list[EmailMessage]) -> None:
    """Give each multipart a boundary that occurs nowhere else in the message.

    The generator would draw one for every multipart as it writes, and compile a
    regular expression to check it; here they are drawn once per process (so their
    Content-Type header is parsed and folded once, see _Headers) and checked with a
    substring search. A message that contains one gets a fresh one.
    """
    taken = [part.get_payload() for part in msg.walk() if not part.is_multipart()]
    for depth, part in enumerate(reversed(multiparts)):  # the innermost first
        boundary = _BOUNDARIES[depth] if depth < len(_BOUNDARIES) else _new_boundary()
        while any(boundary in text for text in taken):
            boundary = _new_boundary()
        part.set_boundary(boundary)
        taken.append(boundary)


def _new_boundary() -> str:
    """A random boundary in the email generator's own format."""
    return f"{'=' * 15}{random.randrange(sys.maxsize):0{_DIGITS}d}=="


_DIGITS = len(repr(sys.maxsize - 1))
_BOUNDARIES = (_new_boundary(), _new_boundary())  # multipart/mixed holds an alternative


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
