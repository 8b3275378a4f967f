-- Events, the outbox, its delivery log, suppressions and the daily quota
-- (SPEC §5, §7).

CREATE TABLE events (
    id            INTEGER PRIMARY KEY AUTOINCREMENT NOT NULL,
    account_id    INTEGER NOT NULL REFERENCES accounts (id),
    name          TEXT NOT NULL,
    starts_at     DATETIME NOT NULL,
    load_in_time  DATETIME,
    contact       TEXT,
    tz            TEXT NOT NULL,
    -- When tick last planned this event's messages; NULL or older than updated_at
    -- means (re)plan. Planning never repeats an INIT after its message was deleted.
    planned_at    DATETIME,
    created_at    DATETIME NOT NULL,
    updated_at    DATETIME NOT NULL
);

CREATE TABLE messages (
    id                INTEGER PRIMARY KEY AUTOINCREMENT NOT NULL,
    account_id        INTEGER NOT NULL REFERENCES accounts (id),
    type              TEXT NOT NULL,
    priority          TEXT NOT NULL,
    recipient         TEXT,
    subject           TEXT NOT NULL,
    body_text         TEXT NOT NULL,
    body_html         TEXT,
    attachments       JSON,
    subscription      BOOLEAN NOT NULL,
    send_at           DATETIME NOT NULL,
    status            TEXT NOT NULL,
    reason_code       TEXT,
    attempts          INTEGER NOT NULL,
    next_attempt_at   DATETIME,
    lease_owner       TEXT,
    lease_expires_at  DATETIME,
    idempotency_key   TEXT NOT NULL UNIQUE,
    message_id        TEXT NOT NULL,
    schedule_run_id   INTEGER REFERENCES schedule_runs (id) ON DELETE SET NULL,
    event_id          INTEGER REFERENCES events (id) ON DELETE CASCADE,
    sent_at           DATETIME,
    last_error        TEXT,
    created_at        DATETIME NOT NULL,
    updated_at        DATETIME NOT NULL
);

CREATE INDEX messages_due ON messages (status, send_at);
-- Each event gets each message type once, however often tick plans it.
CREATE UNIQUE INDEX messages_event_type ON messages (event_id, type) WHERE event_id IS NOT NULL;

CREATE TABLE email_log (
    id             INTEGER PRIMARY KEY AUTOINCREMENT NOT NULL,
    account_id     INTEGER NOT NULL REFERENCES accounts (id),
    message_id     INTEGER REFERENCES messages (id) ON DELETE SET NULL,
    provider       TEXT NOT NULL,
    recipients     TEXT NOT NULL,
    outcome        TEXT NOT NULL,
    response_code  INTEGER,
    error          TEXT,
    attempted_at   DATETIME NOT NULL
);

CREATE INDEX email_log_message ON email_log (message_id);

CREATE TABLE suppressions (
    id          INTEGER PRIMARY KEY AUTOINCREMENT NOT NULL,
    account_id  INTEGER NOT NULL REFERENCES accounts (id),
    email       TEXT NOT NULL,
    reason      TEXT NOT NULL,
    created_at  DATETIME NOT NULL,
    CONSTRAINT suppressions_account_email_key UNIQUE (account_id, email)
);

-- The daily send budget: one row per UTC day, incremented with a single atomic
-- check-and-increment statement.
CREATE TABLE send_counters (
    day   TEXT PRIMARY KEY NOT NULL,
    sent  INTEGER NOT NULL
);

-- Quota alerts already sent: at most one per (day, threshold).
CREATE TABLE quota_alerts (
    day        TEXT NOT NULL,
    threshold  INTEGER NOT NULL,
    sent_at    DATETIME NOT NULL,
    PRIMARY KEY (day, threshold)
);
