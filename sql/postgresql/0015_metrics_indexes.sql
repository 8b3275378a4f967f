-- Metrics (SPEC §12): `schedctl metrics` counts the outbox by status and type, and
-- today's digests by status, each from an index alone (a covering index: no table
-- rows read), however many sent messages and past digests are kept.
CREATE INDEX messages_status_type ON messages (status, type);
CREATE INDEX digests_created ON digests (created_at, status);
