"""Dispatch throughput: messages/second from the outbox to a loopback SMTP server.

N due messages in a fresh outbox, sent to aiosmtpd on loopback (running in this
process; every measured sender runs in a fresh child process, so the two do not share
a GIL). Each figure is the median of --runs rounds, beside baselines measured in the
same run, so the results read as ratios rather than absolute rates on a noisy machine:

- raw smtplib (the baseline): ``smtplib.SMTP.sendmail(from, to, bytes)`` over one
  connection, every message's bytes built before the clock starts -- the transport
  alone, the floor for this work;
- dispatch_due on SQLite and PostgreSQL, as ``tick`` runs it (claim in batches,
  build, send, record each outcome + email_log before the next send), over each
  number of ``[smtp] connections`` given with --connections (each connection a
  thread with its own SMTP session and database connection), timed from after the
  database answered; its child's peak memory (VmHWM) is reported too.

Beside each rate, where the CPU went per message, summed over the round: the sender
(the child and the helper it forks, while the clock runs), the SMTP server (this
process, otherwise idle while a child runs) and PostgreSQL (every local postgres
process, the backends that ended included, read from /proc). Their sum bounds the
rate the machine can reach: with C CPUs, at most C / (CPU seconds per message),
however the work is spread.

Extra detail, in this process (left out with --brief):

- dispatch, a connection per message: the same with the connection closed after
  every send (what a backend without reuse would cost);
- raw smtplib, a connection per message: the transport alone, without reuse;
- build_email + raw smtplib: building each message plus sending it, i.e. everything
  dispatch does except the database work (claim, lease, outcome, email_log).

    .venv/bin/python bench/bench_dispatch.py [--messages 500] [--runs 3] [--brief]
        [--connections 1,2,4,8]
        [--postgres postgresql://127.0.0.1:5432/postgres | --postgres none]
        [--json-out FILE]

--json-out appends one JSON line per store and number of connections (see
benchlib.workload_row) for run.py.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import resource
import shutil
import smtplib
import socket
import statistics
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from email.message import EmailMessage
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import sqlalchemy as sa
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session

from benchlib import Samples, emit, peak_kb, rss_kb, run_child, workload_row
from schedctl.config import Settings
from schedctl.db.database import Database
from schedctl.db.migrations import upgrade
from schedctl.db.schema import messages
from schedctl.delivery.dispatch import dispatch_due, mail_backend
from schedctl.delivery.message import build_email, make_message_id
from schedctl.delivery.transport import MailBackend, SendResult

NOW = datetime(2026, 11, 18, 9, 0, tzinfo=UTC)
DOMAIN = "example.com"
SENDER = "bench@example.com"
CPUS = len(os.sched_getaffinity(0))
RAW_NOTE = (
    "raw smtplib.SMTP.sendmail(from, to, bytes) over one connection, the bytes built"
    " before timing; no database"
)


def note(connections: int) -> str:
    """The table's note for dispatch over ``connections`` connections."""
    if connections == 1:
        return f"1 conn (one SMTP and one database connection); baseline {RAW_NOTE}"
    return (
        f"{connections} conns (threads, each with its own SMTP and database connection);"
        " the same baseline, over one connection"
    )


def workload(label: str, connections: int) -> str:
    return f"dispatch: dispatch_due to SMTP, {label}, {connections} conn" + (
        "s" if connections > 1 else ""
    )


class Sink:
    """aiosmtpd handler that accepts and counts."""

    def __init__(self) -> None:
        self.accepted = 0

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        self.accepted += 1
        return "250 OK"


class ConnectionPerMessage:
    """Wraps a backend so that every message opens (and closes) its own connection."""

    def __init__(self, inner: MailBackend) -> None:
        self.inner = inner
        self.name = inner.name

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.inner.close()

    def send(
        self,
        msg: EmailMessage,
        meanwhile: Callable[[], object] | None = None,
        *,
        ready: Callable[[], object] | None = None,
    ) -> SendResult:
        try:
            return self.inner.send(msg, meanwhile, ready=ready)
        finally:
            self.inner.close()

    def close(self) -> None:
        self.inner.close()


def fill_outbox(url: str, count: int) -> None:
    rows = []
    for n in range(count):
        key = f"bench:{n}"
        rows.append(
            {
                "account_id": 1, "type": "REPORT", "priority": "normal",
                "recipient": f"user{n}@example.org", "subject": f"Report {n}",
                "body_text": f"Hello {n}\n" * 20, "body_html": f"<p>Hello {n}</p>" * 20,
                "attachments": None, "subscription": False, "send_at": NOW,
                "status": "scheduled", "attempts": 0, "idempotency_key": key,
                "message_id": make_message_id(key, DOMAIN, installation="bench"),
                "created_at": NOW, "updated_at": NOW,
            }
        )  # fmt: skip
    with Database(url) as db:
        db.transaction(lambda conn: conn.execute(messages.insert(), rows))


def prebuilt(count: int) -> list[EmailMessage]:
    return [
        build_email(
            sender=SENDER,
            recipient=f"user{n}@example.org",
            subject=f"Report {n}",
            text=f"Hello {n}\n" * 20,
            html=f"<p>Hello {n}</p>" * 20,
            message_id=make_message_id(f"bench:{n}", DOMAIN, installation="bench"),
            date=NOW,
        )
        for n in range(count)
    ]


def raw_smtplib(port: int, batch: list[EmailMessage], reuse: bool) -> float:
    start = time.perf_counter()
    conn = smtplib.SMTP("127.0.0.1", port, local_hostname="bench.local", timeout=10)
    try:
        for msg in batch:
            if not reuse:
                conn.quit()
                conn = smtplib.SMTP("127.0.0.1", port, local_hostname="bench.local", timeout=10)
            conn.send_message(msg)
    finally:
        conn.quit()
    return len(batch) / (time.perf_counter() - start)


def build_then_send(port: int, count: int) -> float:
    """Baseline C: build each message (as dispatch does) and send it, no database."""
    start = time.perf_counter()
    batch = prebuilt(count)
    conn = smtplib.SMTP("127.0.0.1", port, local_hostname="bench.local", timeout=10)
    try:
        for msg in batch:
            conn.send_message(msg)
    finally:
        conn.quit()
    return count / (time.perf_counter() - start)


def settings_for(port: int, connections: int = 1) -> Settings:
    return Settings(
        mail_backend="smtp", smtp_host="127.0.0.1", smtp_port=port, smtp_tls="none",
        smtp_timeout=10.0, mail_from=SENDER, smtp_connections=connections,  # no daily quota
    )  # fmt: skip


def child(kind: str, url: str, port: int, count: int, connections: int) -> dict[str, Any]:
    """One measured round in this (fresh) process."""
    if kind == "raw":
        # Built before the clock starts; CRLF lines, since sendmail() sends bytes as is.
        payloads = [
            (SENDER, str(msg["To"]), msg.as_bytes(policy=msg.policy.clone(linesep="\r\n")))
            for msg in prebuilt(count)
        ]
        before = rss_kb()
        cpu_before = _sender_cpu_seconds()
        start = time.perf_counter()
        conn = smtplib.SMTP("127.0.0.1", port, local_hostname="bench.local", timeout=10)
        try:
            for sender, recipient, data in payloads:
                conn.sendmail(sender, recipient, data)
        finally:
            conn.quit()
        elapsed = time.perf_counter() - start
        return {"seconds": elapsed, "before_kb": before, "peak_kb": peak_kb(), "sent": count,
                "sender_cpu": _sender_cpu_seconds() - cpu_before}  # fmt: skip
    settings = settings_for(port, connections)
    with Database(url) as db:
        db.now()
        before = rss_kb()
        cpu_before = _sender_cpu_seconds()
        start = time.perf_counter()
        counts = dispatch_due(db, settings, NOW, limit=count)
        elapsed = time.perf_counter() - start
        sender_cpu = _sender_cpu_seconds() - cpu_before
    return {"seconds": elapsed, "before_kb": before, "peak_kb": peak_kb(),
            "sent": counts["messages_sent"], "sender_cpu": sender_cpu}  # fmt: skip


def _cpu_seconds(who: int = resource.RUSAGE_SELF) -> float:
    usage = resource.getrusage(who)
    return usage.ru_utime + usage.ru_stime


def _sender_cpu_seconds() -> float:
    """CPU seconds of this process and of its children (the message-writing helper,
    which dispatch kills as it ends: waited for here, so that it is counted)."""
    for helper in multiprocessing.active_children():
        helper.join(timeout=10)
    return _cpu_seconds() + _cpu_seconds(resource.RUSAGE_CHILDREN)


def postgres_cpu_seconds() -> float | None:
    """CPU seconds of every postgres process on this machine, the backends that ended
    included (the postmaster's reaped children); None when none can be read."""
    ticks, seen = 0, False
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat", encoding="ascii") as stat:
                text = stat.read()
        except OSError:
            continue
        name = text[text.index("(") + 1 : text.rindex(")")]
        if name != "postgres":
            continue
        fields = text[text.rindex(")") + 2 :].split()
        ticks += sum(int(f) for f in fields[11:15])  # utime, stime, cutime, cstime
        seen = True
    return ticks / os.sysconf("SC_CLK_TCK") if seen else None


class CpuSplit:
    """Where one round's CPU went, per message (µs): see the module docstring."""

    def __init__(self) -> None:
        self.server = _cpu_seconds()
        self.database = postgres_cpu_seconds()

    def per_message(self, result: dict[str, Any], count: int, database: bool) -> dict[str, float]:
        """The round's split, once its child (``result``) has ended."""
        then = CpuSplit()
        split = {
            "sender": result["sender_cpu"],
            "server": then.server - self.server,
            "database": 0.0,
        }
        if database and self.database is not None and then.database is not None:
            split["database"] = then.database - self.database
        return {part: seconds / count * 1e6 for part, seconds in split.items()}


def round_child(
    kind: str,
    new_database: Callable[[], tuple[str, Callable[[], None]]] | None,
    port: int,
    count: int,
    connections: int = 1,
) -> dict[str, Any]:
    """One round in a fresh process (dispatch: on a fresh outbox of `count`), checked."""
    url, cleanup = ("", lambda: None) if new_database is None else new_database()
    try:
        if new_database is not None:
            fill_outbox(url, count)
        cpu = CpuSplit()
        result = run_child(__file__, "--child", kind, url, str(port), str(count), str(connections))
        result["cpu"] = cpu.per_message(result, count, url.startswith("postgresql"))
        left = 0
        if new_database is not None:
            with Database(url) as db:
                left = db.scalar(
                    sa.select(sa.func.count())
                    .select_from(messages)
                    .where(messages.c.status != "sent")
                )
        if result["sent"] != count or left:
            raise SystemExit(f"{kind}: not every message was sent: {result}, {left} left")
    finally:
        cleanup()
    return result


def dispatch_rate(
    new_database: Callable[[], tuple[str, Callable[[], None]]],
    settings: Settings,
    count: int,
    reuse: bool,
) -> float:
    url, cleanup = new_database()
    try:
        fill_outbox(url, count)
        backend = mail_backend(settings)
        if not reuse:
            backend = ConnectionPerMessage(backend)
        with Database(url) as db:
            start = time.perf_counter()
            counts = dispatch_due(db, settings, NOW, limit=count, backend=backend)
            elapsed = time.perf_counter() - start
            left = db.scalar(
                sa.select(sa.func.count()).select_from(messages).where(messages.c.status != "sent")
            )
        if counts["messages_sent"] != count or left:
            raise RuntimeError(f"not every message was sent: {counts}")
        return count / elapsed
    finally:
        cleanup()


def sqlite_databases(tmp: Path) -> Callable[[], tuple[str, Callable[[], None]]]:
    template = tmp / "template.db"
    with Database(f"sqlite:///{template}") as db:
        upgrade(db)
    counter = iter(range(1_000_000))

    def new() -> tuple[str, Callable[[], None]]:
        path = tmp / f"run{next(counter)}.db"
        shutil.copyfile(template, path)
        return f"sqlite:///{path}", lambda: None

    return new


def postgres_databases(admin_url: str) -> Callable[[], tuple[str, Callable[[], None]]] | None:
    try:
        import psycopg

        libpq = admin_url.replace("postgresql+psycopg://", "postgresql://")
        template = f"schedctl_bench_dispatch_{os.getpid()}"
        with psycopg.connect(libpq, autocommit=True, connect_timeout=3) as conn:
            conn.execute(f'CREATE DATABASE "{template}"')  # type: ignore[arg-type]
    except Exception as exc:
        print(f"(PostgreSQL skipped: {type(exc).__name__}: {str(exc).strip()[:80]})")
        return None
    base = admin_url.rsplit("/", 1)[0]
    with Database(f"{base}/{template}") as db:
        upgrade(db)
    counter = iter(range(1_000_000))

    def new() -> tuple[str, Callable[[], None]]:
        name = f"{template}_{next(counter)}"
        with psycopg.connect(libpq, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template}"')  # type: ignore[arg-type]

        def drop() -> None:
            with psycopg.connect(libpq, autocommit=True) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')  # type: ignore[arg-type]

        return f"{base}/{name}", drop

    def drop_template() -> None:
        with psycopg.connect(libpq, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{template}" WITH (FORCE)')  # type: ignore[arg-type]

    new.drop_template = drop_template  # type: ignore[attr-defined]
    return new


def median(samples: list[float]) -> float:
    return statistics.median(samples)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=500)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--postgres", default="postgresql://127.0.0.1:5432/postgres",
                        help="maintenance database URL, or 'none'")  # fmt: skip
    parser.add_argument("--brief", action="store_true", help="leave out the extra variants")
    parser.add_argument(
        "--connections", default="1,2,4,8", help="[smtp] connections to measure, comma-separated"
    )
    parser.add_argument("--json-out", help="append machine-readable rows to this file")
    parser.add_argument("--child", nargs=5, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        kind, url, port, count, connections = args.child
        print(json.dumps(child(kind, url, int(port), int(count), int(connections))))
        return
    count, runs = args.messages, args.runs
    fan = [int(n) for n in args.connections.split(",")]

    sink = Sink()
    port = _free_port()
    controller = Controller(sink, hostname="127.0.0.1", port=port)
    controller.start()
    settings = settings_for(port)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            stores: list[tuple[str, Any]] = [("SQLite", sqlite_databases(Path(tmp)))]
            if args.postgres.lower() != "none":
                pg = postgres_databases(args.postgres)
                if pg is not None:
                    stores.append(("PostgreSQL", pg))
            try:
                raw_samples = Samples()
                variants = [(label, n) for label, _ in stores for n in fan]
                ours_samples = {variant: Samples() for variant in variants}
                databases = dict(stores)
                for _ in range(runs):  # alternating, so that a change in load hits all
                    raw_samples.add(round_child("raw", None, port, count))
                    for label, n in variants:
                        ours_samples[label, n].add(
                            round_child("dispatch", databases[label], port, count, n)
                        )
                raw = raw_samples.summary(count)
                measured = {variant: ours_samples[variant].summary(count) for variant in variants}
                print(f"{count} messages to aiosmtpd on loopback, median of {runs} runs"
                      " (messages/s)\n")  # fmt: skip
                print(f"  raw smtplib sendmail(bytes), one connection       {raw['rate']:8.0f}"
                      "   (baseline)")  # fmt: skip
                print(f"    {cpu_line(raw['cpu'], raw['rate'])}")
                cpu_row(args.json_out, "raw smtplib, 1 conn", count, raw, raw["rate"])
                for (label, n), ours in measured.items():
                    print(f"  dispatch_due on {label:10s}, {n:2d} conn(s)       {ours['rate']:8.0f}"
                          f"   {ours['rate'] / raw['rate']:.2f} x baseline"
                          f"   peak {ours['peak_kb'] / 1024:.1f} MiB")  # fmt: skip
                    print(f"    {cpu_line(ours['cpu'], raw['rate'])}")
                    cpu_row(args.json_out, workload(label, n).removeprefix("dispatch: dispatch_due"
                            " to SMTP, "), count, ours, raw["rate"])  # fmt: skip
                    workload_row(
                        args.json_out,
                        workload=workload(label, n),
                        size=count,
                        unit="messages",
                        rate=ours["rate"],
                        baseline_rate=raw["rate"],
                        peak_kb=ours["peak_kb"],
                        work_kb=ours["work_kb"],
                        note=note(n),
                    )
                if not args.brief:
                    extra_detail(stores, port, settings, count, runs)
            finally:
                for _, new_database in stores:
                    drop = getattr(new_database, "drop_template", None)
                    if drop is not None:
                        drop()
    finally:
        controller.stop()
    print(f"\n(server accepted {sink.accepted} messages in all)")


def cpu_line(cpu: dict[str, float], baseline_rate: float) -> str:
    """The CPU split of a summary, and the rate it bounds."""
    total = sum(cpu.values())
    ceiling = CPUS / total * 1e6
    return (
        f"CPU per message: sender {cpu['sender']:.0f} + SMTP server {cpu['server']:.0f}"
        f" + PostgreSQL {cpu['database']:.0f} = {total:.0f} us; on {CPUS} CPUs at most"
        f" {ceiling:.0f}/s = {ceiling / baseline_rate:.2f} x baseline"
    )


def cpu_row(path: str | None, what: str, count: int, summary: dict[str, Any],
            baseline_rate: float) -> None:  # fmt: skip
    """One row of run.py's CPU table: where a round's CPU went, per message."""
    cpu = summary["cpu"]
    emit(path, kind="cpu", what=what, size=count, cpus=CPUS, rate=summary["rate"],
         baseline_rate=baseline_rate, **{f"{part}_us": us for part, us in cpu.items()})  # fmt: skip


def extra_detail(stores: list[tuple[str, Any]], port: int, settings: Settings, count: int,
                 runs: int) -> None:  # fmt: skip
    """The other variants, in this process: connection reuse, building, no database."""
    print("\nextra detail, in this process:")
    batch = prebuilt(count)
    raw_reuse = median([raw_smtplib(port, batch, reuse=True) for _ in range(runs)])
    raw_fresh = median([raw_smtplib(port, batch, reuse=False) for _ in range(runs)])
    build_and_send = median([build_then_send(port, count) for _ in range(runs)])
    print(f"  raw send_message, one connection              {raw_reuse:8.0f}   (A)")
    print(f"  raw send_message, a connection per message    {raw_fresh:8.0f}   (B)")
    print(f"  build_email + raw send_message, one conn.     {build_and_send:8.0f}   (C)")
    print(f"  reusing the connection saves, raw             x{raw_reuse / raw_fresh:.2f}")
    for label, new_database in stores:
        reuse = median([dispatch_rate(new_database, settings, count, True) for _ in range(runs)])
        fresh = median([dispatch_rate(new_database, settings, count, False) for _ in range(runs)])
        print(f"  dispatch_due on {label}")
        print(f"    connection reused                           {reuse:8.0f}   "
              f"{reuse / raw_reuse:.2f} x A, {reuse / build_and_send:.2f} x C")  # fmt: skip
        print(f"    a connection per message                    {fresh:8.0f}   "
              f"{fresh / raw_fresh:.2f} x B")  # fmt: skip
        print(f"    reusing the connection saves                x{reuse / fresh:.2f}")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


if __name__ == "__main__":
    main()
