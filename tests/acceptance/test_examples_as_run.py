"""The shipped crontab and GitHub Actions workflow, run the way cron and Actions run
them (SPEC §12, "As shipped").

Cron: each job line with `env -i` (only the crontab's variables, plus HOME, LOGNAME
and SHELL as cron sets them) under `/bin/sh -c`, in the home directory. Actions: each
`run:` step with `bash --noprofile --norc -eo pipefail -c` (the workflow's shell) and
the job's environment, its secrets replaced by test values, its `if:` evaluated.
Only PATH (this virtualenv's bin first), SCHEDCTL_CONFIG (a test file naming the
test database and a loopback SMTP server) and the secrets are replaced.
"""

from __future__ import annotations

import getpass
import re
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from schedctl import heartbeat
from schedctl.db.database import Database
from support.cli import SCHEDCTL
from support.smtp_server import SmtpServer

REPO = Path(__file__).resolve().parents[2]
CRONTAB = REPO / "crontab.example"
WORKFLOW = REPO / "examples" / "github-actions" / "schedctl.yml"
BIN = SCHEDCTL.parent

QUERIES = """
[reports.queries.ping]
sql = "select 1 as one"

[reports.queries.broken]
sql = "select * from no_such_table"
"""


def config_text(
    smtp: SmtpServer, *, database_url: str | None = None, unsubscribe: bool = True
) -> str:
    """A configuration such as an operator writes: mail through the loopback server."""
    top = f'database_url = "{database_url}"\n' if database_url else ""
    links = (
        '[unsubscribe]\nbase_url = "https://mail.example.com/u"\n'
        'secret = "an-unsubscribe-secret-of-32-chars"\n'
    )
    return (
        top
        + '[mail]\nbackend = "smtp"\nfrom = "schedctl@example.com"\n'
        + f'[smtp]\nhost = "127.0.0.1"\nport = {smtp.port}\ntls = "none"\ntimeout = 5\n'
        + (links if unsubscribe else "")
        + QUERIES
    )


def two_days_ago() -> str:
    return (datetime.now(UTC) - timedelta(days=2)).isoformat()


def prepare_day(cli: Any, db_url: str, config: Path, *, query: str = "ping") -> None:
    """A report due now (created two days ago, daily at midnight UTC) and a digest user
    with a notification: a day's work for tick and digest."""
    env = {"SCHEDCTL_CONFIG": str(config), "SCHEDCTL_NOW": two_days_ago()}
    for args in (
        ["schedules", "create", "--name", "Daily", "--kind", "sql", "--param",
         f"query={query}", "--cadence", "daily", "--at", "00:00", "--to", "ops@example.com"],
        ["users", "add", "reader@example.com", "--digest-at", "00:00"],
        ["notify", "--user", "reader@example.com", "--title", "Invoice paid"],
    ):  # fmt: skip
        result = cli(*args, db_url=db_url, env=env)
        assert result.returncode == 0, (args, result.stderr)


def recipients(smtp: SmtpServer) -> list[str]:
    return sorted(r for envelope in smtp.accepted for r in envelope.rcpt_tos)


# --- cron ------------------------------------------------------------------------------

_ASSIGNMENT = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*)\s*=\s*(.*)$")


@dataclass
class Crontab:
    variables: dict[str, str]
    jobs: list[str]  # the command of each active line, in file order
    disabled: list[str]  # lines commented out that are jobs (fields and command)


def parse_crontab(text: str) -> Crontab:
    variables: dict[str, str] = {}
    jobs: list[str] = []
    disabled: list[str] = []
    for raw in text.splitlines():
        line = raw.strip()
        if not line:
            continue
        if line.startswith("#"):
            words = line[1:].split()
            if len(words) > 5 and all(re.fullmatch(r"[\d*/,-]+", w) for w in words[:5]):
                disabled.append(" ".join(words))
            continue
        assignment = _ASSIGNMENT.match(line)
        if assignment and not line[0].isdigit() and not line.startswith("*"):
            variables[assignment[1]] = assignment[2].strip().strip('"')
            continue
        fields = line.split(None, 5)
        assert len(fields) == 6, line
        jobs.append(fields[5])
    return Crontab(variables, jobs, disabled)


@pytest.fixture
def crontab() -> Crontab:
    return parse_crontab(CRONTAB.read_text())


@dataclass
class CronHost:
    """A cron daemon's view: the crontab's variables, a home directory, /bin/sh."""

    home: Path
    variables: dict[str, str]

    def run(self, line: str) -> subprocess.CompletedProcess[str]:
        assignments = [f"{k}={v}" for k, v in self.variables.items()]
        return subprocess.run(
            ["/usr/bin/env", "-i", *assignments, "/bin/sh", "-c", line],
            cwd=self.home, capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip


@pytest.fixture
def cron(crontab: Crontab, db_url: str, smtp: SmtpServer, tmp_path: Path) -> CronHost:
    home = tmp_path / "home"
    home.mkdir()
    config = tmp_path / "schedctl.toml"
    # No unsubscribe link configured: a warning for `config check` and `heartbeat`, which
    # the jobs never print (cron would mail it every minute).
    config.write_text(config_text(smtp, database_url=db_url, unsubscribe=False))
    variables = {"HOME": str(home), "LOGNAME": getpass.getuser(), "SHELL": "/bin/sh"}
    variables.update(crontab.variables)
    variables["PATH"] = f"{BIN}:{crontab.variables['PATH']}"
    variables["SCHEDCTL_CONFIG"] = str(config)
    return CronHost(home, variables)


def test_the_crontab_marks_its_values_and_runs_every_job_quietly(crontab: Crontab) -> None:
    assert set(crontab.variables) == {"SHELL", "PATH", "SCHEDCTL_CONFIG", "MAILTO"}
    assert [job.split()[:2] for job in crontab.jobs] == [["schedctl", "--quiet"]] * 4
    assert [job.split()[2] for job in crontab.jobs] == ["tick", "digest", "reconcile", "heartbeat"]
    assert not any("db upgrade" in job for job in crontab.jobs)
    # distribute exits 2 where it is not configured: shipped commented out.
    [distribute] = crontab.disabled
    assert distribute.split()[5:] == ["schedctl", "--quiet", "distribute"]


def test_a_clean_day_from_cron_prints_nothing(
    cli, cron: CronHost, crontab: Crontab, db_url: str, smtp: SmtpServer
) -> None:
    prepare_day(cli, db_url, Path(cron.variables["SCHEDCTL_CONFIG"]))
    for line in crontab.jobs:
        result = cron.run(line)
        assert (result.returncode, result.stdout, result.stderr) == (0, "", ""), line
    assert recipients(smtp) == ["ops@example.com", "reader@example.com"]


def test_a_failing_run_from_cron_prints_on_stderr_and_the_next_line_runs(
    cli, cron: CronHost, crontab: Crontab, db_url: str, smtp: SmtpServer
) -> None:
    prepare_day(cli, db_url, Path(cron.variables["SCHEDCTL_CONFIG"]), query="broken")
    tick, digest = crontab.jobs[:2]
    failed = cron.run(tick)
    assert failed.returncode == 1
    assert failed.stdout == ""
    assert "no_such_table" in failed.stderr
    after = cron.run(digest)
    assert (after.returncode, after.stdout, after.stderr) == (0, "", "")
    assert recipients(smtp) == ["reader@example.com"]


def test_a_heartbeat_that_is_not_green_prints_one_line_from_cron(
    cron: CronHost, crontab: Crontab, db_url: str
) -> None:
    with Database(db_url, environ={}) as db:
        late = db.now() - timedelta(minutes=20)
        row = heartbeat.start_run(db, "tick", late)
        heartbeat.finish_run(db, row, finished_at=late, exit_code=0, counts={})
    [line] = [job for job in crontab.jobs if " heartbeat " in f"{job} "]
    result = cron.run(line)
    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr.splitlines() == ["schedctl: heartbeat yellow: tick: last success 20m ago"]


# --- GitHub Actions --------------------------------------------------------------------

_TOKEN = re.compile(
    r"\s*(?:(?P<string>'(?:[^']|'')*')|(?P<op>&&|\|\||==|!=|!|\(|\))"
    r"|(?P<name>[A-Za-z_][\w-]*(?:\.[A-Za-z_][\w-]*)*)(?P<call>\(\))?)"
)


def evaluate(expression: str, context: Mapping[str, Any], functions: Mapping[str, bool]) -> Any:
    """A GitHub Actions expression of the kind the workflow uses: literals, context
    paths, status functions, !, ==, !=, && and || with parentheses."""
    python: list[str] = []
    values: list[Any] = []
    position = 0
    text = expression.strip()
    while position < len(text):
        match = _TOKEN.match(text, position)
        assert match, f"cannot read {text[position:]!r}"
        position = match.end()
        if match["string"] is not None:
            values.append(match["string"][1:-1].replace("''", "'"))
        elif match["op"] is not None:
            python.append({"&&": " and ", "||": " or ", "!": " not "}.get(match["op"], match["op"]))
            continue
        elif match["call"]:
            values.append(functions[match["name"]])
        else:
            value: Any = context
            for part in match["name"].split("."):
                value = value.get(part) if isinstance(value, Mapping) else None
            values.append(value)
        python.append(f"_v[{len(values) - 1}]")
    return eval("".join(python), {"__builtins__": {}}, {"_v": values})  # noqa: S307


@dataclass
class Step:
    name: str
    ran: bool
    returncode: int | None = None
    stdout: str = ""
    stderr: str = ""


@dataclass
class JobRun:
    steps: list[Step] = field(default_factory=list)

    @property
    def failed(self) -> bool:
        return any(s.ran and s.returncode != 0 for s in self.steps)

    def step(self, name: str) -> Step:
        return next(s for s in self.steps if s.name == name)

    @property
    def ran(self) -> list[str]:
        return [s.name for s in self.steps if s.ran]


def load_workflow() -> dict[Any, Any]:
    workflow = yaml.safe_load(WORKFLOW.read_text())
    workflow["on"] = workflow.pop(True, workflow.get("on"))  # YAML 1.1 reads `on` as true
    return workflow


def resolve(value: str, secrets: Mapping[str, str]) -> str:
    """An env value with its ${{ secrets.NAME }} replaced (other expressions refused)."""

    def secret(match: re.Match[str]) -> str:
        return secrets.get(match[1], "")  # an unset secret is empty, as in Actions

    resolved = re.sub(r"\$\{\{\s*secrets\.(\w+)\s*\}\}", secret, str(value))
    assert "${{" not in resolved, value
    return resolved


def run_job(
    workspace: Path,
    *,
    event: str,
    schedule: str | None = None,
    command: str | None = None,
    secrets: Mapping[str, str],
    edits: Mapping[str, str] | None = None,
    execute: bool = True,
) -> JobRun:
    """Run the workflow's job as Actions does for one event: each step's `if:` is
    evaluated, each `run:` runs with the workflow's shell in the workspace. `uses:`
    steps and the install step (schedctl is installed here already) are taken as
    succeeded; ``execute=False`` only says which steps would run."""
    workflow = load_workflow()
    assert workflow["defaults"]["run"]["shell"] == "bash"
    (job,) = workflow["jobs"].values()
    env = {k: resolve(v, secrets) for k, v in job["env"].items()}
    env.update(edits or {})
    context: dict[str, Any] = {
        "github": {"event_name": event, "event": {"schedule": schedule}},
        "inputs": {"command": command},
        "env": env,
        "steps": {},
    }
    result = JobRun()
    for spec in job["steps"]:
        name = spec.get("name") or spec["uses"]
        functions = {
            "success": not result.failed,
            "failure": result.failed,
            "cancelled": False,
            "always": True,
        }
        condition = spec.get("if", "success()")
        if not evaluate(condition, context, functions):
            result.steps.append(Step(name, ran=False))
            if "id" in spec:
                context["steps"][spec["id"]] = {"outcome": "skipped"}
            continue
        step = Step(name, ran=True, returncode=0)
        if "run" in spec and spec.get("id") != "install" and execute:
            assert "${{" not in spec["run"], spec["run"]  # no expressions inside scripts
            done = subprocess.run(
                ["bash", "--noprofile", "--norc", "-eo", "pipefail", "-c", spec["run"]],
                cwd=workspace, capture_output=True, text=True, timeout=120, check=False,
                env={"PATH": f"{BIN}:/usr/bin:/bin", "HOME": str(workspace), **env,
                     **{k: resolve(v, secrets) for k, v in spec.get("env", {}).items()}},
            )  # fmt: skip
            step = Step(name, True, done.returncode, done.stdout, done.stderr)
        result.steps.append(step)
        if "id" in spec:
            context["steps"][spec["id"]] = {
                "outcome": "success" if step.returncode == 0 else "failure"
            }
    return result


FREQUENT = {"event": "schedule", "schedule": "*/5 * * * *"}
NIGHTLY = {"event": "schedule", "schedule": "30 2 * * *"}
SETUP = ["actions/checkout@v4", "actions/setup-python@v5", "Install schedctl"]


def test_the_workflow_triggers_match_its_conditions() -> None:
    crons = [entry["cron"] for entry in load_workflow()["on"]["schedule"]]
    assert crons == [FREQUENT["schedule"], NIGHTLY["schedule"]]


@pytest.mark.parametrize(
    ("trigger", "edits", "jobs"),
    [
        (FREQUENT, {}, ["tick", "digest", "heartbeat"]),
        (NIGHTLY, {}, ["reconcile", "heartbeat"]),
        (NIGHTLY, {"SCHEDCTL_DISTRIBUTE": "true"}, ["distribute", "reconcile", "heartbeat"]),
        ({"event": "workflow_dispatch", "command": "db upgrade"}, {}, ["db upgrade"]),
        ({"event": "workflow_dispatch", "command": "digest"}, {}, ["digest"]),
    ],
)
def test_each_event_runs_its_jobs_and_only_a_person_runs_db_upgrade(
    tmp_path: Path, trigger: dict[str, str], edits: dict[str, str], jobs: list[str]
) -> None:
    run = run_job(tmp_path, secrets={}, edits=edits, execute=False, **trigger)
    assert run.ran == [*SETUP, *jobs]


@pytest.fixture
def workspace(tmp_path: Path, smtp: SmtpServer) -> Path:
    """The checkout: the repository's schedctl.toml (no secrets in it)."""
    checkout = tmp_path / "workspace"
    checkout.mkdir()
    (checkout / "schedctl.toml").write_text(config_text(smtp))
    return checkout


def test_a_scheduled_run_does_the_days_work_and_ends_green(
    cli, workspace: Path, db_url: str, smtp: SmtpServer
) -> None:
    prepare_day(cli, db_url, workspace / "schedctl.toml")
    run = run_job(workspace, secrets={"SCHEDCTL_DATABASE_URL": db_url}, **FREQUENT)
    assert not run.failed, [(s.name, s.returncode, s.stderr) for s in run.steps]
    assert run.ran == [*SETUP, "tick", "digest", "heartbeat"]
    assert recipients(smtp) == ["ops@example.com", "reader@example.com"]


def test_a_failing_tick_does_not_stop_digest_and_the_run_ends_red(
    cli, workspace: Path, db_url: str, smtp: SmtpServer
) -> None:
    prepare_day(cli, db_url, workspace / "schedctl.toml", query="broken")
    run = run_job(workspace, secrets={"SCHEDCTL_DATABASE_URL": db_url}, **FREQUENT)
    assert run.failed
    assert run.step("tick").returncode == 1
    assert "no_such_table" in run.step("tick").stderr
    assert run.step("digest").returncode == 0
    assert recipients(smtp) == ["reader@example.com"]
    assert run.step("heartbeat").ran


def test_an_unconfigured_distribute_does_not_stop_reconcile(workspace: Path, db_url: str) -> None:
    secrets = {"SCHEDCTL_DATABASE_URL": db_url}
    enabled = run_job(workspace, secrets=secrets, edits={"SCHEDCTL_DISTRIBUTE": "true"}, **NIGHTLY)
    assert enabled.failed
    assert enabled.step("distribute").returncode == 2
    assert "distribute is not configured" in enabled.step("distribute").stderr
    assert enabled.step("reconcile").returncode == 0
    shipped = run_job(workspace, secrets=secrets, **NIGHTLY)
    assert not shipped.failed, [(s.name, s.returncode, s.stderr) for s in shipped.steps]
    assert not shipped.step("distribute").ran


def test_without_the_config_file_every_job_says_so(tmp_path: Path, db_url: str) -> None:
    run = run_job(tmp_path, secrets={"SCHEDCTL_DATABASE_URL": db_url}, **FREQUENT)
    for name in ("tick", "digest", "heartbeat"):
        assert run.step(name).returncode in (2, 3)
        assert "config file not found: schedctl.toml" in run.step(name).stderr


def test_the_example_configuration_loads_with_the_secrets_in_the_environment(
    cli, tmp_path: Path
) -> None:
    config = REPO / "examples" / "github-actions" / "schedctl.toml"
    env = {"SCHEDCTL_CONFIG": str(config), "SCHEDCTL_SMTP_HOST": "smtp.example.com"}
    result = cli("config", "check", "--json", db_url=f"sqlite:///{tmp_path / 'none.db'}", env=env)
    # Only the database is missing (this test made none): every setting loaded.
    assert result.returncode == 2, result.stderr
    [error] = result.json["errors"]
    assert "none.db" in error
