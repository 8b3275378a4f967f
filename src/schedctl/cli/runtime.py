"""Per-process state shared by the commands: settings, output, the database.

`run_command` is the frame every database command runs in: open the database
(never creating it), check its schema version, run one core function, record its
heartbeat and outcome (no sooner than it writes), send configured pings, and, for
the jobs, tell the alert channels what newly went wrong (schedctl.alerts).
"""

from __future__ import annotations

import functools
import gc
import logging
from collections.abc import Callable
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, TypeVar

import click

from schedctl.cli.output import Output, OutputOptions, error_text
from schedctl.cli.params import Command
from schedctl.errors import DatabaseUnavailable, SchedctlError, UsageError

if TYPE_CHECKING:
    # The database layer (SQLAlchemy and its drivers) and the configuration are imported
    # by the command that uses them, so that --help never pays for them.
    import sqlalchemy as sa

    from schedctl.accounts import AccountRef
    from schedctl.config import Settings
    from schedctl.db.database import Database

log = logging.getLogger("schedctl")


@dataclass
class CommandResult:
    """What a command produced: its JSON document and its exit code."""

    data: dict[str, Any]
    exit_code: int = 0

    @property
    def counts(self) -> dict[str, Any]:
        return {k: v for k, v in self.data.items() if isinstance(v, int | float | str | bool)}


@dataclass
class Runtime:
    flags: dict[str, Any] = field(default_factory=dict)
    output_options: OutputOptions = field(default_factory=OutputOptions)
    _settings: Settings | None = None

    @property
    def settings(self) -> Settings:
        if self._settings is None:
            from schedctl.config import load_settings

            self._settings = load_settings(self.flags)
        return self._settings

    @property
    def output(self) -> Output:
        return Output(self.output_options)

    def settings_masked_url(self) -> str:
        from schedctl.db.engine import mask_url

        return mask_url(self.settings.database_url)

    def open_db(self, url: str | None = None, *, create: bool = False) -> Database:
        """Open the database; a missing SQLite file is created only if `create`."""
        from schedctl.db.database import Database

        settings = self.settings
        db = Database(
            url or settings.database_url, create=create, retry_seconds=settings.db_retry_seconds
        )
        resume_collector()
        return db


_current: ContextVar[Runtime] = ContextVar("schedctl_runtime")

# A schedctl process's start-up (its command's modules, then the database driver and
# SQLAlchemy's dialect) allocates some hundred thousand objects that live as long as
# the process, and hardly any garbage: the cyclic collector, run over and over as
# they pile up, cost an idle `tick` about a sixth of its time. `main` turns it off
# and the first database opened turns it back on, with what start-up built frozen
# out of every later collection (in-process callers of `cli.run` are left alone).
_collector_paused = False


def pause_collector() -> None:
    """Hold the cyclic garbage collector during a process's start-up."""
    global _collector_paused
    if gc.isenabled():
        gc.disable()
        _collector_paused = True


def resume_collector() -> None:
    """Start-up is over: collect again, never scanning what start-up built."""
    global _collector_paused
    if _collector_paused:
        _collector_paused = False
        gc.freeze()
        gc.enable()


def current() -> Runtime:
    """The Runtime of the running command (created on first use)."""
    try:
        return _current.get()
    except LookupError:
        runtime = Runtime()
        _current.set(runtime)
        return runtime


def use(runtime: Runtime) -> None:
    _current.set(runtime)


F = TypeVar("F", bound=Callable[..., Any])
C = TypeVar("C", bound=click.Command)


def output_flags() -> list[click.Option]:
    """--json, --quiet and -v: accepted by schedctl and by every command (SPEC §2)."""
    return [
        click.Option(["--json", "_json"], is_flag=True, help="Print one JSON document on stdout."),
        click.Option(["--quiet", "-q", "_quiet"], is_flag=True, help="Print nothing on success."),
        click.Option(
            ["--verbose", "-v", "_verbose"], is_flag=True, help="Print debug detail on stderr."
        ),
    ]


def with_output_flags(cmd: C) -> C:
    """Let `cmd` accept --json, --quiet and -v after its name (SPEC §2).

    The flags are added after its own options; its callback gets its own
    parameters only, the flags being recorded on the Runtime (a flag given before
    the command's name stays set).
    """
    cmd.params.extend(output_flags())
    func = cmd.callback
    assert func is not None

    @functools.wraps(func)
    def callback(*args: Any, _json: bool, _quiet: bool, _verbose: bool, **kwargs: Any) -> Any:
        options = current().output_options
        options.json |= _json
        options.quiet |= _quiet
        options.verbose |= _verbose
        if options.verbose:
            logging.getLogger("schedctl").setLevel(logging.DEBUG)
        return func(*args, **kwargs)

    cmd.callback = callback
    return cmd


def run_command(
    name: str,
    work: Callable[[Database], CommandResult],
    *,
    needs_schema: bool = True,
    record: bool = True,
) -> CommandResult:
    """Run one database command inside the heartbeat frame.

    ``record=False``: no heartbeat row, no pings and no alerts told, for a run that
    must write nothing at all (`digest --preview`), and is no run of the job either.
    A command that only reads (`commands.READ_ONLY`) is never recorded. A job
    (commands.ALERTING) then tells the alert channels, however it ended -- unless its
    input was refused (nothing written) or the database went away.
    """
    from schedctl.commands import READ_ONLY
    from schedctl.db.migrations import check_schema, current_version

    only_reads = name in READ_ONLY
    record = record and not only_reads
    runtime = current()
    settings = runtime.settings
    ping_url = settings.ping_urls.get(name)
    with runtime.open_db() as db:
        if needs_schema:
            check_schema(db)
        elif not current_version(db):
            # No schema yet (e.g. `db status` before `db upgrade`): nowhere to record.
            return work(db)
        if not record:
            result = work(db)
            if only_reads:
                # Records no heartbeat, but `heartbeat --check` may have found a job red:
                # the channels are told as at any job's end.
                tell_alerts(db, settings, name)
            return result
        if ping_url:
            ping(ping_url, "/start")
        beat = _Heartbeat(db, name, db.server_now())
        try:
            result = work(db)
        except UsageError as exc:
            # Bad input is refused with nothing written (SPEC §2), the heartbeat included;
            # a command that wrote before refusing says so in its row.
            if beat.started:
                beat.finish(exc.exit_code, {"error": _error(settings, exc.message)})
            else:
                beat.cancel()
            if ping_url:
                ping(ping_url, "/fail")
            raise
        except SchedctlError as exc:
            beat.finish(exc.exit_code, {"error": _error(settings, exc.message)})
            if ping_url:
                ping(ping_url, "/fail")
            if not isinstance(exc, DatabaseUnavailable):
                tell_alerts(db, settings, name)
            raise
        except BaseException as exc:
            beat.finish(1, {"error": "internal error"})
            if ping_url:
                ping(ping_url, "/fail")
            if isinstance(exc, Exception):
                tell_alerts(db, settings, name)
            raise
        beat.finish(result.exit_code, result.counts)
        if ping_url:
            ping(ping_url, "" if result.exit_code == 0 else "/fail")
        tell_alerts(db, settings, name)
        return result


def tell_alerts(db: Database, settings: Settings, name: str) -> None:
    """At a job's end: one notification per configured channel of the alerts it has
    not been told yet. Never raises; never changes the exit code."""
    from schedctl.commands import ALERTING

    if name not in ALERTING:
        return
    from schedctl.alerts import notify

    notify(db, settings)


def _error(settings: Settings, message: str) -> str:
    return error_text(settings.redact(message))


class _Heartbeat:
    """One command's heartbeat row, written no sooner than the command writes, stamped
    with the database's clock (SCHEDCTL_NOW, if set, is recorded beside it).

    The ``running`` row goes in with the command's first write transaction, so input
    refused before anything is written leaves no trace (not even a used id); a
    command that writes nothing gets its complete row when it ends. On a database
    this process may only read, a reading command runs unrecorded.
    """

    def __init__(self, db: Database, command: str, started_at: datetime) -> None:
        self.db = db
        self.command = command
        self.started_at = started_at
        self._id: int | None = None
        db.on_first_write(self._insert)

    def _insert(self, conn: sa.Connection) -> None:
        from schedctl import heartbeat

        self._id = heartbeat.insert_run(conn, self.command, self.started_at, self.db.simulated_now)

    @property
    def started(self) -> bool:
        """Whether the ``running`` row has been committed."""
        return self._id is not None and not self.db.first_write_pending

    def cancel(self) -> None:
        self.db.on_first_write(None)

    def finish(self, exit_code: int, counts: dict[str, Any]) -> None:
        import sqlalchemy as sa  # (imported by now: the command has used its database)

        from schedctl import heartbeat
        from schedctl.db.database import first_line

        row = self._id if self.started else None
        self.cancel()
        try:
            if row is None:
                row = heartbeat.start_run(
                    self.db, self.command, self.started_at, self.db.simulated_now
                )
            heartbeat.finish_run(
                self.db, row, finished_at=self.db.server_now(), exit_code=exit_code, counts=counts
            )
        except SchedctlError as exc:
            _not_recorded(row, exit_code, exc.message)
        except sa.exc.DBAPIError as exc:  # (a trigger that fails, a column narrowed by hand)
            _not_recorded(row, exit_code, f"database error: {first_line(exc)}")


def _not_recorded(row: int | None, exit_code: int, why: str) -> None:
    """Say that a heartbeat row (``row``: its id, None if none was written) could not
    be finished."""
    if row is not None and exit_code == 0:
        # The run did its work but its row stays `running` (UPDATE revoked on heartbeats,
        # say): monitoring will judge it by an older success.
        log.warning("the end of this run was not recorded: %s", why)
    else:  # a failure already said, or a reading command on a read-only database
        log.debug("could not record the heartbeat: %s", why)


def scope_to_account(db: Database, account: str | None) -> int:
    """Resolve an --account option and scope `db` to it; the account's id (see
    :func:`scope_to`)."""
    return scope_to(db, account).id


def scope_to(db: Database, account: str | None) -> AccountRef:
    """Resolve an --account option (default: SCHEDCTL_ACCOUNT, else `default`) and
    scope `db` to it.

    Every later transaction on `db` sets the account for PostgreSQL's row-level
    security, so an operator command cannot see another account's rows even if a
    query forgot its own account filter.
    """
    from schedctl.accounts import find_account
    from schedctl.config import SCHEMA

    origin = None
    if account is None and current().settings.account is not None:
        account, origin = current().settings.account, SCHEMA["account"].env_name
    found = db.transaction(lambda conn: find_account(conn, account, origin), read_only=True)
    db.account_id = found.id
    return found


def listing_title(what: str, account: str) -> str:
    """The first line of a list command's table: whose rows it shows."""
    return f"{what} in account {account!r}:"


def ping(url: str, suffix: str) -> None:
    """A healthchecks.io-style ping; its failure is logged, never raised."""
    from schedctl.webhook import ping as send_ping

    send_ping(url, suffix)


def command(group: click.Group, name: str) -> Callable[[F], F]:
    """Register the decorated function as command `name` of `group`: its docstring
    is its help, the parameters declared above it (cli.params) and the output flags
    its options."""

    def register(func: F) -> F:
        group.add_command(with_output_flags(click.command(name, cls=Command)(func)))
        return func

    return register
