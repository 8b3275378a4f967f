-- Heartbeats keep the database's clock.
--
-- started_at and finished_at are the database server's time, whatever SCHEDCTL_NOW
-- says, so a run under a simulated clock (a test, a dry run, a backfill) never dates
-- the heartbeat in the future or the past. simulated_now is the SCHEDCTL_NOW instant
-- the command ran under, or NULL when it ran on the real clock.
ALTER TABLE heartbeats ADD COLUMN simulated_now TIMESTAMPTZ;
