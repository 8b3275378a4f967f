"""schedctl's command line: thin click commands over the core, one error boundary."""

from __future__ import annotations

import logging
import sys
from collections.abc import Sequence

import click

from schedctl import __version__, redaction
from schedctl.cli import (
    accounts_cmd,
    completion_cmd,
    config_cmd,
    db_cmd,
    demo_cmd,
    digest_cmd,
    distribute_cmd,
    events_cmd,
    heartbeat_cmd,
    messages_cmd,
    metrics_cmd,
    notify_cmd,
    reconcile_cmd,
    schedules_cmd,
    send_now_cmd,
    serve_cmd,
    suppressions_cmd,
    tick_cmd,
    users_cmd,
)
from schedctl.cli.output import report_error
from schedctl.cli.params import Group, flag, option
from schedctl.cli.runtime import Runtime, current, pause_collector, use, with_output_flags
from schedctl.errors import SchedctlError


def _version(ctx: click.Context, param: click.Parameter, value: bool) -> None:
    if value and not ctx.resilient_parsing:
        from schedctl.zones import tzdata_version

        print(f"schedctl {__version__} (tzdata {tzdata_version()})")
        ctx.exit()


@click.group(
    "schedctl",
    cls=Group,
    # Options show their defaults in help unless they say otherwise.
    context_settings={"help_option_names": ["-h", "--help"], "show_default": True},
)
@option(
    "--database-url",
    metavar="URL",
    help="SQLAlchemy URL of schedctl's database (env SCHEDCTL_DATABASE_URL;"
    " default sqlite:///schedctl.db).",
)
@option("--config", metavar="FILE", help="TOML configuration file (env SCHEDCTL_CONFIG).")
@flag(
    "--version",
    action=_version,
    help="Show the versions of schedctl and of its time zone data.",
)
def _root(database_url: str | None, config: str | None) -> None:
    """Run recurring business jobs from cron, exactly once."""
    # Environment and file are resolved by load_settings, which flags override.
    current().flags.update(database_url=database_url, config_path=config)


app = with_output_flags(_root)

for _module in (
    db_cmd,
    tick_cmd,
    digest_cmd,
    distribute_cmd,
    reconcile_cmd,
    send_now_cmd,
    heartbeat_cmd,
    metrics_cmd,
    accounts_cmd,
    schedules_cmd,
    messages_cmd,
    events_cmd,
    suppressions_cmd,
    users_cmd,
    notify_cmd,
    config_cmd,
    serve_cmd,
    demo_cmd,
    completion_cmd,
):
    _module.register(app)


class _RedactingFormatter(logging.Formatter):
    """Log lines (warnings, -v's debug detail) pass through the one redaction."""

    def format(self, record: logging.LogRecord) -> str:
        return redaction.redact(super().format(record))


def _configure_logging() -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_RedactingFormatter("schedctl: %(levelname)s: %(message)s"))
    logger = logging.getLogger("schedctl")
    logger.handlers[:] = [handler]
    logger.setLevel(logging.WARNING)
    logger.propagate = False
    # psycopg logs "error ignored terminating <Pipeline>: the connection is lost" when a
    # connection dies mid-pipeline: a second, unredacted stderr line (logging's
    # last-resort handler) beside schedctl's one "database unavailable" line. A handler
    # of its own keeps it out; it still propagates to any handler the caller installed.
    driver = logging.getLogger("psycopg")
    if not any(isinstance(h, logging.NullHandler) for h in driver.handlers):
        driver.addHandler(logging.NullHandler())


def run(argv: Sequence[str] | None = None) -> int:
    """Run schedctl and return its exit code; the single error boundary."""
    _configure_logging()
    redaction.forget_all()
    runtime = Runtime()
    use(runtime)
    args = list(argv) if argv is not None else sys.argv[1:]

    def fail(message: str, exit_code: int) -> int:
        # --json may sit after an argument click refused before reaching it.
        as_json = runtime.output_options.json or "--json" in _options(args)
        report_error(message, exit_code, as_json=as_json)
        return exit_code

    options = _options(args)
    for flag_name in ("--install-completion", "--show-completion"):
        if flag_name in options:
            return fail(
                f"{flag_name} is not an option of schedctl: `schedctl completion bash|zsh|fish`"
                " prints the completion script to install (see schedctl completion --help)",
                2,
            )
    try:
        # Not standalone: every error comes back here. A shell asking for completions
        # (_SCHEDCTL_COMPLETE set) is answered by click, which then exits.
        value = app.main(args=args, prog_name="schedctl", standalone_mode=False)
        return value if isinstance(value, int) else 0
    except click.Abort:
        return fail("aborted", 130)
    except click.exceptions.NoArgsIsHelpError as exc:  # a group called without a command
        if runtime.output_options.json or "--json" in options:
            # A script gets its error document, not the group's help.
            group = exc.ctx.command_path if exc.ctx else "schedctl"
            return fail(f"missing command: see {group} --help", exc.exit_code)
        print(exc.format_message().rstrip(), file=sys.stderr)
        return exc.exit_code
    except click.ClickException as exc:  # usage errors: bad flag, missing argument
        return fail(exc.format_message(), _usage_exit_code(args, exc.exit_code))
    except SchedctlError as exc:
        return fail(_redact(runtime, exc.message), exc.exit_code)
    except KeyboardInterrupt:
        return fail("interrupted", 130)
    except Exception as exc:
        from schedctl.db.database import wrap_unexpected

        wrapped = wrap_unexpected(exc)
        if wrapped is not None:
            return fail(_redact(runtime, wrapped.message), wrapped.exit_code)
        code = fail(_redact(runtime, f"internal error: {type(exc).__name__}: {exc}"), 1)
        if runtime.output_options.verbose:
            import traceback  # only here: it costs start-up time on every run

            # Never with local variables: they may hold secrets.
            print(_redact(runtime, "".join(traceback.format_exception(exc))), file=sys.stderr)
        return code


def _usage_exit_code(args: list[str], exit_code: int) -> int:
    """`heartbeat --check` exits 3 (UNKNOWN) in every failure, a bad command line too:
    monitoring reads 2 as CRITICAL, which would blame the jobs, not the check."""
    options = _options(args)
    if "--check" not in options:
        return exit_code
    words = iter(options)
    for word in words:
        if word in ("--database-url", "--config"):
            next(words, None)
        elif not word.startswith("-"):
            if word == "heartbeat":
                from schedctl.heartbeat import CHECK_EXIT

                return CHECK_EXIT["unknown"]
            break
    return exit_code


def _options(args: list[str]) -> list[str]:
    """The arguments before a `--` (after it, everything is a value)."""
    return args[: args.index("--")] if "--" in args else args


def _redact(runtime: Runtime, text: str) -> str:
    """Remove every configured secret from text about to be printed."""
    try:
        return runtime.settings.redact(text)
    except Exception:  # never let reporting one error raise another
        # The configuration itself is broken: mask what we can see directly.
        flag = runtime.flags.get("database_url") or ""
        return redaction.redact(text, redaction.secrets_in(flag))


def main() -> None:
    pause_collector()  # until the command's database is open (see runtime)
    sys.exit(run())
