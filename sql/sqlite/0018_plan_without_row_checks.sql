-- The plan's table as on PostgreSQL (see its 0018): no foreign key to distributions
-- (days are never deleted) and no primary key. SQLite's planner adds the users a
-- batch at a time, skipping an ID it has already (INSERT ... ON CONFLICT), so here a
-- unique index on (distribution_id, user_id) stays; SQLite cannot drop a constraint,
-- so the table is made again.
CREATE TABLE distribution_users_new (
    distribution_id  INTEGER NOT NULL,
    user_id          TEXT NOT NULL,
    sort_key         BLOB NOT NULL,    -- HMAC-SHA256 of the ID, keyed by the date (and salt)
    seq              BIGINT,
    campaign_id      TEXT,
    group_name       TEXT,
    group_id         TEXT,
    extras           TEXT              -- the source's extra columns, JSON
);

INSERT INTO distribution_users_new
    (distribution_id, user_id, sort_key, seq, campaign_id, group_name, group_id, extras)
SELECT distribution_id, user_id, sort_key, seq, campaign_id, group_name, group_id, extras
FROM distribution_users;

DROP TABLE distribution_users;

ALTER TABLE distribution_users_new RENAME TO distribution_users;

CREATE UNIQUE INDEX distribution_users_seq ON distribution_users (distribution_id, seq);

CREATE UNIQUE INDEX distribution_users_user ON distribution_users (distribution_id, user_id);
