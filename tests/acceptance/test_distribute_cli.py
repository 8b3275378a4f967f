"""`schedctl distribute` through the CLI, on a SQLite and a PostgreSQL store.

The data sources and destinations are SQLite files here (the cross-engine day is in
test_distribute_day.py): bad configuration and bad flags (exit 2, nothing written),
skips, failures naming their stage (exit 1, or 75 when a database is unreachable),
backfills, resuming after a destination was fixed, the operators' mail in English and
Russian, and the preview writing nothing.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sqlite3
from datetime import date
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.engine import make_url

from support.databases import connect_pg, login_role
from support.distribute import expected_rows
from support.distribute_files import CAMPAIGNS, DAY, NOW, Files, store
from support.processes import Schedctl


def test_a_day_is_distributed_once_and_mailed(files: Files) -> None:
    result = files.run("--json")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["status"] == "completed"
    assert data["date"] == "2026-11-18"
    assert [c["id"] for c in data["campaigns"]] == ["SC00000001", "SC00000002"]
    assert [c["users"] for c in data["campaigns"]] == [200, 200]
    assert data["campaigns"][0]["groups"] == {"A": 40, "B": 40, "C": 40, "D": 40, "E": 40}
    expected = expected_rows(files.ids, DAY, CAMPAIGNS)

    def normal(rows: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
        return sorted((r[0], r[1], date.fromisoformat(r[2]), date.fromisoformat(r[3]), *r[4:])
                      for r in rows)  # fmt: skip

    assert normal(files.rows("dssb", "sc_control")) == sorted(expected["control"])
    assert normal(files.rows("dssb", "sc_target")) == sorted(expected["target"])
    assert normal(files.rows("spss", "sc_mirror")) == sorted(expected["target"])
    again = files.run("--json")
    assert json.loads(again.stdout)["status"] == "already_done"
    backfill = files.run("--json", "--date", "2026-11-18")
    assert json.loads(backfill.stdout)["status"] == "already_done"
    (mail,) = files.mails()
    assert mail["Subject"] == "\u2705 Distribution for 2026-11-18 completed: 400 users distributed"
    attachment = next(p for p in mail.iter_attachments())
    assert attachment.get_filename() == "distribute-2026-11-18.json"
    assert json.loads(attachment.get_content())["status"] == "completed"
    body = mail.get_body(("plain",)).get_content()  # type: ignore[union-attr]
    assert "SC00000002" in body
    assert not any(i in body or i in attachment.get_content().decode() for i in files.ids)


def test_concurrent_runs_write_once(files: Files) -> None:
    import subprocess

    from support.cli import SCHEDCTL

    env = {k: v for k, v in os.environ.items() if not k.startswith("SCHEDCTL_")}
    env.update(
        SCHEDCTL_DATABASE_URL=files.db_url, SCHEDCTL_CONFIG=str(files.config()),
        SCHEDCTL_NOW=NOW, SCHEDCTL_MAIL_BACKEND="file",
        SCHEDCTL_MAIL_FILE_DIR=str(files.tmp / "mail"),
    )  # fmt: skip
    processes = [
        Schedctl([str(SCHEDCTL), "distribute", "--json"], env=env,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(3)
    ]  # fmt: skip
    outcomes = [p.communicate(timeout=120) for p in processes]
    assert [p.returncode for p in processes] == [0, 0, 0], outcomes
    statuses = sorted(json.loads(out)["status"] for out, _ in outcomes)
    assert statuses == ["already_done", "already_done", "completed"], outcomes
    assert len(files.rows("dssb", "sc_target")) == 320
    assert len(set(files.rows("dssb", "sc_target"))) == 320
    assert len(files.rows("spss", "sc_mirror")) == 320
    assert len(files.mails()) == 1


def test_a_backfill_of_an_earlier_date(files: Files) -> None:
    result = files.run("--json", "--date", "2026-11-17")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert [c["id"] for c in data["campaigns"]] == ["SC00000001"]  # SC2 runs on the 18th only
    assert data["distributed"] == 400
    assert {r[1].split(".")[0] for r in files.rows("dssb", "sc_target")} == {"SC00000001"}


def test_the_preview_writes_nothing_anywhere(files: Files) -> None:
    before = files.counts()
    store_before = store(files, "SELECT count(*) FROM heartbeats")
    result = files.run("--preview", "--json")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["status"] == "preview"
    assert (data["available"], data["distinct"], data["distributed"]) == (450, 400, 400)
    assert len(data["sample"]) == 5
    assert all(s[4:10] == "******" for s in data["sample"])
    assert files.counts() == before
    assert store(files, "SELECT count(*) FROM heartbeats") == store_before
    assert store(files, "SELECT count(*) FROM distributions") == [(0,)]
    human = files.run("--preview")
    assert "preview: nothing was written" in human.stdout
    assert not any(i in human.stdout for i in files.ids)


def test_no_active_campaign_is_a_skip_mailed_once_in_russian(files: Files) -> None:
    config = files.config('locale = "ru"')
    for _ in range(2):
        result = files.run("--json", "--date", "2026-09-01", config=config)
        assert result.returncode == 0, result.stderr
        data = json.loads(result.stdout)
        assert (data["status"], data["reason"]) == ("skipped", "no_active_campaigns")
    (mail,) = files.mails()
    assert mail["Subject"] == (
        "\u23ed\ufe0f Ежедневная дистрибуция за 2026-09-01 пропущена: нет активных кампаний"
    )
    assert files.counts()["sc_target"] == 0


def test_no_users_is_a_skip(files: Files) -> None:
    config = files.config(
        source=f"""
[distribute.source]
database_url = "sqlite:///{files.path("source")}"
query = "select iin from sc_1_120 where count_day = 6"
"""
    )
    result = files.run("--json", config=config)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["reason"] == "no_users"
    assert store(files, "SELECT status, reason FROM distributions") == [("skipped", "no_users")]


def test_an_unreachable_source_exits_75_names_the_stage_and_hides_the_password(
    files: Files, closed_port: int
) -> None:
    url = f"postgresql://reader:pa55w0rd-secret@127.0.0.1:{closed_port}/spss"
    config = files.config(
        source=f'[distribute.source]\ndatabase_url = "{url}"\nquery = "select 1"\n'
    )
    result = files.run("--json", config=config, SCHEDCTL_DB_RETRY_SECONDS="1")
    assert result.returncode == 75, result.stderr
    data = json.loads(result.stdout)
    assert (data["status"], data["stage"]) == ("failed", "source")
    assert "pa55w0rd" not in result.stdout + result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    (mail,) = files.mails()
    assert mail["Subject"] == "\u274c Distribution for 2026-11-18 failed at stage source"
    assert "pa55w0rd" not in mail.as_string()
    assert files.counts()["sc_target"] == 0


def test_a_broken_source_query_fails_with_exit_1(files: Files) -> None:
    config = files.config(
        source=f'[distribute.source]\ndatabase_url = "sqlite:///{files.path("source")}"\n'
        'query = "select iin from no_such_table"\n'
    )
    result = files.run("--json", config=config)
    assert result.returncode == 1, result.stderr
    assert json.loads(result.stdout)["stage"] == "source"
    assert "no_such_table" in result.stderr


def test_a_missing_destination_table_fails_and_a_rerun_resumes(files: Files) -> None:
    with sqlite3.connect(files.path("spss")) as conn:
        conn.execute("ALTER TABLE sc_mirror RENAME TO sc_mirror_moved")
    result = files.run("--json")
    assert result.returncode == 1, result.stderr
    data = json.loads(result.stdout)
    assert (data["status"], data["stage"]) == ("failed", "mirror")
    assert [d["status"] for d in data["destinations"]] == ["completed", "completed", "pending"]
    with sqlite3.connect(files.path("source")) as conn:
        conn.execute("DELETE FROM sc_1_120")  # the rerun never reads the source again
    with sqlite3.connect(files.path("spss")) as conn:
        conn.execute("ALTER TABLE sc_mirror_moved RENAME TO sc_mirror")
    rerun = files.run("--json")
    assert rerun.returncode == 0, rerun.stderr
    data = json.loads(rerun.stdout)
    assert (data["status"], data["resumed"]) == ("completed", True)
    assert len(files.rows("spss", "sc_mirror")) == len(files.rows("dssb", "sc_target")) == 320
    assert [d["inserted"] for d in data["destinations"]] == [80, 320, 320]
    assert sorted(m["Subject"] for m in files.mails()) == [
        "\u2705 Distribution for 2026-11-18 completed: 400 users distributed",
        "\u274c Distribution for 2026-11-18 failed at stage mirror",
    ]


@pytest.mark.parametrize(
    ("args", "extra", "message"),
    [
        (["--date", "2026-13-01"], "", "invalid date '2026-13-01' (expected YYYY-MM-DD)"),
        (["--date", "tomorrow"], "", "invalid date 'tomorrow'"),
        (["--date", "2026-11-19"], "", "--date 2026-11-19 is in the future"),
        ([], "batch_size = 0", "[distribute] batch_size: must be a whole number from 1"),
        ([], 'groups = ["A", "A"]', "[distribute] groups: a group is listed twice"),
        ([], 'control_groups = ["F"]', "control group 'F' is not one of groups"),
        ([], 'locale = "de"', "[distribute] locale: must be one of en|ru"),
        ([], 'group_id_format = "{campaign}.{x}"', "unknown field {x}"),
        ([], "wait = 5", "[distribute] wait: expected a duration"),
        ([], 'notify = ["ops"]', "[distribute] notify: invalid e-mail address 'ops'"),
        ([], "sault = 'x'", "unknown setting [distribute] sault (did you mean 'salt'?)"),
    ],
)  # fmt: skip
def test_bad_input_is_one_line_exit_2_and_writes_nothing(
    files: Files, args: list[str], extra: str, message: str
) -> None:
    result = files.run(*args, config=files.config(extra))
    assert result.returncode == 2, result.stderr
    assert message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert store(files, "SELECT count(*) FROM distributions") == [(0,)]
    assert store(files, "SELECT count(*) FROM heartbeats") == [(0,)]
    assert files.counts()["sc_target"] == 0


@pytest.mark.parametrize(
    ("tables", "message"),
    [
        ({"target": '[distribute.target]\ndatabase_url = "sqlite:///x.db"\ntable = "t"\n'},
         "[distribute] target: needs columns"),
        ({"target": '[distribute.target]\ndatabase_url = "sqlite:///x.db"\ntable = "t; drop"\n'
                    'columns = { id = "iin", group_id = "g" }\n'},
         "[distribute.target] table: must be a table name"),
        ({"target": '[distribute.target]\ndatabase_url = "sqlite:///x.db"\ntable = "t"\n'
                    'columns = { id = "iin", group_id = "iin" }\n'},
         "column 'iin' is given twice"),
        ({"source": '[distribute.source]\ndatabase_url = "mssql://u:hunter22@h/db"\n'
                    'query = "select 1"\n'},
         "[distribute.source] database_url: unsupported database 'mssql'"),
        ({"source": '[distribute.source]\ndatabase_url = "sqlite:///x.db"\n'
                    'query = "select iin from t where d = :day"\n'},
         "uses unknown parameter(s) :day (available: :business_date)"),
        # Found by review: a failed day was recorded and the operators mailed, exit 1.
        ({"source": '[distribute.source]\ndatabase_url ='
                    ' "postgresql://u:hunter22@127.0.0.1:5432/x?sslmode=bogus"\n'
                    'query = "select 1"\n'},
         'invalid sslmode value: "bogus"'),
        ({"target": ""}, "[distribute.target] is missing"),
        ({"campaigns": ""}, "[distribute.campaigns] is missing"),
    ],
)  # fmt: skip
def test_bad_tables_are_refused_naming_the_key(
    files: Files, tables: dict[str, str], message: str
) -> None:
    result = files.run(config=files.config(**tables))
    assert result.returncode == 2, result.stderr
    assert message in result.stderr
    assert "hunter22" not in result.stderr
    assert store(files, "SELECT count(*) FROM heartbeats") == [(0,)]
    assert store(files, "SELECT count(*) FROM distributions") == [(0,)]


def test_without_configuration_distribute_says_what_to_add(files: Files, tmp_path: Path) -> None:
    empty = tmp_path / "empty.toml"
    empty.write_text("")
    result = files.run(config=empty)
    assert result.returncode == 2
    assert "distribute is not configured" in result.stderr
    assert "[distribute.source]" in result.stderr


@pytest.mark.parametrize("dialect", [pytest.param("postgresql", marks=pytest.mark.postgres)])
def test_a_role_that_may_not_record_mail_still_distributes_and_queues_the_notice(
    files: Files,
) -> None:
    # The recording check refusing the operators' mail used to turn a completed day
    # into exit 1; the day is done, the mail waits for a tick that may record it.
    with login_role(files.db_url, "schedctl_nolog") as url:
        with connect_pg(str(make_url(url).database)) as admin:
            admin.execute(f'REVOKE INSERT ON email_log FROM "{make_url(url).username}"')  # type: ignore[arg-type]
        result = dataclasses.replace(files, db_url=url).run("--json")
    assert result.returncode == 0, result
    assert json.loads(result.stdout)["status"] == "completed"
    assert "the notification stays queued: schedctl's login role" in result.stderr
    assert "may not record the mail it sends (no INSERT on email_log)" in result.stderr
    assert files.mails() == []
    assert store(files, "SELECT type, status FROM messages") == [("DISTRIBUTE", "scheduled")]
    env = {
        "SCHEDCTL_CONFIG": str(files.config()),
        "SCHEDCTL_NOW": "2026-11-18T06:01:00Z",  # a minute after the run queued it
        "SCHEDCTL_MAIL_BACKEND": "file",
        "SCHEDCTL_MAIL_FILE_DIR": str(files.tmp / "mail"),
    }
    tick = files.cli("tick", db_url=files.db_url, env=env)  # the full grants send it
    assert tick.returncode == 0, tick
    (mail,) = files.mails()
    assert "completed" in mail["Subject"]


@pytest.mark.parametrize("dialect", [pytest.param("postgresql", marks=pytest.mark.postgres)])
def test_a_refused_record_of_the_notice_leaves_the_day_completed(files: Files) -> None:
    # A trigger refusing the notice's email_log row (after the mail went out) used to
    # make the completed day exit 1 and lose its JSON result.
    _refuse_in_store(files, "INSERT ON email_log FOR EACH ROW", "email_log is frozen")
    result = files.run("--json")
    assert result.returncode == 0, result
    assert json.loads(result.stdout)["status"] == "completed"
    [line] = result.stderr.strip().splitlines()
    assert "the notification's sending did not complete (it may have gone out;" in line
    assert "email_log is frozen (raised by a trigger or function in the database)" in line


@pytest.mark.parametrize("dialect", [pytest.param("postgresql", marks=pytest.mark.postgres)])
def test_a_refusal_by_schedctls_database_is_told_as_a_critical_failure(files: Files) -> None:
    # A trigger refusing the day's completion went unmailed and unalerted once its
    # error became a one-line database error instead of an internal error.
    _refuse_in_store(
        files,
        "UPDATE ON distributions FOR EACH ROW WHEN (NEW.status = 'completed')",
        "distributions are frozen",
    )
    result = files.run()
    assert result.returncode == 1, result
    [line] = result.stderr.strip().splitlines()
    assert line.endswith(
        "distributions are frozen (raised by a trigger or function in the database)"
    ), line
    (mail,) = files.mails()
    assert "Critical failure" in mail["Subject"], mail["Subject"]
    assert store(files, "SELECT kind FROM alerts") == [("distribution_failed",)]


def _refuse_in_store(files: Files, event: str, message: str) -> None:
    """A trigger in schedctl's own database, BEFORE ``event``, that RAISEs ``message``
    (with a data error's SQLSTATE: how a RAISE is told does not depend on it)."""
    with connect_pg(str(make_url(files.db_url).database)) as owner:
        owner.execute(
            "CREATE FUNCTION frozen() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN"
            f" RAISE EXCEPTION '{message}' USING ERRCODE = '22023'; END $$"  # type: ignore[arg-type]
        )
        owner.execute(f"CREATE TRIGGER frozen BEFORE {event} EXECUTE FUNCTION frozen()")  # type: ignore[arg-type]
