-- The daily distribution's state (SPEC §6): one row per business date, the day's
-- plan (every distinct user with their campaign and group) and the copy progress
-- per destination. The plan is written in one transaction before anything is
-- copied, so a rerun after a crash resumes from it and never re-reads a source
-- that may have changed meanwhile. These tables hold full user IDs: schedctl's own
-- database is the one place they are kept.

CREATE TABLE distributions (
    id                INTEGER PRIMARY KEY AUTOINCREMENT NOT NULL,
    business_date     DATE NOT NULL,
    status            TEXT NOT NULL
                      CHECK (status IN ('planned', 'copying', 'completed', 'skipped', 'failed')),
    reason            TEXT,             -- why skipped or failed (never an ID in full)
    stage             TEXT,             -- the failed stage: source, campaigns, plan, a destination
    plan              JSON,            -- campaigns, groups, counts, destinations of the plan
    users             BIGINT,           -- distinct users in the plan
    source_rows       BIGINT,           -- rows the source returned
    attempts          INTEGER NOT NULL DEFAULT 0,
    lease_owner       TEXT,
    lease_expires_at  DATETIME,
    planned_at        DATETIME,      -- the plan's instant: every row's insert time
    created_at        DATETIME NOT NULL,
    updated_at        DATETIME NOT NULL,
    finished_at       DATETIME,
    expires_at        DATETIME,      -- a completed plan's rows are purged after it
    purged_at         DATETIME,
    CONSTRAINT distributions_business_date_key UNIQUE (business_date)
);

-- The plan: seq is the position in the keyed-hash order (1-based), from which the
-- campaign and group follow.
CREATE TABLE distribution_users (
    distribution_id  INTEGER NOT NULL REFERENCES distributions (id) ON DELETE CASCADE,
    user_id          TEXT NOT NULL,
    sort_key         BLOB NOT NULL,    -- HMAC-SHA256 of the ID, keyed by the date (and salt)
    seq              BIGINT,
    campaign_id      TEXT,
    group_name       TEXT,
    group_id         TEXT,
    extras           TEXT,              -- the source's extra columns, JSON
    PRIMARY KEY (distribution_id, user_id)
);

CREATE UNIQUE INDEX distribution_users_seq ON distribution_users (distribution_id, seq);

CREATE TABLE distribution_destinations (
    distribution_id  INTEGER NOT NULL REFERENCES distributions (id) ON DELETE CASCADE,
    name             TEXT NOT NULL CHECK (name IN ('control', 'target', 'mirror')),
    status           TEXT NOT NULL CHECK (status IN ('pending', 'copying', 'completed')),
    rows_planned     BIGINT NOT NULL,
    rows_inserted    BIGINT NOT NULL DEFAULT 0,   -- written by schedctl
    rows_existing    BIGINT NOT NULL DEFAULT 0,   -- found there already, not written again
    last_seq         BIGINT NOT NULL DEFAULT 0,   -- plan rows up to this seq are done
    updated_at       DATETIME NOT NULL,
    finished_at      DATETIME,
    PRIMARY KEY (distribution_id, name)
);
