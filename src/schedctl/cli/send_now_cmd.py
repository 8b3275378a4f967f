"""`schedctl send-now MESSAGE_ID [--force]` and `send-now --schedule ID`."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import click

from schedctl.cli.params import account_option, argument, flag, option
from schedctl.cli.runtime import CommandResult, command, current, run_command, scope_to_account
from schedctl.errors import UsageError
from schedctl.values import parse_id

if TYPE_CHECKING:
    from schedctl.db.database import Database

# Exit codes: sent 0; the mail server unreachable 75 (safe to rerun); otherwise 1.
_TEMPORARY_EXIT = 75


@argument("message_id", required=False, help="The message to send now.")
@flag("--force", help="Send even if it was sent already or has expired.")
@option(
    "--schedule",
    metavar="ID",
    help="Instead: run this schedule now as a manual run and send its messages"
    " (its next_run_at does not move).",
)
@account_option
def send_now_command(
    message_id: str | None, force: bool, schedule: str | None, account: str | None
) -> int:
    """Send one message now, or run one schedule now (--schedule ID).

    Bypasses the enabled settings, the weekend rule and the send time; never the
    suppression list. Answers a reason code: SENT, MISSING_RECIPIENT, ALREADY_SENT,
    SUPPRESSED, SEND_FAILED, EXCEPTION (also IN_PROGRESS, QUOTA_DEFERRED, EXPIRED; and
    REPORT_FAILED for --schedule).
    """
    if (message_id is None) == (schedule is None):
        raise UsageError("give either a MESSAGE_ID or --schedule ID")
    if schedule is not None:
        return _send_schedule(parse_id(schedule, "schedule"), account)
    assert message_id is not None
    number = parse_id(message_id, "message")
    settings = current().settings

    def work(db: Database) -> CommandResult:
        from schedctl.delivery.dispatch import send_now

        account_id = scope_to_account(db, account)
        result = send_now(db, settings, number, db.now(), force=force, account_id=account_id)
        data: dict[str, Any] = {"ok": result.ok, "reason_code": result.reason_code}
        if result.detail and not result.ok:
            data["detail"] = result.detail
        exit_code = 0 if result.ok else _TEMPORARY_EXIT if result.temporary else 1
        return CommandResult(data, exit_code=exit_code)

    return _finish(run_command("send-now", work), f"message {number}")


def _send_schedule(schedule_id: int, account: str | None) -> int:
    settings = current().settings

    def work(db: Database) -> CommandResult:
        from schedctl.schedules.runs import send_schedule_now

        account_id = scope_to_account(db, account)
        manual = send_schedule_now(db, settings, account_id, schedule_id)
        data: dict[str, Any] = {
            "ok": manual.ok,
            "run_id": str(manual.run_id),
            "reason_code": manual.reason_code,
        }
        if manual.messages or manual.ok:  # the run made its messages
            data["messages"] = [
                {"id": str(i), "reason_code": r.reason_code} for i, r in manual.messages
            ]
        exit_code = 0 if manual.ok else _TEMPORARY_EXIT if manual.temporary else 1
        return CommandResult(data, exit_code=exit_code)

    return _finish(run_command("send-now", work), f"schedule {schedule_id}")


def _finish(result: CommandResult, what: str) -> int:
    data = result.data
    human = f"{what}: {data['reason_code']}"
    if data.get("run_id"):
        human += f" (run {data['run_id']})"
    if data.get("detail"):
        human += f": {data['detail']}"
    current().output.result(data, human, failed=result.exit_code != 0)
    return result.exit_code


def register(app: click.Group) -> None:
    command(app, "send-now")(send_now_command)
