"""`schedctl metrics [--output FILE]`: the Prometheus text format, on stdout or in a file."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import click

from schedctl.cli.params import FileName, option
from schedctl.cli.runtime import CommandResult, command, current, run_command

if TYPE_CHECKING:
    from schedctl.db.database import Database


@option(
    "--output",
    metavar="FILE",
    type=FileName(),
    help="Replace FILE atomically instead of printing (for node_exporter's textfile"
    " collector: a *.prom file in its directory).",
)
def metrics_command(output: str | None) -> None:
    """Print the Prometheus text format: heartbeats, outbox, runs, quota, digests."""
    from schedctl import metrics
    from schedctl.errors import ValidationError

    runtime = current()
    problem = metrics.output_problem(output) if output is not None else None
    if problem:
        raise ValidationError(problem)

    def work(db: Database) -> CommandResult:
        snapshot = metrics.collect(db, runtime.settings, db.now())
        return CommandResult({"snapshot": snapshot})

    # It only reads: no heartbeat row, no ping (SPEC §12).
    snapshot = run_command("metrics", work, record=False).data["snapshot"]
    text = metrics.exposition(snapshot)
    if output is not None:
        metrics.write_atomically(Path(output), text)
    options = runtime.output_options
    samples = metrics.samples(snapshot)
    if options.json:
        runtime.output.result({"output": output, "samples": samples, "count": len(samples)})
    elif output is not None:
        runtime.output.result({}, f"wrote {len(samples)} samples to {output}")
    elif not options.quiet:
        print(text, end="")


def register(app: click.Group) -> None:
    command(app, "metrics")(metrics_command)
