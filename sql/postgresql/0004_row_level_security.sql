-- Row-level security: one account's operator commands never see another's rows
-- (SPEC §4, multi-tenancy).
--
-- Commands scoped to an account set `schedctl.account_id` for each transaction
-- (set_config(..., true), see db/dialect.py). A row is visible, and may be written,
-- when that setting is unset or empty -- the cross-account jobs (tick, digest,
-- reconcile) -- or equals the row's account_id. NULLIF keeps the cast from ever
-- seeing an empty string, whatever order the planner evaluates the OR in.
--
-- FORCE applies the policies to the tables' owner too (the role that ran the
-- migrations is usually the one schedctl connects as). Superusers and roles with
-- BYPASSRLS are exempt, as PostgreSQL always makes them.

ALTER TABLE schedules ENABLE ROW LEVEL SECURITY;
ALTER TABLE schedules FORCE ROW LEVEL SECURITY;
CREATE POLICY schedules_account_scope ON schedules
    USING (COALESCE(current_setting('schedctl.account_id', true), '') = ''
           OR account_id = NULLIF(current_setting('schedctl.account_id', true), '')::bigint);

ALTER TABLE schedule_runs ENABLE ROW LEVEL SECURITY;
ALTER TABLE schedule_runs FORCE ROW LEVEL SECURITY;
CREATE POLICY schedule_runs_account_scope ON schedule_runs
    USING (COALESCE(current_setting('schedctl.account_id', true), '') = ''
           OR account_id = NULLIF(current_setting('schedctl.account_id', true), '')::bigint);

ALTER TABLE messages ENABLE ROW LEVEL SECURITY;
ALTER TABLE messages FORCE ROW LEVEL SECURITY;
CREATE POLICY messages_account_scope ON messages
    USING (COALESCE(current_setting('schedctl.account_id', true), '') = ''
           OR account_id = NULLIF(current_setting('schedctl.account_id', true), '')::bigint);

ALTER TABLE email_log ENABLE ROW LEVEL SECURITY;
ALTER TABLE email_log FORCE ROW LEVEL SECURITY;
CREATE POLICY email_log_account_scope ON email_log
    USING (COALESCE(current_setting('schedctl.account_id', true), '') = ''
           OR account_id = NULLIF(current_setting('schedctl.account_id', true), '')::bigint);

ALTER TABLE suppressions ENABLE ROW LEVEL SECURITY;
ALTER TABLE suppressions FORCE ROW LEVEL SECURITY;
CREATE POLICY suppressions_account_scope ON suppressions
    USING (COALESCE(current_setting('schedctl.account_id', true), '') = ''
           OR account_id = NULLIF(current_setting('schedctl.account_id', true), '')::bigint);

ALTER TABLE events ENABLE ROW LEVEL SECURITY;
ALTER TABLE events FORCE ROW LEVEL SECURITY;
CREATE POLICY events_account_scope ON events
    USING (COALESCE(current_setting('schedctl.account_id', true), '') = ''
           OR account_id = NULLIF(current_setting('schedctl.account_id', true), '')::bigint);
