"""A destination that refuses the copy -- a unique index, a trigger raising -- fails
the stage like a missing table: one line on stderr naming the
stage with the IDs masked, exit 1, the stage recorded and the day's lease let go,
one mail to the operators per distinct failure; a rerun after the destination is
fixed completes the day.

The destinations are PostgreSQL tables (rows go in by COPY there); the source and
the campaigns are SQLite files; schedctl's own store is SQLite and PostgreSQL.
"""

from __future__ import annotations

import random
import re
from datetime import date
from pathlib import Path

import pytest

from support.distribute import Campaign
from support.distribute_endpoints import InProcess, day_config, endpoint_database, execute, fetch

CAMPAIGN = Campaign("SC00000001", date(2026, 11, 1), date(2026, 11, 30))
IDS = sorted({f"{random.Random(7).randrange(10**11, 10**12) + n}" for n in range(60)})

pytestmark = [pytest.mark.postgres]

REFUSING_TRIGGER = [
    """CREATE FUNCTION refuse_iin() RETURNS trigger AS $$
BEGIN
  IF starts_with(NEW.theory_id, 'SC00000001.') THEN
    RAISE EXCEPTION USING MESSAGE = 'iin ' || NEW.iin || ' is refused (row ' || NEW::text || ')';
  END IF;
  RETURN NEW;
END $$ LANGUAGE plpgsql""",
    "CREATE TRIGGER refuse BEFORE INSERT ON sc_mirror FOR EACH ROW EXECUTE FUNCTION refuse_iin()",
]


def _leaked(*texts: str) -> set[str]:
    """The source's IDs that appear in full in ``texts``."""
    return set(re.findall(r"\d{12}", " ".join(texts))) & set(IDS)


def test_a_refused_copy_fails_the_stage_lets_the_day_go_and_a_rerun_completes(
    db_url: str,
    request: pytest.FixtureRequest,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    source, dssb = f"sqlite:///{tmp_path / 'source.db'}", f"sqlite:///{tmp_path / 'dssb.db'}"
    execute(
        source,
        "CREATE TABLE sc_1_120 (iin TEXT, tab1 TEXT)",
        "INSERT INTO sc_1_120 VALUES (:iin, :tab1)",
        params=[{"iin": i, "tab1": f"region of {i}"} for i in IDS],
    )
    execute(
        dssb,
        "CREATE TABLE theories (theory_id TEXT, theory_start_date DATE, theory_end_date DATE)",
        "INSERT INTO theories VALUES (:i, :s, :e)",
        params=[{"i": CAMPAIGN.id, "s": CAMPAIGN.start, "e": CAMPAIGN.end}],
    )
    with endpoint_database("postgresql", request, tmp_path / "unused.db") as url:
        execute(
            url,
            *[
                f"CREATE TABLE sc_{name} (iin VARCHAR(20), theory_id VARCHAR(50),"
                " date_start DATE, date_end DATE, insert_datetime TIMESTAMP, tab1 TEXT)"
                for name in ("control", "target", "mirror")
            ],
            "CREATE UNIQUE INDEX sc_mirror_iin ON sc_mirror (iin)",
            # Every ID is in the mirror already, for another campaign.
            "INSERT INTO sc_mirror (iin, theory_id) VALUES (:iin, 'SC00000000.2')",
            params=[{"iin": i} for i in IDS],
        )
        config = day_config(
            tmp_path / "schedctl.toml",
            source_url=source,
            source_query="select iin, tab1 from sc_1_120",
            campaigns_url=dssb,
            destinations_url=url,
        )
        schedctl = InProcess(monkeypatch, capsys, db_url, config, tmp_path / "mail")

        def fails_at_the_mirror(mails: int) -> str:
            result = schedctl("distribute", "--json")
            assert result.code == 1, result.err
            data = result.data
            assert (data["status"], data["stage"]) == ("failed", "mirror")
            assert [d["status"] for d in data["destinations"]] == [
                "completed", "completed", "pending",
            ]  # fmt: skip
            (line,) = result.err.strip().splitlines()
            assert line.startswith("schedctl: error: distribute 2026-11-18: failed: mirror ")
            assert not _leaked(result.out, result.err), result.err
            assert "region of" not in result.out + result.err  # no value of the row
            day = fetch(
                db_url, "SELECT status, stage, lease_owner, lease_expires_at FROM distributions"
            )
            assert day == [("failed", "mirror", None, None)]
            sent = schedctl.mails()
            assert len(sent) == mails
            assert (
                sent[-1]["Subject"] == "\u274c Distribution for 2026-11-18 failed at stage mirror"
            )
            assert not _leaked(*(m.as_string() for m in sent))
            return line

        unique = fails_at_the_mirror(mails=1)
        assert "duplicate key value violates unique constraint" in unique, unique

        execute(url, "DROP INDEX sc_mirror_iin", *REFUSING_TRIGGER)
        refused = fails_at_the_mirror(mails=2)  # another failure: mailed too
        assert re.search(r"iin \d{4}\*{6}\d{2} is refused", refused), refused
        assert fails_at_the_mirror(mails=2) == refused  # the same failure: not again

        execute(url, "DROP TRIGGER refuse ON sc_mirror")
        rerun = schedctl("distribute", "--json")
        assert rerun.code == 0, rerun.err
        assert (rerun.data["status"], rerun.data["resumed"]) == ("completed", True)
        target = sorted(fetch(url, "SELECT iin FROM sc_target"))
        mirror = fetch(url, "SELECT iin FROM sc_mirror WHERE theory_id <> 'SC00000000.2'")
        assert sorted(mirror) == target
        assert len(target) == len(set(target)) == 48
        assert fetch(db_url, "SELECT status, stage, lease_owner FROM distributions") == [
            ("completed", None, None)
        ]
        assert len(schedctl.mails()) == 3
