-- Data integrity: rows applications write that schedctl cannot use.
--
-- Quarantine. users, notifications and events are written by applications too. A
-- row that cannot be read (text that is not valid UTF-8, a BLOB where text belongs)
-- or rendered is set aside by the command that meets it: quarantined_at and
-- quarantine_reason are set, every reader skips it from then on, and the command
-- counts it once. A quarantined notification is also marked consumed (consumed_at),
-- so the digest's and tick's partial indexes leave it out. To return a repaired row
-- to service, set both columns (and, for a notification, consumed_at) back to NULL.
ALTER TABLE users ADD COLUMN quarantined_at DATETIME;
ALTER TABLE users ADD COLUMN quarantine_reason TEXT;
ALTER TABLE notifications ADD COLUMN quarantined_at DATETIME;
ALTER TABLE notifications ADD COLUMN quarantine_reason TEXT;
ALTER TABLE events ADD COLUMN quarantined_at DATETIME;
ALTER TABLE events ADD COLUMN quarantine_reason TEXT;

-- A notification's title is never empty nor only spaces, tabs or line breaks.
-- SQLite cannot add a CHECK constraint to an existing table without rebuilding it
-- (copying every row, recreating its indexes and the foreign keys that point at
-- it); two triggers that abort the statement enforce the same rule, with the
-- message a CHECK constraint of that name would give. Rows written before this
-- rule get a visible placeholder, as on PostgreSQL.
UPDATE notifications SET title = '(no title)'
    WHERE trim(title, ' ' || char(9, 10, 11, 12, 13)) = '';

CREATE TRIGGER notifications_title_check_insert BEFORE INSERT ON notifications
WHEN trim(NEW.title, ' ' || char(9, 10, 11, 12, 13)) = ''
BEGIN
    SELECT RAISE(ABORT, 'CHECK constraint failed: notifications_title_check');
END;

CREATE TRIGGER notifications_title_check_update BEFORE UPDATE OF title ON notifications
WHEN trim(NEW.title, ' ' || char(9, 10, 11, 12, 13)) = ''
BEGIN
    SELECT RAISE(ABORT, 'CHECK constraint failed: notifications_title_check');
END;
