-- The time zone data that computed a schedule's next_run_at (SPEC §12).
--
-- tzdata_version is the IANA release (e.g. "2026a") of the zone database that
-- computed next_run_at; NULL when next_run_at is NULL or was computed before this
-- column existed. A tick running another release recomputes next_run_at from the
-- schedule's rule before judging it due, so a zone that changes its offset is
-- followed without editing schedules. The partial index lets each tick find those
-- rows without reading the rest.
ALTER TABLE schedules ADD COLUMN tzdata_version TEXT;

CREATE INDEX schedules_tzdata_version ON schedules (tzdata_version)
    WHERE next_run_at IS NOT NULL;
