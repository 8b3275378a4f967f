"""Which account a command works in: `--account`, else SCHEDCTL_ACCOUNT, else `default`
(SPEC §11, §12), and how lists and "not found" errors name it; on both dialects."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from schedctl.db.database import Database
from schedctl.db.schema import heartbeats, users
from support.cli import CliRunner, Result

CONFIG = '[reports.queries.ping]\nsql = "select 1 as one"\naccounts = "*"\n'
ACME = {"SCHEDCTL_ACCOUNT": "acme"}


@pytest.fixture
def run(cli: CliRunner, db_url: str, tmp_path: Path) -> Any:
    config = tmp_path / "schedctl.toml"
    config.write_text(CONFIG)

    def invoke(*args: str, env: dict[str, str] | None = None) -> Result:
        extra = {"SCHEDCTL_CONFIG": str(config), "SCHEDCTL_NOW": "2026-06-01T08:00:00Z"}
        return cli(*args, db_url=db_url, env={**extra, **(env or {})})

    return invoke


def ok(result: Result) -> Any:
    assert result.returncode == 0, result.stderr
    return result.json


def acme_schedule(run: Any) -> str:
    ok(run("accounts", "create", "acme", "--json"))
    created = run(
        "schedules", "create", "--name", "acme-report", "--kind", "sql", "--param",
        "query=ping", "--to", "a@example.com", "--cadence", "daily", "--at", "09:00",
        "--account", "acme", "--json",
    )  # fmt: skip
    return str(ok(created)["id"])


def test_schedctl_account_is_the_default_of_every_account_option(run: Any) -> None:
    sid = acme_schedule(run)

    listed = ok(run("schedules", "list", "--json", env=ACME))
    assert [s["id"] for s in listed["schedules"]] == [sid]
    assert listed["account"] == "acme"
    assert ok(run("schedules", "show", sid, "--json", env=ACME))["name"] == "acme-report"
    ok(run("users", "add", "ann@example.com", "--json", env=ACME))
    assert [u["email"] for u in ok(run("users", "list", "--json", env=ACME))["users"]] == [
        "ann@example.com"
    ]
    backfilled = run(
        "schedules", "backfill", sid, "--from", "2026-05-01T00:00:00Z",
        "--to", "2026-05-01T23:00:00Z", "--json", env=ACME,
    )  # fmt: skip
    assert ok(backfilled)["runs_created"] == 1

    # The flag wins over the variable.
    default = ok(run("users", "list", "--account", "default", "--json", env=ACME))
    assert (default["users"], default["account"]) == ([], "default")
    shown = run("schedules", "show", sid, "--account", "default", env=ACME)
    assert shown.returncode == 2
    assert f"no schedule {sid} in account 'default'" in shown.stderr
    # Without either, the `default` account, named in the error.
    shown = run("schedules", "show", sid)
    assert shown.stderr == f"schedctl: error: no schedule {sid} in account 'default'\n"


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("nope", "SCHEDCTL_ACCOUNT: no account 'nope'"),
        ("999999", "SCHEDCTL_ACCOUNT: no account '999999'"),
        ("  ", "SCHEDCTL_ACCOUNT: must name an account"),
    ],
)
def test_an_unknown_schedctl_account_is_one_line_exit_2_and_writes_nothing(
    run: Any, db_url: str, value: str, message: str
) -> None:
    result = run("users", "add", "ann@example.com", env={"SCHEDCTL_ACCOUNT": value})
    assert (result.returncode, result.stdout) == (2, "")
    assert result.stderr.count("\n") == 1, result.stderr
    assert message in result.stderr
    with Database(db_url, environ={}) as db:
        written = db.transaction(
            lambda conn: [
                conn.execute(sa.select(sa.func.count()).select_from(table)).scalar()
                for table in (users, heartbeats)
            ]
        )
    assert written == [0, 0]


LISTS = [
    ("schedules", "list"),
    ("users", "list"),
    ("messages", "list"),
    ("events", "list"),
    ("suppressions", "list"),
]


@pytest.mark.parametrize("command", LISTS, ids=" ".join)
def test_a_list_says_which_account_it_shows(run: Any, command: tuple[str, str]) -> None:
    ok(run("accounts", "create", "acme", "--json"))

    human = run(*command, env=ACME)
    assert human.returncode == 0, human.stderr
    assert human.stdout.splitlines()[0] == f"{command[0]} in account 'acme':"
    assert ok(run(*command, "--json", env=ACME))["account"] == "acme"
    assert ok(run(*command, "--json"))["account"] == "default"


def test_an_account_cannot_be_named_as_the_wildcard(run: Any) -> None:
    # A report query's `accounts = "*"` means every account; an account named "*" made
    # `accounts = ["*"]` mean it too (found by review).
    refused = run("accounts", "create", "*")
    assert refused.returncode == 2, refused.stderr
    assert "not '*'" in refused.stderr
    assert [a["name"] for a in ok(run("accounts", "list", "--json"))["accounts"]] == ["default"]


@pytest.mark.parametrize(
    ("name", "said"),
    [
        ("acme\u200b", "visible characters"),  # a zero-width space
        ("\u202eacme", "visible characters"),  # a right-to-left override
        ("ACME", "differs from it only in case"),
        ("\uff41cme", "width or form"),  # a full-width a
    ],
)
def test_an_account_name_that_lists_like_another_is_refused(run: Any, name: str, said: str) -> None:
    # Found by review: `acme` and `acme` followed by a zero-width space listed alike.
    ok(run("accounts", "create", "acme", "--json"))
    refused = run("accounts", "create", name)
    assert refused.returncode == 2, refused.stderr
    [line] = refused.stderr.splitlines()
    assert said in line
    names = [a["name"] for a in ok(run("accounts", "list", "--json"))["accounts"]]
    assert names == ["default", "acme"]
