-- Users, their notifications and the per-user daily digest's tracking (SPEC §5).
--
-- notifications is a PUBLIC INTERFACE: applications insert rows into it directly
-- (see README, "Users, notifications and digests"), so every column an application
-- need not think about has a default. Instant defaults use the same fixed-width UTC
-- text as the rest of the schema (0001), so text order stays time order.

CREATE TABLE users (
    id              INTEGER PRIMARY KEY AUTOINCREMENT NOT NULL,
    account_id      INTEGER NOT NULL REFERENCES accounts (id),
    email           TEXT NOT NULL,
    tz              TEXT NOT NULL DEFAULT 'UTC',
    digest_enabled  BOOLEAN NOT NULL DEFAULT 1,
    digest_time     TEXT NOT NULL DEFAULT '08:00',  -- local HH:MM in tz
    created_at      DATETIME NOT NULL DEFAULT (strftime('%Y-%m-%d %H:%M:%f000', 'now')),
    updated_at      DATETIME NOT NULL DEFAULT (strftime('%Y-%m-%d %H:%M:%f000', 'now')),
    CONSTRAINT users_account_email_key UNIQUE (account_id, email)
);

-- One row per (user, local day) the digest has claimed: the day's state lives here,
-- never in a process's memory, so restarts and concurrent runs send it once.
CREATE TABLE digests (
    id          INTEGER PRIMARY KEY AUTOINCREMENT NOT NULL,
    account_id  INTEGER NOT NULL REFERENCES accounts (id),
    user_id     INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    local_date  DATE NOT NULL,
    status      TEXT NOT NULL
                CHECK (status IN ('scheduled', 'completed', 'skipped', 'failed', 'deferred')),
    items       INTEGER NOT NULL DEFAULT 0,
    message_id  INTEGER REFERENCES messages (id) ON DELETE SET NULL,
    created_at  DATETIME NOT NULL DEFAULT (strftime('%Y-%m-%d %H:%M:%f000', 'now')),
    updated_at  DATETIME NOT NULL DEFAULT (strftime('%Y-%m-%d %H:%M:%f000', 'now')),
    expires_at  DATETIME NOT NULL,
    CONSTRAINT digests_user_date_key UNIQUE (user_id, local_date)
);

CREATE INDEX digests_expires ON digests (expires_at);
CREATE INDEX digests_deferred ON digests (status) WHERE status = 'deferred';

CREATE TABLE notifications (
    id           INTEGER PRIMARY KEY AUTOINCREMENT NOT NULL,
    account_id   INTEGER NOT NULL REFERENCES accounts (id),
    user_id      INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    priority     TEXT NOT NULL DEFAULT 'normal' CHECK (priority IN ('normal', 'critical')),
    digest_key   TEXT,
    title        TEXT NOT NULL,
    body         TEXT,
    created_at   DATETIME NOT NULL DEFAULT (strftime('%Y-%m-%d %H:%M:%f000', 'now')),
    read_at      DATETIME,
    -- What consumed it: the digest that listed it, or the message that carried it.
    digest_id    INTEGER REFERENCES digests (id) ON DELETE SET NULL,
    message_id   INTEGER REFERENCES messages (id) ON DELETE SET NULL,
    consumed_at  DATETIME
);

-- "Undigested, by user": what the next digest of each user gathers.
CREATE INDEX notifications_undigested ON notifications (user_id, id)
    WHERE priority = 'normal' AND digest_id IS NULL AND message_id IS NULL AND read_at IS NULL;
-- What the next tick turns into messages.
CREATE INDEX notifications_critical_pending ON notifications (id)
    WHERE priority = 'critical' AND message_id IS NULL AND read_at IS NULL;

-- Row-level security exists on PostgreSQL only (see 0004); account-scoped commands
-- filter by account_id in their queries on both dialects.
