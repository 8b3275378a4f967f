"""Message building, Message-IDs and address validation (pure, no network)."""

from __future__ import annotations

import copy
import email
import email.policy
import pickle
import re
from datetime import UTC, datetime

import pytest
from hypothesis import assume, example, given, settings
from hypothesis import strategies as st

from schedctl.delivery.message import (
    POLICY,
    SMTP_POLICY,
    build_email,
    make_message_id,
)
from schedctl.errors import ValidationError
from schedctl.values import address_of, validate_email

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


# --- one writer: build_email, serialised by the email package ------------------------


def _parsed(wire: bytes) -> email.message.EmailMessage:
    parsed = email.message_from_bytes(wire, policy=email.policy.default)
    assert isinstance(parsed, email.message.EmailMessage)
    return parsed


def test_a_body_that_holds_the_boundary_gets_another() -> None:
    boundary = build().get_boundary()
    assert boundary is not None
    text = f"--{boundary}\nnot a part\n--{boundary}--\n"

    msg = build(text=text)

    assert msg.get_boundary() not in (None, boundary)
    reparsed = _parsed(msg.as_bytes(policy=SMTP_POLICY))
    assert len(list(reparsed.iter_parts())) == 2
    plain = reparsed.get_body(preferencelist=("plain",))
    assert plain is not None
    assert plain.get_content().replace("\r\n", "\n") == text


def test_nested_multiparts_have_different_boundaries() -> None:
    msg = build(attachments=[("report.csv", "text/csv", b"a,b\n")])
    body = next(msg.iter_parts())
    assert isinstance(body, email.message.EmailMessage)
    boundaries = {msg.get_boundary(), body.get_boundary()}
    assert None not in boundaries
    assert len(boundaries) == 2


def test_a_header_folds_for_each_policy_it_is_written_with() -> None:
    # Header objects are shared between messages and remember their folded text.
    subject = "Weekly report for the northern region, with the figures " * 3
    msg = build(subject=subject)
    lf, crlf = msg.as_bytes(), msg.as_bytes(policy=SMTP_POLICY)
    narrow = msg.as_bytes(policy=POLICY.clone(max_line_length=40))

    assert b"\r" not in lf
    assert b"\n" not in crlf.replace(b"\r\n", b"")
    assert crlf.replace(b"\r\n", b"\n") == lf
    headers = narrow.split(b"\n\n", 1)[0].splitlines()
    assert max(len(line) for line in headers if not line.startswith(b"Message-ID")) <= 40
    for wire in (lf, crlf, narrow):
        assert _parsed(wire)["Subject"] == subject.strip()


def test_messages_do_not_share_what_differs() -> None:
    first = build(recipient="Anna <anna@example.org>", subject="First")
    second = build(recipient="bob@example.org", subject="Second", html=None)
    assert (first["To"], first["Subject"]) == ("Anna <anna@example.org>", "First")
    assert (second["To"], second["Subject"]) == ("bob@example.org", "Second")
    assert first.as_bytes(policy=SMTP_POLICY) == build(
        recipient="Anna <anna@example.org>", subject="First"
    ).as_bytes(policy=SMTP_POLICY)


def test_a_message_can_be_copied_and_pickled() -> None:
    msg = build(subject="Отчёт", attachments=[("a.csv", "text/csv", b"1\n")])
    wire = msg.as_bytes(policy=SMTP_POLICY)
    assert copy.deepcopy(msg).as_bytes(policy=SMTP_POLICY) == wire
    assert pickle.loads(pickle.dumps(msg)).as_bytes(policy=SMTP_POLICY) == wire  # noqa: S301


_PRINTABLE = st.characters(min_codepoint=32, max_codepoint=126)
_NAMES = st.text(alphabet=_PRINTABLE, max_size=40)
_LOCALS = st.from_regex(r"[a-z0-9][a-z0-9_+-]{0,30}", fullmatch=True)


@settings(max_examples=300, deadline=None)
@given(name=_NAMES, local=_LOCALS, subject=st.text(alphabet=_PRINTABLE, max_size=90))
@example(name="", local="bob", subject="Weekly report")
@example(name="Smith, Anna", local="anna", subject="  two  spaces =?utf-8?q?x?= ")
@example(name='"Q" (c)', local="q", subject="x" * 74)
def test_a_header_stored_as_written_is_written_as_parsed(
    name: str, local: str, subject: str
) -> None:
    """build_email stores a short printable To or Subject as written; the wire bytes
    are those of the same header parsed and folded by the email package."""
    # A display name that starts with an empty quoted string has no one form: the email
    # package writes `""0 <…>` as `To:  0 <…>` and, parsed again, as `To: 0 <…>`
    # (found when this property failed in CI), so neither side can match the other.
    assume(not name.lstrip().startswith('""'))
    recipient = f"{name} <{local}@example.org>" if name.strip() else f"{local}@example.org"
    try:
        msg = build(recipient=recipient, subject=subject)
    except ValidationError:
        assume(False)
    parsed = copy.deepcopy(msg)
    for header in ("To", "Subject"):
        value = dict(msg.raw_items())[header]
        parsed.replace_header(header, str(value))  # through the header factory
        assert type(dict(parsed.raw_items())[header]) is not str
    assert msg.as_bytes(policy=SMTP_POLICY) == parsed.as_bytes(policy=SMTP_POLICY)


def test_a_plain_recipient_and_subject_are_stored_as_written() -> None:
    # What the property above compares: without this, both could take the parser.
    stored = dict(build(recipient="Anna <anna@example.org>", subject="Weekly").raw_items())
    assert (stored["To"], stored["Subject"]) == ("Anna <anna@example.org>", "Weekly")
    assert all(type(stored[h]) is str for h in ("To", "Subject"))
    encoded = dict(build(recipient="Anna <anna@example.org>", subject="Отчёт").raw_items())
    assert type(encoded["Subject"]) is not str
    # An encoded word is the parser's to read, even in ASCII.
    worded = dict(build(subject="=?utf-8?q?Caf=C3=A9?=").raw_items())
    assert type(worded["Subject"]) is not str
