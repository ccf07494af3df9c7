-- Incremental fold: per copy, what the hindsight rules need to judge the copy's next events
-- without reading its earlier ones, and rollups without the day for reports over all time.

-- The rest of what the fold needs is in insights_copy_state (delivery time, first human open
-- and click, the counts, last_event_at: the latest event folded, which tells an event arriving
-- out of order). `recent_clicks` holds the copy's clicks no older than the sweep window before
-- its latest click, each as [microseconds since the epoch, url, counted as a person], sorted:
-- only they can still be re-classed by a sweep. A copy in insights_copy_state without a row
-- here (state written before this table) is recomputed from its events at its next event.
CREATE TABLE insights_copy_fold (
    copy_id        uuid PRIMARY KEY,
    recent_clicks  jsonb NOT NULL
);

-- insights_daily, insights_links and insights_clients summed over every day.
CREATE TABLE insights_totals (
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
    PRIMARY KEY (template_key, sender_id, team_id, visibility)
);
INSERT INTO insights_totals
SELECT template_key, sender_id, team_id, visibility, sum(sent), sum(bounced), sum(opens),
       sum(human_opens), sum(unique_opens), sum(human_unique_opens), sum(clicks),
       sum(human_clicks), sum(unique_clicks), sum(human_unique_clicks), sum(replies),
       sum(unique_replies), sum(soft_bounced), sum(complaints), sum(unsubscribes)
FROM insights_daily GROUP BY 1, 2, 3, 4;

CREATE TABLE insights_links_totals (
    template_key         text NOT NULL,
    sender_id            bigint NOT NULL,
    team_id              bigint NOT NULL,
    visibility           text NOT NULL,
    url                  text NOT NULL,
    clicks               bigint NOT NULL,
    human_clicks         bigint NOT NULL,
    unique_clicks        bigint NOT NULL,
    human_unique_clicks  bigint NOT NULL,
    PRIMARY KEY (template_key, sender_id, team_id, visibility, url)
);
INSERT INTO insights_links_totals
SELECT template_key, sender_id, team_id, visibility, url, sum(clicks), sum(human_clicks),
       sum(unique_clicks), sum(human_unique_clicks)
FROM insights_links GROUP BY 1, 2, 3, 4, 5;

CREATE TABLE insights_clients_totals (
    template_key         text NOT NULL,
    sender_id            bigint NOT NULL,
    team_id              bigint NOT NULL,
    visibility           text NOT NULL,
    client               text NOT NULL,
    device               text NOT NULL,
    opens                bigint NOT NULL,
    human_opens          bigint NOT NULL,
    unique_opens         bigint NOT NULL,
    human_unique_opens   bigint NOT NULL,
    PRIMARY KEY (template_key, sender_id, team_id, visibility, client, device)
);
INSERT INTO insights_clients_totals
SELECT template_key, sender_id, team_id, visibility, client, device, sum(opens),
       sum(human_opens), sum(unique_opens), sum(human_unique_opens)
FROM insights_clients GROUP BY 1, 2, 3, 4, 5, 6;
