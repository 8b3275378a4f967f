-- The outbox's claim (dispatch, before every batch) with a large backlog due.
--
-- messages_leased: the recovery before each claim (leases.recover) looks for due
-- messages whose lease ran out; without it, it read every due message (35-70 ms a
-- claim with 100,000 due). Leased rows are few at any moment (those in flight). The
-- status comes first so that SQLite, planning without statistics, takes it over
-- messages_due.
--
-- (PostgreSQL's 0017 also builds messages_claimable for the claim's order. SQLite
-- needs none: it reads messages_due in order for each status and stops after the
-- claim's size, so that index would only cost its writes.)
CREATE INDEX messages_leased ON messages (status, lease_expires_at)
    WHERE lease_expires_at IS NOT NULL;
