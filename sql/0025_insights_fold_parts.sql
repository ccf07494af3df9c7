-- The fold in parallel: copies are split into two parts by the last byte of their id, and each
-- part has its own watermark row, locked by the transaction that folds it. Two workers (on one
-- node or two) fold the two parts at once without ever touching the same copy; the rollups they
-- both move are upserted in key order, so they wait on each other but never deadlock.
-- Both rows start at the mark the single watermark had, so nothing is folded twice or skipped.
-- Their ids are 2 and 3, and the row with id 1 goes: a node of an older version still running
-- folds the row with id 1 (every copy, no part), finds none, and folds nothing.
-- Rust's `insights::aggregate::{FIRST_PART, PARTS}` say the same.
ALTER TABLE insights_watermark DROP CONSTRAINT insights_watermark_id_check;
INSERT INTO insights_watermark (id, txid, seq, folded_events, updated_at)
SELECT part, txid, seq, CASE WHEN part = 2 THEN folded_events ELSE 0 END, updated_at
FROM insights_watermark, generate_series(2, 3) part WHERE id = 1;
DELETE FROM insights_watermark WHERE id = 1;
ALTER TABLE insights_watermark ADD CONSTRAINT insights_watermark_id_check CHECK (id BETWEEN 2 AND 3);

-- Which part a copy's events belong to: 2 or 3, the watermark row that folds them.
CREATE FUNCTION mailtally_fold_part(copy uuid) RETURNS smallint
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$ SELECT (2 + get_byte(uuid_send(copy), 15) % 2)::smallint $$;

-- The fold now updates a copy's rows in place instead of deleting and inserting them: leave
-- room on each page for the new version, so that the update stays on the page (HOT) and
-- touches no index.
ALTER TABLE insights_copy_state SET (fillfactor = 70);
ALTER TABLE insights_copy_fold SET (fillfactor = 70);
ALTER TABLE insights_copy_links SET (fillfactor = 70);
ALTER TABLE insights_copy_clients SET (fillfactor = 70);

-- Reports filtered by lead or by project alone (messages_crm_idx leads with deal). Built inside
-- the migration's transaction (no CONCURRENTLY there): on a large messages table, run the
-- migration when the relay can pause for the build.
CREATE INDEX messages_lead_idx ON messages (lead) WHERE lead IS NOT NULL;
CREATE INDEX messages_project_idx ON messages (project) WHERE project IS NOT NULL;
