"""schedctl.alerts' pure parts: which channels the settings name, and what a
notification says to each (at most 20 alerts listed, then "and N more")."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from schedctl.alerts import (
    MAX_LISTED,
    Told,
    slack_message,
    targets,
    title,
    webhook_document,
)
from schedctl.config import load_settings
from schedctl.delivery.quota import quota_alert
from schedctl.errors import ConfigError
from schedctl.heartbeat import CommandHealth, red_alerts
from support.delivery import load_with

AT = datetime(2026, 11, 18, 9, 0, tzinfo=UTC)


def told(n: int, **values: object) -> Told:
    fields: dict[str, object] = {
        "id": n,
        "kind": "run_failed",
        "key": f"run_failed:{n}",
        "summary": f"run {n} failed",
        "at": AT,
    }
    fields.update(values)
    return Told(**fields)  # type: ignore[arg-type]


def test_the_slack_url_defaults_to_slack_webhook_url_and_the_addresses_to_alert_to() -> None:
    old = load_with(
        {"slack_webhook_url": "https://hooks.example.com/a", "messages": {"alert_to": ["a@x.io"]}}
    )
    new = load_with(
        {
            "slack_webhook_url": "https://hooks.example.com/a",
            "messages": {"alert_to": ["a@x.io"]},
            "alerts": {
                "slack_webhook_url": "https://hooks.example.com/b",
                "webhook_url": "https://alerts.example.com/in",
                "mail_to": ["Ops@X.io", "ops@x.io"],
            },
        }
    )

    assert (targets(old).slack, targets(old).webhook, targets(old).mail_to) == (
        "https://hooks.example.com/a", None, ("a@x.io",)
    )  # fmt: skip
    assert targets(old).channels() == ["mail", "slack"]
    assert (targets(new).slack, targets(new).webhook, targets(new).mail_to) == (
        "https://hooks.example.com/b", "https://alerts.example.com/in", ("ops@x.io",)
    )  # fmt: skip
    assert targets(new).channels() == ["mail", "slack", "webhook"]
    assert targets(load_settings({}, environ={})).channels() == []


def test_the_environment_keeps_naming_the_slack_webhook() -> None:
    settings = load_settings({}, environ={"SCHEDCTL_SLACK_WEBHOOK_URL": "https://h.example.com/x"})
    assert targets(settings).slack == "https://h.example.com/x"


@pytest.mark.parametrize(
    ("table", "message"),
    [
        (
            {"webhook_url": "ftp://h/x-s3cr3t"},
            "[alerts] webhook_url: must be an http:// or https://",
        ),
        ({"mail_to": ["ops"]}, "[alerts] mail_to: invalid e-mail address 'ops'"),
        ({"mail": ["a@x.io"]}, "unknown setting [alerts] mail (did you mean 'mail_to'?)"),
    ],
)
def test_bad_alert_settings_are_refused_without_quoting_a_url(table: dict, message: str) -> None:
    with pytest.raises(ConfigError) as refused:
        load_with({"alerts": table})
    assert message in refused.value.message
    assert "s3cr3t" not in refused.value.message


def test_a_notification_lists_20_alerts_then_counts_the_rest() -> None:
    items = [told(n) for n in range(1, 26)]

    text, blocks = slack_message(items)
    document = webhook_document(items)

    lines = text.splitlines()
    assert lines[0] == title(25) == "schedctl: 25 new alerts"
    assert lines[1:3] == ["• [run_failed] run 1 failed", "• [run_failed] run 2 failed"]
    assert lines[-1] == "and 5 more"
    assert len(lines) == 1 + MAX_LISTED + 1
    assert blocks[0] == {"type": "header", "text": {"type": "plain_text", "text": lines[0]}}
    assert [b["type"] for b in blocks[1:]] == ["section"] * 20 + ["context"]
    assert document["count"] == 25
    assert [a["key"] for a in document["alerts"]] == [f"run_failed:{n}" for n in range(1, 21)]
    assert document["alerts"][0] == {
        "kind": "run_failed", "key": "run_failed:1", "summary": "run 1 failed",
        "at": "2026-11-18T09:00:00+00:00",
    }  # fmt: skip


def test_one_alert_is_one_line_with_nothing_more() -> None:
    text, blocks = slack_message([told(7)])
    assert text == "schedctl: 1 new alert\n• [run_failed] run 7 failed"
    assert [b["type"] for b in blocks] == ["header", "section"]
    assert webhook_document([told(7)])["count"] == 1


def test_slack_shows_a_summary_literally_and_details_as_fields() -> None:
    item = told(1, summary="<!channel> & <https://x|y>", fields=(("Used", "8"), ("Limit", "10")))
    text, blocks = slack_message([item])
    assert "&lt;!channel&gt; &amp; &lt;https://x|y&gt;" in text
    assert "<!channel>" not in text
    assert blocks[1]["fields"] == [
        {"type": "mrkdwn", "text": "*Used*\n8"},
        {"type": "mrkdwn", "text": "*Limit*\n10"},
    ]


@pytest.mark.parametrize(
    ("threshold", "phrase"), [(80, "will be deferred"), (100, "exhausted")]
)  # fmt: skip
def test_a_quota_alert_says_what_happens_next(threshold: int, phrase: str) -> None:
    alert = quota_alert("2025-01-06", threshold, threshold * 2, 200)
    assert (alert.kind, alert.key) == ("quota", f"quota:2025-01-06:{threshold}")
    assert alert.summary.startswith(
        f"Mail quota at {threshold}%: {threshold * 2} of 200 normal sends used on 2025-01-06."
    )
    assert phrase in alert.summary
    assert dict(alert.details) == {
        "Used": str(threshold * 2), "Limit": "200", "Threshold": f"{threshold}%",
        "Day": "2025-01-06",
    }  # fmt: skip


def test_heartbeat_red_alerts_are_keyed_by_the_last_success() -> None:
    def health(command: str, status: str, monitored: bool = True) -> CommandHealth:
        return CommandHealth(command, AT, 7200, status, "failed", AT, monitored)  # type: ignore[arg-type]

    found = red_alerts(
        [health("tick", "red"), health("digest", "yellow"), health("reconcile", "red", False)]
    )

    assert [(a.kind, a.key) for a in found] == [
        ("heartbeat_red", "heartbeat_red:tick:2026-11-18T09:00:00+00:00")
    ]
    assert found[0].summary.startswith("tick is red: its last success was 120 minutes ago")


def test_the_readme_shows_the_webhook_document_the_code_sends() -> None:
    readme = (Path(__file__).parents[2] / "README.md").read_text()
    section = readme.split("### Alerts: being told", 1)[1]
    shown = json.loads(section.split("```json\n", 1)[1].split("```", 1)[0])
    sent = webhook_document([told(42, summary="x")])
    assert shown.keys() == sent.keys()
    assert [a.keys() for a in shown["alerts"]] == [a.keys() for a in sent["alerts"]]
