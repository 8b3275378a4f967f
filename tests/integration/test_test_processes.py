"""The suite's forked `schedctl` processes behave as started ones do: their own pid,
streams, environment, directory and exit status, killed alone by SIGKILL, many at
once; and a process whose environment changes the interpreter is started, not forked."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest

from support.cli import SCHEDCTL, process_env
from support.processes import Schedctl, _zygote, run


def _parent(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(next(line for line in status.splitlines() if line.startswith("PPid:")).split()[1])


def test_a_forked_command_has_its_own_streams_environment_directory_and_exit_code(
    tmp_path: Path,
) -> None:
    db = tmp_path / "here.db"
    env = process_env(f"sqlite:///{db.name}", {})

    upgraded = run([str(SCHEDCTL), "db", "upgrade", "--json"], env=env, cwd=tmp_path)
    refused = run([str(SCHEDCTL), "tick", "--limit", "0"], env=env, cwd=tmp_path)

    assert upgraded.returncode == 0, upgraded.stderr
    assert json.loads(upgraded.stdout)["applied"]
    assert db.exists()  # the relative URL was resolved in the child's directory
    assert refused.returncode == 2
    assert refused.stdout == ""
    assert refused.stderr.count("\n") == 1
    assert "--limit" in refused.stderr


def test_a_forked_child_is_a_process_of_its_own_that_sigkill_ends(tmp_path: Path) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = process_env(f"sqlite:///{tmp_path / 'serve.db'}", {})
    run([str(SCHEDCTL), "db", "upgrade", "-q"], env=env)
    server = Schedctl(
        [str(SCHEDCTL), "serve", "--port", str(port), "--quiet"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert server.pid not in (os.getpid(), 0)
        assert _parent(server.pid) != os.getpid()  # the zygote's child, not ours
        assert server.poll() is None
        try:
            server.wait(timeout=0.2)
            raise AssertionError("serve ended by itself")
        except subprocess.TimeoutExpired:
            pass
    finally:
        server.kill()
    assert server.wait(timeout=30) == -signal.SIGKILL
    server.communicate(timeout=30)
    assert server.returncode == -signal.SIGKILL
    assert not Path(f"/proc/{server.pid}").exists()


def test_many_children_at_once_each_get_their_own_result(tmp_path: Path) -> None:
    env = process_env(f"sqlite:///{tmp_path / 'many.db'}", {})
    processes = {
        n: Schedctl(
            [str(SCHEDCTL), "tick", "--limit", str(-n)],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for n in range(1, 13)
    }
    for n, process in processes.items():
        out, err = process.communicate(timeout=60)
        assert (process.returncode, out) == (2, "")
        assert f"'--limit': {-n} is not in the range" in err  # its own error, not another's
    assert len({p.pid for p in processes.values()}) == 12


def test_a_missing_directory_is_refused_as_popen_refuses_it(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        Schedctl([str(SCHEDCTL), "--version"], env=process_env(None, {}), cwd=tmp_path / "gone")


def test_killing_one_child_leaves_its_siblings_and_a_lost_parent_is_replaced(
    tmp_path: Path,
) -> None:
    env = process_env(f"sqlite:///{tmp_path / 'serve.db'}", {})
    run([str(SCHEDCTL), "db", "upgrade", "-q"], env=env)
    servers = [_serve(env) for _ in range(2)]
    zygote = _zygote._process
    assert zygote is not None
    servers[0].kill()
    assert servers[0].wait(timeout=30) == -signal.SIGKILL
    assert servers[1].poll() is None
    assert zygote.poll() is None

    zygote.kill()  # the parent dies: its running child can still be killed
    zygote.wait(timeout=30)
    servers[1].kill()
    deadline = time.monotonic() + 30
    while Path(f"/proc/{servers[1].pid}").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not Path(f"/proc/{servers[1].pid}").exists()
    with pytest.raises(EOFError):
        servers[1].wait(timeout=30)  # its status went with the parent
    servers[1].returncode = -signal.SIGKILL  # (so that Popen's clean-up leaves it)
    for server in servers:
        server.communicate(timeout=30)

    again = run([str(SCHEDCTL), "--version"], env=env)  # a new parent is started
    assert again.returncode == 0
    assert _zygote._process is not zygote


def _serve(env: dict[str, str]) -> Schedctl:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return Schedctl(
        [str(SCHEDCTL), "serve", "--port", str(port), "--quiet"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_an_environment_that_changes_the_interpreter_is_started_not_forked(
    tmp_path: Path,
) -> None:
    env = process_env(None, {"PYTHONPATH": str(tmp_path)})
    (tmp_path / "sitecustomize.py").write_text("import sys; sys.stderr.write('site ran\\n')\n")

    process = Schedctl(
        [str(SCHEDCTL), "--version"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    out, err = process.communicate(timeout=60)

    assert process.returncode == 0
    assert err == "site ran\n"
    assert out.startswith("schedctl ")
