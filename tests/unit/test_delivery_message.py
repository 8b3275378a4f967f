"""Message building, Message-IDs and address validation (pure, no network)."""

from __future__ import annotations

import email
import io
import re
from datetime import UTC, datetime
from email.generator import BytesGenerator
from zoneinfo import ZoneInfo

import pytest

from schedctl.delivery.message import (
    POLICY,
    address_of,
    build_email,
    make_message_id,
    prepare_email,
    validate_email,
)
from schedctl.errors import ValidationError

MID = make_message_id(
    "schedule-1:2025-01-06T09:00:00Z:bob@example.org", "example.com", installation="a1"
)


def build(**kwargs: object) -> email.message.EmailMessage:
    arguments: dict[str, object] = {
        "sender": "Reports <reports@example.com>",
        "recipient": "bob@example.org",
        "subject": "Weekly report",
        "text": "Hello\n",
        "html": "<p>Hello</p>",
        "message_id": MID,
        "date": datetime(2025, 1, 6, 9, 0, tzinfo=UTC),
    }
    arguments.update(kwargs)
    return build_email(**arguments)  # type: ignore[arg-type]


def test_message_id_is_deterministic_and_well_formed() -> None:
    first = make_message_id("key-1", "Example.COM", installation="a1")
    assert first == make_message_id("key-1", "example.com", installation="a1")
    assert first != make_message_id("key-2", "example.com", installation="a1")
    local, _, domain = first.strip("<>").partition("@")
    assert first.startswith("<")
    assert first.endswith(">")
    assert re.fullmatch("[0-9a-f]{32}", local), local
    assert domain == "example.com"


def test_message_id_differs_between_installations() -> None:
    """Staging and production enqueue the same key: receivers must not merge them."""
    ids = {make_message_id("key-1", "example.com", installation=i) for i in ("a1", "b2")}
    assert len(ids) == 2
    # The pair is hashed unambiguously: "a" + "1x" is not "a1" + "x".
    assert make_message_id("1x", "example.com", installation="a") != make_message_id(
        "x", "example.com", installation="a1"
    )


@pytest.mark.parametrize("domain", ["", "bad domain", "a..b", "-x.com", "x@y.com"])
def test_message_id_rejects_bad_domain(domain: str) -> None:
    with pytest.raises(ValidationError, match="Message-ID domain"):
        make_message_id("key", domain, installation="a1")


def test_message_id_rejects_empty_key_or_installation() -> None:
    with pytest.raises(ValidationError, match="idempotency key"):
        make_message_id("", "example.com", installation="a1")
    with pytest.raises(ValidationError, match="installation"):
        make_message_id("key", "example.com", installation="")


@pytest.mark.parametrize(
    ("raw", "normalised"),
    [
        ("bob@example.org", "bob@example.org"),
        ("  Bob.Smith+tag@Example.ORG ", "bob.smith+tag@example.org"),
        ("ops@localhost", "ops@localhost"),
        ("anna@bücher.de", "anna@xn--bcher-kva.de"),
        ("o'neil@sub.example.co.uk", "o'neil@sub.example.co.uk"),
    ],
)
def test_validate_email_normalises(raw: str, normalised: str) -> None:
    assert validate_email(raw) == normalised


@pytest.mark.parametrize(
    "raw",
    [
        "",
        "bob",
        "bob@",
        "@example.org",
        "bob@@example.org",
        "bob@example@org",
        "bob smith@example.org",
        "bob@exa mple.org",
        "bob@example",
        "<bob@example.org>",
        "bob@example.org\r\nBcc: x@y.z",
        "bob\x00@example.org",
        ".bob@example.org",
        "bob.@example.org",
        "b..ob@example.org",
        "bob@-example.org",
        "bob@example..org",
        "bób@example.org",
        "a,b@example.org",
        "x" * 65 + "@example.org",
    ],
)
def test_validate_email_rejects(raw: str) -> None:
    with pytest.raises(ValidationError, match="invalid e-mail address"):
        validate_email(raw)


def test_validation_message_quotes_the_value() -> None:
    with pytest.raises(ValidationError) as info:
        validate_email("nope")
    assert info.value.message == "invalid e-mail address 'nope'"
    assert info.value.exit_code == 2


def test_address_of_accepts_display_names() -> None:
    assert address_of("Reports <Reports@Example.com>") == "reports@example.com"
    with pytest.raises(ValidationError):
        address_of("Reports <>")


def test_multipart_alternative_text_then_html() -> None:
    msg = build()
    assert msg.get_content_type() == "multipart/alternative"
    assert [p.get_content_type() for p in msg.iter_parts()] == ["text/plain", "text/html"]
    assert msg["From"] == "Reports <reports@example.com>"
    assert msg["To"] == "bob@example.org"
    assert msg["Subject"] == "Weekly report"
    assert msg["Message-ID"] == MID
    assert msg["Date"] == "Mon, 06 Jan 2025 09:00:00 +0000"
    assert msg["Auto-Submitted"] == "auto-generated"
    assert msg["List-Unsubscribe"] is None


def test_text_only_when_no_html() -> None:
    msg = build(html=None)
    assert msg.get_content_type() == "text/plain"
    assert msg.get_content() == "Hello\n"


def test_attachments_make_it_mixed() -> None:
    msg = build(attachments=[("report.csv", "text/csv", b"a,b\n1,2\n")])
    assert msg.get_content_type() == "multipart/mixed"
    body, attachment = list(msg.iter_parts())
    assert body.get_content_type() == "multipart/alternative"
    assert attachment.get_filename() == "report.csv"
    assert attachment.get_content_type() == "text/csv"
    assert attachment.get_payload(decode=True) == b"a,b\n1,2\n"


def test_bad_attachment_type_is_rejected() -> None:
    with pytest.raises(ValidationError, match="MIME type"):
        build(attachments=[("x", "csv", b"")])


def test_unsubscribe_headers_are_rfc_8058_and_never_encoded() -> None:
    url = "https://example.com/unsubscribe?a=acc-1&e=bob%40example.org&t=" + "T" * 43
    msg = build(unsubscribe_url=url)
    assert msg["List-Unsubscribe"] == f"<{url}>"
    assert msg["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    wire = msg.as_bytes()
    # Long as it is, the URL stays one literal line (no RFC 2047 encoded words).
    assert f"List-Unsubscribe: <{url}>".encode() in wire
    reparsed = email.message_from_bytes(wire, policy=POLICY)
    assert reparsed["List-Unsubscribe"] == f"<{url}>"


@pytest.mark.parametrize(
    "url", ["javascript:alert(1)", "https://x.example/u?a=1>\r\nBcc: x", "https://x/" + "a" * 950]
)
def test_bad_unsubscribe_url_is_rejected(url: str) -> None:
    with pytest.raises(ValidationError, match="unsubscribe URL"):
        build(unsubscribe_url=url)


def test_non_ascii_is_seven_bit_clean() -> None:
    msg = build(subject="Отчёт за неделю", text="Привет, мир\n", html="<p>Привет</p>")
    wire = msg.as_bytes()
    assert wire.isascii()
    reparsed = email.message_from_bytes(wire, policy=POLICY)
    assert reparsed["Subject"] == "Отчёт за неделю"
    text = reparsed.get_body(preferencelist=("plain",))
    assert text is not None
    assert text.get_content() == "Привет, мир\n"


def test_header_injection_in_subject_is_neutralised() -> None:
    msg = build(subject="Hi\r\nBcc: victim@example.org")
    assert msg["Subject"] == "Hi Bcc: victim@example.org"
    assert msg["Bcc"] is None


def test_extra_headers() -> None:
    msg = build(extra_headers={"X-Schedctl-Run": "run-42"})
    assert msg["X-Schedctl-Run"] == "run-42"
    for name in ("Message-ID", "to", "Content-Type", "Bad Header"):
        with pytest.raises(ValidationError, match="extra header"):
            build(extra_headers={name: "x"})


def test_invalid_inputs() -> None:
    with pytest.raises(ValidationError, match="invalid e-mail address"):
        build(recipient="not-an-address")
    with pytest.raises(ValidationError, match="Message-ID"):
        build(message_id="no-brackets@example.com")
    with pytest.raises(ValidationError, match="timezone-aware"):
        build(date=datetime(2025, 1, 1))


# --- prepare_email: build_email's message, written out directly ----------------------

_BOUNDARY = re.compile(rb'boundary="([^"]+)"')
LONG_HTML = "<p>Hello</p>" * 40  # lines over 78 characters: quoted-printable
PLAIN_CASES = {
    "text and html": {},
    "text only": {"html": None},
    "long html lines": {"html": LONG_HTML},
    "many long lines": {"html": (LONG_HTML + "\n") * 12, "text": ("x" * 90 + "\n") * 12},
    "non-ascii bodies": {"text": "Grüße aus Köln\n", "html": "<p>Grüße</p>"},
    "mostly non-latin body": {"text": "日本語のテキスト" * 30},  # base64 is shorter
    "no final newline, CRLF, empty html": {"text": "a\r\nb\rc", "html": ""},
    "a line that is only a dot": {"text": "one\n.\ntwo\n"},
    "display name with atext": {"sender": "O'Brien-Reports Bot <bot@example.com>"},
    "bare sender": {"sender": "reports@example.com"},
    "unsubscribe headers": {"unsubscribe_url": "https://example.com/u?t=" + "x" * 200},
    "another zone": {"date": datetime(2025, 7, 1, 9, 0, tzinfo=ZoneInfo("Europe/Berlin"))},
    "subject of 69 characters": {"subject": "s" * 69},
}
FALLBACK_CASES = {
    "display name to quote": {"sender": "J. Smith <j@example.com>"},
    "non-ascii display name": {"sender": "Jürgen <j@example.com>"},
    "non-ascii subject": {"subject": "Bericht für März"},
    "subject to fold": {"subject": "s" * 70},
    "encoded-word lookalike": {"subject": "=?utf-8?q?x?="},
    "attachment": {"attachments": [("a.csv", "text/csv", b"a,b\n1,2\n")]},
}


def _wire(msg: email.message.EmailMessage) -> bytes:
    buf = io.BytesIO()
    BytesGenerator(buf, policy=msg.policy.clone(linesep="\r\n")).flatten(msg)
    return buf.getvalue()


def _fields(**kwargs: object) -> dict[str, object]:
    arguments: dict[str, object] = {
        "sender": "Reports <reports@example.com>",
        "recipient": "Bob@Example.org",
        "subject": "Weekly report",
        "text": "Hello\n",
        "html": "<p>Hello</p>",
        "message_id": MID,
        "date": datetime(2025, 1, 6, 9, 0, tzinfo=UTC),
    }
    arguments.update(kwargs)
    return arguments


@pytest.mark.parametrize("case", PLAIN_CASES)
def test_a_plain_message_is_prepared_as_the_bytes_build_email_serialises_to(case: str) -> None:
    fields = _fields(**PLAIN_CASES[case])
    prepared = prepare_email(**fields)  # type: ignore[arg-type]
    assert prepared.data is not None, "written out directly"
    expected = build_email(**fields)  # type: ignore[arg-type]
    found = _BOUNDARY.search(prepared.data)
    if expected.is_multipart():
        assert found is not None
        expected.set_boundary(found[1].decode())  # the one random part of the bytes
    else:
        assert found is None
    assert prepared.data == _wire(expected)
    assert (prepared.sender, prepared.recipient) == (
        address_of(str(fields["sender"])),
        "bob@example.org",
    )
    assert prepared.message()["Message-ID"] == MID


@pytest.mark.parametrize("case", FALLBACK_CASES)
def test_any_other_message_is_built_with_build_email(case: str) -> None:
    fields = _fields(**FALLBACK_CASES[case])
    prepared = prepare_email(**fields)  # type: ignore[arg-type]
    assert prepared.data is None
    expected = build_email(**fields)  # type: ignore[arg-type]
    built = prepared.message()
    for n, (mine, theirs) in enumerate(zip(built.walk(), expected.walk(), strict=True)):
        if mine.is_multipart():  # the boundaries are the one random part
            mine.set_boundary(f"b{n}")
            theirs.set_boundary(f"b{n}")
    assert _wire(built) == _wire(expected)


@pytest.mark.parametrize(
    "bad",
    [
        {"message_id": "no-brackets@example.com"},
        {"sender": "not an address"},
        {"recipient": "bob@"},
        {"date": datetime(2025, 1, 6, 9, 0)},
        {"unsubscribe_url": "javascript:alert(1)"},
        {"attachments": [("a", "csv", b"")]},
    ],
)
def test_prepare_email_refuses_what_build_email_refuses(bad: dict[str, object]) -> None:
    with pytest.raises(ValidationError) as built:
        build_email(**_fields(**bad))  # type: ignore[arg-type]
    with pytest.raises(ValidationError) as prepared:
        prepare_email(**_fields(**bad))  # type: ignore[arg-type]
    assert prepared.value.message == built.value.message
