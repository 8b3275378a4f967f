-- Alerts (SPEC §12, "Being told"): what newly went wrong, recorded once under a
-- unique key, and whether each channel has been told.
--
-- alerts: one row per thing that went wrong, inserted with ON CONFLICT (key) DO
-- NOTHING by the transaction that records it, so concurrent processes and reruns
-- record it once. Keys: run_failed:<run id>, message_failed:<message id>,
-- message_unknown:<message id>, alert_mail_failed:<message id>,
-- heartbeat_red:<command>:<last success>, distribution_failed:<date>:<attempt>,
-- mirror_missing:<day>, quota:<day>:<threshold>. account_id is the account of the
-- failed run or message; NULL for what concerns the whole installation (heartbeat,
-- distribution, mirror, quota).
--
-- alert_deliveries: one row per alert and channel once a command run has taken it to
-- tell (leased while it posts); notified_at set when the channel took it. A row left
-- without notified_at (the channel failed) is taken again by a later command run.
CREATE TABLE alerts (
    id          INTEGER PRIMARY KEY AUTOINCREMENT NOT NULL,
    key         TEXT NOT NULL,
    kind        TEXT NOT NULL,
    summary     TEXT NOT NULL,
    details     JSON,            -- label -> value, shown as fields (e.g. the quota's)
    account_id  INTEGER REFERENCES accounts (id),
    created_at  DATETIME NOT NULL,
    CONSTRAINT alerts_key_key UNIQUE (key)
);

CREATE INDEX alerts_created ON alerts (created_at);

CREATE TABLE alert_deliveries (
    alert_id          INTEGER NOT NULL REFERENCES alerts (id) ON DELETE CASCADE,
    channel           TEXT NOT NULL,
    attempts          INTEGER NOT NULL DEFAULT 0,
    notified_at       DATETIME,
    lease_owner       TEXT,
    lease_expires_at  DATETIME,
    PRIMARY KEY (alert_id, channel),
    CONSTRAINT alert_deliveries_channel_check CHECK (channel IN ('slack', 'webhook', 'mail'))
);
