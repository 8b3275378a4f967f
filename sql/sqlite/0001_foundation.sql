-- Foundation: accounts and the per-command heartbeat log.
-- schema_migrations is created by the migration runner itself before this runs.
-- Instants are UTC text 'YYYY-MM-DD HH:MM:SS.ffffff', whose text order is time order.
-- Ids are AUTOINCREMENT: a deleted row's id is never handed out again, so keys built
-- from ids (idempotency keys, Message-IDs) never collide with those of deleted rows.

CREATE TABLE accounts (
    id          INTEGER PRIMARY KEY AUTOINCREMENT NOT NULL,
    name        TEXT NOT NULL UNIQUE,
    created_at  DATETIME NOT NULL
);

INSERT INTO accounts (name, created_at)
VALUES ('default', strftime('%Y-%m-%d %H:%M:%f000', 'now'));

CREATE TABLE heartbeats (
    id           INTEGER PRIMARY KEY AUTOINCREMENT NOT NULL,
    command      TEXT NOT NULL,
    host         TEXT NOT NULL,
    pid          INTEGER NOT NULL,
    version      TEXT NOT NULL,
    started_at   DATETIME NOT NULL,
    finished_at  DATETIME,
    outcome      TEXT NOT NULL,
    exit_code    INTEGER,
    counts       JSON
);

CREATE INDEX heartbeats_command_outcome_finished
    ON heartbeats (command, outcome, finished_at);
