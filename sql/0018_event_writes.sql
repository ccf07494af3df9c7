-- Event writes at COPY speed: fewer indexes to maintain per event, and a counter that tells the
-- event writer when copies were removed, so that it can keep which message each copy belongs
-- to in memory instead of joining `copies` for every batch.

-- One index serves a copy's timeline, the erasure of a copy's events, a recompute of one copy
-- and idempotent writes (a replayed or re-read event has the same copy, time and id): the key
-- leads with the copy. `events_seq_idx` served no query (everything that orders by seq reads
-- either one copy's events or the (txid, seq) fold index).
ALTER TABLE events DROP CONSTRAINT events_pkey;
DROP INDEX events_copy_idx;
DROP INDEX events_seq_idx;
ALTER TABLE events ADD CONSTRAINT events_pkey PRIMARY KEY (copy_id, occurred_at, id);

-- Bumped in the transaction that deletes copies (erasure, message deletion), so that its new
-- value is visible exactly when the copies are gone.
CREATE TABLE copies_removed (
    id          smallint PRIMARY KEY CHECK (id = 1),
    generation  bigint NOT NULL DEFAULT 0
);
INSERT INTO copies_removed (id) VALUES (1);
