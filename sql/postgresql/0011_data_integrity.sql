-- Data integrity: rows applications write that schedctl cannot use.
--
-- Quarantine. users, notifications and events are written by applications too. A
-- row that cannot be read (a value the driver cannot decode) or rendered is set
-- aside by the command that meets it: quarantined_at and quarantine_reason are set,
-- every reader skips it from then on, and the command counts it once. A
-- quarantined notification is also marked consumed (consumed_at), so the digest's
-- and tick's partial indexes leave it out. To return a repaired row to service,
-- set both columns (and, for a notification, consumed_at) back to NULL.
ALTER TABLE users ADD COLUMN quarantined_at TIMESTAMPTZ;
ALTER TABLE users ADD COLUMN quarantine_reason TEXT;
ALTER TABLE notifications ADD COLUMN quarantined_at TIMESTAMPTZ;
ALTER TABLE notifications ADD COLUMN quarantine_reason TEXT;
ALTER TABLE events ADD COLUMN quarantined_at TIMESTAMPTZ;
ALTER TABLE events ADD COLUMN quarantine_reason TEXT;

-- A notification's title is never empty nor only spaces, tabs or line breaks. Rows
-- written before this rule get a visible placeholder, so the constraint holds for
-- every row (a NOT VALID constraint would still refuse each later update of them).
UPDATE notifications SET title = '(no title)' WHERE btrim(title, E' \t\n\r\f\013') = '';
ALTER TABLE notifications ADD CONSTRAINT notifications_title_check
    CHECK (btrim(title, E' \t\n\r\f\013') <> '');
