"""`schedctl` processes for the tests where processes matter, started cheaply.

:class:`Schedctl` is a :class:`subprocess.Popen` whose child is forked from a parent
that has already imported schedctl (support/zygote.py, one per test worker) instead of
a new interpreter: a separate process with its own database connections, pid, streams
and exit status, that a SIGKILL kills like any other, at a few milliseconds instead of
the 0.4 s of CPU an interpreter start and schedctl's imports cost. What only an
interpreter start can show is tested on started processes: start-up itself
(test_startup_imports), the console script and ``PYTHONPATH`` plugins
(``run_cli``), and the fault suite's kill points, which hook module imports — a
process whose environment sets any ``PYTHON*`` variable other than the worker's is
therefore started, not forked; so is one given what only a started process can be
given (``pass_fds``, a new session, ``preexec_fn`` ...).

Known differences from a started process, none of which the tests rely on: a forked
child has every schedctl module and driver imported already (a module that fails to
import when a command loads it late shows only in the started processes of
``cli_process``: start-up, the examples as run, the bad-input sweep's sample), shares
the zygote's string hash seed, and reads ``/dev/null`` when no ``stdin`` is given. Its
status reaches the test from the zygote, which has reaped it: a test must not signal a
pid it has already seen end.
"""

from __future__ import annotations

import atexit
import contextlib
import errno
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
from pathlib import Path
from typing import Any

from support import zygote
from support.cli import SCHEDCTL

# The worker's environment as collection found it, before any test patched it: the
# zygote's, and what a forked child's interpreter settings (PYTHON*) must match.
_WORKER_ENV = {k: v for k, v in os.environ.items() if not k.startswith("SCHEDCTL_")}


class _Zygote:
    """This worker's forking parent, started on first use and ended with the worker."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._process: subprocess.Popen[bytes] | None = None
        self._path = ""
        self._directory = ""
        atexit.register(self._stop)

    def path(self) -> str:
        with self._lock:
            if self._process is None or self._process.poll() is not None:
                self._start()
            return self._path

    def _start(self) -> None:
        self._stop()  # a parent that died: its pipes and socket go with it
        self._directory = tempfile.mkdtemp(prefix="schedctl-zygote-")
        self._path = os.path.join(self._directory, "socket")
        self._process = subprocess.Popen(
            [sys.executable, zygote.__file__, self._path],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=_WORKER_ENV,
        )
        assert self._process.stdout is not None
        ready = self._process.stdout.readline()
        if ready != b"ready\n":
            raise RuntimeError(f"the zygote did not start: {ready!r}")

    def _stop(self) -> None:
        if self._process is not None:
            for pipe in (self._process.stdin, self._process.stdout):
                if pipe is not None:
                    pipe.close()  # stdin's end of file: the zygote exits
            self._process.wait(timeout=10)
        if self._directory:
            shutil.rmtree(self._directory, ignore_errors=True)


def _forks(env: dict[str, str] | None) -> bool:
    """Whether a process with ``env`` behaves as a forked child of the zygote."""
    env = dict(os.environ) if env is None else env
    names = {k for k in (*env, *_WORKER_ENV) if k.startswith("PYTHON")}
    return all(env.get(k) == _WORKER_ENV.get(k) for k in names)


_zygote = _Zygote()
_STARTED_ONLY = {
    "executable", "preexec_fn", "pass_fds", "shell", "start_new_session", "process_group",
    "user", "group", "extra_groups", "umask", "restore_signals", "close_fds",
}  # fmt: skip


class Schedctl(subprocess.Popen[str]):
    """``subprocess.Popen([SCHEDCTL, ...], ...)``, the child forked from the zygote.

    Called like Popen (``env``, ``cwd``, ``stdin``/``stdout``/``stderr``, ``text``);
    ``poll``, ``wait``, ``communicate``, ``kill`` and ``send_signal`` behave as
    Popen's. The wait status comes from the zygote, the child's parent.
    """

    _status: socket.socket | None = None

    def __init__(self, args: list[str], **kwargs: Any) -> None:
        if args[0] != str(SCHEDCTL):
            raise ValueError(f"not a schedctl command line: {args!r}")
        # What only a started process can be given is started, as Popen would.
        special = set(kwargs) & _STARTED_ONLY
        self._fork = not special and _forks(kwargs.get("env"))
        cwd = kwargs.get("cwd")
        if self._fork and cwd is not None and not os.path.isdir(cwd):
            raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), os.fspath(cwd))
        super().__init__(args, **kwargs)

    def _execute_child(  # type: ignore[override]
        self,
        args: list[str],
        executable: Any,
        preexec_fn: Any,
        close_fds: bool,
        pass_fds: Any,
        cwd: Any,
        env: Any,
        startupinfo: Any,
        creationflags: int,
        shell: bool,
        p2cread: int,
        p2cwrite: int,
        c2pread: int,
        c2pwrite: int,
        errread: int,
        errwrite: int,
        *rest: Any,
    ) -> None:
        if not self._fork:
            super()._execute_child(  # type: ignore[misc]
                args, executable, preexec_fn, close_fds, pass_fds, cwd, env, startupinfo,
                creationflags, shell, p2cread, p2cwrite, c2pread, c2pwrite, errread,
                errwrite, *rest,
            )  # fmt: skip
            return
        devnull = os.open(os.devnull, os.O_RDONLY) if p2cread == -1 else -1
        streams = [
            p2cread if p2cread != -1 else devnull,
            c2pwrite if c2pwrite != -1 else 1,
            errwrite if errwrite != -1 else 2,
        ]
        request = json.dumps({
            "argv": [str(a) for a in args],
            "env": dict(os.environ if env is None else env),
            "cwd": os.fspath(cwd) if cwd is not None else os.getcwd(),
        }).encode()  # fmt: skip
        conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            conn.connect(_zygote.path())
            socket.send_fds(conn, [zygote.HEADER.pack(len(request)) + request], streams)
            (self.pid,) = zygote.INT.unpack(_read(conn, zygote.INT.size))
        except BaseException:
            conn.close()
            raise
        finally:
            # The child holds its own copies now; the parent keeps only its ends.
            self._close_pipe_fds(  # type: ignore[attr-defined]
                p2cread, p2cwrite, c2pread, c2pwrite, errread, errwrite
            )
            if devnull != -1:
                os.close(devnull)
        self._child_created = True
        self._status = conn

    def _try_wait(self, wait_flags: int) -> tuple[int, int]:
        if not self._fork:
            return super()._try_wait(wait_flags)  # type: ignore[misc,no-any-return]
        if self._status is None:
            raise EOFError("the zygote is gone, and the child's exit status with it")
        self._status.setblocking(not wait_flags & os.WNOHANG)
        try:
            data = _read(self._status, zygote.INT.size)
        except BlockingIOError:
            return 0, 0
        except (EOFError, OSError):
            self._status.close()
            self._status = None
            raise
        self._status.close()
        self._status = None
        return self.pid, zygote.INT.unpack(data)[0]

    def _internal_poll(self, _deadstate: int | None = None, **_: Any) -> int | None:
        if not self._fork:
            return super()._internal_poll(_deadstate)  # type: ignore[misc,no-any-return]
        if self.returncode is None and self._waitpid_lock.acquire(False):  # type: ignore[attr-defined]
            try:
                if self.returncode is None:
                    pid, status = self._try_wait(os.WNOHANG)
                    if pid == self.pid:
                        self._handle_exitstatus(status)  # type: ignore[attr-defined]
            except (EOFError, OSError):
                # The zygote is gone with the status. Popen's own clean-up (and __del__)
                # passes a dead state; any other caller is told.
                if _deadstate is None:
                    raise
                self.returncode = _deadstate
            finally:
                self._waitpid_lock.release()  # type: ignore[attr-defined]
        return self.returncode

    def send_signal(self, sig: int) -> None:
        """Popen's, except that a child whose zygote is gone is still signalled."""
        if not self._fork:
            return super().send_signal(sig)
        with contextlib.suppress(EOFError, OSError):
            self.poll()
        if self.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, sig)
        return None


def _read(conn: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        part = conn.recv(size - len(data))
        if not part:
            raise EOFError("the zygote closed the connection")
        data += part
        conn.setblocking(True)  # the rest of a started message follows at once
    return data


def run(
    args: list[str], *, env: dict[str, str], timeout: float = 60, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    """:func:`subprocess.run` with a forked schedctl: output captured, text."""
    with Schedctl(
        args, env=env, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    ) as process:
        try:
            out, err = process.communicate(timeout=timeout)
        except BaseException:
            process.kill()
            process.wait()
            raise
    return subprocess.CompletedProcess(args, process.returncode, out, err)
