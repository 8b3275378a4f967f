-- Tenancy enforced by the schema (SPEC §13): every reference between
-- account-owned rows stays inside one account. SQLite cannot add a foreign key to an
-- existing table without rebuilding it, so triggers do what PostgreSQL's composite
-- foreign keys do (sql/postgresql/0010_tenancy.sql): a row whose reference points at
-- another account's row is refused on INSERT and UPDATE, and a referenced row cannot
-- move to another account. Before this runs, `db upgrade` refuses, naming them, rows
-- that already break the rule (db/migration_checks.py).

CREATE TRIGGER schedule_runs_schedule_id_same_account_insert
BEFORE INSERT ON schedule_runs
WHEN NEW.schedule_id IS NOT NULL AND NOT EXISTS (SELECT 1 FROM schedules p WHERE p.id = NEW.schedule_id AND p.account_id = NEW.account_id)
BEGIN
    SELECT RAISE(ABORT, 'schedule_runs.schedule_id refers to a row of another account');
END;

CREATE TRIGGER schedule_runs_schedule_id_same_account_update
BEFORE UPDATE OF schedule_id, account_id ON schedule_runs
WHEN NEW.schedule_id IS NOT NULL AND NOT EXISTS (SELECT 1 FROM schedules p WHERE p.id = NEW.schedule_id AND p.account_id = NEW.account_id)
BEGIN
    SELECT RAISE(ABORT, 'schedule_runs.schedule_id refers to a row of another account');
END;

CREATE TRIGGER messages_schedule_run_id_same_account_insert
BEFORE INSERT ON messages
WHEN NEW.schedule_run_id IS NOT NULL AND NOT EXISTS (SELECT 1 FROM schedule_runs p WHERE p.id = NEW.schedule_run_id AND p.account_id = NEW.account_id)
BEGIN
    SELECT RAISE(ABORT, 'messages.schedule_run_id refers to a row of another account');
END;

CREATE TRIGGER messages_schedule_run_id_same_account_update
BEFORE UPDATE OF schedule_run_id, account_id ON messages
WHEN NEW.schedule_run_id IS NOT NULL AND NOT EXISTS (SELECT 1 FROM schedule_runs p WHERE p.id = NEW.schedule_run_id AND p.account_id = NEW.account_id)
BEGIN
    SELECT RAISE(ABORT, 'messages.schedule_run_id refers to a row of another account');
END;

CREATE TRIGGER messages_event_id_same_account_insert
BEFORE INSERT ON messages
WHEN NEW.event_id IS NOT NULL AND NOT EXISTS (SELECT 1 FROM events p WHERE p.id = NEW.event_id AND p.account_id = NEW.account_id)
BEGIN
    SELECT RAISE(ABORT, 'messages.event_id refers to a row of another account');
END;

CREATE TRIGGER messages_event_id_same_account_update
BEFORE UPDATE OF event_id, account_id ON messages
WHEN NEW.event_id IS NOT NULL AND NOT EXISTS (SELECT 1 FROM events p WHERE p.id = NEW.event_id AND p.account_id = NEW.account_id)
BEGIN
    SELECT RAISE(ABORT, 'messages.event_id refers to a row of another account');
END;

CREATE TRIGGER email_log_message_id_same_account_insert
BEFORE INSERT ON email_log
WHEN NEW.message_id IS NOT NULL AND NOT EXISTS (SELECT 1 FROM messages p WHERE p.id = NEW.message_id AND p.account_id = NEW.account_id)
BEGIN
    SELECT RAISE(ABORT, 'email_log.message_id refers to a row of another account');
END;

CREATE TRIGGER email_log_message_id_same_account_update
BEFORE UPDATE OF message_id, account_id ON email_log
WHEN NEW.message_id IS NOT NULL AND NOT EXISTS (SELECT 1 FROM messages p WHERE p.id = NEW.message_id AND p.account_id = NEW.account_id)
BEGIN
    SELECT RAISE(ABORT, 'email_log.message_id refers to a row of another account');
END;

CREATE TRIGGER digests_user_id_same_account_insert
BEFORE INSERT ON digests
WHEN NEW.user_id IS NOT NULL AND NOT EXISTS (SELECT 1 FROM users p WHERE p.id = NEW.user_id AND p.account_id = NEW.account_id)
BEGIN
    SELECT RAISE(ABORT, 'digests.user_id refers to a row of another account');
END;

CREATE TRIGGER digests_user_id_same_account_update
BEFORE UPDATE OF user_id, account_id ON digests
WHEN NEW.user_id IS NOT NULL AND NOT EXISTS (SELECT 1 FROM users p WHERE p.id = NEW.user_id AND p.account_id = NEW.account_id)
BEGIN
    SELECT RAISE(ABORT, 'digests.user_id refers to a row of another account');
END;

CREATE TRIGGER digests_message_id_same_account_insert
BEFORE INSERT ON digests
WHEN NEW.message_id IS NOT NULL AND NOT EXISTS (SELECT 1 FROM messages p WHERE p.id = NEW.message_id AND p.account_id = NEW.account_id)
BEGIN
    SELECT RAISE(ABORT, 'digests.message_id refers to a row of another account');
END;

CREATE TRIGGER digests_message_id_same_account_update
BEFORE UPDATE OF message_id, account_id ON digests
WHEN NEW.message_id IS NOT NULL AND NOT EXISTS (SELECT 1 FROM messages p WHERE p.id = NEW.message_id AND p.account_id = NEW.account_id)
BEGIN
    SELECT RAISE(ABORT, 'digests.message_id refers to a row of another account');
END;

CREATE TRIGGER notifications_user_id_same_account_insert
BEFORE INSERT ON notifications
WHEN NEW.user_id IS NOT NULL AND NOT EXISTS (SELECT 1 FROM users p WHERE p.id = NEW.user_id AND p.account_id = NEW.account_id)
BEGIN
    SELECT RAISE(ABORT, 'notifications.user_id refers to a row of another account');
END;

CREATE TRIGGER notifications_user_id_same_account_update
BEFORE UPDATE OF user_id, account_id ON notifications
WHEN NEW.user_id IS NOT NULL AND NOT EXISTS (SELECT 1 FROM users p WHERE p.id = NEW.user_id AND p.account_id = NEW.account_id)
BEGIN
    SELECT RAISE(ABORT, 'notifications.user_id refers to a row of another account');
END;

CREATE TRIGGER notifications_digest_id_same_account_insert
BEFORE INSERT ON notifications
WHEN NEW.digest_id IS NOT NULL AND NOT EXISTS (SELECT 1 FROM digests p WHERE p.id = NEW.digest_id AND p.account_id = NEW.account_id)
BEGIN
    SELECT RAISE(ABORT, 'notifications.digest_id refers to a row of another account');
END;

CREATE TRIGGER notifications_digest_id_same_account_update
BEFORE UPDATE OF digest_id, account_id ON notifications
WHEN NEW.digest_id IS NOT NULL AND NOT EXISTS (SELECT 1 FROM digests p WHERE p.id = NEW.digest_id AND p.account_id = NEW.account_id)
BEGIN
    SELECT RAISE(ABORT, 'notifications.digest_id refers to a row of another account');
END;

CREATE TRIGGER notifications_message_id_same_account_insert
BEFORE INSERT ON notifications
WHEN NEW.message_id IS NOT NULL AND NOT EXISTS (SELECT 1 FROM messages p WHERE p.id = NEW.message_id AND p.account_id = NEW.account_id)
BEGIN
    SELECT RAISE(ABORT, 'notifications.message_id refers to a row of another account');
END;

CREATE TRIGGER notifications_message_id_same_account_update
BEFORE UPDATE OF message_id, account_id ON notifications
WHEN NEW.message_id IS NOT NULL AND NOT EXISTS (SELECT 1 FROM messages p WHERE p.id = NEW.message_id AND p.account_id = NEW.account_id)
BEGIN
    SELECT RAISE(ABORT, 'notifications.message_id refers to a row of another account');
END;

CREATE TRIGGER schedules_account_fixed
BEFORE UPDATE OF account_id ON schedules
WHEN NEW.account_id IS NOT OLD.account_id AND (
         EXISTS (SELECT 1 FROM schedule_runs WHERE schedule_runs.schedule_id = OLD.id))
BEGIN
    SELECT RAISE(ABORT, 'schedules.account_id cannot change while other rows refer to it');
END;

CREATE TRIGGER schedule_runs_account_fixed
BEFORE UPDATE OF account_id ON schedule_runs
WHEN NEW.account_id IS NOT OLD.account_id AND (
         EXISTS (SELECT 1 FROM messages WHERE messages.schedule_run_id = OLD.id))
BEGIN
    SELECT RAISE(ABORT, 'schedule_runs.account_id cannot change while other rows refer to it');
END;

CREATE TRIGGER events_account_fixed
BEFORE UPDATE OF account_id ON events
WHEN NEW.account_id IS NOT OLD.account_id AND (
         EXISTS (SELECT 1 FROM messages WHERE messages.event_id = OLD.id))
BEGIN
    SELECT RAISE(ABORT, 'events.account_id cannot change while other rows refer to it');
END;

CREATE TRIGGER messages_account_fixed
BEFORE UPDATE OF account_id ON messages
WHEN NEW.account_id IS NOT OLD.account_id AND (
         EXISTS (SELECT 1 FROM email_log WHERE email_log.message_id = OLD.id)
      OR EXISTS (SELECT 1 FROM digests WHERE digests.message_id = OLD.id)
      OR EXISTS (SELECT 1 FROM notifications WHERE notifications.message_id = OLD.id))
BEGIN
    SELECT RAISE(ABORT, 'messages.account_id cannot change while other rows refer to it');
END;

CREATE TRIGGER users_account_fixed
BEFORE UPDATE OF account_id ON users
WHEN NEW.account_id IS NOT OLD.account_id AND (
         EXISTS (SELECT 1 FROM digests WHERE digests.user_id = OLD.id)
      OR EXISTS (SELECT 1 FROM notifications WHERE notifications.user_id = OLD.id))
BEGIN
    SELECT RAISE(ABORT, 'users.account_id cannot change while other rows refer to it');
END;

CREATE TRIGGER digests_account_fixed
BEFORE UPDATE OF account_id ON digests
WHEN NEW.account_id IS NOT OLD.account_id AND (
         EXISTS (SELECT 1 FROM notifications WHERE notifications.digest_id = OLD.id))
BEGIN
    SELECT RAISE(ABORT, 'digests.account_id cannot change while other rows refer to it');
END;

-- PostgreSQL binds login roles to accounts here; SQLite has no login roles, and keeps
-- the table only so that both dialects have one schema.
CREATE TABLE account_roles (
    role_name   TEXT PRIMARY KEY NOT NULL,
    account_id  INTEGER NOT NULL REFERENCES accounts (id) ON DELETE CASCADE
);
