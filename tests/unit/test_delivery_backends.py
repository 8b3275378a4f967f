"""Backends without a network: reply classification, console, file, memory, factory."""

from __future__ import annotations

import email
import io
import ssl
from email.message import EmailMessage
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from schedctl.delivery import backends
from schedctl.delivery.backends import (
    ConsoleBackend,
    FileBackend,
    MemoryBackend,
    make_backend,
)
from schedctl.delivery.message import POLICY, build_email, make_message_id
from schedctl.delivery.smtp import SmtpBackend
from schedctl.delivery.transport import SendResult, _envelope, classify_reply
from schedctl.errors import ConfigError, ValidationError
from schedctl.values import validate_email


def make_msg(n: int = 1, recipient: str = "bob@example.org") -> email.message.EmailMessage:
    return build_email(
        sender="reports@example.com",
        recipient=recipient,
        subject=f"Report {n}",
        text=f"Body {n}\n",
        html=f"<p>Body {n}</p>",
        message_id=make_message_id(f"key-{n}", "example.com", installation="a1"),
        attachments=[("data.csv", "text/csv", b"a\n1\n")],
        unsubscribe_url="https://example.com/unsubscribe?a=1&e=bob%40example.org&t=t",
    )


@pytest.mark.parametrize(
    ("code", "text", "outcome"),
    [
        (250, "2.0.0 Ok: queued as 12345", "sent"),
        (251, "User not local; will forward", "sent"),
        (421, "4.7.0 Try again later, closing connection", "retry"),
        (450, "4.2.1 Mailbox busy", "retry"),
        (451, "4.3.0 Temporary local problem", "retry"),
        (452, "4.5.3 Too many recipients", "retry"),
        (452, "4.2.2 The email account that you tried to reach is over quota", "retry"),
        (550, "5.1.1 User unknown", "failed"),
        (552, "5.2.2 Mailbox full", "failed"),
        (554, "5.7.1 Message rejected: spam", "failed"),
        (535, "5.7.8 Authentication credentials invalid", "failed"),
        (550, "5.4.5 Daily user sending limit exceeded", "deferred"),
        (550, "5.4.5 Something we have never seen", "deferred"),
        (452, "4.5.3 Daily message quota exceeded", "deferred"),
        (454, "Throttling failure: Maximum sending rate exceeded.", "deferred"),
        (421, "4.7.28 Rate limited due to unusual rate of unsolicited mail", "deferred"),
        (554, "5.2.0 SubmissionQuotaExceededException", "deferred"),
        (300, "weird", "retry"),
    ],
)
def test_classify_reply(code: int, text: str, outcome: str) -> None:
    assert classify_reply(code, text) == outcome


def test_send_result_defaults() -> None:
    result = SendResult("sent")
    assert result.ok
    assert result.refused == {}
    assert not SendResult("unknown").ok


def test_console_backend_prints_summary_and_text() -> None:
    stream = io.StringIO()
    with ConsoleBackend(stream) as backend:
        result = backend.send(make_msg())
    out = stream.getvalue()
    assert result.outcome == "sent"
    assert result.provider == "console"
    assert "To: bob@example.org" in out
    assert "Subject: Report 1" in out
    assert f"Message-ID: {make_message_id('key-1', 'example.com', installation='a1')}" in out
    assert "Parts: text + HTML" in out
    assert "Attachments: data.csv (text/csv, 4 bytes)" in out
    assert "Body 1" in out
    assert "<p>" not in out


def test_console_backend_defaults_to_stderr(capsys: pytest.CaptureFixture[str]) -> None:
    make_backend("console").send(make_msg())
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "Subject: Report 1" in captured.err


def test_file_backend_writes_one_eml_per_message_id(tmp_path: Path) -> None:
    folder = tmp_path / "outbox"
    with FileBackend(folder) as backend:
        first = backend.send(make_msg(1))
        again = backend.send(make_msg(1))
        second = backend.send(make_msg(2))
    assert [r.outcome for r in (first, again, second)] == ["sent"] * 3
    files = sorted(p.name for p in folder.iterdir())
    assert len(files) == 2  # a resend of the same Message-ID replaces its file
    assert all(name.endswith("@example.com.eml") for name in files)
    assert not any(name.startswith(".tmp") for name in files)
    path = Path(first.detail)
    expected = make_message_id("key-1", "example.com", installation="a1")
    assert path.name == expected.strip("<>") + ".eml"
    parsed = email.message_from_bytes(path.read_bytes(), policy=POLICY)
    assert parsed["Subject"] == "Report 1"
    assert parsed["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"


def test_file_backend_sanitises_the_file_name(tmp_path: Path) -> None:
    msg = make_msg()
    msg.replace_header("Message-ID", "<../../etc/passwd@evil>")
    result = FileBackend(tmp_path).send(msg)
    assert result.outcome == "sent"
    [written] = list(tmp_path.iterdir())
    assert written.parent == tmp_path
    assert "/" not in written.name
    assert not written.name.startswith(".")


def test_file_backend_without_message_id_fails(tmp_path: Path) -> None:
    msg = make_msg()
    del msg["Message-ID"]
    assert FileBackend(tmp_path).send(msg).outcome == "failed"


def test_memory_backend_outbox_and_clear() -> None:
    MemoryBackend.clear()
    with make_backend("memory") as backend:
        backend.send(make_msg(1))
        backend.send(make_msg(2))
    assert [m["Subject"] for m in backends.outbox] == ["Report 1", "Report 2"]
    assert MemoryBackend.outbox is backends.outbox
    backends.clear_outbox()
    assert backends.outbox == []


def test_memory_backend_scripted_results() -> None:
    MemoryBackend.clear()
    scripted = SendResult("retry", 451, "4.3.0 try later", provider="memory")
    backend = MemoryBackend({"Bad@Example.org": scripted})
    assert backend.send(make_msg(recipient="bad@example.org")) is scripted
    assert backend.send(make_msg(recipient="bob@example.org")).outcome == "sent"
    assert len(backends.outbox) == 1
    MemoryBackend.clear()


def test_factory_builds_each_backend(tmp_path: Path) -> None:
    smtp = make_backend(
        "SMTP",
        smtp_host="mail.example.com",
        smtp_port="2525",
        smtp_tls="ssl",
        smtp_timeout="5",
        smtp_local_hostname="me.example.com",
        mail_file_dir=str(tmp_path),  # another backend's setting: ignored
        mail_from="reports@example.com",
    )
    assert isinstance(smtp, SmtpBackend)
    assert (smtp.host, smtp.port, smtp.tls, smtp.timeout) == ("mail.example.com", 2525, "ssl", 5.0)
    assert isinstance(make_backend("console", smtp_host=None), ConsoleBackend)
    assert isinstance(make_backend("file", mail_file_dir=str(tmp_path)), FileBackend)
    assert isinstance(make_backend("memory"), MemoryBackend)


@pytest.mark.parametrize(("tls", "port"), [("none", 25), ("starttls", 587), ("ssl", 465)])
def test_smtp_default_ports(tls: str, port: int) -> None:
    backend = make_backend("smtp", smtp_host="mail.example.com", smtp_tls=tls)
    assert isinstance(backend, SmtpBackend)
    assert backend.port == port


@pytest.mark.parametrize(
    ("name", "settings", "message"),
    [
        ("pigeon", {}, "unknown mail backend 'pigeon'"),
        ("smtp", {}, "needs a host"),
        ("smtp", {"smtp_host": ""}, "needs a host"),
        ("smtp", {"smtp_host": "h", "smtp_tls": "tls1.3"}, "none, starttls or ssl"),
        ("smtp", {"smtp_host": "h", "smtp_port": "abc"}, "smtp_port must be a number"),
        ("smtp", {"smtp_host": "h", "smtp_port": "70000"}, "port number"),
        ("smtp", {"smtp_host": "h", "smtp_timeout": "0"}, "positive"),
        ("smtp", {"smtp_host": "h", "smtp_user": "u"}, "set together"),
        ("smtp", {"smtp_host": "h", "smtp_ssl_context": "x"}, "SSLContext"),
        ("file", {}, "needs a directory"),
        ("console", {"stream": 42}, "writable"),
        ("memory", {"smtp_hots": "typo"}, "unknown mail setting 'smtp_hots'"),
    ],
)
def test_factory_errors(name: str, settings: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        make_backend(name, **settings)


def test_smtp_repr_hides_the_password() -> None:
    backend = SmtpBackend(
        "mail.example.com", user="mailer", password="hunter2-secret", tls="starttls"
    )
    assert "hunter2-secret" not in repr(backend)
    assert "mailer" in repr(backend)


def test_smtp_accepts_an_ssl_context() -> None:
    context = ssl.create_default_context()
    backend = make_backend("smtp", smtp_host="h", smtp_ssl_context=context)
    assert isinstance(backend, SmtpBackend)


def test_message_without_recipients_fails_without_connecting() -> None:
    msg = make_msg()
    del msg["To"]
    # Port 9 on a TEST-NET address: a connection attempt would hang, not fail fast.
    backend = SmtpBackend("192.0.2.1", 9, tls="none", timeout=5)
    result = backend.send(msg)
    assert result.outcome == "failed"
    assert "no recipients" in result.detail
    assert backend.connections_opened == 0


def _envelope_as_parsed(msg: EmailMessage) -> tuple[str, list[str]] | None:
    """What _envelope read before it took bare addresses as written: every value
    through the email package's parser (None: it raised ValidationError)."""
    from email.utils import getaddresses, parseaddr

    fields: dict[str, list[str]] = {"from": [], "to": [], "cc": []}
    for name, value in msg.raw_items():  # as stored, as _envelope reads them
        fields[name.lower()].append(str(value))
    recipients: list[str] = []
    for header in ("to", "cc"):
        for _, addr in getaddresses(fields[header]):
            if addr and addr not in recipients:
                recipients.append(addr)
    try:
        if not recipients:
            raise ValidationError("no recipients")
        sender = validate_email(parseaddr(fields["from"][0])[1])
        return sender, [validate_email(r) for r in recipients]
    except ValidationError:
        return None


_ADDRESS_TEXT = st.text(alphabet="ab.@-_+'ü1 <>\",()", max_size=14).map(lambda v: v + "@ex.org")
# Values the parser reads differently from how they are written: an empty address,
# whitespace around one or alone (Unicode's too).
_ODD_VALUES = st.sampled_from(["a@", "@", "x@@", "", " ", "\xa0", " a@ex.org", "a@ex.org\t"])
_HEADER_VALUE = st.one_of(
    _ADDRESS_TEXT,
    _ODD_VALUES,
    st.builds(lambda a, b: f"{a}, {b}", _ADDRESS_TEXT, _ADDRESS_TEXT),
)


@settings(max_examples=500, deadline=None)
@given(
    sender=st.one_of(_ADDRESS_TEXT, _ODD_VALUES, st.just("Sender <s@ex.org>")),
    to=st.lists(_HEADER_VALUE, min_size=1, max_size=3),
    cc=st.lists(_HEADER_VALUE, max_size=2),
)
def test_the_envelope_reads_addresses_as_the_email_package_reads_them(
    sender: str, to: list[str], cc: list[str]
) -> None:
    """_envelope takes a value written as one valid bare address as it is, and parses
    the rest: for From and any number of To and Cc values (bare or not, lists or not,
    valid or not, empty or blank) it reads what the email package's parser reads, or
    refuses where it does."""
    msg = EmailMessage(policy=POLICY)
    msg.set_raw("From", sender)
    for value in to:
        msg.set_raw("To", value)
    for value in cc:
        msg.set_raw("Cc", value)
    try:
        read: tuple[str, list[str]] | None = _envelope(msg, None)
    except ValidationError:
        read = None
    assert read == _envelope_as_parsed(msg)


def test_the_envelope_of_bare_addresses_is_read_without_the_parser(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """build_email writes From and To as bare addresses: _envelope reads them as they
    are (the parser costs more than the rest of reading the envelope)."""
    from schedctl.delivery import transport

    def no_parser(*_: object) -> None:
        raise AssertionError("parsed")

    monkeypatch.setattr(transport, "parseaddr", no_parser)
    monkeypatch.setattr(transport, "getaddresses", no_parser)
    msg = build_email(
        sender="from@example.com", recipient="to@Example.COM", subject="s", text="t", html=None,
        message_id=make_message_id("key-bare", "example.com", installation="a1"),
    )  # fmt: skip

    assert _envelope(msg, None) == ("from@example.com", ["to@example.com"])
