-- Tenancy. A template key belongs to a team, or to a sender without a team, never to the whole
-- installation: before, the key alone was unique, so a key first seen on one team's mail could
-- be claimed by another team, whose name for it then showed in the first team's reports.
-- An unsubscribe belongs to the user who recorded it and stops the follow-ups of the mail that
-- user may see.

-- A template is (scope, key): the scope is team_id for a team's template, else owner_id (a
-- sender without a team). owner_id of a team's template is who wrote its content, if anyone.
ALTER TABLE messages DROP CONSTRAINT messages_template_key_fkey;
ALTER TABLE automations
    DROP CONSTRAINT automations_trigger_template_fkey,
    DROP CONSTRAINT automations_followup_template_fkey;
ALTER TABLE templates DROP CONSTRAINT templates_pkey;
ALTER TABLE templates ADD COLUMN id bigserial PRIMARY KEY;

-- Rows with content (or content once) already carry their scope: their writer's team, or their
-- writer. Every other scope that used a key gets its own row, with the first subject sent in
-- that scope and no name (a name was only ever given by whoever stored content).
INSERT INTO templates (key, first_subject, team_id, owner_id, created_at)
SELECT DISTINCT ON (u.team_id, u.owner_id, u.key) u.key, u.subject, u.team_id, u.owner_id, u.at
FROM (
    SELECT m.template_key AS key, m.subject, m.team_id,
           CASE WHEN m.team_id IS NULL THEN m.sender_id END AS owner_id, m.created_at AS at
    FROM messages m
    UNION ALL
    SELECT k.key, NULL, us.team_id, CASE WHEN us.team_id IS NULL THEN us.id END, a.created_at
    FROM automations a
    JOIN users us ON us.id = a.owner_id
    CROSS JOIN LATERAL (VALUES (a.trigger_template), (a.followup_template)) AS k (key)
) u
WHERE NOT EXISTS (
    SELECT 1 FROM templates t
    WHERE t.key = u.key AND t.team_id IS NOT DISTINCT FROM u.team_id
      AND (u.team_id IS NOT NULL OR t.owner_id = u.owner_id))
ORDER BY u.team_id, u.owner_id, u.key, u.at, u.subject NULLS LAST;

-- A scoped row's first subject is the first one sent in its scope (else its own subject), never
-- the subject of another team's mail that first used the key.
UPDATE templates t SET first_subject = coalesce((
    SELECT m.subject FROM messages m
    WHERE m.template_key = t.key AND m.team_id IS NOT DISTINCT FROM t.team_id
      AND (t.team_id IS NOT NULL OR m.sender_id = t.owner_id)
    ORDER BY m.created_at LIMIT 1), t.subject)
WHERE t.team_id IS NOT NULL OR t.owner_id IS NOT NULL;

-- Keys known only from mail, without a scope: replaced by the scoped rows above.
DELETE FROM templates WHERE team_id IS NULL AND owner_id IS NULL AND html IS NULL;

CREATE UNIQUE INDEX templates_scope_key ON templates (
    coalesce(team_id, 0), (CASE WHEN team_id IS NULL THEN owner_id ELSE 0 END), key)
    WHERE team_id IS NOT NULL OR owner_id IS NOT NULL;

-- Unsubscribes: who recorded each one. Rows from before have none and stay installation-wide,
-- as they were recorded.
ALTER TABLE unsubscribes DROP CONSTRAINT unsubscribes_pkey;
ALTER TABLE unsubscribes ADD COLUMN user_id bigint REFERENCES users (id) ON DELETE CASCADE;
CREATE UNIQUE INDEX unsubscribes_recipient_user_key ON unsubscribes (recipient, coalesce(user_id, 0));
