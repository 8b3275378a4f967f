"""A real SMTP server on loopback (aiosmtpd) that records what it accepted.

Replies can be scripted: ``data_replies`` are answered to successive DATA commands
before the server starts accepting; ``rcpt_replies`` refuse given recipients;
``hold_data=n`` makes the server sit on the first n DATA replies until ``release()`` (a
client with a short timeout sees "no reply after the data": the unknown outcome).
"""

from __future__ import annotations

import asyncio
import re
import socket
import threading
from collections import Counter
from types import TracebackType
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session

_MESSAGE_ID = re.compile(rb"^Message-ID:\s*(<[^>]+>)", re.IGNORECASE | re.MULTILINE)


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
        data_replies: list[str] | None = None,
        rcpt_replies: dict[str, str] | None = None,
        hold_data: int = 0,
    ) -> None:
        self.data_replies = list(data_replies or [])
        self.rcpt_replies = dict(rcpt_replies or {})
        self.hold_data = hold_data
        self.accepted: list[Envelope] = []
        self.data_commands = 0
        self._lock = threading.Lock()
        self._held: asyncio.Event | None = None
        self.holding = threading.Event()  # set once a DATA reply is being held
        self.controller = Controller(self, hostname="127.0.0.1", port=free_port())

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

    @property
    def message_ids(self) -> list[str]:
        with self._lock:
            contents = [e.original_content or b"" for e in self.accepted]
        ids = []
        for content in contents:
            match = _MESSAGE_ID.search(content)
            ids.append(match.group(1).decode() if match else "")
        return ids

    def id_counts(self) -> Counter[str]:
        return Counter(self.message_ids)

    @property
    def recipients(self) -> list[str]:
        with self._lock:
            return [r for e in self.accepted for r in e.rcpt_tos]

    # ------------------------------------------------------------------ handlers

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: Any
    ) -> str:
        reply = self.rcpt_replies.get(address)
        if reply is not None:
            return reply
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        with self._lock:
            self.data_commands += 1
            scripted = self.data_replies.pop(0) if self.data_replies else None
        if scripted is not None:
            return scripted
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
