-- The day's plan (distribution_users) is written whole by one INSERT ... SELECT of the
-- planning transaction, from a temporary table the database de-duplicated, for a day
-- row that transaction holds locked; it is read by (distribution_id, seq) and deleted
-- by day. Two checks it no longer makes, per row, on that INSERT:
--
-- - the foreign key to distributions: a trigger's query per row (2.7 s of the 8.1 s
--   of a plan of 900,000 users). Days are never deleted (a purge keeps the row), so
--   its ON DELETE CASCADE never ran;
-- - the primary key (distribution_id, user_id): an index on a text column filled in
--   the keyed-hash order, i.e. at random places, comparing under the database's
--   collation (3.4 s more). The de-duplication before it gives each ID once.
--
-- Measured with bench/bench_distribute.py's sizes: the plan's INSERT went from 8.2 s
-- to 2.1 s at 900,000 users, the run from 26.3 s to 20.3 s.
--
-- Without a primary key the table needs a replica identity of its own: a database
-- with a publication that publishes deletes (FOR ALL TABLES, for change capture or a
-- blue/green upgrade) refuses every DELETE of a table that has none -- and each
-- planning transaction and each purge deletes plan rows. FULL logs a deleted row
-- whole, and only where the WAL is decoded (wal_level = logical).
ALTER TABLE distribution_users DROP CONSTRAINT distribution_users_distribution_id_fkey;
ALTER TABLE distribution_users DROP CONSTRAINT distribution_users_pkey;
ALTER TABLE distribution_users REPLICA IDENTITY FULL;
