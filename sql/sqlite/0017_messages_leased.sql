-- Recovery (leases.recover, before every claim of dispatch and in reconcile) looks
-- for due messages whose lease ran out. Without an index of its own it read every
-- due message in the outbox each time: 35-70 ms per claim with 100,000 due. Leased
-- rows are few at any moment (those in flight), so the index holds only them; the
-- status comes first so that SQLite, planning without statistics, takes it over
-- messages_due as well.
CREATE INDEX messages_leased ON messages (status, lease_expires_at)
    WHERE lease_expires_at IS NOT NULL;
