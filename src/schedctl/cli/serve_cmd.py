"""`schedctl serve`: the web app (unsubscribe, status pages, badges, health) in waitress."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

import click

from schedctl.cli.params import WholeNumber, option
from schedctl.cli.runtime import CommandResult, command, current, run_command
from schedctl.errors import ConfigError, UsageError

if TYPE_CHECKING:
    import socket

    from schedctl.db.database import Database

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8080
# A host name as RFC 1123 spells one: dot-separated labels of letters, digits, '-'.
_HOST_NAME = re.compile(r"(?=.{1,253}$)[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
                        r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*")  # fmt: skip


def check_host(host: str) -> bool:
    """Validate a --host (an IP address or a host name); whether it is loopback only.

    Only ``localhost`` and loopback addresses count: another name may resolve to
    anything, so without a token it is refused.
    """
    import ipaddress  # here: no other command pays for it

    text = host.strip()
    try:
        return ipaddress.ip_address(text).is_loopback
    except ValueError:
        pass
    if not _HOST_NAME.fullmatch(text):
        raise UsageError(f"invalid --host {host!r} (an IP address or a host name)")
    return text.lower() == "localhost"


@option(
    "--host",
    metavar="HOST",
    default=DEFAULT_HOST,
    help="Address to listen on. Anything but loopback needs [web] token.",
)
@option(
    "--port",
    metavar="PORT",
    type=WholeNumber(min=1, max=65535),
    default=DEFAULT_PORT,
    help="TCP port to listen on.",
)
def serve_command(host: str, port: int) -> None:
    """Serve the web app: unsubscribe links, status pages, badges and /healthz.

    Runs in waitress until stopped (Ctrl-C or SIGTERM). The status pages and badges
    need `Authorization: Bearer TOKEN` with the [web] token (SCHEDCTL_WEB_TOKEN);
    without a token only a loopback address is served. [web] account limits the
    pages to one account. Reads only: records no heartbeat.
    """
    loopback = check_host(host)
    runtime = current()
    settings = runtime.settings
    if settings.web_token is None and not loopback:
        raise UsageError(
            f"refusing to serve on {host.strip()} without a [web] token"
            " (set SCHEDCTL_WEB_TOKEN or [web] token, or serve on 127.0.0.1)"
        )

    def work(db: Database) -> CommandResult:
        from schedctl.web import make_application

        app = make_application(settings, db)
        server = _listen(app, host.strip(), port)
        url = f"http://{_url_host(host.strip())}:{port}/"
        account = settings.web_account
        data = {"url": url, "account": account, "token_required": settings.web_token is not None}
        scope = f" (account {account})" if account else ""
        runtime.output.result(data, f"serving {url}{scope}; Ctrl-C stops")
        import sys

        sys.stdout.flush()
        _run_until_stopped(server)
        return CommandResult(data)

    run_command("serve", work, record=False)


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def _listen(app: object, host: str, port: int) -> object:
    """A waitress server on host:port (not yet serving); ConfigError if it cannot
    bind (the port is taken, the address is not this host's). The sockets are bound
    here, before waitress starts its threads, so a refusal leaves nothing open."""
    from waitress.server import create_server

    sockets = _bind(host, port)
    # waitress drops Forwarded and X-Forwarded-* from a proxy it does not trust (none
    # is); kept, they tell the status pages a request came through one (403 without
    # a [web] token).
    return create_server(
        app, sockets=sockets, ident="schedctl", threads=4, clear_untrusted_proxy_headers=False
    )


def _bind(host: str, port: int) -> list[socket.socket]:
    """Bound sockets for every address ``host`` names (``localhost``: IPv4 and IPv6)."""
    import socket

    try:
        found = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise ConfigError(f"cannot listen on {host}:{port}: {exc.strerror}") from None
    bound: list[socket.socket] = []
    try:
        for family, kind, proto, _, address in dict.fromkeys(found):
            sock = socket.socket(family, kind, proto)
            bound.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.bind(address)
    except OSError as exc:
        for sock in bound:
            sock.close()
        raise ConfigError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    return bound


def _run_until_stopped(server: object) -> None:
    """Serve until Ctrl-C or SIGTERM, then close the listening socket."""
    import signal

    def stop(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        server.run()  # type: ignore[attr-defined]  # returns on KeyboardInterrupt
    finally:
        signal.signal(signal.SIGTERM, previous)


def register(app: click.Group) -> None:
    command(app, "serve")(serve_command)
