"""`schedctl send-now MESSAGE_ID [--force]` and `send-now --schedule ID`."""

from __future__ import annotations

from typing import Annotated, Any

import sqlalchemy as sa
import typer

from schedctl.accounts import resolve_account
from schedctl.cli.messages_cmd import Account, parse_id
from schedctl.cli.runtime import CommandResult, command, current, run_command
from schedctl.db.database import Database
from schedctl.db.schema import messages
from schedctl.errors import UsageError

# Exit codes: sent 0; the mail server unreachable 75 (safe to rerun); otherwise 1.
_TEMPORARY_EXIT = 75


def send_now_command(
    message_id: Annotated[
        str | None,
        typer.Argument(help="The message to send now.", metavar="MESSAGE_ID", show_default=False),
    ] = None,
    force: Annotated[
        bool, typer.Option("--force", help="Send again even if it was sent already.")
    ] = False,
    schedule: Annotated[
        str | None,
        typer.Option(
            "--schedule",
            help="Instead: run this schedule now as a manual run and send its messages"
            " (its next_run_at does not move).",
            show_default=False,
        ),
    ] = None,
    account: Account = None,
) -> None:
    """Send one message now, or run one schedule now (--schedule ID).

    Bypasses the enabled settings, the weekend rule and the send time; never the
    suppression list. Answers a reason code: SENT, MISSING_RECIPIENT, ALREADY_SENT,
    SUPPRESSED, SEND_FAILED, EXCEPTION (also IN_PROGRESS, QUOTA_DEFERRED).
    """
    if (message_id is None) == (schedule is None):
        raise UsageError("give either a MESSAGE_ID or --schedule ID")
    if schedule is not None:
        _send_schedule(parse_id(schedule, "schedule"), account)
        return
    assert message_id is not None
    number = parse_id(message_id)
    settings = current().settings

    def work(db: Database) -> CommandResult:
        from schedctl.dispatch import send_now

        account_id = db.transaction(lambda conn: resolve_account(conn, account), read_only=True)
        result = send_now(db, settings, number, db.now(), force=force, account_id=account_id)
        data: dict[str, Any] = {"ok": result.ok, "reason_code": result.reason_code}
        if result.detail and not result.ok:
            data["detail"] = result.detail
        exit_code = 0 if result.ok else _TEMPORARY_EXIT if result.temporary else 1
        return CommandResult(data, exit_code=exit_code)

    _finish(run_command("send-now", work), f"message {number}")


def _send_schedule(schedule_id: int, account: str | None) -> None:
    settings = current().settings

    def work(db: Database) -> CommandResult:
        from schedctl.dispatch import send_now
        from schedctl.runs import ENQUEUED, run_schedule_now

        run_id, reason = run_schedule_now(db, settings, schedule_id, db.now(), account)
        data: dict[str, Any] = {"ok": reason == ENQUEUED, "run_id": str(run_id)}
        if reason != ENQUEUED:
            return CommandResult({**data, "reason_code": reason}, exit_code=1)
        query = sa.select(messages.c.id).where(messages.c.schedule_run_id == run_id)
        ids = db.transaction(lambda conn: list(conn.execute(query).scalars()), read_only=True)
        results = [(i, send_now(db, settings, int(i), db.now())) for i in sorted(ids)]
        failed = [r for _, r in results if not r.ok]
        data["ok"] = not failed
        data["reason_code"] = failed[0].reason_code if failed else "SENT"
        data["messages"] = [{"id": str(i), "reason_code": r.reason_code} for i, r in results]
        exit_code = 0 if not failed else _TEMPORARY_EXIT if failed[0].temporary else 1
        return CommandResult(data, exit_code=exit_code)

    _finish(run_command("send-now", work), f"schedule {schedule_id}")


def _finish(result: CommandResult, what: str) -> None:
    data = result.data
    human = f"{what}: {data['reason_code']}"
    if data.get("run_id"):
        human += f" (run {data['run_id']})"
    if data.get("detail"):
        human += f": {data['detail']}"
    current().output.result(data, human)
    if result.exit_code:
        raise typer.Exit(result.exit_code)


def register(app: typer.Typer) -> None:
    command(app, "send-now")(send_now_command)
