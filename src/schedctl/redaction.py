"""The one redaction of secrets from text schedctl is about to print or record.

Masked wherever they appear, in any text: the password of a URL's
``user:password@``, and the value of a ``key=value`` (a URL's query parameter or a
libpq-style setting) whose key names a secret: ``password``, ``sslpassword``,
``passfile``, ``sslkey``, ``*token*``, ``*secret*``, ... in any case. Masked too,
wherever they appear: the secret values this process was given (`remember`), since a
driver may quote one in its own words. Every output path -- error lines, warnings and
log lines, --json documents, tables, tracebacks -- goes through `redact`.

No schedctl imports: every layer may use it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any
from urllib.parse import unquote

MASK = "***"
# Shorter remembered values are masked only where their shape says so (a URL's
# password, a secret key's value): replacing "pw" everywhere would garble the text.
MIN_SECRET_LENGTH = 4

# A key holding a secret: password, sslpassword, passfile, passwd, pwd, sslkey,
# api_key, private_key, access_token, client_secret, credentials...
_SENSITIVE_KEY = r"[\w.-]*(?:pass|pwd|secret|token|credential|sslkey|api_?key|private_?key)[\w.-]*"
# key=value, the value quoted or running to the next separator of a URL's query or
# of a libpq connection string.
_SECRET_SETTING = re.compile(
    rf"""(?<![\w.-])(?P<key>{_SENSITIVE_KEY})(?P<eq>\s*=\s*)"""
    r"""(?P<value>'(?:[^'\\]|\\.)*'?|"(?:[^"\\]|\\.)*"?|[^\s&#'"<>]+)""",
    re.IGNORECASE,
)
# scheme://user:password@ -- the password runs to the token's last @, so that none of
# it shows however a parser splits a password holding @, / or ?.
_URL_PASSWORD = re.compile(
    r"(?P<head>\b[A-Za-z][A-Za-z0-9+.-]*://[^\s:/?#@'\"<>]*:)(?P<value>[^\s'\"<>]*)(?P<at>@)"
)

_remembered: set[str] = set()


def remember(*values: str | None) -> None:
    """Mask these values in everything this process prints from now on."""
    _remembered.update(v for v in values if v and len(v) >= MIN_SECRET_LENGTH)


def forget_all() -> None:
    """Start a new command with nothing remembered (in-process runs)."""
    _remembered.clear()


def secrets_in(text: str) -> list[str]:
    """The secret values `text` carries where `redact` would mask them (a URL's
    password, secret settings' values), as written and percent-decoded."""
    found: list[str] = []
    for pattern in (_URL_PASSWORD, _SECRET_SETTING):
        for match in pattern.finditer(text):
            value = match["value"]
            if value[:1] in "'\"" and value[-1:] == value[:1] and len(value) > 1:
                value = value[1:-1]
            found.extend(dict.fromkeys([value, unquote(value)]))
    return [v for v in found if v]


def redact(text: str, secrets: Iterable[str | None] = ()) -> str:
    """`text` with every secret masked: remembered ones, `secrets`, and any that its
    shape gives away (a URL's password, a secret setting's value)."""
    values = {s for s in secrets if s and len(s) >= MIN_SECRET_LENGTH} | _remembered
    for value in sorted(values, key=len, reverse=True):
        text = text.replace(value, MASK)
    text = _URL_PASSWORD.sub(lambda m: f"{m['head']}{MASK}{m['at']}", text)
    return _SECRET_SETTING.sub(lambda m: f"{m['key']}{m['eq']}{MASK}", text)


def redact_data(value: Any) -> Any:
    """A JSON-ready document with every string in it redacted (keys included)."""
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, dict):
        return {redact_data(k): redact_data(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [redact_data(v) for v in value]
    return value
