-- The installation's identity, and the quota's reservations (issue 7).
--
-- installation: one row holding a random id made when this migration runs, i.e.
-- when the database is created (or first upgraded to this version). Message-IDs
-- hash it with the idempotency key, so two databases (staging and production, or a
-- database rebuilt from scratch) never mint the same Message-ID for different mail,
-- while a restored backup keeps its id, as it keeps the outbox whose mail it names.
-- The boolean primary key, always 1, allows exactly one row.
CREATE TABLE installation (
    singleton   BOOLEAN PRIMARY KEY NOT NULL DEFAULT 1 CHECK (singleton = 1),
    id          TEXT NOT NULL,
    created_at  DATETIME NOT NULL
);

INSERT INTO installation (id, created_at)
VALUES (lower(hex(randomblob(16))), strftime('%Y-%m-%d %H:%M:%f000', 'now'));

-- send_counters.sent now counts only mail handed over to the server; a send in
-- progress holds one unit in `reserved` until its outcome is recorded (sent: moved
-- to `sent`; not accepted: given back). The limit applies to sent + reserved.
ALTER TABLE send_counters ADD COLUMN reserved INTEGER NOT NULL DEFAULT 0;
