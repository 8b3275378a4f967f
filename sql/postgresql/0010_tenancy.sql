-- Tenancy enforced by the schema (SPEC §13).
--
-- 1. Every reference between account-owned rows stays inside one account: each
--    parent gets a (id, account_id) key and each reference becomes a composite
--    foreign key on (child's reference, child's account_id). A reference that is
--    set to NULL on delete nulls only the reference (PostgreSQL 15's column list),
--    never the row's account. Before this runs, `db upgrade` refuses, naming them,
--    rows that already break the rule (db/migration_checks.py).
--
-- 2. A login role can be bound to one account (account_roles). A session of a
--    bound role sees and writes that account's rows only, whatever it sets
--    `schedctl.account_id` to: session_user cannot be changed without superuser
--    rights, and only the schema's owner may write account_roles. Sessions of
--    unbound roles keep 0004's rule (the setting scopes them; unset sees all).
--    The policies read the scope once per statement (an InitPlan), not per row.

CREATE TABLE account_roles (
    role_name   TEXT PRIMARY KEY,
    account_id  BIGINT NOT NULL REFERENCES accounts (id) ON DELETE CASCADE
);
GRANT SELECT ON account_roles TO PUBLIC;

CREATE FUNCTION schedctl_account_scope() RETURNS BIGINT
    LANGUAGE sql STABLE
    AS $$
        SELECT COALESCE(
            (SELECT account_id FROM account_roles WHERE role_name = session_user),
            NULLIF(current_setting('schedctl.account_id', true), '')::bigint)
    $$;

DO $$
DECLARE
    name TEXT;
BEGIN
    FOREACH name IN ARRAY ARRAY['schedules', 'schedule_runs', 'messages', 'email_log',
                                'suppressions', 'events', 'users', 'digests',
                                'notifications', 'usage_history'] LOOP
        EXECUTE format('DROP POLICY %I ON %I', name || '_account_scope', name);
        EXECUTE format(
            'CREATE POLICY %I ON %I USING '
            '(account_id = COALESCE((SELECT schedctl_account_scope()), account_id))',
            name || '_account_scope', name);
    END LOOP;
END
$$;

ALTER TABLE schedules ADD CONSTRAINT schedules_id_account_key UNIQUE (id, account_id);
ALTER TABLE schedule_runs ADD CONSTRAINT schedule_runs_id_account_key UNIQUE (id, account_id);
ALTER TABLE events ADD CONSTRAINT events_id_account_key UNIQUE (id, account_id);
ALTER TABLE messages ADD CONSTRAINT messages_id_account_key UNIQUE (id, account_id);
ALTER TABLE users ADD CONSTRAINT users_id_account_key UNIQUE (id, account_id);
ALTER TABLE digests ADD CONSTRAINT digests_id_account_key UNIQUE (id, account_id);

ALTER TABLE schedule_runs
    DROP CONSTRAINT schedule_runs_schedule_id_fkey,
    ADD CONSTRAINT schedule_runs_schedule_fkey FOREIGN KEY (schedule_id, account_id)
        REFERENCES schedules (id, account_id) ON DELETE CASCADE;

ALTER TABLE messages
    DROP CONSTRAINT messages_schedule_run_id_fkey,
    DROP CONSTRAINT messages_event_id_fkey,
    ADD CONSTRAINT messages_schedule_run_fkey FOREIGN KEY (schedule_run_id, account_id)
        REFERENCES schedule_runs (id, account_id) ON DELETE SET NULL (schedule_run_id),
    ADD CONSTRAINT messages_event_fkey FOREIGN KEY (event_id, account_id)
        REFERENCES events (id, account_id) ON DELETE CASCADE;

ALTER TABLE email_log
    DROP CONSTRAINT email_log_message_id_fkey,
    ADD CONSTRAINT email_log_message_fkey FOREIGN KEY (message_id, account_id)
        REFERENCES messages (id, account_id) ON DELETE SET NULL (message_id);

ALTER TABLE digests
    DROP CONSTRAINT digests_user_id_fkey,
    DROP CONSTRAINT digests_message_id_fkey,
    ADD CONSTRAINT digests_user_fkey FOREIGN KEY (user_id, account_id)
        REFERENCES users (id, account_id) ON DELETE CASCADE,
    ADD CONSTRAINT digests_message_fkey FOREIGN KEY (message_id, account_id)
        REFERENCES messages (id, account_id) ON DELETE SET NULL (message_id);

ALTER TABLE notifications
    DROP CONSTRAINT notifications_user_id_fkey,
    DROP CONSTRAINT notifications_digest_id_fkey,
    DROP CONSTRAINT notifications_message_id_fkey,
    ADD CONSTRAINT notifications_user_fkey FOREIGN KEY (user_id, account_id)
        REFERENCES users (id, account_id) ON DELETE CASCADE,
    ADD CONSTRAINT notifications_digest_fkey FOREIGN KEY (digest_id, account_id)
        REFERENCES digests (id, account_id) ON DELETE SET NULL (digest_id),
    ADD CONSTRAINT notifications_message_fkey FOREIGN KEY (message_id, account_id)
        REFERENCES messages (id, account_id) ON DELETE SET NULL (message_id);
