"""A scripted HTTP server on loopback for the side channels (Slack webhook, pings).

``mode`` says how it answers every request: ``ok`` (200), ``500``, ``429`` (with
``Retry-After``), ``500/429``: the two by turns (500 to the first request, 429 to
the second, ...), ``hang``: it reads the request and never answers, holding the
connection open until ``close()``, or ``trickle``: it starts a 200 answer and then
sends one more byte of a header every 0.2 s until ``close()`` (a client whose
timeout applies to each read alone never times out); ``hang/trickle``: the two by
turns. Every request is recorded (method, path, body),
the ones it never answered included.
"""

from __future__ import annotations

import http.server
import threading

MODES = ("ok", "500", "429", "500/429", "hang", "trickle", "hang/trickle")


class ScriptedHTTPServer:
    def __init__(self, mode: str = "ok", *, retry_after: str = "1") -> None:
        if mode not in MODES:
            raise ValueError(mode)
        self.mode = mode
        self.requests: list[tuple[str, str, bytes]] = []
        self.authorizations: list[str | None] = []  # each request's Authorization header
        self._released = threading.Event()
        self._lock = threading.Lock()
        recorder = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def _answer(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                with recorder._lock:
                    recorder.requests.append((self.command, self.path, body))
                    recorder.authorizations.append(self.headers.get("Authorization"))
                    turn = len(recorder.requests)
                mode = recorder.mode
                if mode == "hang/trickle":
                    mode = "hang" if turn % 2 else "trickle"
                if mode == "hang":
                    recorder._released.wait(300)
                    self.close_connection = True
                    return
                if mode == "trickle":
                    self.close_connection = True
                    self.wfile.write(b"HTTP/1.1 200 OK\r\nX-Trickle: ")
                    while not recorder._released.wait(0.2):
                        try:
                            self.wfile.write(b"a")
                            self.wfile.flush()
                        except OSError:
                            return
                    return
                status = {"ok": 200, "500": 500, "429": 429}.get(recorder.mode, 0)
                if recorder.mode == "500/429":
                    status = 500 if turn % 2 else 429
                self.send_response(status)
                if status == 429:
                    self.send_header("Retry-After", retry_after)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok" if status == 200 else b"no")

            do_GET = do_POST = do_HEAD = _answer

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    @property
    def paths(self) -> list[str]:
        with self._lock:
            return [path for _, path, _ in self.requests]

    def close(self) -> None:
        self._released.set()
        self.server.shutdown()
        self.server.server_close()
        self.thread.join()

    def __enter__(self) -> ScriptedHTTPServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
