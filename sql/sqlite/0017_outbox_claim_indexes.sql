-- The outbox's claim (dispatch, before every batch) with a large backlog due.
--
-- messages_claimable: the messages a claim may take, in the order it takes them.
-- PostgreSQL could not read messages_due (status, send_at) in (send_at, id) order
-- across both statuses, so every claim of 50 sorted the whole due backlog: 180-390
-- ms, and 80 MB written to disk, with 100,000 due. The claim names the statuses as
-- constants, so that the planner can prove this index applies.
CREATE INDEX messages_claimable ON messages (send_at, id)
    WHERE status IN ('scheduled', 'retrying') AND lease_expires_at IS NULL;

-- messages_leased: the recovery before each claim (leases.recover) looks for due
-- messages whose lease ran out; without it, it read every due message (35-70 ms a
-- claim with 100,000 due). Leased rows are few at any moment (those in flight). The
-- status comes first so that SQLite, planning without statistics, takes it over
-- messages_due.
CREATE INDEX messages_leased ON messages (status, lease_expires_at)
    WHERE lease_expires_at IS NOT NULL;
