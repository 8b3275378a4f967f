-- Indexes the digest and reconcile need on the notification tables (issue 8).
--
-- The two partial indexes also exclude consumed rows: an application that marks a
-- notification consumed itself (consumed_at set, no digest or message) must not
-- keep it in the digest's or tick's scan.
DROP INDEX notifications_undigested;
CREATE INDEX notifications_undigested ON notifications (user_id, id)
    WHERE priority = 'normal' AND digest_id IS NULL AND message_id IS NULL
      AND read_at IS NULL AND consumed_at IS NULL;

DROP INDEX notifications_critical_pending;
CREATE INDEX notifications_critical_pending ON notifications (id)
    WHERE priority = 'critical' AND message_id IS NULL AND read_at IS NULL
      AND consumed_at IS NULL;

-- Deleting a user, a digest or a message (reconcile's purges) updates or deletes
-- the rows that reference it; without these every such delete scans the table.
CREATE INDEX notifications_user ON notifications (user_id);
CREATE INDEX notifications_digest ON notifications (digest_id);
CREATE INDEX notifications_message ON notifications (message_id);
CREATE INDEX digests_message ON digests (message_id);
