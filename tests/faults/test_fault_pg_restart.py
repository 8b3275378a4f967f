"""PostgreSQL going away under running commands, and never there at all.

Invariants:

- The server stopped (``pg_ctl stop -m fast``) while `tick`, `digest` and
  `distribute` processes work (distribute copying into tables of that same server),
  then started again: each process exits 75 with one line saying the database
  is unavailable (or 0 if it had finished); what the tables hold is consistent; the
  next runs complete the work; nothing is lost or done twice. (A process cut off
  after the SMTP server accepted a message and before the outcome was recorded sends
  it again later: the documented exception, counted apart, at most one per process.)
- A database that refuses connections from the start (a closed port; a database of
  the server with ALLOW_CONNECTIONS false): every command exits 75 with one line on
  stderr, and nothing is written anywhere (no table row, no mail).

The stop and restart use a PRIVATE PostgreSQL 15 cluster this test makes (initdb in a
temporary directory, its own port and socket directory), never the shared server;
the fixture always tears it down.
"""

from __future__ import annotations

import contextlib
import json
import os
import pwd
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest
import sqlalchemy as sa

from support import digest_world as dw
from support import fault_ledger
from support.cli import SCHEDCTL
from support.databases import REQUIRE_PG, connect_pg
from support.fault_world import CONNECTIONS, PAST_LEASES, FaultWorld, Size
from support.reconcile import dump
from support.smtp_server import SmtpServer, free_port

# PostgreSQL 15's programs (initdb, pg_ctl); SCHEDCTL_TEST_PG_BIN names another place.
PG_BIN = Path(os.environ.get("SCHEDCTL_TEST_PG_BIN", "/usr/lib/postgresql/15/bin"))
# PostgreSQL refuses to run as root: as root, the cluster belongs to the postgres user.
AS_OWNER = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
COMMANDS = ("tick", "digest", "distribute", "reconcile")
CUT_OFF = ("tick", "digest", "distribute", "tick", "digest")  # running when the server stops


@dataclass
class Cluster:
    """A PostgreSQL 15 cluster of this test's own, run as the postgres OS user."""

    root: Path
    port: int

    @property
    def data(self) -> Path:
        return self.root / "data"

    def pg_ctl(self, *args: str) -> None:
        subprocess.run(
            [*AS_OWNER, str(PG_BIN / "pg_ctl"), "-D", str(self.data),
             "-l", str(self.root / "server.log"), *args],
            check=True, capture_output=True, timeout=120,
        )  # fmt: skip

    def start(self) -> None:
        options = (
            f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=off"
            " -c synchronous_commit=off -c full_page_writes=off"
        )
        self.pg_ctl("-o", options, "-w", "-t", "60", "start")

    def stop(self, mode: str = "fast") -> None:
        self.pg_ctl("-m", mode, "-w", "-t", "60", "stop")

    def url(self, database: str) -> str:
        return f"postgresql+psycopg://root@127.0.0.1:{self.port}/{database}"

    def create_database(self, name: str) -> str:
        with psycopg.connect(
            host="127.0.0.1", port=self.port, user="root", dbname="postgres", autocommit=True
        ) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')  # type: ignore[arg-type]
        return self.url(name)


def _unavailable(reason: str) -> None:
    if REQUIRE_PG:
        pytest.fail(reason)
    pytest.skip(reason)


@pytest.fixture
def cluster() -> Iterator[Cluster]:
    if not (PG_BIN / "initdb").exists():
        _unavailable(f"PostgreSQL 15's initdb is not installed ({PG_BIN / 'initdb'})")
    root = Path(tempfile.mkdtemp(prefix="schedctl-pg-"))
    if AS_OWNER:
        account = pwd.getpwnam("postgres")
        os.chown(root, account.pw_uid, account.pw_gid)
    made = Cluster(root, free_port())
    try:
        subprocess.run(
            [*AS_OWNER, str(PG_BIN / "initdb"), "-D", str(made.data), "-A", "trust",
             "-U", "root", "--no-sync", "-E", "UTF8", "--locale", "C"],
            check=True, capture_output=True, timeout=300,
        )  # fmt: skip
        made.start()
        yield made
    finally:
        if (made.data / "postmaster.pid").exists():  # running, or half started
            with contextlib.suppress(subprocess.CalledProcessError):  # already stopped
                made.stop("immediate")
        shutil.rmtree(root, ignore_errors=True)


def error_lines(stderr: str) -> list[str]:
    """What a process said on stderr, but the dispatcher's warnings about single
    messages it may print before (e.g. a lease lost to the outage)."""
    return [line for line in stderr.splitlines() if "WARNING" not in line]


def test_the_server_restarted_mid_run(cluster: Cluster, smtp: SmtpServer, tmp_path: Path) -> None:
    url = cluster.create_database("schedctl")
    upgrade = subprocess.run(
        [str(SCHEDCTL), "db", "upgrade"],
        env={**os.environ, "SCHEDCTL_DATABASE_URL": url, "NO_COLOR": "1"},
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert upgrade.returncode == 0, upgrade.stderr
    iterations = fault_ledger.soak(1, 5)
    size = Size(schedules=60, users=800, notifications=6000, ids=3000)
    world = FaultWorld("postgresql", url, smtp, tmp_path, size=size, rounds_back=iterations + 1)
    world.env["SCHEDCTL_DB_RETRY_SECONDS"] = "1"
    cut_off = 0
    try:
        for k in range(iterations):
            now = world.round_time(k)
            enough = len(smtp.accepted) + 40
            processes = [world.popen(c, now) for c in CUT_OFF]
            reached = dw.wait_until(lambda: len(smtp.accepted) >= enough, processes)  # noqa: B023
            assert reached, "every process finished before the server could be stopped"
            assert any(p.poll() is None for p in processes), "nothing left running to cut off"
            cluster.stop("fast")
            try:
                done = [world.wait(p) for p in processes]
            finally:
                cluster.start()
            codes = [d.code for d in done]
            assert 75 in codes, [(d.code, d.stderr) for d in done]
            assert set(codes) <= {0, 75}, [(d.code, d.stderr) for d in done]
            for proc in done:
                if proc.code == 75:
                    lines = error_lines(proc.stderr)
                    assert len(lines) == 1, proc.stderr
                    assert lines[0].startswith("schedctl: error: database unavailable"), lines
                    assert "Traceback" not in proc.stderr
                else:
                    world.ran(proc.command, now)
            cut_off += codes.count(75)
            # At most one message per connection of each process cut off between
            # DATA and its record.
            assert len(world.mark_after_data()) <= codes.count(75) * CONNECTIONS
            # What the cut-off runs left is consistent with the model at this moment.
            world.expected.step(world.world, now)
            dw.check_consistent(
                world.world, world.expected, dw.read_tables(world.engine), complete=False
            )
            for command in ("tick", "digest"):
                world.run(command, now)  # the reruns complete
            # (distribute's rerun resumes the day once the dead run's lease is over:
            # in the recovery below.)
        world.recover(world.round_time(iterations - 1) + PAST_LEASES)
        counts = world.check()
    finally:
        world.close()
    counts.record(
        "PostgreSQL restarted under tick, digest, distribute",
        "postgresql",
        "exit 75, one line; consistent; rerun: none lost/twice",
        iterations,
    )
    assert counts.resent_after_data <= cut_off * CONNECTIONS  # one per connection


def _check_refused(world: FaultWorld, smtp: SmtpServer, url: str) -> int:
    """Run every command against ``url``; each must exit 75 with one line. Returns
    how many commands wrote something (mail) anyway."""
    world.env["SCHEDCTL_DATABASE_URL"] = url
    world.env["SCHEDCTL_DB_RETRY_SECONDS"] = "0"  # refused is refused: no retries
    wrote = 0
    for command in COMMANDS:
        proc = world.run(command, world.round_time(0), check=False)
        assert proc.code == 75, (command, proc.code, proc.stderr)
        lines = proc.stderr.splitlines()
        assert len(lines) == 1, (command, proc.stderr)
        assert lines[0].startswith("schedctl: error: database unavailable"), lines
        # --json: the error's JSON on stdout, and nothing else.
        assert json.loads(proc.stdout)["error"]["code"] == 75, proc.stdout
        wrote += len(smtp.accepted)
    return wrote


@pytest.mark.parametrize("how", ["closed port", "connections not allowed"])
@pytest.mark.parametrize("dialect", [pytest.param("postgresql", marks=pytest.mark.postgres)])
def test_a_database_refusing_connections_from_the_start(
    how: str, db_url: str, smtp: SmtpServer, tmp_path: Path, closed_port: int
) -> None:
    tiny = Size(schedules=2, users=10, notifications=40, ids=20, abandoned=2, orphans=1)
    world = FaultWorld("postgresql", db_url, smtp, tmp_path, size=tiny)
    before = dump(db_url)
    name = sa.engine.make_url(db_url).database
    try:
        if how == "closed port":
            url = f"postgresql+psycopg://root@127.0.0.1:{closed_port}/schedctl"
            wrote = _check_refused(world, smtp, url)
        else:
            with connect_pg() as admin:
                admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false')  # type: ignore[arg-type]
            try:
                wrote = _check_refused(world, smtp, db_url)
            finally:
                with connect_pg() as admin:
                    admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')  # type: ignore[arg-type]
        after = dump(db_url)
        changed = sum(len(set(before[t]) ^ set(after[t])) for t in before)
    finally:
        world.close()
    fault_ledger.record(
        f"database refusing connections ({how})",
        "postgresql",
        "every command exits 75, one line, nothing written",
        iterations=len(COMMANDS),
        losses=changed,
        duplicates=wrote,
        note="lost: table rows changed; dup: mails sent" if changed or wrote else "",
    )
    assert changed == 0
    assert wrote == 0
