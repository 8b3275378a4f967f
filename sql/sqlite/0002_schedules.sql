-- Schedules and their runs (SPEC §3, §4).

CREATE TABLE schedules (
    id              INTEGER PRIMARY KEY AUTOINCREMENT NOT NULL,
    account_id      INTEGER NOT NULL REFERENCES accounts (id),
    name            TEXT NOT NULL,
    kind            TEXT NOT NULL,
    cadence         TEXT NOT NULL,
    at_time         TEXT,
    weekday         INTEGER,
    day_of_month    TEXT,
    cron            TEXT,
    tz              TEXT NOT NULL,
    recipients      JSON NOT NULL,
    params          JSON NOT NULL,
    active          BOOLEAN NOT NULL,
    catchup         TEXT NOT NULL,
    max_lateness_s  INTEGER,
    next_run_at     DATETIME,
    last_run_at     DATETIME,
    created_at      DATETIME NOT NULL,
    updated_at      DATETIME NOT NULL,
    CONSTRAINT schedules_account_name_key UNIQUE (account_id, name)
);

CREATE INDEX schedules_due ON schedules (active, next_run_at);

CREATE TABLE schedule_runs (
    id                INTEGER PRIMARY KEY AUTOINCREMENT NOT NULL,
    account_id        INTEGER NOT NULL REFERENCES accounts (id),
    schedule_id       INTEGER NOT NULL REFERENCES schedules (id) ON DELETE CASCADE,
    slot              DATETIME NOT NULL,
    manual            BOOLEAN NOT NULL,
    status            TEXT NOT NULL,
    attempt           INTEGER NOT NULL,
    lease_owner       TEXT,
    lease_expires_at  DATETIME,
    next_attempt_at   DATETIME,
    started_at        DATETIME,
    finished_at       DATETIME,
    error             TEXT,
    created_at        DATETIME NOT NULL
);

-- One run per due slot, whatever number of ticks race for it.
CREATE UNIQUE INDEX schedule_runs_schedule_slot ON schedule_runs (schedule_id, slot) WHERE NOT manual;
CREATE INDEX schedule_runs_claim ON schedule_runs (status, lease_expires_at);
CREATE INDEX schedule_runs_history ON schedule_runs (schedule_id, slot);
