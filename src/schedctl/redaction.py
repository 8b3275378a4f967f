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
from collections.abc import Iterable, Iterator
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
# Where a URL (or the run of text around one) ends, and where its user name does.
_TOKEN_END = re.compile(r"[\s'\"<>]")
_USER_END = re.compile(r"[:/?#@]")

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
    values = [text[start:end] for start, end in _url_passwords(text)]
    for match in _SECRET_SETTING.finditer(text):
        value = match["value"]
        if value[:1] in "'\"" and value[-1:] == value[:1] and len(value) > 1:
            value = value[1:-1]
        values.append(value)
    found = [form for value in values for form in (value, unquote(value))]
    return [v for v in dict.fromkeys(found) if v]


def redact(text: str, secrets: Iterable[str | None] = ()) -> str:
    """`text` with every secret masked: remembered ones, `secrets`, and any that its
    shape gives away (a URL's password, a secret setting's value)."""
    values = {s for s in secrets if s and len(s) >= MIN_SECRET_LENGTH} | _remembered
    for value in sorted(values, key=len, reverse=True):
        text = text.replace(value, MASK)
    text = _mask_url_passwords(text)
    return _SECRET_SETTING.sub(lambda m: f"{m['key']}{m['eq']}{MASK}", text)


def _url_passwords(text: str) -> Iterator[tuple[int, int]]:
    """Where the passwords of ``scheme://user:password@`` in `text` are (start, end).

    A password runs to the last @ before the URL ends (at a space, a quote or <>), so
    that none of it shows however a parser splits one holding @, / or ?. One pass:
    each URL is looked at once, whatever the text holds.
    """
    start = text.find("://")
    while start != -1:
        token_end = _TOKEN_END.search(text, start)
        end = token_end.start() if token_end else len(text)
        user_end = _USER_END.search(text, start + 3, end)
        at = text.rfind("@", start + 3, end)
        if user_end and user_end[0] == ":" and at > user_end.start():
            yield user_end.end(), at
        start = text.find("://", end)


def _mask_url_passwords(text: str) -> str:
    pieces, done = [], 0
    for start, end in _url_passwords(text):
        pieces += [text[done:start], MASK]
        done = end
    return "".join([*pieces, text[done:]])


def redact_data(value: Any) -> Any:
    """A JSON-ready document with every string in it redacted (keys included)."""
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, dict):
        return {redact_data(k): redact_data(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [redact_data(v) for v in value]
    return value
