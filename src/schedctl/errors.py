"""The domain exception hierarchy.

Each class carries the process exit code the CLI's single error boundary maps it to
(see SPEC §2): 2 usage/configuration (nothing was written), 75 temporary (safe to
rerun), 1 some items failed. The docstring is the default message.
"""

from __future__ import annotations

from collections.abc import Iterable


class SchedctlError(Exception):
    """schedctl failed."""

    exit_code = 1

    def __init__(self, message: str | None = None) -> None:
        super().__init__(message or (self.__doc__ or "").strip())

    @property
    def message(self) -> str:
        return str(self.args[0]) if self.args else ""


class UsageError(SchedctlError):
    """Invalid usage."""

    exit_code = 2


class ConfigError(UsageError):
    """Invalid configuration."""


class ValidationError(UsageError):
    """Invalid value."""


class SchemaMismatch(UsageError):
    """The database schema does not match this version of schedctl."""


class NotFound(UsageError):
    """No such object."""


class TemporaryError(SchedctlError):
    """A temporary failure; the command is safe to rerun."""

    exit_code = 75


class DatabaseUnavailable(TemporaryError):
    """The database is unreachable."""


class MailUnavailable(TemporaryError):
    """The mail server is unreachable."""


class DatabaseRefused(SchedctlError):
    """The database refused a statement for a reason no retry mends (a publication
    that wants a replica identity, a limit of the server's): exit 1, at once, where
    75 would have a scheduler rerun it in vain."""


class PermissionDenied(DatabaseRefused):
    """The database refused a statement to schedctl's login role (PostgreSQL's
    insufficient_privilege). Exit 1, as for any refusal no retry mends: the statements
    before it may have been committed, so it is not bad input (exit 2, nothing
    written), and the run is recorded as failed."""

    def __init__(self, message: str, *, refusal: str) -> None:
        super().__init__(message)
        self.refusal = refusal  # the server's own words


class RecordingRefused(PermissionDenied):
    """schedctl's login role may not record the mail it would send, so nothing was
    sent (``refusal`` names the privileges it lacks)."""


class ItemsFailed(SchedctlError):
    """Some items failed; they are recorded and will be retried per policy."""

    exit_code = 1


class ConflictError(SchedctlError):
    """A unique key was violated: the row exists already."""

    def __init__(self, message: str | None = None, *, constraint: str | None = None) -> None:
        super().__init__(message)
        self.constraint = constraint


# Input can be any length: an error message quotes at most QUOTED_MAX characters of
# it. `quoted` cuts a value where a message is made; the output layer
# (cli.output.error_text) applies the same cut to any message, click's included.
QUOTED_MAX = 80
ELLIPSIS = "\u2026"


def quoted(value: object) -> str:
    """`value` as an error message quotes it ('...'), cut to QUOTED_MAX characters."""
    text = repr(value)
    if len(text) <= QUOTED_MAX + 2:
        return text
    return f"{text[: QUOTED_MAX + 1]}{ELLIPSIS}{text[0]}"


def did_you_mean(word: object, candidates: Iterable[str]) -> str:
    """A hint naming the candidate closest to `word`, " (did you mean 'x'?)", or ""."""
    import difflib  # only on an error path

    close = difflib.get_close_matches(str(word), sorted(candidates), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""
