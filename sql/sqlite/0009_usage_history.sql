-- Reconcile (SPEC §8, issue 10): the usage history and the indexes its purges need.
--
-- usage_history: each account's sends of one UTC day, one row per message type and
-- attempt outcome, written by `schedctl reconcile` from email_log (a rerun updates
-- the counts in place: UNIQUE per account, day, type and outcome). Easy to query:
--   SELECT day, message_type, total FROM usage_history
--    WHERE account_id = 1 AND outcome = 'sent' ORDER BY day;
CREATE TABLE usage_history (
    id            INTEGER PRIMARY KEY AUTOINCREMENT NOT NULL,
    account_id    INTEGER NOT NULL REFERENCES accounts (id),
    day           DATE NOT NULL,     -- the UTC date of the attempts
    message_type  TEXT NOT NULL,     -- REPORT, DIGEST, ...; UNKNOWN once the message is deleted
    outcome       TEXT NOT NULL,     -- as in email_log: sent, retry, failed, deferred, unknown
    total         INTEGER NOT NULL,  -- attempts with that outcome
    created_at    DATETIME NOT NULL,
    updated_at    DATETIME NOT NULL,
    CONSTRAINT usage_history_key UNIQUE (account_id, day, message_type, outcome)
);

CREATE INDEX usage_history_day ON usage_history (day);

-- The purges and the snapshot select by age; without these each batch scans the table.
CREATE INDEX email_log_attempted ON email_log (attempted_at);
CREATE INDEX heartbeats_started ON heartbeats (started_at);
CREATE INDEX schedule_runs_finished ON schedule_runs (finished_at);
-- Deleting a run sets its messages' schedule_run_id to NULL: find them by index.
CREATE INDEX messages_schedule_run ON messages (schedule_run_id);
