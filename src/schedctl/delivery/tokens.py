"""HMAC-SHA256 unsubscribe tokens over (account, e-mail address).

A token proves that schedctl sent this address a link for this account; it needs no
storage and never expires (an unsubscribe link in an old mail must keep working).
Rotating the secret invalidates every outstanding link.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from schedctl.errors import ConfigError, ValidationError
from schedctl.values import validate_email

__all__ = ["make_token", "unsubscribe_url", "verify_token"]

# Domain separation: the same secret could one day sign something else.
_PURPOSE = b"schedctl-unsubscribe-v1"
_PATH = "/unsubscribe"


def _key(secret: bytes | str) -> bytes:
    key = secret.encode("utf-8") if isinstance(secret, str) else bytes(secret)
    if not key:
        raise ConfigError("the unsubscribe secret is empty (set SCHEDCTL_UNSUBSCRIBE_SECRET)")
    return key


def _digest(key: bytes, account_id: str, normalised_email: str) -> str:
    # NUL separates the fields: it cannot occur in an account id or a valid address,
    # so ("a", "b@c") and ("a\0b", "@c")-style shifts cannot collide.
    payload = b"\0".join((_PURPOSE, account_id.encode("utf-8"), normalised_email.encode()))
    mac = hmac.new(key, payload, hashlib.sha256).digest()
    return base64.urlsafe_b64encode(mac).rstrip(b"=").decode("ascii")


def make_token(secret: bytes | str, account_id: str, email: str) -> str:
    """The token for (account, address): 43 URL-safe base64 characters, no padding.

    The address is normalised first, so ``Bob@Example.com`` and ``bob@example.com``
    share one token. Raises ConfigError for an empty secret, ValidationError for a bad
    address or an empty account id.
    """
    key = _key(secret)
    if not account_id or "\0" in account_id:
        raise ValidationError(f"invalid account id {account_id!r}")
    return _digest(key, account_id, validate_email(email))


def verify_token(secret: bytes | str, account_id: str, email: str, token: str) -> bool:
    """True when ``token`` was made for (account, address) with ``secret``.

    Compares in constant time. Never raises for bad input (it comes from a URL), only
    ConfigError for an empty secret.
    """
    key = _key(secret)
    if not account_id or "\0" in account_id or not isinstance(token, str):
        return False
    try:
        normalised = validate_email(email)
    except ValidationError:
        return False
    expected = _digest(key, account_id, normalised).encode("ascii")
    return hmac.compare_digest(expected, token.encode("utf-8", "replace"))


def unsubscribe_url(base_url: str, account_id: str, email: str, secret: bytes | str) -> str:
    """The one-click unsubscribe link: ``BASE/unsubscribe?a=ACCOUNT&e=EMAIL&t=TOKEN``.

    ``base_url`` is where the unsubscribe WSGI app is mounted; ``/unsubscribe`` is
    appended unless the path already ends with it. Existing query parameters are kept.
    """
    token = make_token(secret, account_id, email)
    parts = urlsplit(base_url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ConfigError("the unsubscribe base URL must be an http(s) URL")
    path = parts.path.rstrip("/")
    if not path.endswith(_PATH):
        path += _PATH
    query = [*parse_qsl(parts.query, keep_blank_values=True)]
    query += [("a", account_id), ("e", validate_email(email)), ("t", token)]
    return urlunsplit((parts.scheme, parts.netloc, path, urlencode(query), ""))
