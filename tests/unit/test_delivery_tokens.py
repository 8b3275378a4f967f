"""HMAC unsubscribe tokens and links."""

from __future__ import annotations

import hmac
from urllib.parse import parse_qs, urlsplit

import pytest

from schedctl.delivery.tokens import make_token, unsubscribe_url, verify_token
from schedctl.errors import ConfigError, ValidationError

SECRET = "correct horse battery staple"


def test_valid_token_verifies() -> None:
    token = make_token(SECRET, "acc-1", "bob@example.org")
    assert verify_token(SECRET, "acc-1", "bob@example.org", token)


def test_token_shape() -> None:
    token = make_token(SECRET, "acc-1", "bob@example.org")
    assert len(token) == 43  # 32 bytes, URL-safe base64, no padding
    assert "=" not in token
    assert set(token) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")


def test_token_is_deterministic_and_uses_the_normalised_address() -> None:
    token = make_token(SECRET, "acc-1", "bob@example.org")
    assert make_token(SECRET.encode(), "acc-1", "  Bob@Example.ORG ") == token
    assert verify_token(SECRET, "acc-1", "BOB@example.org", token)


def test_wrong_email_fails() -> None:
    token = make_token(SECRET, "acc-1", "bob@example.org")
    assert not verify_token(SECRET, "acc-1", "alice@example.org", token)


def test_wrong_account_fails() -> None:
    token = make_token(SECRET, "acc-1", "bob@example.org")
    assert not verify_token(SECRET, "acc-2", "bob@example.org", token)


def test_wrong_secret_fails() -> None:
    token = make_token(SECRET, "acc-1", "bob@example.org")
    assert not verify_token("another secret", "acc-1", "bob@example.org", token)


@pytest.mark.parametrize(
    "tamper",
    [
        lambda t: t[:-1] + ("A" if t[-1] != "A" else "B"),
        lambda t: t[:-1],
        lambda t: t + "A",
        lambda t: t + "=",
        lambda t: "",
        lambda t: t.upper(),
        lambda t: "é" * len(t),
    ],
)
def test_tampered_token_fails(tamper: object) -> None:
    token = make_token(SECRET, "acc-1", "bob@example.org")
    assert callable(tamper)
    assert not verify_token(SECRET, "acc-1", "bob@example.org", tamper(token))


def test_field_boundaries_cannot_be_shifted() -> None:
    token = make_token(SECRET, "acc", "1bob@example.org")
    assert not verify_token(SECRET, "acc1", "bob@example.org", token)


def test_bad_input_is_false_not_an_error() -> None:
    token = make_token(SECRET, "acc-1", "bob@example.org")
    assert not verify_token(SECRET, "acc-1", "not an address", token)
    assert not verify_token(SECRET, "", "bob@example.org", token)


def test_verification_uses_compare_digest(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[object, object]] = []
    real = hmac.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(hmac, "compare_digest", spy)
    token = make_token(SECRET, "acc-1", "bob@example.org")
    assert verify_token(SECRET, "acc-1", "bob@example.org", token)
    assert not verify_token(SECRET, "acc-1", "bob@example.org", "x" * 43)
    assert len(calls) == 2


@pytest.mark.parametrize("secret", ["", b""])
def test_empty_secret_is_a_config_error(secret: str | bytes) -> None:
    with pytest.raises(ConfigError, match="secret"):
        make_token(secret, "acc-1", "bob@example.org")
    with pytest.raises(ConfigError, match="secret"):
        verify_token(secret, "acc-1", "bob@example.org", "t")


def test_make_token_validates_its_input() -> None:
    with pytest.raises(ValidationError, match="invalid e-mail address"):
        make_token(SECRET, "acc-1", "nope")
    with pytest.raises(ValidationError, match="account"):
        make_token(SECRET, "", "bob@example.org")


@pytest.mark.parametrize(
    ("base", "prefix"),
    [
        ("https://mail.example.com", "https://mail.example.com/unsubscribe?"),
        ("https://mail.example.com/", "https://mail.example.com/unsubscribe?"),
        ("https://example.com/hooks/", "https://example.com/hooks/unsubscribe?"),
        ("https://example.com/unsubscribe", "https://example.com/unsubscribe?"),
        ("https://example.com/u/unsubscribe?lang=ru", "https://example.com/u/unsubscribe?lang=ru&"),
    ],
)
def test_unsubscribe_url(base: str, prefix: str) -> None:
    url = unsubscribe_url(base, "acc 1/&", "Bob+x@Example.org", SECRET)
    assert url.startswith(prefix)
    query = parse_qs(urlsplit(url).query)
    assert query["a"] == ["acc 1/&"]
    assert query["e"] == ["bob+x@example.org"]
    assert verify_token(SECRET, "acc 1/&", "bob+x@example.org", query["t"][0])
    assert SECRET not in url


def test_unsubscribe_url_needs_http_base() -> None:
    with pytest.raises(ConfigError, match="base URL"):
        unsubscribe_url("example.com", "acc-1", "bob@example.org", SECRET)
