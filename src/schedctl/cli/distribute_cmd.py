"""`schedctl distribute`: the day's users to the active campaigns and groups, once."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import click

from schedctl.cli.params import flag, option
from schedctl.cli.runtime import CommandResult, command, current, run_command

if TYPE_CHECKING:
    from schedctl.db.database import Database


@flag(
    "--preview",
    help="Show the active campaigns, the users and the counts per campaign and group"
    " a run would distribute (IDs masked); write nothing anywhere.",
)
@option(
    "--date",
    "on_date",
    metavar="YYYY-MM-DD",
    help="The business date to distribute (default: today in [distribute] tz); an"
    " earlier date is a rerun or a backfill.",
)
def distribute_command(preview: bool, on_date: str | None) -> int:
    """Distribute the day's users to the active campaigns and groups, exactly once."""
    from schedctl.cli.output import error_line
    from schedctl.distribute import run as distribution
    from schedctl.values import parse_date

    runtime = current()
    settings = runtime.settings
    requested = None if on_date is None else parse_date(on_date)
    distribution.job_from(settings)  # what is missing is refused before anything is opened

    def work(db: Database) -> CommandResult:
        now = db.now()
        day = distribution.business_date(settings, now, requested)
        if preview:
            return CommandResult(distribution.preview_distribute(db, settings, day))
        with _progress(runtime.output) as progress:
            outcome = distribution.run_distribute(db, settings, now, day, progress)
        return CommandResult(outcome.data, exit_code=outcome.exit_code)

    # A preview writes nothing at all, not even the heartbeat: it is no run of the job.
    result = run_command("distribute", work, record=not preview)
    data = result.data
    if result.exit_code:
        error_line(f"distribute {data['date']}: {data['status']}: {data['reason']}")
    if preview:
        _show_preview(data)
    else:
        runtime.output.result(data, summary(data))
    return result.exit_code


def summary(data: dict[str, Any]) -> str:
    """The human summary of a run: one line, and one per campaign and destination."""
    status, day = data["status"], data["date"]
    lines = [f"distribution {day}: {status}" + (f" ({data['reason']})" if data["reason"] else "")]
    if data["planned"]:
        lines[0] += f"; {data['planned']} users in {len(data['campaigns'])} campaign(s)"
    for campaign in data["campaigns"]:
        groups = " ".join(f"{g}={n}" for g, n in campaign["groups"].items())
        lines.append(f"  {campaign['id']}: {campaign['users']} ({groups})")
    for d in data["destinations"]:
        lines.append(
            f"  {d['name']}: {d['inserted']} inserted, {d['existing']} already there,"
            f" of {d['rows']} ({d['status']})"
        )
    return "\n".join(lines)


def _show_preview(data: dict[str, Any]) -> None:
    groups = data["groups"]
    rows = [[c["id"], c["users"], *(c["groups"][g] for g in groups)] for c in data["campaigns"]]
    active = {c["id"]: c for c in data["active_campaigns"]}
    rows = [[r[0], active[r[0]]["start"], active[r[0]]["end"], *r[1:]] for r in rows]
    footer = (
        f"{data['date']}: {data['campaigns_count']} active campaign(s), {data['available']}"
        f" source rows, {data['distinct']} distinct users"
        + (f" ({data['reason']})" if data["reason"] else "")
        + f"; sample: {', '.join(data['sample']) or 'none'}"
        + (f"; stored: {data['stored']['status']}" if data["stored"] else "")
        + " (preview: nothing was written)"
    )
    current().output.table(
        data, ["campaign", "start", "end", "users", *groups], rows, footer=footer
    )


class _progress:
    """A rich progress display on stderr when a person watches; nothing otherwise."""

    def __init__(self, output: Any) -> None:
        import sys

        options = output.options
        self.live = sys.stderr.isatty() and not options.json and not options.quiet
        self.display: Any = None
        self.task: Any = None

    def __enter__(self) -> Any:
        if not self.live:
            from schedctl.distribute.run import SILENT

            return SILENT
        import os

        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

        console = Console(stderr=True, no_color=bool(os.environ.get("NO_COLOR")) or None)
        self.display = Progress(
            TextColumn("{task.description:<10}"), BarColumn(), MofNCompleteColumn(),
            console=console, transient=False,
        )  # fmt: skip
        self.display.start()
        return self

    def start(self, phase: str, total: int | None = None) -> None:
        if self.task is not None:
            self.display.update(self.task, total=self.display.tasks[-1].completed)
        self.task = self.display.add_task(phase, total=total)

    def advance(self, amount: int) -> None:
        self.display.advance(self.task, amount)

    def __exit__(self, *_exc: object) -> None:
        if self.display is not None:
            self.display.stop()


def register(app: click.Group) -> None:
    command(app, "distribute")(distribute_command)
