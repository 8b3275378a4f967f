"""The command contract (SPEC §2): every command schedctl has.

A command that writes records its heartbeat under its name here (``tick``, ``schedules
create``), so the configuration checks ``[heartbeat]`` command names against this list;
a test checks that ``--help`` lists every one.
"""

from __future__ import annotations

from schedctl.errors import did_you_mean, quoted

TOP_LEVEL = {
    "demo": "Create a demo database, run tick and digest on it, show what was sent.",
    "tick": "Materialise due schedule runs, plan event messages, dispatch due messages.",
    "digest": "Send each opted-in user's daily digest once per local day.",
    "distribute": "Distribute the day's users to active campaigns and groups.",
    "reconcile": "Nightly repair: leases, usage snapshot, tracking purge, mirror check.",
    "send-now": "Send one message now, or run one schedule now (--schedule ID).",
    "heartbeat": "Show when each command last succeeded: green, yellow, red or unknown.",
    "metrics": "Print the Prometheus text format: heartbeats, outbox, runs, quota, digests.",
    "notify": "Record a notification for a user (critical ones are sent by tick).",
    "unsubscribe": "Apply an unsubscribe token for an e-mail address.",
    "unsubscribe-url": "Print the signed unsubscribe URL for an e-mail address.",
    "serve": "Serve the web app: unsubscribe links, status pages, badges, /healthz.",
    "completion": "Print the tab-completion script for bash, zsh or fish.",
}

GROUPS = {
    "db": ("Apply or show the database migrations.", ["upgrade", "status"]),
    "config": ("Check the configuration.", ["check"]),
    "accounts": ("Manage accounts.", ["create", "list"]),
    "schedules": (
        "Manage schedules.",
        [
            "create",
            "list",
            "show",
            "update",
            "pause",
            "resume",
            "delete",
            "runs",
            "backfill",
            "next",
        ],
    ),
    "messages": (
        "Manage scheduled messages.",
        ["list", "show", "edit", "delete", "delete-all"],
    ),
    "users": ("Manage digest users.", ["add", "list", "update", "remove", "next"]),
    "events": (
        "Manage events whose messages tick plans.",
        ["add", "update", "list", "show", "delete"],
    ),
    "suppressions": ("Manage the suppression list.", ["list", "add", "remove"]),
}

# The jobs that tell the alert channels what newly went wrong when they end (SPEC §12,
# schedctl.alerts); the other commands are an operator's, who sees their outcome.
ALERTING = frozenset({"tick", "digest", "distribute", "reconcile", "send-now", "heartbeat"})

COMMAND_NAMES = frozenset(TOP_LEVEL) | frozenset(
    f"{group} {sub}" for group, (_, subs) in GROUPS.items() for sub in subs
)
"""Every command's full name, as heartbeat rows record it."""

READ_ONLY = frozenset(
    {
        "heartbeat",
        "unsubscribe-url",
        "db status",
        "config check",
        "accounts list",
        "schedules list",
        "schedules show",
        "schedules runs",
        "schedules next",
        "messages list",
        "messages show",
        "metrics",
        "users list",
        "users next",
        "events list",
        "events show",
        "suppressions list",
        "serve",
    }
)
"""The commands that only read: they record no heartbeat (SPEC §12), and rows such a
command recorded before are neither judged nor listed."""


def only_reads(name: str) -> str | None:
    """Why `name` records no heartbeat (for a warning or an error line), or None."""
    if name in READ_ONLY:
        return f"{quoted(name)} only reads and records no heartbeat"
    return None


def unknown_command(name: object) -> str | None:
    """Why `name` is not a command (for an error line, with a close match), or None."""
    if isinstance(name, str) and name in COMMAND_NAMES:
        return None
    hint = did_you_mean(name, COMMAND_NAMES) or " (e.g. 'tick' or 'send-now')"
    return f"unknown command {quoted(name)}{hint}"
