"""What every command shares on its command line: the option types and how help reads.

`Command` is the class `runtime.command` registers every command with, so each
help page writes its usage the classic way (``schedctl suppressions add [OPTIONS]
EMAIL``, an optional argument in brackets) and names values by what they are
(``--account ACCOUNT``), not by the Python type behind them (``{EMAIL}``,
``EMAIL <str>``, ``--account <str>``, as typer's own rendering does).
"""

from __future__ import annotations

from typing import Annotated, Any

import typer
from typer.core import TyperArgument, TyperCommand, TyperOption

from schedctl.cli.output import warn
from schedctl.values import MAX_ID, fixed_offset_warning
from schedctl.vocabulary import MAX_LISTED_SLOTS

Account = Annotated[
    str | None,
    typer.Option(
        "--account",
        metavar="ACCOUNT",
        help="Account name or id (default: SCHEDCTL_ACCOUNT, else the `default` account).",
        show_default=False,
    ),
]


def warn_fixed_offset(zone: str | None) -> None:
    """Warn on stderr when a zone given with --tz is EST, MST or HST (no DST ever)."""
    note = None if zone is None else fixed_offset_warning(zone.strip())
    if note:
        warn(note)


def limit_option(help_text: str) -> Any:
    """A ``--limit N`` option: a whole number 1..2^63-1, the range of SQL's LIMIT."""
    return typer.Option(
        "--limit", metavar="N", min=1, callback=_below_2_63, help=help_text, show_default=False
    )


def _below_2_63(value: int | None) -> int | None:
    # Not typer's max=: its help would print all 19 digits of the bound.
    if value is not None and value > MAX_ID:
        raise typer.BadParameter("Input should be below 2^63")
    return value


def slots_option() -> Any:
    """``-n N``: how many slots `schedules next` and `users next` list."""
    return typer.Option(
        "-n",
        "--count",
        metavar="N",
        min=1,
        max=MAX_LISTED_SLOTS,
        help=f"List N slots (default 10, at most {MAX_LISTED_SLOTS}).",
        show_default=False,
    )


def from_option(what: str) -> Any:
    """``--from TIME``: where a listing of slots starts."""
    return typer.Option(
        "--from",
        metavar="TIME",
        help=f"List {what} at or after this instant (default: now; without an offset, UTC).",
        show_default=False,
    )


SLOT_COLUMNS = ["local", "UTC", "note"]


def slot_rows(data: dict[str, Any]) -> list[tuple[Any, ...]]:
    """The table rows of a listing of slots (`schedules next`, `users next`)."""
    return [(s["local"], s["utc"], s["note"]) for s in data["slots"]]


def command_group(help_text: str) -> typer.Typer:
    """A group of commands (`schedctl schedules ...`); without one, it shows its help."""
    return typer.Typer(help=help_text, short_help=summary(help_text), no_args_is_help=True)


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


class Command(TyperCommand):
    """A typer command whose help names arguments and option values by their metavar."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        for param in self.params:
            if param.metavar is not None:
                continue
            if isinstance(param, TyperArgument):
                param.metavar = (param.name or "value").upper()
            elif isinstance(param, TyperOption) and not (param.is_flag or param.count):
                param.metavar = _option_metavar(param)

    def get_short_help_str(self, limit: int = 45) -> str:
        return self.short_help or summary(self.help or "")

    def collect_usage_pieces(self, ctx: Any) -> list[str]:
        pieces = [self.options_metavar] if self.options_metavar else []
        for param in self.get_params(ctx):
            if isinstance(param, TyperArgument):
                pieces.append(_usage_name(param))
            else:
                pieces.extend(param.get_usage_pieces(ctx))
        return pieces

    def format_options(self, ctx: Any, formatter: Any) -> None:
        arguments: list[tuple[str, str]] = []
        options: list[tuple[str, str]] = []
        for param in self.get_params(ctx):
            record = param.get_help_record(ctx)
            if record is None:
                continue
            if isinstance(param, TyperArgument):
                # Typer adds the Python type after the name ("EMAIL <str>"); drop it.
                arguments.append((_display_name(param), record[1]))
            else:
                options.append(record)
        for title, records in (("Arguments", arguments), ("Options", options)):
            if records:
                with formatter.section(title):
                    formatter.write_dl(records)


def _display_name(argument: TyperArgument) -> str:
    name = argument.metavar or (argument.name or "value").upper()
    return name if argument.nargs == 1 else f"{name}..."


def _usage_name(argument: TyperArgument) -> str:
    name = _display_name(argument)
    return name if argument.required else f"[{name}]"


def _option_metavar(option: TyperOption) -> str:
    """``N`` for a number, else the option's long name: ``--reason`` takes ``REASON``."""
    if option.type_descriptor.annotation is int:
        return "N"
    longest = max(option.opts, key=len)
    return longest.lstrip("-").replace("-", "_").upper()
