"""What every command shares on its command line: how parameters are declared, the
shared options, and how help reads.

Every parameter is declared with :func:`option`, :func:`flag` or :func:`argument`
(click's own decorators, with schedctl's defaults), above the command's function in
the order help lists them. A value's metavar names what it is (``--account
ACCOUNT``, ``--reason REASON``), never a Python type; a repeatable option left out
is None, given it is a list. `Command` and `Group` are the classes every command and
group is made with: usage the classic way (``schedctl suppressions add [OPTIONS]
EMAIL``, an optional argument in brackets), the arguments in a section of their own,
and each command's whole first sentence in its group's listing.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import click

from schedctl.cli.output import warn
from schedctl.values import MAX_ID, fixed_offset_warning
from schedctl.vocabulary import MAX_LISTED_SLOTS

F = TypeVar("F", bound=Callable[..., Any])


class Option(click.Option):
    """An option whose repeatable form gives None when left out, else a list."""

    def process_value(self, ctx: click.Context, value: Any) -> Any:
        value = super().process_value(ctx, value)
        return (list(value) or None) if self.multiple else value


class Argument(click.Argument):
    """A positional argument with a help text, listed under "Arguments"."""

    def __init__(self, param_decls: list[str], *, help: str, **attrs: Any) -> None:
        super().__init__(param_decls, **attrs)
        self.help = help

    def get_usage_pieces(self, ctx: click.Context) -> list[str]:
        name = self.human_readable_name
        return [name if self.required else f"[{name}]"]


def option(
    *decls: str,
    help: str,
    metavar: str | None = None,
    default: Any = None,
    type: click.ParamType[Any] | None = None,
    multiple: bool = False,
    required: bool = False,
    show_default: bool | None = None,
    callback: Callable[[click.Context, click.Parameter, Any], Any] | None = None,
) -> Callable[[F], F]:
    """An option that takes a value; a name without dashes among ``decls`` is the
    Python parameter's (``option("--from", "since", ...)``).

    Its metavar defaults to its longest name in capitals (``--reason`` takes
    ``REASON``); a default is shown in help unless ``show_default=False``.
    """
    if metavar is None:
        longest = max((d for d in decls if d.startswith("-")), key=len)
        metavar = longest.lstrip("-").replace("-", "_").upper()
    # No default at all, rather than None: to click, None is a value a required
    # option is not missing.
    defaults = {} if default is None else {"default": default}
    return click.option(
        *decls,
        cls=Option,
        help=help,
        metavar=metavar,
        type=type,
        multiple=multiple,
        required=required,
        show_default=show_default,
        callback=callback,
        **defaults,
    )


def flag(
    *decls: str,
    help: str,
    default: bool | None = False,
    action: Callable[[click.Context, click.Parameter, bool], None] | None = None,
) -> Callable[[F], F]:
    """A flag: ``--yes`` (False unless given), or ``--digest/--no-digest`` (None
    unless either is given); with an ``action``, a flag that acts as soon as it is
    read, before any other parameter (``--version``), and passes no value."""
    if action is not None:
        return click.option(
            *decls, is_flag=True, help=help, callback=action, is_eager=True, expose_value=False
        )
    return click.option(*decls, cls=Option, is_flag=True, default=default, help=help)


def argument(
    name: str, *, help: str, metavar: str | None = None, required: bool = True
) -> Callable[[F], F]:
    """A positional argument, named in help and errors by its metavar (default: its
    name in capitals)."""
    return click.argument(
        name, cls=Argument, help=help, metavar=metavar or name.upper(), required=required
    )


def parameters(*declared: Callable[[F], F]) -> Callable[[F], F]:
    """Several parameters declared as one, listed in the order given."""

    def declare(func: F) -> F:
        for parameter in reversed(declared):
            func = parameter(func)
        return func

    return declare


class WholeNumber(click.IntRange):
    """A whole number in a range, which help shows (``[x>=1]``); a value that is no
    number is refused as "'x' is not a valid integer."."""

    name = "integer"


class FileName(click.types.StringParamType):
    """A file to write, as given. One that starts with ``-`` is refused: it is almost
    always an option that took the place of a missing value (``--output --json``),
    and would otherwise become a file of that name."""

    name = "file"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        value = super().convert(value, param, ctx)
        if isinstance(value, str) and value.startswith("-"):
            self.fail(
                f"{value!r} looks like an option, not a file name"
                f" (for a file of that name, write ./{value}).",
                param,
                ctx,
            )
        return value


account_option = option(
    "--account",
    metavar="ACCOUNT",
    help="Account name or id (default: SCHEDCTL_ACCOUNT, else the `default` account).",
    show_default=False,
)


def warn_fixed_offset(zone: str | None) -> None:
    """Warn on stderr when a zone given with --tz is EST, MST or HST (no DST ever)."""
    note = None if zone is None else fixed_offset_warning(zone.strip())
    if note:
        warn(note)


def limit_option(help_text: str, default: int | None = None) -> Callable[[F], F]:
    """A ``--limit N`` option: a whole number 1..2^63-1, the range of SQL's LIMIT."""
    return option(
        "--limit",
        metavar="N",
        type=WholeNumber(min=1),
        default=default,
        callback=_below_2_63,
        help=help_text,
        show_default=False,
    )


def _below_2_63(ctx: click.Context, param: click.Parameter, value: int | None) -> int | None:
    # Not a max= of the range: help would print all 19 digits of the bound.
    if value is not None and value > MAX_ID:
        raise click.BadParameter(f"{value} is not below 2^63.", ctx, param)
    return value


def slots_option() -> Callable[[F], F]:
    """``-n N``: how many slots `schedules next` and `users next` list."""
    return option(
        "-n",
        "--count",
        metavar="N",
        type=WholeNumber(min=1, max=MAX_LISTED_SLOTS),
        default=10,
        help=f"List N slots (default 10, at most {MAX_LISTED_SLOTS}).",
        show_default=False,
    )


def from_option(what: str) -> Callable[[F], F]:
    """``--from TIME``: where a listing of slots starts."""
    return option(
        "--from",
        "since",
        metavar="TIME",
        help=f"List {what} at or after this instant (default: now; without an offset, UTC).",
        show_default=False,
    )


SLOT_COLUMNS = ["local", "UTC", "note"]


def slot_rows(data: dict[str, Any]) -> list[tuple[Any, ...]]:
    """The table rows of a listing of slots (`schedules next`, `users next`)."""
    return [(s["local"], s["utc"], s["note"]) for s in data["slots"]]


def summary(help_text: str) -> str:
    """The first sentence of a help text, whole: a command's line in its group's help.

    Click's own summary stops at about 45 characters, or the listing's width, and
    ends mid-sentence in "..."; the listing wraps a long summary instead.
    """
    words = help_text.split("\n\n", 1)[0].split()
    for i, word in enumerate(words):
        if word.endswith("."):
            return " ".join(words[: i + 1])
    return " ".join(words)


class Command(click.Command):
    """A command whose help lists its arguments, then its options, and whose
    group's listing shows its whole first sentence."""

    def get_short_help_str(self, limit: int = 45) -> str:
        return self.short_help or summary(self.help or "")

    def format_help(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        self.format_usage(ctx, formatter)
        self.format_help_text(ctx, formatter)
        self.format_arguments(ctx, formatter)
        self.format_options(ctx, formatter)

    def format_arguments(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = [
            (param.human_readable_name, _with_required(param))
            for param in self.get_params(ctx)
            if isinstance(param, Argument)
        ]
        if rows:
            with formatter.section("Arguments"):
                formatter.write_dl(rows)

    def format_options(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = [
            record
            for param in self.get_params(ctx)
            if not isinstance(param, click.Argument)
            and (record := param.get_help_record(ctx)) is not None
        ]
        if rows:
            with formatter.section("Options"):
                formatter.write_dl(rows)


def _with_required(argument: Argument) -> str:
    text = argument.help or ""
    return f"{text}  [required]" if argument.required else text


class Group(click.Group):
    """A group of commands, whose listing names the commands first, then the groups,
    each in the order registered, with their whole first sentences. Called without a
    command, it shows its help (click's NoArgsIsHelpError, a usage error: exit 2)."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        groups = [name for name, cmd in self.commands.items() if isinstance(cmd, click.Group)]
        return [name for name in self.commands if name not in groups] + groups

    def get_short_help_str(self, limit: int = 45) -> str:
        return self.short_help or summary(self.help or "")


def command_group(help_text: str) -> Group:
    """A group of commands (`schedctl schedules ...`)."""
    return Group(help=help_text)
