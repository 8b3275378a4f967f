"""The operators' mail about a distribution: success, skip, error, critical failure.

Each is a message of type ``DISTRIBUTE`` per address of ``[distribute] notify``, put
in the outbox in the transaction that records the outcome, rendered from the
``distribute`` templates with labels and subject in the configured locale (en, ru),
the run's JSON result attached. Its idempotency key names the date, the outcome and
the stage or reason -- for a failure, the stage and a digest of its error text -- so
a rerun that ends the same way (or two runs racing) mails each operator once about
it, and a different failure is mailed again. Errors and critical failures are critical mail (they
bypass the daily quota, never the suppression list). The result holds no ID in
full: the plan's sample is masked and error texts are scrubbed before they get here.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from schedctl.config import Settings
from schedctl.delivery.outbox import Attachment, NewMessage, enqueue, mail_domain

MESSAGE_TYPE = "DISTRIBUTE"

SUBJECTS: Mapping[str, Mapping[str, str]] = {
    "en": {
        "completed": "\u2705 Distribution for {date} completed: {users} users distributed",
        "skipped": "\u23ed\ufe0f Distribution for {date} skipped: {reason}",
        "failed": "\u274c Distribution for {date} failed at stage {stage}",
        "critical": "\U0001f6a8 Critical failure of the distribution for {date}",
    },
    "ru": {
        "completed": "\u2705 Ежедневная дистрибуция за {date} завершена: распределено"
        " пользователей: {users}",
        "skipped": "\u23ed\ufe0f Ежедневная дистрибуция за {date} пропущена: {reason}",
        "failed": "\u274c Ошибка ежедневной дистрибуции за {date}, этап: {stage}",
        "critical": "\U0001f6a8 Критическая ошибка ежедневной дистрибуции за {date}",
    },
}

REASONS: Mapping[str, Mapping[str, str]] = {
    "en": {"no_active_campaigns": "no active campaigns", "no_users": "no users"},
    "ru": {"no_active_campaigns": "нет активных кампаний", "no_users": "нет пользователей"},
}

LABELS: Mapping[str, Mapping[str, str]] = {
    "en": {
        "date": "Business date",
        "status": "Status",
        "reason": "Reason",
        "stage": "Stage",
        "users": "Users",
        "source_rows": "source rows",
        "campaign": "Campaign",
        "destination": "Destination",
        "rows": "Rows",
        "inserted": "Inserted",
        "existing": "Already there",
        "attachment": "The run's full result is attached as JSON.",
    },
    "ru": {
        "date": "Бизнес-дата",
        "status": "Статус",
        "reason": "Причина",
        "stage": "Этап",
        "users": "Пользователи",
        "source_rows": "строк в источнике",
        "campaign": "Кампания",
        "destination": "Назначение",
        "rows": "Строк",
        "inserted": "Вставлено",
        "existing": "Уже были",
        "attachment": "Полный результат запуска приложен в формате JSON.",
    },
}


def render_notice(
    result: Mapping[str, Any], kind: str, locale: str, groups: tuple[str, ...]
) -> tuple[str, str, str]:
    """(subject, text, html) of the notice of ``kind`` (completed, skipped, failed,
    critical) about ``result``."""
    from schedctl.render import render, text_table

    reason = str(result.get("reason") or "")
    subject = SUBJECTS[locale][kind].format(
        date=result.get("date"),
        users=result.get("planned") or 0,
        reason=REASONS[locale].get(reason, reason),
        stage=result.get("stage") or "?",
    )
    labels = LABELS[locale]
    campaigns = result.get("campaigns") or []
    campaign_table = text_table(
        [[c["id"], c["users"], *(c["groups"].get(g, 0) for g in groups)] for c in campaigns],
        [labels["campaign"], labels["users"], *groups],
    )
    destination_table = text_table(
        [
            [d["name"], d["rows"], d["inserted"], d["existing"], d["status"]]
            for d in result.get("destinations") or []
        ],
        [labels[k] for k in ("destination", "rows", "inserted", "existing", "status")],
    )
    context = {
        "t": labels,
        "title": subject,
        "result": result,
        "groups": groups,
        "campaign_table": campaign_table,
        "destination_table": destination_table,
    }
    return subject, render("distribute.txt", **context), render("distribute.html", **context)


def enqueue_notice(
    conn: sa.Connection,
    settings: Settings,
    result: Mapping[str, Any],
    kind: str,
    now: datetime,
) -> int:
    """Put the notice of ``kind`` for every operator in the outbox (in the caller's
    transaction); how many messages are new."""
    from schedctl.accounts import resolve_account

    recipients = settings.distribute_notify
    if not recipients:
        return 0
    groups = tuple(result.get("groups") or settings.distribute_groups)
    subject, text, html = render_notice(result, kind, settings.distribute_locale, groups)
    detail = str(result.get("stage") or result.get("reason") or "")
    if kind in ("failed", "critical"):
        # Each distinct failure is mailed once: the stage and the error text.
        reason = str(result.get("reason") or "").encode("utf-8")
        detail += ":" + hashlib.sha256(reason).hexdigest()[:16]
    attachment = Attachment(
        filename=f"distribute-{result.get('date')}.json",
        content_type="application/json",
        content=json.dumps(result, ensure_ascii=False, indent=2, default=str).encode("utf-8"),
    )
    account_id = resolve_account(conn, None)
    items = [
        NewMessage(
            account_id=account_id,
            type=MESSAGE_TYPE,
            recipient=recipient,
            subject=subject,
            body_text=text,
            body_html=html,
            send_at=now,
            idempotency_key=f"distribute:{result.get('date')}:{kind}:{detail}:{recipient.lower()}",
            priority="critical" if kind in ("failed", "critical") else "normal",
            attachments=(attachment,),
        )
        for recipient in recipients
    ]
    return len(enqueue(conn, items, now=now, domain=mail_domain(settings.mail_from)))
