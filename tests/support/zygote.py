"""The parent that `schedctl` test processes are forked from (see support.processes).

Run as ``python zygote.py SOCKET`` by one test worker. It imports schedctl and every
module its commands import, then serves requests on the Unix socket ``SOCKET``: each
request carries a command line, an environment, a working directory and the three
standard streams (as file descriptors), and gets back the pid of a child forked to run
it, then that child's wait status when it ends. The child is a separate process like
any other (its own database connections; a SIGKILL kills it and nothing else), only
without the interpreter start and imports, which are most of a command's cost in the
tests.

Nothing here is threaded: the server is one select loop over the listening socket,
the worker's pipe (end of file: the worker is gone, so is the server) and a pidfd per
running child. A child returns from :func:`serve` to the top level and runs the
command there, so that it ends as a started process would (atexit, threads joined,
streams flushed).
"""

from __future__ import annotations

import contextlib
import gc
import importlib
import json
import os
import pkgutil
import selectors
import socket
import struct
import sys
from typing import Any

# The protocol: a request is its length (HEADER) and its JSON, with the three stream
# descriptors; the answers are the child's pid, then its wait status (INT each).
HEADER = struct.Struct("!I")
INT = struct.Struct("!i")


# Imported by the commands only when they run (the drivers, the dialects they load).
_LAZY = (
    "psycopg",
    "pymysql",
    "sqlalchemy.dialects.postgresql.psycopg",
    "sqlalchemy.dialects.sqlite.pysqlite",
    "sqlalchemy.dialects.mysql.pymysql",
    "sqlalchemy.dialects.oracle",
)


def _preload() -> None:
    """Import every schedctl module and the drivers, so that a child finds them loaded."""
    import schedctl

    for module in pkgutil.walk_packages(schedctl.__path__, "schedctl."):
        if not module.name.endswith(".__main__"):  # (that one runs the command line)
            importlib.import_module(module.name)
    for name in _LAZY:
        importlib.import_module(name)


def _read_request(conn: socket.socket) -> tuple[dict[str, Any], list[int]]:
    data, fds, _flags, _addr = socket.recv_fds(conn, 1 << 16, 3)
    while len(data) < HEADER.size or len(data) < HEADER.size + HEADER.unpack_from(data)[0]:
        more = conn.recv(1 << 16)
        if not more:
            raise EOFError("the request ended early")
        data += more
    (size,) = HEADER.unpack_from(data)
    return json.loads(data[HEADER.size : HEADER.size + size]), fds


def serve(path: str) -> tuple[dict[str, Any], list[int]] | None:
    """Fork a child per request; return the request in the child, None when done."""
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen(64)
    selector = selectors.DefaultSelector()
    selector.register(listener, selectors.EVENT_READ, ("accept",))
    selector.register(sys.stdin.fileno(), selectors.EVENT_READ, ("worker",))
    children: dict[int, socket.socket] = {}  # pidfd: the connection its status goes to
    sys.stdout.write("ready\n")
    sys.stdout.flush()
    while True:
        for key, _events in selector.select():
            kind, *rest = key.data
            if kind == "worker":
                if not os.read(sys.stdin.fileno(), 4096):
                    return None
            elif kind == "accept":
                conn, _ = listener.accept()
                try:
                    request, fds = _read_request(conn)
                except (OSError, EOFError, ValueError):
                    conn.close()  # a test that gave up before its request was whole
                    continue
                if len(fds) != 3:
                    for fd in fds:
                        os.close(fd)
                    conn.close()
                    continue
                pid = os.fork()
                if pid == 0:
                    selector.close()
                    listener.close()
                    for pidfd, other in children.items():
                        os.close(pidfd)
                        other.close()
                    conn.close()
                    return request, fds
                for fd in fds:
                    os.close(fd)
                pidfd = os.pidfd_open(pid)
                children[pidfd] = conn
                selector.register(pidfd, selectors.EVENT_READ, ("child", pid))
                with contextlib.suppress(OSError):  # its status is still reaped below
                    conn.sendall(INT.pack(pid))
            else:
                (pid,) = rest
                _, status = os.waitpid(pid, 0)
                selector.unregister(key.fd)
                os.close(key.fd)
                conn = children.pop(key.fd)
                with contextlib.suppress(OSError):  # the test may have stopped listening
                    conn.sendall(INT.pack(status))
                conn.close()


def run_child(request: dict[str, Any], fds: list[int]) -> None:
    """Become the requested `schedctl` process (never returns)."""
    for target, fd in enumerate(fds):
        os.dup2(fd, target)
    for fd in set(fds):
        if fd > 2:
            os.close(fd)
    os.chdir(request["cwd"])
    os.environ.clear()
    os.environ.update(request["env"])
    sys.argv = request["argv"]
    from schedctl.cli import main

    main()


if __name__ == "__main__":
    # A console script's first path entry is its own directory, the venv's bin, not
    # this file's (whose neighbours must not shadow anything a command imports).
    sys.path[0] = os.path.dirname(sys.executable)
    _preload()
    gc.freeze()
    served = serve(sys.argv[1])
    if served is not None:
        run_child(*served)
