"""A real SMTP server on loopback (aiosmtpd) that records what it accepted.

Replies can be scripted:

- ``data_replies`` are answered to successive messages (the reply after the data)
  before the server starts accepting; ``mail_replies`` and ``rcpt_script`` likewise
  answer successive MAIL FROM and RCPT TO commands (an entry ``None``: the normal
  reply for that call);
- ``rcpt_replies`` refuse given recipients, every time;
- ``faults`` script each recipient's successive attempts: the n-th transaction for
  an address gets ``faults[address][n]`` (a :class:`Reply` at stage ``rcpt`` or
  ``data``; ``None``: a normal attempt), later ones are normal;
- an entry is a reply line, or a :class:`Reply`: ``DROP`` closes the connection
  instead of answering, ``slow(reply, seconds)`` answers late (a client whose
  timeout is shorter has given up by then), ``tarpit(reply)`` sends the reply's code
  at once and then a space every 0.25 s for up to a minute (no single read waits
  long: only a client that bounds the whole reply gives up);
- ``credentials=(user, password)`` offers AUTH without TLS (``logins`` counts the
  successful ones);
- ``sessions=n`` serves the first n connections only: later ones are refused with
  421 to their EHLO and HELO (a provider's limit on concurrent connections;
  ``refused`` holds their client ends);
- ``hold_data=n`` makes the server sit on the first n DATA replies until
  ``release()`` (a client with a short timeout sees "no reply after the data": the
  unknown outcome).

``peers`` holds the client end (address, port) of every connection that sent a MAIL
FROM: how many connections a sender used. ``accepted`` holds the messages answered
250 (also those answered too late for the client, or whose client went away while
the server was slow to answer);
``unanswered`` those whose data arrived and whose connection was dropped instead of
a reply; ``data_seen`` every message whose data arrived, whatever the reply was (a
message refused with a 4xx and sent again is seen twice).
"""

from __future__ import annotations

import asyncio
import re
import socket
import threading
from collections import Counter
from dataclasses import dataclass
from types import TracebackType
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import MISSING, SMTP, AuthResult, Envelope, LoginPassword, Session

_MESSAGE_ID = re.compile(rb"^Message-ID:\s*(<[^>]+>)", re.IGNORECASE | re.MULTILINE)


@dataclass(frozen=True)
class Reply:
    """A scripted reply: ``text`` (None: the normal one), or ``drop`` the connection
    instead; after waiting ``delay`` seconds. ``stage`` places a per-recipient fault:
    at its RCPT TO (``rcpt``) or after its data (``data``)."""

    text: str | None = None
    drop: bool = False
    delay: float = 0.0
    stage: str = "data"
    trickle: bool = False

    def at(self, stage: str) -> Reply:
        return Reply(self.text, self.drop, self.delay, stage, self.trickle)


DROP = Reply(drop=True)


def slow(text: str, seconds: float) -> Reply:
    return Reply(text, delay=seconds)


def tarpit(text: str) -> Reply:
    return Reply(text, trickle=True)


Script = str | Reply | None


def _as_reply(entry: Script) -> Reply | None:
    return Reply(entry) if isinstance(entry, str) else entry


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class SmtpServer:
    """Start with ``with SmtpServer() as smtp:``; ``smtp.port`` is its loopback port."""

    def __init__(
        self,
        *,
        data_replies: list[Script] | None = None,
        rcpt_replies: dict[str, str] | None = None,
        hold_data: int = 0,
        mail_replies: list[Script] | None = None,
        rcpt_script: list[Script] | None = None,
        faults: dict[str, list[Reply | None]] | None = None,
        credentials: tuple[str, str] | None = None,
        sessions: int | None = None,
    ) -> None:
        self.data_replies = list(data_replies or [])
        self.rcpt_replies = dict(rcpt_replies or {})
        self.mail_replies = list(mail_replies or [])
        self.rcpt_script = list(rcpt_script or [])
        self.faults = {address: list(script) for address, script in (faults or {}).items()}
        self.hold_data = hold_data
        self.accepted: list[Envelope] = []
        self.data_seen: list[Envelope] = []
        self.unanswered: list[Envelope] = []
        self.data_commands = 0
        self.mail_commands = 0
        self.rcpt_commands = 0
        self.attempts: Counter[str] = Counter()  # RCPT TO commands per address
        self.peers: set[Any] = set()  # the client end of each connection that sent MAIL
        self.sessions = sessions
        self.greeted: list[Any] = []  # the client end of each connection, in order
        self.refused: set[Any] = set()  # the client end of each connection refused
        self.faults_used = 0
        self._lock = threading.Lock()
        self._held: asyncio.Event | None = None
        self.holding = threading.Event()  # set once a DATA reply is being held
        self.credentials = credentials
        self.logins = 0
        auth: dict[str, Any] = {}
        if credentials is not None:
            auth = {
                "auth_require_tls": False,
                "authenticator": self._authenticate,
            }
        self.controller = Controller(self, hostname="127.0.0.1", port=free_port(), **auth)

    def _authenticate(
        self, server: SMTP, session: Session, envelope: Envelope, mechanism: str, data: Any
    ) -> AuthResult:
        assert self.credentials is not None
        user, password = self.credentials
        ok = (
            isinstance(data, LoginPassword)
            and data.login == user.encode()
            and data.password == password.encode()
        )
        with self._lock:
            self.logins += ok
        # handled=False: aiosmtpd answers a failure 535 itself (handled=True would mean
        # this function had answered, and leave the client waiting for a reply).
        return AuthResult(success=ok, handled=False)

    @property
    def port(self) -> int:
        return int(self.controller.port)

    @property
    def env(self) -> dict[str, str]:
        """Environment for a `schedctl` process that mails through this server."""
        return {
            "SCHEDCTL_MAIL_BACKEND": "smtp",
            "SCHEDCTL_SMTP_HOST": "127.0.0.1",
            "SCHEDCTL_SMTP_PORT": str(self.port),
            "SCHEDCTL_SMTP_TLS": "none",
            "SCHEDCTL_SMTP_TIMEOUT": "5",
            "SCHEDCTL_MAIL_FROM": "schedctl@example.com",
            **(
                {
                    "SCHEDCTL_SMTP_USER": self.credentials[0],
                    "SCHEDCTL_SMTP_PASSWORD": self.credentials[1],
                }
                if self.credentials
                else {}
            ),
        }

    def settings(self, **overrides: Any) -> dict[str, Any]:
        """Keyword arguments for config.Settings pointing at this server."""
        values: dict[str, Any] = {
            "mail_backend": "smtp",
            "smtp_host": "127.0.0.1",
            "smtp_port": self.port,
            "smtp_tls": "none",
            "smtp_timeout": 5.0,
            "mail_from": "schedctl@example.com",
        }
        values.update(overrides)
        return values

    def __enter__(self) -> SmtpServer:
        self.controller.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()
        self.controller.stop()

    def release(self) -> None:
        """Let a held DATA reply go."""
        held = self._held
        if held is not None:
            self.controller.loop.call_soon_threadsafe(held.set)

    # ------------------------------------------------------------------ results

    @staticmethod
    def _ids(envelopes: list[Envelope]) -> list[str]:
        ids = []
        for envelope in envelopes:
            match = _MESSAGE_ID.search(envelope.original_content or b"")
            ids.append(match.group(1).decode() if match else "")
        return ids

    @property
    def message_ids(self) -> list[str]:
        with self._lock:
            return self._ids(list(self.accepted))

    @property
    def seen_ids(self) -> list[str]:
        """Message-IDs of every message whose data arrived (accepted or not)."""
        with self._lock:
            return self._ids(list(self.data_seen))

    @property
    def unanswered_ids(self) -> list[str]:
        with self._lock:
            return self._ids(list(self.unanswered))

    def id_counts(self) -> Counter[str]:
        return Counter(self.message_ids)

    @property
    def recipients(self) -> list[str]:
        with self._lock:
            return [r for e in self.accepted for r in e.rcpt_tos]

    # ------------------------------------------------------------------ handlers

    def _next_fault(self, address: str, stage: str) -> Reply | None:
        """The fault scripted for this attempt of ``address`` at ``stage`` (used up)."""
        with self._lock:
            if stage == "rcpt":
                attempt = self.attempts[address]
                self.attempts[address] += 1
            else:
                attempt = self.attempts[address] - 1
            script = self.faults.get(address, [])
            fault = script[attempt] if 0 <= attempt < len(script) else None
            if fault is None or fault.stage != stage:
                return None
            self.faults_used += 1
            return fault

    @staticmethod
    async def _answer(server: SMTP, reply: Reply, normal: str) -> str:
        if reply.delay:
            await asyncio.sleep(reply.delay)
        if reply.trickle and reply.text and server.transport is not None:
            transport = server.transport
            transport.write(reply.text[:3].encode())
            for _ in range(240):
                await asyncio.sleep(0.25)
                if transport.is_closing():
                    break
                transport.write(b" ")
            return reply.text[3:]
        if reply.drop:
            if server.transport is not None:
                server.transport.abort()
            return "421 4.4.2 Connection dropped"  # never reaches the client
        return reply.text or normal

    def _refuse(self, session: Session) -> bool:
        """Whether this connection is one more than ``sessions`` allows."""
        with self._lock:
            if session.peer not in self.greeted:
                self.greeted.append(session.peer)
            refused = self.sessions is not None and (
                self.greeted.index(session.peer) >= self.sessions
            )
            if refused:
                self.refused.add(session.peer)
            return refused

    async def handle_EHLO(
        self, server: SMTP, session: Session, envelope: Envelope, hostname: str, responses: Any
    ) -> list[str]:
        if self._refuse(session):
            return ["421 4.7.0 Too many concurrent connections from your host"]
        session.host_name = hostname
        return list(responses)

    async def handle_HELO(
        self, server: SMTP, session: Session, envelope: Envelope, hostname: str
    ) -> Any:
        if self._refuse(session):
            return "421 4.7.0 Too many concurrent connections from your host"
        return MISSING

    async def handle_MAIL(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: Any
    ) -> Any:
        with self._lock:
            self.mail_commands += 1
            self.peers.add(session.peer)
            reply = _as_reply(self.mail_replies.pop(0)) if self.mail_replies else None
        if reply is None:
            return MISSING  # aiosmtpd's own handling
        answer = await self._answer(server, reply, "250 OK")
        if answer.startswith("250"):
            envelope.mail_from = address
            envelope.mail_options.extend(options)
        return answer

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: Any
    ) -> str:
        with self._lock:
            self.rcpt_commands += 1
            scripted = _as_reply(self.rcpt_script.pop(0)) if self.rcpt_script else None
        fault = self._next_fault(address, "rcpt")
        reply = fault or scripted
        if reply is None:
            refused = self.rcpt_replies.get(address)
            if refused is not None:
                return refused
            reply = Reply()
        answer = await self._answer(server, reply, "250 OK")
        if answer.startswith("250"):
            envelope.rcpt_tos.append(address)
        return answer

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        with self._lock:
            self.data_commands += 1
            self.data_seen.append(envelope)
            scripted = _as_reply(self.data_replies.pop(0)) if self.data_replies else None
        faults = [self._next_fault(address, "data") for address in envelope.rcpt_tos]
        reply = next((f for f in faults if f is not None), None) or scripted
        if reply is not None:
            # The server has taken the message before its (late, or dropped) reply:
            # a client that gave up meanwhile cannot tell whether it was delivered.
            with self._lock:
                if reply.drop:
                    self.unanswered.append(envelope)
                elif (reply.text or "250").startswith("250"):
                    self.accepted.append(envelope)
            return await self._answer(server, reply, "250 2.0.0 Ok: queued")
        with self._lock:
            hold = self.hold_data > 0
            self.hold_data -= hold
        if hold:
            self._held = asyncio.Event()
            self.holding.set()
            await asyncio.wait_for(self._held.wait(), 30)
            return "451 4.3.0 Gave up waiting"
        with self._lock:
            self.accepted.append(envelope)
        return "250 2.0.0 Ok: queued"
