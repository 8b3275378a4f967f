"""Slack webhook and ping against a real HTTP server on loopback (no mocked network)."""

from __future__ import annotations

import json
import logging
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from schedctl.webhook import ping, post_slack_alert

SECRET = "B0000SECRET/XyZsecretToken123"


@dataclass
class Seen:
    method: str
    path: str
    body: bytes
    headers: dict[str, str]


@dataclass
class Script:
    """The server's replies, in order (the last one repeats), and what it saw."""

    replies: list[tuple[int, dict[str, str]]] = field(default_factory=list)
    requests: list[Seen] = field(default_factory=list)
    delay: float = 0.0
    lock: threading.Lock = field(default_factory=threading.Lock)
    done: threading.Event = field(default_factory=threading.Event)

    def next_reply(self) -> tuple[int, dict[str, str]]:
        with self.lock:
            if len(self.replies) > 1:
                return self.replies.pop(0)
            return self.replies[0] if self.replies else (200, {})


class Server:
    def __init__(self, script: Script) -> None:
        self.script = script
        handler = self._handler_class(script)
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(
            target=self.httpd.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True
        )

    @staticmethod
    def _handler_class(script: Script) -> type[BaseHTTPRequestHandler]:
        class Handler(BaseHTTPRequestHandler):
            def _serve(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                with script.lock:
                    script.requests.append(
                        Seen(self.command, self.path, body, dict(self.headers.items()))
                    )
                if script.delay:
                    script.done.wait(script.delay)
                status, headers = script.next_reply()
                reply = b"ok" if status < 300 else b"error"
                try:
                    self.send_response(status)
                    for name, value in headers.items():
                        self.send_header(name, value)
                    self.send_header("Content-Length", str(len(reply)))
                    self.end_headers()
                    self.wfile.write(reply)
                except OSError:
                    pass  # the client gave up (timeout test)

            do_GET = _serve
            do_POST = _serve

            def log_message(self, format: str, *args: object) -> None:
                pass

        return Handler

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/services/T0000/{SECRET}"

    def __enter__(self) -> Server:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.script.done.set()
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join()


@pytest.fixture
def script() -> Script:
    return Script()


@pytest.fixture
def server(script: Script) -> Iterator[Server]:
    with Server(script) as running:
        yield running


@pytest.fixture(autouse=True)
def _url_never_logged(caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    caplog.set_level(logging.DEBUG, logger="schedctl")
    yield
    for record in caplog.records:
        assert "XyZsecretToken123" not in record.getMessage()
        assert "/services/" not in record.getMessage()


def test_200_is_true(server: Server, script: Script) -> None:
    blocks = [{"type": "section", "text": {"type": "mrkdwn", "text": "*90%*"}}]

    assert post_slack_alert(server.url, "Mail quota at 90%", blocks) is True

    [seen] = script.requests
    assert seen.method == "POST"
    assert seen.path == f"/services/T0000/{SECRET}"
    assert seen.headers["Content-Type"].startswith("application/json")
    assert json.loads(seen.body) == {"text": "Mail quota at 90%", "blocks": blocks}


def test_text_only_payload_has_no_blocks(server: Server, script: Script) -> None:
    assert post_slack_alert(server.url, "hello") is True
    assert json.loads(script.requests[0].body) == {"text": "hello"}


def test_429_waits_retry_after_then_succeeds(server: Server, script: Script) -> None:
    script.replies = [(429, {"Retry-After": "0"}), (200, {})]

    assert post_slack_alert(server.url, "x", backoff=5.0) is True  # Retry-After, not backoff
    assert len(script.requests) == 2


def test_400_is_false_without_retry(
    server: Server, script: Script, caplog: pytest.LogCaptureFixture
) -> None:
    script.replies = [(400, {})]

    assert post_slack_alert(server.url, "x", backoff=0.01) is False
    assert len(script.requests) == 1
    assert "HTTP 400" in caplog.text
    assert "127.0.0.1" in caplog.text  # the host is named, the path is not


def test_500_is_retried_then_false(
    server: Server, script: Script, caplog: pytest.LogCaptureFixture
) -> None:
    script.replies = [(500, {})]

    assert post_slack_alert(server.url, "x", max_attempts=3, backoff=0.01) is False
    assert len(script.requests) == 3
    assert "after 3 attempts" in caplog.text


def test_503_then_200_is_true(server: Server, script: Script) -> None:
    script.replies = [(503, {}), (200, {})]

    assert post_slack_alert(server.url, "x", backoff=0.01) is True
    assert len(script.requests) == 2


def test_redirect_is_not_followed(server: Server, script: Script) -> None:
    script.replies = [(302, {"Location": "http://127.0.0.1:1/elsewhere"})]

    assert post_slack_alert(server.url, "x", backoff=0.01) is False
    assert len(script.requests) == 1


def test_timeout_is_false(server: Server, script: Script) -> None:
    script.delay = 2.0

    assert post_slack_alert(server.url, "x", timeout=0.5, max_attempts=2, backoff=0.01) is False
    assert len(script.requests) == 2


def test_refused_port_is_false_without_exception(caplog: pytest.LogCaptureFixture) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    url = f"http://127.0.0.1:{port}/services/T0000/{SECRET}"

    assert post_slack_alert(url, "x", max_attempts=2, backoff=0.01) is False
    assert ping(url, "/fail", max_attempts=1) is False
    assert "ConnectionRefusedError" in caplog.text


def test_not_http_is_false() -> None:
    assert post_slack_alert(f"file:///etc/{SECRET}", "x") is False
    assert ping("not a url at all") is False


@pytest.mark.parametrize(
    ("suffix", "path"),
    [("", ""), ("/start", "/start"), ("/fail", "/fail"), ("fail", "/fail"), ("/0", "/0")],
)
def test_ping_suffixes_hit_the_right_paths(
    server: Server, script: Script, suffix: str, path: str
) -> None:
    assert ping(server.url, suffix) is True
    [seen] = script.requests
    assert seen.method == "GET"
    assert seen.path == f"/services/T0000/{SECRET}{path}"


def test_ping_with_body_posts_it(server: Server, script: Script) -> None:
    assert ping(server.url, "/fail", body=b"tick failed: 3 messages") is True
    [seen] = script.requests
    assert seen.method == "POST"
    assert seen.path.endswith("/fail")
    assert seen.body == b"tick failed: 3 messages"


def test_ping_failure_is_false(server: Server, script: Script) -> None:
    script.replies = [(404, {})]
    assert ping(server.url, backoff=0.01) is False
    assert len(script.requests) == 1


@pytest.mark.parametrize("send", ["ping", "slack"])
def test_an_endpoint_that_trickles_its_answer_is_given_up_after_the_timeout(send: str) -> None:
    """A server that keeps sending a byte now and then never lets a per-read timeout
    fire; each attempt must still end after ``timeout`` (overall), so the job goes on."""
    from support.http_server import ScriptedHTTPServer

    outcome: list[bool] = []
    with ScriptedHTTPServer("trickle") as trickle:
        url = f"{trickle.url}/{SECRET}"
        call = (
            (lambda: ping(url, timeout=0.5, max_attempts=2, backoff=0.01))
            if send == "ping"
            else (lambda: post_slack_alert(url, "quota", timeout=0.5, max_attempts=2, backoff=0.01))
        )
        worker = threading.Thread(target=lambda: outcome.append(call()), daemon=True)
        worker.start()
        worker.join(60)  # generous; the attempts are bounded by their timeout
        finished = not worker.is_alive()
        requests = len(trickle.paths)
    assert finished, "the call is still reading the trickling answer"
    assert outcome == [False]
    assert requests == 2  # each attempt given up, then retried once
