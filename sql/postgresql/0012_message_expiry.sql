-- Message expiry (SPEC §12): a message not sent by expires_at is recorded skipped
-- with reason EXPIRED and never sent (send-now --force may still send it). NULL: it
-- never expires. An event's INIT and reminders expire at the event's start; a
-- report run's message at its slot + the schedule's max_lateness, when it has one.
ALTER TABLE messages ADD COLUMN expires_at TIMESTAMPTZ;

-- The unsent event messages queued before this migration expire at their event's
-- start too, so no reminder goes out after its event. (Report messages queued
-- before it keep no expiry: they are due at once.)
UPDATE messages SET expires_at = (SELECT starts_at FROM events WHERE events.id = messages.event_id)
    WHERE event_id IS NOT NULL AND status IN ('scheduled', 'retrying', 'paused', 'blocked');
