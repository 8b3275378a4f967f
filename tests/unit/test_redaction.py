"""schedctl.redaction: the one masking of secrets every output goes through."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator

import pytest

from schedctl import redaction
from schedctl.cli import run
from schedctl.cli.output import error_text, to_json, warn
from schedctl.db.engine import mask_url, url_secrets
from schedctl.redaction import redact, remember, secrets_in

SECRET = "S3cret"


@pytest.fixture(autouse=True)
def nothing_remembered() -> Iterator[None]:
    redaction.forget_all()
    yield
    redaction.forget_all()


@pytest.mark.parametrize(
    "text",
    [
        "postgresql://u:S3cret@h:5432/db",
        "postgresql+psycopg://u:S3cret@h/db?sslmode=require",
        "postgresql://u@h/db?password=S3cret",
        "postgresql://u@h/db?sslmode=require&sslpassword=S3cret&application_name=x",
        "postgresql://u@h/db?PassWord=S3cret",
        "postgresql://u@h/db?SSLPASSWORD=S3cret#frag",
        "postgresql://u@h/db?sslkey=/home/S3cret/key.pem",
        "postgresql://u@h/db?passfile=/home/S3cret/.pgpass",
        "https://hooks.example/x?access_token=S3cret",
        "http://monitor:S3cret@127.0.0.1:8000/ping",
        "http://monitor:p@S3cret@127.0.0.1/ping",  # an unencoded @ in the password
        "http://monitor:S3c/ret?x@127.0.0.1/ping",  # / and ? in the password
        "error (url 'mysql+pymysql://u:S3cret@h/db') in two 'oracle://a:S3cret@b/c'",
        "connection string: host=h password=S3cret dbname=x",
        "connection string: host=h password = 'S3 cret' dbname=x",
        'settings: sslpassword="S3 cret" user=x',
        "smtp: SMTP_PASSWORD=S3cret",
        "https://api.example/x?client_secret=S3cret&Pwd=S3cretA&credentials=S3cretB",
    ],
)
def test_secrets_a_text_gives_away_are_masked(text: str) -> None:
    masked = redact(text)
    assert "S3" not in masked, masked
    assert "***" in masked


@pytest.mark.parametrize(
    "text",
    [
        "postgresql://u@h:5432/db?sslmode=require&connect_timeout=5",
        "database unavailable (postgresql at 127.0.0.1:5432/db): connection refused",
        'password authentication failed for user "u"',
        'invalid connection option "PassWord"',
        "https://example.com/unsubscribe?a=1&e=x%40example.com&t=abc123",
        "user@example.com wrote: see http://example.com/a",
    ],
)
def test_text_without_secrets_is_unchanged(text: str) -> None:
    assert redact(text) == text


def test_remembered_and_given_values_are_masked_anywhere() -> None:
    remember("hunter22", None, "ab")  # too short to mask everywhere: "ab" is not
    text = "login failed: 'hunter22' is wrong for ab and extra-Value"
    assert redact(text, ["extra-Value"]) == "login failed: '***' is wrong for ab and ***"
    redaction.forget_all()
    assert redact("hunter22") == "hunter22"


def test_secrets_in_finds_what_redact_masks_decoded_too() -> None:
    found = secrets_in("postgresql://u:p%40ss@h/db?sslkey=%2Fk%2Fkey&sslmode=require")
    assert set(found) == {"p%40ss", "p@ss", "%2Fk%2Fkey", "/k/key"}


def test_database_urls_are_masked_and_their_secrets_found() -> None:
    url = f"postgresql://u:{SECRET}@h/db?password={SECRET}x&sslpassword=S3cretY&sslmode=prefer"
    masked = mask_url(url)
    assert "S3" not in masked
    assert masked.startswith("postgresql://u:***@h/db?")
    assert "sslmode=prefer" in masked
    assert {SECRET, f"{SECRET}x", "S3cretY"} <= set(url_secrets(url))


def test_json_documents_are_redacted_keys_and_values() -> None:
    remember("quoted-Secret")
    document = {
        "database": "postgresql://u@h/db?password=S3cret",
        "nested": [{"error": 'driver said "quoted-Secret"'}],
        "quoted-Secret": 1,
    }
    text = to_json(document)
    assert "S3cret" not in text
    assert "quoted-Secret" not in text
    assert json.loads(text)["database"] == "postgresql://u@h/db?password=***"


def test_error_lines_and_warnings_are_redacted(capsys: pytest.CaptureFixture[str]) -> None:
    assert SECRET not in error_text(f"cannot open postgresql://u:{SECRET}@h/db")
    warn(f"unused setting password={SECRET}")
    assert SECRET not in capsys.readouterr().err


def test_log_lines_are_redacted(capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["--version"]) == 0  # configures schedctl's log handler
    logging.getLogger("schedctl.delivery").warning(
        "ping to %s failed", f"http://monitor:{SECRET}@127.0.0.1/p"
    )
    logging.getLogger("schedctl.db").warning("connect with sslpassword=%s", SECRET)
    err = capsys.readouterr().err
    assert "ping to http://monitor:***@127.0.0.1/p failed" in err
    assert SECRET not in err
