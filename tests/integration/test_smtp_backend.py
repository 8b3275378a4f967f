"""SmtpBackend against a real aiosmtpd server on loopback (no mocked network)."""

from __future__ import annotations

import asyncio
import base64
import email
import ipaddress
import logging
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session

from schedctl.delivery.backends import make_backend
from schedctl.delivery.message import POLICY, build_email, make_message_id
from schedctl.delivery.smtp import SmtpBackend

# The client's timeout where a test is about it: short, but long enough that a server
# thread of a busy test process still greets in time. Elsewhere the client waits long.
TIMEOUT = 1.0
PATIENT = 30.0
PASSWORD = "s3cret-Pa55word"

StartServer = Callable[..., Controller]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.fixture
def smtp_server() -> Iterator[StartServer]:
    """Start aiosmtpd servers on free loopback ports; stop them after the test."""
    controllers: list[Controller] = []

    def start(handler: Any, **kwargs: Any) -> Controller:
        controller = Controller(handler, hostname="127.0.0.1", port=free_port(), **kwargs)
        controller.start()
        controllers.append(controller)
        return controller

    yield start
    for controller in controllers:
        controller.stop()


class Recorder:
    """Accepts everything; records messages, sessions, EHLOs and QUITs."""

    def __init__(self, data_replies: list[str] | None = None) -> None:
        self.envelopes: list[Envelope] = []
        self.peers: list[Any] = []
        self.servers: list[SMTP] = []
        self.ehlo_count = 0
        self.quit_count = 0
        self.data_replies = list(data_replies or [])
        self.refuse: dict[str, str] = {}

    async def handle_EHLO(
        self, server: SMTP, session: Session, envelope: Envelope, hostname: str, responses: Any
    ) -> Any:
        session.host_name = hostname
        self.ehlo_count += 1
        return responses

    async def handle_QUIT(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        self.quit_count += 1
        return "221 Bye"

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: Any
    ) -> str:
        if address in self.refuse:
            return self.refuse[address]
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        if session.peer not in self.peers:
            self.peers.append(session.peer)
        self.servers.append(server)
        if self.data_replies:
            return self.data_replies.pop(0)
        self.envelopes.append(envelope)
        return "250 2.0.0 Ok: queued"

    def message(self, index: int = -1) -> EmailMessage:
        content = self.envelopes[index].original_content
        assert content is not None
        parsed = email.message_from_bytes(content, policy=POLICY)
        assert isinstance(parsed, EmailMessage)
        return parsed


def make_msg(n: int = 1, recipient: str = "bob@example.org", **kwargs: Any) -> EmailMessage:
    return build_email(
        sender="Reports <reports@example.com>",
        recipient=recipient,
        subject=f"Report {n}",
        text=f"Hello {n}\n.leading dot line\n",
        html=f"<p>Hello {n}</p>",
        message_id=make_message_id(f"run-{n}", "example.com", installation="a1"),
        **kwargs,
    )


def backend_for(controller: Controller, **kwargs: Any) -> SmtpBackend:
    kwargs.setdefault("tls", "none")
    kwargs.setdefault("timeout", PATIENT)
    return SmtpBackend("127.0.0.1", controller.port, local_hostname="client.test", **kwargs)


# ------------------------------------------------------------------------ happy path


def test_sends_multipart_message_with_headers(smtp_server: StartServer) -> None:
    recorder = Recorder()
    controller = smtp_server(recorder)
    msg = make_msg(
        attachments=[("report.csv", "text/csv", b"name,total\nacme,3\n")],
        unsubscribe_url="https://example.com/unsubscribe?a=acc&e=bob%40example.org&t=tok",
    )
    msg["Bcc"] = "audit@example.com"

    with backend_for(controller) as backend:
        result = backend.send(msg)

    assert result.outcome == "sent"
    assert result.ok
    assert result.code == 250
    assert result.refused == {}
    assert result.provider == f"smtp:127.0.0.1:{controller.port}"
    envelope = recorder.envelopes[0]
    assert envelope.mail_from == "reports@example.com"
    assert envelope.rcpt_tos == ["bob@example.org", "audit@example.com"]
    received = recorder.message()
    assert received["Message-ID"] == make_message_id("run-1", "example.com", installation="a1")
    assert received["Bcc"] is None
    assert received["List-Unsubscribe"] == (
        "<https://example.com/unsubscribe?a=acc&e=bob%40example.org&t=tok>"
    )
    assert received["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert received["Date"] is not None
    assert received.get_content_type() == "multipart/mixed"
    body, attachment = list(received.iter_parts())
    assert body.get_content_type() == "multipart/alternative"
    assert [p.get_content_type() for p in body.iter_parts()] == ["text/plain", "text/html"]
    text = received.get_body(preferencelist=("plain",))
    assert text is not None
    # Dot-stuffing round trip: a body line starting with "." survives.
    assert text.get_content().replace("\r\n", "\n") == "Hello 1\n.leading dot line\n"
    assert attachment.get_filename() == "report.csv"
    assert attachment.get_payload(decode=True) == b"name,total\nacme,3\n"


def test_five_messages_reuse_one_connection(smtp_server: StartServer) -> None:
    recorder = Recorder()
    controller = smtp_server(recorder)

    with backend_for(controller) as backend:
        results = [backend.send(make_msg(n)) for n in range(5)]

    assert [r.outcome for r in results] == ["sent"] * 5
    assert len(recorder.envelopes) == 5
    assert len(recorder.peers) == 1
    assert recorder.ehlo_count == 1
    assert recorder.quit_count == 1
    assert backend.connections_opened == 1


def test_reconnects_after_server_dropped_the_connection(smtp_server: StartServer) -> None:
    recorder = Recorder()
    controller = smtp_server(recorder)

    with backend_for(controller) as backend:
        assert backend.send(make_msg(1)).outcome == "sent"
        closed = threading.Event()
        server_side = recorder.servers[-1]

        def drop() -> None:
            assert server_side.transport is not None
            server_side.transport.close()
            closed.set()

        controller.loop.call_soon_threadsafe(drop)
        assert closed.wait(2)
        result = backend.send(make_msg(2))

    assert result.outcome == "sent"
    assert len(recorder.envelopes) == 2
    assert len(recorder.peers) == 2
    assert backend.connections_opened == 2


class ClosingOnMail(Recorder):
    """Answers the first MAIL with 421, as a server closing an idle session does."""

    def __init__(self) -> None:
        super().__init__()
        self.mail_count = 0

    async def handle_MAIL(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: Any
    ) -> str:
        self.mail_count += 1
        if self.mail_count == 2:
            return "421 4.4.2 Idle timeout, closing connection"
        envelope.mail_from = address
        envelope.mail_options.extend(options)
        return "250 OK"


def test_reconnects_after_421_on_a_reused_connection(smtp_server: StartServer) -> None:
    handler = ClosingOnMail()
    controller = smtp_server(handler)

    with backend_for(controller) as backend:
        first = backend.send(make_msg(1))
        second = backend.send(make_msg(2))

    assert (first.outcome, second.outcome) == ("sent", "sent")
    assert len(handler.envelopes) == 2
    assert backend.connections_opened == 2


# -------------------------------------------------------------- reply classification


def test_451_then_250_is_retry_then_sent(smtp_server: StartServer) -> None:
    recorder = Recorder(data_replies=["451 4.3.0 Temporary local problem"])
    controller = smtp_server(recorder)

    with backend_for(controller) as backend:
        first = backend.send(make_msg())
        second = backend.send(make_msg())

    assert first.outcome == "retry"
    assert first.code == 451
    assert first.stage == "reply"
    assert "4.3.0" in first.detail
    assert second.outcome == "sent"
    assert len(recorder.envelopes) == 1
    assert len(recorder.peers) == 1  # the connection survived the 451 (RSET)


@pytest.mark.parametrize(
    ("reply", "outcome"),
    [
        ("550 5.1.1 User unknown", "failed"),
        ("554 5.7.1 Message rejected as spam", "failed"),
        ("552 5.2.2 Mailbox full", "failed"),
        ("550 5.4.5 Daily user sending quota exceeded", "deferred"),
        ("452 4.5.3 Daily message quota exceeded, try again tomorrow", "deferred"),
        ("454 4.7.0 Throttling failure: Maximum sending rate exceeded", "deferred"),
        ("452 4.5.3 Too many recipients", "retry"),
        ("452 4.2.2 Mailbox over quota", "retry"),
    ],
)
def test_final_reply_classification(smtp_server: StartServer, reply: str, outcome: str) -> None:
    controller = smtp_server(Recorder(data_replies=[reply]))

    with backend_for(controller) as backend:
        result = backend.send(make_msg())
        follow_up = backend.send(make_msg(2))

    assert result.outcome == outcome
    assert result.code == int(reply[:3])
    assert reply[4:] in result.detail
    assert follow_up.outcome == "sent"  # the connection is still usable


def test_one_of_two_recipients_refused(smtp_server: StartServer) -> None:
    recorder = Recorder()
    recorder.refuse["bad@example.org"] = "550 5.1.1 <bad@example.org>: User unknown"
    controller = smtp_server(recorder)
    msg = make_msg()
    msg["Cc"] = "bad@example.org"

    with backend_for(controller) as backend:
        result = backend.send(msg)

    assert result.outcome == "sent"
    assert result.refused == {"bad@example.org": (550, "5.1.1 <bad@example.org>: User unknown")}
    assert recorder.envelopes[0].rcpt_tos == ["bob@example.org"]


def test_all_recipients_refused_is_failed(smtp_server: StartServer) -> None:
    recorder = Recorder()
    recorder.refuse["bob@example.org"] = "550 5.1.1 <bob@example.org>: User unknown"
    controller = smtp_server(recorder)

    with backend_for(controller) as backend:
        result = backend.send(make_msg())

    assert result.outcome == "failed"
    assert result.stage == "rcpt"
    assert result.code == 550
    assert set(result.refused) == {"bob@example.org"}
    assert recorder.envelopes == []


# ------------------------------------------------------------------ timeouts, refusals


class SlowData(Recorder):
    """Receives the whole message, then answers only after the client's timeout."""

    def __init__(self, delay: float) -> None:
        super().__init__()
        self.delay = delay
        self.received = threading.Event()

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        self.envelopes.append(envelope)
        self.received.set()
        await asyncio.sleep(self.delay)
        return "250 OK"


def test_timeout_after_data_is_unknown(smtp_server: StartServer) -> None:
    handler = SlowData(delay=TIMEOUT * 2)
    controller = smtp_server(handler)

    with backend_for(controller, timeout=TIMEOUT) as backend:
        result = backend.send(make_msg())

    assert result.outcome == "unknown"
    assert result.stage == "reply"
    assert "timed out" in result.detail
    assert handler.received.is_set()  # the server did get the whole message


def test_meanwhile_runs_once_the_message_is_written_and_not_against_the_reply_timeout(
    smtp_server: StartServer,
) -> None:
    """``meanwhile`` runs once per message, after its data went out and before its
    reply is read: the server has the whole message by the time it has run, and the
    time it takes is not counted against the reply's timeout. A message refused
    before its data never calls it."""
    handler = SlowData(delay=0.0)
    handler.refuse["nobody@example.org"] = "550 5.1.1 no such user"
    controller = smtp_server(handler)
    seen: list[bool] = []

    def meanwhile() -> None:
        handler.received.wait(PATIENT)
        time.sleep(TIMEOUT * 1.5)  # longer than the timeout for the reply
        seen.append(handler.received.is_set())

    with backend_for(controller, timeout=TIMEOUT) as backend:
        result = backend.send(make_msg(), meanwhile)
        refused = backend.send(make_msg(recipient="nobody@example.org"), meanwhile)

    assert result.outcome == "sent"
    assert seen == [True]
    assert (refused.outcome, refused.stage) == ("failed", "rcpt")


class CountingRcpt(Recorder):
    def __init__(self) -> None:
        super().__init__()
        self.rcpts = 0

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: Any
    ) -> str:
        self.rcpts += 1
        return await super().handle_RCPT(server, session, envelope, address, options)


def test_ready_runs_after_the_envelope_and_before_the_body(smtp_server: StartServer) -> None:
    """``ready`` runs once per message, once the server took its envelope (RCPT) and
    answered DATA, before any of the body went out (the server has accepted nothing
    yet); a message refused before DATA never calls it."""
    handler = CountingRcpt()
    handler.refuse["nobody@example.org"] = "550 5.1.1 no such user"
    controller = smtp_server(handler)
    seen: list[tuple[int, int]] = []  # (RCPTs the server handled, messages it accepted)

    def ready() -> None:
        seen.append((handler.rcpts, len(handler.envelopes)))

    with backend_for(controller) as backend:
        first = backend.send(make_msg(1), ready=ready)
        refused = backend.send(make_msg(2, recipient="nobody@example.org"), ready=ready)
        second = backend.send(make_msg(3), ready=ready)

    assert (first.outcome, refused.outcome, second.outcome) == ("sent", "failed", "sent")
    assert seen == [(1, 0), (3, 1)]


@pytest.mark.parametrize("error", [RuntimeError("no"), ConnectionResetError("gone")])
def test_a_ready_that_raises_stops_the_message_before_its_body(
    smtp_server: StartServer, error: Exception
) -> None:
    """``ready`` raises (whatever the error, an OSError too): the error is the caller's,
    not a delivery result; the connection is dropped in the middle of DATA, so the
    server accepts nothing; the next message goes out on a new connection."""
    handler = Recorder()
    controller = smtp_server(handler)

    def refuse() -> None:
        raise error

    with backend_for(controller) as backend:
        with pytest.raises(type(error)):
            backend.send(make_msg(1), ready=refuse)
        after = backend.send(make_msg(2))

    assert after.outcome == "sent"
    assert [str(handler.message(i)["Subject"]) for i in range(len(handler.envelopes))] == [
        "Report 2"
    ]
    assert handler.ehlo_count == 2


class SlowMail(Recorder):
    def __init__(self, delay: float) -> None:
        super().__init__()
        self.delay = delay

    async def handle_MAIL(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: Any
    ) -> str:
        await asyncio.sleep(self.delay)
        envelope.mail_from = address
        return "250 OK"


def test_timeout_before_data_is_retry(smtp_server: StartServer) -> None:
    handler = SlowMail(delay=TIMEOUT * 2)
    controller = smtp_server(handler)

    with backend_for(controller, timeout=TIMEOUT) as backend:
        result = backend.send(make_msg())

    assert result.outcome == "retry"
    assert result.stage == "mail"
    assert "timed out" in result.detail
    assert handler.envelopes == []


class Trickle(Recorder):
    """Starts its reply to MAIL FROM or to the data at once, then sends one more byte
    every TIMEOUT / 3 for up to a minute: no single read waits as long as the timeout."""

    def __init__(self, stage: str) -> None:
        super().__init__()
        self.stage = stage

    @staticmethod
    async def trickle(server: SMTP) -> None:
        transport = server.transport
        assert transport is not None
        transport.write(b"250")
        for _ in range(int(60 / (TIMEOUT / 3))):
            await asyncio.sleep(TIMEOUT / 3)
            if transport.is_closing():
                return
            transport.write(b" ")

    async def handle_MAIL(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: Any
    ) -> str:
        envelope.mail_from = address
        if self.stage == "mail":
            await self.trickle(server)
            return " OK"  # the end of the trickled line
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        self.envelopes.append(envelope)
        if self.stage == "reply":
            await self.trickle(server)
            return " OK"
        return "250 OK"


@pytest.mark.parametrize(("stage", "outcome"), [("mail", "retry"), ("reply", "unknown")])
def test_a_reply_trickling_in_is_given_up_after_the_timeout(
    smtp_server: StartServer, stage: str, outcome: str
) -> None:
    """A tarpitting server that sends its reply a byte at a time never lets a per-read
    timeout fire: waiting for a reply must end after the timeout overall (a send that
    outlives its message's lease could be taken over and sent twice)."""
    controller = smtp_server(Trickle(stage))
    results = []

    def send() -> None:
        with backend_for(controller, timeout=TIMEOUT) as backend:
            results.append(backend.send(make_msg()))

    worker = threading.Thread(target=send, daemon=True)
    worker.start()
    worker.join(30)  # generous: bounded by the timeout, not by the server
    assert not worker.is_alive(), "still reading the trickling reply"
    [result] = results
    assert (result.outcome, result.stage) == (outcome, stage)
    assert "timed out" in result.detail


def test_connection_refused_is_retry() -> None:
    port = free_port()  # bound and released: nothing listens there now
    with SmtpBackend("127.0.0.1", port, tls="none", timeout=TIMEOUT) as backend:
        result = backend.send(make_msg())

    assert result.outcome == "retry"
    assert result.stage == "connect"
    assert result.code is None
    assert "ConnectionRefusedError" in result.detail


# ----------------------------------------------------------------------- auth and TLS


def authenticator(
    server: SMTP, session: Session, envelope: Envelope, mechanism: str, auth_data: Any
) -> AuthResult:
    ok = isinstance(auth_data, LoginPassword) and auth_data == (
        b"mailer",
        PASSWORD.encode(),
    )
    return AuthResult(success=ok, handled=False)


def test_auth_without_tls(smtp_server: StartServer, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    recorder = Recorder()
    controller = smtp_server(recorder, authenticator=authenticator, auth_require_tls=False)

    backend = make_backend(
        "smtp",
        smtp_host="127.0.0.1",
        smtp_port=str(controller.port),
        smtp_user="mailer",
        smtp_password=PASSWORD,
        smtp_tls="none",
        smtp_timeout="1",
        smtp_local_hostname="client.test",
    )
    with backend:
        result = backend.send(make_msg())

    assert result.outcome == "sent"
    assert PASSWORD not in repr(backend)
    assert PASSWORD not in caplog.text


def test_wrong_password_is_retry_without_leaking_it(smtp_server: StartServer) -> None:
    controller = smtp_server(Recorder(), authenticator=authenticator, auth_require_tls=False)

    with backend_for(controller, user="mailer", password="wrong-" + PASSWORD) as backend:
        result = backend.send(make_msg())

    assert result.outcome == "retry"
    assert result.stage == "connect"
    assert result.code == 535
    assert "authentication failed" in result.detail
    assert PASSWORD not in result.detail
    assert PASSWORD not in repr(result)


def echoing_authenticator(
    server: SMTP, session: Session, envelope: Envelope, mechanism: str, auth_data: Any
) -> AuthResult:
    """Refuses, quoting what the client sent as that mechanism sends it (base64)."""
    login, password = auth_data
    sent = b"\0" + login + b"\0" + password if mechanism == "PLAIN" else password
    echo = base64.b64encode(sent).decode()
    return AuthResult(success=False, handled=False, message=f"535 5.7.8 bad raw={echo}")


def test_a_server_quoting_the_base64_it_was_sent_shows_no_password(
    smtp_server: StartServer,
) -> None:
    # Found by review: "535 ... raw=AHJlcG9ydHMA..." was base64 of "\0user\0password",
    # shown by config check --smtp and send-now, and kept in email_log.
    controller = smtp_server(
        Recorder(), authenticator=echoing_authenticator, auth_require_tls=False
    )
    with backend_for(controller, user="mailer", password=PASSWORD) as backend:
        result = backend.send(make_msg())
    assert (result.outcome, result.code) == ("retry", 535)
    assert "raw=***" in result.detail
    for sent in [b"\0mailer\0" + PASSWORD.encode(), PASSWORD.encode()]:
        assert base64.b64encode(sent).decode() not in result.detail


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1/localhost: (cert.pem, key.pem)."""
    pytest.importorskip("cryptography")
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [
                    x509.DNSName("localhost"),
                    x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                ]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    folder = tmp_path_factory.mktemp("tls")
    cert_file, key_file = folder / "cert.pem", folder / "key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_file, key_file


def server_context(certificate: tuple[Path, Path]) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(*certificate)
    return context


def client_context(certificate: tuple[Path, Path]) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(certificate[0]))


class AuthChecker(Recorder):
    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        assert session.authenticated
        assert server.transport is not None
        assert server.transport.get_extra_info("ssl_object") is not None
        return await super().handle_DATA(server, session, envelope)


def test_starttls_with_auth(smtp_server: StartServer, certificate: tuple[Path, Path]) -> None:
    recorder = AuthChecker()
    controller = smtp_server(
        recorder,
        tls_context=server_context(certificate),
        require_starttls=True,
        auth_required=True,
        authenticator=authenticator,
    )
    backend = backend_for(
        controller,
        tls="starttls",
        user="mailer",
        password=PASSWORD,
        ssl_context=client_context(certificate),
    )

    with backend:
        results = [backend.send(make_msg(n)) for n in range(2)]

    assert [r.outcome for r in results] == ["sent", "sent"]
    assert len(recorder.envelopes) == 2
    assert len(recorder.peers) == 1
    assert recorder.ehlo_count == 2  # before and after STARTTLS


def test_implicit_tls_with_auth(smtp_server: StartServer, certificate: tuple[Path, Path]) -> None:
    recorder = AuthChecker()
    controller = smtp_server(
        recorder,
        ssl_context=server_context(certificate),
        # aiosmtpd only counts STARTTLS as TLS, so with implicit TLS it would not offer
        # AUTH unless told the (already encrypted) session needs no further TLS.
        auth_require_tls=False,
        authenticator=authenticator,
    )
    backend = backend_for(
        controller,
        tls="ssl",
        user="mailer",
        password=PASSWORD,
        ssl_context=client_context(certificate),
    )

    with backend:
        result = backend.send(make_msg())

    assert result.outcome == "sent", result.detail
    assert len(recorder.envelopes) == 1


def test_untrusted_certificate_is_refused(
    smtp_server: StartServer, certificate: tuple[Path, Path]
) -> None:
    recorder = Recorder()
    controller = smtp_server(
        recorder, tls_context=server_context(certificate), require_starttls=True
    )

    # The default context trusts only the system CAs, not our self-signed certificate.
    with backend_for(controller, tls="starttls") as backend:
        result = backend.send(make_msg())

    assert result.outcome == "retry"
    assert result.stage == "connect"
    assert "certificate verify failed" in result.detail
    assert recorder.envelopes == []


def test_starttls_not_offered_never_falls_back_to_plain_text(smtp_server: StartServer) -> None:
    recorder = Recorder()
    controller = smtp_server(recorder)

    with backend_for(controller, tls="starttls") as backend:
        result = backend.send(make_msg())

    assert result.outcome == "retry"
    assert result.stage == "connect"
    assert "STARTTLS" in result.detail
    assert recorder.envelopes == []
