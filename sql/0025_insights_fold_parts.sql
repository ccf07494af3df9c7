-- The fold in parallel: copies are split into two parts by the last byte of their id, and each
-- part has its own watermark row, locked by the transaction that folds it. Two workers (on one
-- node or two) fold the two parts at once without ever touching the same copy; the rollups they
-- both move are upserted in key order, so they wait on each other but never deadlock.
-- Both rows start at the mark the single watermark had, so nothing is folded twice or skipped.
ALTER TABLE insights_watermark DROP CONSTRAINT insights_watermark_id_check;
ALTER TABLE insights_watermark ADD CONSTRAINT insights_watermark_id_check CHECK (id BETWEEN 1 AND 2);
INSERT INTO insights_watermark (id, txid, seq, folded_events, updated_at)
SELECT 2, txid, seq, 0, updated_at FROM insights_watermark WHERE id = 1;

-- Which part a copy's events belong to: 1 or 2, the watermark row that folds them.
CREATE FUNCTION mailtally_fold_part(copy uuid) RETURNS smallint
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$ SELECT (1 + get_byte(uuid_send(copy), 15) % 2)::smallint $$;

-- The fold now updates a copy's rows in place instead of deleting and inserting them: leave
-- room on each page for the new version, so that the update stays on the page (HOT) and
-- touches no index.
ALTER TABLE insights_copy_state SET (fillfactor = 70);
ALTER TABLE insights_copy_fold SET (fillfactor = 70);
ALTER TABLE insights_copy_links SET (fillfactor = 70);
ALTER TABLE insights_copy_clients SET (fillfactor = 70);

-- Reports filtered by lead or by project alone (messages_crm_idx leads with deal).
CREATE INDEX messages_lead_idx ON messages (lead) WHERE lead IS NOT NULL;
CREATE INDEX messages_project_idx ON messages (project) WHERE project IS NOT NULL;
