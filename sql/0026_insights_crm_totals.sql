-- A node of an older version would fold without moving this rollup: the part rows move to ids
-- 4 and 5, so that such a node finds no watermark row (2 or 3) and folds nothing. Its
-- erasures in that window still leave the erased copies' counts in insights_crm_totals
-- (counts only, no address); upgrade every node before erasing. This comes first: an older
-- node's batch locks its watermark row before it reads the copy states, so taking the watermark
-- table before the copy states (locked and rewritten below) waits for that batch instead of
-- closing a deadlock with it.
ALTER TABLE insights_watermark DROP CONSTRAINT insights_watermark_id_check;
UPDATE insights_watermark SET id = id + 2;
ALTER TABLE insights_watermark ADD CONSTRAINT insights_watermark_id_check CHECK (id BETWEEN 4 AND 5);
CREATE OR REPLACE FUNCTION mailtally_fold_part(copy uuid) RETURNS smallint
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$ SELECT (4 + get_byte(uuid_send(copy), 15) % 2)::smallint $$;

-- Reports filtered by one deal, lead or project over every day read a rollup instead of every
-- copy of that deal, lead or project: a project of 10,000 copies is a few rows here. The fold
-- moves it by the same deltas as insights_totals, keyed by the copy's deal, lead and project,
-- which the copy state now carries (its message's, which never change) so that a batch knows
-- them without reading the messages of the copies it folds.
ALTER TABLE insights_copy_state ADD COLUMN deal text, ADD COLUMN lead text, ADD COLUMN project text;
UPDATE insights_copy_state s SET deal = m.deal, lead = m.lead, project = m.project
FROM messages m
WHERE m.id = s.message_id AND (m.deal IS NOT NULL OR m.lead IS NOT NULL OR m.project IS NOT NULL);

CREATE TABLE insights_crm_totals (
    facet                text NOT NULL CHECK (facet IN ('deal', 'lead', 'project')),
    value                text NOT NULL,
    template_key         text NOT NULL,
    sender_id            bigint NOT NULL,
    team_id              bigint NOT NULL,
    visibility           text NOT NULL,
    sent                 bigint NOT NULL,
    bounced              bigint NOT NULL,
    opens                bigint NOT NULL,
    human_opens          bigint NOT NULL,
    unique_opens         bigint NOT NULL,
    human_unique_opens   bigint NOT NULL,
    clicks               bigint NOT NULL,
    human_clicks         bigint NOT NULL,
    unique_clicks        bigint NOT NULL,
    human_unique_clicks  bigint NOT NULL,
    replies              bigint NOT NULL,
    unique_replies       bigint NOT NULL,
    soft_bounced         bigint NOT NULL,
    complaints           bigint NOT NULL,
    unsubscribes         bigint NOT NULL,
    PRIMARY KEY (facet, value, template_key, sender_id, team_id, visibility)
);
INSERT INTO insights_crm_totals
SELECT f.facet, f.value, s.template_key, s.sender_id, s.team_id, s.visibility, count(*),
       sum(s.bounced::int), sum(s.opens), sum(s.human_opens), sum((s.opens > 0)::int),
       sum((s.human_opens > 0)::int), sum(s.clicks), sum(s.human_clicks),
       sum((s.clicks > 0)::int), sum((s.human_clicks > 0)::int), sum(s.replies),
       sum((s.replies > 0)::int), sum(s.soft_bounced::int), sum(s.complained::int),
       sum(s.unsubscribed::int)
FROM insights_copy_state s
CROSS JOIN LATERAL (VALUES ('deal', s.deal), ('lead', s.lead), ('project', s.project)) f (facet, value)
WHERE f.value IS NOT NULL
GROUP BY 1, 2, 3, 4, 5, 6;

-- Reports by deal, lead or project that the rollup cannot answer (a date range, the daily
-- series, links and clients of one template, two filters at once) read the matching copy
-- states through these, without a join with messages. A state's deal, lead and project never
-- change, so the fold's in-place updates stay HOT.
CREATE INDEX insights_copy_state_deal_idx ON insights_copy_state (deal) WHERE deal IS NOT NULL;
CREATE INDEX insights_copy_state_lead_idx ON insights_copy_state (lead) WHERE lead IS NOT NULL;
CREATE INDEX insights_copy_state_project_idx ON insights_copy_state (project)
    WHERE project IS NOT NULL;
