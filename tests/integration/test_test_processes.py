"""The suite's forked `schedctl` processes behave as started ones do: their own pid,
streams, environment, directory and exit status, killed alone by SIGKILL, many at
once; and a process whose environment changes the interpreter is started, not forked."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
from pathlib import Path

from support.cli import SCHEDCTL, process_env
from support.processes import Schedctl, run


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
    assert '"applied"' in upgraded.stdout or "applied" in upgraded.stdout
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
    processes = [
        Schedctl(
            [str(SCHEDCTL), "tick", "--limit", str(-n)] if n % 2 else [str(SCHEDCTL), "--version"],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for n in range(12)
    ]
    results = [(p.args, *p.communicate(timeout=60), p.returncode) for p in processes]

    for args, out, err, code in results:
        if "--version" in args:
            assert (code, out.startswith("schedctl ")) == (0, True), err
        else:
            assert (code, out, "--limit" in err) == (2, "", True), (args, err)
    assert len({p.pid for p in processes}) == 12


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
